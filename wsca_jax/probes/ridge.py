"""``solver="ridge"``: closed-form ridge regression on one-hot targets.

One factorisation per task x replicate; cheap when weights are uniform, O(N D^2) per fit otherwise
(the ``(T, N, D)`` centred copies are not counted by the memory budget).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .basis import ProbeFit
from .objective import _EPS32


def ridge_fit(x, labels, weights, class_mask, C) -> ProbeFit:
    """Closed-form weighted ridge on one-hot targets, per task, for one replicate. x ``(N, D)``;
    labels ``(T, N)`` (-1 missing); weights ``(T, N)``; class_mask ``(T, K)``; C the inverse L2
    strength. Returns a :class:`ProbeFit` of ``(T, ...)`` arrays (``iterations`` 0)."""
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
    return ProbeFit(W, b, f, g, jnp.asarray(0), converged, floor, jnp.full_like(f, jnp.nan))


def run(x, labels, weights, class_mask, C) -> ProbeFit:
    """:func:`ridge_fit` of every replicate: labels, weights ``(R, T, N)`` -> a :class:`ProbeFit`
    with leading axis ``R``."""
    return jax.vmap(lambda lab, w: ridge_fit(x, lab, w, class_mask, C))(labels, weights)
