"""Inference across trained networks: combinations with known answers, analyze_runs end to end,
`wsca analyze --runs`, and its bad inputs (one line, exit 2, nothing written)."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import wsca_jax as wsca
from wsca_jax.cli import main
from wsca_jax.analysis.runs import fisher, mean_merged, random_effects, stouffer
from wsca_jax.validation.simulate import CalibrationDesign, calibration_data


def test_random_effects_known_answers():
    """Equal variances, no spread beyond them -> the plain mean and tau^2 0; a heterogeneous set ->
    tau^2 > 0 and a wider interval than the fixed-effect one."""
    y, v = np.array([1.0, 1.2, 0.8, 1.1]), np.full(4, 0.5)
    r = random_effects(y, v)
    assert r["tau2"] == 0 and r["mean"] == pytest.approx(y.mean()) and r["se"] == pytest.approx(np.sqrt(0.5 / 4))
    h = random_effects(np.array([0.0, 3.0, -2.0, 5.0]), np.full(4, 0.1))
    assert h["tau2"] > 1 and h["ci"][1] - h["ci"][0] > 2 * 1.96 * np.sqrt(0.1 / 4)


def test_p_value_combinations_keep_their_level():
    """Under the null: Fisher keeps its level for independent p; for identical (fully dependent) p
    Fisher is far too liberal while twice the mean p stays valid."""
    rng = np.random.default_rng(0)
    ind = rng.random((4000, 4))
    assert np.mean([fisher(p) <= 0.05 for p in ind[:1000]]) == pytest.approx(0.05, abs=0.02)
    assert np.mean([stouffer(p) <= 0.05 for p in ind[:1000]]) == pytest.approx(0.05, abs=0.02)
    same = np.repeat(rng.random((2000, 1)), 4, axis=1)
    assert np.mean([fisher(p) <= 0.05 for p in same]) > 0.1       # about 0.145: twice the level
    assert np.mean([mean_merged(p) <= 0.05 for p in same]) <= 0.05
    assert fisher([0.01, 0.2]) == pytest.approx(sps.combine_pvalues([0.01, 0.2])[1])


def _npz(path, seed, n=300, **design):
    z, meta, head = calibration_data(CalibrationDesign(d=20, **design), n, seed=seed)
    np.savez(path, embeddings=z, label=meta.label.values, attr=meta.attr.values, head_label=head)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    for s in range(3):
        _npz(d / f"seed{s}.npz", s, shift=2.0, use=0.6)
    return d


def test_runs_combine_used_attribute(run_files, capsys):
    out = run_files / "out"
    argv = ["analyze", "--runs", *[str(run_files / f"seed{s}.npz") for s in range(3)], "--primary", "label",
            "--categorical", "attr", "--bootstrap", "20", "--permutations", "99", "--pca-min", "10", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == ["report.html", "runs.json", "seed0", "seed1", "seed2"]
    d = json.loads((out / "runs.json").read_text())
    c = d["combined"]["attr"]
    per = [json.loads((out / f"seed{s}" / "wsca.json").read_text())["tasks"]["attr"] for s in range(3)]
    cells = np.array([p["wsc"] for p in per])
    np.testing.assert_allclose(c["cells_mean"], cells.mean(0), atol=1e-9)
    assert c["p_values"] == [p["summary"]["p_value"] for p in per]
    assert c["mean_merged_p"] == pytest.approx(min(1, 2 * np.mean(c["p_values"])))
    assert c["largest_cell"]["sign_consistency"] == 1.0 and c["verdict"].startswith("aligned across runs")
    assert c["excess"]["random_effects"]["mean"] > 2 and c["inter_network_null"]["pairs"] == 6
    assert d["settings"]["shared_data"] is True
    # a pre-specified signed cell, one-sided: the aligned cell is significant, a negative cell is not
    from wsca_jax.report import load_result
    from wsca_jax.analysis.runs import signed_contrast
    r0 = load_result(str(out / "seed0"))
    w = r0.tasks["attr"].wsc
    pos, neg = int(np.argmax(w[0])), int(np.argmin(w[0]))
    assert r0.tasks["attr"].wsc.shape[0] == 1                   # a one-logit head: its row is class 1's
    assert signed_contrast(r0, "attr", 1, pos)["p_value"] <= 0.05
    assert signed_contrast(r0, "attr", 1, neg)["p_value"] > 0.5
    flipped = signed_contrast(r0, "attr", 0, neg)               # class 0 looks the other way
    assert flipped["observed"] == pytest.approx(-w[0, neg]) and flipped["p_value"] <= 0.05
    capsys.readouterr()


RUN_BAD = {
    "single run": (["seed0"], "expected at least 2 runs"),
    "missing run file": (["seed0", "nope"], "--runs"),
    "different columns": (["seed0", "extra_col"], "metadata columns"),
    "different primary classes": (["seed0", "three_classes"], "classes"),
    "runs and embeddings": (["seed0", "seed1", "--embeddings", "{d}/seed0.npz"], "not both"),
    "no metadata in npz": (["seed0", "bare"], "holds no metadata columns"),
    "different task classes": (["seed0", "four_attr", "--categorical", "attr"], "expected the same classes in every run"),
}


@pytest.mark.parametrize("case", sorted(RUN_BAD))
def test_runs_bad_input_one_line_exit_2_nothing_written(run_files, capsys, case, tmp_path):
    d = run_files
    z = np.load(d / "seed1.npz")
    np.savez(d / "extra_col.npz", **{k: z[k] for k in z.files}, site=np.zeros(len(z["label"]), int))
    lab3 = z["label"].copy()
    lab3[:50] = 2
    np.savez(d / "three_classes.npz", **{k: z[k] for k in z.files if k != "label"}, label=lab3)
    attr4 = z["attr"].copy()
    attr4[:40] = 3
    np.savez(d / "four_attr.npz", **{k: z[k] for k in z.files if k != "attr"}, attr=attr4)
    np.save(d / "bare.npy", z["embeddings"])
    np.savez(d / "bare.npz", embeddings=z["embeddings"])
    spec, message = RUN_BAD[case]
    n_files = next((i for i, x in enumerate(spec) if x.startswith("-")), len(spec))
    files = [str(d / f"{x}.npz") for x in spec[:n_files]]
    rest = [x.format(d=d) for x in spec[n_files:]]
    out = tmp_path / "out"
    code = main(["analyze", "--runs", *files, *rest, "--primary", "label", "--bootstrap", "0", "--permutations", "0",
                 "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_analyze_runs_python_api_single_run_is_refused():
    z, meta, head = calibration_data(CalibrationDesign(d=12), 100, seed=0)
    with pytest.raises(wsca.WscaInputError, match="at least 2"):
        wsca.analyze_runs([{"embeddings": z, "metadata": meta}], "label", config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0))
    other = meta.assign(extra=0)
    with pytest.raises(wsca.WscaInputError, match="metadata columns"):
        wsca.analyze_runs([{"embeddings": z, "metadata": meta}, {"embeddings": z + 1e-3, "metadata": other}], "label", config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0))


def test_stouffer_survives_a_run_with_p_one():
    """A permutation p of exactly 1 (common where the test is conservative) must not erase the others."""
    p = [0.001, 0.001, 0.001, 1.0]
    assert stouffer(p, n_perm=[999] * 4) < 0.05
    assert random_effects(np.array([1.0, 2.0]), np.array([0.1, 0.1]))["df"] == 1
