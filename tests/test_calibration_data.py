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


# ---- the latent covariance taken from real embeddings (here: synthetic arrays; the cache is not needed)


def _spd(d=10, seed=0):
    """A covariance with a falling spectrum and eigenvectors off the coordinate axes."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (q * np.geomspace(5.0, 0.05, d)) @ q.T


def test_covariance_design_draws_the_given_covariance():
    from wsca_jax.validation.simulate import calibration_covariance
    sigma = _spd()
    design = CalibrationDesign(covariance=sigma, shift=0.0)
    expected = sigma * (design.sd_first ** 2 / np.linalg.eigvalsh(sigma).max())   # largest eigenvalue sd_first^2
    assert np.allclose(calibration_covariance(design), expected, atol=1e-10)
    z, meta, head = calibration_data(design, 200_000, seed=1)
    assert z.shape == (200_000, 10) and head.shape == (10,)
    assert np.abs(np.cov(z.T) - expected).max() < 0.03 * expected.max()


def test_covariance_design_plants_the_head_as_the_diagonal_design_does():
    from wsca_jax.validation.simulate import _attribute_means, calibration_covariance, calibration_head
    sigma = _spd(seed=2)
    unused = CalibrationDesign(covariance=sigma, shift=1.0, use=0.0)
    means, head = _attribute_means(unused), calibration_head(unused)
    # orthogonal to the attribute's mean directions and to its discriminant directions Sigma^-1 m
    assert np.abs(means @ head).max() < 1e-10
    assert np.abs(np.linalg.solve(calibration_covariance(unused), means.T).T @ head).max() < 1e-8
    # shift in SDs of each attribute axis: the class means' Mahalanobis distance from the centre is shift
    maha = np.sqrt(np.einsum("cd,cd->c", means, np.linalg.solve(calibration_covariance(unused), means.T).T))
    assert np.allclose(maha, 1.0)
    used = unused._replace(use=0.8)
    h = calibration_head(used)
    assert np.isclose(h @ means[0] / np.linalg.norm(h) / np.linalg.norm(means[0]), 0.8 / np.sqrt(1 + 0.8 ** 2))
    # the draw's class means are the design's
    z, meta, _ = calibration_data(unused, 100_000, seed=3)
    for c in range(unused.n_classes):
        assert np.abs(z[meta.attr.values == c].mean(0) - means[c]).max() < 0.05


def test_real_covariance_is_the_within_cell_covariance_of_the_validation_rows(tmp_path):
    from wsca_jax.validation.simulate import real_covariance
    rng = np.random.default_rng(4)
    n, d = 400, 8                                         # the design needs d >= 5 + C - 1
    label, artefact = rng.integers(0, 2, n), rng.choice(["none", "stamped"], n)
    x = rng.normal(size=(n, d)) + 3.0 * label[:, None] + 5.0 * (artefact == "stamped")[:, None] * np.arange(d)
    np.savez(tmp_path / "net.npz", embeddings=x.astype(np.float32), label=label, artefact=artefact)
    v = slice(0, n // 2)                                   # the first half: validation rows
    resid = x[v].astype(np.float32).astype(float)
    for y in (0, 1):
        for a in ("none", "stamped"):
            cell = (label[v] == y) & (artefact[v] == a)
            resid[cell] -= resid[cell].mean(0)
    assert np.allclose(real_covariance(tmp_path / "net.npz"), np.cov(resid.T), atol=1e-10)
    z, _, _ = calibration_data(CalibrationDesign(covariance=str(tmp_path / "net.npz")), 50, seed=0)
    assert z.shape == (50, d)


def test_missing_real_embeddings_fail_with_one_line(tmp_path):
    import pytest

    missing = str(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError) as e:
        calibration_data(CalibrationDesign(covariance=missing), 10, seed=0)
    assert missing in str(e.value) and "\n" not in str(e.value)
    # the study stops before computing anything
    import importlib.util
    import pathlib
    import sys
    exp = pathlib.Path(__file__).parents[1] / "experiments"
    sys.path.insert(0, str(exp))
    spec = importlib.util.spec_from_file_location("calibration", exp / "calibration.py")
    cal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cal)
    cal.SETTINGS["real_cov"] = {**cal.SETTINGS["real_cov"],
                                "design": {**cal.SETTINGS["real_cov"]["design"], "covariance": missing}}
    with pytest.raises(SystemExit) as e:
        cal.main(["--settings", "real_cov", "--out", str(tmp_path)])
    assert missing in str(e.value.code) and "\n" not in str(e.value.code)
    assert not (tmp_path / "calibration_population.json").exists()
