"""Weight Space Correlation: heads projected onto the data manifold, signed cosine matrices.

``WSC_ij(A, m) = cos(w'_{A,i}, w'_{m,j})`` with ``w' = P w`` the head rows projected onto the top-k
principal axes of the (training) embeddings (METHOD.md 1.3-1.4). Heads are given in the rotated
principal basis of :class:`wsca_jax.probes.Basis`, where projection is keeping the first k
coordinates.

``heads="centered"`` subtracts the mean row of each head (over its real classes) before the cosine:
softmax rows are identified only up to a common added vector, and centred rows are invariant to it.
``heads="raw"`` uses the rows as they are (the paper). A one-row head (a single-logit model) is never
centred.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import require


class Projection(NamedTuple):
    """PCA projection chosen on the training embeddings.

    Attributes:
      k: number of components kept.
      explained_variance: fraction of the total variance the k components explain.
      variances: ``(D,)`` variance per principal axis (descending).
    """

    k: int
    explained_variance: float
    variances: np.ndarray


def choose_components(variances: np.ndarray, pca_variance: float = 0.99, pca_min: int = 50) -> Projection:
    """Smallest k explaining ``pca_variance`` of the variance, at least ``min(pca_min, D)``.

    Args:
      variances: ``(D,)`` eigenvalues of the covariance, descending.
      pca_variance: in (0, 1]; 1.0 keeps every axis with non-zero variance.
      pca_min: floor on k (the paper's 50), capped at D and at the numerical rank of the data
        (with N <= D the remaining axes have zero variance and arbitrary directions).
    """
    require(0.0 < pca_variance <= 1.0, f"--pca-variance must be in (0, 1], found {pca_variance}")
    require(pca_min >= 1, f"--pca-min must be at least 1, found {pca_min}")
    v = np.asarray(variances, float)
    total = v.sum()
    # axes beyond the numerical rank (N <= D) are arbitrary directions of zero variance: never keep them
    d = max(1, int(np.sum(v > 1e-10 * max(v.max(initial=0.0), 1e-300))))
    if total <= 0:
        k = min(pca_min, d)
    else:
        cum = np.cumsum(v) / total
        k = int(np.searchsorted(cum, pca_variance - 1e-12) + 1)
        k = max(min(k, d), min(pca_min, d))
    ev = float(v[:k].sum() / total) if total > 0 else 0.0
    return Projection(k=k, explained_variance=ev, variances=v)


def _center(rows, row_mask):
    """Subtract the mean of the real rows. rows (..., C, k), row_mask (..., C)."""
    m = row_mask[..., None].astype(rows.dtype)
    cnt = jnp.maximum(m.sum(-2, keepdims=True), 1.0)
    mean = (rows * m).sum(-2, keepdims=True) / cnt
    return jnp.where(row_mask[..., None], rows - mean, 0.0)


def prepare_head(rows, row_mask, k: int, centered: bool):
    """Project head rows (..., C, D) in the rotated basis onto k axes and centre (if asked and C > 1)."""
    proj = rows[..., :k]
    if centered:
        n_rows = jnp.sum(row_mask, axis=-1, keepdims=True)
        proj = jnp.where(n_rows[..., None] > 1, _center(proj, row_mask), proj)
    return jnp.where(row_mask[..., None], proj, 0.0)


def cosine_matrix(a, b, eps: float = 1e-30):
    """Signed cosines between the rows of a (..., Ca, k) and b (..., Cb, k) -> (..., Ca, Cb)."""
    na = jnp.sqrt(jnp.sum(a * a, -1))
    nb = jnp.sqrt(jnp.sum(b * b, -1))
    dots = jnp.einsum("...ik,...jk->...ij", a, b)
    return dots / jnp.maximum(na[..., :, None] * nb[..., None, :], eps)


def wsc(primary_rows, primary_mask, task_rows, task_mask, k: int, centered: bool):
    """WSC matrices of one primary head against T task heads.

    Args:
      primary_rows: ``(..., Ca, D)`` rotated-basis head; primary_mask ``(Ca,)``.
      task_rows: ``(..., T, K, D)``; task_mask ``(T, K)``.
    Returns:
      ``(..., T, Ca, K)`` cosines; padded task classes are NaN.
    """
    a = prepare_head(primary_rows, primary_mask, k, centered)
    b = prepare_head(task_rows, task_mask, k, centered)
    c = cosine_matrix(a[..., None, :, :], b)
    return jnp.where(task_mask[:, None, :], c, jnp.nan)


wsc_jit = jax.jit(wsc, static_argnames=("k", "centered"))
prepare_head_jit = jax.jit(prepare_head, static_argnames=("k", "centered"))


def _top_axes(x, w, k: int):
    """Top-k principal axes ``(D, k)`` of rows ``x (N, D)`` under sample weights ``w (N,)``."""
    w = w / jnp.sum(w)
    mu = w @ x
    xc = x - mu
    cov = (xc * w[:, None]).T @ xc
    _, vecs = jnp.linalg.eigh(cov)                 # ascending
    return vecs[:, ::-1][:, :k]


def wsc_reweighted_basis(x, weights, primary_rows, primary_mask, task_rows, task_mask, k: int, centered: bool):
    """WSC of *fixed* heads with the PCA projection refitted on reweighted rows.

    For heads that are not refitted (a model's own jointly trained heads), a bootstrap can still
    resample the one data-dependent step: the manifold projection. Cosines inside the k-dim
    subspace do not depend on how its axes are chosen, so only the subspace matters.

    Args:
      x: ``(N, D)`` rows (any basis; the heads must be in the same basis).
      weights: ``(R, N)`` bootstrap or jackknife weights.
      primary_rows: ``(Ca, D)``; primary_mask ``(Ca,)``.  task_rows: ``(T, K, D)``; task_mask ``(T, K)``.
    Returns:
      ``(R, T, Ca, K)``; padded task classes are NaN.
    """
    def one(w):
        u = _top_axes(x, w, k)                                    # (D, k)
        return wsc(primary_rows @ u, primary_mask, task_rows @ u, task_mask, k, centered)
    return jax.lax.map(one, weights)


wsc_reweighted_basis_jit = jax.jit(wsc_reweighted_basis, static_argnames=("k", "centered"))


class Disattenuated(NamedTuple):
    """Attenuation-corrected WSC (see :func:`disattenuate`).

    Attributes:
      cells: ``(T, Ca, K)`` corrected cosines (NaN where a direction is unreliable or a class padded).
      scale: ``(T, Ca, K)`` ``1 / sqrt(rel_a rel_b)``: how much the correction stretches deviations.
      rel_primary: ``(Ca,)`` reliability of each primary row's direction, ``1 - tr Cov / |row|^2``.
      rel_tasks: ``(T, K)`` the same for every probe row.
    """

    cells: np.ndarray
    scale: np.ndarray
    rel_primary: np.ndarray
    rel_tasks: np.ndarray


def _noise_power(hat, reps, factor):
    """|row|^2 and the noise power ``factor * sum_r |rep_r - mean|^2`` of each row. hat (..., k), reps (R, ..., k)."""
    dev = reps - reps.mean(0)
    return np.sum(hat * hat, -1), factor * np.sum(np.sum(dev * dev, -1), 0)


NOISE_ESTIMATES = ("jackknife", "bootstrap")


def disattenuate(a_hat, a_rep, b_hat, b_rep, min_reliability: float = 0.1, noise: str = "jackknife") -> Disattenuated:
    """Cosines corrected for the noise in estimated head directions (Spearman's correction for vectors).

    A probe row fitted on N rows is ``b + e`` with noise ``e``; noise adds length but not alignment,
    so ``cos(a + d, b + e)`` is shrunk toward 0 by about ``sqrt(rel_a rel_b)`` with the reliability
    ``rel = 1 - E|e|^2 / |b + e|^2``. Replicate fits estimate the noise: ``tr Cov`` of each row, and
    the cross term ``tr Cov(a, b)`` (both probes fitted on the same rows)::

        corrected = (a.b - tr Cov(a, b)) / sqrt((|a|^2 - tr Cov(a)) (|b|^2 - tr Cov(b)))

    clipped to [-1, 1]. ``noise="jackknife"`` (the default): delete-one-block replicates,
    ``tr Cov = (J - 1) / J sum_j |b_j - mean|^2``; ``"bootstrap"``: the spread of bootstrap replicates,
    which repeat rows and overstate the noise of a well-separated probe (twice the noise across fresh
    samples at probe AUROC 0.98 in ``experiments/results/calibration.md``). A fixed (model) head has no
    replicate spread: its reliability is 1. Rows whose reliability is below ``min_reliability`` have no
    usable direction: their cells are NaN.

    Args:
      a_hat: ``(Ca, k)`` primary rows as compared (projected, centred).  a_rep: ``(R, Ca, k)`` replicates.
      b_hat: ``(T, K, k)`` probe rows as compared.  b_rep: ``(R, T, K, k)``.  Padded rows all 0.
      noise: how the replicates were drawn: ``"jackknife"`` or ``"bootstrap"``.
    Returns:
      :class:`Disattenuated` (NumPy arrays).
    """
    if noise not in NOISE_ESTIMATES:
        raise ValueError(f"noise must be one of {NOISE_ESTIMATES}, found {noise!r}")
    # small arrays: NumPy in float64 (eager JAX would compile every operation for every shape)
    a_hat, a_rep, b_hat, b_rep = (np.asarray(v, np.float64) for v in (a_hat, a_rep, b_hat, b_rep))
    R = a_rep.shape[0]
    factor = (R - 1) / R if noise == "jackknife" else 1.0 / R
    pa, na = _noise_power(a_hat, a_rep, factor)                            # (Ca,)
    pb, nb = _noise_power(b_hat, b_rep, factor)                            # (T, K)
    da, db = a_rep - a_rep.mean(0), b_rep - b_rep.mean(0)
    cross = factor * np.einsum("bik,btjk->tij", da, db)                   # (T, Ca, K)
    dots = np.einsum("ik,tjk->tij", a_hat, b_hat)
    rel_a = np.where(pa > 0, 1 - na / np.where(pa > 0, pa, 1), 0.0)
    rel_b = np.where(pb > 0, 1 - nb / np.where(pb > 0, pb, 1), 0.0)
    ok = (rel_a[None, :, None] >= min_reliability) & (rel_b[:, None, :] >= min_reliability)
    den = np.sqrt(np.maximum(pa - na, 1e-30)[None, :, None] * np.maximum(pb - nb, 1e-30)[:, None, :])
    cells = np.where(ok, np.clip((dots - cross) / den, -1.0, 1.0), np.nan)
    scale = np.where(ok, 1 / np.sqrt(np.maximum(rel_a[None, :, None] * rel_b[:, None, :], 1e-30)), np.nan)
    return Disattenuated(*(np.asarray(v, float) for v in (cells, scale, rel_a, rel_b)))


def wsc_by_k(primary_rows, primary_mask, task_rows, task_mask, ks, centered: bool):
    """WSC at several projection sizes in one batched call (the paper's Fig. 4).

    Projection onto the top-k axes keeps the first k rotated coordinates, and centring is per
    coordinate, so every k comes from one set of centred rows: dot products and norms are sums over
    the first k coordinates, taken for all k at once with an indicator matrix ``M (D, n_k)``.

    Args:
      primary_rows: ``(R, Ca, D)`` rotated-basis rows; primary_mask ``(Ca,)``.
      task_rows: ``(R, T, K, D)``; task_mask ``(T, K)``.  ks: the sizes (each <= D).
    Returns:
      ``(R, n_k, T, Ca, K)`` cosines; padded task classes NaN.
    """
    D = primary_rows.shape[-1]
    a = prepare_head(primary_rows, primary_mask, D, centered)
    b = prepare_head(task_rows, task_mask, D, centered)
    M = (jnp.arange(D)[:, None] < jnp.asarray(ks)[None, :]).astype(a.dtype)       # (D, n_k)
    dots = jnp.einsum("rid,rtjd,dq->rqtij", a, b, M)
    na = jnp.sqrt(jnp.einsum("rid,dq->rqi", a * a, M))                             # (R, n_k, Ca)
    nb = jnp.sqrt(jnp.einsum("rtjd,dq->rqtj", b * b, M))                           # (R, n_k, T, K)
    c = dots / jnp.maximum(na[:, :, None, :, None] * nb[:, :, :, None, :], 1e-30)
    return jnp.where(task_mask[None, None, :, None, :], c, jnp.nan)


wsc_by_k_jit = jax.jit(wsc_by_k, static_argnames=("centered",))
