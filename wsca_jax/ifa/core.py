"""Integrated feature analysis (IFA; Li et al., arXiv 2407.01142; METHOD.md section 2): where in a
CNN's last feature maps the decision lives, for whole datasets at once.

A model is split at a layer into ``features(images) -> maps (B, h, w, K)`` and
``head(maps) -> logits (B, C)`` (:func:`split_at`). For a batch, one ``jax.vjp`` of the head gives
the gradient of every example's target logit with respect to its own maps (rows do not mix, so one
cotangent of one-hot rows yields all per-example gradients), and from the gradient ``g`` and the
activations ``A``:

* ``cam``: channel weights ``w_k = sum_xy g_k(x, y)`` -- for global average pooling + a linear head
  exactly the head's weights ``W_ck`` -- and the map ``sum_k w_k A_k(x, y)``;
* ``gradcam``: ``alpha_k = mean_xy g_k`` and ``ReLU(sum_k alpha_k A_k)`` (Selvaraju et al. 2017);
* ``gradxact``: IFA's "full" map ``sum_k g_k(x, y) A_k(x, y)``.

Per-sample channel importance ``I[n, k]`` is the spatial sum of channel k's weighted activations,
so ``sum_k I[n, k]`` is the summed (unscaled) map. For ``cam`` on a GAP + linear head,
``sum_xy CAM / (h w) + bias = logit`` exactly: the consistency check is a test oracle.

Everything here is a pure function of arrays; :func:`ifa_arrays` loops over batches of a fixed size
(one compilation) and returns NumPy arrays.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import WscaInputError, require  # noqa: F401 (re-exported for callers)

METHODS = ("cam", "gradcam", "gradxact")


class Split(NamedTuple):
    """A model cut at a layer: ``features(images) -> (B, h, w, K)``, ``head(maps) -> (B, C)``."""

    features: Callable
    head: Callable


def split_at(model: nn.Module, params, layer: str = "backbone", columns: tuple | None = None) -> Split:
    """Cut a Flax model at the submodule named ``layer`` (its ``__call__`` output are the maps): a
    name that occurs once at any depth (``conv1b``) or a path (``backbone/stage1a/Conv_0``).

    ``columns``: ``(start, stop)`` of the logits that form the analysed head (one task of a
    multi-head model; default all).

    ``features`` runs the model up to that submodule (``capture_intermediates``); ``head`` runs the
    model with the submodule's output replaced by the given maps (``nn.intercept_methods``), so the
    rest of the network -- pooling, heads -- is the model's own code. The model's output must be an
    array of logits or a dict with ``logits``.
    """
    variables = {"params": params}

    def _logits(out):
        lg = out["logits"] if isinstance(out, dict) else out
        return lg if columns is None else lg[:, columns[0]:columns[1]]

    def matches(module) -> bool:
        path = "/".join(module.scope.path)
        return path == layer or path.endswith("/" + layer)

    def features(images):
        _, state = model.apply(variables, images, capture_intermediates=lambda m, name: name == "__call__"
                               and matches(m), mutable=["intermediates"])
        found = _captured(state.get("intermediates", {}))
        require(found, f"--layer {layer!r}: no submodule of that name in the model")
        require(len(found) == 1, f"--layer {layer!r} names {len(found)} submodules "
                f"({', '.join(p for p, _ in found[:4])}{', ...' if len(found) > 4 else ''}): give its path")
        return found[0][1][0]

    def head(maps, images):
        def intercept(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and matches(context.module):
                return maps
            return next_fun(*args, **kwargs)
        with nn.intercept_methods(intercept):
            return _logits(model.apply(variables, images))

    return Split(features, head)


def _captured(tree, prefix: str = "") -> list:
    """``[(path, outputs)]`` of every captured ``__call__`` in an intermediates tree."""
    out = []
    for k, v in tree.items():
        if k == "__call__":
            out.append((prefix, v))
        elif hasattr(v, "items"):
            out += _captured(v, f"{prefix}/{k}" if prefix else k)
    return out


def maps_split(head, bias=None) -> Split:
    """A :class:`Split` from stored feature maps and a GAP + linear head, without the network.

    The "images" are the maps themselves ``(N, h, w, K)`` (e.g. ``feature_maps`` of a ``wsca embed
    --feature-maps`` file): ``features`` is the identity and ``head`` the global average followed by
    ``maps_mean @ head.T + bias``. CAM, importance, the profiles, the common scale, consistency, the
    decomposition and the confounder channels are then exact (a model's GAP + linear head is all they
    need); gradients of earlier layers, and maps at image resolution (``region``), need the network.

    Args:
      head: ``(C, K)`` (``head_<task>`` of ``wsca embed``).  bias: ``(C,)`` (``bias_<task>``) or None (0).
    """
    w = jnp.asarray(head, jnp.float32)
    require(w.ndim == 2, f"head must be (C, K), found shape {tuple(w.shape)}")
    b = jnp.zeros(w.shape[0], jnp.float32) if bias is None else jnp.asarray(bias, jnp.float32).reshape(-1)
    require(b.shape == (w.shape[0],), f"bias must have {w.shape[0]} values, found {b.shape[0]}")
    return Split(features=_identity, head=partial(_gap_linear, w=w, b=b))


def _identity(x):
    return x


def _gap_linear(maps, images, w, b):
    return jnp.mean(maps, axis=(1, 2)) @ w.T + b


def _target_rows(logits, target):
    """One-hot cotangent ``(B, C)`` for per-example target classes ``(B,)``."""
    return jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)


@partial(jax.jit, static_argnames=("split", "method"))
def ifa_batch(split: Split, images, target, method: str = "cam") -> dict:
    """IFA quantities of one batch.

    Args:
      images: ``(B, H, W, C)``.  target: ``(B,)`` int class per example, or ``-1`` for the predicted class.
      method: ``cam`` | ``gradcam`` | ``gradxact``.
    Returns:
      ``logits (B, C)``, ``target (B,)`` (resolved), ``cam (B, h, w)`` (unscaled), ``importance
      (B, K)``, ``weights (B, K)`` (the channel weights of ``cam`` / ``gradcam``; for ``gradxact``
      the spatial mean gradient), ``cam_max (B,)``, ``cam_min (B,)``.
    """
    maps = split.features(images)
    logits, pull = jax.vjp(lambda m: split.head(m, images), maps)
    tgt = jnp.where(target >= 0, target, jnp.argmax(logits, axis=-1))
    (g,) = pull(_target_rows(logits, tgt))                                  # (B, h, w, K)
    # channel weights (B, K): summed gradient (= W_ck for GAP + linear) for cam, its mean otherwise
    weights = jnp.sum(g, axis=(1, 2)) if method == "cam" else jnp.mean(g, axis=(1, 2))
    weighted = g * maps if method == "gradxact" else weights[:, None, None, :] * maps
    cam = jnp.sum(weighted, axis=-1)                                         # (B, h, w)
    importance = jnp.sum(weighted, axis=(1, 2))                              # (B, K)
    if method == "gradcam":
        cam = jax.nn.relu(cam)
    return {"logits": logits, "target": tgt, "cam": cam, "importance": importance, "weights": weights,
            "cam_max": jnp.max(cam, axis=(1, 2)), "cam_min": jnp.min(cam, axis=(1, 2))}


def ifa_arrays(split: Split, images: np.ndarray, target=None, method: str = "cam", batch_size: int = 256,
               keep_cams: bool = True) -> dict:
    """:func:`ifa_batch` over a dataset in batches of one size (the last padded): NumPy arrays.

    Args:
      target: ``None`` (predicted class), an int (that class for every example) or ``(N,)`` ints.
    """
    require(method in METHODS, f"--method must be one of {', '.join(METHODS)}, found {method!r}")
    n = len(images)
    require(n > 0, "IFA: no images")
    tg = np.full(n, -1, np.int32) if target is None else np.broadcast_to(np.asarray(target, np.int32), (n,))
    bs = min(batch_size, n)
    out: dict = {}
    for s in range(0, n, bs):
        idx = np.arange(s, min(s + bs, n))
        pad = np.concatenate([idx, np.full(bs - len(idx), idx[-1])])
        r = ifa_batch(split, jnp.asarray(images[pad]), jnp.asarray(tg[pad]), method)
        for k, v in r.items():
            if k == "cam" and not keep_cams:
                continue
            out.setdefault(k, []).append(np.asarray(v)[: len(idx)])
    return {k: np.concatenate(v) for k, v in out.items()}


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


# -------------------------------------------------------------------------------------------------
# distribution analysis (numpy: small arrays, N x K)


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


# -------------------------------------------------------------------------------------------------
# feature decomposition


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


def feature_maps(split: Split, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The layer's maps for a dataset, ``(N, h, w, K)``, in batches of one size."""
    fn = jax.jit(split.features)
    n, bs = len(images), min(batch_size, len(images))
    out = []
    for s in range(0, n, bs):
        idx = np.arange(s, min(s + bs, n))
        pad = np.concatenate([idx, np.full(bs - len(idx), idx[-1])])
        out.append(np.asarray(fn(jnp.asarray(images[pad])))[: len(idx)])
    return np.concatenate(out)


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


# -------------------------------------------------------------------------------------------------
# where the confounder lives: the link to WSC


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


# -------------------------------------------------------------------------------------------------
# localisation and the whole analysis


def resize_maps(cams: np.ndarray, shape: tuple) -> np.ndarray:
    """Maps ``(N, h, w)`` resized to the image ``(H, W)`` (bilinear, ``jax.image.resize``)."""
    c = jnp.asarray(cams, jnp.float32)
    return np.asarray(jax.image.resize(c, (c.shape[0], *shape), method="bilinear"))


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


def analyze_ifa(split: Split, images: np.ndarray, labels: np.ndarray, metadata: dict | None = None, *,
                method: str = "cam", target=None, fractions=(0.05, 0.1, 0.15, 0.25, 0.5, 1.0), n_random: int = 20,
                correct_only: bool = True, region: tuple | None = None, mapping: str = "linear", seed: int = 0,
                batch_size: int = 256, class_names=None) -> tuple[dict, dict]:
    """Integrated feature analysis of one head on one dataset.

    Args:
      split: the model cut at its layer (:func:`split_at`, ``columns`` = the analysed head).
      images: ``(N, H, W, C)``; labels: ``(N,)`` true classes of that head.
      metadata: ``{column: (N,)}`` attributes to locate (``confounders``).
      target: None (predicted class), an int, or ``"true"`` (the label).
    Returns:
      ``(record, arrays)``: the JSON-ready record (``ifa.json``) and arrays for ``ifa_importance.npz``
      (``importance (N, K)``, ``target``, ``logits``, ``cam_max``, ``cam_min``, ``weights``, ``cams``
      (unscaled maps) and ``cams_common`` (on the common scale)).
    """
    y = np.asarray(labels, int)
    tg = y if isinstance(target, str) and target == "true" else target
    r = ifa_arrays(split, images, tg, method, batch_size)
    C = r["logits"].shape[1]
    if target is not None and not isinstance(target, str):
        require(0 <= int(target) < C, f"--target {target}: the head has classes 0..{C - 1}")
    correct = r["logits"].argmax(1) == y
    keep = correct if correct_only and correct.any() else np.ones(len(y), bool)
    kept = np.flatnonzero(keep)                      # outlier rows are reported as rows of ``images``
    prof = importance_profile(r["importance"], r["target"], keep)
    low, high = common_scale(r["cam_max"], r["cam_min"])
    common = apply_scale(r["cam"], low, high, mapping)
    cons = {"unscaled": consistency(r["cam"], r["logits"], r["target"]),
            "common_scale": consistency(common, r["logits"], r["target"]),
            "per_image_scale": consistency(per_image_scale(r["cam"]), r["logits"], r["target"])}
    diff = np.max(np.abs(np.stack(list(prof["diff"].values()))), axis=0)
    dec = decompose(split, images, y, r["weights"], {"importance": prof["overall"], "difference": diff},
                    fractions, n_random, seed, batch_size)
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    rec = {"method": method, "n": int(len(y)), "n_profile": int(keep.sum()), "channels": int(r["importance"].shape[1]),
           "map_shape": list(r["cam"].shape[1:]), "classes": names,
           "target": "predicted" if target is None else str(target),
           "accuracy": float(correct.mean()),
           "profile": {"overall": prof["overall"].tolist(),
                       "by_class": {names[c]: v.tolist() for c, v in prof["by_class"].items()},
                       "difference": {names[c]: v.tolist() for c, v in prof["diff"].items()}, "n": {names[c]: k for c, k in prof["n"].items()}},
           "principal_channels": {str(k): v for k, v in principal_channels(prof["overall"]).items()},
           "redundancy": redundancy(r["importance"][keep]),
           "outliers": [{"row": int(kept[i]), "class": names[c], "distance": d}
                        for i, c, d in outliers(r["importance"][keep], r["target"][keep])],
           "cam_percentiles": cam_percentiles(r["cam_max"], r["cam_min"]),
           "scale": {"low": low, "high": high, "mapping": mapping, "low_percentile_of_minima": 50,
                     "high_percentile_of_maxima": 90},
           "consistency": {k: {"pearson_r": {names[c]: v for c, v in d.items()}} for k, d in cons.items()},
           "decomposition": dec["rows"], "full_model": dec["full"], "tolerance": dec["tolerance"],
           "smallest_sufficient_fraction": dec["smallest_sufficient_fraction"]}
    if metadata:
        emb = feature_maps(split, images, batch_size).mean(axis=(1, 2))
        rec["confounders"] = {}
        for col, vals in metadata.items():
            c = confounder_channels(emb, vals, r["importance"], seed=seed)
            c["contribution"] = c["contribution"].tolist()
            rec["confounders"][col] = c
    if region is not None:
        scaled = apply_scale(resize_maps(r["cam"], images.shape[1:3]), low, high, mapping)
        rec["localization"] = {names[c]: v for c, v in region_mass(scaled, region, r["target"]).items()}
        rec["region"] = list(region)
    arrays = {k: r[k] for k in ("importance", "target", "logits", "cam_max", "cam_min", "weights")}
    arrays["cams_common"] = common.astype(np.float32)
    arrays["cams"] = np.asarray(r["cam"], np.float32)
    return rec, arrays


def parse_region(text: str | None) -> tuple | None:
    """``"y0:y1,x0:x1"`` -> ``(y0, y1, x0, x1)`` ints."""
    if text is None:
        return None
    try:
        ys, xs = text.split(",")
        y0, y1 = (int(v) for v in ys.split(":"))
        x0, x1 = (int(v) for v in xs.split(":"))
    except ValueError:
        raise WscaInputError(f"--region {text!r}: expected y0:y1,x0:x1 in image pixels") from None
    return y0, y1, x0, x1


def ifa_for_run(run_dir: str, dataset, split_name: str = "test", which: str = "best", layer: str = "last",
                tasks=None, **kw) -> tuple[dict, dict, np.ndarray]:
    """:func:`analyze_ifa` of a ``wsca train`` run's primary head on one split of its dataset.

    Args:
      dataset: the run's :class:`~wsca_jax.training.data.ImageDataset`.  layer: ``last`` (the backbone's
        output, the maps before pooling) or the name of a submodule of the backbone.
      tasks: metadata columns to locate (default: every other column with 2-20 classes).
    Returns: ``(record, arrays, images)``; ``arrays["rows"]`` are the split's rows analysed (those with a
      primary label), and the record's row numbers (``outliers``) index them.
    """
    import pandas as pd

    from ..tasks import encode_categorical
    from ..training.train import encode_labels, load_run

    model, params, rec = load_run(run_dir, which)
    sub = dataset.select_split(split_name)
    require(len(sub) > 0, f"--split {split_name}: the dataset has no {split_name} rows")
    primary = rec["primary"]
    classes = rec["tasks"][0]["classes"]
    y, specs = encode_labels(sub.columns, [primary])
    require(list(specs[0].classes) == list(classes),
            f"--split {split_name}: primary classes {list(specs[0].classes)} differ from the run's {list(classes)}")
    keep = y[:, 0] >= 0
    images, labels = sub.images[keep], y[keep, 0]
    meta = {}
    names = tasks if tasks is not None else [c for c in sub.columns if c != primary]
    for c in names:
        require(c in sub.columns, f"--tasks: column {c!r} not in the dataset (columns: {', '.join(sub.columns)})")
        lab, cl = encode_categorical(pd.Series(np.asarray(sub.columns[c])[keep]))
        if 2 <= len(cl) <= 20:
            meta[c] = lab
    split = split_at(model, params, "backbone" if layer == "last" else layer, columns=(0, len(classes)))
    out, arrays = analyze_ifa(split, images, labels, meta, class_names=[str(c) for c in classes], **kw)
    arrays["rows"] = np.flatnonzero(keep)                # rows of the split analysed (primary label present)
    out.update(layer=layer, run=run_dir, checkpoint=which, split=split_name, primary=primary,
               n_split=int(len(sub)))
    return out, arrays, images



def ifa_for_maps(path: str, primary: str | None = None, tasks=None, method: str = "cam", region=None,
                 layer: str = "last", **kw) -> tuple[dict, dict, None]:
    """:func:`analyze_ifa` of stored feature maps (a ``wsca embed --feature-maps`` file), no network.

    CAM only: the file holds the last maps and the GAP + linear head (``head_<primary>``,
    ``bias_<primary>``), not the network, so there are no gradients (Grad-CAM, gradient x activation),
    no earlier layer and no image-resolution maps for ``region``. When the file has
    ``logits_<primary>``, the maps and head must reproduce them (a check that they belong together).

    Args:
      primary: the analysed head (default: the file's only ``head_`` array).
      tasks: metadata columns to locate (default: every other column with 2-20 classes).
    Returns: ``(record, arrays, None)`` like :func:`ifa_for_run` (``None``: no images).
    """
    import pandas as pd

    from ..io import load_embeddings
    from ..tasks import encode_categorical

    require(method == "cam", f"--method {method}: stored feature maps support CAM only (gradients need the "
                             "network: use --run)")
    require(layer == "last", f"--layer {layer}: stored feature maps are the last layer's (other layers need --run)")
    require(region is None, "--region: stored feature maps are not at image resolution (use --run)")
    ef = load_embeddings(path)
    with np.load(path, allow_pickle=False) as data:
        require("feature_maps" in data.files, f"--embeddings {path}: no feature_maps array (write it with "
                                              "wsca embed --feature-maps)")
        maps = np.asarray(data["feature_maps"], np.float32)
        if primary is None:
            require(len(ef.heads) == 1, f"--embeddings {path}: --primary needed (heads: {', '.join(ef.heads) or 'none'})")
            primary = next(iter(ef.heads))
        require(primary in ef.heads, f"--primary {primary!r}: no head_{primary} in {path} "
                                     f"(heads: {', '.join(ef.heads) or 'none'})")
        bias = np.asarray(data[f"bias_{primary}"]) if f"bias_{primary}" in data.files else None
    head = np.atleast_2d(np.asarray(ef.heads[primary], np.float32))
    require(maps.ndim == 4 and len(maps) == len(ef.embeddings),
            f"--embeddings {path}: feature_maps must be (N, h, w, K) with N = {len(ef.embeddings)}, found {maps.shape}")
    require(head.shape[1] == maps.shape[-1], f"--embeddings {path}: head_{primary} has {head.shape[1]} columns but the "
            f"maps {maps.shape[-1]} channels (a --setting pooling run's head is on its evidence map: use --run)")
    require(primary in ef.columns, f"--embeddings {path}: no column {primary!r} with the labels")
    lab, names = encode_categorical(pd.Series(np.asarray(ef.columns[primary], dtype=object)))
    require(len(names) == head.shape[0], f"--embeddings {path}: column {primary!r} has {len(names)} classes, "
                                         f"head_{primary} {head.shape[0]} rows")
    keep = lab >= 0
    split = maps_split(head, bias)
    logits = (ef.logits or {}).get(primary)
    if logits is not None:
        mine = np.asarray(split.head(jnp.asarray(maps[:256]), None))
        ref = np.asarray(logits, np.float32)[:256].reshape(len(mine), -1)
        require(np.allclose(mine, ref, atol=1e-3 * max(1.0, np.abs(ref).max())),
                f"--embeddings {path}: feature_maps with head_{primary} do not reproduce logits_{primary}")
    meta = {}
    for c in (tasks if tasks is not None else [c for c in ef.columns if c not in (primary, "group")]):
        require(c in ef.columns, f"--tasks: column {c!r} not in {path} (columns: {', '.join(ef.columns)})")
        ml, cl = encode_categorical(pd.Series(np.asarray(ef.columns[c], dtype=object)[keep]))
        if 2 <= len(cl) <= 20:
            meta[c] = ml
    out, arrays = analyze_ifa(split, maps[keep], lab[keep], meta, class_names=[str(c) for c in names],
                              method="cam", **kw)
    arrays["rows"] = np.flatnonzero(keep)
    out.update(layer="last", embeddings=path, primary=primary, n_split=int(len(maps)), stored_maps=True)
    return out, arrays, None
