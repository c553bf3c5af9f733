"""Which statistics are properties of the decision? Coordinate changes that keep every logit (issue 28).

A simulated embedding (binary class and a binary attribute, both encoded, correlated; a head that
reads the class and the attribute) is changed by ``x -> x A + c`` with the head mapped to keep every
logit (``head A^-T``, bias adjusted): channel 2 x10 and x0.1, a random rotation, log-normal channel
scales, a folded BatchNorm gain and shift. For each: the paper's WSC (``wsca.analyze``, k = D, no
truncation) and the decision-use statistics of ``wsca_jax.use``. One JSON line per change in
``results/invariance_runs.jsonl``; ``results/invariance.md`` is rendered from it only.

    .venv/bin/python experiments/invariance.py                # about a minute
"""

from __future__ import annotations

import os
import warnings

import numpy as np

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from wsca_jax.use import decision_scores, erasure_effect, score_correlation, whitened_probe_scores, within_class_eta

RUNS = "invariance_runs.jsonl"
NAMES = ("wsc", "within_class_eta", "score_correlation", "score_correlation_within", "erasure", "erasure_within")


def world(n=2000, d=16, use=0.6, seed=0):
    """Embeddings ``(n, d)``, class ``y``, attribute ``a`` (agreeing with y in 65% of rows), a head
    reading the class axis and, with weight ``use``, the attribute axis, and its bias."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.65, y, 1 - y)
    x = rng.normal(size=(n, d))
    x[:, 0] += 1.5 * (2 * y - 1)
    x[:, 1] += 1.2 * (2 * a - 1)
    x = x @ rng.normal(size=(d, d)) * 0.5 + x
    head = np.zeros((2, d))
    head[1] = np.linalg.lstsq(x, (2 * y - 1) + use * (2 * a - 1), rcond=None)[0]
    return x, y, a, head, np.array([0.0, 0.1])


def changes(d: int, seed: int = 1) -> dict:
    """``{name: (A, c)}``: the identity and five changes of coordinates."""
    rng = np.random.default_rng(seed)
    up = np.eye(d)
    up[2, 2] = 10.0
    return {"none": (np.eye(d), np.zeros(d)), "channel 2 x10": (up, np.zeros(d)),
            "channel 2 x0.1": (np.linalg.inv(up), np.zeros(d)),
            "random rotation": (np.linalg.qr(rng.normal(size=(d, d)))[0], np.zeros(d)),
            "log-normal channel scales": (np.diag(np.exp(rng.normal(0, 1, d))), np.zeros(d)),
            "folded BatchNorm (gain and shift)": (np.diag(rng.uniform(0.2, 5.0, d)), rng.normal(0, 3, d))}


def measure(x, y, a, head, bias) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=x.shape[1], pca_variance=1.0)
        wsc = wsca.analyze(x, {"label": y, "site": a}, "label", head, config=cfg).tasks["site"].summary["max_abs_wsc"]
    s = decision_scores(head, x, bias)
    p = whitened_probe_scores(x, a)
    return {"wsc": wsc, "within_class_eta": within_class_eta(s, y, a, permutations=0)["estimate"],
            "score_correlation": score_correlation(s, p), "score_correlation_within": score_correlation(s, p, y),
            "erasure": erasure_effect(x, head, bias, y, a, draws=0)["estimate"],
            "erasure_within": erasure_effect(x, head, bias, y, a, draws=0, within=True)["estimate"]}


def run(args) -> None:
    x, y, a, head, bias = world()
    path = os.path.join(args.out, RUNS)
    for name, (A, c) in changes(x.shape[1]).items():
        h = head @ np.linalg.inv(A).T
        x2, b2 = x @ A + c, bias - c @ h.T
        kept = float(np.abs(decision_scores(h, x2, b2) - decision_scores(head, x, bias)).max())
        runner.append_record(path, {"change": name, "max_logit_change": kept, **measure(x2, y, a, h, b2),
                                    "wsca_version": wsca.__version__})
        print(name, flush=True)


def report(out: str) -> str:
    rows = runner.read_records(os.path.join(out, RUNS))
    base = rows[0]
    lines = ["# Coordinate changes that keep every logit (rendered from `invariance_runs.jsonl` by "
             "`experiments/invariance.py`)", "",
             "Simulated embeddings (2,000 rows, 16 dimensions); the head reads the class and the attribute. Each row "
             "changes the coordinates (`x -> x A + c`) and maps the head so that every logit stays (largest change "
             "in the last column). The paper's WSC is computed with k = D (no truncation).", "",
             "| change | " + " | ".join(f"`{n}`" for n in NAMES) + " | largest logit change |",
             "|---|" + "---|" * (len(NAMES) + 1)]
    for r in rows:
        lines.append(f"| {r['change']} | " + " | ".join(f"{r[n]:.4f}" for n in NAMES) + f" | {r['max_logit_change']:.1e} |")
    spread = {n: max(abs(r[n] - base[n]) for r in rows) for n in NAMES}
    lines += ["", "Largest departure from the unchanged coordinates: " +
              ", ".join(f"`{n}` {spread[n]:.4f}" for n in NAMES) + "."]
    return "\n".join(lines) + "\n"


def build_parser():
    return runner.parser(__doc__, data_dir=False)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {"invariance.md": lambda a: report(a.out)}, fresh=RUNS)


if __name__ == "__main__":
    main()
