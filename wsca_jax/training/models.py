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

from .config import BACKBONES, SETTINGS  # noqa: F401  (the names a TrainConfig accepts)


class SmallCNN(nn.Module):
    """A strided stem then Conv-ReLU blocks with max-pooling between them; fast on CPU
    (about 20 MFLOP per 64x64 image with the default widths). Returns the last feature maps
    ``(B, H/2^len(widths), W/2^len(widths), widths[-1])``."""

    widths: Sequence[int] = (16, 32, 64)

    @nn.compact
    def __call__(self, x):
        # GroupNorm after every convolution: without normalisation this plain ReLU stack collapsed to
        # a constant output (dead units) within a few epochs at learning rate 2e-3 (issue 4).
        def conv(h, w, name, strides=(1, 1)):
            h = nn.Conv(w, (3, 3), strides=strides, use_bias=False, name=name)(h)
            return nn.relu(nn.GroupNorm(num_groups=min(8, w), name=f"{name}_norm")(h))

        x = conv(x, self.widths[0], "stem", (2, 2))
        for i, w in enumerate(self.widths):
            x = conv(x, w, f"conv{i}a")
            x = conv(x, w, f"conv{i}b")
            if i < len(self.widths) - 1:
                x = nn.max_pool(x, (2, 2), (2, 2))
        return x


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, GroupNorm, identity or 1x1 projection shortcut)."""

    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        groups = min(8, self.width)
        y = nn.Conv(self.width, (3, 3), strides=(self.stride, self.stride), use_bias=False)(x)
        y = nn.relu(nn.GroupNorm(num_groups=groups)(y))
        y = nn.Conv(self.width, (3, 3), use_bias=False)(y)
        y = nn.GroupNorm(num_groups=groups)(y)
        if x.shape[-1] != self.width or self.stride != 1:
            x = nn.Conv(self.width, (1, 1), strides=(self.stride, self.stride), use_bias=False)(x)
            x = nn.GroupNorm(num_groups=groups)(x)
        return nn.relu(x + y)


class ResNet18(nn.Module):
    """ResNet-18-style: a 3x3 stride-2 stem, four stages of two basic blocks (stride 2 from the
    second stage). GroupNorm instead of BatchNorm keeps the training step a pure function of the
    parameters (no running statistics). ``widths`` scales the stages (the original: 64..512)."""

    widths: Sequence[int] = (32, 64, 128, 256)

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(self.widths[0], (3, 3), strides=(2, 2), use_bias=False)(x)))
        for i, w in enumerate(self.widths):
            x = BasicBlock(w, 1 if i == 0 else 2, name=f"stage{i}a")(x)
            x = BasicBlock(w, 1, name=f"stage{i}b")(x)
        return x


class SonoNet(nn.Module):
    """SonoNet-style (Baumgartner et al. 2017): VGG-like blocks of 2, 2, 3, 3, 3 convolutions
    (widths w, 2w, 4w, 8w, 8w, max-pooling between blocks), then the adaptation layer of 1x1
    convolutions. ``width`` = 16 / 32 / 64 gives SonoNet-16 / 32 / 64 (GroupNorm for BatchNorm)."""

    width: int = 16
    n_blocks: int = 5

    @nn.compact
    def __call__(self, x):
        w = self.width
        plan = [(2, w), (2, 2 * w), (3, 4 * w), (3, 8 * w), (3, 8 * w)][: self.n_blocks]
        for b, (n, c) in enumerate(plan):
            for j in range(n):
                x = nn.Conv(c, (3, 3), use_bias=False, name=f"block{b}_{j}")(x)
                x = nn.relu(nn.GroupNorm(num_groups=min(8, c))(x))
            if b < len(plan) - 1:
                x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.GroupNorm(num_groups=8)(nn.Conv(4 * w, (1, 1), use_bias=False, name="adapt1")(x)))
        return x


def make_backbone(name: str, widths: Sequence[int] | None = None) -> nn.Module:
    """``small_cnn`` | ``resnet18`` | ``sononet`` (``widths``: stage widths, or (w,) for SonoNet)."""
    if name == "small_cnn":
        return SmallCNN(tuple(widths) if widths else (16, 32, 64), name="backbone")
    if name == "resnet18":
        return ResNet18(tuple(widths) if widths else (32, 64, 128, 256), name="backbone")
    if name == "sononet":
        return SonoNet(int(widths[0]) if widths else 16, name="backbone")
    raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")


class WscaModel(nn.Module):
    """Backbone + heads.

    Attributes:
      head_classes: classes per head, primary first (``(2,)`` fine-tuned; all tasks multi-task).
      setting: ``fine_tuned`` | ``multi_task`` | ``pooling``.
      widths: backbone widths (None: the backbone's default).
      backbone: ``small_cnn`` | ``resnet18`` | ``sononet``.
    """

    head_classes: Sequence[int]
    setting: str = "fine_tuned"
    widths: Sequence[int] | None = None
    backbone: str = "small_cnn"

    @nn.compact
    def __call__(self, images):
        x = (images.astype(jnp.float32) - 127.5) / 64.0                          # roughly zero-centred
        maps = make_backbone(self.backbone, self.widths)(x)
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


def head_biases(params, head_classes: Sequence[int], setting: str) -> list:
    """Each head's bias ``(C_t,)`` (``pooling``: zeros; its logit is the map's average)."""
    if setting == "pooling":
        return [jnp.zeros((2,))]
    return list(split_logits(params["heads"]["bias"][None], head_classes))
