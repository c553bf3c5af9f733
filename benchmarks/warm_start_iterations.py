"""How many iterations a warm-started bootstrap fit needs, and why (issue 13, isotropic target).

On the isotropic probe benchmark our solver runs about as many iterations per bootstrap replicate
(warm-started at the full-data fit) as scikit-learn needs from zero, so batching is its only gain.
This script asks whether the iteration count is the solver's fault: for binary tasks of that
benchmark (N 10,000, D 512 white Gaussian features), on a few bootstrap replicates each, it
counts the iterations to ``max |gradient| <= 1e-5`` of

* **ours**: ``fit_replicates`` warm-started at the full-data fit (one replicate per call, float32,
  the K-FAC preconditioner at the full-data fit -- exact there for a binary task);
* **L-BFGS-B (float64)**: SciPy's L-BFGS-B on the same objective, warm-started at the same point,
  in coordinates whitened by the exact float64 Hessian at the full-data fit (the natural fixed
  preconditioner: the one ours approximates);
* **Newton (float64)**: exact Newton steps with each replicate's own Hessian (what a fixed
  preconditioner cannot do);

and the spread of the eigenvalues of the replicate's Hessian in the whitened coordinates (the
condition number a fixed preconditioner leaves). All in the rotated basis ``make_basis`` gives.
Writes one line to ``warm_start_iterations.jsonl``.

    .venv/bin/python benchmarks/warm_start_iterations.py [--tasks 3] [--replicates 3]
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


def _problem(x, y, C):
    """Binary objective on one weight vector ``v`` (D+1, intercept last) equal to our two-row model's
    (rows -v/2, +v/2): mean weighted CE + ||v||^2 / (4 C n). Returns ``fg(v, w)`` and ``hess(v, w)``."""
    from scipy.special import expit
    xt = np.hstack([x, np.ones((len(x), 1))])
    pen = np.r_[np.ones(x.shape[1]), 0.0]

    def fg(v, w):
        n = w.sum()
        s = xt @ v
        f = (w * (np.logaddexp(0, s) - y * s)).sum() / n + (pen * v * v).sum() / (4 * C * n)
        return f, xt.T @ (w * (expit(s) - y)) / n + pen * v / (2 * C * n)

    def hess(v, w):
        n = w.sum()
        p = expit(xt @ v)
        return (xt * (w * p * (1 - p) / n)[:, None]).T @ xt + np.diag(pen) / (2 * C * n)

    return fg, hess


def _first_below(gs, tol):
    return next((i for i, g in enumerate(gs) if g <= tol), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=3, help="binary tasks of the benchmark")
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    import jax
    from scipy.optimize import minimize

    from probe_throughput import make_data
    from wsca_jax.probes import ProbeConfig, fit_replicates, make_basis
    from wsca_jax.stats import bootstrap_weights

    z, labels, kinds = make_data("isotropic", 10_000, 512, 8, 8)
    basis = make_basis(z)
    x = np.asarray(basis.x, np.float64)
    n = len(x)
    cfg = ProbeConfig(C=1.0, tol=args.tol, chunk=1)
    mask = np.array([[True, True]])
    weights = bootstrap_weights(np.random.default_rng(1), n, args.replicates)
    rows = []
    for t in [t for t, k in enumerate(kinds) if k == 2][: args.tasks]:
        lab = labels[t:t + 1].astype(np.int32)
        full = fit_replicates(basis, lab, np.ones((1, n), np.float32), mask, cfg.replace(tol=1e-6))
        v0 = np.r_[full.coef[0, 0, 1] - full.coef[0, 0, 0], full.intercept[0, 0, 1] - full.intercept[0, 0, 0]].astype(np.float64)
        fg, hess = _problem(x, lab[0].astype(np.float64), cfg.C)
        ones = np.ones(n)
        v0 = minimize(fg, v0, args=(ones,), jac=True, method="L-BFGS-B", options=dict(gtol=1e-12, ftol=0)).x
        L = np.linalg.cholesky(hess(v0, ones))
        Linv = np.linalg.inv(L)
        for r in range(args.replicates):
            w = weights[r].astype(np.float64)
            ours = fit_replicates(basis, lab, weights[r:r + 1], mask, cfg, init=(full.coef[0], full.intercept[0]))
            gs = []

            def whitened(u):
                f, g = fg(Linv.T @ u, w)
                gs.append(float(np.abs(g).max()))
                return f, Linv @ g

            iters = []
            minimize(whitened, L.T @ v0, jac=True, method="L-BFGS-B", callback=lambda *_: iters.append(len(gs)),
                     options=dict(gtol=0, ftol=0, maxiter=60, maxcor=10))
            evals_at = _first_below(gs, args.tol)
            # the iteration whose accepted point is that evaluation (iters: evaluations so far after each)
            lbfgs_it = None if evals_at is None else 0 if evals_at == 0 else next((k + 1 for k, e in enumerate(iters) if e > evals_at), None)
            v, newton = v0.copy(), []
            for _ in range(8):
                f, g = fg(v, w)
                newton.append(float(np.abs(g).max()))
                v = v - np.linalg.solve(hess(v, w), g)
            ev = np.linalg.eigvalsh(Linv @ hess(v0, w) @ Linv.T)
            rows.append({"task": t, "replicate": r, "start_grad_max": gs[0], "ours_iterations": int(ours.iterations[0, 0]),
                         "ours_converged": bool(ours.converged.all()), "lbfgs64_iterations": lbfgs_it,
                         "newton_iterations": _first_below(newton, args.tol),
                         "whitened_hessian_eig_min": float(ev.min()), "whitened_hessian_eig_max": float(ev.max())})
            print(json.dumps(rows[-1]))
    rec = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "jax": jax.__version__, "data": "isotropic", "n": n, "d": x.shape[1], "tol": args.tol, "rows": rows}
    with open(os.path.join(HERE, "warm_start_iterations.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
