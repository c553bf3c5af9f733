"""The basis the solver works in, and the fits it returns.

Embeddings are centred and rotated once into their principal axes (:class:`Basis`). Rotation is
exact (the L2 penalty is rotation invariant; centring is absorbed by the unpenalised intercept)
and makes a diagonal preconditioner ``1 / (c * var_d + reg)`` nearly exact for the data term. Fits
(:class:`ProbeFit`) are in that basis; :func:`to_original` maps them back.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


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
      converged: ``(..., T)`` bool: for certified fits, the estimated relative gap at most
        ``gap_tol``; for the others ``max |gradient| <= tol``, or stalled with the float64 gradient
        at the measured float32 floor (:func:`~wsca_jax.probes.engine.recheck_stalled`). False: the
        fit is not to be trusted (iteration cap, a stall above the floor, a gap above ``gap_tol``).
      grad_floor: ``(..., T)`` the gradient's float32 floor: measured for stalled fits (ten times
        ``|g32 - g64|``), else the worst-case bound (rounding of the sums and of the logits).
      gap: ``(..., T)`` the estimated relative optimality gap ``lambda^2 / (2 f)`` (Newton decrement,
        float64) of certified fits (:func:`~wsca_jax.probes.certify.certify`: full-data fits), NaN
        where a fit was not certified (replicates are judged by the gradient rule alone).
    """

    coef: jax.Array
    intercept: jax.Array
    objective: jax.Array
    grad_max: jax.Array
    iterations: jax.Array
    converged: jax.Array
    grad_floor: jax.Array
    gap: jax.Array | None = None


ROW_BLOCK = 16384          # rows per block of the host's passes over the embeddings (no whole copy)


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
