"""Where does mining help? MID against its controls on embeddings with a known enriched band (issue 29).

Waterbirds-like embeddings written by numpy (``simulate``): axis 0 carries the label (the core
feature), axis 1 the place (spurious), the rest noise; the ERM head leans on the place, so its
mid-range band holds the rows where place and label disagree -- the minority groups, known by
construction. The validation rows agree on place and label in a share ``agree`` of rows (the
**strength** of the spurious correlation there: 0.7, 0.85, 0.95, fixed before any run); the test
rows are group-balanced (agreement 0.5). For every strength and seed, every ``wsca mid`` head is
retrained on the validation rows (``retrain_methods``, default settings) and scored on the test
rows; paired differences over seeds with their 95% t intervals (``waterbirds_mid.paired``): MID minus
class balancing, MID minus the random band, DFR minus MID. One JSON line per strength and seed in
``results/mid_simulation_runs.jsonl``; ``results/mid_simulation.md`` is rendered from it only.

    .venv/bin/python experiments/mid_simulation.py                 # 3 strengths x 10 seeds (minutes)
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from waterbirds_mid import _pt, paired
from wsca_jax.mitigation import MidConfig
from wsca_jax.mitigation.mining import retrain_methods

RUNS = "mid_simulation_runs.jsonl"
STRENGTHS = (0.7, 0.85, 0.95)
SHARES = {"y0_a0": 0.45, "y1_a1": 0.45, "y0_a1": 0.05, "y1_a0": 0.05}     # the "training" groups' shares
PAIRS = (("mid", "erm"), ("class_balanced", "erm"), ("mid", "class_balanced"), ("mid", "random_band"),
         ("dfr", "mid"), ("jtt", "class_balanced"))


def simulate(n: int, agree: float, rng: np.random.Generator, d: int = 20) -> dict:
    """``n`` rows ``(n, d)``: label ``y``, place agreeing with it in a share ``agree``, ERM logits
    leaning on the place, groups ``y<label>_a<place>``."""
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < agree, y, 1 - y)
    z = rng.normal(size=(n, d))
    z[:, 0] += 1.5 * (2 * y - 1)
    z[:, 1] += 2.0 * (2 * a - 1)
    groups = np.char.add(np.char.add("y", y.astype(str)), np.char.add("_a", a.astype(str)))
    return {"x": z, "y": y, "logits": 1.6 * z[:, 1] + 0.6 * z[:, 0], "groups": groups, "classes": ["0", "1"]}


def run(args) -> None:
    path = os.path.join(args.out, RUNS)
    done = runner.done_keys(path, ("strength", "seed"))
    for strength in STRENGTHS:
        for seed in range(args.seeds):
            if (strength, seed) in done:
                continue
            t0 = time.time()
            rng = np.random.default_rng([seed, int(100 * strength)])
            val, test = simulate(args.rows, strength, rng), simulate(4000, 0.5, rng)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = retrain_methods(val, test, SHARES, MidConfig().replace(seed=seed))
            band = r["mining"]["band"]
            minority = np.isin(val["groups"], ["y0_a1", "y1_a0"])
            row = {"strength": strength, "seed": seed, "rows": args.rows, "wsca_version": wsca.__version__,
                   "seconds": round(time.time() - t0, 1),
                   "band_minority_share": float(minority[band].mean()), "minority_share": float(minority.mean()),
                   "methods": {k: {f: v[f] for f in ("worst_group", "mean_plain", "C")} for k, v in r["methods"].items()}}
            runner.append_record(path, row)
            print(f"strength {strength} seed {seed}: " + ", ".join(f"{k} {v['worst_group']:.3f}"
                                                                 for k, v in row["methods"].items()), flush=True)


def report(out: str) -> str:
    runs = runner.records_frame(os.path.join(out, RUNS))
    lines = ["# Where does mining help? MID and its controls on simulated embeddings (rendered from "
             "`mid_simulation_runs.jsonl` by `experiments/mid_simulation.py`)", "",
             "Waterbirds-like embeddings with a known spurious feature: the validation rows agree on place and "
             "label in a share (the strength) of rows, the test rows are group-balanced; the ERM head leans on the "
             "place. Every `wsca mid` head (default settings) retrained on the validation rows; worst-group test "
             "accuracy, mean ± SD over seeds; paired differences over seeds (points) with 95% t intervals.", "",
             "| strength | seeds | minority share: all rows / band | " + " | ".join(runs.iloc[0]["methods"]) + " |",
             "|---|---|---|" + "---|" * len(runs.iloc[0]["methods"])]
    for s, g in runs.groupby("strength"):
        cells = [f"{100 * np.mean([m[k]['worst_group'] for m in g.methods]):.1f} ± "
                 f"{100 * np.std([m[k]['worst_group'] for m in g.methods], ddof=1):.1f}" for k in g.iloc[0]["methods"]]
        lines.append(f"| {s:g} | {len(g)} | {g.minority_share.mean():.2f} / {g.band_minority_share.mean():.2f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| strength | paired difference | mean, points | 95% t interval |", "|---|---|---|---|"]
    for s, g in runs.groupby("strength"):
        for a, b in PAIRS:
            v = paired(np.array([m[a]["worst_group"] for m in g.methods]), np.array([m[b]["worst_group"] for m in g.methods]))
            ci = "n/a" if not v["ci"] else f"[{_pt(v['ci'][0])}, {_pt(v['ci'][1])}]"
            lines.append(f"| {s:g} | {a} - {b} | {_pt(v['mean'])} | {ci} |")
    return "\n".join(lines) + "\n"


def build_parser():
    def arguments(p):
        p.add_argument("--seeds", type=int, default=10)
        p.add_argument("--rows", type=int, default=1200, help="validation rows per dataset")
    return runner.parser(__doc__, arguments, data_dir=False)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {"mid_simulation.md": lambda a: report(a.out)})


if __name__ == "__main__":
    main()
