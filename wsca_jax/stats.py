"""Resampling statistics: bootstrap weights, permutations, intervals, p-values, nulls.

All resampling is expressed as *weights* or *label permutations* over the same embedding matrix
(never B gathered copies of X):

* :func:`bootstrap_weights` -- multinomial counts of each row (or of whole groups, e.g. patients).
* :func:`jackknife_weights` -- delete-one-block weights for the BCa acceleration.
* :func:`permutation_indices` -- label permutations (with groups: groups exchanged among groups
  of equal size, rows shuffled within them).
* :func:`percentile_interval`, :func:`basic_interval`, :func:`bca_interval` -- as
  ``scipy.stats.bootstrap``; :func:`recentred_replicates` -- bootstrap deviations around a
  corrected estimate;
  :func:`guarded_bca_interval` -- BCa that falls back to the percentile interval (and says why)
  where the bias correction is extreme or the interval narrower than the bootstrap spread.
* :func:`permutation_pvalue`, :func:`holm` -- two-sided permutation p-values, Holm adjustment;
  :func:`pvalue_mcse`, :func:`near_threshold` -- Monte Carlo error of a permutation p-value, and
  whether more permutations are needed to decide it against alpha.
* :func:`random_direction_null` -- cosines between random directions in the projected space
  (the analogue of the paper's inter-network null).
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats as sps
from .errors import require


def _group_index(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if groups is None:
        return np.arange(n), n
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    return inv.ravel(), int(inv.max()) + 1


def bootstrap_weights(rng: np.random.Generator, n: int, n_boot: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Bootstrap replicates as count weights.

    Args:
      rng: NumPy generator.  n: rows.  n_boot: replicates B.
      groups: ``(N,)`` group ids; when given, whole groups are resampled with replacement and every
        row of a drawn group gets the group's count.
    Returns:
      ``(B, N)`` float32 counts (each row sums to N without groups).
    """
    gi, g = _group_index(groups, n)
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(np.float32)  # (B, G)
    return counts[:, gi]


def jackknife_weights(n: int, groups: np.ndarray | None = None, max_blocks: int = 50,
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """Delete-one-block jackknife weights ``(J, N)`` (0 for the deleted block, 1 elsewhere).

    Blocks are the groups when given (merged at random into ``max_blocks`` blocks when there are
    more), otherwise single rows when ``n <= max_blocks``, else a random partition into
    ``max_blocks`` blocks (the delete-a-group jackknife).
    """
    gi, g = _group_index(groups, n)
    if g > max_blocks:
        rng = rng or np.random.default_rng(0)
        block_of_group = rng.permutation(g) % max_blocks
        gi, g = block_of_group[gi], max_blocks
    w = np.ones((g, n), np.float32)
    w[gi, np.arange(n)] = 0.0
    return w


def permutation_indices(rng: np.random.Generator, n: int, n_perm: int, groups: np.ndarray | None = None,
                        strata: np.ndarray | None = None) -> np.ndarray:
    """Permutations of the rows, ``(P, N)`` int: row i takes the label of row ``perm[i]``.

    With ``strata`` (``(N,)`` codes, e.g. the primary label) rows are only exchanged within their
    stratum: the null keeps the association between the permuted attribute and the stratum (a
    scanner that goes with the class stays so) and removes only what goes beyond it -- the
    conditional permutation test for confounded designs. Groups must then lie inside one stratum.

    Without groups: uniform permutations. With groups (patients) the permutation respects them:
    groups are permuted among groups of the same size, and the rows of the partner group are
    handed over in a random order. A group-level attribute (the scanner of a patient) thus moves
    between patients as a block and stays constant within each patient, while a row-level attribute
    (the view of an image) is also shuffled within the patient. Both moves preserve the grouping of
    the labels, which is what exchangeability under "no association" needs when rows of one
    patient are dependent.
    """
    if strata is not None:
        strata = np.asarray(strata).ravel()
        require(strata.shape[0] == n, f"strata has {strata.shape[0]} rows, expected {n}")
        out = np.empty((n_perm, n), np.int64)
        for s in np.unique(strata):
            rows = np.flatnonzero(strata == s)
            sub_groups = None
            if groups is not None:
                sub_groups = np.asarray(groups)[rows]
                outside = np.isin(np.asarray(groups)[strata != s], sub_groups)
                require(not outside.any(), "permutation strata: a group spans two strata; "
                                           "expected every group (patient) inside one stratum")
            out[:, rows] = rows[permutation_indices(rng, len(rows), n_perm, sub_groups)]
        return out
    if groups is None:
        return np.stack([rng.permutation(n) for _ in range(n_perm)])
    gi, g = _group_index(groups, n)
    members = [np.flatnonzero(gi == k) for k in range(g)]
    sizes = np.array([len(m) for m in members])
    out = np.empty((n_perm, n), np.int64)
    for p in range(n_perm):
        perm = np.arange(n)
        for s in np.unique(sizes):
            ids = np.flatnonzero(sizes == s)
            partner = ids[rng.permutation(len(ids))]
            src = np.stack([members[k] for k in partner])              # (groups of size s, s)
            if s > 1:
                src = rng.permuted(src, axis=1)                         # shuffle within each group
            dst = np.stack([members[k] for k in ids])
            perm[dst.ravel()] = src.ravel()
        out[p] = perm
    return out


def exchangeable_fraction(groups: np.ndarray) -> float:
    """Share of rows whose group has at least one other group of the same size (those whose
    group-level labels a grouped permutation can move)."""
    gi, g = _group_index(groups, len(groups))
    sizes = np.bincount(gi)
    same = np.bincount(sizes)[sizes] >= 2
    return float(same[gi].mean())


def percentile_interval(theta_boot: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis of ``(B, ...)`` (NaN-aware)."""
    a = (1 - confidence) / 2
    return np.nanpercentile(theta_boot, 100 * a, axis=0), np.nanpercentile(theta_boot, 100 * (1 - a), axis=0)


def basic_interval(theta_hat: np.ndarray, theta_boot: np.ndarray, confidence: float = 0.95):
    """Basic (reverse percentile) interval ``[2 t - q_hi, 2 t - q_lo]`` over the first axis of
    ``(B, ...)`` (as ``scipy.stats.bootstrap(method="basic")``)."""
    lo, hi = percentile_interval(theta_boot, confidence)
    t = np.asarray(theta_hat, float)
    return 2 * t - hi, 2 * t - lo


def recentred_replicates(estimate: np.ndarray, theta_boot: np.ndarray, scale: np.ndarray | float = 1.0) -> np.ndarray:
    """Bootstrap deviations moved onto another estimate: ``estimate + scale (theta* - mean theta*)``.

    For a bias-corrected (e.g. disattenuated) estimate the replicates of the raw statistic carry the
    sampling spread but sit around the *attenuated* value (the bootstrap attenuates once more); their
    deviations, stretched by the correction's ``scale``, give the spread of the corrected estimate.

    Args:
      estimate: ``(...)``.  theta_boot: ``(B, ...)``.  scale: ``(...)`` or a number.
    Returns:
      ``(B, ...)``.
    """
    tb = np.asarray(theta_boot, float)
    return np.asarray(estimate, float) + np.asarray(scale, float) * (tb - np.nanmean(tb, axis=0))


def bca_interval(theta_hat: np.ndarray, theta_boot: np.ndarray, theta_jack: np.ndarray,
                 confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected and accelerated interval, elementwise over trailing axes.

    Same formulas as ``scipy.stats.bootstrap(method="BCa")``: bias ``z0`` from the share of
    replicates below the estimate (ties counted half), acceleration from the jackknife values.
    Where every replicate lies on one side of the estimate (BCa undefined; scipy gives NaN) the
    percentile interval is returned for that element.

    Args:
      theta_hat: ``(...)`` estimate.  theta_boot: ``(B, ...)``.  theta_jack: ``(J, ...)``.
    """
    theta_hat = np.asarray(theta_hat, float)
    tb = np.asarray(theta_boot, float)
    tj = np.asarray(theta_jack, float)
    B = tb.shape[0]
    pct = ((tb < theta_hat).sum(0) + (tb <= theta_hat).sum(0)) / (2.0 * B)
    z0 = special.ndtri(pct)
    jm = tj.mean(0)
    num = ((jm - tj) ** 3).sum(0)
    den = 6.0 * (((jm - tj) ** 2).sum(0)) ** 1.5
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    alpha = (1 - confidence) / 2
    out = []
    for level in (alpha, 1 - alpha):
        za = special.ndtri(level)
        with np.errstate(invalid="ignore", divide="ignore"):
            q = special.ndtr(z0 + (z0 + za) / (1 - acc * (z0 + za)))
        # every replicate on one side of the estimate (z0 infinite): BCa is undefined (scipy returns
        # NaN); fall back to the percentile interval for that element
        q = np.where(np.isfinite(q), q, level)
        out.append(_percentile_per_element(tb, 100 * q))
    return out[0], out[1]


def guarded_bca_interval(theta_hat: np.ndarray, theta_boot: np.ndarray, theta_jack: np.ndarray,
                         confidence: float = 0.95, min_tail: int = 5, min_width: float = 0.5):
    """BCa where it can be trusted, the percentile interval where it cannot.

    BCa reads its ends at bias-corrected levels ``q = Phi(z0 + (z0 + z_a) / (1 - a (z0 + z_a)))``.
    With nearly all replicates on one side of the estimate (a non-smooth statistic such as max |WSC|
    bounded at 0) ``z0`` is extreme and both ends come from the last few replicates: an interval
    that is far narrower than the bootstrap distribution and may exclude the estimate. Elementwise,
    the percentile interval is used instead when

      * fewer than ``max(2, min(min_tail, B a / 2))`` replicates lie beyond either adjusted level
        (``extreme_z0``), or
      * the BCa interval is narrower than ``min_width`` times the percentile interval
        (``narrower_than_spread``), or
      * it does not contain the median of the replicates (``excludes_median``: the bias correction
        moved both ends past the bulk of the bootstrap distribution).

    Args:
      theta_hat: ``(...)``.  theta_boot: ``(B, ...)``.  theta_jack: ``(J, ...)``.
    Returns:
      ``(low, high, fallback, z0)``: ``fallback`` is an array of ``""`` (BCa used) or the reason.
    """
    theta_hat = np.asarray(theta_hat, float)
    tb = np.asarray(theta_boot, float)
    B = tb.shape[0]
    alpha = (1 - confidence) / 2
    lo_b, hi_b = bca_interval(theta_hat, tb, theta_jack, confidence)
    lo_p, hi_p = percentile_interval(tb, confidence)
    pct = ((tb < theta_hat).sum(0) + (tb <= theta_hat).sum(0)) / (2.0 * B)
    z0 = special.ndtri(pct)
    # replicates beyond the adjusted levels, read from where the BCa ends fall in the sorted replicates
    below = (tb < lo_b).sum(0)
    above = (tb > hi_b).sum(0)
    need = max(2.0, min(float(min_tail), B * alpha / 2))
    extreme = (below < need) | (above < need) | ~np.isfinite(z0)
    narrow = (hi_b - lo_b) < min_width * (hi_p - lo_p)
    med = np.nanmedian(tb, axis=0)
    off = (med < lo_b) | (med > hi_b)
    reason = np.where(extreme, "extreme_z0", np.where(narrow, "narrower_than_spread",
                                                      np.where(off, "excludes_median", "")))
    use_p = reason != ""
    return np.where(use_p, lo_p, lo_b), np.where(use_p, hi_p, hi_b), reason, z0


def _percentile_per_element(tb: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.percentile(tb[:, idx], q[idx])`` for every trailing index (linear interpolation)."""
    flat = tb.reshape(tb.shape[0], -1)
    qf = np.broadcast_to(q, tb.shape[1:]).reshape(-1)
    res = np.array([np.nanpercentile(flat[:, i], qf[i]) if np.isfinite(flat[:, i]).any() else np.nan
                    for i in range(flat.shape[1])])
    return res.reshape(tb.shape[1:])


def permutation_pvalue(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Two-sided p-value ``(1 + #{|null| >= |obs|}) / (P + 1)`` elementwise; null ``(P, ...)``."""
    obs = np.abs(np.asarray(observed, float))
    nul = np.abs(np.asarray(null, float))
    exceed = (nul >= obs - 1e-12 * np.maximum(obs, 1.0)).sum(0)
    p = (1.0 + exceed) / (nul.shape[0] + 1.0)
    return np.where(np.isfinite(obs), p, np.nan)


def pvalue_mcse(p: np.ndarray, n_perm: int) -> np.ndarray:
    """Monte Carlo standard error of a permutation p-value from ``n_perm`` permutations,
    ``sqrt(p (1 - p) / n_perm)``: the p a rerun with fresh permutations would give scatters about
    this much around the same exact (all-permutations) p."""
    p = np.asarray(p, float)
    return np.sqrt(np.clip(p * (1 - p), 0, None) / max(int(n_perm), 1))


def near_threshold(p: np.ndarray, n_perm: int, thresholds, n_se: float = 3.0) -> np.ndarray:
    """Whether each p is within ``n_se`` Monte Carlo standard errors of any threshold (so that more
    permutations could change the decision). The SE is taken at the threshold, so that p = 1/(P+1)
    is not 'near' by a vanishing SE."""
    p = np.asarray(p, float)
    t = np.asarray(thresholds, float).reshape((-1,) + (1,) * p.ndim)
    se = pvalue_mcse(t, n_perm)
    return np.any(np.abs(p[None] - t) <= n_se * se, axis=0)


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def random_cosine_quantile(k: int, q: float = 0.95) -> float:
    """Quantile ``q`` of |cos| between a fixed and a uniformly random direction in R^k.

    ``cos^2 ~ Beta(1/2, (k-1)/2)``; the cosine has mean 0 and SD ``1/sqrt(k)``.
    """
    if k <= 1:
        return 1.0
    return float(np.sqrt(sps.beta.ppf(q, 0.5, (k - 1) / 2.0)))


def random_direction_null(rng: np.random.Generator, k: int, n_rows_a: int, n_rows_b: int, centered: bool,
                          n_draws: int = 4000) -> np.ndarray:
    """Max |cos| over the (Ca x Cb) matrix of two random heads in R^k, ``(n_draws,)``.

    Rows are i.i.d. isotropic Gaussian directions, centred like the heads under analysis when
    ``centered`` (and the head has more than one row).
    """
    a = rng.standard_normal((n_draws, n_rows_a, k))
    b = rng.standard_normal((n_draws, n_rows_b, k))
    if centered:
        if n_rows_a > 1:
            a -= a.mean(1, keepdims=True)
        if n_rows_b > 1:
            b -= b.mean(1, keepdims=True)
    a /= np.linalg.norm(a, axis=-1, keepdims=True)
    b /= np.linalg.norm(b, axis=-1, keepdims=True)
    return np.abs(np.einsum("nik,njk->nij", a, b)).max(axis=(1, 2))
