"""Render the README's generated sections from the experiment records.

    .venv/bin/python experiments/render_text.py          # rewrite them in place
    .venv/bin/python experiments/render_text.py --check  # exit 1 if the README is stale

Sections (``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->`` in README.md) and their
templates in ``experiments/templates/``: ``induced-shortcut`` (readme_induced.md) and
``application`` (readme_application.md, once ``busbra_application_runs.jsonl`` exists),
``calibration`` (readme_calibration.md, from the calibration study's records), ``runs``
(readme_runs.md, from ``runs_combined.jsonl``), ``ifa`` (readme_ifa.md, from ``ifa_runs.jsonl``), ``mid`` (``waterbirds_mid.readme_text``, from
``waterbirds_mid_runs.jsonl``), ``decision-use`` (``use_validation.readme_text``, from
``use_zoo_runs.jsonl`` and ``use_calibration_runs.jsonl``), ``speed`` (``benchmarks/render_results.readme_speed``, from the
benchmark records).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import runner  # noqa: E402  (experiments/runner.py; puts the repository root on sys.path)
from prose import update_section  # noqa: E402

README = os.path.join(HERE, "..", "README.md")


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join(runner.RESULTS, name))


def sections() -> dict[str, str]:
    """``{name: rendered text}`` from the committed records (in ``experiments/results``, the default ``--out``)."""
    import busbra_application as app
    import calibration as cal
    import ifa_validation as ifv
    import induced_shortcut as ind
    import runs_combined as rc
    import use_validation as uv
    import waterbirds_mid as wm

    out = runner.RESULTS
    runs, nulls, old = ind.load_records(out)
    texts = {"induced-shortcut": runner.render_template(
        "readme_induced.md", ind.prose_namespace(runs, ind.seed_null_tests(runs, nulls), old))}
    if _exists("busbra_application_runs.jsonl"):
        texts["application"] = runner.render_template("readme_application.md", app.prose_namespace(app.load_runs(out)))
    if _exists("calibration_summary.json"):
        texts["calibration"] = runner.render_template("readme_calibration.md", cal.prose_namespace(out))
    if _exists("runs_combined.jsonl"):
        texts["runs"] = runner.render_template("readme_runs.md", rc.prose_namespace(out))
    if _exists("ifa_runs.jsonl"):
        texts["ifa"] = runner.render_template("readme_ifa.md", ifv.prose_namespace(out))
    if _exists(wm.RUNS):
        texts["mid"] = wm.readme_text(out)
    if _exists(uv.RUNS):
        texts["decision-use"] = uv.readme_text(out)
    import demo_record
    if _exists(demo_record.RUNS):
        texts["demo"] = demo_record.readme_text(out)
    sys.path.insert(0, os.path.join(runner.ROOT, "benchmarks"))
    import render_results
    speed = render_results.readme_speed()
    if speed:
        texts["speed"] = speed
    return texts


def rendered_readme(text: str) -> str:
    for name, body in sections().items():
        text = update_section(text, name, body)
    return text


def main() -> int:
    with open(README) as f:
        text = f.read()
    new = rendered_readme(text)
    if "--check" in sys.argv:
        print("README is up to date" if new == text else "README is stale: run experiments/render_text.py")
        return 0 if new == text else 1
    with open(README, "w") as f:
        f.write(new)
    print("rewrote the generated sections of README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
