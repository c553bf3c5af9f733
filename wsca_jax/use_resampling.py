"""Resampling of the decision-use statistics (:mod:`wsca_jax.use`): bootstrap resamples of the rows,
the basic interval, probes refitted on replicates (bootstrap counts or permuted labels) and the
LEACE erasure effect in closed form for the bootstrap's refits.

Shapes as in :mod:`wsca_jax.use`.
"""

from __future__ import annotations

import numpy as np

from .use import _centred, _onehot, _probe_scores, _scores_of, class_masks


def bootstrap_rows(n: int, draws: int, seed: int, groups: np.ndarray | None = None) -> list[np.ndarray]:
    """``draws`` bootstrap resamples of ``n`` rows as index arrays (whole groups resampled when
    ``groups (N,)`` is given: :func:`wsca_jax.stats.bootstrap_weights`)."""
    from .stats import bootstrap_weights
    counts = bootstrap_weights(np.random.default_rng(seed), n, draws, groups).astype(np.int64)
    return [np.repeat(np.arange(n), c) for c in counts]


def basic_ci(estimate: float, replicates: np.ndarray, confidence: float = 0.95, lo: float = 0.0,
             hi: float | None = None) -> list[float] | None:
    """The basic bootstrap interval ``[2 t - q_hi, 2 t - q_lo]`` of ``replicates (B,)`` clipped to the
    statistic's range ``[lo, hi]`` (None: fewer than 2 finite replicates or a non-finite estimate).
    Basic, not percentile: the statistics here are maxima of magnitudes, biased upwards near 0, and
    the basic interval reflects that bias (its coverage: ``experiments/results/use_calibration.md``)."""
    from .stats import basic_interval
    r = np.asarray(replicates, np.float64)
    r = r[np.isfinite(r)]
    if len(r) < 2 or not np.isfinite(estimate):
        return None
    a, b = basic_interval(float(estimate), r, confidence)
    top = np.inf if hi is None else hi
    return [float(np.clip(a, lo, top)), float(np.clip(b, lo, top))]


def erasure_delta_sd(t: np.ndarray, g: np.ndarray, y: np.ndarray, a: np.ndarray, within: bool = False) -> float:
    """:func:`erasure_estimate` in closed form, for bootstrap replicates: ``t (N, r)`` the rows in
    (any) whitened coordinates, ``g (r, S)`` the decision's score map there (scores ``t g`` + a
    constant). LEACE's map is the oblique projection ``P = S^-1 C (C^T S^-1 C)^+ C^T`` (``S``: the
    rows' covariance, ``C``: their cross-covariance with the one-hot attribute; both pooled within
    the classes of ``y`` when ``within``), so the score moves by ``-(t - m) P g``: one linear solve
    instead of an eigendecomposition (equal to :func:`erasure_estimate` to rounding: tests)."""
    keep = a >= 0
    tk, ak = t[keep], a[keep]
    if within:
        yk = y[keep]
        means = np.stack([tk[yk == c].mean(0) if (yk == c).any() else np.zeros(t.shape[1]) for c in range(int(y.max()) + 1)])
        tc, m_rows = tk - means[yk], means[y]
    else:
        tc, m_rows = tk - tk.mean(0), tk.mean(0)
    z = _centred(_onehot(ak), yk if within else None)
    n = len(tk)
    S = tc.T @ tc / n
    C = tc.T @ z / n
    try:                                       # S is near the identity in whitened coordinates
        SC = np.linalg.solve(S, C)
    except np.linalg.LinAlgError:              # a resample without variance along some direction
        SC = np.linalg.lstsq(S, C, rcond=None)[0]
    G = np.linalg.pinv(C.T @ SC, rcond=1e-9)
    if not np.any(np.abs(G) > 0):
        return 0.0
    delta = (t - m_rows) @ (SC @ (G @ (C.T @ g)))
    sd = (t @ g).std(0)
    return float(np.max(np.abs(delta).mean(0) / np.where(sd > 0, sd, np.inf)))


def probe_score_replicates(xw: np.ndarray, labels: np.ndarray, weights: np.ndarray, config,
                           labels_batched: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Attribute probes refitted on replicates of whitened embeddings ``xw (N, r)``, every task and
    replicate together (:func:`wsca_jax.probes.engine.fit_replicates`, judged by the gradient rule
    like every replicate fit): labels ``(T, N)`` (or ``(R, T, N)`` with ``labels_batched``, e.g.
    permutations), ``weights (R, N)`` (bootstrap counts or ones). Returns per task the scores
    ``(R, N, S_t)`` on every row, and ``converged (R, T)``."""
    from .probes.basis import make_basis
    from .probes.engine import fit_replicates
    labels = np.asarray(labels)
    mask = class_masks(labels[0] if labels_batched else labels)
    basis = make_basis(xw)
    fit = fit_replicates(basis, labels, weights, mask, config, labels_batched=labels_batched)
    bx = np.asarray(basis.x, np.float64)
    scores = _probe_scores(bx, np.asarray(fit.coef, np.float64), np.asarray(fit.intercept, np.float64), mask)
    return scores, np.asarray(fit.converged, bool)
