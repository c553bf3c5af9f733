"""The K-FAC preconditioner: each task's curvature as a Kronecker product, applied by eigenpairs.

L-BFGS runs with this preconditioner as its initial Hessian (:func:`~wsca_jax.probes.lbfgs._direction`);
its memory and direction live in the eigenbasis of each task's ``A`` (:func:`_rotate`), where
applying the preconditioner is cheap (:func:`_precond_rotated`).

Shapes: ``T`` tasks, ``K`` classes, ``N`` rows, ``D`` dimensions.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .objective import _masked_logits


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
