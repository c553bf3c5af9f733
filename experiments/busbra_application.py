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

import os
import shutil
import tempfile

import numpy as np
import pandas as pd

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from prose import ms, namespace
from wsca_jax.training.data import load_dataset
from wsca_jax.training.embed import embed
from wsca_jax.training.train import TrainConfig, fit
from wsca_jax.validation.experiment import EXPERIMENT_WIDTHS

RUNS = "busbra_application_runs.jsonl"
TASKS = ("birads", "device", "side")
PAPER = """| metadata (SA-SonoNet, sPTB) | probe AUROC | WSC with the sPTB head |
|---|---|---|
| cervical length (clinical) | 80.0 | +0.17 +0.04 -0.20 -0.21 (monotone) |
| birth weight (clinical) | 61.2 | +0.16 ... -0.20 (monotone; probe weak) |
| scanner (acquisition) | 77.2 | at most 0.04 (inside the null) |
| pixel spacing (acquisition) | 95.3 | not reported as aligned |"""


def run(args) -> None:
    ds = load_dataset("busbra", args.data_dir)
    path = os.path.join(args.out, RUNS)
    done = runner.done_keys(path, ("seed",))
    for seed in [int(s) for s in args.seeds.split(",")]:
        if (seed,) in done:
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
        config = wsca.AnalysisConfig().replace(tasks=list(TASKS), categorical=["birads"], group_column="case",
                                               bootstrap=args.bootstrap, permutations=args.permutations,
                                               max_permutations=args.max_permutations, seed=seed)
        res = wsca.analyze(arrays["embeddings"], meta, "malignant", arrays["head_malignant"], config=config)
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
        runner.append_record(path, row)
        print(f"seed {seed}: test AUROC {row['primary_test_auroc']:.3f}; " + "; ".join(
            f"{k} probe {v['probe_auroc']:.3f} max|WSC| {v['max_abs_wsc']:.3f} p {v['p_value']:.3f}"
            for k, v in row["tasks"].items()), flush=True)


def load_runs(out: str) -> list[dict]:
    return runner.read_records(os.path.join(out, RUNS))


def _ms(xs) -> str:
    """'mean ± SD' with three decimals (the shared formatter of experiments/prose.py)."""
    return ms(xs, "{:.3f}")


def table(runs: list[dict]) -> str:
    lines = ["| metadata | kind | probe AUROC | max \\|WSC\\| | bootstrap 95% CI (mean bounds) | p (Holm) | "
             "runs p_adj < 0.05 | null 95% | permutations |", "|---|---|---|---|---|---|---|---|---|"]
    kinds = {"birads": "clinical", "device": "acquisition (scanner)", "side": "acquisition (view)"}
    for t in TASKS:
        v = [r["tasks"][t] for r in runs if t in r["tasks"]]
        if not v:
            continue
        ci = np.array([x["ci"] for x in v])
        perms = sorted({x.get("n_permutations") for x in v}, key=lambda n: n or 0)
        lines.append(f"| {t} | {kinds[t]} | {_ms([x['probe_auroc'] for x in v])} | {_ms([x['max_abs_wsc'] for x in v])} | "
                     f"[{ci[:, 0].mean():.3f}, {ci[:, 1].mean():.3f}] | {_ms([x['p_adjusted'] for x in v])} | "
                     f"{sum(x['p_adjusted'] < 0.05 for x in v)}/{len(v)} | {_ms([x['null_q95'] for x in v])} | "
                     f"{', '.join(str(n) for n in perms)} |")
    return "\n".join(lines)


def malignant_rows(runs: list[dict]) -> tuple[list, np.ndarray]:
    """BI-RADS classes and the malignant-class row of WSC per seed ``(S, classes)``."""
    return runs[0]["tasks"]["birads"]["classes"], np.array([r["tasks"]["birads"]["wsc"][-1] for r in runs])


def figure(runs: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, mal = malignant_rows(runs)
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
    fig.savefig(path)
    plt.close(fig)


def prose_namespace(runs: list[dict]) -> dict:
    """Helpers for ``templates/busbra_application_notes.md``: every number in the text comes from here."""

    def v(task, key):
        return [r["tasks"][task][key] for r in runs]

    def nsig(task):
        return f"{sum(p < 0.05 for p in v(task, 'p_adjusted'))}/{len(runs)}"

    def m(task, key, fmt="{:.2f}"):
        return fmt.format(float(np.mean(v(task, key))))

    def monotone():
        classes, mal = malignant_rows(runs)
        mean = mal.mean(0)
        signs = ", ".join(f"BI-RADS {c} {x:+.2f}" for c, x in zip(classes, mean))
        one_change = lambda w: int(np.sum(np.diff(np.sign(w)) != 0)) == 1 and w[-1] > w[0]  # noqa: E731
        return (f"{signs} (mean over seeds); the sign goes from negative to positive once along the categories "
                f"in {sum(one_change(w) for w in mal)}/{len(mal)} seeds")

    def unconverged():
        fits = [r["tasks"][t].get("fit") for r in runs for t in TASKS]
        if any(f is None for f in fits):
            return "not recorded (runs of wsca_jax 0.2)"
        return f"{sum(not f['converged'] for f in fits)} of {len(fits)}"

    return namespace(v=v, nsig=nsig, m=m, monotone=monotone, unconverged=unconverged, runs=runs)


def markdown(args) -> str:
    """``busbra_application.md`` from the records in ``args.out`` (pure: writes nothing)."""
    runs = load_runs(args.out)
    notes = runner.render_template("busbra_application_notes.md", prose_namespace(runs))
    classes, mal = malignant_rows(runs)
    birads_line = " ".join(f"{c}: {x:+.2f}" for c, x in zip(classes, mal.mean(0)))
    auroc = _ms([r["primary_test_auroc"] for r in runs])
    versions = ", ".join(sorted({r.get("wsca_version", "< 0.3") for r in runs}))
    return f"""# Application analogue: which metadata does a BUS-BRA malignancy model use?

Rebuilt by `experiments/busbra_application.py` from `busbra_application_runs.jsonl` (wsca_jax {versions};
the runs of wsca_jax 0.2 are kept in `busbra_application_runs_v0.2.jsonl`). Malignancy model (small CNN,
widths {EXPERIMENT_WIDTHS}, fine-tuned setting, {args.epochs} epochs) on all official training folds (all four
scanners); test AUROC {auroc} over seeds {[r['seed'] for r in runs]}. WSC of the model's own malignancy head
against a probe for each attribute on the training embeddings; {args.bootstrap} patient-grouped bootstrap
refits, {args.permutations} permutations (adaptively up to {args.max_permutations} while a p-value is within 3
Monte Carlo SE of a Holm step), Holm across the three attributes. Mean ± SD over seeds.

{table(runs)}

WSC of the malignant row with each BI-RADS class (mean over seeds): {birads_line}.

![encoded vs used](busbra_application.png)

The paper's SA-SonoNet study, for comparison (METHOD.md 1.6):

{PAPER}

{notes}"""


def figures(args) -> None:
    figure(load_runs(args.out), os.path.join(args.out, "busbra_application.png"))


def build_parser():
    def arguments(p):
        p.add_argument("--seeds", default="0,1,2")
        p.add_argument("--epochs", type=int, default=20)
        p.add_argument("--bootstrap", type=int, default=200)
        p.add_argument("--permutations", type=int, default=200)
        p.add_argument("--max-permutations", type=int, default=2000,
                       help="adaptive: more permutations while a p-value is within 3 Monte Carlo SE of alpha")
    return runner.parser(__doc__, arguments)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {"busbra_application.md": markdown}, prepare=figures)


if __name__ == "__main__":
    main()
