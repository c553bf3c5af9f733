"""Known-answer tests of the WSC geometry and the PCA projection."""

import numpy as np
import jax.numpy as jnp
from sklearn.decomposition import PCA

import wsca_jax as wsca
from wsca_jax.wsc import choose_components, wsc


def rotated(rows, basis):
    return np.asarray(rows, np.float64) @ basis.rotation


def test_pca_matches_sklearn():
    X = np.random.default_rng(0).normal(size=(500, 80)) @ np.diag(np.linspace(3, 0.1, 80))
    basis = wsca.probes.make_basis(X)
    proj = choose_components(basis.variances, 0.9, pca_min=5)
    ref = PCA(n_components=0.9, svd_solver="full").fit(X)
    assert proj.k == ref.n_components_
    np.testing.assert_allclose(proj.explained_variance, ref.explained_variance_ratio_.sum(), rtol=1e-8)
    np.testing.assert_allclose(np.abs(basis.rotation[:, :proj.k].T), np.abs(ref.components_), atol=1e-6)
    # the floor applies when the variance target needs fewer components
    assert choose_components(basis.variances, 0.5, pca_min=50).k == 50
    assert choose_components(basis.variances[:20], 0.5, pca_min=50).k == 20


def test_known_angles_are_recovered():
    d = 10
    rng = np.random.default_rng(0)
    basis = wsca.probes.make_basis(rng.normal(size=(400, d)))
    e = basis.rotation.T                                    # rows: principal axes in input space
    angles = np.deg2rad([0.0, 30.0, 60.0, 90.0, 135.0])
    head = e[0:1]                                           # one-row head along axis 0
    task = np.stack([np.cos(a) * e[0] + np.sin(a) * e[1] for a in angles])   # (5, d)
    c = wsc(jnp.asarray(rotated(head, basis)), np.array([True]), jnp.asarray(rotated(task, basis))[None],
            np.ones((1, 5), bool), k=d, centered=False)
    np.testing.assert_allclose(np.asarray(c)[0, 0], np.cos(angles), atol=1e-6)


def test_projection_removes_off_manifold_components():
    d = 10
    basis = wsca.probes.make_basis(np.random.default_rng(1).normal(size=(400, d)) * np.r_[np.ones(5) * 3, np.ones(5) * 0.01])
    e = basis.rotation.T
    head = (e[0] + 5 * e[9])[None]                          # mostly off the 5-d manifold
    task = e[0][None]
    full = wsc(jnp.asarray(rotated(head, basis)), np.array([True]), jnp.asarray(rotated(task, basis))[None], np.array([[True]]), k=d, centered=False)
    proj = wsc(jnp.asarray(rotated(head, basis)), np.array([True]), jnp.asarray(rotated(task, basis))[None], np.array([[True]]), k=5, centered=False)
    assert abs(float(full[0, 0, 0]) - 1 / np.sqrt(26)) < 1e-5
    assert abs(float(proj[0, 0, 0]) - 1.0) < 1e-5


def test_centering_removes_common_vector():
    d = 6
    rng = np.random.default_rng(2)
    basis = wsca.probes.make_basis(rng.normal(size=(300, d)))
    A = rng.normal(size=(2, d)); B = rng.normal(size=(3, d))   # noqa: E702
    shift = rng.normal(size=d) * 5
    args = dict(k=d)
    ra = jnp.asarray(rotated(A, basis)); rb = jnp.asarray(rotated(B, basis))   # noqa: E702
    rb2 = jnp.asarray(rotated(B + shift, basis))
    cen1 = wsc(ra, np.ones(2, bool), rb[None], np.ones((1, 3), bool), centered=True, **args)
    cen2 = wsc(ra, np.ones(2, bool), rb2[None], np.ones((1, 3), bool), centered=True, **args)
    raw1 = wsc(ra, np.ones(2, bool), rb[None], np.ones((1, 3), bool), centered=False, **args)
    raw2 = wsc(ra, np.ones(2, bool), rb2[None], np.ones((1, 3), bool), centered=False, **args)
    np.testing.assert_allclose(cen1, cen2, atol=1e-5)
    assert np.abs(np.asarray(raw1) - np.asarray(raw2)).max() > 0.1


def test_padded_classes_are_nan():
    rows = jnp.asarray(np.random.default_rng(4).normal(size=(1, 3, 4)))
    c = np.asarray(wsc(rows[0, :2], np.ones(2, bool), rows, np.array([[True, True, False]]), k=4, centered=True))
    assert np.isnan(c[0, :, 2]).all() and np.isfinite(c[0, :, :2]).all()


def test_orthogonal_head_gives_zero_although_metadata_is_strongly_encoded(known_answer):
    z, meta, head = known_answer(n=2000, d=16, used=False)
    res = wsca.analyze(z, meta, "label", primary_head=head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=16))
    t = res.tasks["site"]
    assert t.probe["auroc"] > 0.95                          # strongly encoded
    assert t.summary["max_abs_wsc"] < 0.05                  # but unused
    z, meta, head = known_answer(n=2000, d=16, used=True)
    res = wsca.analyze(z, meta, "label", primary_head=head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=16))
    # head e0 + e1 and a probe along e1: cos 45 degrees
    assert abs(res.tasks["site"].summary["max_abs_wsc"] - np.cos(np.pi / 4)) < 0.05


def test_components_capped_at_rank_so_wsc_is_rotation_invariant():
    """N <= D: axes beyond the data's rank are arbitrary; the projection must not use them."""
    rng = np.random.default_rng(7)
    z = rng.normal(size=(40, 100))
    meta = {"label": np.arange(40) % 2, "site": (np.arange(40) // 2) % 2}
    head = rng.normal(size=100)
    vals = []
    for seed in range(3):
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(100, 100)))
        res = wsca.analyze(z @ q, meta, "label", primary_head=head @ q, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=50))
        assert res.pca["components"] <= 39
        vals.append(res.tasks["site"].summary["max_abs_wsc"])
    np.testing.assert_allclose(vals, vals[0], atol=1e-4)


def test_reweighted_basis_matches_fixed_pca_and_resamples_it():
    from wsca_jax.wsc import wsc_reweighted_basis_jit
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) * np.linspace(3, 0.2, 12)
    basis = wsca.probes.make_basis(x)
    a = rng.normal(size=(2, 12)) @ basis.rotation
    b = rng.normal(size=(1, 3, 12)) @ basis.rotation
    k = 5
    ref = np.asarray(wsca.wsc(a, np.ones(2, bool), b, np.ones((1, 3), bool), k=k, centered=True))
    ones = np.ones((1, 300), np.float32)
    got = np.asarray(wsc_reweighted_basis_jit(basis.x, ones, a.astype(np.float32), np.ones(2, bool),
                                              b.astype(np.float32), np.ones((1, 3), bool), k=k, centered=True))
    np.testing.assert_allclose(got[0], ref, atol=2e-4)
    # bootstrap weights move the projection, hence the cosines, a little
    w = wsca.stats.bootstrap_weights(rng, 300, 8)
    boot = np.asarray(wsc_reweighted_basis_jit(basis.x, w, a.astype(np.float32), np.ones(2, bool),
                                               b.astype(np.float32), np.ones((1, 3), bool), k=k, centered=True))
    assert boot.shape == (8, 1, 2, 3)
    assert 0 < np.abs(boot - ref).max() < 0.5
