"""Tiny end-to-end: generated images -> train -> checkpoint -> resume -> embed -> analyze."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wsca_jax as wsca
from wsca_jax.cli import main
from wsca_jax.training.data import ImageDataset
from wsca_jax.training.embed import embed
from wsca_jax.training.models import WscaModel, head_weights, split_logits
from wsca_jax.training.train import TrainConfig, fit, load_run, loss_fn


def toy_dataset(n=192, seed=0):
    """16x16 images: a bright square for label 1, a site-coded band on top, noise elsewhere."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    site = rng.integers(0, 3, n)
    img = rng.integers(0, 60, (n, 16, 16, 1)).astype(np.uint8)
    img[y == 1, 4:12, 4:12] += 120
    img[:, :2] = (site * 70)[:, None, None, None].astype(np.uint8)
    split = np.where(np.arange(n) % 6 == 0, 1, np.where(np.arange(n) % 6 == 1, 2, 0)).astype(np.int8)
    return ImageDataset("toy", img, {"label": y, "site": np.array(["a", "b", "c"])[site]}, split, np.arange(n))


CFG = TrainConfig(setting="multi_task", widths=(8, 16), epochs=3, batch_size=32, learning_rate=5e-3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    ds = toy_dataset()
    full = fit(ds, "label", ["site"], CFG, str(d / "full"), progress=False)
    fit(ds, "label", ["site"], CFG, str(d / "cut"), progress=False, max_epochs=1)
    resumed = fit(ds, "label", ["site"], CFG, str(d / "cut"), resume=True, progress=False)
    return ds, d, full, resumed


def test_resume_equals_uninterrupted(runs):
    ds, d, full, resumed = runs
    _, p1, _ = load_run(str(d / "full"), "latest")
    _, p2, _ = load_run(str(d / "cut"), "latest")
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert full["test"]["label"]["auroc"] > 0.9            # the square is easy to see
    rec = json.loads((d / "full" / "run.json").read_text())
    assert [t["name"] for t in rec["tasks"]] == ["label", "site"] and rec["tasks"][1]["classes"] == ["a", "b", "c"]


def test_resuming_a_finished_run_keeps_its_record(runs, tmp_path):
    """Issue 27: ``--resume`` of a finished run trained nothing and wrote a throughput of 0.0."""
    import shutil
    ds, d, full, _ = runs
    shutil.copytree(d / "full", tmp_path / "again")
    again = fit(ds, "label", ["site"], CFG, str(tmp_path / "again"), resume=True, progress=False)
    assert again["throughput_images_per_s"] == full["throughput_images_per_s"] > 0
    assert again["history"] == full["history"] and again["test"] == full["test"]


def test_run_json_config_is_the_train_config(runs):
    """run.json's config: every TrainConfig field, in declaration order, as before the Config rewrite;
    load_run reads it back into the same TrainConfig; a bad value is one line naming the flag."""
    _, d, _, _ = runs
    rec = json.loads((d / "full" / "run.json").read_text())
    assert list(rec["config"]) == ["setting", "backbone", "widths", "epochs", "batch_size", "learning_rate",
                                   "weight_decay", "warmup_epochs", "augment", "class_weights", "task_weights", "seed"]
    assert rec["config"]["widths"] == [8, 16] and rec["config"]["learning_rate"] == 5e-3
    assert TrainConfig.from_dict(rec["config"]) == CFG
    with pytest.raises(wsca.WscaInputError, match=r"^--epochs must be an integer >= 1, found 0$"):
        CFG.replace(epochs=0)
    with pytest.raises(wsca.WscaInputError, match=r"^--widths must be None or a list of integers >= 1"):
        TrainConfig(widths=(8, 0))


def test_embed_heads_reproduce_logits_and_analyze_reads_them(runs):
    ds, d, _, _ = runs
    out = embed(str(d / "full"), ds, "train", which="latest", feature_maps=True)
    assert out["embeddings"].shape == ((ds.split == 0).sum(), 16) and out["feature_maps"].shape[-1] == 16
    model, params, rec = load_run(str(d / "full"), "latest")
    x = ds.select_split("train").images
    logits = np.asarray(model.apply({"params": params}, jnp.asarray(x))["logits"])
    recon = np.concatenate([out["embeddings"] @ out["head_label"].T + out["bias_label"],
                            out["embeddings"] @ out["head_site"].T + out["bias_site"]], 1)
    np.testing.assert_allclose(recon, logits, atol=1e-4)
    stored = np.concatenate([out["logits_label"], out["logits_site"]], 1)
    np.testing.assert_allclose(stored, logits, atol=1e-4)
    small = embed(str(d / "full"), ds, "train", which="latest", batch_size=48)    # 128 rows: the last batch padded
    assert len(x) % 48 != 0
    np.testing.assert_allclose(small["embeddings"], out["embeddings"], atol=1e-5)
    np.testing.assert_allclose(small["logits_label"], out["logits_label"], atol=1e-5)
    # the stored maps, head and bias are all a CAM analysis needs (wsca_jax.maps_split)
    from wsca_jax.ifa import ifa_arrays, maps_split
    r = ifa_arrays(maps_split(out["head_label"], out["bias_label"]), out["feature_maps"])
    np.testing.assert_allclose(r["logits"], logits[:, :2], atol=1e-4)
    res = wsca.analyze(out["embeddings"], {k: out[k] for k in ("label", "site")}, "label", primary_head=out["head_label"], config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8))
    assert res.primary["source"] == "head" and "site" in res.tasks


def test_pooling_head_is_the_mean_of_the_evidence_map():
    model = WscaModel(head_classes=(2,), setting="pooling", widths=(4, 8))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (3, 16, 16, 1), dtype=np.uint8))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    out = model.apply({"params": params}, x)
    emb = np.asarray(out["embedding"])
    assert emb.shape == (3, 16)                              # the flattened 4x4 evidence map
    (head,) = head_weights(params, (2,), "pooling", emb.shape[1])
    np.testing.assert_allclose(emb @ np.asarray(head).T, np.asarray(out["logits"]), atol=1e-5)


def test_missing_labels_do_not_enter_the_loss():
    model = WscaModel(head_classes=(2, 3), setting="multi_task", widths=(4, 8))
    x = jnp.asarray(np.random.default_rng(1).integers(0, 255, (6, 16, 16, 1), dtype=np.uint8))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    w = jnp.ones((2, 3))
    y = jnp.asarray([[0, 1], [1, -1], [0, 2], [1, 0], [0, -1], [1, 2]])
    full = loss_fn(params, model.apply, x, y, w, (2, 3))
    keep = np.array([0, 2, 3, 5])
    # the second head sees only rows 0, 2, 3, 5; the first sees all
    l1 = loss_fn(params, model.apply, x, y.at[:, 1].set(-1), w, (2, 3))      # head 2 empty: 0
    l2 = loss_fn(params, model.apply, x[keep], y[keep], w, (2, 3))
    out = model.apply({"params": params}, x)
    lg = split_logits(out["logits"], (2, 3))
    import optax
    ce1 = float(optax.softmax_cross_entropy_with_integer_labels(lg[0], y[:, 0]).mean())
    ce2 = float(optax.softmax_cross_entropy_with_integer_labels(lg[1][keep], y[keep, 1]).mean())
    assert float(full) == pytest.approx((ce1 + ce2) / 2, rel=1e-5)
    assert float(l1) == pytest.approx(ce1 / 2, rel=1e-5)
    assert np.isfinite(float(l2))


def test_cli_train_embed_analyze(tmp_path, capsys):
    ds = toy_dataset(n=128, seed=3)
    np.savez(tmp_path / "toy.npz", images=ds.images, label=ds.columns["label"], site=ds.columns["site"],
             split=ds.split)
    run = tmp_path / "run"
    tf = str(tmp_path / "tfds")
    assert main(["train", "--dataset", str(tmp_path / "toy.npz"), "--primary", "label", "--setting", "multi_task",
                 "--tasks", "site", "--epochs", "1", "--batch-size", "32", "--quiet", "--tfds-dir", tf,
                 "--out", str(run)]) == 0
    assert any(p.startswith("toy-") for p in os.listdir(os.path.join(tf, "wsca_images")))   # array_record copy
    assert main(["embed", "--run", str(run), "--split", "train", "--tfds-dir", tf,
                 "--out", str(tmp_path / "emb.npz")]) == 0
    assert main(["analyze", "--embeddings", str(tmp_path / "emb.npz"), "--primary", "label", "--pca-min", "8",
                 "--bootstrap", "0", "--permutations", "0",
                 "--quiet", "--no-figures", "--out", str(tmp_path / "wsc")]) == 0
    d = json.loads((tmp_path / "wsc" / "wsca.json").read_text())
    assert d["primary"]["source"] == "head" and list(d["tasks"]) == ["site"]
    # a counterfactual copy: the same rows with the site band of the next site, embedded by the same run
    cf_img = ds.images.copy()
    site = np.searchsorted(["a", "b", "c"], ds.columns["site"])
    cf_img[:, :2] = (((site + 1) % 3) * 70)[:, None, None, None].astype(np.uint8)
    np.savez(tmp_path / "cf.npz", images=cf_img, label=ds.columns["label"], site=ds.columns["site"], split=ds.split)
    capsys.readouterr()
    assert main(["embed", "--run", str(run), "--dataset", str(tmp_path / "cf.npz"), "--split", "train", "--tfds-dir", tf,
                 "--out", str(tmp_path / "cf_emb.npz")]) == 0
    assert "is not the data the run was trained on" in capsys.readouterr().out          # a note, not a refusal
    np.savez(tmp_path / "big.npz", images=np.zeros((8, 32, 32, 1), np.uint8), label=np.arange(8) % 2,
             split=np.zeros(8, np.int8))
    assert main(["embed", "--run", str(run), "--dataset", str(tmp_path / "big.npz"), "--tfds-dir", tf,
                 "--out", str(tmp_path / "big_emb.npz")]) == 2
    out, err = capsys.readouterr()
    assert "expected the run's image shape" in err and len(err.strip().splitlines()) == 1 and "note" not in out
    assert not any(p.startswith("big-") for p in os.listdir(os.path.join(tf, "wsca_images")))   # nothing prepared
    ctl_img = ds.images.copy()                     # a control of the same size: the next site's band at the bottom
    ctl_img[:, -2:] = (((site + 1) % 3) * 70)[:, None, None, None].astype(np.uint8)
    np.savez(tmp_path / "ctl.npz", images=ctl_img, label=ds.columns["label"], site=ds.columns["site"], split=ds.split)
    assert main(["embed", "--run", str(run), "--dataset", str(tmp_path / "ctl.npz"), "--split", "train",
                 "--tfds-dir", tf, "--out", str(tmp_path / "ctl_emb.npz")]) == 0
    capsys.readouterr()
    assert main(["analyze", "--embeddings", str(tmp_path / "emb.npz"), "--primary", "label", "--pca-min", "8",
                 "--bootstrap", "20", "--permutations", "0", "--counterfactual", f"site={tmp_path / 'cf_emb.npz'}",
                 "--counterfactual-control", f"site={tmp_path / 'ctl_emb.npz'}",
                 "--quiet", "--no-figures", "--out", str(tmp_path / "wsc_cf")]) == 0
    printed = capsys.readouterr().out
    s = json.loads((tmp_path / "wsc_cf" / "wsca.json").read_text())["tasks"]["site"]["summary"]
    cf = s["statistics"]["counterfactual"]
    e0, e1 = np.load(tmp_path / "emb.npz"), np.load(tmp_path / "cf_emb.npz")
    h, b = e0["head_label"], e0["bias_label"]
    s0, s1 = (z @ h.T + b for z in (e0["embeddings"], e1["embeddings"]))
    d0, d1 = s0[:, 1] - s0[:, 0], s1[:, 1] - s1[:, 0]
    assert cf["estimate"] == pytest.approx(np.abs(d1 - d0).mean() / d0.std(), rel=1e-3)   # the measured response
    assert cf["p_value"] is None and cf["ci"][0] <= cf["estimate"] <= cf["ci"][1]
    s2 = (np.load(tmp_path / "ctl_emb.npz")["embeddings"] @ h.T + b)
    d2 = s2[:, 1] - s2[:, 0]
    assert cf["control"]["estimate"] == pytest.approx(np.abs(d2 - d0).mean() / d0.std(), rel=1e-3)   # the control's
    assert cf["excess"] == pytest.approx(cf["estimate"] - cf["control"]["estimate"], abs=1e-9)
    assert cf["excess_ci"][0] <= cf["excess"] <= cf["excess_ci"][1]
    du = s["decision_use"]
    assert du["statistic"] == "counterfactual" and ("control" in du["reason"] or du["verdict"] == "not used")
    # the counterfactual as its own control: the excess is 0 on every resample (a paired bootstrap), never "used"
    assert main(["analyze", "--embeddings", str(tmp_path / "emb.npz"), "--primary", "label", "--pca-min", "8",
                 "--bootstrap", "20", "--permutations", "0", "--counterfactual", f"site={tmp_path / 'cf_emb.npz'}",
                 "--counterfactual-control", f"site={tmp_path / 'cf_emb.npz'}",
                 "--quiet", "--no-figures", "--out", str(tmp_path / "wsc_self")]) == 0
    s_self = json.loads((tmp_path / "wsc_self" / "wsca.json").read_text())["tasks"]["site"]["summary"]
    cf_self = s_self["statistics"]["counterfactual"]
    assert cf_self["excess"] == 0 and cf_self["excess_ci"] == [0, 0] and s_self["decision_use"]["verdict"] != "used"
    assert "site: decision use -- " in printed
    assert main(["embed", "--run", str(run), "--split", "val", "--tfds-dir", tf, "--out", str(tmp_path / "val.npz")]) == 0
    capsys.readouterr()
    assert main(["analyze", "--embeddings", str(tmp_path / "emb.npz"), "--primary", "label", "--counterfactual",
                 f"site={tmp_path / 'val.npz'}", "--quiet", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "--counterfactual site" in err and "expected the same rows" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "bad" / "wsca.json")
    capsys.readouterr()
    assert main(["embed", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "no run.json" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.npz")


@pytest.mark.parametrize("backbone,widths,maps", [("small_cnn", None, (4, 4, 64)), ("resnet18", (8, 16, 16, 32), (2, 2, 32)),
                                                  ("sononet", (8,), (2, 2, 32))])
def test_backbones_shapes_and_a_training_step(backbone, widths, maps):
    from flax.training import train_state
    from wsca_jax.training.train import make_optimizer, make_train_step
    model = WscaModel(head_classes=(2, 3), setting="multi_task", backbone=backbone, widths=widths)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 32, 32, 1), dtype=np.uint8))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    out = model.apply({"params": params}, x)
    assert out["feature_maps"].shape[1:] == maps and out["embedding"].shape == (4, maps[-1])
    assert out["logits"].shape == (4, 5)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                          tx=make_optimizer(TrainConfig(epochs=1), 2))
    step = make_train_step((2, 3), augment=True)
    y = jnp.asarray([[0, 1], [1, 2], [0, -1], [1, 0]])
    state, loss = step(state, x, y, jnp.ones((2, 3)), jax.random.PRNGKey(1))
    assert np.isfinite(float(loss)) and int(state.step) == 1


def test_class_order_matches_analysis_and_missing_text_round_trips(tmp_path):
    from wsca_jax.training.train import encode_labels
    from wsca_jax.tasks import build_tasks
    import pandas as pd
    cols = {"y": np.array([9, 10, 9, 10, 2]), "site": np.array(["b", None, "a", "b", "a"], dtype=object)}
    lab, specs = encode_labels(cols, ["y", "site"])
    ts = build_tasks(pd.DataFrame(cols), "y", min_class_count=1)
    assert specs[0].classes == ts.primary.classes == ("2", "9", "10")
    np.testing.assert_array_equal(lab[:, 0], ts.primary.labels)
    assert specs[1].classes == ("a", "b") and lab[1, 1] == -1
