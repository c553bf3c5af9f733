"""Text cannot drift from the records: every committed results file and generated README section
equals what the scripts render from the committed records."""

import importlib.util
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).parents[1]
EXP = ROOT / "experiments"


def _module(name):
    sys.path.insert(0, str(EXP))
    spec = importlib.util.spec_from_file_location(name, EXP / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_induced_shortcut_results_file_matches_its_records():
    ind = _module("induced_shortcut")
    args = ind.build_parser().parse_args([])
    assert (EXP / "results" / "induced_shortcut.md").read_text() == ind.markdown(args)


def test_fixed_head_null_results_file_matches_its_record():
    fh = _module("fixed_head_null")
    rec = json.loads((EXP / "results" / "fixed_head_null.json").read_text())
    assert (EXP / "results" / "fixed_head_null.md").read_text() == fh.report(rec)


def test_mitigation_results_file_matches_its_records():
    wm = _module("waterbirds_mid")
    if (EXP / "results" / wm.RUNS).exists():
        assert (EXP / "results" / "waterbirds_mid.md").read_text() == wm.report(str(EXP / "results"))


def test_mitigation_simulation_results_file_matches_its_records():
    ms = _module("mid_simulation")
    assert (EXP / "results" / "mid_simulation.md").read_text() == ms.report(str(EXP / "results"))


def test_readme_generated_sections_match_the_records():
    rt = _module("render_text")
    text = (ROOT / "README.md").read_text()
    assert "<!-- generated:induced-shortcut -->" in text
    assert rt.rendered_readme(text) == text


def test_templates_are_rendered_from_expressions():
    prose = _module("prose")
    ns = prose.namespace(x=[0.1, 0.3])
    assert prose.render("mean {{ num(sum(x) / len(x)) }}", ns) == "mean 0.20"
    assert prose.update_section("a<!-- generated:s -->old<!-- /generated:s -->b", "s", "new") == \
        "a<!-- generated:s -->\nnew\n<!-- /generated:s -->b"


def test_busbra_application_results_file_matches_its_records():
    app = _module("busbra_application")
    if not (EXP / "results" / "busbra_application_runs.jsonl").exists():
        # only the records of 0.2 exist: the results file must say it is not rerun
        assert "not yet rerun" in (EXP / "results" / "busbra_application.md").read_text()
        return
    args = app.build_parser().parse_args([])
    assert (EXP / "results" / "busbra_application.md").read_text() == app.markdown(args)


def test_k_sweep_results_file_matches_its_records():
    ks = _module("k_sweep")
    path = EXP / "results" / "k_sweep_runs.jsonl"
    if path.exists():
        assert (EXP / "results" / "k_sweep.md").read_text() == ks.report(str(path))


def test_calibration_results_file_matches_its_records():
    cal = _module("calibration")
    out = EXP / "results"
    if (out / "calibration_summary.json").exists():
        assert (out / "calibration.md").read_text() == cal.report(str(out))


def test_ifa_results_file_matches_its_records():
    ifv = _module("ifa_validation")
    out = EXP / "results"
    if (out / "ifa_runs.jsonl").exists():
        assert (out / "ifa.md").read_text() == ifv.report(str(out))


def test_runs_combined_results_file_matches_its_records():
    rc = _module("runs_combined")
    out = EXP / "results"
    if (out / "runs_combined.jsonl").exists():
        assert (out / "runs_combined.md").read_text() == rc.report(str(out))


def test_default_interval_is_the_one_the_calibration_study_chose():
    import inspect

    import wsca_jax as wsca
    cal = _module("calibration")
    out = EXP / "results"
    if not (out / "calibration_summary.json").exists():
        return
    import pandas as pd
    rec, cov, _ = cal.load_summary(str(out))
    _, best = cal.choose_default(cov, pd.DataFrame(rec.get("jackknife") or []))
    import wsca_jax.analysis as analysis
    if hasattr(analysis, "AnalysisConfig"):       # issue 26: the one default lives in the config
        default = analysis.AnalysisConfig().inference.ci_method
    else:
        default = inspect.signature(wsca.analyze).parameters["ci_method"].default
    assert default == best


def test_controls_results_file_matches_its_records():
    ctl = _module("controls")
    out = EXP / "results"
    if (out / "controls_runs.jsonl").exists():
        assert (out / "controls.md").read_text() == ctl.report(str(out))
