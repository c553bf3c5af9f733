"""Attenuation-corrected WSC and the intervals built on it (issue 9).

Known answers: noisy copies of two directions with a planted cosine (the correction removes the
shrinkage the noise causes), and a small fixed-seed version of experiments/calibration.py (the
corrected interval covers the population value where the raw intervals miss it)."""

import warnings

import numpy as np
import pytest

import wsca_jax as wsca
from wsca_jax.validation.simulate import CalibrationDesign, calibration_data
from wsca_jax.stats import basic_interval, guarded_bca_interval, recentred_replicates
from wsca_jax.wsc import disattenuate


def _pair(k, cos, rng):
    a = np.zeros(k)
    a[0] = 1.0
    b = np.zeros(k)
    b[0], b[1] = cos, np.sqrt(1 - cos**2)
    return a, b


def test_disattenuate_recovers_a_planted_cosine():
    """b_hat = b + e with E|e|^2 = |b|^2 (reliability 0.5): the raw cosine is shrunk by about
    sqrt(0.5); replicates with the same noise level let the correction undo it."""
    rng = np.random.default_rng(0)
    k, B, cos = 50, 200, 0.6
    a, b = _pair(k, cos, rng)
    raw, corrected, rel = [], [], []
    for _ in range(60):
        sd = 1 / np.sqrt(k)
        b_hat = b + sd * rng.normal(size=k)
        b_boot = b_hat + sd * rng.normal(size=(B, k))                  # the bootstrap's noise, same level
        out = disattenuate(a[None], np.broadcast_to(a, (B, 1, k)), b_hat[None, None], b_boot[:, None, None],
                           noise="bootstrap")
        raw.append(a @ b_hat / np.linalg.norm(b_hat))
        corrected.append(out.cells[0, 0, 0])
        assert out.rel_primary[0] == pytest.approx(1.0)                # a fixed head has no noise
        rel.append(out.rel_tasks[0, 0])
    assert np.mean(rel) == pytest.approx(0.5, abs=0.05)
    assert np.mean(raw) == pytest.approx(cos * np.sqrt(0.5), abs=0.04)
    assert np.mean(corrected) == pytest.approx(cos, abs=0.04)


def test_disattenuate_with_jackknife_replicates_of_a_mean():
    """b_hat is the mean of m noisy copies of b (noise power |b|^2 in total: reliability 0.5); its
    leave-one-out means are the jackknife replicates, whose (J - 1) / J sum of squares is the exact
    unbiased noise estimate of a mean: the correction recovers the planted cosine."""
    rng = np.random.default_rng(2)
    k, m, cos = 50, 40, 0.6
    a, b = _pair(k, cos, rng)
    raw, corrected = [], []
    for _ in range(60):
        x = b + np.sqrt(m / k) * rng.normal(size=(m, k))               # mean's noise: 1/k per coordinate
        b_hat = x.mean(0)
        jack = (x.sum(0) - x) / (m - 1)                                 # (m, k) leave-one-out means
        out = disattenuate(a[None], np.broadcast_to(a, (m, 1, k)), b_hat[None, None], jack[:, None, None])
        raw.append(a @ b_hat / np.linalg.norm(b_hat))
        corrected.append(out.cells[0, 0, 0])
    assert np.mean(raw) == pytest.approx(cos * np.sqrt(0.5), abs=0.04)
    assert np.mean(corrected) == pytest.approx(cos, abs=0.04)
    with pytest.raises(ValueError, match="noise must be one of"):
        disattenuate(a[None], a[None, None], b[None, None], b[None, None, None], noise="halves")


def test_disattenuate_removes_the_cross_term_of_probes_fitted_on_the_same_rows():
    """Both sides noisy with correlated noise (e shared): the dot product is inflated by tr Cov(a, b);
    the correction subtracts it. True directions orthogonal -> corrected ~ 0, raw clearly positive."""
    rng = np.random.default_rng(1)
    k, B = 40, 300
    a, b = _pair(k, 0.0, rng)
    vals, raws = [], []
    for _ in range(40):
        e = 0.12 * rng.normal(size=k)
        eb = 0.12 * rng.normal(size=(B, k))
        a_hat, b_hat = a + e, b + e
        out = disattenuate(a_hat[None], (a_hat + eb)[:, None], b_hat[None, None], (b_hat + eb)[:, None, None],
                           noise="bootstrap")
        vals.append(out.cells[0, 0, 0])
        raws.append(a_hat @ b_hat / np.linalg.norm(a_hat) / np.linalg.norm(b_hat))
    assert np.mean(raws) > 0.2
    assert abs(np.mean(vals)) < 0.25 * np.mean(raws)                 # mostly removed (noisy: reliability ~0.6)


def test_unreliable_direction_gives_nan_not_a_number_to_trust():
    rng = np.random.default_rng(2)
    b_hat = 0.01 * rng.normal(size=20)
    b_boot = b_hat + rng.normal(size=(100, 20))                        # noise far larger than the row
    out = disattenuate(np.eye(20)[:1], np.broadcast_to(np.eye(20)[:1], (100, 1, 20)), b_hat[None, None],
                       b_boot[:, None, None])
    assert np.isnan(out.cells[0, 0, 0]) and out.rel_tasks[0, 0] < 0.1


def test_basic_and_recentred_intervals():
    tb = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    lo, hi = basic_interval(0.3, tb, confidence=0.5)
    assert (lo, hi) == pytest.approx((0.6 - 0.4, 0.6 - 0.2))
    r = recentred_replicates(0.9, tb, 2.0)
    assert r.mean() == pytest.approx(0.9) and r.std() == pytest.approx(2 * tb.std())


def test_guarded_bca_contains_the_bootstrap_median_and_is_never_degenerate():
    """Over skewed, shifted and one-sided bootstrap distributions the guarded interval contains the
    replicates' median and is at least a quarter of their SD wide, whichever branch decides."""
    rng = np.random.default_rng(4)
    for shape in ("normal", "skewed", "one_sided"):
        for shift in (-1.5, 0.0, 0.8, 2.5):
            tb = {"normal": rng.normal(0, 1, 400), "skewed": rng.lognormal(0, 0.8, 400),
                  "one_sided": np.abs(rng.normal(0, 1, 400))}[shape]
            jack = rng.normal(0, 0.05, 50) ** 3 * 50
            theta = float(np.median(tb) + shift * tb.std())
            lo, hi, why, _ = guarded_bca_interval(theta, tb, jack)
            assert lo <= np.median(tb) <= hi, (shape, shift, why)
            assert hi - lo >= 0.25 * tb.std()


def test_guard_replaces_a_bca_interval_that_excludes_the_median(monkeypatch):
    """The last guard on its own: a BCa interval wide enough and with replicates beyond both ends, but
    shifted past the median, is replaced by the percentile interval."""
    import wsca_jax.stats as st
    tb = np.random.default_rng(5).normal(0, 1, 2000)
    med = float(np.median(tb))
    monkeypatch.setattr(st, "bca_interval", lambda *a, **k: (np.asarray(med + 0.3), np.asarray(med + 2.5)))
    lo, hi, why, _ = st.guarded_bca_interval(0.0, tb, tb[:50])
    assert str(why) == "excludes_median"
    assert (lo, hi) == tuple(st.percentile_interval(tb))


def _population(design, k):
    z, meta, head = calibration_data(design, 50_000, seed=10**6)
    return _analyze(z, meta, head, k, bootstrap=0).tasks["attr"]


def _analyze(z, meta, head, k, bootstrap, seed=0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = wsca.AnalysisConfig().replace(tasks=["attr"], categorical=["attr"], bootstrap=bootstrap, permutations=0,
                                               skip_decision_use=True,
                                               pca_variance=1e-9, pca_min=k, cv_folds=2, seed=seed, **kw)
        return wsca.analyze(z, meta, "label", head, config=config)


# A miniature of experiments/calibration.py's setting 'base' (N 3,000, k 50, B 100; its records: default
# interval 0.93, basic 0.90, percentile 0.26 over 200 draws). A pilot of 200 other draws of this very
# test (seeds 1100-1299, population from 50,000 rows) gave default 0.93, basic 0.92, percentile 0.30 and
# a raw mean of 0.576 against a population value of 0.613. The thresholds below are binomial: with the
# default's coverage at 0.93, 40 draws fall under 31 hits with probability 3e-4 (a numerically
# equivalent change of the solver flips the test with probability 3e-4), while an interval covering 60% of the time
# passes with probability 0.016; the percentile interval at 0.30 exceeds 24 hits with probability 2e-5.
COVERAGE_DRAWS, DEFAULT_MIN_HITS, PERCENTILE_MAX_HITS = 40, 31, 24


def test_default_interval_covers_the_population_value_where_raw_intervals_miss():
    """Coverage by simulation with a known truth: over 40 draws the raw max |WSC| is attenuated and its
    percentile interval misses the population value most of the time, while the default
    (attenuation-corrected) interval covers it at close to its nominal 95%. (The basic interval's hits
    are counted for the failure message; it covers about as often as the default here.) (The earlier version of this test asked 6 of 8 draws of a 600-row design of the basic
    interval, whose coverage there is about 0.65-0.8: a coin flip on any change of the arithmetic.)"""
    design, k = CalibrationDesign(), 50
    truth = _population(design, k).summary["max_abs_wsc"]
    raw, corrected, hits = [], 0, {"default": 0, "basic": 0, "percentile": 0}
    for rep in range(COVERAGE_DRAWS):
        z, meta, head = calibration_data(design, 3000, seed=100 + rep)
        t = _analyze(z, meta, head, k, bootstrap=100, seed=rep).tasks["attr"]
        s = t.summary
        corrected += s["ci_method"] == "corrected"          # else the basic fallback (no reliable direction)
        raw.append(s["max_abs_wsc"])
        for name, (lo, hi) in (("default", s["ci"]), ("basic", s["intervals"]["basic"]),
                               ("percentile", s["intervals"]["percentile"])):
            hits[name] += lo <= truth <= hi
    assert np.mean(raw) < truth - 0.02, (np.mean(raw), truth)                # attenuated
    assert corrected >= COVERAGE_DRAWS - 2, corrected                         # the study: corrected in 100% of draws
    assert hits["default"] >= DEFAULT_MIN_HITS, hits
    assert hits["percentile"] <= PERCENTILE_MAX_HITS, hits


def test_default_interval_is_the_corrected_one_and_the_raw_values_stay():
    z, meta, head = calibration_data(CalibrationDesign(d=24, shift=3.0), 400, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = wsca.analyze(z, meta, "label", head, config=wsca.AnalysisConfig().replace(permutations=0, tasks=["attr"], categorical=["attr"], bootstrap=30, pca_min=10))
    t = r.tasks["attr"]
    s = t.summary
    assert s["ci_method"] == "corrected" and s["ci"] == s["intervals"]["corrected"] and s["ci_fallback"] is None
    np.testing.assert_allclose(t.ci_low, t.cell_intervals["corrected"]["low"])
    bmax = np.nanmax(np.abs(t.boot), axis=(-2, -1))                 # the basic interval stays beside it
    lo, hi = basic_interval(s["max_abs_wsc"], bmax, 0.95)
    assert s["intervals"]["basic"] == pytest.approx([max(lo, 0.0), min(hi, 1.0)])
    assert s["max_abs_wsc"] == pytest.approx(float(np.nanmax(np.abs(t.wsc))))
    assert s["ci_raw"] == s["intervals"]["percentile"] and s["ci_raw_method"] == "percentile"
    assert s["max_abs_wsc_corrected"] > s["max_abs_wsc"]
    d = r.to_dict()["tasks"]["attr"]
    assert d["wsc_corrected"] is not None and set(d["cell_intervals"]) == {"raw", "corrected"}
    back = wsca.WscaResult.from_dict(r.to_dict())
    np.testing.assert_allclose(back.tasks["attr"].wsc_corrected, t.wsc_corrected)
    assert set(s["reliability"]) == {"primary", "probe"} and s["reliability"]["primary"] == [1.0]


def test_correction_noise_settings_and_the_corrected_fallback():
    """The jackknife is fitted for the correction (and recorded), not when nothing uses it; where a
    direction is unreliable, ``ci_method="corrected"`` falls back to the basic interval with the reason,
    cells included."""
    z, meta, head = calibration_data(CalibrationDesign(d=24, shift=3.0), 400, seed=3)
    cfg = wsca.AnalysisConfig().replace(tasks=["attr"], categorical=["attr"], bootstrap=20, permutations=0, pca_min=10,
                                        cv_folds=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jk = wsca.analyze(z, meta, "label", head, config=cfg)
        bs = wsca.analyze(z, meta, "label", head, config=cfg.replace(correction_noise="bootstrap"))
        zw, mw, hw = calibration_data(CalibrationDesign(d=24, shift=0.2), 200, seed=4)
        weak = wsca.analyze(zw, mw, "label", hw, config=cfg.replace(ci_method="corrected"))
    assert jk.resolved["correction_noise"] == "jackknife" and jk.resolved["jackknife_blocks"] == 10
    assert bs.resolved["correction_noise"] == "bootstrap" and bs.resolved["jackknife_blocks"] is None
    rj, rb = (r.tasks["attr"].summary["reliability"]["probe"] for r in (jk, bs))
    assert not np.allclose(rj, rb)                                   # two different noise estimates
    t = weak.tasks["attr"]
    s = t.summary
    assert min(s["reliability"]["probe"]) < 0.1
    assert t.wsc_corrected is None or np.isnan(t.wsc_corrected).any()
    assert s["ci_method"] == "basic" and s["ci_fallback"] == "no_reliable_direction"
    lo, hi = basic_interval(t.wsc, t.boot, 0.95)
    np.testing.assert_allclose(t.cell_intervals["raw"]["low"], lo)
    np.testing.assert_allclose(t.cell_intervals["raw"]["high"], hi)
    with pytest.raises(wsca.WscaInputError, match="--correction-noise must be one of 'jackknife', 'bootstrap', found 'halves'"):
        cfg.replace(correction_noise="halves")


def test_equivalence_concludes_unused_only_when_the_alignment_is_small():
    """A strongly encoded attribute the head does not use: the corrected replicates lie below the margin,
    so "encoded but unused" is concluded; when the head uses it, equivalence is not shown and the
    attribute is detected. The minimum detectable WSC lies between the null and 1."""
    out = {}
    for use in (0.0, 0.8):
        z, meta, head = calibration_data(CalibrationDesign(d=24, shift=4.0, use=use), 2000, seed=11)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = wsca.analyze(z, meta, "label", head, config=wsca.AnalysisConfig().replace(tasks=["attr"], categorical=["attr"], bootstrap=60, permutations=60, pca_min=10, seed=0))
        out[use] = r.tasks["attr"].summary
    unused, used = out[0.0], out[0.8]
    assert unused["equivalence"]["below_margin"] and "encoded but unused" in unused["verdict"]
    assert unused["verdict"].startswith("not detected") and unused["excess_sd"] < 3
    assert not used["equivalence"]["below_margin"] and used["verdict"].startswith("aligned")
    assert used["excess_sd"] > 5
    assert unused["null_q95"] < unused["mde_raw"] < 1 and 0 <= unused["power_at_margin"] <= 1
