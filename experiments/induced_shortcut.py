"""Induced-shortcut validation of WSC (METHOD.md 1.6) on real data, with the statistics the paper lacks.

BUS-BRA: malignancy x scanner, full / balanced / biased designs and a dose-response over bias
strengths, fine-tuned and multi-task, several seeds. PneumoniaMNIST: pneumonia x a stamped artefact,
same dose-response. Every run appends one JSON line to ``RESULTS/induced_shortcut_runs.jsonl`` (a
rerun skips the runs already there), then the tables and figures are rebuilt from that file.

    .venv/bin/python experiments/induced_shortcut.py                 # everything (about 45 min, 2 cores)
    .venv/bin/python experiments/induced_shortcut.py --report-only   # tables/figures from the runs file

Writes ``experiments/results/induced_shortcut.md`` and ``induced_shortcut_*.png``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import pandas as pd

import runner  # first: puts the repository root on sys.path
from wsca_jax import AnalysisConfig, __version__ as wsca_version
from wsca_jax.training.data import load_dataset
from wsca_jax.training.train import TrainConfig
from wsca_jax.validation.experiment import (BUSBRA_SCANNERS, EXPERIMENT_WIDTHS, MT_TASK_WEIGHTS, artefact_spec,
                                            busbra_spec, condition_dataset, null_network_wsc, restrict_busbra,
                                            run_condition)

HERE = runner.HERE
RUNS = "induced_shortcut_runs.jsonl"
NULLS = "induced_shortcut_nulls.jsonl"
FIXED_RUNS = "induced_shortcut_fixed_runs.jsonl"
# the largest class sizes (2:1, as busbra_spec) that every strength up to 0.9 allows with the scanners'
# totals fixed: at 0.9 the benign class needs 35 Toshiba images, all the training folds have
FIXED_N_PER_CLASS = {0: 240, 1: 120}
STRENGTHS = (0.0, 0.25, 0.5, 0.75, 0.9)
BIASED = 0.9
PAPER = {  # max |WSC| plane x scanner read off the paper's heatmaps (+-0.02), METHOD.md 1.6
    ("full", "fine_tuned"): 0.04, ("full", "multi_task"): 0.05,
    ("balanced", "fine_tuned"): 0.06, ("balanced", "multi_task"): 0.06,
    ("biased", "fine_tuned"): 0.12, ("biased", "multi_task"): 0.30,
}


def conditions(dataset: str, full: bool, strengths=STRENGTHS):
    """(name, strength) pairs; strength None = the natural design (all training rows)."""
    if full:
        return [("full", None)] if dataset == "busbra" else []
    return [(f"s={s:g}", s) for s in strengths]


def load(dataset: str, data_dir: str | None, train_rows: int):
    if dataset == "busbra":
        return restrict_busbra(load_dataset("busbra", data_dir)), busbra_spec()
    ds = load_dataset(dataset, data_dir)
    tr = np.flatnonzero(ds.split == 0)
    keep = np.random.default_rng(0).choice(tr, min(train_rows, len(tr)), replace=False)
    ds = ds.subset(np.sort(np.concatenate([keep, np.flatnonzero(ds.split != 0)])))
    return ds, artefact_spec(dataset)


def runs_file(args) -> str:
    """The records of the design: the per-class mixes, or (``--fixed-marginals``) fixed scanner totals."""
    return os.path.join(args.out, FIXED_RUNS if args.fixed_marginals else RUNS)


def design_counts(ds, spec) -> dict:
    """Training rows per (class, confounder value) of a condition: ``{class: {value: n}}``."""
    from wsca_jax.validation.experiment import design_table
    t = design_table(ds, spec)
    return {str(c): {str(v): int(t.loc[c, v]) for v in t.columns} for c in t.index}


def run_all(args) -> None:
    path = runs_file(args)
    done = runner.done_keys(path, ("dataset", "condition", "setting", "seed"))
    # dose-responses first (every dataset), the full BUS-BRA design last: an interrupted run still
    # covers every strength
    strengths = [float(x) for x in args.strengths.split(",")]
    jobs = [(d, False) for d in args.datasets.split(",")] + [("busbra", True)] * (args.full and "busbra" in args.datasets)
    if args.fixed_marginals:
        require_busbra_only(args)
        jobs = [("busbra", False)]
    for dataset, full in jobs:
        ds, spec = load(dataset, args.data_dir, args.train_rows)
        if args.fixed_marginals:
            spec = dataclasses.replace(spec, fixed_marginals=True, n_per_class=FIXED_N_PER_CLASS)
        for seed in [int(s) for s in args.seeds.split(",")]:
            for cond, strength in conditions(dataset, full, strengths):
                cd = None
                for setting in ("fine_tuned", "multi_task"):
                    if (dataset, cond, setting, seed) in done:
                        continue
                    if cd is None:
                        cd = condition_dataset(ds, spec, strength, seed)
                    cfg = TrainConfig(epochs=args.epochs, batch_size=32, widths=EXPERIMENT_WIDTHS,
                                      task_weights=MT_TASK_WEIGHTS if setting == "multi_task" else None)
                    t0 = time.time()
                    # fixed (multi-task) heads: the probe permutation null is not their null (issue 8),
                    # so no permutations are spent on them
                    analysis = AnalysisConfig().replace(
                        bootstrap=args.bootstrap, permutations=0 if setting == "multi_task" else args.permutations,
                        max_permutations=args.max_permutations)
                    r = run_condition(cd, spec, setting, seed, train_cfg=cfg, config=analysis)
                    m = r["metrics"]
                    row = {"dataset": dataset, "condition": cond, "strength": strength, "setting": setting,
                           "seed": seed, "seconds": round(time.time() - t0, 1), "wsca_version": wsca_version,
                           "design": "fixed_marginals" if spec.fixed_marginals else "class_mixes",
                           "design_counts": design_counts(cd, spec),
                           "settings": {"epochs": args.epochs, "bootstrap": args.bootstrap,
                                        "permutations": 0 if setting == "multi_task" else args.permutations,
                                        "max_permutations": args.max_permutations, "train_rows": args.train_rows},
                           **m}
                    runner.append_record(path, row)
                    fmt = lambda v: "untested" if v is None else f"{v:.3f}"  # noqa: E731
                    print(f"{dataset} {cond:7s} {setting:10s} seed {seed}: max|WSC| {m['max_abs_wsc']:.3f} "
                          f"p {fmt(m['p_value'])} (cond {fmt(m['p_value_conditional'])}) primary AUROC "
                          f"{m['primary_auroc']:.3f} probe AUROC {m['confounder_probe_auroc']:.3f} "
                          f"[{row['seconds']:.0f} s]", flush=True)


def require_busbra_only(args) -> None:
    if args.datasets.split(",") != ["busbra"]:
        sys.exit("--fixed-marginals applies to the BUS-BRA (discard) design only: pass --datasets busbra")


def run_nulls(args) -> None:
    """Seed null of the multi-task statistic: ``--seed-null M`` networks per design in ``--null-designs``
    (``dataset:condition[:within]``), each trained with the confounder's training labels permuted by
    patient -- freely, or with ``:within`` only within primary classes (the conditional null of a
    confounded design); one line per network in ``induced_shortcut_nulls.jsonl`` (resumable)."""
    path = os.path.join(args.out, NULLS)
    done = runner.done_keys(path, ("dataset", "condition", "null_kind", "null_index"), {"null_kind": "free"})
    for design in args.null_designs.split(","):
        dataset, cond, *rest = design.split(":")
        kind = "within_class" if rest == ["within"] else "free"
        strength = float(cond.split("=")[1])
        ds, spec = load(dataset, args.data_dir, args.train_rows)
        for j in range(args.seed_null):
            if (dataset, cond, kind, j) in done:
                continue
            t0 = time.time()
            cd = condition_dataset(ds, spec, strength, j % 5)          # the designs of seeds 0-4, in turn
            cfg = TrainConfig(epochs=args.epochs, batch_size=32, widths=EXPERIMENT_WIDTHS, task_weights=MT_TASK_WEIGHTS)
            v = null_network_wsc(cd, spec, 1000 + j, train_cfg=cfg, within_class=kind == "within_class")
            row = {"dataset": dataset, "condition": cond, "strength": strength, "null_kind": kind, "null_index": j,
                   "design_seed": j % 5, "train_seed": 1000 + j, "max_abs_wsc": v,
                   "seconds": round(time.time() - t0, 1), "wsca_version": wsca_version}
            runner.append_record(path, row)
            print(f"null {dataset} {cond} ({kind}) #{j}: max|WSC| {v:.3f} [{row['seconds']:.0f} s]", flush=True)


def _ms(x: pd.Series, fmt: str = "{:.3f}") -> str:
    x = x.dropna()
    if len(x) == 0:
        return ""
    return (fmt + " ± " + fmt).format(x.mean(), x.std(ddof=1)) if len(x) > 1 else fmt.format(x.mean())


def _fisher(p: pd.Series) -> str:
    """Fisher's combination of the per-seed p-values (independent training runs); 'not tested' when
    the runs have no p-value (fixed heads without a null of their own statistic)."""
    from scipy.stats import combine_pvalues
    p = pd.to_numeric(p, errors="coerce").dropna()
    return "not tested" if len(p) == 0 else ("" if len(p) < 2 else f"{combine_pvalues(p, method='fisher').pvalue:.3g}")


def _nsig(p: pd.Series) -> str:
    """Runs with p < 0.05 out of the runs tested."""
    p = pd.to_numeric(p, errors="coerce")
    return "not tested" if p.notna().sum() == 0 else f"{int((p < 0.05).sum())}/{int(p.notna().sum())}"


def _converged(g: pd.DataFrame) -> str:
    """Full-data probe fits that converged (records of 0.3.0 on)."""
    if "fit" not in g or g.fit.isna().all():
        return "n/a"
    return f"{sum(bool((f or {}).get('converged')) for f in g.fit)}/{len(g)}"


def tables(runs: pd.DataFrame) -> str:
    lines = []
    for dataset, d in runs.groupby("dataset", sort=False):
        lines.append(f"\n### {dataset}: every condition (mean ± SD over seeds {sorted(int(x) for x in d.seed.unique())})\n")
        lines.append("| condition | setting | n train | primary test AUROC | confounder probe AUROC | max \\|WSC\\| "
                     "| bootstrap 95% CI (mean of bounds) | p (free) | p (within class) | runs p < 0.05 | Fisher p over seeds | null 95% "
                     "| random 95% | WSC row of the positive class (mean) | probe fits converged |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (cond, setting), g in d.groupby(["condition", "setting"], sort=False):
            ci = np.array([c for c in g.ci if c is not None])
            ci_s = "" if len(ci) == 0 else f"[{ci[:, 0].mean():.3f}, {ci[:, 1].mean():.3f}]"
            row = np.mean([np.asarray(w)[-1] for w in g.wsc], axis=0)
            names = [c.split(" @")[0] for c in g.classes.iloc[0]]
            row_s = ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, row))
            lines.append(f"| {cond} | {setting} | {int(g.n_train.mean())} | {_ms(g.primary_auroc)} | "
                         f"{_ms(g.confounder_probe_auroc)} | {_ms(g.max_abs_wsc)} | {ci_s} | {_ms(pd.to_numeric(g.p_value))} | "
                         f"{_ms(pd.to_numeric(g.p_value_conditional))} | {_nsig(g.p_value)} | {_fisher(g.p_value)} | "
                         f"{'not its null' if setting == 'multi_task' else _ms(pd.to_numeric(g.null_q95))} | "
                         f"{g.random_q95.mean():.3f} | {row_s} | {_converged(g)} |")
    return "\n".join(lines)


def paper_table(runs: pd.DataFrame, tests: pd.DataFrame | None = None) -> str:
    """BUS-BRA beside the paper. Fine-tuned rows: runs with p < 0.05 under the free permutation null
    and Fisher's combination over seeds; multi-task rows: the seed null (per-run p over null networks,
    and the design-level Mann-Whitney p), or 'not tested'."""
    d = runs[runs.dataset == "busbra"]
    if d.empty:
        return ""
    name = {"full": ("full", "full"), "s=0": ("balanced", "balanced (s=0)"),
            "s=0.5": ("biased", "biased, paper-like mix (s=0.5: 72.5% majority)"),
            f"s={BIASED:g}": ("biased", f"biased, strong (s={BIASED:g}: 94.5% majority)")}
    lines = ["| design | setting | paper (fetal US, plane x scanner) | ours (BUS-BRA, malignancy x scanner) | "
             "primary test AUROC (ours) | runs with p < 0.05 (ours) | over seeds: Fisher p (fine-tuned) / "
             "Mann-Whitney p vs null networks (multi-task) |",
             "|---|---|---|---|---|---|---|"]
    for cond, (key, label) in name.items():
        for setting in ("fine_tuned", "multi_task"):
            g = d[(d.condition == cond) & (d.setting == setting)]
            if not len(g):
                continue
            sig, comb = _nsig(g.p_value), _fisher(g.p_value)
            if setting == "multi_task":
                t = None if tests is None or tests.empty else tests[(tests.dataset == "busbra") & (tests.condition == cond)]
                if t is not None and len(t):
                    # a confounded design is judged against its within-class null where there is one
                    t = t.sort_values("null_kind", key=lambda k: k != "within_class").iloc[0]
                    how = "within-class " if t.null_kind == "within_class" else ""
                    sig = (f"{int(sum(p < 0.05 for p in t.p_runs))}/{t.runs} ({how}seed null of {t.null_networks} networks: "
                           f"per-run p >= {1 / (t.null_networks + 1):.3f})")
                    comb = f"{t.p_design:.3g}"
            lines.append(f"| {label} | {setting} | {PAPER[(key, setting)]:.2f} | {_ms(g.max_abs_wsc)} | "
                         f"{_ms(g.primary_auroc)} | {sig} | {comb} |")
    return "\n".join(lines)


def figure(runs: pd.DataFrame, dataset: str, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = runs[(runs.dataset == dataset) & runs.strength.notna()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for setting, color in (("fine_tuned", "tab:blue"), ("multi_task", "tab:orange")):
        g = d[d.setting == setting].groupby("strength")
        s = np.array(sorted(d.strength.unique()))
        for ax, key in ((axes[0], "max_abs_wsc"), (axes[1], "primary_auroc")):
            mean, sd = g[key].mean().reindex(s), g[key].std().reindex(s)
            ax.errorbar(s, mean, yerr=sd, marker="o", color=color, capsize=3, label=setting.replace("_", "-"))
            nq = pd.to_numeric(d[d.setting == setting].null_q95, errors="coerce")
            if key == "max_abs_wsc" and nq.notna().any():
                ax.plot(s, nq.groupby(d[d.setting == setting].strength).mean().reindex(s), ls="--", color=color, alpha=0.6,
                        label=f"{setting.replace('_', '-')} permutation null 95%")
            for _, r in d[d.setting == setting].iterrows():
                ax.plot(r.strength, r[key], ".", color=color, alpha=0.35)
    axes[0].axhline(d.random_q95.mean(), color="0.5", ls=":", label="random directions 95%")
    axes[0].set_ylabel("max |WSC| primary x confounder")
    axes[1].set_ylabel("primary test AUROC (unbiased test set)")
    for ax in axes:
        ax.set_xlabel("bias strength (0 = independent, 1 = fully confounded)")
        ax.legend(fontsize=7, frameon=False)
    axes[0].set_ylim(0, 1)
    fig.suptitle(f"{dataset}: dose-response (mean ± SD over seeds, dots = single runs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def dose_trend(runs: pd.DataFrame) -> str:
    """Spearman correlation of max |WSC| with strength, per dataset and setting."""
    from scipy.stats import spearmanr
    lines = ["| dataset | setting | Spearman rho (max \\|WSC\\| vs strength, all runs) | p |", "|---|---|---|---|"]
    for (dataset, setting), g in runs[runs.strength.notna()].groupby(["dataset", "setting"], sort=False):
        r = spearmanr(g.strength, g.max_abs_wsc)
        lines.append(f"| {dataset} | {setting} | {r.statistic:+.2f} | {r.pvalue:.2g} |")
    return "\n".join(lines)


def load_records(out: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The runs, the null networks and the runs of wsca_jax 0.2 (empty frames when none)."""
    return tuple(runner.records_frame(os.path.join(out, name), missing_ok=True)
                 for name in (RUNS, NULLS, "induced_shortcut_runs_v0.2.jsonl"))


def seed_null_tests(runs: pd.DataFrame, nulls: pd.DataFrame) -> pd.DataFrame:
    """Multi-task designs with null networks: per design, the runs' max |WSC| against the null
    networks' (per run: p = (1 + #null >= obs) / (M + 1); per design: one-sided Mann-Whitney U of
    runs vs null networks, exact)."""
    from scipy.stats import mannwhitneyu
    rows = []
    if nulls.empty:
        return pd.DataFrame(rows)
    if "null_kind" not in nulls:
        nulls = nulls.assign(null_kind="free")
    nulls = nulls.assign(null_kind=nulls.null_kind.fillna("free"))
    for (dataset, cond, kind), nl in nulls.groupby(["dataset", "condition", "null_kind"], sort=False):
        g = runs[(runs.dataset == dataset) & (runs.condition == cond) & (runs.setting == "multi_task")]
        if g.empty:
            continue
        nv = nl.max_abs_wsc.to_numpy(float)
        obs = g.max_abs_wsc.to_numpy(float)
        p_run = [(1 + (nv >= o).sum()) / (len(nv) + 1) for o in obs]
        mw = mannwhitneyu(obs, nv, alternative="greater", method="exact")
        rows.append({"dataset": dataset, "condition": cond, "null_kind": kind, "runs": len(obs), "null_networks": len(nv),
                     "runs_wsc": obs, "null_wsc": nv, "p_runs": p_run, "p_design": float(mw.pvalue)})
    return pd.DataFrame(rows)


def seed_null_table(tests: pd.DataFrame) -> str:
    if tests.empty:
        return "No null networks yet (`--seed-null M`): the multi-task rows are untested."
    lines = ["| dataset | design | null: confounder permuted | runs: max \\|WSC\\| (mean ± SD) | null networks: mean ± SD (95% point) | "
             "per-run p (seed null) | design-level p (Mann-Whitney, runs > null) |", "|---|---|---|---|---|---|---|"]
    for _, t in tests.iterrows():
        how = "within primary classes" if t.null_kind == "within_class" else "freely"
        lines.append(f"| {t.dataset} | {t.condition} | {how} | {_ms(pd.Series(t.runs_wsc))} ({t.runs} runs) | "
                     f"{_ms(pd.Series(t.null_wsc))} ({np.quantile(t.null_wsc, 0.95):.3f}; {t.null_networks} networks) | "
                     f"{', '.join(f'{p:.3f}' for p in t.p_runs)} | {t.p_design:.3g} |")
    return "\n".join(lines)


def _settings_source(runs: pd.DataFrame) -> str:
    """Where the settings paragraph comes from: the runs' own ``settings`` where every run has them."""
    if "settings" in runs and runs.settings.notna().all():
        return "recorded in every run"
    n = 0 if "settings" not in runs else int(runs.settings.notna().sum())
    return (f"the script's defaults, with which the runs were made; {n} of {len(runs)} runs record their "
            "settings themselves")


def _pca_min() -> int:
    """The PCA floor the runs used: the library's default (the experiments do not override it)."""
    return int(AnalysisConfig().projection.pca_min)


def prose_namespace(runs: pd.DataFrame, tests: pd.DataFrame, old: pd.DataFrame, out: str = os.path.join(HERE, "results")) -> dict:
    """Helpers the notes template may use (see experiments/prose.py): every sentence that carries a
    number is built here from the records, so the text follows the records."""
    from scipy.stats import spearmanr
    from prose import count, ms, namespace, num

    def sel(dataset, cond=None, setting=None, frame=None):
        g = runs if frame is None else frame
        if g.empty:
            return g
        g = g[g.dataset == dataset]
        if cond is not None:
            g = g[g.condition == cond]
        return g if setting is None else g[g.setting == setting]

    def wsc(dataset, cond, setting, frame=None):
        g = sel(dataset, cond, setting, frame)
        return "not run" if g.empty else f"{ms(g.max_abs_wsc)} ({len(g)} seed{'s' if len(g) > 1 else ''})"

    def rho(dataset, setting):
        g = runs[(runs.dataset == dataset) & (runs.setting == setting) & runs.strength.notna()]
        if g.strength.nunique() < 2 or len(g) < 5:
            return f"too few runs for a trend test ({len(g)})"
        r = spearmanr(g.strength, g.max_abs_wsc)
        return f"Spearman rho {r.statistic:+.2f} over {len(g)} runs (p {r.pvalue:.2g})"

    def pick(dataset, cond, kind):
        if tests.empty:
            return tests
        return tests[(tests.dataset == dataset) & (tests.condition == cond) & (tests.null_kind == kind)]

    def seed_null(dataset, cond, kind="free"):
        t = pick(dataset, cond, kind)
        if t.empty:
            return "not tested (no null networks for this design yet)"
        t = t.iloc[0]
        verdict = "above the null" if t.p_design < 0.05 else "not distinguishable from the null"
        what, cls = ("scanner", "malignancy") if dataset == "busbra" else ("artefact", "primary")
        how = f"within {cls} classes" if kind == "within_class" else "by patient" if dataset == "busbra" else "freely"
        return (f"{verdict}: {t.runs} runs against {t.null_networks} networks trained with the {what} labels permuted {how} "
                f"(null mean {np.mean(t.null_wsc):.2f}, 95% point {np.quantile(t.null_wsc, 0.95):.2f}; one-sided "
                f"Mann-Whitney p {t.p_design:.3g}; per run p {', '.join(f'{p:.2f}' for p in t.p_runs)})")

    def ptest(dataset, cond, setting="fine_tuned", col="p_value", frame=None):
        g = sel(dataset, cond, setting, frame)
        p = pd.to_numeric(g[col], errors="coerce") if not g.empty else pd.Series(dtype=float)
        if p.notna().sum() == 0:
            return "not tested"
        return f"{count(p.dropna() < 0.05)} runs p < 0.05 (p {', '.join(f'{v:.3f}' for v in p.dropna())})"

    def perms(dataset, cond, setting="fine_tuned"):
        g = sel(dataset, cond, setting)
        n = pd.to_numeric(g.get("n_permutations", pd.Series(dtype=float)), errors="coerce").dropna()
        return "n/a" if n.empty else f"{int(n.min())}-{int(n.max())}" if n.min() != n.max() else f"{int(n.min())}"

    def converged():
        if "fit" not in runs:
            return "n/a"
        return count(pd.Series([bool((f or {}).get("converged")) for f in runs.fit]))

    def seed_null_short(dataset, cond, kind="free"):
        t = pick(dataset, cond, kind)
        if t.empty:
            return "not tested yet (no null networks)"
        t = t.iloc[0]
        where = "above the null" if t.p_design < 0.05 else "within the null"
        return f"{where} (Mann-Whitney p {t.p_design:.3g}; {t.runs} runs vs {t.null_networks} null networks)"

    def ntrain(dataset, cond):
        g = sel(dataset, cond)
        return "n/a" if g.empty else f"{int(g.n_train.iloc[0]):,}"

    def not_rerun():
        if old.empty:
            return "nothing"
        key = ["dataset", "condition", "setting", "seed"]
        have = set(map(tuple, runs[key].to_numpy().tolist())) if not runs.empty else set()
        miss = old[[tuple(r) not in have for r in old[key].to_numpy().tolist()]]
        if miss.empty:
            return "nothing: every run of 0.2 has been rerun"
        parts = [f"{d} {c} {s} (seeds {', '.join(str(int(x)) for x in sorted(g.seed))})"
                 for (d, c, s), g in miss.groupby(["dataset", "condition", "setting"], sort=False)]
        return "; ".join(parts)

    def spread(dataset, cond, kind="free"):
        from scipy.stats import levene
        t = pick(dataset, cond, kind)
        if t.empty:
            return "no null networks"
        t = t.iloc[0]
        lv = levene(t.runs_wsc, t.null_wsc)
        return (f"SD {np.std(t.runs_wsc, ddof=1):.3f} over {t.runs} runs against {np.std(t.null_wsc, ddof=1):.3f} over "
                f"{t.null_networks} null networks, Levene p {lv.pvalue:.2g}")

    def k_sweep_status():
        path = os.path.join(out, "k_sweep_runs.jsonl")
        if not os.path.exists(path):
            return "The k sweep (`experiments/k_sweep.py`) writes its own record and has not been rerun yet."
        with open(path) as f:
            n = sum(1 for _ in f)
        return f"The k sweep has its own record ({n} lines in `k_sweep_runs.jsonl`) and report: [k_sweep.md](k_sweep.md)."

    return namespace(runs=runs, old=old, sel=sel, wsc=wsc, rho=rho, seed_null=seed_null, ptest=ptest,
                     k_sweep_status=k_sweep_status, spread=spread, pca_min=_pca_min(),
                     perms=perms, converged=converged, num=num, not_rerun=not_rerun,
                     seed_null_short=seed_null_short, ntrain=ntrain)


def load_fixed(out: str) -> pd.DataFrame:
    """The fixed-marginals runs (empty when none)."""
    return runner.records_frame(os.path.join(out, FIXED_RUNS), missing_ok=True)


def design_counts_table(fx: pd.DataFrame) -> str:
    """Training rows per class and scanner at each strength (the first seed's draw)."""
    lines = ["| strength | class | " + " | ".join(s.split(" @")[0] for s in BUSBRA_SCANNERS) + " | scanner totals |",
             "|---|---|" + "---|" * (len(BUSBRA_SCANNERS) + 1)]
    for strength, g in fx.sort_values("seed").groupby("strength", sort=True):
        counts = g.design_counts.iloc[0]
        tot = {s: sum(counts[c].get(s, 0) for c in counts) for s in BUSBRA_SCANNERS}
        for c in sorted(counts):
            lines.append(f"| {strength:g} | {'malignant' if c == '1' else 'benign'} | "
                         + " | ".join(str(counts[c].get(s, 0)) for s in BUSBRA_SCANNERS) + " | "
                         + ", ".join(f"{s.split(' @')[0]} {n}" for s, n in tot.items()) + " |")
    return "\n".join(lines)


def fixed_summary(fx: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The comparison in words, every number from the records."""
    from scipy.stats import spearmanr

    def by(frame, setting):
        g = frame[(frame.dataset == "busbra") & (frame.setting == setting) & frame.strength.notna()]
        return g, sorted(g.strength.unique())

    mt, st = by(fx, "multi_task")
    ft, _ = by(fx, "fine_tuned")
    rho = lambda g: spearmanr(g.strength, g.max_abs_wsc)  # noqa: E731
    means = lambda g: " / ".join(f"{g[g.strength == x].max_abs_wsc.mean():.3f}" for x in st)  # noqa: E731
    sig = lambda g, col: ", ".join(_nsig(g[g.strength == x][col]) for x in st)  # noqa: E731
    old_mt, _ = by(runs, "multi_task")
    r_mt, r_ft, r_old = rho(mt), rho(ft), rho(old_mt)
    return (f"With the scanners' totals fixed, max |WSC| of the jointly trained heads at strengths "
            f"{' / '.join(f'{x:g}' for x in st)}: {means(mt)} (Spearman {r_mt.statistic:+.2f}, p {r_mt.pvalue:.2g}, "
            f"{len(mt)} networks; under the per-class mixes {r_old.statistic:+.2f} over {len(old_mt)}): "
            f"{'it rises with the association alone, so the multi-task dose-response is not an artefact of the rare scanner vanishing' if r_mt.pvalue < 0.05 and r_mt.statistic > 0 else 'no rise with the association alone'}. "
            f"The fine-tuned networks' probe WSC: {means(ft)} (Spearman {r_ft.statistic:+.2f}, p {r_ft.pvalue:.2g}); "
            f"runs with p < 0.05 under the free permutation null {sig(ft, 'p_value')}, under the within-class null "
            f"{sig(ft, 'p_value_conditional')}; the primary test AUROC falls from "
            f"{ft[ft.strength == st[0]].primary_auroc.mean():.3f} to {ft[ft.strength == st[-1]].primary_auroc.mean():.3f}.")


def fixed_section(out: str) -> str:
    """The dose-response with the scanners' own totals fixed across strengths (``--fixed-marginals``)."""
    fx = load_fixed(out)
    if fx.empty:
        return ""
    return f"""

## Dose-response with the scanners' totals fixed (`--fixed-marginals`)

Under the per-class mixes above a rare scanner shrinks as the strength grows (Toshiba: 48 training
images at strength 0, 5 at 0.9), so strength and the confounder's own marginal change together. Here
every strength keeps each scanner's share of the training rows (`ShortcutSpec(fixed_marginals=True)`,
`design_table_fixed_marginals`); only its association with the class changes. The most associated
table with these margins puts the rare scanner on the benign side too, and it needs 35 benign Toshiba
images at strength 0.9 -- all the training folds have -- so the classes are smaller than above
({FIXED_N_PER_CLASS[0]} benign, {FIXED_N_PER_CLASS[1]} malignant, against 320 and 160): compare the trend across strengths within
this design, not its levels with the design above. Records:
`{FIXED_RUNS}` (each run records its design and its training counts).

Training rows (seed {int(fx.seed.min())}'s draw):

{design_counts_table(fx)}

{dose_trend(fx)}

{fixed_summary(fx, load_records(out)[0])}

![busbra dose-response, fixed marginals](induced_shortcut_busbra_fixed.png)
{tables(fx)}
"""


def figures(args) -> None:
    """The dose-response figures ``induced_shortcut_<dataset>.png`` (and ``_busbra_fixed.png``) of the records."""
    runs, _, _ = load_records(args.out)
    for dataset in runs.dataset.unique():
        figure(runs, dataset, os.path.join(args.out, f"induced_shortcut_{dataset}.png"))
    fx = load_fixed(args.out)
    if not fx.empty:
        figure(fx, "busbra", os.path.join(args.out, "induced_shortcut_busbra_fixed.png"))


def markdown(args) -> str:
    """``induced_shortcut.md`` rendered from the records in ``args.out`` (pure: writes nothing)."""
    runs, nulls, old = load_records(args.out)
    tests = seed_null_tests(runs, nulls)
    notes = runner.render_template("induced_shortcut_notes.md", prose_namespace(runs, tests, old, args.out),
                                   missing_ok=True)
    figs = "\n\n".join(f"![{d} dose-response](induced_shortcut_{d}.png)" for d in runs.dataset.unique())
    text = f"""# Induced-shortcut validation (rebuilt by `experiments/induced_shortcut.py` from the records)

Records: `induced_shortcut_runs.jsonl` (one line per trained model, wsca_jax {', '.join(sorted(runs.get('wsca_version', pd.Series(['< 0.3'])).dropna().unique()))}),
`induced_shortcut_nulls.jsonl` (null networks). Every number below, in the tables and in the text, is
computed from them. The runs of wsca_jax 0.2 are kept in `induced_shortcut_runs_v0.2.jsonl` for
comparison; their multi-task p-values used the probe permutation null, which is not the null of the
fixed-head statistic ([fixed_head_null.md](fixed_head_null.md)).

Settings ({_settings_source(runs)}): small CNN (widths {EXPERIMENT_WIDTHS}), {args.epochs} epochs, AdamW, class-weighted loss;
multi-task heads (primary, confounder, extra) weighted {MT_TASK_WEIGHTS}; WSC on the training-set
embeddings, PCA 99% / at least {_pca_min()} components, centred heads, {args.bootstrap} bootstrap refits
(grouped by patient on BUS-BRA). Fine-tuned rows: {args.permutations} permutations, adaptively more
(up to {args.max_permutations}) while p is within 3 Monte Carlo SE of 0.05; "p (free)" permutes the
confounder labels freely (as `wsca analyze` does), "p (within class)" within primary classes (the
conditional null). Multi-task rows compare the jointly trained heads: they are tested only against
networks trained with permuted confounder labels (the seed null, below); their bootstrap interval
resamples the PCA projection only.

## Side by side with the paper (Wong et al., MIDL 2026; values read off its heatmaps, ±0.02)

Balanced = strength 0 (the same scanner mix in both classes); the paper's biased design put about 70% of
each class on its majority scanner, which is our strength 0.5; strength {BIASED:g} is a stronger bias;
full = all training images of the three scanners (natural design).

{paper_table(runs, tests)}

## Multi-task heads against networks trained with permuted scanner labels (seed null)

{seed_null_table(tests)}

## Dose-response

{dose_trend(runs)}

{figs}

## All conditions
{tables(runs)}{fixed_section(args.out)}

{notes}
"""
    return text


def _arguments(p) -> None:
    p.add_argument("--datasets", default="busbra,pneumoniamnist")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--permutations", type=int, default=200)
    p.add_argument("--max-permutations", type=int, default=2000,
                   help="adaptive: more permutations (batches of --permutations) while p is within 3 Monte Carlo "
                        "SE of 0.05, up to this many")
    p.add_argument("--train-rows", type=int, default=1200, help="training rows kept for the MedMNIST datasets")
    p.add_argument("--strengths", default=",".join(f"{s:g}" for s in STRENGTHS))
    p.add_argument("--no-full", dest="full", action="store_false", help="skip the full (natural) BUS-BRA design")
    p.add_argument("--seed-null", type=int, default=0,
                   help="train this many null networks (confounder labels permuted) per --null-designs design")
    p.add_argument("--null-designs", default="busbra:s=0,busbra:s=0.9,busbra:s=0.9:within",
                   help="dataset:condition[:within] list; ':within' permutes the confounder within primary classes")
    p.add_argument("--fixed-marginals", action="store_true",
                   help="BUS-BRA with the scanners' own totals fixed at every strength (ShortcutSpec.fixed_marginals); "
                        f"records in {FIXED_RUNS}")


def build_parser():
    return runner.parser(__doc__, _arguments)


def main(argv=None) -> None:
    """``--seed-null M``: the null networks instead of the runs (trained even with ``--report-only``);
    then the figures and ``induced_shortcut.md`` from the records."""
    args = build_parser().parse_args(argv)
    if args.seed_null:
        os.makedirs(args.out, exist_ok=True)
        run_nulls(args)
    runner.run_study(args, None if args.seed_null else run_all, {"induced_shortcut.md": markdown}, prepare=figures)


if __name__ == "__main__":
    main()
