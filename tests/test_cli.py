"""The wsca command line: outputs, help, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from wsca_jax.cli import main
from conftest import make_known_answer


@pytest.fixture
def files(tmp_path):
    z, meta, head = make_known_answer(n=400, d=16, used=True, seed=5)
    meta["age"] = np.random.default_rng(0).normal(50, 10, len(meta))
    meta["case"] = np.arange(len(meta)) // 2
    np.save(tmp_path / "emb.npy", z)
    meta.to_csv(tmp_path / "meta.csv", index=False)
    np.save(tmp_path / "head.npy", head)
    return tmp_path


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_writes_json_report_and_figures(files, capsys):
    out = files / "res"
    code, stdout, _ = run(["analyze", "--embeddings", str(files / "emb.npy"), "--metadata", str(files / "meta.csv"),
                           "--primary", "label", "--primary-head", str(files / "head.npy"), "--group-column", "case",
                           "--bootstrap", "20", "--permutations", "20", "--pca-min", "16", "--quiet",
                           "--out", str(out)], capsys)
    assert code == 0
    names = sorted(os.listdir(out))
    assert names == ["dist_age.png", "dist_site.png", "encoded_vs_used.png", "k_sensitivity.png", "report.html", "wsca.json",
                     "wsca_age.png", "wsca_distributions.npz", "wsca_site.png"]
    d = json.loads((out / "wsca.json").read_text())
    assert d["primary"]["source"] == "head" and d["settings"]["encoding"]["group_column"] == "case"
    assert set(d["tasks"]) == {"site", "age"} and d["n_samples"] == 400 and d["embedding_dim"] == 16
    assert d["tasks"]["site"]["summary"]["p_value"] <= 1 / 21 + 1e-9
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "site" in html


def test_npz_with_head_and_columns(files, capsys, tmp_path):
    z = np.load(files / "emb.npy")
    meta = pd.read_csv(files / "meta.csv")
    head = np.load(files / "head.npy")
    np.savez(tmp_path / "emb.npz", embeddings=z, head_label=head, label=meta["label"].to_numpy(),
             site=meta["site"].to_numpy())
    code, _, err = run(["analyze", "--embeddings", str(tmp_path / "emb.npz"), "--primary", "label",
                        "--pca-min", "16", "--bootstrap", "0", "--permutations", "0", "--quiet", "--no-figures",
                        "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    d = json.loads((tmp_path / "r" / "wsca.json").read_text())
    assert d["primary"]["source"] == "head" and list(d["tasks"]) == ["site"]


def test_task_heads_and_conditional_permutations(files, capsys, tmp_path):
    z = np.load(files / "emb.npy")
    meta = pd.read_csv(files / "meta.csv")
    head = np.load(files / "head.npy")
    site_head = np.zeros((2, z.shape[1]))
    site_head[:, 1] = [-1, 1]
    np.savez(tmp_path / "emb.npz", embeddings=z, head_label=head, head_site=site_head,
             label=meta["label"].to_numpy(), site=meta["site"].to_numpy())
    base = ["analyze", "--embeddings", str(tmp_path / "emb.npz"), "--primary", "label", "--pca-min", "16",
            "--quiet", "--no-figures", "--bootstrap", "0", "--permutations", "20"]
    code, _, err = run(base + ["--task-heads", "site", "--permute-within", "label", "--out", str(tmp_path / "r")],
                       capsys)
    assert code == 0, err
    d = json.loads((tmp_path / "r" / "wsca.json").read_text())
    assert d["tasks"]["site"]["source"] == "head" and d["settings"]["resampling"]["permute_within"] == "label"
    # the known head (e0 + e1) against the site head (e1): cos 45 degrees
    np.testing.assert_allclose(d["tasks"]["site"]["summary"]["max_abs_wsc"], np.sqrt(0.5), atol=1e-5)
    assert d["tasks"]["site"]["summary"]["p_value"] is None            # no null of its own: not tested
    # with a seed null of 9 networks, 3 of them at or above the observed 0.707: p = (1 + 3) / 10
    np.savetxt(tmp_path / "null.txt", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.71, 0.8, 0.9])
    code, _, err = run(base + ["--task-heads", "site", "--head-null", f"site={tmp_path / 'null.txt'}",
                               "--out", str(tmp_path / "r3")], capsys)
    assert code == 0, err
    s = json.loads((tmp_path / "r3" / "wsca.json").read_text())["tasks"]["site"]["summary"]
    assert s["test"] == "seed_null" and s["head_null_n"] == 9
    np.testing.assert_allclose(s["p_value"], 0.4)
    code, _, err = run(base + ["--task-heads", "scanner", "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "no head_scanner" in err and err.count("\n") == 1
    assert not (tmp_path / "r2").exists()


def test_help_shows_an_example():
    r = subprocess.run([sys.executable, "-m", "wsca_jax.cli", "analyze", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "example:" in r.stdout and "wsca analyze --embeddings" in r.stdout


def test_report_rerenders_an_analyze_folder_with_and_without_distributions(files, capsys):
    out = files / "res"
    assert main(["analyze", "--embeddings", str(files / "emb.npy"), "--metadata", str(files / "meta.csv"),
                 "--primary", "label", "--bootstrap", "10", "--permutations", "10", "--pca-min", "16", "--quiet",
                 "--tasks", "site", "--out", str(out)]) == 0
    before = json.loads((out / "wsca.json").read_text())
    (out / "report.html").unlink()
    assert main(["report", "--run", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert html.count("<img") == 4 and "permutation null (10)" not in html   # figures are images, not text
    os.remove(out / "wsca_distributions.npz")                                # an older folder: no histograms
    assert main(["report", "--run", str(out), "--out", str(files / "r.html")]) == 0
    assert (files / "r.html").read_text().count("<img") == 3
    assert json.loads((out / "wsca.json").read_text()) == before              # wsca.json is not rewritten
    capsys.readouterr()
