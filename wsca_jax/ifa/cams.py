"""Class activation maps and channel importance of a model cut at a layer, batched over a dataset.

A model is split at a layer into ``features(images) -> maps (B, h, w, K)`` and
``head(maps) -> logits (B, C)`` (:func:`split_at`; :func:`maps_split` for stored maps and a GAP +
linear head). For a batch, one ``jax.vjp`` of the head gives the gradient of every example's target
logit with respect to its own maps (rows do not mix, so one cotangent of one-hot rows yields all
per-example gradients), and from the gradient ``g`` and the activations ``A``:

* ``cam``: channel weights ``w_k = sum_xy g_k(x, y)`` -- for global average pooling + a linear head
  exactly the head's weights ``W_ck`` -- and the map ``sum_k w_k A_k(x, y)``;
* ``gradcam``: ``alpha_k = mean_xy g_k`` and ``ReLU(sum_k alpha_k A_k)`` (Selvaraju et al. 2017);
* ``gradxact``: IFA's "full" map ``sum_k g_k(x, y) A_k(x, y)``.

Per-sample channel importance ``I[n, k]`` is the spatial sum of channel k's weighted activations,
so ``sum_k I[n, k]`` is the summed (unscaled) map. For ``cam`` on a GAP + linear head,
``sum_xy CAM / (h w) + bias = logit`` exactly: the consistency check is a test oracle.

:func:`ifa_arrays` and :func:`feature_maps` loop over batches of a fixed size (one compilation) and
return NumPy arrays.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import require
from .config import METHODS


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


def resize_maps(cams: np.ndarray, shape: tuple) -> np.ndarray:
    """Maps ``(N, h, w)`` resized to the image ``(H, W)`` (bilinear, ``jax.image.resize``)."""
    c = jnp.asarray(cams, jnp.float32)
    return np.asarray(jax.image.resize(c, (c.shape[0], *shape), method="bilinear"))
