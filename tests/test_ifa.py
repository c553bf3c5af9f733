"""IFA's known answers: CAM reproduces the logits of a GAP + linear head, Grad-CAM equals CAM there,
gradient x activation matches finite differences on a non-linear head, common-scale bounds are
numpy's percentiles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wsca_jax import ifa
from wsca_jax.errors import WscaInputError
from wsca_jax.training.models import WscaModel


@pytest.fixture(scope="module")
def tiny():
    model = WscaModel(head_classes=(2, 3), setting="multi_task", widths=(4, 8))
    x = np.random.default_rng(0).integers(0, 255, (40, 16, 16, 1)).astype(np.uint8)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
    return model, params, x


def test_cam_reproduces_the_primary_logits_and_is_consistent(tiny):
    model, params, x = tiny
    r = ifa.ifa_arrays(ifa.split_at(model, params, columns=(0, 2)), x, method="cam", batch_size=16)
    out = model.apply({"params": params}, jnp.asarray(x))
    np.testing.assert_allclose(r["logits"], np.asarray(out["logits"])[:, :2], atol=1e-5)
    assert (r["target"] == r["logits"].argmax(1)).all()                    # default: the predicted class
    hw = r["cam"].shape[1] * r["cam"].shape[2]
    bias = np.asarray(params["heads"]["bias"])[:2]
    picked = r["logits"][np.arange(len(x)), r["target"]]
    np.testing.assert_allclose(r["cam"].sum((1, 2)) / hw + bias[r["target"]], picked, atol=1e-5)
    W = np.asarray(params["heads"]["kernel"])[:, :2]                         # (K, C)
    ref = np.einsum("nhwk,kn->nhw", np.asarray(out["feature_maps"]), W[:, r["target"]])
    np.testing.assert_allclose(r["cam"], ref, atol=1e-5)
    np.testing.assert_allclose(r["importance"].sum(1), r["cam"].sum((1, 2)), rtol=1e-5, atol=1e-5)
    for c, v in ifa.consistency(r["cam"], r["logits"], r["target"]).items():
        assert v is None or v >= 0.999


def test_gradcam_equals_cam_at_the_last_layer_of_a_gap_linear_model(tiny):
    model, params, x = tiny
    sp = ifa.split_at(model, params, columns=(2, 5))                        # the 3-class head
    cam = ifa.ifa_arrays(sp, x, target=2, method="cam")
    grad = ifa.ifa_arrays(sp, x, target=2, method="gradcam")
    hw = cam["cam"].shape[1] * cam["cam"].shape[2]
    np.testing.assert_allclose(grad["importance"] * hw, cam["importance"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad["cam"], np.maximum(cam["cam"] / hw, 0), rtol=1e-4, atol=1e-6)
    assert (cam["target"] == 2).all()


class _Smooth(nn.Module):
    """A non-linear head after the cut: tanh, a 3x3 convolution, softplus, GAP, Dense."""

    @nn.compact
    def __call__(self, x):
        maps = nn.Conv(3, (3, 3), name="feat")(x.astype(jnp.float32) / 255.0)
        h = nn.softplus(nn.Conv(4, (3, 3), name="mix")(jnp.tanh(maps)))
        return nn.Dense(2, name="out")(jnp.mean(h, axis=(1, 2)))


def test_gradient_times_activation_matches_finite_differences():
    x = np.random.default_rng(1).integers(0, 255, (6, 8, 8, 1)).astype(np.uint8)
    model = _Smooth()
    with jax.enable_x64(True):
        params = model.init(jax.random.PRNGKey(3), jnp.asarray(x[:1]))["params"]
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
        sp = ifa.split_at(model, params, layer="feat")
        r = ifa.ifa_arrays(sp, x, target=1, method="gradxact")
        maps = np.asarray(sp.features(jnp.asarray(x)), np.float64)
        eps = 1e-5
        for k in range(maps.shape[-1]):                 # d logit / d(scale of channel k) = sum_xy g_k A_k
            up, down = maps.copy(), maps.copy()
            up[..., k] *= 1 + eps
            down[..., k] *= 1 - eps
            fd = (np.asarray(sp.head(jnp.asarray(up), jnp.asarray(x)))[:, 1]
                  - np.asarray(sp.head(jnp.asarray(down), jnp.asarray(x)))[:, 1]) / (2 * eps)
            np.testing.assert_allclose(r["importance"][:, k], fd, rtol=1e-6, atol=1e-9)


def test_common_scale_bounds_are_numpys_percentiles():
    rng = np.random.default_rng(2)
    mx, mn = rng.normal(5, 1, 300), rng.normal(-1, 1, 300)
    low, high = ifa.common_scale(mx, mn)
    assert low == np.percentile(mn, 50) and high == np.percentile(mx, 90)
    cams = rng.normal(2, 3, (4, 5, 5))
    lin = ifa.apply_scale(cams, low, high)
    np.testing.assert_allclose(lin, np.clip((cams - low) / (high - low), 0, 1))
    th = ifa.apply_scale(cams, low, high, "tanh")
    assert th.min() >= 0 and th.max() < 1 and np.all(np.diff(np.sort(th.ravel())) >= 0)
    per = ifa.per_image_scale(cams)
    assert np.allclose(per.min((1, 2)), 0) and np.allclose(per.max((1, 2)), 1)


def test_unknown_layer_and_method_are_one_line_errors(tiny):
    model, params, x = tiny
    with pytest.raises(WscaInputError, match="no submodule"):
        ifa.ifa_arrays(ifa.split_at(model, params, layer="nope"), x[:2])
    with pytest.raises(WscaInputError, match="--method must be one of"):
        ifa.ifa_arrays(ifa.split_at(model, params), x[:2], method="lrp")


def test_an_earlier_layer_by_name_or_path_reproduces_the_model_and_gradients(tiny):
    """A backbone submodule (``conv1a`` sits under ``backbone``): the split's head on its maps is the
    whole model; gradient x activation there (batched vjp) equals ``jax.grad`` of the summed logit; a
    name used by several submodules is refused, its path accepted."""
    model, params, x = tiny
    out = np.asarray(model.apply({"params": params}, jnp.asarray(x))["logits"])[:, :2]
    for layer in ("conv1a", "backbone/conv1a"):
        sp = ifa.split_at(model, params, layer=layer, columns=(0, 2))
        maps = ifa.feature_maps(sp, x)
        assert maps.shape[1:] == (4, 4, 8)                                   # 16 -> stem 8 -> pool 4
        np.testing.assert_allclose(np.asarray(sp.head(jnp.asarray(maps), jnp.asarray(x))), out, atol=1e-5)
    r = ifa.ifa_arrays(sp, x, target=1, method="gradxact", batch_size=16)
    g = jax.grad(lambda a: sp.head(a, jnp.asarray(x))[:, 1].sum())(jnp.asarray(maps))   # rows do not mix
    ref = np.asarray((g * maps).sum(-1))
    np.testing.assert_allclose(r["cam"], ref, atol=1e-4 * np.abs(ref).max())
    m = WscaModel(head_classes=(2,), backbone="resnet18", widths=(8, 8, 8, 8))
    p = m.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
    with pytest.raises(WscaInputError, match=r"names 9 submodules \(backbone/Conv_0, .*give its path"):
        ifa.feature_maps(ifa.split_at(m, p, layer="Conv_0"), x[:2])
    assert ifa.feature_maps(ifa.split_at(m, p, layer="stage1a/Conv_0"), x[:2]).shape[-1] == 8


def test_pooling_setting_cam_is_the_evidence_map(tiny):
    """``--setting pooling``: the 1x1 evidence convolution then the global average is a GAP + linear
    head, so the class-1 CAM is half the evidence map less its bias (the logits are ``[-z/2, z/2]``)."""
    _, _, x = tiny
    model = WscaModel(head_classes=(2,), setting="pooling", widths=(4, 8))
    params = model.init(jax.random.PRNGKey(1), jnp.asarray(x[:1]))["params"]
    r = ifa.ifa_arrays(ifa.split_at(model, params, columns=(0, 2)), x, target=1, method="cam")
    out = model.apply({"params": params}, jnp.asarray(x))
    b = float(np.asarray(params["evidence"]["bias"])[0])
    evidence = np.asarray(out["embedding"]).reshape(r["cam"].shape)
    np.testing.assert_allclose(r["cam"], (evidence - b) / 2, atol=1e-5)
    for v in ifa.consistency(r["cam"], r["logits"], r["target"]).values():
        assert v is None or v >= 0.999


def test_decomposition_at_full_fraction_reproduces_the_model(tiny):
    model, params, x = tiny
    sp = ifa.split_at(model, params, columns=(0, 2))
    r = ifa.ifa_arrays(sp, x, method="cam")
    labels = (np.arange(len(x)) % 2 == 0).astype(int)
    prof = ifa.importance_profile(r["importance"], r["target"])
    d = ifa.decompose(sp, x, labels, r["weights"], {"importance": prof["overall"]}, fractions=(0.25, 1.0),
                      n_random=5)
    from wsca_jax.metrics import classification_metrics
    p = np.asarray(jax.nn.softmax(jnp.asarray(r["logits"]), axis=-1))
    full = classification_metrics(labels, p)
    assert d["full"]["auroc"] == pytest.approx(full["auroc"]) and d["full"]["cam_similarity"] == pytest.approx(1.0)
    at1 = {row["mode"]: row for row in d["rows"] if row["fraction"] == 1.0}
    for mode in ("importance", "random"):
        assert at1[mode]["auroc"] == pytest.approx(full["auroc"]) and at1[mode]["channels"] == 8
    assert at1["random"]["auroc_low"] == pytest.approx(full["auroc"])           # every random mask at 100%
    quarter = [row for row in d["rows"] if row["fraction"] == 0.25]
    assert all(row["channels"] == 2 for row in quarter)
    assert d["smallest_sufficient_fraction"]["importance"] in (0.25, 1.0)
    with pytest.raises(WscaInputError, match="--fractions must lie in"):
        ifa.channel_masks(np.ones(8), [0.0, 0.5])


def test_distribution_analysis_finds_planted_structure():
    rng = np.random.default_rng(0)
    imp = rng.normal(0, 1, (60, 6))
    t = np.repeat([0, 1], 30)
    imp[:, 0] += 5                       # the dominant channel
    imp[t == 1, 2] += 3                  # a class-1 channel
    imp[:, 5] = 0                        # idle
    imp[:, 4] = 2 * imp[:, 3]            # redundant pair
    imp[7, :5] += 20                     # one outlier
    prof = ifa.importance_profile(imp, t)
    assert int(np.argmax(prof["diff"][1])) == 2 and prof["n"] == {0: 30, 1: 30}
    assert ifa.principal_channels(prof["overall"])[0.5] == [0]
    red = ifa.redundancy(imp)
    assert red["near_zero"] == [5] and red["correlated_pairs"][0][:2] == (3, 4)
    assert ifa.outliers(imp, t, 1)[0][0] == 7
    pc = ifa.cam_percentiles(np.arange(101.0), -np.arange(101.0))
    assert pc["max"][90] == 90.0 and pc["min"][25] == -75.0


def test_confounder_channels_and_their_decision_share():
    rng = np.random.default_rng(1)
    n, K = 400, 20
    attr = rng.integers(0, 2, n)
    emb = rng.normal(0, 1, (n, K))
    emb[:, 3:7] += 2 * attr[:, None]                       # channels 3-6 carry the attribute
    used = np.abs(rng.normal(0, 0.1, (n, K)))
    used[:, 3:7] += 2.0                                     # the decision rests on them
    r = ifa.confounder_channels(emb, attr, used, n_random=199)
    assert set(r["channels"]) <= {3, 4, 5, 6} and r["decision_share"] > 0.4 and r["p_value"] <= 0.01
    unused = np.abs(rng.normal(0, 0.1, (n, K)))
    unused[:, 10:14] += 2.0                                 # the decision rests elsewhere
    r = ifa.confounder_channels(emb, attr, unused, n_random=199)
    assert set(r["channels"]) <= {3, 4, 5, 6} and r["decision_share"] < 0.1 and r["p_value"] > 0.5


def test_confounder_channel_p_value_has_its_level_when_the_attribute_channels_are_unrelated():
    """The null of the decision-share test: which channels carry the attribute is unrelated to which
    carry the decision (here: a random 3 of 24 channels carry the attribute, the decision's importance
    profile is drawn independently). Over 300 such datasets p <= alpha about alpha of the time."""
    rng = np.random.default_rng(7)
    n, K, ps = 150, 24, []
    for _ in range(300):
        attr = rng.integers(0, 2, n)
        emb = rng.normal(0, 1, (n, K))
        emb[:, rng.choice(K, 3, replace=False)] += 2.5 * attr[:, None]
        profile = rng.gamma(0.7, 1.0, K)                    # heterogeneous channel importance
        imp = profile * np.abs(rng.normal(1, 0.3, (n, K)))
        ps.append(ifa.confounder_channels(emb, attr, imp, n_random=199, seed=int(rng.integers(1 << 30)))["p_value"])
    ps = np.array(ps)
    assert 0.02 <= np.mean(ps <= 0.05) <= 0.09, np.mean(ps <= 0.05)
    assert 0.14 <= np.mean(ps <= 0.2) <= 0.27, np.mean(ps <= 0.2)


def test_analyze_ifa_record_and_region(tiny):
    model, params, x = tiny
    sp = ifa.split_at(model, params, columns=(0, 2))
    labels = (np.arange(len(x)) % 2).astype(int)
    site = np.array(["a", "b"])[(np.arange(len(x)) // 2) % 2]
    config = ifa.IfaConfig().replace(fractions=(0.5, 1.0), random_masks=3, region="0:8,0:16", all_samples=True)
    rec, arr = ifa.analyze_ifa(sp, x, labels, {"site": site}, config)
    for key in ("method", "n", "consistency", "scale", "decomposition", "smallest_sufficient_fraction",
                "confounders", "localization"):
        assert key in rec
    assert rec["scale"]["low"] == pytest.approx(float(np.percentile(arr["cam_min"], 50)))
    for v in rec["localization"].values():
        assert 0 <= v["mass_in_region"] <= 1 and v["area_share"] == 0.5
    assert arr["importance"].shape == (len(x), 8) and arr["cams_common"].shape[0] == len(x)
    assert rec["settings"] == config.to_dict() and rec["region"] == [0, 8, 0, 16]
    one = ifa.IfaConfig().replace(fractions=(1.0,), random_masks=1)
    with pytest.raises(WscaInputError, match="outside the 16x16 image"):
        ifa.analyze_ifa(sp, x, labels, config=one.replace(region=(0, 20, 0, 4)))
    with pytest.raises(WscaInputError, match="--target 5"):
        ifa.analyze_ifa(sp, x, labels, config=one.replace(target=5))
    # the 0.8 keywords still work for one release, with a DeprecationWarning, and give the same record
    with pytest.warns(DeprecationWarning, match="analyze_ifa: settings as keywords .* are deprecated"):
        old, old_arr = ifa.analyze_ifa(sp, x, labels, {"site": site}, fractions=(0.5, 1.0), n_random=3,
                                       region=(0, 8, 0, 16), correct_only=False)
    assert old == rec
    np.testing.assert_array_equal(old_arr["importance"], arr["importance"])


def test_ifa_config_reads_the_flags_text_and_checks_every_setting():
    """``--fractions``, ``--region`` and ``--target`` keep their text forms; one default per setting;
    a bad value is one line naming the flag."""
    c = ifa.IfaConfig().replace(fractions="0.25, 0.5,1", region="0:8,2:64", target="3")
    assert c.fractions == (0.25, 0.5, 1.0) and c.region == (0, 8, 2, 64) and c.target == 3 == c.target_class
    assert ifa.IfaConfig().target_class is None and ifa.IfaConfig(target="true").target_class == "true"
    assert ifa.IfaConfig.from_dict(c.to_dict()) == c
    for change, message in (({"fractions": "half"}, "--fractions must be comma-separated numbers in (0, 1], found 'half'"),
                            ({"fractions": (0.0, 0.5)}, "--fractions must be comma-separated numbers in (0, 1], found 0.0,0.5"),
                            ({"fractions": ()}, "--fractions must be comma-separated numbers in (0, 1], found none"),
                            ({"target": "most"}, "--target must be predicted, true or a class index, found 'most'"),
                            ({"target": "-1"}, "--target must be predicted, true or a class index, found -1"),
                            ({"region": "top"}, "--region 'top': expected y0:y1,x0:x1 in image pixels"),
                            ({"random_masks": 0}, "--random-masks must be an integer from 1 to 10000, found 0"),
                            ({"method": "lrp"}, "--method must be one of 'cam', 'gradcam', 'gradxact', found 'lrp'"),
                            ({"mapping": "log"}, "--mapping must be one of 'linear', 'tanh', found 'log'"),
                            ({"all_samples": 1}, "--all-samples must be True or False, found 1"),
                            ({"n_random": 3}, "IfaConfig: unknown setting(s) n_random")):
        with pytest.raises(WscaInputError) as e:
            ifa.IfaConfig().replace(**change)
        assert str(e.value) == message


def test_stored_feature_maps_and_head_give_the_same_analysis_as_the_network(tiny):
    """``maps_split``: CAM analysis from ``feature_maps`` + ``head_<task>`` + ``bias_<task>`` (what
    ``wsca embed --feature-maps`` writes) equals the analysis through the network."""
    model, params, x = tiny
    sp = ifa.split_at(model, params, columns=(0, 2))
    maps = ifa.feature_maps(sp, x)
    W = np.asarray(params["heads"]["kernel"])[:, :2].T                      # (C, K)
    b = np.asarray(params["heads"]["bias"])[:2]
    labels = (np.arange(len(x)) % 2).astype(int)
    site = (np.arange(len(x)) // 2) % 2
    config = ifa.IfaConfig(fractions=(0.25, 1.0), random_masks=4, all_samples=True)
    rec_net, arr_net = ifa.analyze_ifa(sp, x, labels, {"site": site}, config)
    rec_map, arr_map = ifa.analyze_ifa(ifa.maps_split(W, b), maps, labels, {"site": site}, config)
    for k in ("importance", "logits", "cams"):
        np.testing.assert_allclose(arr_map[k], arr_net[k], rtol=1e-4, atol=1e-5)
    for a, r in zip(rec_map["decomposition"], rec_net["decomposition"]):
        assert (a["mode"], a["fraction"], a["channels"]) == (r["mode"], r["fraction"], r["channels"])
        for k in ("auroc", "accuracy", "cam_similarity"):
            assert a[k] == pytest.approx(r[k], rel=1e-4, abs=1e-5), (a, r)
    assert rec_map["confounders"]["site"]["channels"] == rec_net["confounders"]["site"]["channels"]
    with pytest.raises(WscaInputError, match="bias must have 2 values"):
        ifa.maps_split(W, np.zeros(3))
