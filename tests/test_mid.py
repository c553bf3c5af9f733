"""MID's pure pieces (issue 12): margins and the band, k-means (parity with scikit-learn), silhouette,
enrichment (against scipy's exact tables), mislabel scores (against scikit-learn's neighbours)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from wsca_jax import WscaInputError
from wsca_jax.mitigation.mining import band, best_per_k, choose_k, enrichment, kmeans, lloyd, margins, mislabel_scores, silhouette


def test_margins_binary_and_top_two():
    np.testing.assert_allclose(margins(np.array([[0.0, 2.0], [1.0, -1.0]])), [2.0, -2.0])
    np.testing.assert_allclose(margins(np.array([0.5, -3.0])), [0.5, -3.0])
    np.testing.assert_allclose(margins(np.array([[1.0, 4.0, 3.5], [0.0, 0.0, -1.0]])), [0.5, 0.0])
    np.testing.assert_allclose(margins(np.array([[0.5], [-3.0]])), [0.5, -3.0])       # (N, 1): one logit
    with pytest.raises(WscaInputError, match=r"1 row\(s\) with NaN or inf logits \(first: row 0\)"):
        margins(np.array([[0.0, np.nan]]))


def test_band_takes_the_share_nearest_zero_per_predicted_class():
    m = np.array([-3.0, -0.1, -2.0, -0.5, 0.2, 4.0, 0.05, 1.0, 3.0, 2.5])
    pred = (m > 0).astype(int)                      # class 0: 4 rows, class 1: 6 rows
    got = band(m, pred, quantile=0.5)
    assert set(np.flatnonzero(got)) == {1, 3, 6, 4, 7}          # 2 of class 0 (|m| 0.1, 0.5), 3 of class 1
    np.testing.assert_array_equal(band(m, threshold=0.3), np.abs(m) <= 0.3)
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(WscaInputError, match="--band must be in"):
            band(m, pred, quantile=q)


def test_lloyd_from_the_same_centres_matches_scikit_learn():
    x, _ = make_blobs(n_samples=600, centers=5, n_features=8, cluster_std=2.5, random_state=0)
    fit = kmeans(x, ks=[5], restarts=1, seed=3)
    init = fit.centres[0, :5]
    ours = lloyd(x, init)
    sk = KMeans(5, init=init.astype(np.float64), n_init=1, algorithm="lloyd", tol=1e-4).fit(x)
    assert ours.converged[0]
    assert abs(ours.inertia[0] - sk.inertia_) <= 0.01 * sk.inertia_
    assert adjusted_rand_score(ours.labels[0], sk.labels_) > 0.99
    # the batched fit is Lloyd from the same seeding
    assert abs(fit.inertia[0] - ours.inertia[0]) <= 1e-3 * ours.inertia[0]


def test_batched_kmeans_over_k_and_restarts_is_as_good_as_scikit_learn_and_finds_the_planted_k():
    x, truth = make_blobs(n_samples=900, centers=4, n_features=6, cluster_std=1.0, random_state=1)
    fit = kmeans(x, ks=range(2, 8), restarts=5, seed=0)
    assert fit.labels.shape == (6 * 5, 900) and list(fit.ks[:5]) == [2] * 5
    best = best_per_k(fit)
    for k, i in best.items():
        sk = KMeans(k, n_init=10, random_state=0).fit(x)
        assert fit.inertia[i] <= 1.01 * sk.inertia_, k
    k, sil = choose_k(x, fit)
    assert k == 4 and adjusted_rand_score(truth, fit.labels[best[4]]) > 0.99
    again = kmeans(x, ks=range(2, 8), restarts=5, seed=0)          # seeded and deterministic
    np.testing.assert_array_equal(again.labels, fit.labels)


def test_silhouette_equals_scikit_learn_on_the_same_rows():
    x, y = make_blobs(n_samples=300, centers=3, n_features=5, random_state=2)
    assert silhouette(x, y, sample=None) == pytest.approx(silhouette_score(x, y), abs=1e-4)
    idx = np.sort(np.random.default_rng(7).choice(300, 120, replace=False))
    assert silhouette(x, y, sample=120, seed=7) == pytest.approx(silhouette_score(x[idx], y[idx]), abs=1e-4)


def test_enrichment_matches_the_exact_two_by_two_tables():
    rng = np.random.default_rng(0)
    group = rng.choice(["a", "b", "c"], 400, p=[0.7, 0.2, 0.1])
    subset = np.where(group == "c", rng.random(400) < 0.8, rng.random(400) < 0.1)   # enriched for c
    cols = {"group": group, "age": np.where(rng.random(400) < 0.1, None, rng.choice(["old", "young"], 400))}
    t = enrichment(subset, cols)
    assert len(t) == 5 and t.p_holm.between(0, 1).all()
    row = t[(t.column == "group") & (t.value == "c")].iloc[0]
    hit = group == "c"
    table = [[(hit & subset).sum(), (~hit & subset).sum()], [(hit & ~subset).sum(), (~hit & ~subset).sum()]]
    ref = sps.contingency.odds_ratio(table, kind="conditional")
    assert row.odds_ratio == pytest.approx(ref.statistic) and row.ci_low > 1
    assert row.p_value == pytest.approx(sps.fisher_exact(table).pvalue)
    assert row.share_subset == pytest.approx(table[0][0] / subset.sum()) and row.share_all == pytest.approx(hit.mean())
    age = t[t.column == "age"]                                        # missing ages left out
    assert age.share_all.sum() == pytest.approx(1.0) and age.p_holm.min() > 0.05
    assert row.p_value == t.p_value.min() and row.p_holm == pytest.approx(min(1.0, 5 * row.p_value))  # Holm's first step


def test_mislabel_scores_match_scikit_learn_neighbours_and_flag_flipped_labels():
    x, y = make_blobs(n_samples=500, centers=2, n_features=4, cluster_std=1.0, random_state=3)
    flipped = np.random.default_rng(1).choice(500, 15, replace=False)
    y = y.copy()
    y[flipped] = 1 - y[flipped]
    s = mislabel_scores(x, y, k=8, batch=128)
    nn = NearestNeighbors(n_neighbors=9).fit(x).kneighbors(x, return_distance=False)[:, 1:]
    np.testing.assert_allclose(s, (y[nn] != y[:, None]).mean(1), atol=1e-6)
    assert set(np.argsort(-s)[:15]) == set(flipped)


# ------------------------------------------------------------------------------ last-layer retraining

def _sk_objective(coef, intercept, x, y, C, w):
    """scikit-learn's L1 logistic objective ||W||_1 + C sum_i w_i loss_i, coef (K', D)."""
    from scipy.special import logsumexp
    z = x @ coef.T + intercept
    if coef.shape[0] == 1:
        loss = np.logaddexp(0, z[:, 0]) - y * z[:, 0]
    else:
        loss = logsumexp(z, 1) - z[np.arange(len(y)), y]
    return np.abs(coef).sum() + C * np.sum(w * loss)


@pytest.mark.parametrize("dataset", ["breast_cancer", "wine"])
def test_l1_logistic_matches_scikit_learn_saga(dataset):
    import warnings
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from wsca_jax.mitigation.retrain import fit_l1_logistic, predict, standardise
    x, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    x, = standardise(x)
    Cs = np.array([0.01, 0.1, 0.5])          # saga needs minutes to converge tightly at larger C here
    w = np.random.default_rng(0).integers(0, 3, len(y)).astype(float)       # refit-like row weights
    fit = fit_l1_logistic(x, y, Cs, sample_weight=w)
    assert fit.converged.all()
    for r, C in enumerate(Cs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sk = LogisticRegression(penalty="l1", solver="saga", C=C, tol=1e-10, max_iter=50_000).fit(x, y, sample_weight=w)
        ours = _sk_objective(fit.coef[r].T, fit.intercept[r], x, y, C, w)
        ref = _sk_objective(sk.coef_, sk.intercept_, x, y, C, w)
        assert ours <= ref * (1 + 1e-4) + 1e-6, (C, ours, ref)
        assert np.mean(predict(fit, x, r) == sk.predict(x)) > 0.99
        big = np.abs(sk.coef_.T) > 0.05 * np.abs(sk.coef_).max()            # same support where it matters
        assert (np.abs(fit.coef[r])[big] > 0).all()
    # batched = one by one
    one = fit_l1_logistic(x, y, Cs[1], sample_weight=w)
    np.testing.assert_allclose(one.coef[0], fit.coef[1], atol=1e-3)         # float32, stopped at tol 1e-5


def test_group_metrics_by_hand():
    from wsca_jax.mitigation.retrain import group_accuracy, weighted_accuracy, worst_group_accuracy
    y = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    pred = np.array([1, 0, 0, 0, 1, 1, 1, 1])
    g = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
    assert group_accuracy(y, pred, g) == {"a": 2 / 3, "b": 2 / 3, "c": 1.0}
    assert worst_group_accuracy(y, pred, g) == 2 / 3
    assert weighted_accuracy(y, pred, g, {"a": 0.5, "b": 0.25, "c": 0.25}) == pytest.approx(0.5 * 2 / 3 + 0.25 * 2 / 3 + 0.25)
    with pytest.raises(WscaInputError, match="no evaluation rows"):
        weighted_accuracy(y, pred, g, {"a": 0.5, "d": 0.5})


# ---------------------------------------------------------------------- methods on a planted shortcut

def _planted(n, p_major, rng, d=20):
    """Waterbirds-like embeddings: axis 0 the label (core), axis 1 the place (spurious, agreeing with
    the label with probability ``p_major``); the ERM head leans on the place."""
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < p_major, y, 1 - y)
    z = rng.normal(size=(n, d))
    z[:, 0] += 1.5 * (2 * y - 1)
    z[:, 1] += 2.0 * (2 * a - 1)
    groups = np.char.add(np.char.add("y", y.astype(str)), np.char.add("_a", a.astype(str)))
    return {"x": z, "y": y, "logits": 1.6 * z[:, 1] + 0.6 * z[:, 0], "groups": groups}


def test_the_band_is_enriched_for_the_minority_and_mid_raises_worst_group_accuracy_without_group_labels():
    from wsca_jax.mitigation import MidConfig
    from wsca_jax.mitigation.mining import retrain_methods
    rng = np.random.default_rng(0)
    val, test = _planted(1200, 0.85, rng), _planted(4000, 0.5, rng)
    shares = {"y0_a0": 0.45, "y1_a1": 0.45, "y0_a1": 0.05, "y1_a0": 0.05}
    config = MidConfig().replace(restarts=5)
    r = retrain_methods(val, test, shares, config)
    m = r["methods"]
    assert m["erm"]["worst_group"] < 0.2                                   # the shortcut hurts the minority
    assert m["dfr"]["worst_group"] >= m["erm"]["worst_group"] + 0.15       # the goals
    assert m["mid"]["worst_group"] >= m["erm"]["worst_group"] + 0.10
    assert m["mid_oracle"]["worst_group"] >= m["mid"]["worst_group"] - 0.05
    for v in m.values():
        assert v["converged"] in (None, True)
    # without any group labels on the validation rows MID still runs, and gives the same head
    blind = retrain_methods({**val, "groups": None}, test, shares,
                            config.replace(methods=("erm", "class_balanced", "mid", "random_band")))
    for name in ("class_balanced", "mid", "random_band"):      # none of them reads the validation rows' groups
        assert blind["methods"][name]["worst_group"] == m[name]["worst_group"], name
        assert blind["methods"][name]["C"] == m[name]["C"], name
    t = enrichment(r["mining"]["band"], {"group": val["groups"]}).set_index("value")
    for minority in ("y0_a1", "y1_a0"):
        assert t.loc[minority, "ci_low"] > 1 and t.loc[minority, "p_holm"] < 0.001
    assert 2 <= r["mining"]["k"] <= 10 and r["mining"]["band"].mean() == pytest.approx(0.2, abs=0.01)


def test_accuracy_intervals_cover_at_their_level():
    """Simulation with known group accuracies: the worst-group interval (Bonferroni Clopper-Pearson,
    conservative by construction) covers at least 95%; the stratified-bootstrap mean interval about 95%."""
    from wsca_jax.mitigation.retrain import accuracy_intervals, weighted_accuracy_interval
    rng = np.random.default_rng(0)
    p = {"a": 0.9, "b": 0.7, "c": 0.72, "d": 0.95}
    n = {"a": 60, "b": 30, "c": 40, "d": 200}
    w = {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}
    worst, mean = min(p.values()), sum(p[g] * w[g] for g in p)
    hit_worst = hit_mean = 0
    reps = 300
    for r in range(reps):
        groups = np.concatenate([[g] * n[g] for g in p])
        y = np.ones(len(groups), int)
        pred = np.concatenate([(rng.random(n[g]) < p[g]).astype(int) for g in p])
        lo, hi = accuracy_intervals(y, pred, groups)["worst_group"]
        hit_worst += lo <= worst <= hi
        lo, hi = weighted_accuracy_interval(y, pred, groups, w, n_boot=1000, seed=r)
        hit_mean += lo <= mean <= hi
    assert hit_worst / reps >= 0.95
    assert 0.91 <= hit_mean / reps <= 0.98


def test_retraining_bad_input_is_one_clear_error():
    from wsca_jax.mitigation import MidConfig
    from wsca_jax.mitigation.mining import kmeans, retrain_methods
    rng = np.random.default_rng(1)
    val, test = _planted(300, 0.8, rng), _planted(300, 0.5, rng)
    shares = {g: 0.25 for g in np.unique(test["groups"])}
    with pytest.raises(WscaInputError, match="need the validation rows' groups"):
        retrain_methods({**val, "groups": None}, test, shares, MidConfig().replace(methods=("erm", "dfr")))
    sparse = {**val, "groups": np.where(val["groups"] == "y0_a1", "y0_a0", val["groups"])}
    with pytest.raises(WscaInputError, match="groups y0_a1 have no validation rows"):
        retrain_methods(sparse, test, shares, MidConfig().replace(methods=("dfr",)))
    with pytest.raises(WscaInputError, match=r"--methods must be one or more of erm, class_balanced, jtt, mid, random_band, mid_oracle, dfr, "
                                             r"found gdro$"):
        MidConfig().replace(methods=("gdro",))
    with pytest.raises(WscaInputError, match=r"--band must be in \(0, 1\), found 1.2"):
        MidConfig().replace(band=1.2)
    with pytest.raises(WscaInputError, match="--k must be at least 2"):
        kmeans(val["x"], ks=[1, 2])
    import wsca_jax.mitigation.mining as mining_module
    real = mining_module.device_memory
    try:                                          # the vmapped call's memory is checked before it runs
        mining_module.device_memory = lambda: 10**8
        with pytest.raises(WscaInputError, match=r"k-means: 2000 fits \(--k x --restarts\) of 300 rows with up to 50 "
                                                 r"clusters need about .* GB at once, over half the 0.1 GB"):
            kmeans(val["x"], ks=[2, 50], restarts=1000)
    finally:
        mining_module.device_memory = real
    with pytest.raises(WscaInputError, match="config: expected a MidConfig, found dict"):
        retrain_methods(val, test, shares, {"methods": ("erm",)})


def test_mid_config_defaults_text_forms_and_round_trip():
    """One default per setting: the WSC check resamples as much as ``wsca analyze`` (200); ``--k`` keeps
    its K / LO:HI text, ranges and lists of counts are accepted; the record's settings rebuild the config."""
    from wsca_jax.analysis.config import ResamplingConfig
    from wsca_jax.mitigation import MidConfig
    c = MidConfig()
    assert c.verification.bootstrap == ResamplingConfig().bootstrap == 200
    assert c.verification.permutations == ResamplingConfig().permutations == 200
    assert c.mining.ks == tuple(range(2, 11)) and MidConfig().replace(k="4").mining.ks == (4,)
    assert MidConfig().replace(k=range(2, 5)).mining.k == (2, 3, 4) and MidConfig().replace(k=3).mining.ks == (3,)
    changed = c.replace(k="2:3", methods=["erm", "dfr"], verify=["place"], groups=["label", "place"], C_grid=[1.0])
    assert changed.retraining.methods == ("erm", "dfr") and MidConfig.from_dict(changed.to_dict()) == changed
    for bad in ("", ":3", "1", "3:2", (2, 2.5), (), True):
        with pytest.raises(WscaInputError, match="--k must be K or LO:HI"):
            MidConfig().replace(k=bad)
    with pytest.raises(WscaInputError, match="MidConfig: unknown setting"):
        MidConfig().replace(quantile=0.1)


def test_flat_keywords_still_work_with_a_deprecation_warning():
    """The 0.8 keywords (old names too: quantile, ks, n_refits, Cs, jtt_up, threshold) give the config's
    result, with a DeprecationWarning; the config form warns about nothing."""
    import warnings

    from wsca_jax.mitigation import MidConfig
    from wsca_jax.mitigation.app import analyze_mid
    from wsca_jax.mitigation.mining import retrain_methods
    rng = np.random.default_rng(2)
    val, test = _planted(300, 0.85, rng), _planted(300, 0.5, rng)
    shares = {g: 0.25 for g in np.unique(test["groups"])}
    config = MidConfig().replace(methods=["erm", "mid", "dfr"], k="2:3", restarts=2, refits=2, band=0.3,
                                 C_grid=[1.0, 0.1], jtt_upweight=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = retrain_methods(val, test, shares, config)
    with pytest.warns(DeprecationWarning, match="retrain_methods: settings as keywords .* are deprecated"):
        old = retrain_methods(val, test, shares, methods=("erm", "mid", "dfr"), quantile=0.3, ks=range(2, 4),
                              restarts=2, n_refits=2, Cs=(1.0, 0.1), jtt_up=5.0)
    assert old["methods"] == new["methods"]
    train = {**val, "head": None, "meta": {}, "classes": ["0", "1"]}
    split = {**test, "head": None, "meta": {}, "classes": ["0", "1"]}
    rec, _ = analyze_mid(train, {**train}, split, config.replace(bootstrap=0, permutations=0))
    with pytest.warns(DeprecationWarning, match="analyze_mid"):
        rec_old, _ = analyze_mid(train, {**train}, split, methods=["erm", "mid", "dfr"], ks=[2, 3], restarts=2,
                                 n_refits=2, band=0.3, Cs=[1.0, 0.1], jtt_up=5.0, bootstrap=0, permutations=0)
    assert rec_old["settings"] == rec["settings"] == config.replace(bootstrap=0, permutations=0).to_dict()
    assert rec["resolved"]["k"] == [2, 3] and rec["resolved"]["retrained_on"] == "validation rows"
    assert rec_old["methods"] == rec["methods"]


# ------------------------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def mid_files(tmp_path_factory):
    """wsca embed-like files of the planted shortcut: embeddings, head_/bias_/logits_label, label, place."""
    d = tmp_path_factory.mktemp("mid")
    rng = np.random.default_rng(0)
    head = np.zeros((2, 20))
    head[1, :2] = [0.6, 1.6]                                     # the ERM head leans on the place axis
    for name, n, p in (("train", 2000, 0.95), ("val", 1200, 0.85), ("test", 3000, 0.5)):
        s = _planted(n, p, rng)
        a = np.array([g.split("_a")[1] for g in s["groups"]])
        np.savez(d / f"{name}.npz", embeddings=s["x"].astype(np.float32), head_label=head, bias_label=np.zeros(2),
                 logits_label=np.stack([np.zeros(n), s["logits"]], 1), label=s["y"], place=a)
    return d


def test_cli_mid_writes_the_record_the_report_and_verifies_with_wsc(mid_files, tmp_path, capsys, chromium):
    import json
    from test_report_browser import check_renders
    from wsca_jax.cli import main
    d, out = mid_files, tmp_path / "mid"
    assert main(["mid", "--train", str(d / "train.npz"), "--val", str(d / "val.npz"), "--test", str(d / "test.npz"),
                 "--primary", "label", "--groups", "label,place", "--k", "2:3", "--restarts", "2", "--refits", "5",
                 "--methods", "erm,mid,dfr",                  # all five: the --run test in test_bad_input.py
                 "--verify", "place", "--bootstrap", "0", "--permutations", "0", "--out", str(out)]) == 0
    rec = json.loads((out / "mid.json").read_text())
    assert set(rec["methods"]) == {"erm", "mid", "dfr"}
    for r in rec["methods"].values():
        assert {"worst_group", "worst_group_ci", "mean", "mean_ci", "per_group", "C", "wsc"} <= set(r)
        assert set(r["per_group"]) == {"label=0,place=0", "label=0,place=1", "label=1,place=0", "label=1,place=1"}
    m = rec["methods"]
    assert m["mid"]["worst_group"] >= m["erm"]["worst_group"] + 0.10 and m["dfr"]["C"] in rec["resolved"]["C_grid"]
    # verify: the ERM head is aligned with the place probe, DFR's retrained head much less so
    assert m["erm"]["wsc"]["place"]["max_abs_wsc"] > 0.8
    assert m["dfr"]["wsc"]["place"]["max_abs_wsc"] < m["erm"]["wsc"]["place"]["max_abs_wsc"] - 0.3
    assert m["erm"]["wsc"]["place"]["within_class_eta"] > 0.6 > 0.3 > m["dfr"]["wsc"]["place"]["within_class_eta"]
    assert m["erm"]["wsc"]["place"]["within_class_eta_p"] < 0.01
    assert rec["band"]["n"] == pytest.approx(0.2 * 1200, abs=2) and 2 <= rec["k"] <= 3
    assert {e["column"] for e in rec["band"]["enrichment"]} == {"label", "group", "place"}    # every metadata column
    assert sorted(p.name for p in out.glob("*.png")) == ["mid_accuracy.png", "mid_clusters.png", "mid_logits.png"]
    assert "worst-group" in capsys.readouterr().out
    check_renders(chromium, out / "report.html", tmp_path, min_figures=3)


@pytest.mark.parametrize("extra, message", [
    (["--groups", ""], "--groups: worst-group accuracy needs the group column"),
    (["--band", "1.5"], "--band must be in (0, 1), found 1.5"),
    (["--band", "0"], "--band must be in (0, 1), found 0.0"),
    (["--k", "1:4"], "--k must be K or LO:HI with 2 <= LO <= HI <= 100, found '1:4'"),
    (["--k", "x"], "--k must be K or LO:HI with 2 <= LO <= HI <= 100, found 'x'"),
    (["--k", "5:3"], "--k must be K or LO:HI with 2 <= LO <= HI <= 100, found '5:3'"),
    (["--k", "2:1000000000"], "--k must be K or LO:HI with 2 <= LO <= HI <= 100, found '2:1000000000'"),
    (["--restarts", "200000"], "--restarts must be an integer from 1 to 1000, found 200000"),
    (["--methods", "erm,gdro"], "--methods must be one or more of erm, class_balanced, jtt, mid, random_band, mid_oracle, dfr, found erm,gdro"),
    (["--methods", ""], "--methods must be one or more of erm, class_balanced, jtt, mid, random_band, mid_oracle, dfr, found none"),
    (["--min-cell", "0"], "--min-cell must be an integer >= 1, found 0"),
    (["--refits", "0"], "--refits must be an integer >= 1, found 0"),
    (["--jtt-upweight", "0"], "--jtt-upweight must be None or a finite number > 0, found 0.0"),
    (["--bootstrap", "-1"], "--bootstrap must be an integer >= 0, found -1"),
    (["--groups", "label,hospital"], "--train: no column 'hospital'"),
    (["--verify", "hospital"], "--verify: no column 'hospital' in the test split"),
    (["--val", "{d}/val_onegroup.npz"], "groups label=0,place=1 have no validation rows"),
    (["--test", "{d}/nologits.npz"], "--test: no logits_label array"),
    (["--val", None], "wsca mid needs --run, or --train, --val and --test (missing --val)"),
    (["--test", "{d}/narrow.npz"], "the splits' embeddings differ in width (--train 20, --val 20, --test 19)"),
    (["--train", "{d}/train_twogroups.npz"], "groups label=0,place=1, label=1,place=0 of the test rows have no training rows"),
    (["--band-threshold", "-1"], "--band-threshold must be None or a finite number > 0, found -1.0"),
    (["--test", "{d}/nan_logits.npz"], "nan_logits.npz: logits_label: 2 row(s) with NaN or inf logits (first: row 3)"),
    (["--val", "{d}/nan_logits.npz"], "nan_logits.npz: logits_label: 2 row(s) with NaN or inf logits"),
    (["--test", "{d}/inf_embeddings.npz"], "inf_embeddings.npz: embeddings have 1 row(s) with NaN or inf (first: row 5)"),
    (["--test", "{d}/three_logits.npz"], "three_logits.npz: logits_label: shape (3000, 3), expected (N,) or (N, 1) "
                                         "(one logit: class 1 when > 0) or (N, 2) for 2 classes"),
    (["--val", "{d}/cube_logits.npz"], "cube_logits.npz: logits_label: shape (3000, 2, 1), expected"),
    (["--band-threshold", "inf"], "--band-threshold must be None or a finite number > 0, found inf"),
    (["--band-threshold", "nan"], "--band-threshold must be None or a finite number > 0, found nan"),
    (["--jtt-upweight", "inf"], "--jtt-upweight must be None or a finite number > 0, found inf"),
    (["--seed", "-1"], "--seed must be an integer >= 0, found -1"),
    # found late (after all the compute) before issue 27
    (["--test", "{d}/test_const.npz", "--verify", "place,const"],
     "--verify const: the test split's column cannot be a task: constant (fewer than two distinct values)"),
    (["--val", "{d}/val_short.npz"], "--val: column 'label' has 1195 values, the embeddings 1200 rows; expected one "
                                     "value per row"),
])
def test_cli_mid_bad_input_one_line_exit_2_nothing_written(mid_files, tmp_path, capsys, monkeypatch, extra, message):
    """Each refusal is one line, exit 2, nothing written -- and comes before the retraining (which
    is made to fail here: a refusal found only after the compute would show as that failure)."""
    from wsca_jax.cli import main
    from wsca_jax.mitigation import app

    def compute(*a, **k):
        raise AssertionError("the retraining started before the refusal")
    monkeypatch.setattr(app, "retrain_methods", compute)
    d = mid_files
    if not (d / "val_onegroup.npz").exists():
        with np.load(d / "val.npz") as z:
            a = dict(z)
        keep = ~((a["label"] == 0) & (a["place"] == "1"))
        np.savez(d / "val_onegroup.npz", **{k: v[keep] if len(v) == len(keep) else v for k, v in a.items()})
        with np.load(d / "test.npz") as z:
            np.savez(d / "nologits.npz", **{k: v for k, v in z.items() if not k.startswith("logits_")})
            np.savez(d / "narrow.npz", **{**dict(z), "embeddings": z["embeddings"][:, :19], "head_label": z["head_label"][:, :19]})
        with np.load(d / "train.npz") as z:
            a = dict(z)
        keep = (a["label"] == 0) == (a["place"] == "0")
        np.savez(d / "train_twogroups.npz", **{k: v[keep] if len(v) == len(keep) else v for k, v in a.items()})
        with np.load(d / "test.npz") as z:
            a = dict(z)
        nan_logits, inf_emb = a["logits_label"].copy(), a["embeddings"].copy()
        nan_logits[[3, 9], 1], inf_emb[5, 2] = np.nan, np.inf
        np.savez(d / "nan_logits.npz", **{**a, "logits_label": nan_logits})
        np.savez(d / "inf_embeddings.npz", **{**a, "embeddings": inf_emb})
        np.savez(d / "three_logits.npz", **{**a, "logits_label": np.zeros((len(nan_logits), 3))})
        np.savez(d / "cube_logits.npz", **{**a, "logits_label": np.zeros((len(nan_logits), 2, 1))})
        np.savez(d / "test_const.npz", **{**a, "const": np.zeros(len(a["label"]))})
        with np.load(d / "val.npz") as z:
            np.savez(d / "val_short.npz", **{**dict(z), "label": z["label"][:-5]})
    args = {"--train": str(d / "train.npz"), "--val": str(d / "val.npz"), "--test": str(d / "test.npz"),
            "--primary": "label", "--groups": "label,place", "--k": "2:3", "--restarts": "2", "--refits": "2",
            "--methods": "erm,mid,dfr"}
    for flag, value in zip(extra[::2], extra[1::2]):
        args[flag] = None if value is None else value.format(d=d)
    argv = ["mid", *[x for k, v in args.items() if v is not None for x in (k, v)], "--out", str(tmp_path / "o")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_one_logit_as_n_or_n_by_1_and_two_logits_give_the_same_erm_result(mid_files, tmp_path):
    """The same model's logits as (N,), (N, 1) and (N, 2), for --val and --test: the same ERM (and JTT,
    which reweights ERM's validation errors) accuracy; (N, 1) is not argmax over one column (all class 0)."""
    import json
    from wsca_jax.cli import main
    d, results = mid_files, []
    for shape in ("n", "n1", "n2"):
        files = {}
        for split in ("val", "test"):
            with np.load(d / f"{split}.npz") as z:
                a = dict(z)
            one = a["logits_label"][:, 1] - a["logits_label"][:, 0]
            a["logits_label"] = {"n": one, "n1": one[:, None], "n2": a["logits_label"]}[shape]
            files[split] = tmp_path / f"{split}_{shape}.npz"
            np.savez(files[split], **a)
        out = tmp_path / shape
        assert main(["mid", "--train", str(d / "train.npz"), "--val", str(files["val"]), "--test", str(files["test"]),
                     "--primary", "label", "--groups", "label,place", "--methods", "erm,jtt", "--refits", "1",
                     "--no-figures", "--out", str(out)]) == 0
        results.append(json.loads((out / "mid.json").read_text())["methods"])
    assert results[0]["erm"]["mean"] > 0.8
    for r in results[1:]:
        for m in ("erm", "jtt"):
            assert r[m]["mean"] == results[0][m]["mean"] and r[m]["per_group"] == results[0][m]["per_group"], m


def test_float_labels_name_the_same_classes_and_groups_as_integer_ones(mid_files, tmp_path):
    """A validation file whose label column is float (0.0 / 1.0) beside integer train and test
    files: the same classes and groups (it said "groups ... have no validation rows"), the same result."""
    import json
    from wsca_jax.cli import main
    d, results = mid_files, []
    with np.load(d / "val.npz") as z:
        np.savez(tmp_path / "val_float.npz", **{**dict(z), "label": z["label"].astype(float)})
    for val in (d / "val.npz", tmp_path / "val_float.npz"):
        out = tmp_path / val.stem
        assert main(["mid", "--train", str(d / "train.npz"), "--val", str(val), "--test", str(d / "test.npz"),
                     "--primary", "label", "--groups", "label,place", "--methods", "erm,dfr", "--refits", "1",
                     "--no-figures", "--out", str(out)]) == 0
        results.append(json.loads((out / "mid.json").read_text())["methods"])
    assert results[0] == results[1] and set(results[1]["dfr"]["per_group"]) == {
        "label=0,place=0", "label=0,place=1", "label=1,place=0", "label=1,place=1"}


def test_enrichment_columns_never_hide_a_metadata_column():
    """--primary site --groups site,label: the enrichment's label column is the real label (it was the
    primary's classes, and the real label was dropped); a metadata column called group stays itself."""
    from wsca_jax.io import embedding_file
    from wsca_jax.mitigation.app import enrichment_columns, split_arrays
    rng = np.random.default_rng(0)
    site, label, group = rng.integers(0, 2, 40), rng.integers(0, 3, 40), rng.choice(["g1", "g2"], 40)
    ef = embedding_file({"embeddings": rng.normal(size=(40, 3)), "site": site, "label": label, "group": group,
                         "logits_site": rng.normal(size=40)})
    cols = enrichment_columns(split_arrays(ef, "site", ["site", "label"]))
    assert set(cols) == {"site", "label", "group", "group (site,label)"}
    np.testing.assert_array_equal(cols["label"].astype(int), label)
    np.testing.assert_array_equal(cols["site"].astype(int), site)
    np.testing.assert_array_equal(cols["group"], group)
    assert cols["group (site,label)"][0] == f"site={site[0]},label={label[0]}"
    # a split without its primary's name (the API's dicts): the classes are "label" unless that is taken
    split = {"classes": ["a", "b"], "y": (site == 1).astype(int), "groups": None, "meta": {"label": label}}
    cols = enrichment_columns(split)
    assert set(cols) == {"label", "label (primary classes)"}
    np.testing.assert_array_equal(cols["label"].astype(int), label)


def test_an_unconverged_retrained_head_is_flagged_in_the_terminal_and_the_report(mid_files, tmp_path, capsys, monkeypatch):
    """The solver capped at 2 iterations: JTT's head is unconverged; its line says so, ERM's does not,
    and report.html carries the caveat."""
    import functools
    import json
    from wsca_jax.cli import main
    from wsca_jax.mitigation import retrain
    monkeypatch.setattr(retrain, "fit_l1_logistic", functools.partial(retrain.fit_l1_logistic, n_iter=2))
    d, out = mid_files, tmp_path / "o"
    capsys.readouterr()
    assert main(["mid", "--train", str(d / "train.npz"), "--val", str(d / "val.npz"), "--test", str(d / "test.npz"),
                 "--primary", "label", "--groups", "label,place", "--methods", "erm,jtt", "--refits", "1",
                 "--no-figures", "--out", str(out)]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("erm", "jtt"))}
    assert json.loads((out / "mid.json").read_text())["methods"]["jtt"]["converged"] is False
    assert "NOT CONVERGED" in lines["jtt"] and "NOT CONVERGED" not in lines["erm"]
    assert "<b>Not converged:</b> the solver of the jtt head stopped" in (out / "report.html").read_text()


def test_an_undefined_odds_ratio_is_none_and_n_a_never_nan(mid_files, tmp_path, capsys):
    """A band holding every row (--band-threshold far above every margin): every 2x2 table has an empty
    row, the odds ratio is undefined: None in mid.json, n/a in the terminal and the report."""
    import json
    import re
    from wsca_jax.cli import main
    from wsca_jax.mitigation.app import _records
    t = enrichment(np.ones(10, bool), {"c": np.array(["a", "b"] * 5)})
    assert t.odds_ratio.isna().all() and t.ci_low.isna().all()
    assert all(r["odds_ratio"] is None and r["ci_low"] is None and r["p_value"] == 1.0 for r in _records(t))
    d, out = mid_files, tmp_path / "o"
    capsys.readouterr()
    assert main(["mid", "--train", str(d / "train.npz"), "--val", str(d / "val.npz"), "--test", str(d / "test.npz"),
                 "--primary", "label", "--groups", "label,place", "--methods", "erm,mid", "--band-threshold", "1e6",
                 "--k", "2:3", "--restarts", "2", "--refits", "1", "--no-figures", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert not re.search(r"\bnan\b", printed, re.I) and "no enrichment odds ratio is defined" in printed
    rec = json.loads((out / "mid.json").read_text())
    assert rec["band"]["n"] == 1200 and all(e["odds_ratio"] is None for e in rec["band"]["enrichment"])
    html_text = (out / "report.html").read_text()
    assert rec["band"]["mislabel_suspicion_mean_outside"] is None and "(|margin| &lt;= 1e+06)" in html_text
    assert "n/a (undefined)" in html_text and not re.search(r"\bnan\b", html_text, re.I)


def test_an_infinite_odds_ratio_is_told_apart_from_an_undefined_one():
    """A subset holding every row with value 'a' and no other row: the odds ratio is defined and
    infinite (scipy: inf); mid.json has no Infinity (None) but odds_ratio_kind says 'infinite', and
    the report prints inf, where an undefined one prints n/a."""
    from wsca_jax.mitigation.app import _records
    from wsca_jax.report.mid import _odds_text
    t = enrichment(np.array([True] * 5 + [False] * 15), {"c": np.array(["a"] * 5 + ["b"] * 15)})
    a = t[t.value == "a"].iloc[0]
    assert np.isinf(a.odds_ratio) and a.odds_ratio_kind == "infinite" and a.ci_low > 1 and a.p_value < 1e-3
    rec = {r["value"]: r for r in _records(t)}
    assert rec["a"]["odds_ratio"] is None and rec["a"]["odds_ratio_kind"] == "infinite"
    assert _odds_text(rec["a"]).startswith("inf [") and _odds_text(rec["a"]).endswith(", inf]")
    u = {r["value"]: r for r in _records(enrichment(np.ones(10, bool), {"c": np.array(["a", "b"] * 5)}))}
    assert u["a"]["odds_ratio_kind"] == "undefined" and _odds_text(u["a"]) == "n/a (undefined)"


def test_within_class_eta_known_answers():
    from wsca_jax.mitigation.app import within_class_eta
    y = np.repeat([0, 1], 6)
    a = np.tile(["u", "v", "w"], 4)
    assert within_class_eta(np.where(a == "u", 1.0, 0.0) + 5 * y, y, a)["eta"] == pytest.approx(1.0)   # a function of a
    s = np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    # by hand: class 0 rows (1..6), a = u v w u v w: means u 2.5, v 3.5, w 4.5; overall 3.5
    between0 = 2 * (1.0 + 0.0 + 1.0)
    total0 = sum((v - 3.5) ** 2 for v in range(1, 7))
    assert within_class_eta(s, y, a)["eta"] == pytest.approx(np.sqrt(2 * between0 / (2 * total0)))
    rng = np.random.default_rng(0)
    yy, aa = rng.integers(0, 2, 20000), rng.integers(0, 2, 20000)           # independent: eta about sqrt(2 / N)
    r = within_class_eta(rng.normal(size=20000) + 3 * yy, yy, aa, permutations=50)
    assert r["eta"] < 0.05 and r["p_value"] > 0.01
    # a continuous attribute is binned, missing values are left out, and chance is what the null says
    n = 300
    yy, cont = rng.integers(0, 2, n), rng.normal(size=n)
    unrelated = within_class_eta(rng.normal(size=n), yy, np.where(rng.random(n) < 0.1, None, cont), permutations=200)
    assert unrelated["eta"] < 0.35 and unrelated["eta"] <= unrelated["null_q95"] + 0.05 and unrelated["p_value"] > 0.01
    related = within_class_eta(cont + yy, yy, cont, permutations=200)
    assert related["eta"] > 0.8 and related["p_value"] < 0.01


def test_l2_logistic_matches_scikit_learn_lbfgs():
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from wsca_jax.mitigation.retrain import fit_l1_logistic, standardise
    for name in ("breast_cancer", "wine"):
        x, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        x, = standardise(x)
        fit = fit_l1_logistic(x, y, [0.05, 1.0], penalty="l2")
        assert fit.converged.all()
        for r, C in enumerate((0.05, 1.0)):
            sk = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(x, y)
            np.testing.assert_allclose(fit.coef[r].T if fit.coef.shape[2] > 1 else fit.coef[r][:, 0],
                                       sk.coef_ if fit.coef.shape[2] > 1 else sk.coef_[0], atol=2e-3 * np.abs(sk.coef_).max())


def test_numeric_classes_keep_the_order_of_the_logits():
    """Labels 2 and 10: wsca train orders them numerically (logits columns 2, 10); so must wsca mid."""
    from wsca_jax.io import embedding_file
    from wsca_jax.mitigation.app import split_arrays
    y = np.array([2, 10, 10, 2, 10])
    logits = np.stack([(y == 2) * 3.0, (y == 10) * 3.0], 1)              # a perfect model
    s = split_arrays(embedding_file({"embeddings": np.eye(5), "lab": y, "logits_lab": logits}), "lab", [])
    assert s["classes"] == ["2", "10"] and np.array_equal(s["y"], (y == 10).astype(int))
    assert np.array_equal(s["logits"].argmax(1), s["y"])


def test_an_all_zero_retrained_head_is_flagged_not_compared():
    from wsca_jax.mitigation.app import verify_head
    rng = np.random.default_rng(0)
    split = {"x": rng.normal(size=(50, 4)), "y": rng.integers(0, 2, 50), "classes": ["0", "1"],
             "meta": {"place": rng.integers(0, 2, 50)}}
    out = verify_head(split, np.zeros((1, 4)), ["place"], 0, 0, 0)
    assert out["place"]["max_abs_wsc"] is None and "all-zero head" in out["place"]["note"]


def test_within_class_eta_permutation_p_has_its_level():
    """Score independent of the attribute within classes (the attribute does depend on the class):
    p <= 0.05 in about 5% of 300 null datasets."""
    from wsca_jax.mitigation.app import within_class_eta
    rng = np.random.default_rng(1)
    p = []
    for _ in range(300):
        y = rng.integers(0, 2, 80)
        a = np.where(rng.random(80) < 0.7, y, rng.integers(0, 3, 80))          # confounded with the class
        p.append(within_class_eta(rng.normal(size=80) + 2 * y, y, a, permutations=40, seed=int(rng.integers(1e9)))["p_value"])
    rate = np.mean(np.array(p) <= 0.05)
    assert 0.02 <= rate <= 0.09, rate


def _official_dfr(x_train, xv, yv, gv, xt, yt, gt, rng, Cs, C=None, ours=False):
    """DFR's official evaluation (``dfr_evaluate_spurious.py``: DFR(val) with its defaults, balanced
    validation, no training rows), re-implemented with scikit-learn's liblinear: C from one random half
    of the validation rows (one group-balanced fit per C, scaled on that half; the first best C of the
    grid), then 20 group-balanced fits on all validation rows at that C (scaled with the training
    rows' statistics), coefficients averaged. ``ours``: with ``wsca mid``'s two documented differences
    instead (scaled with the validation rows' statistics; the intercept left unpenalised, liblinear's
    ``intercept_scaling`` 1e4). Returns ``(C, worst-group test accuracy)``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def balanced(g):
        idx = [rng.permutation(np.flatnonzero(g == k)) for k in np.unique(g)]
        m = min(len(i) for i in idx)
        return np.concatenate([i[:m] for i in idx])

    if C is None:
        idx = rng.permutation(len(xv))
        fit, held = idx[len(xv) // 2:], idx[:len(xv) // 2]
        fit = fit[balanced(gv[fit])]
        sc = StandardScaler().fit(xv[fit])
        worst = []
        for c in Cs:
            pred = LogisticRegression(penalty="l1", C=c, solver="liblinear").fit(sc.transform(xv[fit]), yv[fit]) \
                .predict(sc.transform(xv[held]))
            worst.append(min(np.mean(pred[gv[held] == k] == yv[held][gv[held] == k]) for k in np.unique(gv)))
        C = Cs[int(np.argmax(worst))]
    sc = StandardScaler().fit(xv if ours else x_train)
    fits = [LogisticRegression(penalty="l1", C=C, solver="liblinear", intercept_scaling=1e4 if ours else 1.0,
                               tol=1e-6, max_iter=1000).fit(sc.transform(xv[b]), yv[b])
            for b in (balanced(gv) for _ in range(20))]
    z = sc.transform(xt) @ np.mean([f.coef_ for f in fits], 0).T + np.mean([f.intercept_ for f in fits], 0)
    pred = (z[:, 0] > 0).astype(int)
    return C, min(np.mean(pred[gt == k] == yt[gt == k]) for k in np.unique(gt))


def test_published_grid_dfr_matches_a_liblinear_reimplementation_of_the_official_evaluation():
    """Numpy-written embeddings (a core feature, a spurious one that goes with the label in 95% of the
    training rows, noise), 10 draws. At the C the official evaluation chose, ``wsca mid``'s DFR head
    (the final 20 balanced fits, averaged) has the worst-group accuracy of the official evaluation
    run with our two documented differences (validation-row scaling, unpenalised intercept) within
    2 points on average; tuned by each its own way, ours is not below the official evaluation's by
    more than 2 points on average (the official code tunes C on one random split with one fit per C;
    ours on a group-stratified half with 20 averaged fits, so the chosen Cs agree only where the
    worst-group curve has a clear peak). The same C and the gap of the official evaluation itself at
    that C (the two differences' joint effect) are printed, not asserted."""
    import warnings

    from wsca_jax.mitigation import MidConfig
    from wsca_jax.mitigation.config import DFR_CS
    from wsca_jax.mitigation.mining import retrain_methods

    def data(rng, n, share, d=12):
        g = rng.choice(4, n, p=share)
        y, p = g // 2, g % 2
        x = rng.normal(size=(n, d))
        x[:, 0] += 2 * y - 1
        x[:, 1] += 2.5 * (2 * p - 1)
        x[:, 2] += 0.5 * (2 * y - 1)
        return x, y, g

    same_c, gap_at_c, gap_tuned, gap_official = [], [], [], []
    for draw in range(10):
        rng = np.random.default_rng(draw)
        xtr, _, gtr = data(rng, 4000, [0.72, 0.04, 0.012, 0.228])
        xv, yv, gv = data(rng, 1200, [0.39, 0.39, 0.11, 0.11])
        xt, yt, gt = data(rng, 4000, [0.39, 0.39, 0.11, 0.11])
        split = lambda x, y, g: {"x": x, "y": y, "logits": (x[:, 1] + 0.3 * x[:, 0])[:, None],  # noqa: E731
                                 "groups": g.astype(str), "classes": ["0", "1"]}
        shares = {str(k): float(np.mean(gtr == k)) for k in range(4)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c_off, wga_off = _official_dfr(xtr, xv, yv, gv, xt, yt, gt, np.random.default_rng(100 + draw), DFR_CS)
            at_c = retrain_methods(split(xv, yv, gv), split(xt, yt, gt), shares,
                                   MidConfig().replace(methods=["dfr"], C_grid=[c_off], seed=draw))["methods"]["dfr"]
            _, wga_ours_at_c = _official_dfr(xtr, xv, yv, gv, xt, yt, gt, np.random.default_rng(200 + draw), DFR_CS,
                                             C=c_off, ours=True)
            _, wga_off_at_c = _official_dfr(xtr, xv, yv, gv, xt, yt, gt, np.random.default_rng(200 + draw), DFR_CS,
                                            C=c_off)
            tuned = retrain_methods(split(xv, yv, gv), split(xt, yt, gt), shares,
                                    MidConfig().replace(methods=["dfr"], c_grid="published", seed=draw))["methods"]["dfr"]
        assert at_c["C"] == c_off
        gap_at_c.append(at_c["worst_group"] - wga_ours_at_c)
        gap_official.append(at_c["worst_group"] - wga_off_at_c)
        gap_tuned.append(tuned["worst_group"] - wga_off)
        same_c.append(tuned["C"] == c_off)
    assert abs(np.mean(gap_at_c)) <= 0.02, gap_at_c
    assert np.mean(gap_tuned) >= -0.02, gap_tuned
    print(f"same C in {sum(same_c)}/10 draws; mean gap at the official C {np.mean(gap_at_c):+.3f} (against the "
          f"official evaluation itself {np.mean(gap_official):+.3f}), tuned {np.mean(gap_tuned):+.3f}")


def _waterbirds_like(n, rng, d=20):
    """Waterbirds' validation design: 22% waterbirds, places balanced within each class, an ERM head that
    leans on the place (it gets about 45% of these rows wrong)."""
    y = (rng.random(n) < 0.22).astype(int)
    a = rng.integers(0, 2, n)
    z = rng.normal(size=(n, d))
    z[:, 0] += 1.5 * (2 * y - 1)
    z[:, 1] += 2.0 * (2 * a - 1)
    g = np.char.add(np.char.add("y", y.astype(str)), np.char.add("_a", a.astype(str)))
    return {"x": z, "y": y, "logits": 1.6 * z[:, 1] + 0.6 * z[:, 0], "groups": g}


def test_jtt_controls_and_the_majority_guard():
    """Every method's record has the same fields; JTT (identification head, tuned upweight) stays at or
    above the majority-class rate where ERM errs on 45% of the validation rows (upweighting those x20,
    the old JTT, put 94% of the weight on them), and flags a chosen head below it (``below_majority``):
    labels independent of the embeddings, 80/20."""
    import warnings

    from wsca_jax.mitigation import MidConfig
    from wsca_jax.mitigation.mining import _erm_pred, retrain_methods
    from wsca_jax.mitigation.retrain import standardise, tune_jtt
    rng = np.random.default_rng(0)
    val, test = _waterbirds_like(1200, rng), _waterbirds_like(4000, rng)
    shares = {"y0_a0": 0.73, "y1_a1": 0.22, "y0_a1": 0.04, "y1_a0": 0.01}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = retrain_methods(val, test, shares, MidConfig().replace(restarts=3))["methods"]
    assert np.mean(_erm_pred(val["logits"]) != val["y"]) > 0.4
    fields = set(m["dfr"])
    for name in ("class_balanced", "random_band", "jtt", "mid"):
        assert fields <= set(m[name]), name
    majority = max(np.mean(test["y"]), 1 - np.mean(test["y"]))
    j = m["jtt"]
    assert j["mean_plain"] >= majority and not j["below_majority"]
    assert j["worst_group"] >= m["erm"]["worst_group"] + 0.3 and j["weight_on_errors"] < 0.9
    assert m["class_balanced"]["worst_group"] >= m["erm"]["worst_group"] + 0.3      # the control is no straw man
    x = rng.normal(size=(600, 10))
    y = (rng.random(600) < 0.2).astype(int)
    g = np.char.add("y", y.astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        noise = tune_jtt(standardise(x)[0], y, g, Cs=(0.1, 1.0), seed=0)
    assert noise["below_majority"] is True            # flagged, not hidden
