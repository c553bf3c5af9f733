"""Probe throughput: batched JAX probes vs scikit-learn fitted one by one.

Workload (issue 2): N=10,000 embeddings, D=512, 16 metadata tasks (8 binary, 8 with 4 classes) plus
the primary task, B=200 bootstrap replicates: 17 x 200 = 3,400 probe fits (+17 full-data fits).

* ours: ``wsca_jax.fit_replicates`` -- the full-data fits (cold), then all replicates warm-started
  from them, every task and replicate batched (the path ``wsca analyze --bootstrap`` takes).
* baseline: ``sklearn.linear_model.LogisticRegression`` (lbfgs, same objective, same C, same
  gradient tolerance) fitted per task per replicate with the replicate's counts as sample_weight.
  A sample of the fits is timed -- every task, on random replicates, at least ``--sample`` fits per
  task kind -- and the total extrapolated from the per-task mean times (said in the output).

Quality: for the sampled fits, the cosine between our weight rows and scikit-learn's, and the
relative objective gap. Data: ``realistic`` (default) mimics CNN embeddings: a power-law spectrum,
ReLU features, tasks of graded strength; ``isotropic`` is white Gaussian features (an easy,
well-conditioned problem where scikit-learn needs few iterations).

Usage: python benchmarks/probe_throughput.py [--data realistic|isotropic] [--boot 200] [--sample 12]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np


def make_data(kind: str, n: int, d: int, n_bin: int, n_multi: int, seed: int = 0):
    """Embeddings (N, D) float32 and labels (T, N): primary (binary) first, then the tasks."""
    rng = np.random.default_rng(seed)
    if kind == "isotropic":
        z = rng.standard_normal((n, d)).astype(np.float32)
        latent, spec = z.astype(np.float64), np.ones(d)
    else:
        spec = 1.0 / np.arange(1, d + 1)                     # power-law latent spectrum
        latent = rng.standard_normal((n, d)) * np.sqrt(spec)
        mix = rng.standard_normal((d, d)) / np.sqrt(d)
        z = (3.0 * np.maximum(latent @ mix + 0.1, 0.0)).astype(np.float32)   # ReLU, like GAP features
    labels = []
    kinds = [2] * (1 + n_bin) + [4] * n_multi
    for t, k in enumerate(kinds):
        strength = 1.0 + 4.0 * (t % 4) / 3.0                # graded: weakly to strongly encoded
        beta = rng.standard_normal((d, k)) * np.sqrt(spec)[:, None] * strength
        labels.append(np.argmax(latent @ beta + rng.gumbel(size=(n, k)), axis=1))
    return z, np.stack(labels).astype(np.int32), kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="realistic", choices=["realistic", "isotropic"])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--binary", type=int, default=8)
    ap.add_argument("--multi", type=int, default=8)
    ap.add_argument("--boot", type=int, default=200)
    ap.add_argument("--sample", type=int, default=12, help="baseline fits timed per task kind")
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--record", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "probe_throughput.jsonl"))
    args = ap.parse_args()

    import jax
    from sklearn.linear_model import LogisticRegression

    from wsca_jax.probes import ProbeConfig, fit_replicates, make_basis, to_original
    from wsca_jax.probes import sklearn_equivalent_C
    from wsca_jax.stats import bootstrap_weights

    z, labels, kinds = make_data(args.data, args.n, args.d, args.binary, args.multi)
    T, n = labels.shape
    mask = np.zeros((T, 4), bool)
    for t, k in enumerate(kinds):
        mask[t, :k] = True
    weights = bootstrap_weights(np.random.default_rng(1), n, args.boot)
    cfg = ProbeConfig(C=args.C, tol=args.tol, chunk=args.chunk)
    n_fits = T * args.boot
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")
    print(f"workload: N={n} D={args.d} tasks={T} ({kinds.count(2)} binary incl. primary, {kinds.count(4)} 4-class), "
          f"B={args.boot} -> {n_fits} bootstrap fits + {T} full-data fits; data={args.data}, C={args.C}, tol={args.tol}")

    # ---- ours -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    basis = make_basis(z)
    point = fit_replicates(basis, labels, np.ones((1, n), np.float32), mask, cfg)
    t_point = time.perf_counter() - t0
    it_point = int(point.iterations[0].max())
    t1 = time.perf_counter()
    boot = fit_replicates(basis, labels, weights, mask, cfg, init=(point.coef[0], point.intercept[0]))
    t_boot = time.perf_counter() - t1
    it_boot = [int(i) for i in boot.iterations[::cfg.chunk].max(axis=1)]   # the slowest group's
    ours = t_point + t_boot
    print(f"ours: {ours:.1f} s total (basis + full-data fits incl. compilation {t_point:.1f} s, "
          f"iterations {it_point}; {args.boot} replicates {t_boot:.1f} s, iterations per chunk "
          f"min {min(it_boot)} / median {int(np.median(it_boot))} / max {max(it_boot)}); "
          f"max |grad| {boot.grad_max.max():.1e}")

    # ---- baseline ---------------------------------------------------------------------------
    rng = np.random.default_rng(2)
    per_kind = {}
    cosines, gaps, sk_iters = [], [], []
    for k in (2, 4):
        tasks = [t for t in range(T) if kinds[t] == k]
        times = {t: [] for t in tasks}
        for i in range(max(args.sample, len(tasks))):          # every task timed (stratified by task)
            t = tasks[i % len(tasks)]; r = int(rng.integers(args.boot))   # noqa: E702
            m = LogisticRegression(C=sklearn_equivalent_C(args.C, k), tol=args.tol, max_iter=20_000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = time.perf_counter()
                m.fit(z, labels[t], sample_weight=weights[r])
                times[t].append(time.perf_counter() - s)
            sk_iters.append(int(m.n_iter_[0]))
            ref = np.stack([-m.coef_[0], m.coef_[0]]) / 2 if k == 2 else m.coef_
            ref_b = np.array([-m.intercept_[0], m.intercept_[0]]) / 2 if k == 2 else m.intercept_
            mine, mine_b = to_original(boot.coef[r, t, :k], boot.intercept[r, t, :k], basis)
            cosines.append(float(((mine * ref).sum(1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(ref, axis=1)).min()))
            gaps.append(_objective_gap(z, labels[t], weights[r], mine, mine_b, ref, ref_b, args.C))
        per_kind[k] = (float(np.mean([np.mean(v) for v in times.values()])), len(tasks))   # mean over tasks
    base = sum(mean * n_tasks * args.boot + mean * n_tasks for mean, n_tasks in per_kind.values())
    print(f"baseline: scikit-learn LogisticRegression(lbfgs, tol={args.tol}) one fit at a time; timed "
          f"{len(sk_iters)} sampled fits (mean {per_kind[2][0]:.2f} s binary, {per_kind[4][0]:.2f} s 4-class; "
          f"iterations median {int(np.median(sk_iters))}, max {max(sk_iters)}) and extrapolated to "
          f"{n_fits + T} fits: {base:.0f} s")
    print(f"agreement on the sampled fits: min row cosine {min(cosines):.6f} (median {np.median(cosines):.6f}); "
          f"objective ours vs scikit-learn: max relative gap {max(gaps):+.1e} (negative = ours lower)")
    print(f"SPEEDUP: {base / ours:.1f}x  (baseline {base:.0f} s / ours {ours:.1f} s)")
    import json
    import sklearn
    rec = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "jax": jax.__version__, "sklearn": sklearn.__version__, "data": args.data, "n": n, "d": args.d, "tasks": T,
           "boot": args.boot, "ours_s": ours, "point_s": t_point, "boot_s": t_boot, "iterations_median": int(np.median(it_boot)),
           "baseline_s": base, "baseline_iterations_median": int(np.median(sk_iters)), "min_cosine": min(cosines),
           "max_objective_gap": max(gaps), "ratio": base / ours}
    rec["device"] = str(jax.devices()[0].device_kind)
    with open(args.record, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _objective_gap(z, y, w, c1, b1, c2, b2, C):
    def obj(c, b):
        logits = z.astype(np.float64) @ c.T + b
        logits -= logits.max(1, keepdims=True)
        lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        return -(w * lp[np.arange(len(y)), y]).sum() / w.sum() + (c ** 2).sum() / (2 * C * w.sum())
    o1, o2 = obj(c1, b1), obj(c2, b2)
    return (o1 - o2) / abs(o2)


if __name__ == "__main__":
    main()
