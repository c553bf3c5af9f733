"""The calibration generator: a population WSC that does not depend on the draw, zero when the head
does not use the attribute, and the attenuation of finite-sample estimates the study must correct."""

import warnings

import numpy as np

import wsca_jax as wsca
from wsca_jax.validation.simulate import CalibrationDesign, calibration_data


def _max_wsc(design, n, seed):
    z, meta, head = calibration_data(design, n, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = wsca.analyze(z, meta, "label", head, progress=False, config=wsca.AnalysisConfig().replace(tasks=["attr"], categorical=["attr"], bootstrap=0, permutations=0, seed=0))
    return r.tasks["attr"].summary["max_abs_wsc"], r.tasks["attr"].probe["auroc"]


def test_population_value_is_a_property_of_the_design():
    used = CalibrationDesign(d=48, use=0.8)
    a, auroc = _max_wsc(used, 40_000, 1)
    b, _ = _max_wsc(used, 40_000, 2)
    assert abs(a - b) < 0.02 and a > 0.3 and auroc > 0.7
    unused = CalibrationDesign(d=48, use=0.0)
    assert _max_wsc(unused, 40_000, 1)[0] < 0.05


def test_finite_samples_are_attenuated():
    """The bias the corrected estimate must remove: small draws sit below the population value."""
    design = CalibrationDesign(d=48, use=0.8, shift=0.8)
    pop, _ = _max_wsc(design, 40_000, 1)
    small = [_max_wsc(design, 400, s)[0] for s in range(10, 16)]
    assert np.mean(small) < pop - 0.05
