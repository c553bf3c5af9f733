"""Rewrite the generated sections of ``benchmarks/RESULTS.md`` for issue 13 from the records the
benchmark scripts wrote (``analyze_whole.jsonl``, ``probe_throughput.jsonl``, ``scaling.jsonl``),
and draw ``docs/figures/scaling.png``. Every number in those sections comes from a record.

    .venv/bin/python benchmarks/render_results.py
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "experiments"))


def _load(name: str) -> list[dict]:
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def whole_section(recs: list[dict], profiles: list[dict] = ()) -> str:
    if not recs:
        return "No record yet: run `benchmarks/analyze_whole.py`."
    r = recs[-1]
    o, b = r["ours"], r["baseline"]
    stages = o["stages"]
    rest = o["wall_s"] - sum(stages.values())
    lines = [f"Workload: N = {r['n']:,}, D = {r['d']} {r['data']} Gaussian features, {r['tasks']} tasks "
             f"({r['kinds'].count(2)} binary including the primary, {r['kinds'].count(4)} four-class), B = {r['boot']} "
             f"bootstrap replicates, {r['permutations']} permutations, figures {'on' if r['figures'] else 'off'}. "
             f"Machine: {r['machine']}, jax {r['jax']}, scikit-learn {r['sklearn']}; measured {r['when']}.", "",
             f"- **ours**: `wsca analyze` in a fresh process (imports, reading, compilation, every stage, "
             f"figures and `report.html`): **{o['wall_s']:.1f} s**.",
             f"- **baseline**: the same {sum(v['fits'] for v in b['stages'].values()):,} fits with scikit-learn's "
             f"lbfgs one at a time ({'extrapolated from ' + str(sum(v['timed'] for v in b['stages'].values())) + ' timed fits' if b['extrapolated'] else 'all fitted'}; "
             f"median {b['iterations_median']} iterations): **{b['total_s']:.0f} s**.",
             f"- **ratio: {r['ratio']:.1f}x** (target 20x).", "",
             "Stage profile (`diagnostics.stage_seconds`; the rest is imports, reading the files, figures and the "
             f"report), this run against the first record of this script ({recs[0]['when']}: the solver before the "
             "issue-13 speed changes):", "",
             f"| stage | seconds | seconds, first record | fits | baseline seconds (scikit-learn) |",
             "|---|---|---|---|---|"]
    first = recs[0]["ours"]
    for k, v in stages.items():
        bs = b["stages"].get(k)
        base = "" if bs is None else f"{bs['total_s']:.0f}"
        old = first["stages"].get(k)
        lines.append(f"| {k} | {v:.2f} | {'' if old is None else f'{old:.2f}'} | {o['fits'].get(k, '')} | {base} |")
    rest0 = first["wall_s"] - sum(first["stages"].values())
    lines.append(f"| imports, reading, figures, report | {rest:.2f} | {rest0:.2f} | | |")
    lines.append(f"| **whole process** | **{o['wall_s']:.1f}** | {first['wall_s']:.1f} | | {b['total_s']:.0f} |")
    lines += ["", "What the profile led to (issue 13): the solver's logits and probabilities are laid out as (tasks, "
              "classes, rows), so that sums and maxima over 2-4 classes are elementwise operations over rows "
              "(see the solver section below); the attenuation correction's noise terms run in NumPy (eager JAX "
              "compiled every small operation for every shape: most of the old jackknife stage); the compared rows "
              "go through one jitted projection; `wsca_jax` loads its modules on first use, so `wsca analyze` does "
              "not import Flax, IFA, MID or the datasets; tasks are grouped by class width, each group fitted by its "
              "own compiled call (binary tasks are no longer padded to four classes nor held in lock-step with the "
              "slower multi-class fits; a second compilation per run); the line search evaluates its second Newton "
              "step only where the first is poor. Not changed: the cross-validation refits stay cold-started (a "
              "warm start from the full-data fit would have seen the held-out fold), every replicate chunk of every "
              "stage is padded to one shape (so one compilation per width serves them all), and the figures are "
              "drawn as before."]
    if profiles and profiles[0]["when"][:10] != profiles[-1]["when"][:10] and r["when"][:10] != recs[0]["when"][:10]:
        a, b = profiles[0], profiles[-1]
        lines += ["", "The first record's column is not a like-for-like comparison of the code: it was measured on "
                  f"another day, and this machine's speed differs between days (the unchanged softmax micro-benchmark "
                  f"of `solver_profile.py` took {a['softmax_ms_classes_before_rows']:.2f} ms on {a['when'][:10]} and "
                  f"{b['softmax_ms_classes_before_rows']:.2f} ms on {b['when'][:10]}). The ratio against scikit-learn, "
                  "measured in the same run, is the comparable number."]
    if len(recs) > 1:
        lines += ["", "Earlier records of this script on the same workload (the issue-13 changes landing one by one: the "
                  "first is the solver before them), oldest first: "
                  + "; ".join(f"{x['when']}: {x['ours']['wall_s']:.1f} s" for x in recs[:-1])
                  + ". (Their baselines drew the timed scikit-learn fits' tasks at random, which moved the "
                  "extrapolation by up to a third between runs; the baseline now times every task equally often.)"]
    return "\n".join(lines)


def solver_section(recs: list[dict]) -> str:
    if not recs or "groups" not in recs[-1]:
        return "No record yet: run `benchmarks/solver_profile.py`."
    r = recs[-1]
    rows = ["| tasks x classes | iteration | iterations (summed over its calls of " f"{r['replicates_per_call']} replicates)"
            " | two matrix products alone | their rate | their share of the iteration |", "|---|---|---|---|---|---|"]
    for g in r["groups"]:
        rows.append(f"| {g['tasks']} x {g['classes']} | {g['iteration_ms']:.1f} ms | {g['iterations']} | "
                    f"{g['gemm_pair_ms']:.1f} ms ({g['flops_pair'] / 1e9:.2f} GFLOP) | {g['gemm_gflops']:.0f} GFLOP/s | "
                    f"{g['gemm_share']:.0%} |")
    old = next((x for x in recs if "iteration_ms" in x), None)
    before = (f" Before the tasks were grouped by class width, one iteration of all {old['tasks']} tasks padded to "
              f"{old['classes_padded']} classes took {old['iteration_ms']:.1f} ms ({old['when']}), but that is not a "
              "like-for-like comparison: the same softmax micro-benchmark (below) took "
              f"{old['softmax_ms_classes_before_rows']:.2f} ms then and {r['softmax_ms_classes_before_rows']:.2f} ms now, "
              "with no change to its code -- this machine's speed differs between days." if old else "")
    return "\n".join([
        f"One L-BFGS iteration of `fit_replicates` on the whole-process workload (N = {r['n']:,}, D = {r['d']}, "
        f"{r['boot']} bootstrap replicates warm-started, {r['machine']}, measured {r['when']}), for each group of "
        "tasks of one class width (each fitted by its own compiled call): the group's time divided by the "
        "iterations its calls ran (host-side work per call -- the float64 recheck of stalled fits, transfers, "
        "the final refresh -- included), against its two matrix products alone"
        + (" (over K - 1 classes, as the solver runs them: a head's rows sum to zero, so the last class's "
           "logits and gradient follow from the others')." if "product_rows" in r["groups"][0] else ".")
        + before, "", *rows, "",
        "The rest of an iteration are the passes over the (tasks, classes, rows) arrays -- softmax and "
        "cross-entropy at the line search's trial step, its slope and curvature, the residual, the periodic "
        "refresh -- and the two-loop recursion with the preconditioner. The layout of those arrays decides their "
        f"cost: one softmax over the classes takes {r['softmax_ms_classes_last']:.2f} ms with the class axis last "
        f"(the layout before issue 13) and {r['softmax_ms_classes_before_rows']:.2f} ms with it before the rows (now)."])


def probe_section(recs: list[dict]) -> str:
    if not recs:
        return "No record yet: run `benchmarks/probe_throughput.py` (and `--data isotropic`)."
    latest = {}
    for r in recs:
        latest[r["data"]] = r
    lines = ["| data | ours | baseline (extrapolated) | ratio | target | ours: iterations per chunk, slowest group (median) | "
             "scikit-learn iterations (median) | min row cosine | objective gap |", "|---|---|---|---|---|---|---|---|---|"]
    for data, r in latest.items():
        target = "100x" if data == "realistic" else "20x"
        lines.append(f"| `{data}` | {r['ours_s']:.1f} s | {r['baseline_s']:,.0f} s | **{r['ratio']:.1f}x** | {target} | "
                     f"{r['iterations_median']} | {r['baseline_iterations_median']} | {r['min_cosine']:.6f} | "
                     f"{r['max_objective_gap']:+.1e} |")
    r = next(iter(latest.values()))
    lines += ["", f"Workload: N = {r['n']:,}, D = {r['d']}, {r['tasks']} tasks, B = {r['boot']}; machine {r['machine']}, "
              f"jax {r['jax']}, scikit-learn {r['sklearn']}; measured {', '.join(x['when'] for x in latest.values())}."]
    return "\n".join(lines)


def warm_section(recs: list[dict], probes: list[dict]) -> str:
    if not recs:
        return "No record yet: run `benchmarks/warm_start_iterations.py`."
    r = recs[-1]
    rows = r["rows"]
    med = lambda k: float(np.median([x[k] for x in rows if x[k] is not None]))  # noqa: E731
    iso = [p for p in probes if p["data"] == "isotropic"]
    n_tasks, n_reps = len({x["task"] for x in rows}), len({x["replicate"] for x in rows})
    lines = [f"Binary tasks of the isotropic benchmark (N = {r['n']:,}, D = {r['d']} white Gaussian features): "
             f"{len(rows)} fits ({n_tasks} tasks x the same {n_reps} bootstrap replicates), each warm-started at the "
             "full-data fit; iterations to "
             f"max |gradient| <= {r['tol']:g} ({r['machine']}, measured {r['when']}):", "",
             "| solver | iterations (median, range) |", "|---|---|"]
    for key, name in (("ours_iterations", "ours (`fit_replicates`, float32, K-FAC preconditioner at the full-data fit)"),
                      ("lbfgs64_iterations", "SciPy L-BFGS-B, float64, whitened by the exact Hessian at the full-data fit"),
                      ("newton_iterations", "Newton, float64, each replicate's own exact Hessian")):
        vals = [x[key] for x in rows if x[key] is not None]
        lines.append(f"| {name} | {med(key):.0f} ({min(vals)}-{max(vals)}) |")
    lines += ["", f"The replicate's Hessian, whitened by the full-data Hessian, has eigenvalues from "
              f"{min(x['whitened_hessian_eig_min'] for x in rows):.2f} to {max(x['whitened_hessian_eig_max'] for x in rows):.2f}: "
              "resampling the rows changes the curvature by up to a factor of "
              f"{1 / min(x['whitened_hessian_eig_min'] for x in rows):.0f} in some directions. Float64 L-BFGS whitened by the "
              f"full-data Hessian (the preconditioner ours approximates) needs {med('lbfgs64_iterations'):.0f} iterations where "
              f"ours needs {med('ours_iterations'):.0f}; a new Hessian per replicate (Newton, O(N D^2) per fit) needs "
              f"{med('newton_iterations'):.0f}. On these fits, then, our iteration count is that of a first-order method "
              "with this preconditioner, and the isotropic benchmark's ratio is set by the cost of one batched "
              "iteration against one scikit-learn iteration."]
    if iso:
        p = iso[-1]
        lines[-1] += (f" Latest isotropic record: {p['ours_s']:.1f} s against {p['baseline_s']:,.0f} s, "
                      f"{p['ratio']:.1f}x (target 20x, {'met' if p['ratio'] >= 20 else 'not met'}).")
    return "\n".join(lines)


def _slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def scaling_section(recs: list[dict]) -> str:
    pts = [r for r in recs if r.get("sweep") in ("n", "d", "t", "b")]
    if not pts:
        return "No record yet: run `benchmarks/scaling.py`."
    when = pts[-1]["when"]
    pts = [r for r in pts if r["when"] == when]
    rate = pts[0]["gemm_gflops"]
    lines = [f"Machine: {pts[0]['machine']} ({pts[0]['device']}), jax {pts[0]['jax']}; float32 GEMM rate of a "
             f"(4,000 x 256) x (256 x 288) product measured in the same run (the solver's products at the base point "
             f"are narrower: 40 and 96 columns): {rate:.0f} GFLOP/s; measured {when}. Base point "
             "N = 4,000, D = 256, 9 tasks (binary and four-class), B = 20 (so 1 + 5 + 20 + 10 fits per task: "
             "full data, folds, bootstrap, jackknife); one variable swept at a time; each point a fresh process "
             "(compilation included; every compiled call -- one chunk of one group of tasks of one class width -- "
             "timed). FLOPs: the solver's two matrix products per iteration (4 N D (K - 1) per fit-iteration, K the "
             "class width of the task's group: 2 for binary tasks, 4 for four-class ones; the products run over "
             "K - 1 classes, a head's rows summing to zero) plus the exact logits' one every 10th iteration.", "",
             "| sweep | value | wall s | fits s | after compilation s | GFLOP | GFLOP/s after compilation | "
             "of GEMM rate | peak RSS GB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in pts:
        v = r[r["sweep"]]
        lines.append(f"| {r['sweep'].upper()} | {v:,} | {r['wall_s']:.1f} | {r['fit_s']:.1f} | {r['warm_fit_s']:.1f} | "
                     f"{r['gflop']:.0f} | {r['warm_gflops_per_s']:.1f} | {r['warm_gflops_per_s'] / rate:.0%} | "
                     f"{r['peak_rss_gb']:.2f} |")
    lines += ["", "Log-log slopes (least squares over the sweep) of the fit time after compilation, and of the "
              "whole wall time:"]
    for var in ("n", "d", "t", "b"):
        sw = [r for r in pts if r["sweep"] == var]
        if len(sw) > 1:
            xs = [r[var] for r in sw]
            lines.append(f"- {var.upper()}: {_slope(xs, [r['warm_fit_s'] for r in sw]):.2f} "
                         f"(wall {_slope(xs, [r['wall_s'] for r in sw]):.2f})")
    big_n = max((r for r in pts if r["sweep"] == "n"), key=lambda r: r["n"])
    best = max(pts, key=lambda r: r["warm_gflops_per_s"])
    ns = sorted((r for r in pts if r["sweep"] == "n"), key=lambda r: r["n"])
    growth = ns[-1]["warm_fit_s"] / ns[-2]["warm_fit_s"]
    ratio_n = ns[-1]["n"] / ns[-2]["n"]
    bandwidth = big_n["warm_gflops_per_s"] < 0.7 * best["warm_gflops_per_s"]
    lines += ["", "Reading: slopes below 1 come from fixed costs at the small end (per-call and per-iteration "
              "overheads -- the two-loop recursion, the preconditioner, host-side checks -- weigh more than the "
              "matrix products there). T = 2 has binary tasks only (one width group, one compilation); from T = 4 "
              f"on there are two groups. From N = {ns[-2]['n']:,} to {ns[-1]['n']:,} the fit time after compilation grew "
              f"{growth:.1f}x for {ratio_n:.0f}x the rows ({'more' if growth > 1.2 * ratio_n else 'no more'} than "
              f"linear). The achieved rate peaks at {best['warm_gflops_per_s']:.0f} GFLOP/s "
              f"({best['warm_gflops_per_s'] / rate:.0%} of the GEMM rate, {best['sweep'].upper()} = {best[best['sweep']]:,}) "
              f"and is {big_n['warm_gflops_per_s']:.0f} GFLOP/s at N = {big_n['n']:,}"
              + (": there each (replicates, tasks, classes, rows) array of a chunk outgrows the caches and the "
                 "elementwise passes run at memory bandwidth." if bandwidth else ".")
              + " The rest of an iteration is elementwise passes over the (replicates, tasks, classes, rows) arrays "
              "(see the solver section); GPUs "
              "(`gpu.sh`) are where large N belongs.", "", "![scaling](../docs/figures/scaling.png)"]
    large = [r for r in recs if r.get("sweep") == "large"]
    if large:
        g = large[-1]
        capped = g["max_iter"] < 100
        lines += ["", f"**Large run** (`scaling.py --large-only`, the CLI under `/usr/bin/time -v`, memory-mapped "
                  f"`.npy`): N = {g['n']:,}, D = {g['d']:,}, {g['tasks']} tasks (16 metadata + primary), B = {g['b']}, "
                  f"{g['cv_folds']} folds, `--memory-gb {g['memory_gb']:g}`"
                  + (f", fits capped at {g['max_iter']} iterations (a memory check: {g['not_converged']} fits flagged "
                     "not converged, as they must be)" if capped else "")
                  + f": peak RSS **{g['peak_rss_gb']:.2f} GB** (the issue's limit: 8 GB), wall {g['wall_s'] / 60:.1f} min; "
                  f"stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in g["stages"].items())
                  + f". The budget allowed {g['probe']['chunk']} replicates per compiled call, and every stage's calls "
                  "for one width group have that group's one shape, so a full run peaks at the same memory (the bootstrap weights add "
                  f"{200 * g['n'] * 4 / 1e9:.2f} GB at B = 200)."]
        if capped or g["b"] < 200:
            lines[-1] += (f" The fits took {g['seconds_per_call_iteration']:.1f} s per chunk of replicates (all width groups' calls) and iteration "
                          "(an overestimate: with so few iterations each call's fixed work -- the first and last "
                          "passes, the preconditioner -- is counted as iterations), so the full analysis (B = 200, 50 "
                          "jackknife blocks, 5 folds, about 30 iterations per call) would take at most about "
                          f"{g['estimated_fit_s_at_b200'] / 3600:.1f} h of fitting on these 2 cores: not run here (a GPU "
                          "is the place for it: `benchmarks/gpu.sh`).")
    return "\n".join(lines)


def scaling_figure(recs: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    pts = [r for r in recs if r.get("sweep") in ("n", "d", "t", "b")]
    if not pts:
        return
    when = pts[-1]["when"]
    pts = [r for r in pts if r["when"] == when]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3), dpi=100)
    for ax, var in zip(axes, ("n", "d", "t", "b")):
        sw = [r for r in pts if r["sweep"] == var]
        xs = [r[var] for r in sw]
        ax.loglog(xs, [r["wall_s"] for r in sw], "o-", label="wall")
        ax.loglog(xs, [r["warm_fit_s"] for r in sw], "s-", label="fits after compilation")
        ax.set_xlabel(var.upper())
        ax.set_ylabel("seconds")
        ax.set_xticks(xs, [f"{x:g}" if x < 1e4 else f"{x / 1e3:g}k" for x in xs], fontsize=8)   # the swept values
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ys = [r[k] for r in sw for k in ("wall_s", "warm_fit_s")]
        ticks = [v for v in (0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000) if min(ys) / 1.5 <= v <= max(ys) * 1.5]
        ax.set_yticks(ticks, [f"{v:g}" for v in ticks], fontsize=8)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "..", "docs", "figures", "scaling.png"))


def readme_speed() -> str | None:
    """The README's speed paragraph, from the latest records (None before any)."""
    whole, probes = _load("analyze_whole.jsonl"), _load("probe_throughput.jsonl")
    if not whole or not probes:
        return None
    latest = {}
    for r in probes:
        latest[r["data"]] = r
    w = whole[-1]
    parts = [f"**Speed** ([benchmarks/RESULTS.md](benchmarks/RESULTS.md), {w['machine']}, CPU). A whole `wsca analyze` "
             f"run as a new user runs it (fresh process, compilation, figures and report) on N = {w['n']:,}, "
             f"D = {w['d']} {w['data']} features, {w['tasks']} tasks and B = {w['boot']}: {w['ours']['wall_s']:.1f} s "
             f"against {w['baseline']['total_s']:.0f} s for the same {sum(v['fits'] for v in w['baseline']['stages'].values()):,} "
             f"fits with scikit-learn one at a time (extrapolated from sampled fits): **{w['ratio']:.1f}x**."]
    for data, label in (("realistic", "realistic (ill-conditioned, CNN-like) embeddings"),
                        ("isotropic", "white Gaussian features, where scikit-learn converges in "
                                      f"{latest.get('isotropic', {}).get('baseline_iterations_median', 'n/a')} iterations")):
        r = latest.get(data)
        if r:
            parts.append(f"The probe engine alone, {r['tasks'] * r['boot'] + r['tasks']:,} fits (N = {r['n']:,}, "
                         f"D = {r['d']}, {r['tasks']} tasks, B = {r['boot']}) on {label}: {r['ours_s']:.0f} s against "
                         f"{r['baseline_s']:,.0f} s, **{r['ratio']:.1f}x** (weight rows agree to cosine >= "
                         f"{np.floor(r['min_cosine'] * 1e5) / 1e5:.5f}).")
    return " ".join(parts)


GPU_TEXT = ("No GPU was lent to the session that built this (the device status said none is drawn for "
            "the task), so there are no GPU numbers yet. `bash benchmarks/gpu.sh` is ready: it installs the "
            "CUDA build of jax into `.venv-gpu`, checks that JAX sees a GPU, runs the whole-process benchmark, "
            "the realistic probe benchmark, the scaling sweeps and N = 1,000,000, D = 2,048, 33 tasks, B = 1,000 "
            "(fits only, chunks sized to the device memory), and writes JSON lines with achieved TFLOP/s and the "
            "fraction of the device's float32 matmul rate measured in the same run, the device named in each.")


def main() -> None:
    from prose import write_section
    path = os.path.join(HERE, "RESULTS.md")
    whole, probes, scaling = _load("analyze_whole.jsonl"), _load("probe_throughput.jsonl"), _load("scaling.jsonl")
    write_section(path, "whole", "## Whole-process `wsca analyze` vs the scikit-learn loop (`benchmarks/analyze_whole.py`, issue 13)",
                  whole_section(whole, _load("solver_profile.jsonl")))
    write_section(path, "solver", "## One solver iteration against its floor (`benchmarks/solver_profile.py`, issue 13)",
                  solver_section(_load("solver_profile.jsonl")))
    write_section(path, "probes", "## Probe throughput after issue 13 (`benchmarks/probe_throughput.py`)",
                  probe_section(probes))
    write_section(path, "warm", "## Iterations of a warm-started bootstrap fit (`benchmarks/warm_start_iterations.py`, issue 13)",
                  warm_section(_load("warm_start_iterations.jsonl"), probes))
    write_section(path, "scaling", "## Scaling and bounded memory (`benchmarks/scaling.py`, issue 13)",
                  scaling_section(scaling))
    gpu = _load(os.path.join("gpu_results", "large.jsonl"))
    write_section(path, "gpu", "## GPU (`benchmarks/gpu.sh`, issue 13)",
                  GPU_TEXT if not gpu else json.dumps(gpu[-1]))
    scaling_figure(scaling)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
