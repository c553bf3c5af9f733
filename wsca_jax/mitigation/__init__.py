"""Mitigation: mid-range-logit mining (MID), last-layer retraining (ERM,
class-balanced, JTT, MID, random band, MID-oracle, DFR).

``config`` holds every setting (:class:`MidConfig`), ``mining`` finds the band and its clusters,
``retrain`` fits and scores last layers, ``app`` is the pipeline behind ``wsca mid`` (:func:`analyze_mid`).
"""

from ..lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    **dict.fromkeys(["analyze_mid", "split_arrays"], "app"),
    **dict.fromkeys(["METHODS", "MidConfig", "MiningConfig", "RetrainingConfig", "VerificationConfig"], "config"),
    "retrain_methods": "mining",
})
