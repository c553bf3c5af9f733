"""The driver: memory sizing, width groups, chunking, sharding, the compiled call, the host recheck.

:func:`fit_replicates` fits ``R`` replicates x ``T`` tasks: tasks grouped by class width
(:func:`width_groups`), replicates in chunks sized to the memory budget (:func:`chunk_for_memory`,
fixed once per analysis by :func:`resolve_memory`) and laid out over the devices
(:mod:`wsca_jax.sharding`), one compiled call (:func:`fit_batched`) per chunk and group, then the
fits that stopped on the stall rule judged on the host in float64 (:func:`recheck_stalled`), and
full-data fits certified by their Newton decrement (:func:`~wsca_jax.probes.certify.certify`).
:func:`fit_probes` is the one-call API for full-data probes.
"""

from __future__ import annotations

import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .. import sharding
from ..errors import require
from . import lbfgs, ridge
from .basis import ROW_BLOCK, Basis, ProbeFit, make_basis, to_original
from .certify import _blocks, certify
from .config import ProbeConfig
from .objective import _aligned_width
from .precondition import kfac_precond

# Measured peak of one compiled call (tests/test_probes.py checks the bound): about 15 float32 arrays
# of shape (T, K, N) per replicate -- logits, probabilities, the search direction's logits, the line
# search's trial probabilities and their temporaries -- plus labels and weights.
REPLICATE_BYTES = 64
SOLVER_OVERHEAD = 400e6


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; physical memory where that is unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def device_memory() -> int:
    """Bytes the solver's arrays can use: the accelerator's memory limit, or the host's available memory."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        try:
            return int((dev.memory_stats() or {}).get("bytes_limit") or available_memory())
        except Exception:  # noqa: BLE001 -- a backend without memory statistics
            pass
    return available_memory()


def chunk_for_memory(memory_gb: float | None, n: int, d: int, t: int, k: int, max_chunk: int) -> int:
    """Replicates per compiled call that fit in ``memory_gb`` (None: half the available memory).

    The budget pays for compiling and running the solver (``SOLVER_OVERHEAD`` bytes, measured), the
    embeddings on the device, their copy with a ones column and its absolute values (``3 N E``
    floats, ``E`` the aligned width of :func:`_with_ones`), then ``REPLICATE_BYTES * T * K * N +
    8 T N`` bytes per replicate; at least 1, at most ``max_chunk``.
    """
    budget = 0.5 * available_memory() if memory_gb is None else memory_gb * 1e9
    per_rep = REPLICATE_BYTES * t * k * n + 8 * t * n
    return int(np.clip((budget - SOLVER_OVERHEAD - 12.0 * n * _aligned_width(d)) // per_rep, 1, max_chunk))


def resolve_memory(config: ProbeConfig, n: int, d: int, t: int, k: int) -> ProbeConfig:
    """``config`` with the memory budget fixed once (``memory_gb``: the given one, or half the memory
    available now, the smallest over all processes) and ``chunk`` the replicates per compiled call
    it allows: every later fit uses the same chunk (results depend on which problems iterate
    together), every process the same shapes, and ``resolved.probe`` in ``wsca.json`` records what was used."""
    gb = config.memory_gb if config.memory_gb is not None else 0.5 * device_memory() / 1e9
    gb = sharding.agree_min(gb)
    return config.replace(memory_gb=float(gb), chunk=chunk_for_memory(gb, n, d, t, k, max(1, int(config.chunk))),
                          warm_iter=config.warm_cap)


def sklearn_equivalent_C(C: float, n_classes: int) -> float:
    """scikit-learn C giving the same decision function for a ``n_classes`` task.

    scikit-learn fits binary problems with one weight vector ``v``; our two-row softmax head has
    rows ``-v/2, +v/2`` under the same penalty, which equals scikit-learn's binary model at ``2 C``.
    """
    return 2.0 * C if n_classes == 2 else C


@partial(jax.jit, static_argnames=("history", "solver", "init_batched", "patience"))
def fit_batched(x, precond, labels, weights, class_mask, coef0, b0, C, n_iter, tol, *, history=10,
                solver="lbfgs", init_batched=False, patience=100):
    """Fit every task for every replicate in one compiled call.

    The L-BFGS iterations of all ``R x T`` problems run in lock-step inside one ``lax.while_loop``
    that stops after ``n_iter`` iterations or once every problem has either met the gradient
    tolerance ``max |grad| <= tol`` (scikit-learn's criterion) or stalled: ``patience`` iterations
    in which neither the objective fell by more than its float32 rounding floor nor ``max |grad|``
    by 10%. A stalled problem is returned as converged provisionally, with ``grad_max > tol``:
    :func:`recheck_stalled` (called by :func:`fit_replicates`) then keeps it converged only if its
    float64 gradient is at the measured float32 floor. At the iteration cap a problem is flagged
    ``converged = False``. ``n_iter`` and ``tol`` are traced values, so one compilation serves
    warm and cold starts. The iterates keep each task's weight rows summing to zero (where its
    penalised optimum lies; the start is projected there), so the two matrix products of an
    iteration run over K - 1 classes (:func:`_sum_zero`): half the columns for binary tasks.

    Args:
      x: ``(N, D)`` rotated centred embeddings; precond: :class:`Precond` shared by the replicates
        (from :func:`kfac_precond` at the starting point), None for ``solver="ridge"``.
      labels: ``(R, T, N)`` int32, -1 missing.
      weights: ``(R, T, N)`` per-replicate, per-task sample weights (0 where a label is missing).
      class_mask: ``(T, K)`` bool.
      coef0, b0: start ``(T, K, D)``, ``(T, K)`` (a leading ``R`` when ``init_batched``).
      C: inverse L2 strength.  n_iter: iteration cap.  tol: gradient tolerance.
    Returns:
      :class:`ProbeFit` with leading axis ``R``.
    """
    if solver == "ridge":
        return ridge.run(x, labels, weights, class_mask, C)
    return lbfgs.run(x, precond, labels, weights, class_mask, coef0, b0, C, n_iter, tol, history, init_batched,
                     patience)


def _host_gradient(x, labels, weights, class_mask, C, W, b, dtype):
    """The gradient of one task's objective, ``(K, D + 1)``, computed in ``dtype`` on the host, in
    blocks of ``ROW_BLOCK`` rows (no float64 copy of all embeddings). x ``(N, D)``, labels and
    weights ``(N,)``, class_mask ``(K,)``, W ``(K, D)``, b ``(K,)``."""
    W, b = (np.asarray(a, dtype) for a in (W, b))
    n = max(float(weights.sum()), 1e-12)
    gW = np.zeros(W.shape, dtype)
    gb = np.zeros(b.shape, dtype)
    eye = np.eye(len(class_mask), dtype=dtype)
    for s in range(0, len(labels), ROW_BLOCK):
        xs, ls = np.asarray(x[s:s + ROW_BLOCK], dtype), labels[s:s + ROW_BLOCK]
        wn = (weights[s:s + ROW_BLOCK] / n).astype(dtype)
        z = np.where(class_mask, xs @ W.T + b, -np.inf)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        r = (e / e.sum(axis=1, keepdims=True) - eye[np.maximum(ls, 0)]) * (wn * (ls >= 0))[:, None]
        gW += r.T @ xs
        gb += r.sum(axis=0)
    gW = (gW + dtype(1.0 / (C * n)) * W) * class_mask[:, None]
    return np.concatenate([gW, (gb * class_mask)[:, None]], axis=1).astype(np.float64)


def recheck_stalled(x, labels, weights, class_mask, C, tol, fit: ProbeFit) -> ProbeFit:
    """Judge the fits that stopped on the stall rule (``converged`` with ``grad_max > tol``) on a
    measured floor instead of the worst-case bound: the gradient at the final weights in float64,
    against ten times the actual float32 rounding error of the gradient there (``|g32 - g64|``).
    Such a fit stays converged only if its float64 gradient is within ``max(tol, that floor)``;
    ``grad_max`` and ``grad_floor`` then hold the float64 gradient and the measured floor.

    Shapes: x ``(N, D)``; labels ``(R, T, N)``; weights ``(R, T, N)``; class_mask ``(T, K)``; fit with
    leading axes ``(R, T)`` as NumPy arrays.
    """
    conv, gmax, floor = fit.converged.copy(), fit.grad_max.copy(), fit.grad_floor.copy()
    for r, t in zip(*np.nonzero(conv & (gmax > tol))):
        args = (x, labels[r, t], weights[r, t], class_mask[t], C, fit.coef[r, t], fit.intercept[r, t])
        g64 = _host_gradient(*args, np.float64)
        err = float(np.abs(_host_gradient(*args, np.float32) - g64).max())
        g = float(np.abs(g64).max())
        floor[r, t], gmax[r, t] = 10.0 * err, g
        conv[r, t] = g <= max(tol, 10.0 * err)
    return fit._replace(converged=conv, grad_max=gmax, grad_floor=floor)


def initial_params(labels: np.ndarray, class_mask: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Cold start: zero weights, intercepts at the log class frequencies. ``(T,K,D)``, ``(T,K)``."""
    T, K = class_mask.shape
    b = np.zeros((T, K), np.float32)
    for t in range(T):
        counts = np.bincount(labels[t][labels[t] >= 0], minlength=K)[:K].astype(float) + 0.5
        lb = np.log(counts / counts.sum())
        b[t] = np.where(class_mask[t], lb - lb[class_mask[t]].mean(), 0.0)
    return np.zeros((T, K, d), np.float32), b


def width_groups(class_mask: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Tasks grouped by class width (highest class + 1, at least 2): ``[(task indices, width)]``.

    Each group is fitted by its own compiled call at its own width, so binary tasks are not padded
    to the widest task's classes (their arrays and matrix products are half as wide next to 4-class
    tasks) and stop when they have converged instead of running in lock-step with the slower
    multi-class fits. class_mask ``(T, K)``."""
    cm = np.asarray(class_mask, bool)
    width = np.array([max(2, int(np.nonzero(m)[0].max()) + 1) if m.any() else 2 for m in cm])
    return [(np.nonzero(width == w)[0], int(w)) for w in np.unique(width)]


def _scatter(parts: list, groups: list, t: int, k: int) -> ProbeFit:
    """Per-group fits (leading axis r, the group's tasks and width) -> one :class:`ProbeFit` over all
    ``t`` tasks padded to ``k`` classes (zeros beyond a group's width); iterations ``(r, t)``: those
    of each task's group."""
    r, _, _, d = parts[0].coef.shape
    coef = np.zeros((r, t, k, d), np.float32)
    icpt = np.zeros((r, t, k), np.float32)
    per_task = [np.zeros((r, t), dt) for dt in (np.float32, np.float32, bool, np.float32, np.int32, np.float32)]
    for fit, (tidx, w) in zip(parts, groups):
        coef[:, tidx, :w] = fit.coef
        icpt[:, tidx, :w] = fit.intercept
        its = np.broadcast_to(np.asarray(fit.iterations).reshape(r, 1), (r, len(tidx)))
        for out, a in zip(per_task, (fit.objective, fit.grad_max, fit.converged, fit.grad_floor, its, fit.gap)):
            out[:, tidx] = a
    obj, gmax, conv, floor, iterations, gap = per_task
    return ProbeFit(coef, icpt, obj, gmax, iterations, conv, floor, gap)


def _group_consts(x, labels, class_mask, coef0, b0, tidx, w, solver, mesh) -> tuple:
    """The loop-invariant inputs of one width group's calls, replicated over the mesh: the
    preconditioner at the start (None for the ridge solver), class mask ``(Tg, w)``, start
    ``(Tg, w, D)``, ``(Tg, w)``. labels ``(T, N)`` (the unpermuted ones), class_mask ``(T, K)``."""
    cm, c0, bb0 = jnp.asarray(class_mask[tidx, :w]), jnp.asarray(coef0[tidx, :w]), jnp.asarray(b0[tidx, :w])
    precond = None
    if solver == "lbfgs":
        precond = kfac_precond(x, jnp.asarray(labels[tidx] >= 0, jnp.float32), cm, c0, bb0)
    return sharding.put_tree((precond, cm, c0, bb0), mesh, sharded=False)


def fit_replicates(basis: Basis, labels: np.ndarray, weights: np.ndarray, class_mask: np.ndarray,
                   config: ProbeConfig, init: tuple | None = None, labels_batched: bool = False,
                   progress=None, certified: bool = False) -> ProbeFit:
    """Fit ``R`` replicates x ``T`` tasks, ``config.chunk`` replicates per compiled call (the last
    chunk padded, so that one compilation per group serves every call: about 4 s each, more than a
    padded chunk of full-data fits costs), one call per group of tasks of equal class width
    (:func:`width_groups`).

    Args:
      basis: from :func:`make_basis`.
      labels: ``(T, N)`` (or ``(R, T, N)`` with ``labels_batched``), -1 missing.
      weights: ``(R, N)`` replicate sample weights; the missing-label mask is applied here.
      class_mask: ``(T, K)``.
      init: warm start ``(coef (T,K,D), intercept (T,K))`` shared by all replicates; None = cold.
      progress: optional callable ``(n_done)`` called after each chunk.
      certified: judge (and polish) every fit by its Newton decrement in float64
        (:func:`~wsca_jax.probes.certify.certify`; full-data fits: the cost is a few host passes
        over the embeddings per conjugate-gradient iteration), instead of the gradient rule alone.
    Returns:
      :class:`ProbeFit` as NumPy arrays with leading axis ``R``.
    """
    labels = np.asarray(labels, np.int32)
    weights = np.asarray(weights, np.float32)
    class_mask = np.asarray(class_mask, bool)
    R = weights.shape[0]
    d = basis.x.shape[1]
    base = labels[0] if labels_batched else labels
    if init is None:
        coef0, b0 = initial_params(base, class_mask, d)
        n_iter = config.max_iter
    else:
        coef0, b0 = (np.asarray(a, np.float32) for a in init)
        n_iter = config.warm_cap
    mesh = sharding.mesh()                      # None on one device: everything below as before
    groups = width_groups(class_mask)
    consts = [_group_consts(basis.x, base, class_mask, coef0, b0, tidx, w, config.solver, mesh) for tidx, w in groups]
    x = sharding.put(basis.x, mesh, sharded=False)
    x_host = np.asarray(basis.x) if config.solver == "lbfgs" else None    # the stall recheck's float64 gradient
    blocks = _blocks(x_host) if certified and x_host is not None else None  # float64 copy once, for every group
    per_call = chunk_for_memory(config.memory_gb, *basis.x.shape, *class_mask.shape, max(1, int(config.chunk)))
    chunk = sharding.chunk_size(per_call, mesh)   # every call one shape (one compilation per group)
    outs = []
    for start in range(0, R, chunk):
        stop = min(R, start + chunk)
        idx = np.minimum(np.arange(start, start + chunk), R - 1)        # pad with the last replicate
        lab = labels[idx] if labels_batched else np.broadcast_to(labels, (chunk,) + labels.shape)
        w_task = (weights[idx][:, None, :] * (lab >= 0)).astype(np.float32)
        parts = []
        for (tidx, w), (precond, cm, c0, bb0) in zip(groups, consts):
            lab_g, w_g = np.ascontiguousarray(lab[:, tidx]), np.ascontiguousarray(w_task[:, tidx])
            lab_d, w_d = sharding.put_tree((lab_g, w_g), mesh, sharded=True)
            fit = fit_batched(x, precond, lab_d, w_d, cm, c0, bb0, np.float32(config.C), np.int32(n_iter),
                              np.float32(config.tol), history=int(config.history), solver=config.solver,
                              patience=int(config.patience))
            fit = jax.tree_util.tree_map(lambda a: a[: stop - start], sharding.gather(fit))
            if config.solver == "lbfgs":
                fit = recheck_stalled(x_host, lab_g[: stop - start], w_g[: stop - start],
                                      class_mask[tidx, :w], config.C, config.tol, fit)
                if certified:
                    fit = certify(x_host, lab_g[: stop - start], w_g[: stop - start], class_mask[tidx, :w],
                                  config.C, config.gap_tol, config.newton_steps, fit, blocks)
            parts.append(fit)
        outs.append(_scatter(parts, groups, *class_mask.shape))
        if progress is not None:
            progress(stop - start)
    return ProbeFit(*(np.concatenate(parts) for parts in zip(*outs)))


def fit_probes(embeddings: np.ndarray, labels: np.ndarray, class_mask: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, config: ProbeConfig = ProbeConfig(),
               basis: Basis | None = None) -> dict:
    """Fit one probe per task on full data and return them in the embedding's coordinates.

    Args:
      embeddings: ``(N, D)``.
      labels: ``(T, N)`` int (``-1`` missing) or ``(N,)`` for one task.
      class_mask: ``(T, K)``; default: classes ``0..max(label)`` of each task.
      sample_weight: ``(N,)`` optional.
    Returns:
      dict with ``coef (T, K, D)``, ``intercept (T, K)``, ``objective (T,)``, ``grad_max (T,)``,
      ``iterations``, ``converged (T,)``, ``grad_floor (T,)`` and ``gap (T,)`` (see :class:`ProbeFit`):
      every fit certified by its Newton decrement (:func:`~wsca_jax.probes.certify.certify`).

    Example:
      >>> from sklearn.datasets import load_digits
      >>> X, y = load_digits(return_X_y=True)
      >>> out = fit_probes(X, y)            # one 10-class probe
      >>> out["coef"].shape
      (1, 10, 64)
    """
    labels = np.atleast_2d(np.asarray(labels)).astype(np.int32)
    require(labels.shape[1] == len(embeddings),
            f"labels have {labels.shape[1]} rows, embeddings have {len(embeddings)}")
    if class_mask is None:
        K = max(2, int(labels.max()) + 1)
        class_mask = np.zeros((labels.shape[0], K), bool)
        for t in range(labels.shape[0]):
            class_mask[t, : int(labels[t].max()) + 1] = True
    basis = basis or make_basis(embeddings)
    w = np.ones((1, len(embeddings)), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)[None]
    fit = fit_replicates(basis, labels, w, class_mask, config, certified=True)
    coef, intercept = to_original(fit.coef[0], fit.intercept[0], basis)
    return {"coef": coef, "intercept": intercept, "objective": fit.objective[0], "grad_max": fit.grad_max[0],
            "iterations": int(fit.iterations[0].max()), "converged": fit.converged[0], "grad_floor": fit.grad_floor[0], "gap": fit.gap[0]}
