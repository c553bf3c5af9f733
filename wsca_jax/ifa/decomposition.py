"""Where the decision and the metadata live among the channels and in the image: the model with only a
fraction of the channels (feature decomposition), the channels carrying a metadata attribute and the
decision's share on them (the link to WSC), and the map mass inside an image region."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import require
from .cams import Split, feature_maps
from .profiles import principal_channels


def channel_masks(scores: np.ndarray, fractions, n_random: int = 20, seed: int = 0) -> dict:
    """Channel masks keeping a top fraction: ``{"top": (F, K), "random": (R, F, K)}`` (bool).

    ``scores (K,)``: the ranking (e.g. mean importance, or |class - overall|); ties keep the lower
    channel id. Every mask keeps ``max(1, round(fraction K))`` channels.
    """
    fr = np.asarray(fractions, float)
    require(fr.size > 0 and np.all((fr > 0) & (fr <= 1)), f"--fractions must lie in (0, 1], found {fr.tolist()}")
    K = len(scores)
    sizes = np.maximum(1, np.round(fr * K).astype(int))
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    top = np.zeros((len(fr), K), bool)
    for i, m in enumerate(sizes):
        top[i, order[:m]] = True
    rng = np.random.default_rng(seed)
    rnd = np.zeros((n_random, len(fr), K), bool)
    for r in range(n_random):
        perm = rng.permutation(K)
        for i, m in enumerate(sizes):
            rnd[r, i, perm[:m]] = True
    return {"top": top, "random": rnd, "sizes": sizes}


@partial(jax.jit, static_argnames=("split",))
def masked_logits(split: Split, maps, images, masks):
    """Logits with only the masked channels' maps kept: ``masks (M, K)`` -> ``(M, B, C)``."""
    return jax.vmap(lambda m: split.head(maps * m.astype(maps.dtype), images))(masks)


def cam_similarity(maps: np.ndarray, weights: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean cosine between each sample's masked and full map (channel weights ``(N, K)``, maps
    ``(N, h, w, K)``, masks ``(M, K)``) -> ``(M,)``."""
    full = np.einsum("nhwk,nk->nhw", maps, weights).reshape(len(maps), -1)
    out = []
    for m in masks:
        part = np.einsum("nhwk,nk->nhw", maps, weights * m).reshape(len(maps), -1)
        den = np.linalg.norm(full, axis=1) * np.linalg.norm(part, axis=1)
        out.append(float(np.mean(np.where(den > 0, (full * part).sum(1) / np.where(den > 0, den, 1), 0.0))))
    return np.array(out)


def decompose(split: Split, images: np.ndarray, labels: np.ndarray, weights: np.ndarray, scores: dict,
              fractions=(0.05, 0.1, 0.15, 0.25, 0.5, 1.0), n_random: int = 20, seed: int = 0,
              batch_size: int = 256, tolerance: float = 0.01) -> dict:
    """The model with only a fraction of the channels: AUROC, accuracy and map similarity.

    Args:
      labels: ``(N,)`` true classes of the analysed head.  weights: ``(N, K)`` channel weights of
        the maps (from :func:`ifa_arrays`).  scores: ``{mode: (K,) ranking}`` (e.g. ``importance``:
        mean importance; ``difference``: max over classes of |class - overall|).
      tolerance: a fraction is sufficient when its AUROC is within this of the full model's.
    Returns:
      ``rows``: ``[{mode, fraction, channels, auroc, accuracy, cam_similarity}]`` (``random``: the
      median over ``n_random`` masks, with ``auroc_low`` / ``auroc_high`` the band's min and max);
      ``full``: the full model's metrics; ``smallest_sufficient_fraction``: ``{mode: fraction or None}``.
    """
    from ..metrics import classification_metrics

    fr = [float(f) for f in fractions]
    modes = {m: channel_masks(s, fr, n_random, seed) for m, s in scores.items()}
    first = next(iter(modes.values()))
    K = len(next(iter(scores.values())))
    masks = np.concatenate([np.ones((1, K), bool)] + [v["top"] for v in modes.values()]
                           + [first["random"].reshape(-1, K)])
    maps = feature_maps(split, images, batch_size)
    n, bs = len(images), min(batch_size, len(images))
    logits = []
    for s in range(0, n, bs):
        idx = np.arange(s, min(s + bs, n))
        pad = np.concatenate([idx, np.full(bs - len(idx), idx[-1])])
        logits.append(np.asarray(masked_logits(split, jnp.asarray(maps[pad]), jnp.asarray(images[pad]),
                                               jnp.asarray(masks)))[:, : len(idx)])
    logits = np.concatenate(logits, axis=1)                                  # (M, N, C)
    sims = cam_similarity(maps, weights, masks)
    y = np.asarray(labels, int)

    def metrics(i):
        p = np.asarray(jax.nn.softmax(jnp.asarray(logits[i]), axis=-1), float)
        m = classification_metrics(y, p)
        return {"auroc": m["auroc"], "accuracy": m["accuracy"], "cam_similarity": float(sims[i])}
    full = metrics(0)
    rows, i = [], 1
    for mode, v in modes.items():
        for f, size in zip(fr, v["sizes"]):
            rows.append({"mode": mode, "fraction": f, "channels": int(size), **metrics(i)})
            i += 1
    rnd = [[metrics(i + r * len(fr) + j) for j in range(len(fr))] for r in range(n_random)]
    for j, (f, size) in enumerate(zip(fr, first["sizes"])):
        au = np.array([rnd[r][j]["auroc"] if rnd[r][j]["auroc"] is not None else np.nan for r in range(n_random)])
        rows.append({"mode": "random", "fraction": f, "channels": int(size),
                     "auroc": float(np.nanmedian(au)) if np.isfinite(au).any() else None,
                     "auroc_low": float(np.nanmin(au)) if np.isfinite(au).any() else None,
                     "auroc_high": float(np.nanmax(au)) if np.isfinite(au).any() else None,
                     "accuracy": float(np.median([rnd[r][j]["accuracy"] for r in range(n_random)])),
                     "cam_similarity": float(np.median([rnd[r][j]["cam_similarity"] for r in range(n_random)]))})
    smallest = {}
    for mode in list(modes) + ["random"]:
        ok = [r["fraction"] for r in rows if r["mode"] == mode and r["auroc"] is not None and full["auroc"] is not None
              and r["auroc"] >= full["auroc"] - tolerance]
        smallest[mode] = min(ok) if ok else None
    return {"rows": rows, "full": full, "smallest_sufficient_fraction": smallest, "tolerance": tolerance}


def confounder_channels(embedding: np.ndarray, attribute: np.ndarray, importance: np.ndarray, level: float = 0.5,
                        n_random: int = 999, seed: int = 0, C: float = 1.0) -> dict:
    """Which channels carry a metadata attribute, and how much of the decision rests on them.

    A logistic probe for the attribute on the standardised pooled embedding (the same K channels as
    the maps); each channel's contribution is the mean over samples of ``sum_c |V_ck z_nk|``; the
    attribute's channels are the smallest set carrying ``level`` of that mass. Their decision share
    is the part of the primary head's positive importance mass (``clip(mean_n I[n, k], 0)``) on them,
    tested against ``n_random`` random channel sets of the same size (one-sided permutation p).

    Args:
      embedding: ``(N, K)`` pooled maps; attribute: ``(N,)`` labels (-1 or NaN: missing);
      importance: ``(N, K)`` primary channel importance.
    Returns: ``channels``, ``contribution (K,)``, ``decision_share``, ``random_share_mean``, ``p_value``,
      ``probe_accuracy`` (training accuracy: how separable the attribute is on these channels).
    """
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(embedding, float)
    a = np.asarray(attribute)
    ok = np.array([x is not None and not (isinstance(x, float) and np.isnan(x)) and x != -1 for x in a])
    require(ok.sum() >= 4 and len(np.unique(a[ok])) >= 2, "confounder probe: fewer than two classes with data")
    sd = z[ok].std(0)
    zs = (z[ok] - z[ok].mean(0)) / np.where(sd > 0, sd, 1.0)
    probe = LogisticRegression(C=C, max_iter=2000).fit(zs, a[ok].astype(str))
    V = probe.coef_                                                            # (C or 1, K)
    contribution = np.abs(V[:, None, :] * zs[None]).sum(0).mean(0)            # (K,)
    channels = principal_channels(contribution, (level,))[float(level)]
    v = np.clip(np.asarray(importance, float).mean(0), 0, None)
    total = v.sum()
    share = float(v[channels].sum() / total) if total > 0 else 0.0
    rng = np.random.default_rng(seed)
    K, m = len(v), len(channels)
    null = np.array([v[rng.choice(K, m, replace=False)].sum() for _ in range(n_random)]) / (total if total > 0 else 1)
    return {"channels": [int(c) for c in channels], "contribution": contribution, "decision_share": share,
            "random_share_mean": float(null.mean()), "p_value": float((1 + np.sum(null >= share - 1e-12)) / (n_random + 1)),
            "probe_accuracy": float(probe.score(zs, a[ok].astype(str)))}


def check_region(region: tuple, H: int, W: int) -> None:
    """``(y0, y1, x0, x1)`` lies inside an ``H x W`` image."""
    y0, y1, x0, x1 = region
    require(0 <= y0 < y1 <= H and 0 <= x0 < x1 <= W,
            f"--region {y0}:{y1},{x0}:{x1}: outside the {H}x{W} image (expected 0 <= y0 < y1 <= {H}, 0 <= x0 < x1 <= {W})")


def region_mass(scaled: np.ndarray, region: tuple, target: np.ndarray) -> dict:
    """Share of the positive map mass inside ``region = (y0, y1, x0, x1)`` (image pixels), per class.

    Args:
      scaled: ``(N, H, W)`` maps on the common scale, at image size.  target: ``(N,)``.
    """
    y0, y1, x0, x1 = region
    H, W = scaled.shape[1:]
    check_region(region, H, W)
    pos = np.clip(scaled, 0, None)
    inside = pos[:, y0:y1, x0:x1].sum((1, 2))
    total = pos.sum((1, 2))
    frac = np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)
    area = (y1 - y0) * (x1 - x0) / (H * W)
    return {int(c): {"mass_in_region": float(np.nanmean(frac[target == c])), "area_share": float(area),
                     "n": int((target == c).sum())} for c in np.unique(target)}
