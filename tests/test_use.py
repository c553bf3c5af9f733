"""Statistics of the decision (issue 28): invariance where the paper's WSC moves, known answers, LEACE."""

import numpy as np
import pytest

import wsca_jax as wsca
from wsca_jax.use import (_eta_many, decision_scores, erasure_effect, leace, score_correlation, whiten,
                          whitened_probe_scores, within_class_eta, within_class_shift)


def world(n=600, d=8, use=0.6, seed=0):
    """Embeddings with a binary class and a binary attribute (both encoded, correlated 0.3); the
    head reads the class axis and, with weight ``use``, the attribute axis."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.65, y, 1 - y)
    x = rng.normal(size=(n, d))
    x[:, 0] += 1.5 * (2 * y - 1)
    x[:, 1] += 1.2 * (2 * a - 1)
    x = x @ rng.normal(size=(d, d)) * 0.5 + x                  # correlated channels
    head = np.zeros((2, d))
    head[1] = np.linalg.lstsq(x, (2 * y - 1) + use * (2 * a - 1), rcond=None)[0]
    return x, y, a, head, np.array([0.0, 0.1])


def transforms(d, seed=1):
    """Invertible changes of coordinates ``x -> x A + c``, each with its kept-logit head map."""
    rng = np.random.default_rng(seed)
    scale2 = np.eye(d)
    scale2[2, 2] = 10.0
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    lognormal = np.diag(np.exp(rng.normal(0, 1, d)))
    return {"channel 2 x10": (scale2, 0.0), "channel 2 x0.1": (np.linalg.inv(scale2), 0.0), "rotation": (rot, 0.0),
            "log-normal scales": (lognormal, 0.0),
            "folded BatchNorm": (np.diag(rng.uniform(0.2, 5.0, d)), rng.normal(0, 3, d))}


def moved(x, head, bias, A, c):
    """``x A + c`` and the head and bias that keep every logit."""
    h = head @ np.linalg.inv(A).T
    c = np.broadcast_to(np.asarray(c, float), (x.shape[1],))
    return x @ A + c, h, bias - c @ h.T


def statistics(x, y, a, head, bias):
    s = decision_scores(head, x, bias)
    p = whitened_probe_scores(x, a)
    return {"eta": within_class_eta(s, y, a, permutations=0)["estimate"],
            "shift": within_class_shift(s, y, a, permutations=0)["estimate"],
            "corr": score_correlation(s, p), "corr_within": score_correlation(s, p, y),
            "erasure": erasure_effect(x, head, bias, y, a, draws=0)["estimate"],
            "erasure_within": erasure_effect(x, head, bias, y, a, draws=0, within=True)["estimate"]}


def test_the_new_statistics_do_not_move_where_the_papers_wsc_does():
    """Every logit kept (x -> x A + c, head -> head A^-T): each statistic of the decision unchanged to
    1e-4; the paper's WSC (k = D, no truncation) moves under the same changes."""
    x, y, a, head, bias = world()
    base = statistics(x, y, a, head, bias)
    assert 0.05 < base["eta"] < 0.9 and base["corr"] > 0.1 and base["erasure"] > 0.05
    cfg = wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=x.shape[1], pca_variance=1.0)
    meta = {"label": y, "site": a}
    wsc0 = wsca.analyze(x, meta, "label", head, config=cfg).tasks["site"].summary["max_abs_wsc"]
    wscs = []
    for name, (A, c) in transforms(x.shape[1]).items():
        x2, h2, b2 = moved(x, head, bias, A, c)
        np.testing.assert_allclose(decision_scores(h2, x2, b2), decision_scores(head, x, bias), atol=1e-8)
        new = statistics(x2, y, a, h2, b2)
        for k in base:
            assert new[k] == pytest.approx(base[k], abs=1e-4), (name, k)
        wscs.append(wsca.analyze(x2, meta, "label", h2, config=cfg).tasks["site"].summary["max_abs_wsc"])
    assert max(abs(w - wsc0) for w in wscs) > 0.1                   # the paper's statistic moves


def test_eta_known_answers_and_the_vectorised_form():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    a = rng.integers(0, 3, 400)
    exact = within_class_eta(a + 10.0 * y, y, a, permutations=50)
    assert exact["estimate"] == pytest.approx(1.0) and exact["p_value"] == pytest.approx(1 / 51)
    noise = within_class_eta(rng.normal(size=400) + 3 * y, y, a, permutations=200)
    assert noise["estimate"] < 0.2 and noise["p_value"] > 0.01

    def loop(score, y, a):                                      # the textbook form
        between = total = 0.0
        for c in np.unique(y):
            s, v = score[y == c], a[y == c]
            total += np.sum((s - s.mean()) ** 2)
            between += sum(np.sum(v == u) * (s[v == u].mean() - s.mean()) ** 2 for u in np.unique(v))
        return np.sqrt(between / total)
    score = rng.normal(size=400) + 0.3 * a
    perms = np.stack([rng.permutation(a) for _ in range(5)])
    np.testing.assert_allclose(_eta_many(score, y, perms), [loop(score, y, p) for p in perms], rtol=1e-10)


def test_leace_leaves_no_linear_information_and_only_that_rank():
    """After LEACE no linear function of the embeddings covaries with the attribute (3 classes: rank
    2 erased), a probe is at chance, erasing again changes nothing, and the whitening whitens."""
    rng = np.random.default_rng(3)
    n, d = 900, 6
    a = rng.integers(0, 3, n)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    x[:, :2] += np.eye(3)[a][:, :2] * 4.0
    wh = whiten(x)
    xw = (x - wh.mean) @ wh.forward
    np.testing.assert_allclose(np.cov(xw.T, bias=True), np.eye(d), atol=1e-8)
    erased, rank = leace(x, a)
    z = np.eye(3)[a]
    assert rank == 2
    np.testing.assert_allclose((erased - erased.mean(0)).T @ (z - z.mean(0)) / n, 0.0, atol=1e-10)
    again, _ = leace(erased, a)
    np.testing.assert_allclose(again, erased, atol=1e-8)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    # the best linear predictor after erasure is a constant (LEACE's guarantee for convex losses)
    fit = LogisticRegression(tol=1e-10, max_iter=10000)
    before, after = (fit.fit(v, a == 0).coef_.copy() for v in (x, erased))
    assert roc_auc_score(a == 0, x @ before[0]) > 0.8 and np.linalg.norm(after) < 1e-4 * np.linalg.norm(before)


def test_erasure_separates_a_head_that_uses_the_attribute_from_one_that_does_not():
    """Same embeddings (the attribute encoded, correlated with the class): a head fitted to the class
    alone moves little when the attribute is erased, one that also reads the attribute moves more
    than random erasures of the same rank; eta orders them the same way."""
    x, y, a, used, bias = world(use=1.0, seed=4)
    _, _, _, unused, _ = world(use=0.0, seed=4)
    u = erasure_effect(x, used, bias, y, a, draws=200, seed=1)
    n = erasure_effect(x, unused, bias, y, a, draws=200, seed=1)
    assert u["p_value"] < 0.05 and u["estimate"] > 2 * n["estimate"]        # d = 8: random erasures are large too
    su, sn = decision_scores(used, x, bias), decision_scores(unused, x, bias)
    eu, en = within_class_eta(su, y, a, permutations=200), within_class_eta(sn, y, a, permutations=200)
    assert eu["p_value"] < 0.01 and eu["estimate"] > en["estimate"]


def test_analyze_reports_every_statistic_beside_the_papers_wsc(tmp_path):
    """wsca.json: summary.statistics holds wsc (the paper's, as in the summary) and the decision-use
    statistics, each with estimate, a bootstrap interval that holds it and a p-value; on a head that
    reads the attribute every test rejects and summary.decision_use says "used"; on a head that does
    not, over many rows, never "used" and with this much data "not used"; strict JSON."""
    import json
    from wsca_jax.report import write_outputs
    names = {"wsc", "within_class_eta", "within_class_shift", "score_correlation", "score_correlation_within",
             "erasure", "erasure_within"}
    cfg = wsca.AnalysisConfig().replace(bootstrap=50, permutations=99)
    x, y, a, head, bias = world(n=1000, d=16, use=1.0, seed=2)
    res = wsca.analyze(x, {"label": y, "site": a}, "label", head, config=cfg)
    s = res.tasks["site"].summary
    st = s["statistics"]
    assert set(st) == names
    assert st["wsc"]["estimate"] == s["max_abs_wsc"] and st["wsc"]["p_value"] == s["p_value"]
    for k in names - {"wsc"}:
        lo, hi = st[k]["ci"]
        assert 0 <= lo <= st[k]["estimate"] <= hi, k
        if k == "erasure":               # no test of use (confounding): the random-subspace comparison kept apart
            assert st[k]["p_value"] is None and st[k]["random_subspace_p"] == pytest.approx(0.01)
            assert "no test of use" in st[k]["note"]
        elif k != "score_correlation":   # its within-class null keeps the class's share (attribute ~ class here)
            assert st[k]["p_value"] == pytest.approx(0.01), k
    assert st["erasure"]["flip_rate"] is None                # a head given without its bias: no threshold
    du = s["decision_use"]
    assert du["verdict"] == "used" and du["statistic"] == cfg.inference.use_statistic
    assert du["estimate"] == st[du["statistic"]]["estimate"] and du["p_adjusted"] == pytest.approx(0.01)
    write_outputs(res, str(tmp_path / "o"), figures=False)
    d = json.loads((tmp_path / "o" / "wsca.json").read_text())
    assert d["tasks"]["site"]["summary"]["statistics"]["erasure"]["rank"] == 1
    assert d["tasks"]["site"]["summary"]["decision_use"]["verdict"] == "used"
    x, y, a, head, bias = world(n=4000, d=16, use=0.0, seed=3)
    un = wsca.analyze(x, {"label": y, "site": a}, "label", head, config=cfg).tasks["site"].summary["decision_use"]
    assert un["verdict"] == "not used", un
    assert un["ci"][1] < cfg.inference.use_margin


def test_the_zoo_scoring_on_records_with_a_known_truth():
    """experiments/use_validation.py: the unused arm's 99th percentile sets the truth per kind and
    setting; a statistic equal to the effect has AUROC 1 and Spearman 1; a test that rejects exactly
    the users has sensitivity and specificity 1; counts match."""
    import os
    import sys
    import pandas as pd
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments"))
    from use_validation import score, truth
    rows = []
    for i, (assoc, effect) in enumerate([(0.0, 0.10), (0.0, 0.20), (0.0, 0.15), (0.5, 0.18), (0.5, 0.9), (1.0, 1.5),
                                         (1.0, 2.0), (0.8, 0.05)]):
        used = effect > np.quantile([0.10, 0.20, 0.15], 0.99, method="higher")
        st = {"probe_auroc": 0.9, "perfect": {"estimate": effect, "p_value": 0.01 if used else 0.5},
              "flat": {"estimate": 0.3, "p_value": None}}
        rows.append({"kind": "k", "setting": "s", "association": assoc, "seed": i, "statistics": st,
                     "intervention": {"artefact": {"effect": effect}, "control": {"effect": 0.1}}})
    df = truth(pd.DataFrame(rows))
    assert df.uses.tolist() == [False, False, False, False, True, True, True, False]
    r = score(df, "perfect")
    assert r["auroc"][0] == 1.0 and r["spearman"] == pytest.approx(1.0)
    assert r["sensitivity"].startswith("3/3 = 1.00") and r["specificity"].startswith("5/5 = 1.00")
    flat = score(df, "flat")
    assert flat["auroc"][0] == 0.5 and "sensitivity" not in flat


def test_the_class_conditional_erasure_ignores_a_confounded_attribute_the_head_does_not_read():
    """Confounded design: the attribute goes with the class (agreeing in 90% of rows) and is encoded
    on its own axis; the head reads only the class axis. The marginal eraser removes part of the class
    and moves the decision (its null rejects); the class-conditional one moves it by rounding only."""
    rng = np.random.default_rng(7)
    n = 1500
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.9, y, 1 - y)
    x = rng.normal(size=(n, 6))
    x[:, 0] += 2.0 * (2 * y - 1)
    x[:, 1] += 2.0 * (2 * a - 1)
    head = np.zeros((2, 6))
    head[1, 0] = 1.0
    marginal = erasure_effect(x, head, None, y, a, draws=100, seed=0)
    within = erasure_effect(x, head, None, y, a, draws=100, seed=0, within=True)
    assert marginal["p_value"] < 0.05 and within["estimate"] < 0.1 * marginal["estimate"]
    erased, rank = leace(x, a, y)
    z = np.eye(2)[a]
    for c in (0, 1):                                   # no covariance with the attribute within a class
        m = y == c
        cov = (erased[m] - erased[m].mean(0)).T @ (z[m] - z[m].mean(0)) / m.sum()
        assert rank == 1 and np.abs(cov).max() < 0.05


def test_the_vectorised_erasure_null_is_the_direct_computation():
    """random_erasure_null's closed form equals erasing each random subspace and rescoring."""
    from wsca_jax.use import decision_effect, erase, fit_eraser, random_erasure_null
    x, y, a, head, bias = world(n=300, d=6, seed=9)
    for within in (False, True):
        er = fit_eraser(x, a, y if within else None)
        fast = random_erasure_null(x, head, y, er, 7, seed=3)
        rng = np.random.default_rng(3)
        from wsca_jax.use import _fitted_centred
        t = _fitted_centred(x, er) @ er.whitener.forward
        q = np.linalg.qr(np.einsum("nr,bnm->brm", t, rng.standard_normal((7, len(x), 1))))[0]
        slow = [decision_effect(head, bias, x, erase(x, er, qi), y).delta_sd for qi in q]
        np.testing.assert_allclose(fast, slow, rtol=1e-10)


def test_missing_attribute_labels_use_the_fitted_means_and_the_null_turns_with_the_data():
    """Rows without an attribute label are erased around the means the eraser was fitted on (it used
    every row's mean); the random-erasure null gives the same p-value after a rotation (its
    directions turn with the data)."""
    from wsca_jax.use import erase, fit_eraser
    x, y, a, head, bias = world(n=400, d=6, seed=11)
    a = a.copy()
    a[::3] = -1
    for yy in (None, y):
        er = fit_eraser(x, a, yy)
        ref = fit_eraser(x[a >= 0], a[a >= 0], None if yy is None else yy[a >= 0])
        part = erase(x, er)[a >= 0]
        np.testing.assert_allclose(part, erase(x[a >= 0], ref._replace(y=None if yy is None else yy[a >= 0])),
                                   atol=1e-10)
    rot = np.linalg.qr(np.random.default_rng(2).normal(size=(6, 6)))[0]
    p0 = erasure_effect(x, head, bias, y, a, draws=100, seed=4, within=True)
    p1 = erasure_effect(x @ rot, head @ rot, bias, y, a, draws=100, seed=4, within=True)
    assert p0["p_value"] == pytest.approx(p1["p_value"]) and p0["null_q95"] == pytest.approx(p1["null_q95"], rel=1e-8)


def test_the_counterfactual_response_is_measured_and_carries_the_verdict():
    """``counterfactual=``: the head reads z0 + u z1 and the attribute shifts z1 by +-1.2, so switching
    it moves every score by 2.4 u: the statistic equals 2.4 u / SD(score) (a known answer), has an
    interval and no p-value, and the verdict rests on it: "used" at u = 0.5; at u = 0 the response is
    exactly 0 and the verdict "not used" (measured by intervention). A control intervention the head
    ignores keeps "used"; one that moves the score as much, or almost as much (the excess below the
    margin), makes it "inconclusive"."""
    rng = np.random.default_rng(11)
    n, d = 800, 6
    y, a = rng.integers(0, 2, n), rng.integers(0, 2, n)
    z = rng.normal(size=(n, d))
    z[:, 0] += 1.5 * (2 * y - 1)
    z[:, 1] += 1.2 * (2 * a - 1)
    z_cf = z.copy()
    z_cf[:, 1] -= 2.4 * (2 * a - 1)                                 # the same rows, the attribute switched
    M = np.eye(d) + 0.4 * rng.normal(size=(d, d))
    x, x_cf = z @ M, z_cf @ M
    cfg = wsca.AnalysisConfig().replace(bootstrap=50, permutations=0)
    for u, verdict in ((0.5, "used"), (0.0, "not used")):
        head = np.zeros((2, d))
        head[1] = np.linalg.inv(M)[:, 0] + u * np.linalg.inv(M)[:, 1]
        res = wsca.analyze(x, {"label": y, "site": a}, "label", head, counterfactual={"site": x_cf}, config=cfg)
        s = res.tasks["site"].summary
        cf = s["statistics"]["counterfactual"]
        score = z[:, 0] + u * z[:, 1]
        assert cf["estimate"] == pytest.approx(2.4 * u / score.std(), abs=1e-4)
        assert cf["p_value"] is None and cf["ci"][0] <= cf["estimate"] + 1e-9 <= cf["ci"][1] + 2e-9
        assert s["decision_use"]["statistic"] == "counterfactual" and s["decision_use"]["verdict"] == verdict
    # a control intervention: one the head ignores (z2 moved) leaves the verdict "used" with the whole
    # response in excess; one that moves the score exactly as much (z0 by 1.2) makes it "inconclusive"
    head = np.zeros((2, d))
    head[1] = np.linalg.inv(M)[:, 0] + 0.5 * np.linalg.inv(M)[:, 1]
    for shift_axis, size, verdict in ((2, 1.2, "used"), (0, 1.2, "inconclusive"), (0, 1.0, "inconclusive")):
        z_ctl = z.copy()
        z_ctl[:, shift_axis] -= size * (2 * a - 1)
        res = wsca.analyze(x, {"label": y, "site": a}, "label", head, counterfactual={"site": x_cf},
                           counterfactual_control={"site": z_ctl @ M}, config=cfg)
        s = res.tasks["site"].summary
        cf = s["statistics"]["counterfactual"]
        want = 0.0 if shift_axis == 2 else cf["estimate"] * size / 1.2
        assert cf["control"]["estimate"] == pytest.approx(want, abs=1e-4)
        assert cf["excess"] == pytest.approx(cf["estimate"] - want, abs=1e-4)
        assert cf["excess_ci"][0] <= cf["excess"] + 1e-9 <= cf["excess_ci"][1] + 2e-9
        assert s["decision_use"]["verdict"] == verdict, s["decision_use"]["reason"]
        if size == 1.0:                       # beyond the control's, but by less than the margin
            assert cf["excess_ci"][0] > 0 and "by less than the margin" in s["decision_use"]["reason"]
    with pytest.raises(wsca.WscaInputError, match="control beside a counterfactual"):
        wsca.analyze(x, {"label": y, "site": a}, "label", head, counterfactual_control={"site": x_cf}, config=cfg)
    with pytest.raises(wsca.WscaInputError, match="expected the same rows"):
        wsca.analyze(x, {"label": y, "site": a}, "label", head, counterfactual={"site": x_cf[:-1]}, config=cfg)
    with pytest.raises(wsca.WscaInputError, match="not a metadata task"):
        wsca.analyze(x, {"label": y, "site": a}, "label", head, counterfactual={"scanner": x_cf}, config=cfg)


def test_the_closed_form_erasure_of_the_bootstrap_equals_leace():
    """The bootstrap's eraser (one linear solve in whitened coordinates, ``erasure_delta_sd``) gives
    the LEACE erasure effect of ``erasure_estimate`` (eigendecomposition) to rounding: binary and
    three-level attributes, confounded or not, with missing labels, marginal and class-conditional."""
    from wsca_jax.use import erasure_estimate, score_rows
    from wsca_jax.use_resampling import erasure_delta_sd
    rng = np.random.default_rng(0)
    for trial in range(4):
        n, d = 500, 10
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < 0.8, y, 1 - y) if trial % 2 else rng.integers(0, 3, n)
        z = rng.normal(size=(n, d))
        z[:, 0] += 2 * y
        z[:, 1] += 1.5 * a
        x = z @ (np.eye(d) + 0.5 * rng.normal(size=(d, d)))
        head = rng.normal(size=(2, d))
        if trial == 3:
            a[:20] = -1
        wh = whiten(x)
        t, g = (x - wh.mean) @ wh.forward, wh.back @ score_rows(head).T
        for within in (False, True):
            assert erasure_delta_sd(t, g, y, a, within) == pytest.approx(erasure_estimate(x, head, None, y, a, within),
                                                                         rel=1e-9)


def test_the_verdicts_defaults_are_the_rule_the_zoo_record_ships():
    """--use-statistic and --use-margin default to the rule ``experiments/use_validation.py`` wrote
    into ``wsca_jax/report/zoo_accuracy.json`` (the report cites that record's accuracy), and the
    record's shipped rule is one of its scored candidates with its own margin."""
    import json
    from wsca_jax.report.analysis import ZOO_RECORD, zoo_accuracy
    with open(ZOO_RECORD) as f:
        rec = json.load(f)
    inf = wsca.AnalysisConfig().inference
    assert (inf.use_statistic, inf.use_margin) == (rec["rule"]["statistic"], rec["rule"]["margin"])
    cand = rec["candidates"][rec["rule"]["statistic"]]
    assert cand["margin"] == rec["rule"]["margin"] and cand["sensitivity"] == rec["rule"]["sensitivity"]
    assert zoo_accuracy() == rec


def test_skip_decision_use_keeps_the_papers_wsc_alone():
    """``skip_decision_use``: summary.statistics holds only the paper's WSC (the same value as with the
    statistics), no summary.decision_use; a counterfactual with it is refused (one clear line)."""
    x, y, a, head, bias = world(n=400, d=8, use=1.0, seed=5)
    cfg = wsca.AnalysisConfig().replace(bootstrap=0, permutations=0)
    full = wsca.analyze(x, {"label": y, "site": a}, "label", head, config=cfg).tasks["site"].summary
    bare = wsca.analyze(x, {"label": y, "site": a}, "label", head,
                        config=cfg.replace(skip_decision_use=True)).tasks["site"].summary
    assert set(bare["statistics"]) == {"wsc"} and "decision_use" not in bare
    assert bare["statistics"]["wsc"] == full["statistics"]["wsc"] and "decision_use" in full
    with pytest.raises(wsca.WscaInputError, match="skip_decision_use"):
        wsca.analyze(x, {"label": y, "site": a}, "label", head, counterfactual={"site": x},
                     config=cfg.replace(skip_decision_use=True))


def test_an_attribute_that_never_varies_within_a_class_is_inconclusive_not_unused():
    """The attribute equals the class and the head reads it: nothing within a class can show its
    effect, so the within-class statistics are not applicable (a note, no estimate) and the verdict
    is "inconclusive" -- never "not used" from an interval of zeros (review of issue 28)."""
    rng = np.random.default_rng(4)
    n, d = 300, 6
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, 1] += 2.0 * (2 * y - 1)
    head = np.zeros((2, d))
    head[1, 1] = 1.0
    s = wsca.analyze(x, {"label": y, "site": y.copy()}, "label", head,
                     config=wsca.AnalysisConfig().replace(bootstrap=20, permutations=19)).tasks["site"].summary
    assert s["statistics"]["within_class_shift"]["estimate"] is None
    assert "does not vary within any class" in s["statistics"]["within_class_shift"]["note"]
    assert s["decision_use"]["verdict"] == "inconclusive"


def test_the_within_class_null_exchanges_whole_patients():
    """A patient-level attribute with a patient random effect in the score and no use: permuting
    rows would reject far more often than 5% (the review measured 53 of 100); exchanging whole
    patients within classes keeps the level (at most 10 of 60 datasets at 0.05, binomial tail
    probability under 0.05 < 0.01)."""
    from wsca_jax.use import within_class_shift
    rng = np.random.default_rng(0)
    rejected = 0
    for _ in range(60):
        g = np.repeat(np.arange(40), 15)
        yg, ag = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
        score = 1.5 * yg[g] + rng.normal(0, 1.0, 40)[g] + rng.normal(0, 0.3, len(g))
        p = within_class_shift(score, yg[g], ag[g], permutations=99, seed=int(rng.integers(1e6)), groups=g)["p_value"]
        rejected += p <= 0.05
    assert rejected <= 10
