"""Batched linear probes: multinomial L2 logistic regression for many tasks x many replicates.

One jit-compiled call fits every task of one class width (tasks are grouped by their number of
classes, each group padded to its widest task with a class mask: :func:`width_groups`) for every
replicate (a row of sample weights: bootstrap counts, cross-validation folds,
jackknife blocks) and, optionally, every permutation of the labels.

Objective per (replicate r, task t), the one scikit-learn's ``LogisticRegression`` minimises with
``sample_weight`` (for ``K >= 3``; see :func:`sklearn_equivalent_C` for binary tasks)::

    f(W, b) = (1 / n) * sum_i w_i * CE(y_i, softmax(W x_i + b)) + ||W||^2 / (2 * C * n),
    n = sum_i w_i   (rows with a missing label have w_i = 0)

Numerical design:
  * Embeddings are centred and rotated once into their principal axes (``Basis``). Rotation is
    exact (the L2 penalty is rotation invariant; centring is absorbed by the unpenalised intercept)
    and makes a diagonal preconditioner ``1 / (c * var_d + reg)`` nearly exact for the data term.
  * L-BFGS with a Kronecker-factored preconditioner for all problems of one class width in lock-step
    inside one ``lax.while_loop``, and a Newton line search along the direction (the logits move by
    ``alpha * X d``, so a line search costs one matmul; a second Newton step where the first is
    poor) with an Armijo test and backtracking where the Newton steps fail. The loop stops when
    every problem has met the gradient tolerance or stalled (no progress beyond float32 rounding for
    ``patience`` iterations), or at the cap. Each
    fit carries ``converged``: False at the cap, or when it stalled with a float64 gradient above
    ten times the measured float32 error of its gradient -- such a fit is flagged, never reported
    as converged.
  * Float32 care where near-separable problems (large C) need it: the loss is
    ``log1p(sum of the other classes)`` of max-shifted logits, the label's residual is
    ``-sum of the other probabilities``, and the logits are recomputed from the weights every few
    iterations (no drift of the incremental update).
  * Two GEMMs per iteration over all tasks and replicates at once: ``(N, E) @ (E, R*T*(K-1))`` and
    its transpose (a head's rows sum to zero, so the last class's logits and gradient follow from the
    others'), ``E`` = D + 1 (a ones column: the intercepts) rounded up to a multiple of 16 (a third
    GEMM in the iterations that recompute the logits exactly). Convergence diagnostics come back as
    arrays.
  * ``solver="ridge"``: closed-form ridge regression on one-hot targets (one factorisation per
    task x replicate); cheap when weights are uniform, O(N D^2) per fit otherwise.
"""

from __future__ import annotations

import os
from functools import partial, reduce
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import sharding
from .errors import require


class ProbeConfig(NamedTuple):
    """Solver settings.

    Attributes:
      C: inverse L2 strength in scikit-learn's convention (objective ``sum w CE + ||W||^2/(2C)``).
      tol: stop once every problem in a chunk has ``max |gradient| <= tol`` (of the mean-normalised
        objective, as scikit-learn's lbfgs ``tol``).
      max_iter: iteration cap from a cold start (zero weights).
      warm_iter: iteration cap for replicates warm-started at the full-data solution (bootstrap,
        jackknife, cross-validation folds).
      history: L-BFGS memory.
      patience: iterations without progress (objective down by more than its float32 rounding
        floor, or max |gradient| down by 10%) after which a problem counts as stalled; a stalled
        fit is converged only if its gradient is at its float32 floor.
      solver: ``"lbfgs"`` (logistic, the paper's probe) or ``"ridge"`` (closed form, one-hot targets).
      chunk: most replicates per compiled call; every call is padded to the chunk so that one
        compilation serves them all (memory about ``REPLICATE_BYTES * T * K * N`` bytes per replicate).
      memory_gb: memory the solver may use, per device; the chunk shrinks to fit it
        (:func:`chunk_for_memory`). None: half of the memory available when the analysis starts
        (the accelerator's memory limit on a GPU or TPU). The logistic solver only: the ridge
        solver's (T, N, D) centred copies are not counted.
    """

    C: float = 1.0
    tol: float = 1e-5
    max_iter: int = 1000
    warm_iter: int = 500
    history: int = 10
    patience: int = 100
    solver: str = "lbfgs"
    chunk: int = 8
    memory_gb: float | None = None

    def to_dict(self) -> dict:
        return {"model": "multinomial_logistic_l2" if self.solver == "lbfgs" else "ridge_one_hot",
                "C": self.C, "solver": self.solver, "tol": self.tol, "max_iter": self.max_iter,
                "warm_iter": self.warm_iter, "history": self.history,
                "patience": self.patience, "chunk": self.chunk, "memory_gb": self.memory_gb,
                "objective": "mean weighted cross-entropy + ||W||^2 / (2 C n)"}


class Basis(NamedTuple):
    """Centred embeddings in their principal axes.

    Attributes:
      mean: ``(D,)`` column means.
      rotation: ``(D, D)`` orthogonal; column j is the j-th principal axis (descending variance).
      variances: ``(D,)`` variance along each axis (eigenvalues of ``Xc^T Xc / N``), descending.
      x: ``(N, D)`` float32 rotated centred embeddings ``(X - mean) @ rotation``.
    """

    mean: np.ndarray
    rotation: np.ndarray
    variances: np.ndarray
    x: jax.Array


class ProbeFit(NamedTuple):
    """Fitted probes, in the rotated basis (``to_original`` maps them back).

    Shapes carry any leading replicate axes ``...`` before ``T`` (tasks) and ``K`` (padded classes).

    Attributes:
      coef: ``(..., T, K, D)``; padded classes are zero rows.
      intercept: ``(..., T, K)``.
      objective: ``(..., T)`` final objective value.
      grad_max: ``(..., T)`` max |gradient| at the end (scikit-learn's stopping criterion).
      iterations: ``(..., T)`` L-BFGS iterations the task's compiled call ran (shared by the replicates
        of one call and by the tasks of one class width, which are fitted together).
      converged: ``(..., T)`` bool: ``max |gradient| <= tol``, or stalled with the float64 gradient
        at the measured float32 floor (:func:`recheck_stalled`). False: the fit is not to be trusted
        (iteration cap, or a stall above the floor).
      grad_floor: ``(..., T)`` the gradient's float32 floor: measured for stalled fits (ten times
        ``|g32 - g64|``), else the worst-case bound (rounding of the sums and of the logits).
    """

    coef: jax.Array
    intercept: jax.Array
    objective: jax.Array
    grad_max: jax.Array
    iterations: jax.Array
    converged: jax.Array
    grad_floor: jax.Array


# Measured peak of one compiled call (tests/test_probes.py checks the bound): about 15 float32 arrays
# of shape (T, K, N) per replicate -- logits, probabilities, the search direction's logits, the line
# search's trial probabilities and their temporaries -- plus labels and weights.
REPLICATE_BYTES = 64
SOLVER_OVERHEAD = 400e6
ROW_BLOCK = 16384


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


def _device_memory() -> int:
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
    together), every process the same shapes, and the settings record what was used."""
    gb = config.memory_gb if config.memory_gb is not None else 0.5 * _device_memory() / 1e9
    gb = sharding.agree_min(gb)
    return config._replace(memory_gb=float(gb), chunk=chunk_for_memory(gb, n, d, t, k, max(1, int(config.chunk))))


def make_basis(embeddings: np.ndarray) -> Basis:
    """Centre and rotate ``(N, D)`` embeddings into their principal axes (float64 eigh).

    Works through blocks of rows, so a memory-mapped ``.npy`` is read, never copied whole: the
    mean and covariance are accumulated in float64, the rotated embeddings written in float32."""
    if not isinstance(embeddings, np.ndarray):
        embeddings = np.asarray(embeddings, np.float64)
    n, d = embeddings.shape
    blocks = [(s, min(n, s + ROW_BLOCK)) for s in range(0, n, ROW_BLOCK)]
    mean = sum(np.asarray(embeddings[a:b], np.float64).sum(0) for a, b in blocks) / n
    cov = np.zeros((d, d))
    for a, b in blocks:
        xc = np.asarray(embeddings[a:b], np.float64) - mean
        cov += xc.T @ xc
    cov /= n
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    evecs = evecs[:, order]
    # deterministic signs (largest |entry| of each axis positive), as scikit-learn's svd_flip
    signs = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(evecs.shape[1])])
    signs[signs == 0] = 1.0
    evecs = evecs * signs
    x = np.empty((n, d), np.float32)
    for a, b in blocks:
        x[a:b] = (np.asarray(embeddings[a:b], np.float64) - mean) @ evecs
    return Basis(mean=mean, rotation=evecs, variances=evals, x=jnp.asarray(x))


def to_original(fit_coef: np.ndarray, fit_intercept: np.ndarray, basis: Basis) -> tuple[np.ndarray, np.ndarray]:
    """Map rotated-basis coefficients ``(..., K, D)`` back to the embedding's own coordinates."""
    coef = np.asarray(fit_coef, np.float64) @ basis.rotation.T
    intercept = np.asarray(fit_intercept, np.float64) - coef @ basis.mean
    return coef, intercept


def sklearn_equivalent_C(C: float, n_classes: int) -> float:
    """scikit-learn C giving the same decision function for a ``n_classes`` task.

    scikit-learn fits binary problems with one weight vector ``v``; our two-row softmax head has
    rows ``-v/2, +v/2`` under the same penalty, which equals scikit-learn's binary model at ``2 C``.
    """
    return 2.0 * C if n_classes == 2 else C


# ----------------------------------------------------------------------------------------------
# Core solver (pure functions of arrays; vmapped over replicates by the callers)


def _pdot(a, b):
    """Per-task inner product of parameter pairs ((T,K,D), (T,K)) -> (T,)."""
    return jnp.sum(a[0] * b[0], axis=(1, 2)) + jnp.sum(a[1] * b[1], axis=1)


def _masked_logits(z, class_mask):
    """Logits ``(T, K, N)`` with the classes a task does not have at -inf. Class axis before the
    rows: reductions over classes are then elementwise operations over rows (vectorised), not
    reductions along a minor axis of 2-4 values (about 5x slower on CPU)."""
    return jnp.where(class_mask[:, :, None], z, -jnp.inf)


_EPS32 = float(np.finfo(np.float32).eps)


def _classes(a):
    """The class slices of ``a (..., K, N)``: a list of K arrays ``(..., N)``.

    Reductions over the class axis are written over these slices (:func:`_ksum`), so that XLA fuses
    them with their producers into one elementwise loop over rows; a ``jnp.sum(axis=-2)`` over 2-4
    classes is a separate, memory-bound pass on CPU (measured 4-5x slower in the residual, see
    ``benchmarks/iteration_pieces.py``)."""
    return [a[..., k, :] for k in range(a.shape[-2])]


def _ksum(a):
    """Sum over the class axis of ``a (..., K, N)`` -> ``(..., N)``, unrolled (see :func:`_classes`)."""
    return reduce(jnp.add, _classes(a))


def _loss_terms(z, y1, weights, class_mask):
    """Per-task weighted CE, its float32 rounding scale, and probabilities. z ``(T,K,N)``; y1 ``(T,K,N)``
    boolean one-hot.

    Computed from the max-shifted logits ``s = z - max z`` as ``log1p(sum_{k != max} e^s_k) - s_y``,
    so that confident rows keep their (tiny) loss instead of rounding ``log(1 + delta)`` to 0: near
    separable problems (large C) live on those terms. The maximum's own term is left out by
    ``s == 0`` (exact: ``s`` is exactly 0 there), a tie counting the other maxima as ones.
    Returns ``ce (T,)``, ``scale (T,)`` = ``sum_i w_i (|s_yi| + lse_i)`` (what rounding errors are
    proportional to) and ``p (T, K, N)``. Written over class slices (see :func:`_classes`).
    """
    zs = _classes(_masked_logits(z, class_mask))
    top = reduce(jnp.maximum, zs)                                          # (T, N)
    ss = [a - top for a in zs]
    es = [jnp.exp(a) for a in ss]
    others = reduce(jnp.add, [jnp.where(a == 0, 0.0, e) for a, e in zip(ss, es)])
    others = others + (reduce(jnp.add, [(a == 0).astype(z.dtype) for a in ss]) - 1.0)
    lse = jnp.log1p(others)
    sy = reduce(jnp.add, [jnp.where(yk, a, 0.0) for yk, a in zip(_classes(y1), ss)])  # 0 where missing
    ce = jnp.sum(weights * (lse - sy), axis=1)
    scale = jnp.sum(weights * (jnp.abs(sy) + lse), axis=1)
    inv = 1.0 / (1.0 + others)
    return ce, scale, jnp.stack([e * inv for e in es], axis=-2)


def _residual(p, y1):
    """``p - onehot(y)`` with the label's entry computed as ``-sum_{k != y} p_k`` (no cancellation
    when ``p_y`` is close to 1). p ``(..., K, N)``; y1 boolean one-hot of the same shape."""
    return jnp.where(y1, -_ksum(jnp.where(y1, 0.0, p))[..., None, :], p)


def _onehot(labels, k):
    """``(T, N)`` labels -> ``(T, K, N)`` boolean one-hot (all False where -1)."""
    return labels[..., None, :] == jnp.arange(k, dtype=labels.dtype)[:, None]


class _Consts(NamedTuple):
    """Loop-invariant quantities of one replicate (T tasks)."""

    labels: jax.Array      # (T, N) int32
    wn: jax.Array          # (T, N) weights / n
    y1: jax.Array          # (T, K, N) bool one-hot (all False where missing; a quarter of float32's bytes)
    reg: jax.Array         # (T,) 1 / (C n)
    class_mask: jax.Array  # (T, K) bool


class Precond(NamedTuple):
    """Kronecker-factored curvature of each task, ``H_t ~ A_t (x) B_t + reg I``, by eigenpairs.

    ``A_t = sum_i w_i c_i [x_i, 1][x_i, 1]^T / n`` with ``c_i = tr S_i`` and
    ``B_t = sum_i w_i S_i / sum_i w_i c_i``, ``S_i = diag(p_i) - p_i p_i^T`` the softmax curvature
    at the starting point. Exact for binary tasks (and for any task at zero weights); for more
    classes the usual K-FAC approximation.

    Attributes:
      UA: ``(T, D+1, D+1)``, lA: ``(T, D+1)`` eigenpairs of A; UB: ``(T, K, K)``, lB: ``(T, K)``.
    """

    UA: jax.Array
    lA: jax.Array
    UB: jax.Array
    lB: jax.Array


def _consts(labels, weights, class_mask, C) -> _Consts:
    T, K = class_mask.shape
    # rows without a label in 0..K-1 carry no weight (the gradient's last row relies on every weighted
    # row's residuals summing to zero: :func:`_xt`)
    weights = jnp.where((labels >= 0) & (labels < K), weights, 0.0)
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    return _Consts(labels=labels, wn=weights / n[:, None], y1=_onehot(labels, K), reg=1.0 / (C * n),
                   class_mask=class_mask)


@jax.jit
def kfac_precond(x, weights, class_mask, W, b) -> Precond:
    """Kronecker-factored curvature at ``(W, b)`` for every task (see :class:`Precond`).

    Args:
      x: ``(N, D)``; weights: ``(T, N)`` (0 for missing labels); class_mask ``(T, K)``;
      W: ``(T, K, D)``; b: ``(T, K)``.
    """
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    wn = weights / n[:, None]
    z = jnp.einsum("nd,tkd->tkn", x, W) + b[:, :, None]
    p = jax.nn.softmax(_masked_logits(z, class_mask), axis=-2)            # (T, K, N)
    c = 1.0 - jnp.sum(p * p, axis=-2)                                      # tr S_i (T, N)
    xt = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)  # (N, D+1)

    def gram(wc):
        return (xt * wc[:, None]).T @ xt

    A = jax.lax.map(gram, wn * c)                                          # (T, D+1, D+1)
    B = (jnp.einsum("tn,tkn->tk", wn, p)[..., None] * jnp.eye(p.shape[-2])
         - jnp.einsum("tn,tkn,tln->tkl", wn, p, p)) / jnp.maximum(jnp.sum(wn * c, axis=1), 1e-12)[:, None, None]
    lA, UA = jnp.linalg.eigh(A)
    lB, UB = jnp.linalg.eigh(B)
    return Precond(UA, jnp.maximum(lA, 0.0), UB, jnp.maximum(lB, 0.0))


def _rotate(P: Precond, gW, gb):
    """``[gW, gb]`` in the eigenbasis of each task's A: ``(T, K, D)``, ``(T, K)`` -> ``(T, K, D+1)``.

    The L-BFGS memory and direction live in these coordinates, where the preconditioner is cheap
    (:func:`_precond_rotated`): an iteration then rotates the gradient in and the direction out
    (two ``(K, D+1) x (D+1, D+1)`` products per task) instead of four for every application. Inner
    products, which are all L-BFGS needs of its vectors, are the same in either basis."""
    return jnp.einsum("tkd,tde->tke", jnp.concatenate([gW, gb[..., None]], axis=-1), P.UA)


def _unrotate(P: Precond, h):
    """Inverse of :func:`_rotate`: ``(T, K, D+1)`` -> ``(T, K, D)``, ``(T, K)``."""
    G = jnp.einsum("tke,tde->tkd", h, P.UA)
    return G[..., :-1], G[..., -1]


def _precond_rotated(P: Precond, reg, h):
    """``(A (x) B + reg I)^-1`` applied to ``h (T, K, D+1)`` given in A's eigenbasis; reg ``(T,)``."""
    G = jnp.einsum("tke,tkl->tle", h, P.UB)
    G = G / (P.lB[:, :, None] * P.lA[:, None, :] + reg[:, None, None])
    return jnp.einsum("tle,tkl->tke", G, P.UB)


def _apply_precond(P: Precond, reg, gW, gb):
    """``(A (x) B + reg I)^-1 g`` per task; gW ``(T, K, D)``, gb ``(T, K)``, reg ``(T,)``."""
    return _unrotate(P, _precond_rotated(P, reg, _rotate(P, gW, gb)))


class _State(NamedTuple):
    """Solver state of one replicate. ``gh``, ``S``, ``Y``: the gradient and the L-BFGS pairs
    ``(m, T, K, D+1)`` in the rotated coordinates of :func:`_rotate`."""

    W: jax.Array; b: jax.Array; z: jax.Array; p: jax.Array; f: jax.Array   # noqa: E702
    fl: jax.Array                                             # (T,) float32 rounding floor of f
    gW: jax.Array; gb: jax.Array; gh: jax.Array               # noqa: E702
    S: jax.Array; Y: jax.Array; rho: jax.Array                # noqa: E702


def _hdot(a, b):
    """Per-task inner product of ``(..., T, K, E)`` arrays -> ``(..., T)``."""
    return jnp.sum(a * b, axis=(-2, -1))


def _round_factor(cs: _Consts):
    """Growth of float32 rounding over a weighted sum of N terms (random-walk estimate ``2 + sqrt(n)``)."""
    return _EPS32 * (2.0 + jnp.sqrt(jnp.sum(cs.wn > 0, axis=1).astype(jnp.float32)))


def _objective(cs: _Consts, W, z):
    """f (T,), its float32 rounding floor (T,) and probabilities (T, N, K) at logits z."""
    ce, scale, p = _loss_terms(z, cs.y1, cs.wn, cs.class_mask)
    pen = 0.5 * cs.reg * jnp.sum(W * W, axis=(1, 2))
    return ce + pen, _round_factor(cs) * (scale + pen), p


_ALIGN = 16


def _aligned_width(d: int) -> int:
    """``E``: D + 1 columns (the embeddings and a ones column) rounded up to a multiple of ``_ALIGN``."""
    return -(-(d + 1) // _ALIGN) * _ALIGN


def _with_ones(x):
    """``(N, D)`` -> ``(N, E)``: a column of ones after the D columns, then zeros up to ``E``, the
    next multiple of ``_ALIGN``. The solver's matrix products then carry the intercepts (logits
    ``x1 [W, b, 0]^T``; the gradient's ``r^T x1`` holds its W and b parts); the zero padding keeps
    them at an aligned width (in one profile the gradient's product took 22 ms at D + 1 = 513
    columns and 17.5 ms at 528)."""
    n, d = x.shape
    return jnp.concatenate([x, jnp.ones((n, 1), x.dtype), jnp.zeros((n, _aligned_width(d) - d - 1), x.dtype)], axis=1)


def _sum_zero(W, class_mask):
    """``W (..., K, D)`` with the last class's row set to minus the sum of the others (to zero where
    that class is absent: ``class_mask (..., K)``).

    The solver's iterates keep each task's weight rows summing to zero: the softmax does not change
    when every row moves by the same vector, so the penalised optimum has rows summing to zero (over
    the classes present; absent classes' rows are zero), and a start there stays there (the gradient
    and the preconditioner keep that subspace). In :func:`fit_replicates` the last class of a width
    group is present (:func:`width_groups`: the width is the highest class + 1) unless the task has
    fewer than two classes. This lets the matrix products run
    over K - 1 rows (:func:`_logits`, :func:`_xt`); setting the row, not trusting it, keeps float32
    rounding from moving the iterates off the subspace. (Where the last class is absent, the present
    rows are all among the first K - 1 and sum to zero by themselves.)"""
    last = class_mask[..., -1:].astype(W.dtype)
    return W.at[..., -1, :].set(-jnp.sum(W[..., :-1, :], axis=-2) * last)


def _center(h, maskf):
    """``h (..., K, E)`` minus its mean over the present classes (``maskf (..., K, 1)``, 1 present, 0
    absent), zero for absent classes: the orthogonal projection onto rows summing to zero."""
    return (h - jnp.sum(h * maskf, axis=-2, keepdims=True) / jnp.maximum(jnp.sum(maskf, axis=-2, keepdims=True), 1.0)) * maskf


def _gemm_logits(x1, W, b):
    """``x1 (N, E)`` against ``[W, b] (T, K', D+1)`` (zero-padded to E): ``(T, K', N)``."""
    pad = jnp.zeros(W.shape[:-1] + (x1.shape[1] - W.shape[-1] - 1,), W.dtype)
    return jnp.einsum("ne,tke->tkn", x1, jnp.concatenate([W, b[..., None], pad], axis=-1))


def _logits(x1, W, b):
    """Logits ``(T, K, N)`` of ``W (T, K, D)`` (rows summing to zero, :func:`_sum_zero`), ``b (T, K)``
    at ``x1 (N, E)`` (:func:`_with_ones`): a matrix product over the first K - 1 classes; the last
    class's logits are ``sum_k b_k - sum_{k<K-1} z_k`` (its row is minus the others' sum)."""
    z = _gemm_logits(x1, W[..., :-1, :], b[..., :-1])
    last = jnp.sum(b, axis=-1)[..., None] - jnp.sum(z, axis=-2)
    return jnp.concatenate([z, last[..., None, :]], axis=-2)


def _xt_full(r, x1, d):
    """``r (T, K, N)`` against ``x1 (N, E)``: ``(sum_n r x, sum_n r)`` as ``((T, K, d), (T, K))``."""
    G = jnp.einsum("tkn,ne->tke", r, x1)
    return G[..., :d], G[..., d]


def _xt(r, x1, d):
    """:func:`_xt_full` for residuals that sum to zero over the classes of every row (``p - y``
    times a weight): a matrix product over the first K - 1 classes, the last minus their sum."""
    gW, gb = _xt_full(r[..., :-1, :], x1, d)

    def with_last(a, axis):                     # the last class: minus the sum of the others
        return jnp.concatenate([a, -jnp.sum(a, axis=axis, keepdims=True)], axis=axis)

    return with_last(gW, -2), with_last(gb, -1)


def _grad_from_p(x1, cs: _Consts, W, p):
    """Gradient ``((T, K, D), (T, K))`` at weights W with probabilities ``p (T, K, N)``; x1 ``(N, E)``."""
    r = _residual(p, cs.y1) * cs.wn[:, None, :]                           # (T, K, N)
    maskf = cs.class_mask.astype(x1.dtype)
    gW, gb = _xt(r, x1, W.shape[-1])
    return (gW + cs.reg[:, None, None] * W) * maskf[..., None], gb * maskf


def _grad_floor(x1, cs: _Consts, W, b, p):
    """Entrywise float32 rounding floor of the gradient ``((T,K,D), (T,K))``: the rounding factor
    times the sum of the absolute values of the terms it adds up, plus what the rounding error of
    the logits themselves moves the residuals by (``d p_k = p_k (dz_k - sum_j p_j dz_j)``, bounded by
    ``2 p_k (1 - p_k) max |dz|``, to first order). A product's logit errs by at most ``eps (2 +
    sqrt(D)) (|x| |W| + |b|)``; the last class's logit is minus the sum of the others' products
    (:func:`_logits`), so ``max |dz|`` is bounded by the sum of those over the classes. The last row
    of the gradient is likewise minus the sum of the others (:func:`_xt`): its floor adds theirs.
    Computed once, after the loop."""
    r = jnp.abs(_residual(p, cs.y1)) * cs.wn[:, None, :]
    fac = _round_factor(cs)
    ax1 = jnp.abs(x1)
    d = W.shape[-1]
    zerr = _EPS32 * (2.0 + jnp.sqrt(jnp.float32(d))) * _gemm_logits(ax1, jnp.abs(W), jnp.abs(b))
    dr = 2.0 * p * (1.0 - p) * jnp.sum(zerr, axis=-2, keepdims=True) * cs.wn[:, None, :]
    fW, fb = _xt_full(r * fac[:, None, None] + dr, ax1, d)          # both terms in one matrix product
    fW = fW.at[..., -1, :].set(jnp.sum(fW, axis=-2))                # the last row: the others' floors too
    fb = fb.at[..., -1].set(jnp.sum(fb, axis=-1))
    return fW + (cs.reg * fac)[:, None, None] * jnp.abs(W), fb


def _init(x1, P: Precond, cs: _Consts, W0, b0, history) -> _State:
    z = _logits(x1, W0, b0)
    f, fl, p = _objective(cs, W0, z)
    gW, gb = _grad_from_p(x1, cs, W0, p)
    gh = _rotate(P, gW, gb)
    S = jnp.zeros((history,) + gh.shape, x1.dtype)
    return _State(W0, b0, z, p, f, fl, gW, gb, gh, S, jnp.zeros_like(S), jnp.zeros((history, W0.shape[0]), x1.dtype))


_REFRESH = 10
_NEAR = 1.5         # every problem's max |grad| within 1.5 tol: the next trial's logits are exact


def _refresh(x1, P: Precond, cs: _Consts, st: _State) -> _State:
    """Recompute logits, objective, probabilities and gradient exactly from ``(W, b)``."""
    z = _logits(x1, st.W, st.b)
    f, fl, p = _objective(cs, st.W, z)
    gW, gb = _grad_from_p(x1, cs, st.W, p)
    return st._replace(z=z, f=f, fl=fl, p=p, gW=gW, gb=gb, gh=_rotate(P, gW, gb))


def _grad_max(st: _State):
    return jnp.maximum(jnp.max(jnp.abs(st.gW), axis=(-2, -1)), jnp.max(jnp.abs(st.gb), axis=-1))


def _if_any(pred, fn, operand, *args):
    """``fn(operand, *args)`` (same structure as ``operand``) if any entry of ``pred`` is True, else
    ``operand``: a ``while_loop`` of at most one pass, so that under ``vmap`` (the replicates) the
    work is skipped when no replicate needs it (a ``lax.cond`` there becomes a select that always
    evaluates both branches).

    ``fn`` must compute its expensive values from its arguments, not from values it closes over:
    XLA's loop-invariant code motion hoists out of the loop (always evaluates) whatever depends only
    on values that do not change in it. The arguments pass an optimization barrier together with
    the loop counter, which makes them loop-variant."""
    def body(c):
        x, a, i = jax.lax.optimization_barrier(c)
        return fn(x, *a), a, i + 1

    out, _, _ = jax.lax.while_loop(lambda c: jnp.any(pred) & (c[2] < 1), body, (operand, args, jnp.asarray(0)))
    return out


def _direction(P: Precond, cs: _Consts, st: _State, it):
    """L-BFGS two-loop direction with the K-FAC preconditioner as the initial Hessian, computed in
    the rotated coordinates (:func:`_rotate`); the preconditioned gradient where that is not a
    descent direction. Returns ``dW (T,K,D), db (T,K)`` and the rotated direction ``(T,K,D+1)``."""
    maskf = cs.class_mask.astype(st.W.dtype)[..., None]
    m = st.rho.shape[0]

    def precond(h):
        return _precond_rotated(P, cs.reg, h) * maskf

    newest = (it - 1) % m                                     # circular buffer, newest pair first
    order = (newest - jnp.arange(m)) % m

    def first(q, i):
        a = st.rho[i] * _hdot(st.S[i], q)
        return q - a[:, None, None] * st.Y[i], a

    q, alphas = jax.lax.scan(first, st.gh, order)
    sN, yN = st.S[newest], st.Y[newest]
    yHy = _hdot(yN, precond(yN))
    gamma = jnp.where((st.rho[newest] > 0) & (yHy > 0), _hdot(sN, yN) / jnp.maximum(yHy, 1e-30), 1.0)
    r = precond(q) * gamma[:, None, None]

    def second(r, ia):
        i, a = ia
        coeff = a - st.rho[i] * _hdot(st.Y[i], r)
        return r + coeff[:, None, None] * st.S[i], None

    r, _ = jax.lax.scan(second, r, (order[::-1], alphas[::-1]))
    bad = ~(_hdot(st.gh, -r) < 0)
    dh = jnp.where(bad[:, None, None], -precond(st.gh), -r) * maskf
    # onto the rows' sum-zero subspace (:func:`_sum_zero`): the preconditioner is ~1/reg along the
    # softmax's flat direction (every row moved alike), where float32 rounding would otherwise grow
    dh = _center(dh, maskf)
    dW, db = _unrotate(P, dh)
    return _sum_zero(dW * maskf, cs.class_mask), db * maskf[..., 0], dh


_ARMIJO = 1e-4
_SECOND_STEP = 0.1      # a second Newton step where |phi'(alpha_1)| > 0.1 |phi'(0)|
_MAX_BACKTRACK = 40


def _curvature(cs: _Consts, p, u, dW):
    """``phi''(alpha)`` along the direction at probabilities ``p``: ``sum_i w_i u_i^T S_i u_i / n +
    reg |dW|^2`` with ``S_i = diag(p_i) - p_i p_i^T``. p, u ``(T, K, N)``; dW ``(T, K, D)`` -> ``(T,)``."""
    pu = [a * b for a, b in zip(_classes(p), _classes(u))]
    quad = reduce(jnp.add, [a * b for a, b in zip(pu, _classes(u))]) - jnp.square(reduce(jnp.add, pu))
    return jnp.sum(cs.wn * quad, axis=1) + cs.reg * jnp.sum(dW * dW, axis=(1, 2))


class _Trial(NamedTuple):
    """The line search's outcome per task: step ``alpha``, objective ``f`` and its floor ``fl``,
    probabilities ``p``, ``ok`` (an acceptable step was found) and ``first`` (the step is the first
    trial, whose logits ``z1`` are then those at the step)."""

    alpha: jax.Array; f: jax.Array; fl: jax.Array; p: jax.Array; ok: jax.Array    # noqa: E702
    first: jax.Array; z1: jax.Array                                               # noqa: E702


def _line_search(x1, cs: _Consts, st: _State, dW, db, u, exact) -> _Trial:
    """Step length along ``(dW, db)`` (logits move by ``alpha * u``) for every task.

    A Newton step on ``phi(alpha)`` from 0 (slope from the gradient, curvature from the current
    probabilities); ``phi'(alpha_1)`` from a pass over the trial's probabilities (taking it from the
    trial's gradient instead saves that pass but costs a third matrix product in every iteration
    where some problem takes another step: the realistic benchmark's bootstrap of 24 replicates
    took 9.4 and 8.9 s that way against 8.4 and 8.0 s this way). A second Newton step from there where the first failed the
    Armijo condition ``phi(alpha) <= phi(0) + 1e-4 alpha phi'(0) + floor`` (floor: float32 rounding
    of ``phi``) or left more than ``_SECOND_STEP`` of the starting slope (``phi`` far from
    quadratic, as in near-separable problems), kept where it is acceptable and either the first was
    not or it is lower; then backtracking by safeguarded quadratic interpolation where neither step
    is acceptable. The second trial is evaluated (for every task, then selected per task) only when
    some task needs it (a ``while_loop`` of at most one pass, :func:`_if_any`): on well-conditioned
    problems the first step is nearly always enough; never evaluating it left a near-separable fit
    (C = 100, 3 classes, ``tests/test_probes.py``) stalled above its float32 floor.

    The logits move incrementally (``z + alpha u``); where ``exact`` (a scalar: every
    ``_REFRESH``-th iteration, at the cap, and when every problem is within ``_NEAR`` tol of its
    stop) the first trial's logits are recomputed from its weights instead (one matrix product), so
    that float32 drift cannot leave the gradient inconsistent with the weights (a problem that takes
    another step keeps incremental logits until the next such iteration or the stop's refresh).
    """
    slope = _pdot((st.gW, st.gb), (dW, db))                               # (T,) < 0

    def phi(alpha):
        W = st.W + alpha[:, None, None] * dW
        return _objective(cs, W, st.z + alpha[:, None, None] * u)

    def armijo(alpha, f):
        return jnp.isfinite(f) & (f <= st.f + _ARMIJO * alpha * slope + st.fl)

    a1 = jnp.clip(-slope / jnp.maximum(_curvature(cs, st.p, u, dW), 1e-30), 0.0, 1e6)
    W1 = st.W + a1[:, None, None] * dW
    z1 = jax.lax.cond(exact, lambda: _logits(x1, W1, st.b + a1[:, None] * db),
                      lambda: st.z + a1[:, None, None] * u)
    f1, fl1, p1 = _objective(cs, W1, z1)
    ok1 = armijo(a1, f1)
    d1b = (jnp.sum(cs.wn * _ksum(_residual(p1, cs.y1) * u), axis=1)      # phi'(a1)
           + cs.reg * jnp.sum(W1 * dW, axis=(1, 2)))
    # the second Newton step: where the first failed Armijo, or left the slope above _SECOND_STEP of
    # its start (phi far from quadratic: near-separable problems)
    need2 = ~ok1 | (jnp.abs(d1b) > _SECOND_STEP * jnp.abs(slope))

    def second(c):                       # evaluated only when some task needs it
        a1, f1, fl1, p1, ok1, _ = c      # (all derived from the carried a1: nothing is hoisted)
        a2 = jnp.clip(a1 - d1b / jnp.maximum(_curvature(cs, p1, u, dW), 1e-30), 0.0, 1e6)
        f2, fl2, p2 = phi(a2)
        ok2 = armijo(a2, f2)
        use2 = need2 & ok2 & (~ok1 | (f2 < f1))
        pick = lambda a, b: jnp.where(use2.reshape(use2.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        return pick(a2, a1), pick(f2, f1), pick(fl2, fl1), pick(p2, p1), ok1 | (need2 & ok2), ok1 & ~use2

    # first: the step is the first trial (decided by flag, not by comparing step lengths: a second
    # step can round to the first's length while its probabilities come from incremental logits)
    *start, first = _if_any(need2, second, (a1, f1, fl1, p1, ok1, ok1))
    start = tuple(start) + (jnp.asarray(0),)

    def cond(c):
        return jnp.any(~c[4]) & (c[5] < _MAX_BACKTRACK)

    def body(c):
        alpha, f, fl, p, ok, j = c
        excess = f - st.f - slope * alpha
        interp = -slope * alpha * alpha / (2.0 * jnp.maximum(excess, 1e-30))
        interp = jnp.where(jnp.isfinite(f) & (excess > 0), interp, 0.1 * alpha)
        trial = jnp.where(ok, alpha, jnp.clip(interp, 0.1 * alpha, 0.5 * alpha))
        ft, flt, pt = phi(trial)
        okt = ok | armijo(trial, ft)
        keep = lambda new, old: jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), old, new)  # noqa: E731
        return trial, keep(ft, f), keep(flt, fl), keep(pt, p), okt, j + 1

    alpha, f, fl, p, ok, _ = jax.lax.while_loop(cond, body, start)
    return _Trial(alpha, f, fl, p, ok, first, z1)   # backtracking moves only tasks that were not ok


def _step(x1, P: Precond, cs: _Consts, st: _State, it, exact) -> tuple[_State, jax.Array]:
    """One L-BFGS iteration (two-loop direction, Newton line search with Armijo backtracking).
    x1 ``(N, E)`` (:func:`_with_ones`); ``exact``: recompute the logits (:func:`_line_search`).
    Returns the new state and whether it is exact (logits, objective and gradient computed from
    the weights: ``exact`` and every task took the first trial)."""
    maskf = cs.class_mask.astype(x1.dtype)
    m = st.rho.shape[0]
    dW, db, dh = _direction(P, cs, st, it)
    u = _logits(x1, dW, db)                   # 0 for absent classes (an absent last one: rounding, masked)
    tr = _line_search(x1, cs, st, dW, db, u, exact)
    # no acceptable step: stay, and restart the memory from the preconditioned gradient
    ok = tr.ok
    alpha = jnp.where(ok, tr.alpha, 0.0)
    f = jnp.where(ok, tr.f, st.f)
    fl = jnp.where(ok, tr.fl, st.fl)
    W = _sum_zero(st.W + alpha[:, None, None] * dW, cs.class_mask)
    b = st.b + alpha[:, None] * db * maskf

    def other_step(c, alpha):
        """Logits and probabilities where the step is not the first trial."""
        z, p = c
        first = tr.first[:, None, None]
        return (jnp.where(first, z, st.z + alpha[:, None, None] * u),
                jnp.where(first | ok[:, None, None], p, st.p))

    z, p = _if_any(~tr.first, other_step, (tr.z1, tr.p), alpha)
    gW, gb = _grad_from_p(x1, cs, W, p)
    gh = _rotate(P, gW, gb)
    s = alpha[:, None, None] * dh                                  # the step, rotated
    yv = gh - st.gh
    sy = _hdot(s, yv)
    good = sy > 1e-10 * jnp.sqrt(jnp.maximum(_hdot(yv, yv), 1e-30) * jnp.maximum(_hdot(s, s), 1e-30))
    slot = it % m
    return _State(W, b, z, p, f, fl, gW, gb, gh, st.S.at[slot].set(s), st.Y.at[slot].set(yv),
                  jnp.where(ok[None, :], st.rho, 0.0).at[slot].set(
                      jnp.where(good & ok, 1.0 / jnp.where(good, sy, 1.0), 0.0))), exact & jnp.all(tr.first)


def _ridge_fit(x, labels, weights, class_mask, C):
    """Closed-form weighted ridge on one-hot targets, per task. Shapes as ``_lbfgs_fit``."""
    T, K = class_mask.shape
    y1 = jax.nn.one_hot(labels, K, dtype=jnp.float32)              # (T, N, K); -1 -> zeros
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    wn = weights / n[:, None]
    mu_x = wn @ x                                                   # (T, D)
    mu_y = jnp.einsum("tn,tnk->tk", wn, y1)
    xc = x[None] - mu_x[:, None, :]                                 # (T, N, D)
    G = jnp.einsum("tn,tnd,tne->tde", wn, xc, xc) + (1.0 / (C * n))[:, None, None] * jnp.eye(x.shape[1])
    R = jnp.einsum("tn,tnd,tnk->tdk", wn, xc, y1 - mu_y[:, None, :])
    W = jnp.swapaxes(jnp.linalg.solve(G, R), 1, 2) * class_mask[..., None]
    b = (mu_y - jnp.einsum("tkd,td->tk", W, mu_x)) * class_mask
    resid = (y1 - jnp.einsum("nd,tkd->tnk", x, W) - b[:, None, :]) * class_mask[:, None, :]
    f = 0.5 * jnp.sum(wn * jnp.sum(resid ** 2, -1), 1) + 0.5 / (C * n) * jnp.sum(W * W, (1, 2))
    # gradient of the objective at the solution (the linear solve's residual), measured, not assumed
    gW = (-jnp.einsum("tn,tnk,nd->tkd", wn, resid, x) + (1.0 / (C * n))[:, None, None] * W) * class_mask[..., None]
    gb = -jnp.einsum("tn,tnk->tk", wn, resid) * class_mask
    g = jnp.maximum(jnp.max(jnp.abs(gW), axis=(1, 2)), jnp.max(jnp.abs(gb), axis=1))
    scale = jnp.einsum("tn,nd->td", wn, jnp.abs(x)).max(axis=1) * jnp.maximum(1.0, jnp.max(jnp.abs(resid), axis=(1, 2)))
    floor = _EPS32 * (2.0 + jnp.sqrt(jnp.float32(x.shape[1]))) * 100.0 * scale     # a linear solve's error, generously
    converged = (g <= floor) & jnp.all(jnp.isfinite(W), axis=(1, 2)) & jnp.any(weights > 0, axis=1)
    return ProbeFit(W, b, f, g, jnp.asarray(0), converged, floor)


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
        return jax.vmap(lambda lab, w: _ridge_fit(x, lab, w, class_mask, C))(labels, weights)
    init_ax = 0 if init_batched else None
    x1 = _with_ones(x)
    # the start onto the solver's subspace (:func:`_sum_zero`); the same softmax, a lower penalty
    coef0 = _sum_zero(_center(coef0, class_mask[..., None].astype(coef0.dtype)), class_mask)
    b0 = b0 * class_mask
    cs = jax.vmap(_consts, in_axes=(0, 0, None, None))(labels, weights, class_mask, C)
    st = jax.vmap(_init, in_axes=(None, None, 0, init_ax, init_ax, None))(x1, precond, cs, coef0, b0, history)
    step = jax.vmap(_step, in_axes=(None, None, 0, 0, None, None))
    refresh = jax.vmap(partial(_refresh, x1, precond), in_axes=(0, 0))

    def cond(carry):
        it, st, f_best, g_best, since = carry
        done = (_grad_max(st) <= tol) | (since >= patience)
        return (it <= n_iter) & ~jnp.all(done)

    def body(carry):
        it, st, f_best, g_best, since = carry
        # exact logits in the first trial every _REFRESH-th iteration, at the cap, and when every
        # problem is near its stop (then the state is usually exact where the loop stops)
        near = jnp.all((_grad_max(st) <= _NEAR * tol) | (since + 1 >= patience))
        st, exact = step(x1, precond, cs, st, it, (it % _REFRESH == 0) | near | (it >= n_iter))
        # whenever the loop would stop (all converged or stalled, or the iteration cap), the stop --
        # and the convergence reported -- are decided on exact gradients: logits, objective and
        # gradient recomputed from (W, b) unless the step just computed them so
        would_stop = jnp.all((_grad_max(st) <= tol) | (since + 1 >= patience)) | (it >= n_iter)
        st = jax.lax.cond(would_stop & ~jnp.all(exact), lambda s: refresh(cs, s), lambda s: s, st)
        g = _grad_max(st)
        f_down = st.f < f_best - st.fl
        g_down = g < 0.9 * g_best
        return (it + 1, st, jnp.where(f_down, st.f, f_best), jnp.where(g_down, g, g_best),
                jnp.where(f_down | g_down, 0, since + 1))

    g0 = _grad_max(st)
    # the loop ends on a refreshed state: after a body that would stop, or on the exact start
    it, st, _, _, since = jax.lax.while_loop(
        cond, body, (jnp.asarray(1), st, st.f, g0, jnp.zeros_like(g0, jnp.int32)))
    fW, fb = jax.vmap(_grad_floor, in_axes=(None, 0, 0, 0, 0))(x1, cs, st.W, st.b, st.p)
    g = _grad_max(st)
    has_rows = jnp.any(weights > 0, axis=-1)                  # (R, T): a problem without rows has no fit
    # a stalled fit is only provisionally converged here: recheck_stalled judges it on the host
    converged = ((g <= tol) | (since >= patience)) & has_rows
    floor = jnp.maximum(jnp.max(fW, axis=(-2, -1)), jnp.max(fb, axis=-1))
    b = st.b * class_mask.astype(x.dtype)
    iterations = jnp.full((labels.shape[0],), it - 1)
    return ProbeFit(st.W, b, st.f, g, iterations, converged, floor)


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
    per_task = [np.zeros((r, t), dt) for dt in (np.float32, np.float32, bool, np.float32, np.int32)]
    for fit, (tidx, w) in zip(parts, groups):
        coef[:, tidx, :w] = fit.coef
        icpt[:, tidx, :w] = fit.intercept
        its = np.broadcast_to(np.asarray(fit.iterations).reshape(r, 1), (r, len(tidx)))
        for out, a in zip(per_task, (fit.objective, fit.grad_max, fit.converged, fit.grad_floor, its)):
            out[:, tidx] = a
    obj, gmax, conv, floor, iterations = per_task
    return ProbeFit(coef, icpt, obj, gmax, iterations, conv, floor)


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
                   progress=None) -> ProbeFit:
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
        n_iter = config.warm_iter
    mesh = sharding.mesh()                      # None on one device: everything below as before
    groups = width_groups(class_mask)
    consts = [_group_consts(basis.x, base, class_mask, coef0, b0, tidx, w, config.solver, mesh) for tidx, w in groups]
    x = sharding.put(basis.x, mesh, sharded=False)
    x_host = np.asarray(basis.x) if config.solver == "lbfgs" else None    # the stall recheck's float64 gradient
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
      ``iterations``, ``converged (T,)`` and ``grad_floor (T,)`` (see :class:`ProbeFit`).

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
    fit = fit_replicates(basis, labels, w, class_mask, config)
    coef, intercept = to_original(fit.coef[0], fit.intercept[0], basis)
    return {"coef": coef, "intercept": intercept, "objective": fit.objective[0], "grad_max": fit.grad_max[0],
            "iterations": int(fit.iterations[0].max()), "converged": fit.converged[0], "grad_floor": fit.grad_floor[0]}
