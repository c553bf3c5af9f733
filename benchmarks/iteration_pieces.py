"""One solver iteration taken apart (issue 13, isotropic target): milliseconds per piece.

For a chunk of 8 bootstrap replicates x the probe-throughput tasks (default: the isotropic
benchmark, N 10,000, D 512, 17 tasks padded to 4 classes; ``--group binary|multi``: one width
group as ``fit_replicates`` now fits it), warm-started at the full-data fits,
each piece of ``probes.lbfgs.update`` is jit-compiled alone (vmapped over the replicates, as in
``fit_batched``) and timed after compilation: the whole step, the L-BFGS direction, the direction's
logits ``u = X d`` (one matrix product), the line search (two trial objectives and their
derivatives), one objective (``_loss_terms``: softmax and cross-entropy), the gradient (residual
and the second matrix product), the periodic refresh, one application of the preconditioner; and,
for scale, the two bare matrix products, a bare softmax and a bare ``exp`` on arrays of the same
shape. Writes one line to ``iteration_pieces.jsonl``.

    .venv/bin/python benchmarks/iteration_pieces.py [--data isotropic|realistic] [--group all|binary|multi]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _ms(f, *args, reps: int = 30) -> float:
    import jax
    jax.block_until_ready(f(*args))
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(f(*args))
    return 1000.0 * (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="isotropic", choices=["isotropic", "realistic"])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--group", default="all", choices=["all", "binary", "multi"],
                    help="all tasks padded to 4 classes (as before issue 13 grouped them), or one width group")
    args = ap.parse_args()
    import jax
    import jax.numpy as jnp

    from probe_throughput import make_data
    from wsca_jax.probes import ProbeConfig, fit_replicates, kfac_precond, lbfgs, linesearch, make_basis
    from wsca_jax.probes import objective as obj
    from wsca_jax.probes import precondition as pc
    from wsca_jax.stats import bootstrap_weights

    R = 8
    z, labels, kinds = make_data(args.data, args.n, args.d, 8, 8)
    if args.group != "all":
        keep = [t for t, k in enumerate(kinds) if (k == 2) == (args.group == "binary")]
        labels, kinds = labels[keep], [kinds[t] for t in keep]
    T, n = labels.shape
    width = 2 if args.group == "binary" else 4
    mask = np.zeros((T, width), bool)
    for t, k in enumerate(kinds):
        mask[t, :k] = True
    basis = make_basis(z)
    x = basis.x
    full = fit_replicates(basis, labels, np.ones((1, n), np.float32), mask, ProbeConfig(chunk=R))
    w = bootstrap_weights(np.random.default_rng(1), n, R)
    lab = jnp.asarray(np.broadcast_to(labels, (R,) + labels.shape))
    wt = jnp.asarray((w[:, None, :] * (labels >= 0)).astype(np.float32))
    cm, c0, b0 = jnp.asarray(mask), jnp.asarray(full.coef[0]), jnp.asarray(full.intercept[0])
    P = kfac_precond(x, jnp.asarray(labels >= 0, jnp.float32), cm, c0, b0)
    cs = jax.jit(jax.vmap(obj._consts, in_axes=(0, 0, None, None)))(lab, wt, cm, 1.0)
    x1 = obj._with_ones(x)
    st = jax.vmap(lbfgs.init_state, in_axes=(None, None, 0, None, None, None))(x1, P, cs, c0, b0, 10)
    step = jax.jit(jax.vmap(lbfgs.update, in_axes=(None, None, 0, 0, None, None)))
    for i in range(1, 4):                                     # a few iterations in: a real memory
        st, _ = step(x1, P, cs, st, i, False)
    direction = jax.jit(jax.vmap(lbfgs._direction, in_axes=(None, 0, 0, None)))
    dW, db, _ = direction(P, cs, st, 4)
    logits_u = jax.jit(jax.vmap(lambda dW, db: obj._logits(x1, dW, db)))
    u = logits_u(dW, db)
    K = mask.shape[1]
    W = jnp.asarray(np.random.default_rng(2).standard_normal((R, T, K, args.d)), jnp.float32)
    zz = jnp.einsum("nd,rtkd->rtkn", x, W)
    ms = {
        "step": _ms(lambda *a: step(*a)[0], x1, P, cs, st, 4, False),
        "direction": _ms(direction, P, cs, st, 4),
        "direction_logits_matmul": _ms(logits_u, dW, db),
        "line_search": _ms(jax.jit(jax.vmap(linesearch._line_search, in_axes=(None, 0, 0, 0, 0, 0, None))), x1, cs, st, dW, db, u, False),
        "objective": _ms(jax.jit(jax.vmap(obj._objective)), cs, st.W, st.z),
        "gradient": _ms(jax.jit(jax.vmap(obj._grad_from_p, in_axes=(None, 0, 0, 0))), x1, cs, st.W, st.p),
        "refresh": _ms(jax.jit(jax.vmap(partial(lbfgs.refresh, x1, P))), cs, st),
        "precond_apply": _ms(jax.jit(jax.vmap(pc._apply_precond, in_axes=(None, 0, 0, 0))), P, cs.reg, st.gW, st.gb),
        "bare_matmul_pair": _ms(jax.jit(lambda W: jnp.einsum("rtkn,nd->rtkd", jnp.einsum("nd,rtkd->rtkn", x, W), x)), W),
        "bare_softmax": _ms(jax.jit(lambda a: jax.nn.softmax(a, axis=-2)), zz),
        "bare_exp": _ms(jax.jit(jnp.exp), zz),
    }
    rec = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "jax": jax.__version__, "data": args.data, "group": args.group, "n": n, "d": args.d, "replicates_per_call": R,
           "tasks": T, "classes_padded": K, "ms": {k: round(v, 2) for k, v in ms.items()},
           "flops_pair": 4.0 * n * args.d * K * R * T}
    with open(os.path.join(HERE, "iteration_pieces.jsonl"), "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
