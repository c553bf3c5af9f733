"""Whole-process `wsca analyze` against the scikit-learn loop that computes the same fits (issue 13).

Workload (default): N = 5,000 embeddings, D = 256 correlated Gaussian features (a power-law
spectrum mixed by a random rotation), 9 tasks (the binary primary, 4 binary and 4 four-class
metadata tasks), B = 100 bootstrap replicates, no permutations.

* ours: ``wsca analyze`` run as a new user runs it -- a fresh Python process, imports, reading the
  files, compilation, every stage, figures and ``report.html`` -- timed from outside
  (``--no-figures`` optional). The stage profile comes from the run's ``diagnostics.stage_seconds``.
* baseline: the same fits with scikit-learn's ``LogisticRegression`` (lbfgs, the same objective,
  C and gradient tolerance), one at a time: the full-data probes (T), the cross-validated probes
  (folds x T), the bootstrap refits (B x T, bootstrap counts as sample weights) and the jackknife
  refits (blocks x T). A random sample of each kind is timed and extrapolated (``--full-baseline``
  fits them all); PCA and the cosines are left out of the baseline (they take milliseconds).

Prints the ratio measured in the same run and appends a JSON line to ``analyze_whole.jsonl``.

Usage: python benchmarks/analyze_whole.py [--data correlated|isotropic|realistic] [--n 5000] [--d 256]
       [--boot 100] [--permutations 0] [--sample 10] [--full-baseline] [--no-figures]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def make_data(kind: str, n: int, d: int, n_bin: int, n_multi: int, seed: int = 0):
    """Embeddings ``(N, D)`` float32, labels ``(T, N)`` (primary first) and class counts per task.

    ``correlated``: Gaussian with a power-law covariance spectrum in a random rotation; ``isotropic``
    and ``realistic``: ``probe_throughput.make_data``'s (white Gaussian; ReLU features of a
    power-law latent, CNN-like)."""
    if kind != "correlated":
        from probe_throughput import make_data as probe_data
        return probe_data(kind, n, d, n_bin, n_multi, seed)
    rng = np.random.default_rng(seed)
    spec = 1.0 / np.arange(1, d + 1)
    latent = rng.standard_normal((n, d)) * np.sqrt(spec)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    z = 3.0 * latent @ q.T
    kinds = [2] * (1 + n_bin) + [4] * n_multi
    labels = []
    for t, k in enumerate(kinds):
        strength = 1.0 + 4.0 * (t % 4) / 3.0
        beta = rng.standard_normal((d, k)) * np.sqrt(spec)[:, None] * strength
        labels.append(np.argmax(latent @ beta + rng.gumbel(size=(n, k)), axis=1))
    return z.astype(np.float32), np.stack(labels).astype(np.int32), kinds


def run_ours(z, labels, args, tmp: str) -> dict:
    """``wsca analyze`` in a fresh process; wall time from outside, stage profile from wsca.json."""
    import pandas as pd
    np.save(os.path.join(tmp, "emb.npy"), z)
    cols = {"primary": labels[0], **{f"task{t}": labels[t] for t in range(1, len(labels))}}
    pd.DataFrame(cols).to_csv(os.path.join(tmp, "meta.csv"), index=False)
    out = os.path.join(tmp, "out")
    cmd = [sys.executable, "-m", "wsca_jax.cli", "analyze", "--embeddings", os.path.join(tmp, "emb.npy"),
           "--metadata", os.path.join(tmp, "meta.csv"), "--primary", "primary",
           "--categorical", ",".join(c for c in cols if c != "primary"),
           "--bootstrap", str(args.boot), "--permutations", str(args.permutations), "--quiet", "--out", out]
    if args.no_figures:
        cmd.append("--no-figures")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(tmp, "jax_cache_unused")}
    env.pop("JAX_COMPILATION_CACHE_DIR")                 # a new user's process: no compilation cache
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"wsca analyze failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    with open(os.path.join(out, "wsca.json")) as f:
        rec = json.load(f)
    d = rec["diagnostics"]
    return {"wall_s": wall, "stages": d.get("stage_seconds", {}), "fits": d.get("stage_fits", {}),
            "iterations": {k: d.get(k) for k in ("point_iterations",)}, "settings": rec["settings"]}


def run_baseline(z, labels, kinds, fits: dict, args) -> dict:
    """Time a sample of each kind of fit with scikit-learn and extrapolate to ``fits``."""
    from sklearn.linear_model import LogisticRegression

    from wsca_jax.probes import sklearn_equivalent_C
    from wsca_jax.stats import bootstrap_weights
    rng = np.random.default_rng(2)
    n = z.shape[0]
    zz = z.astype(np.float64)
    per_stage, iters = {}, []
    for stage, count in fits.items():
        if count == 0:
            continue
        n_rep = max(1, count // len(kinds))
        # every task equally often (a random draw of tasks made the extrapolation swing by a third
        # between runs: binary and 4-class fits differ in cost)
        per_task = n_rep if args.full_baseline else max(1, min(n_rep, args.sample // len(kinds)))
        m_fit = per_task * len(kinds)
        times = []
        for j in range(m_fit):
            t = j % len(kinds)
            if stage == "bootstrap":
                w = bootstrap_weights(rng, n, 1)[0]
            elif stage in ("cv", "jackknife"):
                blocks = 5 if stage == "cv" else n_rep
                w = (rng.integers(0, blocks, n) != 0).astype(float)
            else:
                w = np.ones(n)
            m = LogisticRegression(C=sklearn_equivalent_C(args.C, kinds[t]), tol=args.tol, max_iter=20_000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = time.perf_counter()
                m.fit(zz, labels[t], sample_weight=w)
                times.append(time.perf_counter() - s)
            iters.append(int(m.n_iter_[0]))
        per_stage[stage] = {"fits": int(count), "timed": len(times), "mean_s": float(np.mean(times)),
                            "total_s": float(np.mean(times) * count)}
    total = sum(v["total_s"] for v in per_stage.values())
    return {"total_s": total, "stages": per_stage, "iterations_median": int(np.median(iters)),
            "iterations_max": int(max(iters)), "extrapolated": not args.full_baseline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="correlated", choices=["correlated", "isotropic", "realistic"])
    ap.add_argument("--n", type=int, default=5_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--binary", type=int, default=4)
    ap.add_argument("--multi", type=int, default=4)
    ap.add_argument("--boot", type=int, default=100)
    ap.add_argument("--permutations", type=int, default=0)
    ap.add_argument("--sample", type=int, default=18, help="baseline fits timed per stage, spread evenly over the "
                                                          "tasks (extrapolated)")
    ap.add_argument("--full-baseline", action="store_true", help="fit every baseline fit (slow)")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--record", default=os.path.join(HERE, "analyze_whole.jsonl"))
    args = ap.parse_args()
    z, labels, kinds = make_data(args.data, args.n, args.d, args.binary, args.multi)
    with tempfile.TemporaryDirectory(prefix="wsca-bench-") as tmp:
        ours = run_ours(z, labels, args, tmp)
    fits = {k: v for k, v in ours["fits"].items() if k != "permutation"} or {"point": len(kinds)}
    if args.permutations:
        fits["permutation"] = ours["fits"].get("permutation", 0)
    base = run_baseline(z, labels, kinds, fits, args)
    import jax
    import sklearn
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    rec = {"when": time.strftime("%Y-%m-%d %H:%M"), "commit": commit or None,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "jax": jax.__version__, "sklearn": sklearn.__version__, "data": args.data, "n": args.n, "d": args.d,
           "tasks": len(kinds), "kinds": kinds, "boot": args.boot, "permutations": args.permutations,
           "figures": not args.no_figures, "ours": ours, "baseline": base, "ratio": base["total_s"] / ours["wall_s"]}
    rec["ours"].pop("settings")
    with open(args.record, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"workload: N={args.n} D={args.d} data={args.data}, {len(kinds)} tasks "
          f"({kinds.count(2)} binary incl. primary, {kinds.count(4)} 4-class), B={args.boot}, P={args.permutations}")
    print("ours (wsca analyze, whole process): " + f"{ours['wall_s']:.1f} s; stages: "
          + ", ".join(f"{k} {v:.2f}" for k, v in ours["stages"].items()))
    print("baseline (scikit-learn, one fit at a time" + (", extrapolated" if base["extrapolated"] else "") + "): "
          + f"{base['total_s']:.1f} s; " + ", ".join(f"{k} {v['fits']} fits x {v['mean_s']:.3f} s"
                                                     for k, v in base["stages"].items())
          + f"; sklearn iterations median {base['iterations_median']}, max {base['iterations_max']}")
    print(f"RATIO: {rec['ratio']:.1f}x")


if __name__ == "__main__":
    main()
