"""Mitigation: mid-range-logit mining (MID), last-layer retraining (ERM, JTT, MID, MID-oracle, DFR).

``config`` holds every setting (:class:`MidConfig`), ``mining`` finds the band and its clusters,
``retrain`` fits and scores last layers, ``app`` is the pipeline behind ``wsca mid`` (:func:`analyze_mid`).
"""

from .app import analyze_mid, split_arrays  # noqa: F401
from .config import MidConfig, MiningConfig, RetrainingConfig, VerificationConfig  # noqa: F401
from .mining import METHODS, retrain_methods  # noqa: F401
