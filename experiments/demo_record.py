"""The demo's outcome as a record (issue 28): what `wsca demo` decided and measured, for the README.

``wsca demo`` writes ``runs/demo/summary.json`` (outside git). This script appends one line per demo
run to ``results/demo_runs.jsonl`` -- the decision-use verdict of every condition, and for the
planted signature its response measured by intervention, the observational within-class shift and
the counterfactual verdict -- and renders the README's ``demo`` paragraph from the last line.

    .venv/bin/wsca demo --out runs/demo && .venv/bin/python experiments/demo_record.py --from runs/demo
"""

from __future__ import annotations

import json
import os
import time

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca

RUNS = "demo_runs.jsonl"


def slim(summary: dict) -> dict:
    """The record of one demo ``summary.json``: verdicts and measured responses only."""
    def use(m):
        du, st = m.get("decision_use") or {}, m.get("statistics") or {}
        sh = st.get("within_class_shift") or {}
        return {"verdict": du.get("verdict"), "statistic": du.get("statistic"), "estimate": du.get("estimate"),
                "ci": du.get("ci"), "shift": sh.get("estimate"), "shift_ci": sh.get("ci")}
    rec = {"dataset": summary["dataset"], "seconds": summary.get("seconds"),
           "conditions": {f"{c}/{s}": use(m) for c, by in summary["conditions"].items() for s, m in by.items()}}
    planted = summary.get("planted")
    if planted:
        rec["planted"] = {"kind": planted["kind"], "conditions": {}}
        for name, m in planted["conditions"].items():
            cf = (m.get("statistics") or {}).get("counterfactual") or {}
            rec["planted"]["conditions"][name] = {
                "association": m["association"], **use(m), "effect": m["intervention"]["artefact"]["effect"],
                "control_effect": m["intervention"]["control"]["effect"], "counterfactual": cf.get("estimate"),
                "counterfactual_control": (cf.get("control") or {}).get("estimate"), "excess": cf.get("excess"),
                "excess_ci": cf.get("excess_ci")}
    return rec


def readme_text(out: str) -> str:
    """The README's ``demo`` paragraph from the last recorded demo run."""
    rows = runner.read_records(os.path.join(out, RUNS), missing_ok=True)
    if not rows:
        return "No demo run recorded yet (`experiments/demo_record.py`).\n"
    r = rows[-1]
    f = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    conds = "; ".join(f"{k} \"{v['verdict']}\" (within-class shift {f(v['shift'])})" for k, v in r["conditions"].items())
    text = (f"Last recorded run ([experiments/results/{RUNS}](experiments/results/{RUNS}), {r['dataset']}, "
            f"wsca_jax {r['wsca_version']}, {r['date']}, {r['seconds']:.0f} s): {conds}.")
    for name, p in (r.get("planted") or {}).get("conditions", {}).items():
        text += (f" Planted {r['planted']['kind'].replace('_', ' ')}, association {p['association']:g} ({name}): "
                 f"stamping the clean test images moves the decision {f(p['effect'])} SD (control stamp "
                 f"{f(p['control_effect'])} SD); observational within-class shift {f(p['shift'])}; counterfactual "
                 f"response {f(p['counterfactual'])} SD against the control's {f(p['counterfactual_control'])}: "
                 f"verdict \"{p['verdict']}\".")
    return text + "\n"


def run(args) -> None:
    with open(os.path.join(args.source, "summary.json")) as fh:
        summary = json.load(fh)
    rec = {**slim(summary), "wsca_version": wsca.__version__, "date": time.strftime("%Y-%m-%d")}
    runner.append_record(os.path.join(args.out, RUNS), rec)


def build_parser():
    return runner.parser(__doc__, lambda p: p.add_argument("--from", dest="source", default="runs/demo",
                                                           help="the demo's output folder"), data_dir=False)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {})


if __name__ == "__main__":
    main()
