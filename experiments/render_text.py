"""Render the README's generated sections from the experiment records.

    .venv/bin/python experiments/render_text.py          # rewrite them in place
    .venv/bin/python experiments/render_text.py --check  # exit 1 if the README is stale

Sections (``<!-- generated:NAME -->`` ... ``<!-- /generated:NAME -->`` in README.md) and their
templates in ``experiments/templates/``: ``induced-shortcut`` (readme_induced.md) and
``application`` (readme_application.md, once ``busbra_application_runs.jsonl`` exists),
``calibration`` (readme_calibration.md, from the calibration study's records), ``runs``
(readme_runs.md, from ``runs_combined.jsonl``), ``ifa`` (readme_ifa.md, from ``ifa_runs.jsonl``), ``mid`` (``waterbirds_mid.readme_text``, from
``waterbirds_mid_runs.jsonl``), ``speed`` (``benchmarks/render_results.readme_speed``, from the
benchmark records).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

README = os.path.join(HERE, "..", "README.md")


def sections() -> dict[str, str]:
    """``{name: rendered text}`` from the committed records."""
    import induced_shortcut as ind
    from prose import render

    args = ind.build_parser().parse_args([])
    runs, nulls, old = ind.load_records(args.out)
    ns = ind.prose_namespace(runs, ind.seed_null_tests(runs, nulls), old)
    with open(os.path.join(HERE, "templates", "readme_induced.md")) as f:
        out = {"induced-shortcut": render(f.read(), ns)}
    import busbra_application as app
    aargs = app.build_parser().parse_args([])
    if os.path.exists(os.path.join(aargs.out, "busbra_application_runs.jsonl")):
        with open(os.path.join(HERE, "templates", "readme_application.md")) as f:
            out["application"] = render(f.read(), app.prose_namespace(app.load_runs(aargs.out)))
    import calibration as cal
    cargs = cal.build_parser().parse_args([])
    if os.path.exists(os.path.join(cargs.out, "calibration_summary.json")):
        with open(os.path.join(HERE, "templates", "readme_calibration.md")) as f:
            out["calibration"] = render(f.read(), cal.prose_namespace(cargs.out))
    import runs_combined as rc
    rargs = rc.build_parser().parse_args([])
    if os.path.exists(os.path.join(rargs.out, "runs_combined.jsonl")):
        with open(os.path.join(HERE, "templates", "readme_runs.md")) as f:
            out["runs"] = render(f.read(), rc.prose_namespace(rargs.out))
    import ifa_validation as ifv
    if os.path.exists(os.path.join(HERE, "results", "ifa_runs.jsonl")):
        with open(os.path.join(HERE, "templates", "readme_ifa.md")) as f:
            out["ifa"] = render(f.read(), ifv.prose_namespace(os.path.join(HERE, "results")))
    import waterbirds_mid as wm
    if os.path.exists(os.path.join(HERE, "results", wm.RUNS)):
        out["mid"] = wm.readme_text(os.path.join(HERE, "results"))
    sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
    import render_results
    speed = render_results.readme_speed()
    if speed:
        out["speed"] = speed
    return out


def rendered_readme(text: str) -> str:
    from prose import update_section
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
