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

from .errors import WscaInputError, require  # noqa: F401 (re-exported for callers)

METHODS = ("cam", "gradcam", "gradxact")


class Split(NamedTuple):
    """A model cut at a layer: ``features(images) -> (B, h, w, K)``, ``head(maps) -> (B, C)``."""

    features: Callable
    head: Callable


def split_at(model: nn.Module, params, layer: str = "backbone", columns: tuple | None = None) -> Split:
    """Cut a Flax model at the submodule named ``layer`` (its ``__call__`` output are the maps).

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

    def features(images):
        _, state = model.apply(variables, images, capture_intermediates=lambda m, name: m.name == layer
                               and name == "__call__", mutable=["intermediates"])
        found = state.get("intermediates", {}).get(layer, {}).get("__call__")
        require(found is not None, f"--layer {layer!r}: no submodule of that name in the model")
        return found[0]

    def head(maps, images):
        def intercept(next_fun, args, kwargs, context):
            if context.module.name == layer and context.method_name == "__call__":
                return maps
            return next_fun(*args, **kwargs)
        with nn.intercept_methods(intercept):
            return _logits(model.apply(variables, images))

    return Split(features, head)


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
      (B, K)``, ``cam_max (B,)``, ``cam_min (B,)``.
    """
    maps = split.features(images)
    logits, pull = jax.vjp(lambda m: split.head(m, images), maps)
    tgt = jnp.where(target >= 0, target, jnp.argmax(logits, axis=-1))
    (g,) = pull(_target_rows(logits, tgt))                                  # (B, h, w, K)
    if method == "cam":
        w = jnp.sum(g, axis=(1, 2), keepdims=True)                          # (B, 1, 1, K) = W_ck for GAP
        weighted = w * maps
    elif method == "gradcam":
        weighted = jnp.mean(g, axis=(1, 2), keepdims=True) * maps
    else:
        weighted = g * maps
    cam = jnp.sum(weighted, axis=-1)                                         # (B, h, w)
    importance = jnp.sum(weighted, axis=(1, 2))                              # (B, K)
    if method == "gradcam":
        cam = jax.nn.relu(cam)
    return {"logits": logits, "target": tgt, "cam": cam, "importance": importance,
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
