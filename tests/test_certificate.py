"""The optimality certificate (issue 27): a full-data fit is "converged" only at its optimum.

A gradient test alone passes on a flat valley: unstandardised ReLU features of large scale, a
label carried by low-variance latent factors, C = 100. There L-BFGS meets ``max |grad| <= 1e-5``
with the objective 4e-4 (relative) above the float64 optimum. The certificate (Newton decrement in
float64) must see that, and the Newton polish must reach the optimum. References: scikit-learn's
``newton-cholesky`` solver (exact Newton, float64) at tol 1e-12.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import wsca_jax as wsca
from wsca_jax.probes import ProbeConfig, fit_probes, fit_replicates, make_basis, to_original
from wsca_jax.probes.certify import certify


def flat_valley(n, d=256, factors=24, scale=100.0, seed=0):
    """ReLU features of 24 latent factors with decaying scale (0.8^j), unstandardised (x ``scale``);
    the binary label follows factors 10 and 20 (low-variance directions) plus noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, factors)) * 0.8 ** np.arange(factors)
    x = scale * np.maximum(z @ rng.normal(size=(factors, d)) + 0.05 * rng.normal(size=(n, d)), 0)
    y = (z[:, 10] / 0.8 ** 10 + z[:, 20] / 0.8 ** 20 + 0.3 * rng.normal(size=n) > 0).astype(int)
    return x, y


def binary_objective(x, y, w, b, C):
    """scikit-learn's binary objective divided by ``C n`` (the scale does not change relative gaps)."""
    s = x @ w + b
    return (np.logaddexp(0, s) - y * s).mean() + w @ w / (2 * C * len(y))


def reference(x, y, C):
    """The float64 optimum (scikit-learn at ``2 C``, our binary convention): ``(w, b, f)``."""
    sk = LogisticRegression(solver="newton-cholesky", C=2 * C, tol=1e-12, max_iter=1000).fit(x, y)
    return sk.coef_[0], sk.intercept_[0], binary_objective(x, y, sk.coef_[0], sk.intercept_[0], 2 * C)


def as_binary(coef, intercept):
    """A two-row head -> scikit-learn's one vector."""
    return coef[1] - coef[0], intercept[1] - intercept[0]


def test_the_gradient_rule_alone_says_converged_above_the_optimum_the_certificate_does_not():
    x, y = flat_valley(480)
    C = 100.0
    w_ref, _, f_ref = reference(x, y, C)
    basis = make_basis(x)
    lab, wts, mask = y[None].astype(np.int32), np.ones((1, 480), np.float32), np.ones((1, 2), bool)
    raw = fit_replicates(basis, lab, wts, mask, ProbeConfig(C=C))
    assert bool(raw.converged[0, 0]) and raw.grad_max[0, 0] <= 1e-5             # what the gradient rule says
    w, b = as_binary(*to_original(raw.coef[0, 0], raw.intercept[0, 0], basis))
    true_gap = (binary_objective(x, y, w, b, 2 * C) - f_ref) / f_ref
    assert true_gap > 1e-5                                                        # ... 4e-4 above the optimum
    judged = certify(np.asarray(basis.x), lab[None], wts[None], mask, C, 1e-6, 0, raw)   # no Newton steps
    assert not bool(judged.converged[0, 0])
    assert 0.5 * true_gap <= judged.gap[0, 0] <= 2.0 * true_gap                   # the estimate is the gap
    out = fit_probes(x, y, config=ProbeConfig(C=C))                               # certified, polished
    w, b = as_binary(out["coef"][0], out["intercept"][0])
    assert bool(out["converged"][0]) and out["gap"][0] <= 1e-6
    assert (binary_objective(x, y, w, b, 2 * C) - f_ref) / f_ref <= 1e-6
    assert w @ w_ref / np.linalg.norm(w) / np.linalg.norm(w_ref) >= 0.99999


@pytest.mark.parametrize("n,d", [(480, 256), (4800, 256), (48000, 64), (100000, 64)])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_certified_fits_are_at_the_float64_optimum(n, d, C):
    """Every full-data fit is converged, within 1e-6 (relative) of the float64 optimum, and its
    estimated gap is the measured one (to a factor 2, where float64 can resolve it: above 1e-12)."""
    x, y = flat_valley(n, d)
    out = fit_probes(x, y, config=ProbeConfig(C=C))
    w, b = as_binary(out["coef"][0], out["intercept"][0])
    _, _, f_ref = reference(x, y, C)
    true_gap = (binary_objective(x, y, w, b, 2 * C) - f_ref) / f_ref
    assert bool(out["converged"][0]) and out["gap"][0] <= 1e-6 and true_gap <= 1e-6
    if true_gap > 1e-12:
        assert 0.5 * true_gap <= out["gap"][0] <= 2.0 * true_gap


def test_the_certificate_of_a_multiclass_fit():
    """Three classes, C = 100: L-BFGS meets the gradient rule (max |grad| 8e-6 <= 1e-5) about 1%
    above scikit-learn's multinomial optimum -- the issue's case. The certificate's estimate is that
    gap (to a factor 2), the fit is flagged without Newton steps and at the optimum with them."""
    x, y = flat_valley(480)
    y = y + (x[:, 0] > np.median(x[:, 0]))                                       # classes 0, 1, 2
    C = 100.0

    def objective(W, b):
        z = x @ W.T + b
        lse = np.logaddexp.reduce(z, axis=1)
        return np.mean(lse - z[np.arange(len(y)), y]) + np.sum(W * W) / (2 * C * len(y))

    sk = LogisticRegression(solver="newton-cholesky", C=C, tol=1e-12, max_iter=1000).fit(x, y)
    f_ref = objective(sk.coef_, sk.intercept_)
    basis, lab, wts, mask = make_basis(x), y[None].astype(np.int32), np.ones((1, 480), np.float32), np.ones((1, 3), bool)
    raw = fit_replicates(basis, lab, wts, mask, ProbeConfig(C=C))
    true_gap = (objective(*to_original(raw.coef[0, 0], raw.intercept[0, 0], basis)) - f_ref) / f_ref
    assert bool(raw.converged[0, 0]) and raw.grad_max[0, 0] <= 1e-5 and true_gap > 1e-3
    judged = certify(np.asarray(basis.x), lab[None], wts[None], mask, C, 1e-6, 0, raw)
    assert not bool(judged.converged[0, 0]) and 0.5 * true_gap <= judged.gap[0, 0] <= 2.0 * true_gap
    out = fit_probes(x, y, config=ProbeConfig(C=C))
    assert bool(out["converged"][0]) and (objective(out["coef"][0], out["intercept"][0]) - f_ref) / f_ref <= 1e-6


@pytest.mark.filterwarnings("ignore:probe .* did not converge")
def test_an_uncertifiable_fit_is_flagged_in_the_analysis(tmp_path):
    """analyze(): a full-data probe whose gap stays above gap_tol (no Newton steps allowed, 50
    iterations) is converged = False with its gap in wsca.json's fit block, and a warning says why."""
    x, y = flat_valley(480)
    meta = {"label": y, "site": (x[:, 3] > np.median(x[:, 3])).astype(int)}
    cfg = wsca.AnalysisConfig().replace(C=100.0, max_iter=50, newton_steps=0, bootstrap=0, permutations=0)
    res = wsca.analyze(x, meta, "label", config=cfg)
    fit = res.tasks["site"].fit
    assert fit["converged"] is False and fit["gap"] > 1e-6
    assert any("optimality gap" in w and "'site'" in w for w in res.warnings)
    good = wsca.analyze(x, meta, "label", config=cfg.replace(newton_steps=20))
    assert good.tasks["site"].fit["converged"] is True and good.tasks["site"].fit["gap"] <= 1e-6


def test_a_cut_short_solve_is_no_certificate_and_labels_beyond_the_width_carry_no_weight():
    """Conjugate gradients stopped after 5 products give a decrement that may be too low: the gap is
    NaN and the fit not converged (never a certificate). A label beyond the class mask's width is
    left out, as the solver leaves it out (it raised an IndexError)."""
    from wsca_jax.probes.certify import _blocks, _Problem, certify_task
    x, y = flat_valley(480)
    basis = make_basis(x)
    raw = fit_replicates(basis, y[None].astype(np.int32), np.ones((1, 480), np.float32), np.ones((1, 2), bool),
                         ProbeConfig(C=100.0))
    prob = _Problem(_blocks(np.asarray(basis.x)), y, np.full(480, 1 / 480), np.ones(2, bool), 1 / (100.0 * 480))
    cut = certify_task(prob, raw.coef[0, 0], raw.intercept[0, 0], 1e-6, 0, cg_iter=5)
    assert np.isnan(cut.gap)
    full = certify_task(prob, raw.coef[0, 0], raw.intercept[0, 0], 1e-6, 0)
    assert full.gap > 1e-5
    y3 = y.copy()
    y3[:10] = 2
    out = fit_probes(x, y3, class_mask=np.ones((1, 2), bool), config=ProbeConfig(C=1.0))
    ref = fit_probes(x[10:], y3[10:], config=ProbeConfig(C=1.0))
    assert bool(out["converged"][0]) and np.allclose(out["coef"], ref["coef"], atol=1e-4 * np.abs(ref["coef"]).max())
