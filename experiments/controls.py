"""Negative and positive controls for the induced-shortcut validation (issue 9, Build 6).

WSC is symmetric: on a confounded design the artefact probe leans on the class direction, so WSC can
rise although the primary head never looks at the artefact. The controls separate the two:

* **negative**: the network is trained on PneumoniaMNIST images *without* any stamp, so it cannot use
  the stamp; its embeddings of the stamped, confounded (s = 0.9) training set are then analysed.
  Any alignment here is the design's, not the decision's: a valid test of use must stay in its null.
* **positive**: the network is trained on the stamped, confounded set itself (it can take the
  shortcut), and analysed on the same set.

Each is tested with the free and the within-class (conditional) permutation null, and with a
pre-specified signed contrast (pneumonia row x stamped column, one-sided; ``wsca_jax.analysis.runs.signed_contrast``)
under the within-class null. One JSON line per (control, seed) in ``results/controls_runs.jsonl``;
``results/controls.md`` is rendered from it only.

    .venv/bin/python experiments/controls.py                 # about 15 minutes on 2 cores
    .venv/bin/python experiments/controls.py --report-only
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from wsca_jax.analysis.runs import signed_contrast
from wsca_jax.training.data import load_dataset
from wsca_jax.training.embed import embed
from wsca_jax.training.train import TrainConfig, fit
from wsca_jax.validation.experiment import EXPERIMENT_WIDTHS, artefact_spec, condition_dataset

STRENGTH = 0.9
RUNS = "controls_runs.jsonl"


def load(args):
    ds = load_dataset("pneumoniamnist", args.data_dir)
    tr = np.flatnonzero(ds.split == 0)
    keep = np.random.default_rng(0).choice(tr, min(args.train_rows, len(tr)), replace=False)
    return ds.subset(np.sort(np.concatenate([keep, np.flatnonzero(ds.split != 0)]))), artefact_spec("pneumoniamnist")


def one(args, ds, spec, control: str, seed: int) -> dict:
    analysed = condition_dataset(ds, spec, STRENGTH, seed)           # stamped, confounded training rows
    trained_on = ds if control == "negative" else analysed            # negative: never saw a stamp
    tmp = tempfile.mkdtemp(prefix="wsca-ctrl-")
    try:
        cfg = TrainConfig(setting="fine_tuned", epochs=args.epochs, batch_size=32, widths=EXPERIMENT_WIDTHS, seed=seed)
        rec = fit(trained_on, spec.primary, (), cfg, run_dir=tmp, progress=False)
        a = embed(tmp, analysed, "train")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = pd.DataFrame({spec.primary: a[spec.primary], spec.confounder: a[spec.confounder]})
    row = {"control": control, "seed": seed, "strength": STRENGTH, "wsca_version": wsca.__version__,
           "settings": {"epochs": args.epochs, "bootstrap": args.bootstrap, "permutations": args.permutations,
                        "max_permutations": args.max_permutations, "train_rows": args.train_rows},
           "primary_test_auroc": rec.get("test", {}).get(spec.primary, {}).get("auroc")}
    for null, within in (("free", None), ("within", spec.primary)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = wsca.AnalysisConfig().replace(tasks=[spec.confounder], permute_within=within,
                                                   bootstrap=args.bootstrap, permutations=args.permutations,
                                                   max_permutations=args.max_permutations, seed=seed)
            r = wsca.analyze(a["embeddings"], meta, spec.primary, a[f"head_{spec.primary}"], config=config)
        t = r.tasks[spec.confounder]
        s = t.summary
        stamped = list(t.classes).index("stamped")
        positive = [str(c) for c in r.primary["classes"]].index("1")          # pneumonia
        row[null] = {"max_abs_wsc": s["max_abs_wsc"], "max_abs_wsc_corrected": s["max_abs_wsc_corrected"],
                     "p_value": s["p_value"], "null_q95": s["null_q95"], "probe_auroc": t.probe["auroc"],
                     "contrast": signed_contrast(r, spec.confounder, positive, stamped)}
    return row


def run(args) -> None:
    ds, spec = load(args)
    path = os.path.join(args.out, RUNS)
    for seed in [int(s) for s in args.seeds.split(",")]:
        for control in ("negative", "positive"):
            t0 = time.time()
            row = one(args, ds, spec, control, seed)
            row["seconds"] = round(time.time() - t0, 1)
            runner.append_record(path, row)
            print(f"{control} seed {seed}: free p {row['free']['p_value']:.3f}, within p {row['within']['p_value']:.3f}, "
                  f"contrast p {row['within']['contrast']['p_value']:.3f} [{row['seconds']:.0f} s]", flush=True)


def report(out: str) -> str:
    rows = runner.read_records(os.path.join(out, RUNS))
    lines = ["# Negative and positive controls (rendered from `controls_runs.jsonl` by `experiments/controls.py`)", "",
             f"PneumoniaMNIST, stamped artefact at strength {STRENGTH} in the analysed training rows. Negative: the "
             "network was trained on unstamped images (it cannot use the stamp). Positive: trained on the stamped, "
             "confounded rows. Free / within: permutation null over all rows / within primary classes. Contrast: the "
             "pre-specified signed cell (pneumonia row x stamped), one-sided, within-class null.", "",
             "| control | seed | test AUROC | stamp probe AUROC | max \\|WSC\\| | corrected | free p | within p | "
             "contrast cell | contrast p (within) |", "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x, d=3: "n/a" if x is None else f"{x:.{d}f}"  # noqa: E731
    for r in rows:
        w, fr = r["within"], r["free"]
        lines.append(f"| {r['control']} | {r['seed']} | {f(r['primary_test_auroc'])} | {f(w['probe_auroc'])} | "
                     f"{f(w['max_abs_wsc'])} | {f(w['max_abs_wsc_corrected'])} | {f(fr['p_value'])} | {f(w['p_value'])} | "
                     f"{w['contrast']['observed']:+.3f} | {f(w['contrast']['p_value'])} |")
    df = pd.DataFrame([{"control": r["control"], "free": r["free"]["p_value"] <= 0.05,
                        "within": r["within"]["p_value"] <= 0.05,
                        "contrast": r["within"]["contrast"]["p_value"] <= 0.05} for r in rows])
    lines += ["", "Rejections at 0.05 (seeds):", ""]
    for c, g in df.groupby("control"):
        lines.append(f"- {c}: free null {int(g.free.sum())}/{len(g)}, within-class null {int(g.within.sum())}/{len(g)}, "
                     f"signed contrast {int(g.contrast.sum())}/{len(g)}")
    return "\n".join(lines) + "\n"


def build_parser():
    def arguments(p):
        p.add_argument("--seeds", default="0,1,2")
        p.add_argument("--epochs", type=int, default=20)
        p.add_argument("--train-rows", type=int, default=1200)
        p.add_argument("--bootstrap", type=int, default=100)
        p.add_argument("--permutations", type=int, default=200)
        p.add_argument("--max-permutations", type=int, default=1000)
    return runner.parser(__doc__, arguments)


def main(argv=None) -> None:
    """Starts over (the records are deleted first), then renders ``controls.md``."""
    runner.run_study(build_parser().parse_args(argv), run, {"controls.md": lambda a: report(a.out)}, fresh=RUNS)


if __name__ == "__main__":
    main()
