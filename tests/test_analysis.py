"""End-to-end behaviour of wsca.analyze: known answers, calibration, schema."""

import json

import numpy as np
import pandas as pd
import pytest

import wsca_jax as wsca
from conftest import make_known_answer


def test_used_metadata_is_detected(known_answer):
    z, meta, head = known_answer(n=800, d=64, used=True, seed=0)
    res = wsca.analyze(z, meta, "label", primary_head=head, config=wsca.AnalysisConfig().replace(bootstrap=100, permutations=100, pca_min=64))
    s = res.tasks["site"].summary
    assert res.tasks["site"].probe["auroc"] > 0.9
    assert s["max_abs_wsc"] > 2 * s["random_direction_q95"]
    assert s["p_value"] < 0.01 and s["p_adjusted"] < 0.01
    assert s["ci"][0] > s["random_direction_q95"]
    assert s["verdict"].startswith("aligned")
    # k sensitivity: the same fits projected to each k; at the k used it equals the summary
    ks = res.k_sensitivity
    q = ks["ks"].index(res.pca["components"])
    v = ks["tasks"]["site"]
    assert v["max_abs_wsc"][q] == pytest.approx(s["max_abs_wsc"], abs=1e-5)
    assert v["null_q95"][q] == pytest.approx(s["null_q95"], abs=1e-5)
    assert ks["ks"][0] == 10 and ks["rank"] == 64 and len(v["random_q95"]) == len(ks["ks"])
    assert v["random_q95"][0] > v["random_q95"][-1]          # random cosines shrink as k grows


def test_encoded_but_unused_metadata_is_not(known_answer):
    z, meta, head = known_answer(n=800, d=64, used=False, seed=0)
    res = wsca.analyze(z, meta, "label", primary_head=head, config=wsca.AnalysisConfig().replace(bootstrap=100, permutations=100, pca_min=64))
    t = res.tasks["site"]
    assert t.probe["auroc"] > 0.9                           # encoded
    assert np.all(t.ci_low <= 0) and np.all(t.ci_high >= 0)  # every cell's CI includes 0
    assert t.summary["p_value"] > 0.05
    assert t.summary["verdict"].startswith("not detected")


def test_primary_probe_and_one_logit_head(known_answer):
    z, meta, head = known_answer(n=800, d=24, used=True, seed=1)
    probe_res = wsca.analyze(z, meta, "label", config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=24))
    assert probe_res.primary["source"] == "probe" and probe_res.primary["probe"]["auroc"] > 0.95
    one = wsca.analyze(z, meta, "label", primary_head=head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=24))       # (D,) head: one row
    assert one.tasks["site"].wsc.shape == (1, 2) and not one.primary["centered"]
    two = wsca.analyze(z, meta, "label", primary_head=np.stack([-head, head]) / 2, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=24))
    assert two.tasks["site"].wsc.shape == (2, 2)
    np.testing.assert_allclose(np.abs(two.tasks["site"].wsc), one.tasks["site"].summary["max_abs_wsc"], atol=1e-5)


def test_calibration_of_permutation_pvalues():
    """Unused metadata: p-values spread over (0, 1]; used: consistently small."""
    p_null, p_used = [], []
    for seed in range(8):
        for used, store in ((False, p_null), (True, p_used)):
            z, meta, head = make_known_answer(n=300, d=32, seed=100 + seed, used=used, balanced=False)
            res = wsca.analyze(z, meta, "label", primary_head=head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=49, pca_min=32, seed=seed))
            store.append(res.tasks["site"].summary["p_value"])
    p_null, p_used = np.array(p_null), np.array(p_used)
    assert (p_null < 0.05).sum() <= 2 and np.median(p_null) > 0.2
    assert np.all(p_used <= 0.02)


def test_group_column_and_missing_values(known_answer):
    z, meta, head = known_answer(n=600, d=16, used=True, seed=2)
    meta = meta.assign(patient=np.arange(600) // 2, site=meta["site"].astype(float))
    meta.loc[:29, "site"] = np.nan
    res = wsca.analyze(z, meta, "label", primary_head=head, config=wsca.AnalysisConfig().replace(group_column="patient", bootstrap=20, permutations=20, pca_min=16))
    assert set(res.tasks) == {"site"} and res.tasks["site"].n_used == 570
    assert res.settings["encoding"]["group_column"] == "patient"
    assert "groups" in res.resolved["permutation_scheme"]


def test_to_dict_follows_the_schema(tmp_path, known_answer):
    z, meta, head = known_answer(n=300, d=8, used=False, seed=3)
    meta["age"] = np.random.default_rng(0).normal(40, 10, 300)
    meta["const"] = 1
    res = wsca.analyze(z, meta, "label", config=wsca.AnalysisConfig().replace(bootstrap=10, permutations=10, pca_min=8, bins=3, binning="uniform"))
    res.to_json(tmp_path / "wsca.json")
    d = json.loads((tmp_path / "wsca.json").read_text())
    assert set(d) >= {"wsca_version", "n_samples", "embedding_dim", "settings", "pca", "primary", "tasks", "skipped"}
    # settings is the AnalysisConfig serialised, one section per concern; it reads back as the same config
    assert set(d["settings"]) == {"encoding", "projection", "probe", "resampling", "inference"}
    assert d["settings"]["resampling"]["bootstrap"] == 10 and d["settings"]["encoding"]["bins"] == 3
    assert wsca.AnalysisConfig.from_dict(d["settings"]) == wsca.AnalysisConfig().replace(
        bootstrap=10, permutations=10, pca_min=8, bins=3, binning="uniform")
    assert d["resolved"]["permutations"] == 10 and d["resolved"]["probe"]["chunk"] >= 1
    assert d["pca"]["components"] == 8 and d["primary"]["source"] == "probe"
    assert d["skipped"] == {"const": "constant (fewer than two distinct values)"}
    age = d["tasks"]["age"]
    assert age["kind"] == "binned" and len(age["classes"]) == 3 and age["classes"][0].startswith("[")
    for key in ("wsc", "ci_low", "ci_high", "p_value"):
        assert np.shape(age[key]) == (2, 3)
    assert set(age["probe"]) >= {"accuracy", "balanced_accuracy", "auroc", "chance"}
    assert set(age["summary"]) >= {"max_abs_wsc", "cell", "ci", "p_value", "p_adjusted"}
    no_stats = wsca.analyze(z, meta, "label", config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8)).to_dict()["tasks"]["site"]
    assert no_stats["ci_low"] is None and no_stats["p_value"] is None and no_stats["summary"]["ci"] is None


def test_fixed_task_heads_known_cosines_and_pca_only_intervals(known_answer):
    """Jointly trained heads are compared head to head: with k = D the WSC is the plain cosine of the
    centred rows; the bootstrap resamples only the projection; the probe still gives quality. The probe
    permutation null is another statistic's null: fixed heads get a reference band, never a p-value."""
    z, meta, head = known_answer(n=600, d=12, used=True)
    site_head = np.zeros((2, 12))
    site_head[:, 1] = [-1.0, 1.0]
    site_head[:, 2] = [0.5, -0.5]
    res = wsca.analyze(z, meta, "label", np.stack([-head / 2, head / 2]), task_heads={"site": site_head}, config=wsca.AnalysisConfig().replace(pca_min=12, bootstrap=40, permutations=40, seed=1))
    t = res.tasks["site"]
    a = head / np.linalg.norm(head)
    b = (site_head[1] - site_head[0]) / np.linalg.norm(site_head[1] - site_head[0])
    expected = float(a @ b)                           # centred 2-row heads: rows are -/+ half differences
    np.testing.assert_allclose(t.wsc, [[expected, -expected], [-expected, expected]], atol=1e-5)
    assert t.source == "head" and t.to_dict()["source"] == "head"
    assert t.summary["probe_max_abs_wsc"] > 0.5      # the site probe (axis 1) also aligns with e0 + e1
    lo, hi = t.summary["ci"]
    assert lo <= abs(expected) + 1e-4 and hi >= abs(expected) - 1e-4   # k = D: the projection cannot move
    assert t.probe["auroc"] > 0.85
    s = t.summary
    # without a null of its own statistic a fixed head is not tested (the probe null is another statistic's)
    assert s["p_value"] is None and s["p_adjusted"] is None and t.p_value is None and s["test"] is None
    assert s["verdict"].startswith("not tested") and s["probe_null_q95"] > 0
    assert s["null_q95"] is None          # the probe null's 95% point is kept only beside the probe's own value
    assert res.resolved["task_heads"] == ["site"] and "seed null" in res.resolved["fixed_head_inference"]
    # with heads of networks trained on permuted labels: p over those networks
    assert wsca.fixed_head_wsc(z, np.stack([-head / 2, head / 2]), site_head,
                               wsca.analysis.ProjectionConfig(pca_min=12)) == pytest.approx(abs(expected), abs=1e-5)
    hn = np.r_[np.linspace(0.0, abs(expected) - 0.01, 17), [abs(expected) + 0.01, 0.9]]
    res2 = wsca.analyze(z, meta, "label", np.stack([-head / 2, head / 2]), task_heads={"site": site_head}, head_null={"site": hn}, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=12, seed=1))
    s2 = res2.tasks["site"].summary
    assert s2["test"] == "seed_null" and s2["p_value"] == pytest.approx(3 / 20) and s2["head_null_n"] == 19
    assert s2["null_q95"] == s2["head_null_q95"] == pytest.approx(np.quantile(hn, 0.95))
    assert s2["p_value_mcse"] == pytest.approx(np.sqrt(0.15 * 0.85 / 19))
    assert s2["p_adjusted"] == pytest.approx(3 / 20) and s2["verdict"].startswith("not detected")
    assert any("PCA projection only" in c for c in s["caveats"])
    assert any("permuted attribute labels" in c for c in s["caveats"])


def test_fixed_task_heads_bad_input():
    from wsca_jax.errors import WscaInputError
    z, meta, head = make_known_answer(n=200, d=8)
    with pytest.raises(WscaInputError, match="no such analysed task"):
        wsca.analyze(z, meta, "label", head, task_heads={"scanner": np.ones((2, 8))}, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8))
    with pytest.raises(WscaInputError, match="head of task 'site': 3 rows"):
        wsca.analyze(z, meta, "label", head, task_heads={"site": np.ones((3, 8))}, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8))
    with pytest.raises(WscaInputError, match="needs the model's primary head"):
        wsca.analyze(z, meta, "label", None, task_heads={"site": np.ones((2, 8))}, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8))


def test_conditional_null_absorbs_a_confounded_design():
    """A biased design: site goes with the label, the head uses only the label axis. The unconditional
    null calls the site probe aligned (it leans on the label); permuting within label classes does not."""
    rng = np.random.default_rng(0)
    n, d = 800, 10
    y = rng.integers(0, 2, n)
    site = np.where(rng.random(n) < 0.85, y, 1 - y)              # 85% of each class from 'its' site
    z = rng.normal(size=(n, d))
    z[:, 0] += 2.0 * (2 * y - 1)
    z[:, 1] += 0.7 * (2 * site - 1)                              # weakly encoded on its own axis
    head = np.eye(d)[0]
    meta = pd.DataFrame({"label": y, "site": site})
    free = wsca.analyze(z, meta, "label", head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=99, pca_min=d, seed=3))
    cond = wsca.analyze(z, meta, "label", head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=99, pca_min=d, seed=3, permute_within="label"))
    assert free.tasks["site"].summary["p_value"] < 0.05
    assert cond.tasks["site"].summary["p_value"] > 0.05
    assert "conditional" in cond.resolved["permutation_scheme"]


def test_permutations_keep_each_tasks_missing_rows():
    """Rows without a label stay out of every permuted fit: the null uses the same rows as the observed
    fit (a task with 40% missing and one with none)."""
    from wsca_jax.analysis import permuted_labels
    rng = np.random.default_rng(0)
    n = 300
    a = rng.integers(0, 3, n)
    a[rng.random(n) < 0.4] = -1
    b = rng.integers(0, 2, n)
    labels = np.stack([a, b, rng.integers(0, 2, n)])                     # last row: the primary (kept)
    groups = np.repeat(np.arange(100), 3)
    plab = permuted_labels(rng, labels, 2, 50, groups)
    assert np.all((plab[:, 0] >= 0) == (a >= 0))                         # missing rows never move
    assert np.all(plab[:, 2] == labels[2])                               # the primary is not permuted
    for p in plab[:, 0]:
        assert sorted(p[a >= 0]) == sorted(a[a >= 0]) and not np.all(p == a)
    assert np.all(np.sort(plab[:, 1], axis=1) == np.sort(b))


def test_adaptive_permutations_add_batches_only_near_alpha(known_answer):
    """A clear effect decided by the first batch stops there (p = 1/301 is more than 3 Monte Carlo SE
    below 0.05); a p near alpha gets more permutations (up to the cap) and reports its SE."""
    z, meta, head = known_answer(n=400, d=10, used=True)
    clear = wsca.analyze(z, meta, "label", head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=300, max_permutations=900, pca_min=10, seed=0))
    s = clear.tasks["site"].summary
    assert s["n_permutations"] == 300 and clear.resolved["permutations"] == 300 and s["p_value"] == pytest.approx(1 / 301)
    assert s["p_value_mcse"] == pytest.approx(np.sqrt(s["p_value"] * (1 - s["p_value"]) / 300))
    # a weak effect: the site axis enters the head a little
    rng = np.random.default_rng(5)
    found = None
    for w in (0.12, 0.16, 0.2, 0.25, 0.3):
        h = head.copy()
        h[1] = w
        one = wsca.analyze(z, meta, "label", h, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=50, pca_min=10, seed=1)).tasks["site"].summary
        if 0.02 < one["p_value"] < 0.15:
            found = h
            break
    assert found is not None
    res = wsca.analyze(z, meta, "label", found, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=50, max_permutations=400, pca_min=10, seed=1))
    s = res.tasks["site"].summary
    assert s["n_permutations"] > 50 and s["n_permutations"] <= 400 and len(res.tasks["site"].null) == s["n_permutations"]


def test_a_fit_that_did_not_converge_is_flagged_everywhere(known_answer, tmp_path):
    """An iteration cap the probes cannot meet (and no Newton steps to polish): a UserWarning, converged False in the task's fit, a
    caveat, top-level warnings in wsca.json and in the HTML report -- never a silent value."""
    from wsca_jax.report import render_html
    z, meta, head = known_answer(n=300, d=8)
    with pytest.warns(UserWarning, match="did not converge"):
        res = wsca.analyze(z, meta, "label", head, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8, max_iter=1, warm_iter=1, newton_steps=0))
    t = res.tasks["site"]
    assert t.fit["converged"] is False and t.fit["replicates_not_converged"]["cv"] > 0
    assert any("did not converge" in c for c in t.summary["caveats"])
    d = res.to_dict()
    assert d["tasks"]["site"]["fit"]["converged"] is False and d["warnings"]
    assert res.diagnostics["fits_not_converged"] > 0
    assert "did not converge" in render_html(res, {})
    # a primary *probe* that did not converge is named in every task's caveats
    with pytest.warns(UserWarning, match="did not converge"):
        res = wsca.analyze(z, meta, "label", None, config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8, max_iter=1, warm_iter=1, newton_steps=0))
    assert res.primary["fit"]["converged"] is False
    assert "primary probe ('label') did not converge" in res.tasks["site"].summary["caveats"][0]


def test_cross_validation_starts_cold(known_answer):
    """Held-out probe quality must not depend on the full-data fit: with warm starts capped at 0
    iterations a warm-started fold would *be* the full-data fit (which has seen the fold) and its
    held-out AUROC would change; cold folds do not read warm_iter at all."""
    z, meta, head = known_answer(n=300, d=48, used=False, seed=3)
    rng = np.random.default_rng(0)
    meta = meta.assign(noisy=np.where(rng.random(300) < 0.3, 1 - meta["site"], meta["site"]))  # label noise
    common = wsca.AnalysisConfig().replace(tasks=["noisy"], pca_min=48, bootstrap=0, permutations=0, seed=0)
    a = wsca.analyze(z, meta, "label", head, config=common.replace(warm_iter=500)).tasks["noisy"].probe
    b = wsca.analyze(z, meta, "label", head, config=common.replace(warm_iter=0)).tasks["noisy"].probe
    assert a["auroc"] == b["auroc"] and a["accuracy"] == b["accuracy"]
    assert a["auroc"] < 0.8                    # held out: the 30% flipped labels cost it
