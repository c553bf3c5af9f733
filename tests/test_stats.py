"""Statistics against scipy and known answers."""

import numpy as np
import pytest
from scipy import stats

from wsca_jax.stats import (bca_interval, bootstrap_weights, holm, jackknife_weights, percentile_interval,
                            permutation_indices, permutation_pvalue, random_cosine_quantile, random_direction_null)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_intervals_match_scipy_bootstrap(method):
    x = np.random.default_rng(0).gamma(2.0, size=40)          # skewed: BCa differs from percentile
    B = 2000
    res = stats.bootstrap((x,), np.mean, n_resamples=B, method=method, rng=np.random.default_rng(7))
    # the same resamples scipy drew (rows of indices from the same generator), as count weights
    idx = np.random.default_rng(7).integers(0, len(x), (B, len(x)))
    theta_b = x[idx].mean(1)
    counts = np.stack([np.bincount(i, minlength=len(x)) for i in idx])
    np.testing.assert_allclose(counts @ x / len(x), theta_b)
    if method == "BCa":
        jw = jackknife_weights(len(x))                      # leave-one-out for n <= 50
        theta_j = (jw @ x) / jw.sum(1)
        lo, hi = bca_interval(x.mean(), theta_b, theta_j)
    else:
        lo, hi = percentile_interval(theta_b)
    np.testing.assert_allclose([lo, hi], [res.confidence_interval.low, res.confidence_interval.high], rtol=1e-10)


def test_bootstrap_weights_plain_and_grouped():
    rng = np.random.default_rng(0)
    w = bootstrap_weights(rng, 50, 100)
    assert w.shape == (100, 50) and np.all(w.sum(1) == 50)
    np.testing.assert_allclose(w.mean(), 1.0, atol=0.05)
    groups = np.repeat(np.arange(10), 3)
    wg = bootstrap_weights(rng, 30, 200, groups)
    assert np.all(wg.reshape(200, 10, 3).std(-1) == 0)        # a group is drawn whole
    assert np.all(wg.sum(1) == 30)


def test_group_permutations_keep_groups_whole():
    rng = np.random.default_rng(1)
    groups = np.r_[np.repeat(np.arange(20), 2), np.arange(20, 30)]   # 20 pairs and 10 singletons
    perms = permutation_indices(rng, len(groups), 50, groups)
    within = np.tile([0, 1], 20)                                      # a row-level attribute (view)
    swapped = 0
    for p in perms:
        assert sorted(p) == list(range(len(groups)))
        src_groups = groups[p]
        for g in range(20):                                 # both rows of a pair come from one pair
            a, b = src_groups[groups == g]
            assert a == b and a < 20
            swapped += int(within[p[groups == g][0]] == 1)  # the view order is shuffled in the pair
        assert np.all(src_groups[40:] >= 20)                # singletons swap with singletons
    assert len({tuple(p) for p in perms}) == 50
    assert 0.4 < swapped / (50 * 20) < 0.6


def test_permutation_pvalue_and_holm_known_values():
    null = np.linspace(-1, 1, 99)                           # |null| >= 0.5 for 50 of 99
    assert permutation_pvalue(0.5, null[:, None])[0] == pytest.approx(51 / 100)
    assert permutation_pvalue(2.0, null[:, None])[0] == pytest.approx(1 / 100)
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])


def test_random_direction_reference():
    rng = np.random.default_rng(3)
    k = 50
    u = rng.normal(size=(20000, k))
    cos = u[:, 0] / np.linalg.norm(u, axis=1)
    assert random_cosine_quantile(k) == pytest.approx(np.quantile(np.abs(cos), 0.95), abs=0.01)
    assert np.std(cos) == pytest.approx(1 / np.sqrt(k), rel=0.05)
    m = random_direction_null(rng, k, 1, 1, centered=False)
    assert np.quantile(m, 0.95) == pytest.approx(random_cosine_quantile(k), abs=0.02)
    # a 2 x 3 matrix's max is larger than one cell's
    assert np.quantile(random_direction_null(rng, k, 2, 3, centered=True), 0.95) > random_cosine_quantile(k)


def test_permutation_within_strata_keeps_strata_and_groups():
    rng = np.random.default_rng(0)
    strata = np.repeat([0, 1, 2], [40, 30, 30])
    groups = np.repeat(np.arange(50), 2)                    # pairs, each inside one stratum
    perms = permutation_indices(rng, 100, 50, groups, strata)
    assert (strata[perms] == strata[None]).all()
    # a pair's rows come from one partner pair
    src_groups = groups[perms]
    assert (src_groups[:, ::2] == src_groups[:, 1::2]).all()
    # it does shuffle: rows move within each stratum
    assert (perms != np.arange(100)).mean() > 0.5


def test_permutation_strata_reject_groups_across_strata():
    from wsca_jax.errors import WscaInputError
    with pytest.raises(WscaInputError, match="spans two strata"):
        permutation_indices(np.random.default_rng(0), 4, 2, np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))


def test_guarded_bca_never_reads_both_ends_from_the_last_replicates():
    """3 of 200 replicates below the estimate: plain BCa collapses to [0.09, 0.09]; the guard falls back
    to the percentile interval and says why. A symmetric case keeps BCa."""
    from wsca_jax.stats import guarded_bca_interval
    rng = np.random.default_rng(0)
    tb = 0.1 + np.abs(rng.normal(0.05, 0.03, 200))
    tb[:3] = 0.09
    jack = tb[:50]
    lo, hi = bca_interval(0.1, tb, jack)
    assert hi - lo < 1e-9                                            # the defect
    glo, ghi, why, z0 = guarded_bca_interval(0.1, tb, jack)
    plo, phi = percentile_interval(tb)
    assert str(why) == "extreme_z0" and z0 < -2
    assert (glo, ghi) == (plo, phi) and ghi - glo > 0.5 * (np.percentile(tb, 97.5) - np.percentile(tb, 2.5))
    x = rng.normal(size=200)
    theta_b = np.array([rng.choice(x, 200).mean() for _ in range(400)])
    jw = jackknife_weights(200)
    glo, ghi, why, _ = guarded_bca_interval(x.mean(), theta_b, (jw @ x) / jw.sum(1))
    assert str(why) == "" and glo < x.mean() < ghi


def test_monte_carlo_error_of_permutation_pvalues():
    """The MC SE matches the spread of p over independent sets of permutations (binomial)."""
    from wsca_jax.stats import near_threshold, pvalue_mcse
    rng = np.random.default_rng(3)
    P, p_true = 200, 0.05
    ps = np.array([(1 + (rng.random(P) < p_true).sum()) / (P + 1) for _ in range(2000)])
    assert pvalue_mcse(p_true, P) == pytest.approx(ps.std(), rel=0.1)
    assert near_threshold(0.06, 200, [0.05]) and not near_threshold(0.5, 200, [0.05])
    assert not near_threshold(0.06, 20000, [0.05])                   # decided with enough permutations
