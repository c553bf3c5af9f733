"""The settings of one training (:class:`TrainConfig`): one default, documentation line and
constraint per field. ``wsca train``'s settings flags are generated from these fields, and
``run.json``'s ``config`` is ``TrainConfig.to_dict()`` (the fields in this order).

A new training option is one field here plus its use; the CLI flag, its help and default, the check
of its value and its record in ``run.json`` follow.
"""

from __future__ import annotations

from dataclasses import dataclass


from ..config import Config, at_least, boolean, integer_list, interval, numbers, one_of, optional
from ..config import setting as _setting     # the name `setting` is also a field of TrainConfig

BACKBONES = ("small_cnn", "resnet18", "sononet")
SETTINGS = ("fine_tuned", "multi_task", "pooling")


def int_list(text: str) -> tuple[int, ...]:
    """``"16,32,256"`` -> ``(16, 32, 256)`` (the ``--widths`` value)."""
    return tuple(int(s) for s in text.split(",") if s.strip())


def float_list(text: str) -> tuple[float, ...]:
    """``"1,0.3"`` -> ``(1.0, 0.3)`` (the ``--task-weights`` value)."""
    return tuple(float(s) for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class TrainConfig(Config):
    """Every setting of :func:`wsca_jax.training.train.fit` (stored in ``run.json``)::

        cfg = TrainConfig(setting="multi_task", epochs=8).replace(seed=1)
    """

    setting: str = _setting("fine_tuned", "fine_tuned: heads for the primary task only; multi_task: a head for the "
                            "primary and every --tasks column, trained jointly; pooling: a 1x1-convolution evidence "
                            "map whose mean is the primary logit", one_of(*SETTINGS))
    backbone: str = _setting("small_cnn", "network under the heads", one_of(*BACKBONES))
    widths: tuple[int, ...] | None = _setting(None, "comma-separated channel widths of the backbone's stages "
                                              "(sononet: one base width; default: the backbone's own)",
                                              optional(integer_list(1)), type=int_list, metavar="W,...")
    epochs: int = _setting(10, "training epochs", at_least(1))
    batch_size: int = _setting(64, "images per training step", at_least(1))
    learning_rate: float = _setting(2e-3, "peak learning rate of AdamW (linear warmup, then cosine decay)",
                                    interval(0, None, open_lo=True))
    weight_decay: float = _setting(1e-4, "AdamW's weight decay", interval(0, None))
    warmup_epochs: float = _setting(1.0, "epochs of linear learning-rate warmup", interval(0, None))
    augment: bool = _setting(True, "random flips and shifts (up to 2 pixels) of the training batches "
                             "(--no-augment: off)", boolean(), flag="no-augment")
    class_weights: str = _setting("balanced", "cross-entropy weight of each head's classes: balanced (inversely to "
                                  "the head's training class counts) or none", one_of("none", "balanced"))
    task_weights: tuple[float, ...] | None = _setting(None, "comma-separated loss weight of every head, primary "
                                                      "first (default: equal)", optional(numbers(0)), type=float_list,
                                                      metavar="W,...")
    seed: int = _setting(0, "initialisation, batch order and augmentation", at_least(0))

    def __post_init__(self):
        if isinstance(self.class_weights, bool):       # run.json before 0.10 stored true / false
            object.__setattr__(self, "class_weights", "balanced" if self.class_weights else "none")
        super().__post_init__()


__all__ = ["BACKBONES", "SETTINGS", "TrainConfig"]
