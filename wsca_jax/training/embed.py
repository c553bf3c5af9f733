"""Embeddings, heads and labels of a trained run, ready for ``wsca analyze``."""

from __future__ import annotations

import numpy as np

from ..errors import require
from ..io import atomic_write
from .models import head_biases, head_weights, split_logits
from .train import load_run, predict_batches

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def embed(run_dir: str, dataset, split: str = "train", which: str = "best", feature_maps: bool = False,
          batch_size: int = 256, loaded=None) -> dict:
    """Batched jit extraction for one split.

    ``loaded``: ``load_run(run_dir, which)`` already done (the CLI verifies the checkpoint first).

    Returns:
      dict for ``np.savez``: ``embeddings (N, D)``, ``head_<task> (C_t, D)``, ``bias_<task> (C_t,)`` and
      ``logits_<task> (N, C_t)`` (the model's own outputs, for last-layer retraining) for every trained head,
      one ``(N,)`` array per metadata column, ``group``, and ``feature_maps (N, h, w, F)`` when asked.
    """
    require(split in SPLIT_CODES, f"--split must be train, val or test, found {split!r}")
    model, params, record = load_run(run_dir, which) if loaded is None else loaded
    require(list(dataset.images.shape[1:]) == record["image_shape"],
            f"--run {run_dir}: trained on images {record['image_shape']}, dataset has {list(dataset.images.shape[1:])}")
    sub = dataset.select_split(split)
    require(len(sub) > 0, f"--split {split}: the dataset has no {split} rows")
    keys = ("embedding", "logits", "feature_maps") if feature_maps else ("embedding", "logits")
    out = predict_batches(model, params, sub.images, batch_size, keys)
    emb = out["embedding"].astype(np.float32)
    head_classes = [len(t["classes"]) for t in record["tasks"]]
    result = {"embeddings": emb}
    setting = record["config"]["setting"]
    for spec, w, b, lg in zip(record["tasks"], head_weights(params, head_classes, setting, emb.shape[1]),
                              head_biases(params, head_classes, setting), split_logits(out["logits"], head_classes)):
        result[f"head_{spec['name']}"] = np.asarray(w, np.float32)
        result[f"bias_{spec['name']}"] = np.asarray(b, np.float32).reshape(-1)
        result[f"logits_{spec['name']}"] = np.asarray(lg, np.float32)
    for k, v in sub.columns.items():
        v = np.asarray(v)
        key = f"meta_{k}" if k in ("embeddings", "group", "feature_maps") or k.startswith(("head_", "bias_", "logits_")) else k
        if v.dtype == object:                      # text with missing values: "" marks missing
            v = np.array(["" if x is None or (isinstance(x, float) and np.isnan(x)) else str(x) for x in v])
        result[key] = v
    result["group"] = sub.group
    if feature_maps:
        result["feature_maps"] = out["feature_maps"].astype(np.float32)
    return result


def save_embeddings(path: str, arrays: dict) -> None:
    """``np.savez`` through a temporary name (no half-written file)."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
