"""The settings of one integrated feature analysis (:class:`IfaConfig`): one default, documentation line
and constraint per field. ``wsca ifa``'s settings flags are generated from these fields, and
``ifa.json``'s ``settings`` block is ``IfaConfig.to_dict()``.

Three settings keep the text form of their flag and are read into values when the config is made:
``fractions`` (``"0.05,0.1,1"`` -> a tuple of floats), ``region`` (``"y0:y1,x0:x1"`` -> four ints, by
:func:`parse_region`) and ``target`` (``"3"`` -> the class index 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Config, Constraint, at_least, boolean, integers, is_integer, names, one_of, optional, setting
from ..errors import WscaInputError

METHODS = ("cam", "gradcam", "gradxact")
TARGETS = ("predicted", "true")


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


def _fractions() -> Constraint:
    return Constraint(lambda v: not isinstance(v, str) and len(v) > 0
                      and all(not isinstance(f, bool) and np.isfinite(f) and 0 < f <= 1 for f in v),
                      "comma-separated numbers in (0, 1]")


def _target() -> Constraint:
    return Constraint(lambda v: v in TARGETS if isinstance(v, str) else is_integer(v) and v >= 0,
                      "predicted, true or a class index")


def _region() -> Constraint:
    return Constraint(lambda v: v is None or (len(v) == 4 and all(is_integer(p) for p in v)),
                      "None or y0:y1,x0:x1 in image pixels")


@dataclass(frozen=True)
class IfaConfig(Config):
    """Every setting of :func:`~wsca_jax.ifa.analyze_ifa` (``wsca ifa``).

    Change any field by its name; the text forms of the flags are accepted too::

        config = IfaConfig().replace(fractions="0.25,0.5,1", region="0:8,0:64", target="true")
    """

    layer: str = setting("last", "'last' (the maps before pooling), or a submodule: a name used once (conv1b) or its "
                         "path (backbone/stage1a/Conv_0)",
                         Constraint(lambda v: isinstance(v, str) and bool(v.strip()), "'last' or a submodule's name or path"))
    method: str = setting("cam", "map: cam (class activation map), gradcam or gradxact (gradient x activation)",
                          one_of(*METHODS))
    target: str | int = setting("predicted", "the class whose map is analysed: predicted, true, or a class index",
                                _target())
    fractions: tuple[float, ...] = setting((0.05, 0.1, 0.15, 0.25, 0.5, 1.0), "channel fractions for the "
                                           "decomposition", _fractions(), type=str, metavar="F,...")
    random_masks: int = setting(20, "random channel masks per fraction (at most 10,000: each mask is one pass of the "
                                 "head over every image's maps; 10,000 resolves a p-value of 1e-4)", integers(1, 10_000))
    tasks: tuple[str, ...] | None = setting(None, "metadata columns to locate (default: every other column with 2-20 "
                                            "classes)", optional(names()), type="names")
    region: tuple[int, int, int, int] | None = setting(None, "y0:y1,x0:x1 image pixels: map mass inside it per class "
                                                       "(a known confounder)", _region(), type=str,
                                                       metavar="Y0:Y1,X0:X1")
    all_samples: bool = setting(False, "profiles over all samples (default: the correctly classified ones)", boolean())
    mapping: str = setting("linear", "common-scale mapping", one_of("linear", "tanh"))
    seed: int = setting(0, "seeds the random channel masks and the confounder channels' random sets", at_least(0))
    batch_size: int = setting(256, "images per batch of maps and gradients", at_least(1), cli=False)

    def __post_init__(self):
        object.__setattr__(self, "fractions", _read_fractions(self.fractions))
        if isinstance(self.region, str):
            object.__setattr__(self, "region", parse_region(self.region))
        if (isinstance(self.target, str) and self.target.lstrip("-").isdigit()) or isinstance(self.target, np.integer):
            object.__setattr__(self, "target", int(self.target))
        super().__post_init__()

    @property
    def target_class(self):
        """``analyze_ifa``'s target: None (the predicted class), ``"true"`` (the label) or a class index."""
        return None if self.target == "predicted" else self.target


def _read_fractions(v):
    """``"0.05,0.1"`` -> ``(0.05, 0.1)``; other values as given (text that is not numbers too: the
    constraint names it)."""
    if isinstance(v, np.ndarray):
        return tuple(v.tolist())
    if not isinstance(v, str):
        return v
    try:
        return tuple(float(f) for f in v.split(","))
    except ValueError:
        return v


# deprecated flat keywords of analyze_ifa / ifa_for_run / ifa_for_maps -> (field, conversion)
RENAMED = {  # the 0.8 keywords: old name -> (field, conversion)
    "n_random": ("random_masks", None), "correct_only": ("all_samples", lambda v: not v),
            "target": ("target", lambda v: "predicted" if v is None else v)}


__all__ = ["IfaConfig", "METHODS", "TARGETS", "parse_region", "RENAMED"]
