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
