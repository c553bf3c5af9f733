"""One answer from several seeds: `analyze_runs` on the induced-shortcut BUS-BRA networks (issue 9).

The induced-shortcut study (induced_shortcut.md) trains fine-tuned BUS-BRA networks on the balanced
(s=0) and the biased (s=0.9) designs with seeds 0-4 and tests each alone. Here the same networks
(same data, seeds and settings, so the same weights) are embedded and combined with
``wsca_jax.analyze_runs``, with the free and the within-class (conditional) permutation null. The seeds
reuse almost all training images, so the runs are *not* independent: the verdict uses twice the mean p
(valid under any dependence); Fisher's combination is shown for reference only.

Embeddings are cached outside the repository (``--cache``, default ~/.cache/wsca_jax/runs_combined):
they are derived from the datasets and must not be committed. One JSON line per (condition, null) in
``results/runs_combined.jsonl``; ``results/runs_combined.md`` is rendered from it only.

    .venv/bin/python experiments/runs_combined.py                 # about 40 minutes on 2 cores
    .venv/bin/python experiments/runs_combined.py --report-only
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
from wsca_jax.training.data import load_dataset
from wsca_jax.training.embed import embed, save_embeddings
from wsca_jax.training.train import TrainConfig, fit
from wsca_jax.validation.experiment import EXPERIMENT_WIDTHS, busbra_spec, condition_dataset, restrict_busbra

CONDITIONS = (("s=0", 0.0), ("s=0.9", 0.9))
RUNS = "runs_combined.jsonl"


def embeddings_for(args, ds, spec, cond: str, strength: float, seed: int) -> str:
    """Train (as induced_shortcut.py does) and embed the training rows once; returns the cached .npz."""
    path = os.path.join(args.cache, f"busbra_{cond}_fine_tuned_seed{seed}.npz")
    if os.path.exists(path):
        return path
    cd = condition_dataset(ds, spec, strength, seed)
    tmp = tempfile.mkdtemp(prefix="wsca-runs-")
    try:
        cfg = TrainConfig(setting="fine_tuned", epochs=args.epochs, batch_size=32, widths=EXPERIMENT_WIDTHS, seed=seed)
        fit(cd, spec.primary, (), cfg, run_dir=tmp, progress=False)
        save_embeddings(path, embed(tmp, cd, "train"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def run(args) -> None:
    os.makedirs(args.cache, exist_ok=True)
    ds, spec = restrict_busbra(load_dataset("busbra", args.data_dir)), busbra_spec()
    out = os.path.join(args.out, RUNS)
    seeds = [int(s) for s in args.seeds.split(",")]
    for cond, strength in CONDITIONS:
        t0 = time.time()
        paths = [embeddings_for(args, ds, spec, cond, strength, s) for s in seeds]
        print(f"{cond}: {len(paths)} networks embedded [{time.time() - t0:.0f} s]", flush=True)
        runs = []
        for p in paths:
            a = np.load(p)
            meta = pd.DataFrame({spec.primary: a[spec.primary], spec.confounder: a[spec.confounder], "group": a["group"]})
            runs.append({"embeddings": a["embeddings"], "metadata": meta, "primary_head": a[f"head_{spec.primary}"]})
        for null, within in (("free", None), ("within-class", spec.primary)):
            t1 = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = wsca.AnalysisConfig().replace(tasks=[spec.confounder], group_column="group",
                                                       permute_within=within, bootstrap=args.bootstrap,
                                                       permutations=args.permutations,
                                                       max_permutations=args.max_permutations, seed=0)
                res = wsca.analyze_runs(runs, spec.primary, names=[f"seed{s}" for s in seeds], shared_data=True,
                                        config=config)
            c = res.combined[spec.confounder]
            row = {"condition": cond, "strength": strength, "setting": "fine_tuned", "null": null, "seeds": seeds,
                   "seconds": round(time.time() - t1, 1), "wsca_version": wsca.__version__,
                   "settings": {"epochs": args.epochs, "bootstrap": args.bootstrap, "permutations": args.permutations,
                                "max_permutations": args.max_permutations},
                   "max_abs_wsc_corrected": [r.tasks[spec.confounder].summary["max_abs_wsc_corrected"] for r in res.runs],
                   "p_adjusted": [r.tasks[spec.confounder].summary["p_adjusted"] for r in res.runs],
                   "combined": c}
            runner.append_record(out, row)
            print(f"{cond} {null}: {c['verdict']}", flush=True)


def _f(x, nd=3):
    return "" if x is None else f"{x:.{nd}g}" if nd == 3 and abs(x) < 1e-3 else f"{x:.{nd}f}"


def report(out: str) -> str:
    rows = runner.read_records(os.path.join(out, RUNS))
    lines = ["# One answer from several seeds (rendered from `runs_combined.jsonl` by `experiments/runs_combined.py`)", "",
             "Fine-tuned BUS-BRA networks (malignancy head against a scanner probe), the induced-shortcut designs, seeds "
             "as listed. The seeds reuse almost all training images, so the combined verdict uses **twice the mean p** "
             "(valid under any dependence); Fisher's combination assumes independent runs and is shown for reference. "
             "Excess: (max |WSC| - mean of the run's null) / SD of that null, summarised by a random-effects model.", "",
             "| condition | null | seeds | max \\|WSC\\| per seed | significant alone (Holm) | 2 x mean p | Fisher p "
             "(reference) | largest cell mean [95% CI], same sign | excess, random effects [95% CI] | combined verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["combined"]
        lc, ex = c["largest_cell"], c.get("excess", {}).get("random_effects")
        ex_s = "" if not ex else f"{ex['mean']:.2f} [{ex['ci'][0]:.2f}, {ex['ci'][1]:.2f}]"
        verdict = "aligned" if c["verdict"].startswith("aligned") else "not detected"
        lines.append(f"| {r['condition']} | {r['null']} | {len(r['seeds'])} | "
                     f"{', '.join(f'{x:.3f}' for x in c['max_abs_wsc'])} | {c.get('n_significant')} of {c['runs']} | "
                     f"{c['mean_merged_p']:.3f} | {c['fisher_p']:.2g} | {lc['mean']:+.3f} [{lc['ci'][0]:+.3f}, "
                     f"{lc['ci'][1]:+.3f}], {100 * lc['sign_consistency']:.0f}% | {ex_s} | {verdict} |")
    lines += ["", "Verdicts in full:", ""] + [f"- {r['condition']}, {r['null']} null: {r['combined']['verdict']}" for r in rows]
    return "\n".join(lines) + "\n"


def prose_namespace(out: str) -> dict:
    """Values for ``templates/readme_runs.md``, from the records only."""
    from prose import namespace
    rows = runner.read_records(os.path.join(out, RUNS))
    parts = []
    for r in rows:
        c = r["combined"]
        verdict = "aligned" if c["verdict"].startswith("aligned") else "not detected"
        parts.append(f"{r['condition']}, {r['null']} null: {verdict} (combined p {c['combined_p_adjusted']:.3f}; "
                     f"{c['n_significant']} of {c['runs']} seeds significant alone)")
    return namespace(n_seeds=len(rows[0]["seeds"]) if rows else 0, lines="; ".join(parts) + ".")


def build_parser():
    def arguments(p):
        p.add_argument("--seeds", default="0,1,2,3,4")
        p.add_argument("--epochs", type=int, default=20)
        p.add_argument("--bootstrap", type=int, default=100)
        p.add_argument("--permutations", type=int, default=200)
        p.add_argument("--max-permutations", type=int, default=2000)
        p.add_argument("--cache", default=os.path.expanduser("~/.cache/wsca_jax/runs_combined"))
    return runner.parser(__doc__, arguments)


def main(argv=None) -> None:
    """Starts over (the records are deleted first), then renders ``runs_combined.md``."""
    runner.run_study(build_parser().parse_args(argv), run, {"runs_combined.md": lambda a: report(a.out)}, fresh=RUNS)


if __name__ == "__main__":
    main()
