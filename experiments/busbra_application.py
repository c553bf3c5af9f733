"""The application analogue of the paper's SA-SonoNet study, on BUS-BRA.

A malignancy model trained on the full training folds (fine-tuned setting, all four scanners): which
metadata does its decision align with? BI-RADS (clinically relevant) against the acquisition
attributes, scanner and view side. Per seed: `wsca.analyze` on the training embeddings with the
model's own malignancy head, patient-grouped bootstrap and permutations.

    .venv/bin/python experiments/busbra_application.py [--seeds 0,1,2] [--report-only]

Writes ``experiments/results/busbra_application.md``, ``busbra_application.png`` and the per-seed
numbers in ``busbra_application_runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import wsca_jax as wsca  # noqa: E402
from wsca_jax.data import load_dataset  # noqa: E402
from wsca_jax.embed import embed  # noqa: E402
from wsca_jax.experiment import EXPERIMENT_WIDTHS  # noqa: E402
from wsca_jax.train import TrainConfig, fit  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ("birads", "device", "side")
PAPER = """| metadata (SA-SonoNet, sPTB) | probe AUROC | WSC with the sPTB head |
|---|---|---|
| cervical length (clinical) | 80.0 | +0.17 +0.04 -0.20 -0.21 (monotone) |
| birth weight (clinical) | 61.2 | +0.16 ... -0.20 (monotone; probe weak) |
| scanner (acquisition) | 77.2 | at most 0.04 (inside the null) |
| pixel spacing (acquisition) | 95.3 | not reported as aligned |"""


def run(args) -> None:
    ds = load_dataset("busbra", args.data_dir)
    path = os.path.join(args.out, "busbra_application_runs.jsonl")
    done = set()
    if os.path.exists(path):
        with open(path) as f:
            done = {json.loads(x)["seed"] for x in f}
    for seed in [int(s) for s in args.seeds.split(",")]:
        if seed in done:
            continue
        tmp = tempfile.mkdtemp(prefix="wsca-app-")
        try:
            rec = fit(ds, "malignant", (), TrainConfig(epochs=args.epochs, batch_size=32, widths=EXPERIMENT_WIDTHS,
                                                       seed=seed), run_dir=tmp, progress=False)
            arrays = embed(tmp, ds, "train")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta = pd.DataFrame({k: arrays[k] for k in ("malignant",) + TASKS})
        meta["case"] = arrays["group"]
        res = wsca.analyze(arrays["embeddings"], meta, "malignant", arrays["head_malignant"], tasks=list(TASKS),
                           categorical=["birads"], group_column="case", bootstrap=args.bootstrap,
                           permutations=args.permutations, max_permutations=args.max_permutations, seed=seed)
        row = {"seed": seed, "primary_test_auroc": rec["test"]["malignant"]["auroc"], "tasks": {}}
        for name, t in res.tasks.items():
            row["tasks"][name] = {"classes": list(t.classes), "probe_auroc": t.probe["auroc"],
                                  "wsc": np.asarray(t.wsc).tolist(), "max_abs_wsc": t.summary["max_abs_wsc"],
                                  "ci": t.summary["ci"], "p_value": t.summary["p_value"],
                                  "p_adjusted": t.summary["p_adjusted"], "null_q95": t.summary["null_q95"],
                                  "p_value_mcse": t.summary.get("p_value_mcse"),
                                  "n_permutations": t.summary.get("n_permutations"),
                                  "ci_method": t.summary.get("ci_method"), "fit": t.fit}
        row["warnings"] = list(res.warnings)
        row["wsca_version"] = wsca.__version__
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"seed {seed}: test AUROC {row['primary_test_auroc']:.3f}; " + "; ".join(
            f"{k} probe {v['probe_auroc']:.3f} max|WSC| {v['max_abs_wsc']:.3f} p {v['p_value']:.3f}"
            for k, v in row["tasks"].items()), flush=True)


def report(args) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(args.out, "busbra_application_runs.jsonl")) as f:
        runs = [json.loads(x) for x in f]
    ms = lambda xs, f="{:.3f}": (f + " ± " + f).format(np.mean(xs), np.std(xs, ddof=1)) if len(xs) > 1 \
        else f.format(np.mean(xs))  # noqa: E731
    lines = ["| metadata | kind | probe AUROC | max \\|WSC\\| | bootstrap 95% CI (mean bounds) | p (Holm) | "
             "runs p_adj < 0.05 | null 95% |", "|---|---|---|---|---|---|---|---|"]
    kinds = {"birads": "clinical", "device": "acquisition (scanner)", "side": "acquisition (view)"}
    for t in TASKS:
        v = [r["tasks"][t] for r in runs if t in r["tasks"]]
        if not v:
            continue
        ci = np.array([x["ci"] for x in v])
        lines.append(f"| {t} | {kinds[t]} | {ms([x['probe_auroc'] for x in v])} | {ms([x['max_abs_wsc'] for x in v])} | "
                     f"[{ci[:, 0].mean():.3f}, {ci[:, 1].mean():.3f}] | {ms([x['p_adjusted'] for x in v])} | "
                     f"{sum(x['p_adjusted'] < 0.05 for x in v)}/{len(v)} | {ms([x['null_q95'] for x in v])} |")
    # the BI-RADS row of the malignant class: does it rise monotonically with the category?
    b = [np.array(r["tasks"]["birads"]["wsc"]) for r in runs]
    classes = runs[0]["tasks"]["birads"]["classes"]
    mal = np.array([w[-1] for w in b])                       # row of the malignant class
    birads_line = " ".join(f"{c}: {m:+.2f}" for c, m in zip(classes, mal.mean(0)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for w in mal:
        axes[0].plot(classes, w, "o-", alpha=0.5)
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].set_title("WSC(malignant row, BI-RADS class), one line per seed", fontsize=9)
    axes[0].set_xlabel("BI-RADS")
    for t, color in zip(TASKS, ("tab:green", "tab:red", "tab:purple")):
        v = [r["tasks"][t] for r in runs]
        axes[1].plot([x["probe_auroc"] for x in v], [x["max_abs_wsc"] for x in v], "o", color=color, label=t)
        axes[1].plot([x["probe_auroc"] for x in v], [x["null_q95"] for x in v], "_", color=color, ms=14)
    axes[1].set_xlabel("probe AUROC (encoded)")
    axes[1].set_ylabel("max |WSC| (used); dashes: permutation null 95%")
    axes[1].set_xlim(0.4, 1.02)
    axes[1].set_ylim(0, 1)
    axes[1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "busbra_application.png"))
    plt.close(fig)
    auroc = ms([r["primary_test_auroc"] for r in runs])
    notes_path = os.path.join(args.out, "busbra_application_notes.md")
    notes = open(notes_path).read() if os.path.exists(notes_path) else ""
    text = f"""# Application analogue: which metadata does a BUS-BRA malignancy model use?

Rebuilt by `experiments/busbra_application.py`. Malignancy model (small CNN, widths {EXPERIMENT_WIDTHS},
fine-tuned setting, {args.epochs} epochs) on all official training folds (all four scanners); test AUROC
{auroc} over seeds {[r['seed'] for r in runs]}. WSC of the model's own malignancy head against a
probe for each attribute on the training embeddings; {args.bootstrap} patient-grouped bootstrap refits,
{args.permutations} permutations, Holm across the three attributes. Mean ± SD over seeds.

{chr(10).join(lines)}

WSC of the malignant row with each BI-RADS class (mean over seeds): {birads_line}.

![encoded vs used](busbra_application.png)

The paper's SA-SonoNet study, for comparison (METHOD.md 1.6):

{PAPER}

{notes}
"""
    with open(os.path.join(args.out, "busbra_application.md"), "w") as f:
        f.write(text)
    print(f"wrote {args.out}/busbra_application.md")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--max-permutations", type=int, default=2000,
                   help="adaptive: more permutations while a p-value is within 3 Monte Carlo SE of alpha")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not args.report_only:
        run(args)
    report(args)


if __name__ == "__main__":
    main()
