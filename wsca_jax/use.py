"""Does the decision use an attribute? Statistics of the decision itself, beside the paper's WSC.

The paper's WSC is a Euclidean cosine between the head and a probe: rescale an embedding channel
and the head's weight on it inversely and every logit stays, yet WSC moves (0.24 to 0.01 or 0.97
in issue 28's measurement). The statistics here are properties of the decision -- of the head's
scores on the rows -- and of the data's covariance, so they do not move under any invertible
linear change of embedding coordinates that keeps every logit (``x -> x A``, ``head -> head A^-T``):

* :func:`within_class_eta` -- how much the decision score follows the attribute once the class is
  known (the correlation ratio within classes), with a within-class permutation null.
* :func:`within_class_shift` -- how far the decision score moves between the attribute's levels
  within classes, in SDs of the score (the observational counterpart of an intervention).
* :func:`score_correlation` -- the cosine of ``Sigma^1/2 w`` and ``Sigma^1/2 b``: the correlation over
  rows of the head's score and the attribute probe's score (the probe fitted on whitened embeddings,
  where the L2 penalty is coordinate-free: :func:`whiten`), over all rows or within classes.
* :func:`erasure_effect` -- remove the attribute's linear information from the embeddings with
  LEACE (Belrose et al., 2023: :func:`leace`) and measure how the decision moves (mean |delta
  score| in SDs of the score, flip rate, primary AUROC change), against erasing random subspaces of
  the same rank in the whitened space (:func:`random_erasure_null`); ``within=True``: the
  class-conditional eraser, which removes only what the attribute adds once the class is known
  (in a confounded design the marginal eraser also removes part of the class).

Shapes: ``N`` rows, ``D`` embedding dimensions, ``S`` score columns of a head (1 for a binary
head), ``K`` attribute classes. Labels are ints ``0 .. K-1`` with ``-1`` missing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

EIGEN_FLOOR = 1e-10        # eigenvalues below this share of the largest are the embeddings' null space


def _scores_of(z: np.ndarray) -> np.ndarray:
    """Logits ``(N, C)`` -> decision scores ``(N, S)``: the logit (one column), the second minus the
    first (two), or each minus the columns' mean (more)."""
    if z.shape[1] == 1:
        return z
    if z.shape[1] == 2:
        return z[:, 1:] - z[:, :1]
    return z - z.mean(1, keepdims=True)


def _logits(head: np.ndarray, x: np.ndarray, bias=None) -> np.ndarray:
    """``x (N, D) @ head (C, D)^T + bias``: ``(N, C)`` in float64."""
    h = np.atleast_2d(np.asarray(head, np.float64))
    return np.asarray(x, np.float64) @ h.T + (0.0 if bias is None else np.asarray(bias, np.float64).reshape(-1))


def decision_scores(head: np.ndarray, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """A head's decision scores ``(N, S)``: its logit (one row), the second logit minus the first
    (two rows), or each logit minus the rows' mean (more classes). head ``(C, D)`` or ``(D,)``."""
    return _scores_of(_logits(head, x, bias))


# ---------------------------------------------------------------------- within-class dependence

def _eta_many(score: np.ndarray, y: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The pooled within-class correlation ratio of ``score (N,)`` on levels ``a`` for each row of
    ``a (P, N)``: sqrt(between-level SS / total SS, both within the classes ``y (N,)``). ``(P,)``."""
    a = np.atleast_2d(a)
    P, n = a.shape
    yc = np.unique(y, return_inverse=True)[1]
    score = np.asarray(score, np.float64).copy()
    for c in np.unique(yc):                               # centred within classes: no cancellation below
        score[yc == c] -= score[yc == c].mean()
    levels = int(a.max()) + 1
    total = sum(np.sum((score[yc == c] - score[yc == c].mean()) ** 2) for c in np.unique(yc))
    cells = (yc * levels + a + (np.arange(P) * (yc.max() + 1) * levels)[:, None]).ravel()
    m = P * (yc.max() + 1) * levels
    sums = np.bincount(cells, np.tile(score, P), minlength=m)
    counts = np.bincount(cells, minlength=m)
    cell_part = np.where(counts > 0, sums ** 2 / np.maximum(counts, 1), 0.0).reshape(P, -1).sum(1)
    class_part = sum(score[yc == c].sum() ** 2 / np.sum(yc == c) for c in np.unique(yc))
    between = np.maximum(cell_part - class_part, 0.0)
    return np.sqrt(between / total) if total > 0 else np.full(P, np.nan)


def within_class_permutations(rng: np.random.Generator, y: np.ndarray, a: np.ndarray, n: int,
                              groups: np.ndarray | None = None) -> np.ndarray:
    """``(n, N)`` copies of ``a (N,)`` with its values permuted within each class of ``y`` (one
    ``rng.permutation`` per copy and class, in that order: ``wsca mid``'s check draws the same).
    With ``groups (N,)`` (patients) that each lie inside one class: whole groups are exchanged
    within classes (:func:`wsca_jax.stats.permutation_indices`), so that a group-level attribute
    moves as a block; groups that span classes fall back to rows (:func:`nested_groups`)."""
    if groups is not None and nested_groups(y, groups):
        from .stats import permutation_indices
        return np.asarray(a)[permutation_indices(rng, len(a), n, groups, strata=y)]
    out = np.repeat(a[None], n, axis=0)
    classes = [np.flatnonzero(y == c) for c in np.unique(y)]
    for i in range(n):
        for idx in classes:
            out[i, idx] = a[rng.permutation(idx)]
    return out


def nested_groups(y: np.ndarray, groups: np.ndarray | None) -> bool:
    """Whether every group of ``groups (N,)`` lies inside one class of ``y (N,)``."""
    if groups is None:
        return False
    pairs = np.unique(np.stack([np.unique(groups, return_inverse=True)[1].ravel(),
                                np.unique(y, return_inverse=True)[1].ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1]


def varies_within_classes(y: np.ndarray, a: np.ndarray) -> bool:
    """Whether some class of ``y`` holds two levels of ``a`` (-1 missing): else nothing within a
    class can show the attribute's effect apart from the class's."""
    keep = np.asarray(a) >= 0
    return any(len(np.unique(np.asarray(a)[keep][np.asarray(y)[keep] == c])) >= 2 for c in np.unique(np.asarray(y)[keep]))


def _shift_many(score: np.ndarray, y: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The within-class shift of ``score (N,)`` between the levels of each row of ``a (P, N)``: for
    every pair of levels, the difference of their mean scores within each class of ``y (N,)``,
    averaged over the classes with weights ``n_j n_k / (n_j + n_k)`` (inverse variance; a class
    lacking either level weighs 0), largest |.| over the pairs, in SDs of the score. ``(P,)``."""
    a = np.atleast_2d(a)
    P, n = a.shape
    yc = np.unique(y, return_inverse=True)[1]
    C, K = int(yc.max()) + 1, int(a.max()) + 1
    cells = (yc * K + a + (np.arange(P) * C * K)[:, None]).ravel()
    score = np.asarray(score, np.float64)
    sums = np.bincount(cells, np.tile(score, P), minlength=P * C * K).reshape(P, C, K)
    counts = np.bincount(cells, minlength=P * C * K).reshape(P, C, K).astype(np.float64)
    mean = sums / np.maximum(counts, 1)
    best = np.zeros(P)
    for j in range(K):
        for k in range(j + 1, K):
            w = counts[..., j] * counts[..., k] / np.maximum(counts[..., j] + counts[..., k], 1)   # (P, C)
            tot = w.sum(1)
            d = np.where(tot > 0, (w * (mean[..., j] - mean[..., k])).sum(1) / np.where(tot > 0, tot, 1), 0.0)
            best = np.maximum(best, np.abs(d))
    sd = score.std()
    return best / sd if sd > 0 else np.full(P, np.nan)


def _within_class_test(stat_many, score, y, a, permutations: int, seed: int, groups=None) -> dict:
    """A statistic of the decision score on the attribute's levels within classes (``stat_many``:
    :func:`_eta_many` or :func:`_shift_many`; the largest over score columns), with the attribute
    permuted within classes as its null (the same draws for every statistic and seed; whole
    ``groups`` where given, :func:`within_class_permutations`)."""
    keep = np.asarray(a) >= 0
    s = np.atleast_2d(np.asarray(score, np.float64).T).T[keep]
    y, a = np.asarray(y)[keep], np.asarray(a)[keep]
    g = None if groups is None else np.asarray(groups)[keep]
    perms = within_class_permutations(np.random.default_rng(seed), y, a, permutations, g)
    obs = max(float(stat_many(col, y, a)[0]) for col in s.T)
    null = np.max([stat_many(col, y, perms) for col in s.T], axis=0) if permutations else np.empty(0)
    p, mcse = permutation_p(obs, null)
    return {"estimate": obs, "null_q95": float(np.quantile(null, 0.95)) if permutations else None,
            "p_value": p, "p_mcse": mcse}


def within_class_eta(score: np.ndarray, y: np.ndarray, a: np.ndarray, permutations: int = 200,
                     seed: int = 0, groups: np.ndarray | None = None) -> dict:
    """How much the decision follows the attribute beyond the label.

    The correlation ratio of ``score`` (``(N,)``, or ``(N, S)``: the largest over the columns) on the
    attribute's levels ``a (N,)`` (ints, -1 missing: left out) within each class of ``y (N,)``: 0 =
    the score does not move with the attribute once the class is known, 1 = within a class it is a
    function of it. Chance is not 0, so the attribute is permuted within classes: ``{"estimate",
    "null_q95", "p_value", "p_mcse"}`` (p-value ``(1 + #null >= observed) / (1 + permutations)``)."""
    return _within_class_test(_eta_many, score, y, a, permutations, seed, groups)


def within_class_shift(score: np.ndarray, y: np.ndarray, a: np.ndarray, permutations: int = 200,
                       seed: int = 0, groups: np.ndarray | None = None) -> dict:
    """How far the decision moves between the attribute's levels once the class is known, in SDs of
    the score: the observational counterpart of the intervention effect (mean |delta score| / SD
    when the attribute is switched), a class-stratified difference of mean scores
    (:func:`_shift_many`). Unlike eta and the erasure effect it does not shrink when one level is
    rare within the classes (a confounded design). Same arguments, null and keys as
    :func:`within_class_eta`."""
    return _within_class_test(_shift_many, score, y, a, permutations, seed, groups)


# ------------------------------------------------------------------------------- whitening

class Whitener(NamedTuple):
    """``x -> (x - mean) @ forward`` whitens (``(D, r)``: r the rank); ``@ back`` ``(r, D)`` returns."""

    mean: np.ndarray
    forward: np.ndarray
    back: np.ndarray


def whiten(x: np.ndarray, weights: np.ndarray | None = None) -> Whitener:
    """The symmetric whitening of ``x (N, D)`` on its non-null space (eigenvalues above
    ``EIGEN_FLOOR`` of the largest): ``forward = V L^-1/2``, ``back = L^1/2 V^T``. ``weights (N,)``
    optional row weights."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    mean = w @ x / w.sum()
    xc = x - mean
    cov = (xc * w[:, None]).T @ xc / w.sum()
    ev, V = np.linalg.eigh(cov)
    keep = ev > EIGEN_FLOOR * max(ev.max(), 1e-300)
    ev, V = ev[keep], V[:, keep]
    return Whitener(mean, V / np.sqrt(ev), (V * np.sqrt(ev)).T)


def whitened(x: np.ndarray) -> np.ndarray:
    """``x (N, D)`` whitened (:func:`whiten`) on all its rows: ``(N, r)``, the coordinates every
    attribute probe of this module is fitted in (where the L2 penalty does not depend on the
    embedding's coordinates)."""
    wh = whiten(x)
    return (np.asarray(x, np.float64) - wh.mean) @ wh.forward


def class_masks(labels: np.ndarray) -> np.ndarray:
    """``(T, K)``: classes ``0 .. max`` of each task of ``labels (T, N)`` (as :func:`fit_probes`)."""
    labels = np.atleast_2d(labels)
    mask = np.zeros((len(labels), max(2, int(labels.max()) + 1)), bool)
    for t, lab in enumerate(labels):
        mask[t, : int(lab.max()) + 1] = True
    return mask


def _probe_scores(xw: np.ndarray, coef: np.ndarray, intercept: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Scores ``[(..., N, S_t)]`` per task of probes ``coef (..., T, K, r)``, ``intercept (..., T, K)``
    on ``xw (N, r)`` (each task's own classes, ``mask (T, K)``)."""
    out = []
    for t in range(mask.shape[0]):
        b = intercept[..., t, :][..., mask[t]]
        z = np.einsum("nd,...kd->...nk", xw, coef[..., t, :, :][..., mask[t], :]) + b[..., None, :]
        out.append(_scores_of(z) if z.ndim == 2 else np.stack([_scores_of(r) for r in z]))
    return out


def whitened_probe_scores(x: np.ndarray, labels: np.ndarray, C: float = 1.0) -> list[np.ndarray] | np.ndarray:
    """Attribute probes' scores (:func:`decision_scores` of their heads), fitted together on the
    whitened embeddings (:func:`whitened`), certified to a relative gap of 1e-12 so that ``x`` and
    ``x A`` give the same scores to rounding. ``labels (N,)`` -> ``(N, S)``; ``(T, N)`` -> a list."""
    from .probes import ProbeConfig, fit_probes
    labels = np.asarray(labels)
    many = labels.ndim == 2
    labels = np.atleast_2d(labels)
    xw, mask = whitened(x), class_masks(labels)
    fit = fit_probes(xw, labels, mask, config=ProbeConfig(C=C, gap_tol=1e-12, newton_steps=50))
    out = _probe_scores(xw, np.asarray(fit["coef"], np.float64), np.asarray(fit["intercept"], np.float64), mask)
    return out if many else out[0]


def score_correlation(head_scores: np.ndarray, probe_scores: np.ndarray, y: np.ndarray | None = None) -> float:
    """The largest |correlation| over rows between a head's score columns ``(N, S)`` and a probe's
    ``(N, K')``: the cosine of ``Sigma^1/2 w`` and ``Sigma^1/2 b``. With ``y (N,)``, both are centred
    within its classes first (the within-class covariance ``Sigma_W``)."""
    h = np.atleast_2d(np.asarray(head_scores, np.float64).T).T
    p = np.atleast_2d(np.asarray(probe_scores, np.float64).T).T
    if y is not None:
        h, p = h.copy(), p.copy()
        for c in np.unique(y):
            m = y == c
            h[m] -= h[m].mean(0)
            p[m] -= p[m].mean(0)
    h, p = h - h.mean(0), p - p.mean(0)
    nh, np_ = np.linalg.norm(h, axis=0), np.linalg.norm(p, axis=0)
    ok_h, ok_p = nh > 0, np_ > 0
    if not ok_h.any() or not ok_p.any():
        return float("nan")
    c = (h[:, ok_h] / nh[ok_h]).T @ (p[:, ok_p] / np_[ok_p])
    return float(np.abs(c).max())


# ------------------------------------------------------------------------------- erasure

def _onehot(a: np.ndarray) -> np.ndarray:
    """Labels ``(N,)`` (-1 missing) -> ``(N, K)`` one-hot (zero rows where missing)."""
    k = int(a.max()) + 1
    return (a[:, None] == np.arange(k)).astype(np.float64)


def _centred(v: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """``v (N, ...)`` minus its mean, or minus its mean within each class of ``y (N,)``."""
    v = np.asarray(v, np.float64)
    if y is None:
        return v - v.mean(0)
    out = v.copy()
    for c in np.unique(y):
        out[y == c] -= v[y == c].mean(0)
    return out


class Eraser(NamedTuple):
    """A fitted LEACE eraser: the whitening (of the total, or of the pooled within-class
    covariance), the erased whitened directions ``u (r, m)`` (orthonormal), the means it was fitted
    on (``(1, D)`` overall, or ``(C, D)`` per class) and the rows' classes ``y (N,)`` (None: overall)."""

    whitener: Whitener
    u: np.ndarray
    means: np.ndarray
    y: np.ndarray | None


def fit_eraser(x: np.ndarray, a: np.ndarray, y: np.ndarray | None = None) -> Eraser:
    """LEACE (Belrose et al., 2023), fitted on the rows with a label: ``W`` whitens ``x (N, D)``, ``u``
    spans the column space of ``W Cov(x, onehot(a))``. With ``y (N,)`` the class-conditional variant:
    every covariance pooled within the classes of ``y``, so that only what the attribute adds once
    the class is known is erased (in a confounded design the attribute's total covariance includes
    the class's). Equal to the reference implementation (EleutherAI's ``LeaceFitter`` without
    shrinkage or trace constraint) to 1e-14 (checked in review)."""
    a = np.asarray(a)
    keep = a >= 0
    xk = np.asarray(x, np.float64)[keep]
    if y is None:
        yc, means = np.zeros(int(keep.sum()), int), xk.mean(0, keepdims=True)
    else:
        yc = np.asarray(y)[keep]
        means = np.stack([xk[yc == c].mean(0) if (yc == c).any() else np.zeros(xk.shape[1])
                          for c in range(int(np.max(y)) + 1)])
    xc = xk - means[yc]
    wh = whiten(xc)
    z = _centred(_onehot(a[keep]), None if y is None else yc)
    cross = wh.forward.T @ ((xc - wh.mean).T @ z) / keep.sum()                 # W Sigma_xz (r, K)
    u, sv, _ = np.linalg.svd(cross, full_matrices=False)
    return Eraser(wh, u[:, sv > 1e-9], means, None if y is None else np.asarray(y))   # 1e-9: rounding (unit variance)


def _fitted_centred(x: np.ndarray, er: Eraser) -> np.ndarray:
    """``x`` minus the means the eraser was fitted on (each row's class mean for the class-conditional
    one), then minus the whitening's own centre (zero up to rounding)."""
    m = er.means[0] if er.y is None else er.means[np.asarray(er.y)]
    return np.asarray(x, np.float64) - m - er.whitener.mean


def erase(x: np.ndarray, er: Eraser, u: np.ndarray | None = None) -> np.ndarray:
    """``x - (x - m) W u u^T W^+`` (``u``: the eraser's directions, or others), ``m`` the fitted
    overall mean or each row's fitted class mean (the class-conditional eraser)."""
    u = er.u if u is None else u
    return np.asarray(x, np.float64) - ((_fitted_centred(x, er) @ er.whitener.forward) @ u) @ (u.T @ er.whitener.back)


def leace(x: np.ndarray, a: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The LEACE-erased ``x (N, D)`` (:func:`fit_eraser`: after it no linear function of ``x`` has any
    covariance with the attribute -- within the classes of ``y`` when given) and the rank erased."""
    er = fit_eraser(x, a, y)
    return erase(x, er), er.u.shape[1]


class Effect(NamedTuple):
    """How the decision moved: mean |delta score| / SD(score) (largest over score columns), the
    share of rows whose predicted class changed (None without the head's bias: the decision
    threshold is unknown), and the primary AUROC after minus before (None for a primary that is
    not binary)."""

    delta_sd: float
    flip_rate: float | None
    auroc_change: float | None


def delta_sd(s0: np.ndarray, s1: np.ndarray) -> float:
    """Mean |s1 - s0| / SD(s0) of ``(N, S)`` decision scores, the largest over score columns."""
    sd = s0.std(0)
    return float(np.max(np.abs(s1 - s0).mean(0) / np.where(sd > 0, sd, np.inf)))


def decision_effect(head: np.ndarray, bias, x: np.ndarray, x_new: np.ndarray, y: np.ndarray) -> Effect:
    """:class:`Effect` of replacing ``x`` by ``x_new`` (both ``(N, D)``) on the head's decision."""
    logits0, logits1 = _logits(head, x, bias), _logits(head, x_new, bias)
    s0, s1 = _scores_of(logits0), _scores_of(logits1)
    delta = delta_sd(s0, s1)
    pred = (lambda z: (z[:, 0] > 0).astype(int)) if logits0.shape[1] == 1 else (lambda z: z.argmax(1))
    flip = None if bias is None else float(np.mean(pred(logits0) != pred(logits1)))
    auc = None
    if len(np.unique(y)) == 2 and s0.shape[1] == 1:
        from sklearn.metrics import roc_auc_score
        auc = float(roc_auc_score(y, s1[:, 0]) - roc_auc_score(y, s0[:, 0]))
    return Effect(delta, flip, auc)


def score_rows(head: np.ndarray) -> np.ndarray:
    """``M (S, D)`` with :func:`decision_scores` ``= x M^T`` + a constant (the same map on the head's rows)."""
    return _scores_of(np.atleast_2d(np.asarray(head, np.float64)).T).T


def random_erasure_null(x: np.ndarray, head, y, er: Eraser, draws: int, seed: int = 0) -> np.ndarray:
    """``(draws,)`` mean |delta score| / SD of erasing as many random whitened directions as ``er``
    erases: the effect an erasure of that size has by itself. The directions are ``orth(T^T G)``,
    ``T`` the whitened rows and ``G`` Gaussian ``(N, m)``: Haar distributed, and turning with the data
    under a change of coordinates (the same seed gives the same null). Vectorised: the score moves by
    ``-(t q)(q^T W^+ M^T)`` (:func:`score_rows`). Valid but conservative where the attribute is
    strongly encoded (the erased direction is then closer to orthogonal to an unused head than a
    random one is)."""
    rng = np.random.default_rng(seed)
    M = score_rows(head)
    sd = (np.asarray(x, np.float64) @ M.T).std(0)                              # (S,)
    t = _fitted_centred(x, er) @ er.whitener.forward                           # (N, r)
    g = er.whitener.back @ M.T                                                 # (r, S)
    m = max(er.u.shape[1], 1)
    out = np.empty(draws)
    for s0 in range(0, draws, 50):                                             # 50 draws at a time
        b = min(50, draws - s0)
        q = np.linalg.qr(np.einsum("nr,bnm->brm", t, rng.standard_normal((b, t.shape[0], m))))[0]
        delta = np.einsum("nr,brm,bms->bns", t, q, np.einsum("brm,rs->bms", q, g))
        out[s0:s0 + b] = np.max(np.abs(delta).mean(1) / np.where(sd > 0, sd, np.inf), axis=1)
    return out


def erasure_effect(x: np.ndarray, head, bias, y: np.ndarray, a: np.ndarray, draws: int = 200,
                   seed: int = 0, within: bool = False) -> dict:
    """LEACE-erase the attribute ``a (N,)`` from ``x (N, D)`` (``within``: the class-conditional
    eraser, classes ``y``) and measure the head's decision (:class:`Effect`), against ``draws`` random
    erasures of the same rank: ``{"estimate" (mean |delta score| / SD), "flip_rate",
    "auroc_change", "rank", "null_q95", "p_value", "p_mcse"}``."""
    er = fit_eraser(x, a, y if within else None)
    if er.u.shape[1] == 0:                    # nothing to erase (the attribute never varies within a class)
        return {"estimate": 0.0, "flip_rate": None, "auroc_change": None, "rank": 0, "null_q95": None,
                "p_value": None, "p_mcse": None, "note": "nothing to erase: not applicable"}
    eff = decision_effect(head, bias, x, erase(x, er), y)
    null = random_erasure_null(x, head, y, er, draws, seed) if draws else np.empty(0)
    p = (1 + np.sum(null >= eff.delta_sd - 1e-12)) / (draws + 1) if draws else None
    return {"estimate": eff.delta_sd, "flip_rate": eff.flip_rate, "auroc_change": eff.auroc_change,
            "rank": int(er.u.shape[1]), "null_q95": float(np.quantile(null, 0.95)) if draws else None,
            "p_value": None if p is None else float(p),
            "p_mcse": None if p is None else float(np.sqrt(p * (1 - p) / (draws + 1)))}


# ------------------------------------------------------------------------------- resampling

def erasure_estimate(x: np.ndarray, head, bias, y: np.ndarray, a: np.ndarray, within: bool = False) -> float:
    """The point estimate of :func:`erasure_effect` alone (mean |delta score| / SD; 0 where the
    attribute has nothing to erase)."""
    er = fit_eraser(x, a, y if within else None)
    if er.u.shape[1] == 0:
        return 0.0
    return decision_effect(head, None, x, erase(x, er), y).delta_sd


def permutation_p(observed: float, null: np.ndarray) -> tuple[float | None, float | None]:
    """``(1 + #null >= observed) / (1 + P)`` and its Monte Carlo SE (None, None without draws)."""
    null = np.asarray(null, np.float64)
    if len(null) == 0 or not np.isfinite(observed):
        return None, None
    p = (1 + np.sum(null >= observed - 1e-12)) / (len(null) + 1)
    return float(p), float(np.sqrt(p * (1 - p) / (len(null) + 1)))
