"""The objective and its gradient, in float32, with the float32 floor of the gradient.

Per replicate and task, the objective scikit-learn's ``LogisticRegression`` minimises with
``sample_weight`` (for ``K >= 3``; see :func:`~wsca_jax.probes.sklearn_equivalent_C` for binary
tasks)::

    f(W, b) = (1 / n) * sum_i w_i * CE(y_i, softmax(W x_i + b)) + ||W||^2 / (2 * C * n),
    n = sum_i w_i   (rows with a missing label have w_i = 0)

Float32 care where near-separable problems (large C) need it: the loss is ``log1p(sum of the other
classes)`` of max-shifted logits, the label's residual is ``-sum of the other probabilities``
(:func:`_loss_terms`, :func:`_residual`). The matrix products carry the intercepts (a ones column,
padded to an aligned width ``E``: :func:`_with_ones`) and run over K - 1 classes: the iterates'
weight rows sum to zero (:func:`_sum_zero`), so the last class's logits and gradient row follow
from the others' (:func:`_logits`, :func:`_xt`). :func:`_grad_floor` bounds the gradient's float32
rounding error.

Shapes: ``T`` tasks, ``K`` (padded) classes, ``N`` rows, ``D`` dimensions, ``E`` the aligned width.
Everything here is of one replicate; the callers vmap over replicates.
"""

from __future__ import annotations

from functools import reduce
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_EPS32 = float(np.finfo(np.float32).eps)


def _masked_logits(z, class_mask):
    """Logits ``(T, K, N)`` with the classes a task does not have at -inf. Class axis before the
    rows: reductions over classes are then elementwise operations over rows (vectorised), not
    reductions along a minor axis of 2-4 values (about 5x slower on CPU)."""
    return jnp.where(class_mask[:, :, None], z, -jnp.inf)


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


def _consts(labels, weights, class_mask, C) -> _Consts:
    """The loop-invariant :class:`_Consts` of one replicate: labels ``(T, N)``, weights ``(T, N)``,
    class_mask ``(T, K)``, ``C`` the inverse L2 strength."""
    T, K = class_mask.shape
    # rows without a label in 0..K-1 carry no weight (the gradient's last row relies on every weighted
    # row's residuals summing to zero: :func:`_xt`)
    weights = jnp.where((labels >= 0) & (labels < K), weights, 0.0)
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    return _Consts(labels=labels, wn=weights / n[:, None], y1=_onehot(labels, K), reg=1.0 / (C * n),
                   class_mask=class_mask)


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
