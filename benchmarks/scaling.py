"""Scaling of `wsca analyze` in N (rows), D (dimensions), T (tasks) and B (bootstrap replicates) (issue 13).

Every point runs ``wsca_jax.analyze`` in a fresh process (compilation included, no compilation
cache) on correlated Gaussian embeddings (``analyze_whole.make_data``; tasks alternate binary and
4-class), with every compiled solver call (one chunk of one group of tasks of one class width)
timed and its L-BFGS iterations recorded, and the peak resident memory
of that process. From the iterations the script counts the floating-point work of the two matrix
products per iteration (``u = X dW`` and the gradient ``R^T X``: ``4 N D (K - 1)`` per fit-iteration, ``K``
the group's class width: the solver's products run over K - 1 classes, the rows summing to zero),
plus the exact logits' one every 10th iteration: x 1.05; the preconditioner's Gram matrices are not counted), and reports the achieved GFLOP/s of the fits against
this machine's float32 GEMM rate measured in the same run (the roofline fraction). Log-log slopes of
the fit time against each swept variable are fitted; the cost model says about 1 for N, T and B.

Writes ``scaling.jsonl`` (one line per point) and prints a table; ``render_results.py`` draws the figure.

Usage: python benchmarks/scaling.py [--quick] [--points N,D,T,B] [--large]
  --large   also N = 200,000, D = 1,024, 16 tasks (+ primary), B = --large-boot, memory-mapped .npy,
            through the CLI under /usr/bin/time -v with --memory-gb 6 (peak RSS must stay under 8 GB);
            --large-max-iter 3 --large-boot 4 --large-cv-folds 2 makes it a memory check of minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = dict(n=4000, d=256, t=9, b=20)
SWEEPS = {"n": [1000, 4000, 16000, 64000], "d": [64, 256, 1024, 2048], "t": [2, 4, 16, 64], "b": [10, 100, 1000]}

_POINT = r"""
import json, resource, sys, time
sys.path.insert(0, {here!r})
import numpy as np, pandas as pd
from analyze_whole import make_data
import wsca_jax as wsca
from wsca_jax import analysis
n, d, t, b = {n}, {d}, {t}, {b}
n_bin = max(1, t // 2); n_multi = t - 1 - n_bin   # t tasks: the binary primary, then binary and 4-class
z, labels, kinds = make_data("correlated", n, d, n_bin, n_multi)
meta = pd.DataFrame({{"primary": labels[0], **{{f"task{{i}}": labels[i] for i in range(1, len(kinds))}}}})
calls = []
from wsca_jax.probes import engine   # fit_replicates calls engine.fit_batched
orig = engine.fit_batched
def timed(*a, **k):                 # one compiled call: one chunk of one group of tasks of one class width
    s = time.perf_counter(); f = orig(*a, **k); f.iterations.block_until_ready(); e = time.perf_counter() - s
    calls.append({{"replicates": int(f.iterations.shape[0]), "iterations": np.asarray(f.iterations).tolist(),
                  "seconds": e, "k_pad": int(f.coef.shape[-2]), "tasks": int(f.coef.shape[-3])}})
    return f
engine.fit_batched = timed
t0 = time.perf_counter()
config = wsca.AnalysisConfig().replace(categorical=[c for c in meta.columns if c != "primary"], bootstrap=b, permutations=0)
r = wsca.analyze(z, meta, "primary", config=config)
wall = time.perf_counter() - t0
print(json.dumps({{"wall": wall, "stages": r.diagnostics["stage_seconds"], "calls": calls,
                  "fits": int(sum(r.diagnostics["stage_fits"].values())),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}}))
"""


def gemm_rate(n: int = 4000, d: int = 256, cols: int = 288, reps: int = 20) -> float:
    """This machine's float32 GFLOP/s for a ``(N, D) x (D, cols)`` product in XLA (the base point's 9
    tasks padded to 4 classes for 8 replicates; the solver's products are now narrower: each width
    group's own, over K - 1 classes, 40 and 96 columns at the base point)."""
    import jax
    import jax.numpy as jnp
    x = jnp.asarray(np.random.default_rng(0).standard_normal((n, d)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).standard_normal((d, cols)), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    f(x, w).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        f(x, w).block_until_ready()
    return 2.0 * n * d * cols * reps / (time.perf_counter() - t0) / 1e9


def fit_flops(call: dict, n: int, d: int) -> float:
    """Matrix-product FLOPs of one compiled solver call (one chunk of one group of tasks of one class
    width ``K``): every replicate x task runs the call's iterations; 2 products of ``2 N D (K - 1)``
    per iteration (the solver's products run over K - 1 classes: rows sum to zero), one more every
    10th iteration (exact logits)."""
    its = np.asarray(call["iterations"], float)         # per replicate (the chunk's count, repeated)
    per_iter = 2 * 2.0 * n * d * (call["k_pad"] - 1) * call["tasks"]
    return float(np.sum(its * per_iter * 1.05))


def run_point(n: int, d: int, t: int, b: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    r = subprocess.run([sys.executable, "-c", _POINT.format(here=HERE, n=n, d=d, t=t, b=b)], capture_output=True,
                       text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"point N={n} D={d} T={t} B={b} failed: {r.stderr[-1500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    fit_s = sum(c["seconds"] for c in out["calls"])
    flops = sum(fit_flops(c, n, d) for c in out["calls"])
    seen, warm = set(), []                               # a shape's first call compiles; the others reuse it
    for c in out["calls"]:
        key = (c["replicates"], c["tasks"], c["k_pad"])
        warm += [c] if key in seen else []
        seen.add(key)
    warm_s, warm_flops = sum(c["seconds"] for c in warm), sum(fit_flops(c, n, d) for c in warm)
    return {"n": n, "d": d, "t": t, "b": b, "wall_s": out["wall"], "fit_s": fit_s, "stages": out["stages"],
            "gflop": flops / 1e9, "gflops_per_s": flops / 1e9 / fit_s, "peak_rss_gb": out["peak_rss_gb"],
            "warm_fit_s": warm_s, "warm_gflops_per_s": warm_flops / 1e9 / max(warm_s, 1e-9),
            "fits": out["fits"]}


def slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def large_run(boot: int, memory_gb: float, max_iter: int, cv_folds: int) -> dict:
    """N = 200,000, D = 1,024, 16 metadata tasks + primary through the CLI, memory-mapped .npy.

    With ``max_iter`` small this is a memory check (every compiled call has the shape a full run's
    calls have, so the peak is the same), and the time per replicate-iteration it measures
    extrapolates the full run (30 iterations per fit, B = 200, 50 jackknife blocks, 5 folds)."""
    import pandas as pd
    sys.path.insert(0, HERE)
    n, d = 200_000, 1024
    with tempfile.TemporaryDirectory(prefix="wsca-large-") as tmp:
        emb = np.lib.format.open_memmap(os.path.join(tmp, "emb.npy"), mode="w+", dtype=np.float32, shape=(n, d))
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        spec = np.sqrt(1.0 / np.arange(1, d + 1))
        kinds = [2] * 9 + [4] * 8
        betas = [rng.standard_normal((d, k)) * spec[:, None] * (1 + 4 * (t % 4) / 3) for t, k in enumerate(kinds)]
        labels = np.zeros((len(kinds), n), np.int32)
        for s in range(0, n, 20000):
            lat = rng.standard_normal((min(20000, n - s), d)) * spec
            emb[s:s + len(lat)] = 3.0 * lat @ q.T
            for t, beta in enumerate(betas):
                labels[t, s:s + len(lat)] = np.argmax(lat @ beta + rng.gumbel(size=(len(lat), beta.shape[1])), axis=1)
        emb.flush()
        del emb
        cols = {"primary": labels[0], **{f"task{t}": labels[t] for t in range(1, len(kinds))}}
        pd.DataFrame(cols).to_csv(os.path.join(tmp, "meta.csv"), index=False)
        out = os.path.join(tmp, "out")
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "wsca_jax.cli", "analyze", "--embeddings",
               os.path.join(tmp, "emb.npy"), "--metadata", os.path.join(tmp, "meta.csv"), "--primary", "primary",
               "--categorical", ",".join(c for c in cols if c != "primary"), "--bootstrap", str(boot),
               "--permutations", "0", "--memory-gb", str(memory_gb), "--max-iter", str(max_iter),
               "--cv-folds", str(cv_folds), "--quiet", "--no-figures", "--out", out]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"large run failed: {r.stderr[-2000:]}")
        peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
        with open(os.path.join(out, "wsca.json")) as f:
            rec = json.load(f)
    st = rec["diagnostics"]["stage_seconds"]
    chunk = rec["diagnostics"]["devices"]["replicates_per_call"]
    fits_s = sum(st.get(k, 0.0) for k in ("point", "cv", "bootstrap", "jackknife"))
    calls = sum(-(-v // len(kinds) // chunk) for v in rec["diagnostics"]["stage_fits"].values())
    per_call_iter = fits_s / (calls * max_iter)                # seconds per chunk (all width groups) and iteration
    full_calls = 1 + 1 + -(-200 // chunk) + -(-50 // chunk)    # point, 5 folds, B = 200, 50 blocks
    return {"n": n, "d": d, "tasks": len(kinds), "b": boot, "memory_gb": memory_gb, "max_iter": max_iter,
            "cv_folds": cv_folds, "wall_s": wall, "peak_rss_gb": peak_kb * 1024 / 1e9, "stages": st,
            "fits": rec["diagnostics"]["stage_fits"], "probe": rec["resolved"]["probe"],
            "devices": rec["diagnostics"].get("devices"), "not_converged": rec["diagnostics"]["fits_not_converged"],
            "seconds_per_call_iteration": per_call_iter,
            "estimated_fit_s_at_b200": per_call_iter * 30 * (full_calls + -(-5 // chunk) - 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two points per sweep (a smoke run)")
    ap.add_argument("--points", default="n,d,t,b", help="which sweeps")
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--large-only", action="store_true")
    ap.add_argument("--large-boot", type=int, default=200)
    ap.add_argument("--memory-gb", type=float, default=6.0)
    ap.add_argument("--large-max-iter", type=int, default=1000, help="iteration cap of the large run (small: a memory check)")
    ap.add_argument("--large-cv-folds", type=int, default=5)
    ap.add_argument("--record", default=os.path.join(HERE, "scaling.jsonl"))
    args = ap.parse_args()
    import jax
    rate = gemm_rate()
    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "device": str(jax.devices()[0].platform), "jax": jax.__version__, "gemm_gflops": rate}
    print(f"machine: {meta['machine']}, {meta['device']}; float32 GEMM (4000x256 @ 256x288) {rate:.1f} GFLOP/s")
    rows = []
    if not args.large_only:
        for var in args.points.split(","):
            values = SWEEPS[var][:2] if args.quick else SWEEPS[var]
            for v in values:
                p = {**BASE, var: v}
                row = {"sweep": var, **run_point(p["n"], p["d"], p["t"], p["b"]), **meta}
                rows.append(row)
                with open(args.record, "a") as f:                # kept as soon as measured
                    f.write(json.dumps(row) + "\n")
                print(f"{var}={v:>6}: wall {row['wall_s']:7.1f} s, fits {row['fit_s']:7.1f} s ({row['fits']} fits, "
                      f"{row['gflop']:.0f} GFLOP), after compilation {row['warm_fit_s']:.1f} s at "
                      f"{row['warm_gflops_per_s']:.1f} GFLOP/s = {row['warm_gflops_per_s'] / rate:.0%} of GEMM; "
                      f"peak {row['peak_rss_gb']:.2f} GB", flush=True)
            sw = [r for r in rows if r["sweep"] == var]
            if len(sw) > 1:
                xs = [r[var] for r in sw]
                print(f"  log-log slope vs {var}: fits after compilation {slope(xs, [r['warm_fit_s'] for r in sw]):.2f}, "
                      f"wall {slope(xs, [r['wall_s'] for r in sw]):.2f}")
    if args.large or args.large_only:
        big = {"sweep": "large", **large_run(args.large_boot, args.memory_gb, args.large_max_iter, args.large_cv_folds),
               **meta}
        with open(args.record, "a") as f:
            f.write(json.dumps(big) + "\n")
        print(f"large: N={big['n']} D={big['d']} tasks={big['tasks']} B={big['b']}: wall {big['wall_s']:.0f} s, peak RSS "
              f"{big['peak_rss_gb']:.2f} GB (--memory-gb {args.memory_gb}); stages {big['stages']}")


if __name__ == "__main__":
    main()
