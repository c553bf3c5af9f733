"""The distribution analysis of the maps and channel importances (NumPy: small arrays, N x K): the
dataset-level common scale, the maps' consistency with the logits, the importance profiles per class,
principal and redundant channels, outlying samples."""

from __future__ import annotations

import numpy as np

from ..errors import require


def common_scale(cam_max: np.ndarray, cam_min: np.ndarray, q_high: float = 90.0, q_low: float = 50.0) -> tuple:
    """Dataset-level bounds ``(low, high)``: the ``q_low`` percentile of per-sample minima and the
    ``q_high`` percentile of per-sample maxima (IFA's defaults 50 and 90)."""
    low, high = float(np.percentile(cam_min, q_low)), float(np.percentile(cam_max, q_high))
    return low, max(high, low + 1e-12)


def apply_scale(cams, low: float, high: float, mapping: str = "linear"):
    """Maps ``(..., h, w)`` onto [0, 1] with one pair of bounds: ``linear`` clips ``(c - low) /
    (high - low)``; ``tanh`` maps ``tanh`` of it (values above ``high`` compressed, not clipped)."""
    z = (np.asarray(cams, float) - low) / (high - low)
    if mapping == "linear":
        return np.clip(z, 0.0, 1.0)
    require(mapping == "tanh", f"scale mapping must be 'linear' or 'tanh', found {mapping!r}")
    return np.tanh(np.clip(z, 0.0, None))


def per_image_scale(cams):
    """Per-image min-max scaling (the reference code's default), for comparison."""
    c = np.asarray(cams, float)
    lo = c.min(axis=(-2, -1), keepdims=True)
    hi = c.max(axis=(-2, -1), keepdims=True)
    return (c - lo) / np.where(hi > lo, hi - lo, 1.0)


def consistency(cams, logits, target) -> dict:
    """Pearson r between each sample's summed map and its target logit, per target class.

    Args:
      cams: ``(N, h, w)`` maps on any scale.  logits ``(N, C)``; target ``(N,)``.
    Returns: ``{class: r}`` (None where a class has fewer than 3 samples or no spread).
    """
    s = np.asarray(cams, float).sum(axis=(-2, -1))
    lg = np.asarray(logits, float)[np.arange(len(target)), target]
    out = {}
    for c in np.unique(target):
        m = target == c
        if m.sum() < 3 or np.std(s[m]) == 0 or np.std(lg[m]) == 0:
            out[int(c)] = None
        else:
            out[int(c)] = float(np.corrcoef(s[m], lg[m])[0, 1])
    return out


def importance_profile(importance: np.ndarray, target: np.ndarray, keep: np.ndarray | None = None) -> dict:
    """Mean channel importance overall, per class, and class minus overall.

    Args:
      importance: ``(N, K)``; target: ``(N,)`` class per sample; keep: ``(N,)`` bool (e.g. correctly
        classified; default all).
    Returns: ``overall (K,)``, ``by_class {c: (K,)}``, ``diff {c: (K,)}``, ``n {c: count}``.
    """
    keep = np.ones(len(target), bool) if keep is None else np.asarray(keep, bool)
    imp, tg = np.asarray(importance, float)[keep], np.asarray(target)[keep]
    require(len(imp) > 0, "IFA: no samples left for the distribution analysis (none correctly classified?)")
    overall = imp.mean(0)
    by = {int(c): imp[tg == c].mean(0) for c in np.unique(tg)}
    return {"overall": overall, "by_class": by, "diff": {c: v - overall for c, v in by.items()},
            "n": {int(c): int((tg == c).sum()) for c in np.unique(tg)}}


def principal_channels(mean_importance: np.ndarray, levels=(0.5, 0.8, 0.95)) -> dict:
    """The smallest channel sets carrying ``levels`` of the positive importance mass.

    Returns: ``{level: [channel ids, most important first]}``.
    """
    v = np.clip(np.asarray(mean_importance, float), 0, None)
    order = np.argsort(-v, kind="stable")
    total = v.sum()
    cum = np.cumsum(v[order]) / (total if total > 0 else 1.0)
    return {float(q): order[: int(np.searchsorted(cum, q - 1e-12) + 1)].tolist() for q in levels}


def redundancy(importance: np.ndarray, zero_share: float = 0.01, corr: float = 0.95) -> dict:
    """Channels with near-zero importance (mean |I| below ``zero_share`` of the largest) and channel
    pairs whose per-sample importances correlate above ``corr`` in absolute value."""
    imp = np.asarray(importance, float)
    mag = np.abs(imp).mean(0)
    idle = np.flatnonzero(mag < zero_share * mag.max()).tolist() if mag.max() > 0 else list(range(imp.shape[1]))
    sd = imp.std(0)
    live = np.flatnonzero(sd > 0)
    pairs = []
    if len(live) > 1:
        r = np.corrcoef(imp[:, live].T)
        i, j = np.triu_indices(len(live), 1)
        hit = np.abs(r[i, j]) >= corr
        pairs = [(int(live[a]), int(live[b]), float(r[a, b])) for a, b in zip(i[hit], j[hit])]
    return {"near_zero": idle, "correlated_pairs": pairs}


def outliers(importance: np.ndarray, target: np.ndarray, top: int = 10) -> list:
    """Samples whose importance profile is far from their class's: per class, each channel is
    centred at its median and scaled by its MAD (x 1.4826); the distance is the RMS over channels.

    Returns: ``[(row, class, distance)]``, largest first, at most ``top``.
    """
    imp, tg = np.asarray(importance, float), np.asarray(target)
    dist = np.zeros(len(tg))
    for c in np.unique(tg):
        m = tg == c
        med = np.median(imp[m], 0)
        mad = 1.4826 * np.median(np.abs(imp[m] - med), 0)
        scale = np.where(mad > 0, mad, np.where(imp[m].std(0) > 0, imp[m].std(0), 1.0))
        dist[m] = np.sqrt(np.mean(((imp[m] - med) / scale) ** 2, axis=1))
    order = np.argsort(-dist, kind="stable")[:top]
    return [(int(i), int(tg[i]), float(dist[i])) for i in order]


def cam_percentiles(cam_max: np.ndarray, cam_min: np.ndarray, qs=(25, 50, 75, 90, 99)) -> dict:
    """Percentiles of the per-sample map maxima and minima."""
    return {"max": {int(q): float(np.percentile(cam_max, q)) for q in qs},
            "min": {int(q): float(np.percentile(cam_min, q)) for q in qs}}
