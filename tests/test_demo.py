"""`wsca demo` on the bundled digits (the fallback when BUS-BRA is absent): the summary contract,
the per-condition folders, `wsca report` re-rendering, and the induced-artefact design itself."""

import json

import numpy as np

from wsca_jax.cli import main
from wsca_jax.training.data import load_digits_dataset
from wsca_jax.validation.experiment import artefact_spec, condition_dataset, design_table


def test_demo_summary_contract(demo_dir):
    out, record = demo_dir
    with open(out / "summary.json") as f:
        s = json.load(f)
    assert s["dataset"] == "digits" and "BUS-BRA not found" in s["note"]
    assert set(s["conditions"]) == {"balanced", "biased"}
    for cond in ("balanced", "biased"):
        assert set(s["conditions"][cond]) == {"fine_tuned", "multi_task"}
        for setting, m in s["conditions"][cond].items():
            for key in ("max_abs_wsc", "ci", "primary_auroc", "confounder_probe_auroc"):
                assert m[key] is not None, (cond, setting, key)
            # fixed (multi-task) heads have no null of their own statistic here: not tested, no p-value
            if setting == "multi_task":
                assert m["p_value"] is None and m["test"] is None
            else:
                assert 0 < m["p_value"] <= 1 and m["test"] == "permutation" and m["converged"] is True
            assert 0 <= m["max_abs_wsc"] <= 1
            lo, hi = m["ci"]
            assert lo <= hi
            assert 0 <= m["primary_auroc"] <= 1 and 0 <= m["confounder_probe_auroc"] <= 1
            assert m["source"] == ("head" if setting == "multi_task" else "probe")
            sub = out / f"{cond}_{setting}"
            assert (sub / "wsca.json").exists() and (sub / "report.html").exists()
    assert (out / "report.html").stat().st_size > 20_000          # figures are inlined
    # the planted signature: each network's use measured by intervention beside its verdict
    p = s["planted"]
    assert p["kind"] == "corner_stamp" and set(p["conditions"]) == {"unused", "used"}
    for name, m in p["conditions"].items():
        for arm in ("artefact", "control"):
            e = m["intervention"][arm]
            assert e["effect"] >= 0 and 0 <= e["flip_rate"] <= 1 and 0 <= e["auroc_toggled"] <= 1
        assert m["decision_use"]["verdict"] in ("used", "not used", "inconclusive")
        cf = m["statistics"]["counterfactual"]              # the verdict rests on the toggled training rows
        assert m["decision_use"]["statistic"] == "counterfactual" and cf["estimate"] >= 0
        assert cf["control"]["estimate"] >= 0 and cf["excess"] == cf["estimate"] - cf["control"]["estimate"]
        assert (out / f"planted_{name}_fine_tuned" / "wsca.json").exists()
    assert "A planted signature whose use is measured" in (out / "report.html").read_text()


def test_planted_intervention_measures_a_known_response(tmp_path):
    """The intervention's truth on networks with a known answer: a stamp on exactly the positive
    class of training images (association 1) is a shortcut, a stamp on half of each class
    (association 0) is useless; stamping every clean test image moves the first network's decision
    several times more than the second's, and more than the control stamp in the other corner."""
    from wsca_jax.training.train import TrainConfig, fit
    from wsca_jax.validation.intervention import intervention
    ds = load_digits_dataset()
    spec = artefact_spec("digits", kind="corner_stamp")
    test = ds.split == 2
    t = {}
    for assoc in (0.0, 1.0):
        run = tmp_path / f"a{assoc:g}"
        fit(condition_dataset(ds, spec, assoc, seed=0), "label", (), TrainConfig(epochs=3, batch_size=32, seed=0),
            run_dir=str(run), progress=False)
        t[assoc] = intervention(str(run), ds.images[test], np.asarray(ds.columns["label"])[test], "corner_stamp")
    assert t[1.0]["artefact"]["effect"] > 3 * t[0.0]["artefact"]["effect"]
    assert t[1.0]["artefact"]["effect"] > t[1.0]["control"]["effect"]
    assert t[1.0]["artefact"]["flip_rate"] > t[0.0]["artefact"]["flip_rate"]


def test_report_command_rerenders_from_folder(demo_dir, tmp_path, capsys):
    out, _ = demo_dir
    target = tmp_path / "again.html"
    assert main(["report", "--run", str(out / "biased_multi_task"), "--out", str(target)]) == 0
    text = target.read_text()
    assert "data:image/png;base64" in text and "dist_artefact.png" in text
    assert text.count("<img") >= 3                              # overview, heatmap, distributions


def test_report_and_demo_bad_input_exit_2(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "--run", str(tmp_path / "empty")]) == 2
    assert "no wsca.json" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "afile"), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err
    assert main(["demo", "--out", str(tmp_path / "d"), "--dataset", "busbra", "--data-dir", str(tmp_path)]) == 2
    assert "busbra_64.npz not found" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_artefact_design_moves_the_stamped_share():
    ds = load_digits_dataset()
    spec = artefact_spec("digits")
    shares = []
    for s in (0.0, 0.5, 0.8):
        cd = condition_dataset(ds, spec, s, seed=0)
        t = design_table(cd, spec)
        frac = t["stamped"] / t.sum(axis=1)
        shares.append((frac[0], frac[1]))
        test = cd.split == 2
        stamped = cd.columns["artefact"] == "stamped"
        assert abs(stamped[test].mean() - 0.5) < 0.05                 # test rows: half, whatever the strength
        # stamped images differ from the originals exactly where stamped
        changed = (cd.images != ds.images).reshape(len(ds), -1).any(1)
        assert not changed[~stamped].any()
    np.testing.assert_allclose(shares, [(0.5, 0.5), (0.25, 0.75), (0.1, 0.9)], atol=0.01)


def test_demo_report_renders_in_chromium(chromium, demo_dir, tmp_path):
    """In this file (not test_report_browser.py) so that the session's one demo run is shared: pytest-xdist
    runs each file on one worker, and a session fixture used from two files would run twice."""
    from test_report_browser import check_renders
    out, record = demo_dir
    check_renders(chromium, out / "report.html", tmp_path, min_figures=2 + 2 * 4)


def test_demo_record_keeps_every_verdict_and_measured_response(demo_dir, tmp_path):
    """``experiments/demo_record.py`` turns a demo's summary into the README's record: every
    condition's verdict and the planted signature's measured responses, rendered back into text."""
    import importlib.util
    import sys
    from pathlib import Path
    exp = Path(__file__).resolve().parents[1] / "experiments"
    sys.path.insert(0, str(exp))
    spec = importlib.util.spec_from_file_location("demo_record", exp / "demo_record.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, record = demo_dir
    mod.main(["--from", str(out), "--out", str(tmp_path)])
    rec = json.loads((tmp_path / mod.RUNS).read_text())
    assert set(rec["conditions"]) == {f"{c}/{s}" for c in ("balanced", "biased") for s in ("fine_tuned", "multi_task")}
    for name, p in rec["planted"]["conditions"].items():
        m = record["planted"]["conditions"][name]
        assert p["effect"] == m["intervention"]["artefact"]["effect"] and p["verdict"] == m["decision_use"]["verdict"]
    text = mod.readme_text(str(tmp_path))
    assert text.count('verdict "') == 2 and "digits" in text
