"""Use measured by intervention: how a trained network's primary decision moves when a stamped
artefact is put on every clean image, against a control perturbation of the same kind and size
that the network never saw with the label (issue 28's ground truth; ``experiments/use_zoo.py``
and the demo's planted signature)."""

from __future__ import annotations

import numpy as np

from ..training.data.shortcuts import stamp_artefact

STAMP_SEED = 1234      # the artefact's pattern in every induced design (experiment.condition_dataset)
CONTROL_SEED = 999     # the control texture's pattern (kind "noise")


def control_images(images: np.ndarray, kind: str, inset: int = 0) -> np.ndarray:
    """``(N, H, W, C)`` uint8: the control perturbation of every image -- the same kind and size,
    not seen with the label: the band at the bottom rows, the gain curve reversed, the stamp in the
    bottom-left corner (stamped upside down), another texture, the blur vertical (stamped on the
    transposed image). ``inset``: the band and the stamp moved that many rows up from the bottom.

    Training augmentation flips horizontally and rolls by up to 2 pixels with wrap-around, so at
    ``inset`` 0 the top 2 rows of a band or stamp are seen, with the label, in the bottom 2 rows:
    the controls of ``experiments/use_zoo.py`` (recorded at inset 0) are partly seen there; the
    demo uses ``inset`` 3, out of the wrap-around's reach."""
    every = np.ones(len(images), bool)
    if kind == "noise":
        return stamp_artefact(images, every, kind, seed=CONTROL_SEED)
    if kind == "blur":
        return stamp_artefact(images.transpose(0, 2, 1, 3), every, kind, seed=STAMP_SEED).transpose(0, 2, 1, 3)
    up = np.roll(images, inset, axis=1)                  # the bottom rows of ``up`` are rows H-inset.. moved down
    return np.roll(stamp_artefact(up[:, ::-1], every, kind, seed=STAMP_SEED)[:, ::-1], -inset, axis=1)


def intervention(run_dir: str, clean: np.ndarray, y: np.ndarray, kind: str, inset: int = 0) -> dict:
    """How the primary decision of the run in ``run_dir`` (its ``best`` checkpoint) moves when the
    artefact, and apart from it the control, is put on every clean image ``(N, H, W, C)``:
    ``{"artefact": {effect, flip_rate, auroc_clean, auroc_toggled}, "control": {...}}``; ``effect``
    = mean |delta decision score| / SD of the clean scores, the score ``logit_1 - logit_0``,
    ``y (N,)`` the binary primary labels; ``inset``: the control's (:func:`control_images`)."""
    from sklearn.metrics import roc_auc_score

    from ..training.models import split_logits
    from ..training.train import load_run, predict_batches
    model, params, record = load_run(run_dir, "best")
    classes = [len(t["classes"]) for t in record["tasks"]]

    def score(images):
        logits = split_logits(predict_batches(model, params, images)["logits"], classes)[0]
        return np.asarray(logits[:, 1] - logits[:, 0], np.float64)
    s0 = score(clean)
    out = {}
    for name, images in (("artefact", stamp_artefact(clean, np.ones(len(clean), bool), kind, seed=STAMP_SEED)),
                         ("control", control_images(clean, kind, inset))):
        s1 = score(images)
        out[name] = {"effect": float(np.mean(np.abs(s1 - s0)) / max(s0.std(), 1e-12)),
                     "flip_rate": float(np.mean((s1 > 0) != (s0 > 0))),
                     "auroc_clean": float(roc_auc_score(y, s0)), "auroc_toggled": float(roc_auc_score(y, s1))}
    return out


__all__ = ["STAMP_SEED", "CONTROL_SEED", "control_images", "intervention"]
