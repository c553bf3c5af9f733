"""Where one solver iteration's time goes (issue 13): measured against its floor.

For chunks of R replicates of the whole-process workload (default: R 8, 9 tasks -- 5 binary and 4
four-class -- on N 5,000 rows of D 256 dimensions), for each group of tasks of one class width
(``fit_replicates`` fits each group in its own call):

* ``iteration_ms``: one L-BFGS iteration of ``fit_replicates`` (bootstrap replicates warm-started,
  total time / iterations run, compiled beforehand);
* ``gemm_pair_ms``: the two matrix products an iteration needs (``X W^T`` and ``R^T X``), alone, as
  the solver runs them: over K - 1 classes (the last follows from the others': rows sum to zero);
  ``flops_pair`` = ``4 N D (K - 1) R T`` (the group's tasks and width); ``gemm_gflops`` their rate;

and, once:

* ``softmax_ms`` by layout: one max-shifted softmax over classes with the class axis last
  (``(R, T, N, K)``, the layout before issue 13) and before the rows (``(R, T, K, N)``, now).

Writes ``solver_profile.jsonl`` (one line per run).

    .venv/bin/python benchmarks/solver_profile.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _time(f, *args, reps: int = 20) -> float:
    f(*args).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        f(*args).block_until_ready()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--boot", type=int, default=32)
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp

    from analyze_whole import make_data
    from wsca_jax.probes import ProbeConfig, fit_replicates, make_basis, width_groups
    from wsca_jax.stats import bootstrap_weights

    n, d, R = args.n, args.d, 8
    z, labels, kinds = make_data("correlated", n, d, 4, 4)
    T, K = len(kinds), 4
    mask = np.zeros((T, K), bool)
    for t, k in enumerate(kinds):
        mask[t, :k] = True
    basis = make_basis(z)
    cfg = ProbeConfig(chunk=R)
    x = jnp.asarray(basis.x)
    w = bootstrap_weights(np.random.default_rng(1), n, args.boot)
    groups = []
    for tidx, width in width_groups(mask):        # fit_replicates fits each class width in its own call
        lab, m = labels[tidx], mask[tidx, :width]
        point = fit_replicates(basis, lab, np.ones((1, n), np.float32), m, cfg)
        init = (point.coef[0], point.intercept[0])
        fit_replicates(basis, lab, w[:R], m, cfg, init=init)                     # compiled
        t0 = time.perf_counter()
        boot = fit_replicates(basis, lab, w, m, cfg, init=init)
        el = time.perf_counter() - t0
        iters = int(boot.iterations[::R, 0].sum())                               # one group here
        Tg = len(tidx)
        rows = width - 1                          # the solver's products run over K - 1 classes
        W = jnp.asarray(np.random.default_rng(2).standard_normal((R, Tg, rows, d)), jnp.float32)
        pair = jax.jit(lambda x, W: jnp.einsum("rtkn,nd->rtkd", jnp.einsum("nd,rtkd->rtkn", x, W), x))
        t_pair = _time(pair, x, W)
        flops = 4.0 * n * d * rows * R * Tg
        groups.append({"classes": width, "product_rows": rows, "tasks": Tg, "iteration_ms": 1000 * el / iters, "iterations": iters,
                       "gemm_pair_ms": 1000 * t_pair, "flops_pair": flops, "gemm_gflops": flops / t_pair / 1e9,
                       "gemm_share": t_pair * iters / el})
    last = jax.jit(lambda z: jax.nn.softmax(z, axis=-1))
    mid = jax.jit(lambda z: jax.nn.softmax(z, axis=-2))
    zl = jnp.asarray(np.random.default_rng(3).standard_normal((R, T, n, K)), jnp.float32)
    zm = jnp.swapaxes(zl, -1, -2)
    rec = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "jax": jax.__version__, "n": n, "d": d, "replicates_per_call": R, "tasks": T, "boot": args.boot,
           "groups": groups,
           "softmax_ms_classes_last": 1000 * _time(last, zl), "softmax_ms_classes_before_rows": 1000 * _time(mid, zm)}
    with open(os.path.join(HERE, "solver_profile.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
