"""Flax backbones with classification heads whose weights WSC can read.

Every model maps images ``(B, H, W, C)`` to a dict with ``embedding (B, D)``, ``feature_maps
(B, h, w, F)`` (the last convolutional maps, for CAM analysis later) and ``logits``: one array
``(B, sum_t C_t)`` from a single batched matmul over all task heads, split by :func:`split_logits`.

Settings (METHOD.md 1.2): ``fine_tuned`` and ``multi_task`` share the architecture (heads for the
primary task only, or for every task); ``pooling`` replaces the embedding by the flattened
one-channel evidence map of a 1x1 convolution whose global average is the primary logit.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

BACKBONES = ("small_cnn",)
SETTINGS = ("fine_tuned", "multi_task", "pooling")


class SmallCNN(nn.Module):
    """A strided stem then Conv-ReLU blocks with max-pooling between them; fast on CPU
    (about 20 MFLOP per 64x64 image with the default widths). Returns the last feature maps
    ``(B, H/2^len(widths), W/2^len(widths), widths[-1])``."""

    widths: Sequence[int] = (16, 32, 64)

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(self.widths[0], (3, 3), strides=(2, 2), name="stem")(x))
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Conv(w, (3, 3), name=f"conv{i}a")(x))
            x = nn.relu(nn.Conv(w, (3, 3), name=f"conv{i}b")(x))
            if i < len(self.widths) - 1:
                x = nn.max_pool(x, (2, 2), (2, 2))
        return x


class WscaModel(nn.Module):
    """Backbone + heads.

    Attributes:
      head_classes: classes per head, primary first (``(2,)`` fine-tuned; all tasks multi-task).
      setting: ``fine_tuned`` | ``multi_task`` | ``pooling``.
      widths: backbone widths.
    """

    head_classes: Sequence[int]
    setting: str = "fine_tuned"
    widths: Sequence[int] = (16, 32, 64)

    @nn.compact
    def __call__(self, images):
        x = images.astype(jnp.float32) / 255.0
        maps = SmallCNN(self.widths, name="backbone")(x)
        if self.setting == "pooling":
            evidence = nn.Conv(1, (1, 1), name="evidence")(maps)[..., 0]        # (B, h, w)
            embedding = evidence.reshape(evidence.shape[0], -1)                   # (B, h*w)
            primary = jnp.mean(embedding, axis=1, keepdims=True)                  # GAP
            # the one-logit model as a two-class softmax head: [-z/2, z/2]
            return {"embedding": embedding, "feature_maps": maps,
                    "logits": jnp.concatenate([-primary / 2, primary / 2], axis=1)}
        embedding = jnp.mean(maps, axis=(1, 2))                                   # GAP
        logits = nn.Dense(sum(self.head_classes), name="heads")(embedding)        # all heads at once
        return {"embedding": embedding, "feature_maps": maps, "logits": logits}


def split_logits(logits, head_classes: Sequence[int]):
    """``(B, sum C_t)`` -> list of ``(B, C_t)``."""
    out, start = [], 0
    for c in head_classes:
        out.append(logits[:, start:start + c])
        start += c
    return out


def head_weights(params, head_classes: Sequence[int], setting: str, embedding_dim: int) -> list:
    """Each head's weight matrix ``(C_t, D)`` in embedding coordinates (biases dropped).

    For ``pooling`` (primary head only) the head is the all-ones direction of the flattened
    evidence map (scaled by 1/D: the GAP), as two rows ``[-w/2, +w/2]``; metadata tasks are
    probed on that map afterwards.
    """
    if setting == "pooling":
        ones = jnp.ones((embedding_dim,)) / embedding_dim
        return [jnp.stack([-ones / 2, ones / 2])]
    k = params["heads"]["kernel"]                                # (D, sum C)
    return [w.T for w in split_logits(k, head_classes)]
