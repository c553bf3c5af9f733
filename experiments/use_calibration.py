"""Level and coverage of the decision-use statistics on datasets with a known truth (issue 28, acceptance).

Each dataset: ``n`` rows, a binary class ``y`` and a binary attribute ``a`` (independent of the class,
or agreeing with it in 90% of rows: ``confounded``), each a mean shift of the embeddings; a head that
reads the class and, in the ``used`` designs, the attribute too (its mean score differs by ``use``
between the attribute's levels, in SDs of the class head's within-class noise). Two families:

* ``synthetic``: ``d`` = 8 mixed channels (``x = z (I + 0.3 G)``), shifts of 1.5 on two axes;
* ``real``: the covariance of real embeddings -- the validation rows of a PneumoniaMNIST network of
  ``experiments/use_zoo.py`` (its cached embeddings), on the 64 leading principal axes of their
  within-cell covariance (of 256; with all 256 and 600 rows the probes are near separation and
  a dataset took 90 s): noise ``N(0, Sigma_W)`` with ``Sigma_W`` that covariance, the class and attribute shifts their
  measured cell-mean differences, the head the class's discriminant direction made orthogonal to
  the attribute's shift (unused; plus a multiple of the shift: used).

Every statistic of ``summary.statistics`` is computed as ``wsca analyze`` does (the functions of
``wsca_jax.analysis.use_stage``: ``bootstrap`` resamples, ``permutations`` null draws), and the
population value as the same estimate on one draw of ``POP_N`` rows. Recorded per design: the
share of datasets each test rejects at 0.05 (the level where the head does not read the
attribute, the power where it does) and the share of intervals holding the population value
(coverage), each with its Monte Carlo SE. One JSON line per design and seed in
``results/use_calibration_runs.jsonl``; ``results/use_calibration.md`` is rendered from it only.

    .venv/bin/python experiments/use_calibration.py --data-dir ../shared/data          # every design (an hour or more)
    .venv/bin/python experiments/use_calibration.py --designs independent confounded

The counterfactual designs (``cf_*``) check the intervals of ``statistics.counterfactual`` (``--counterfactual``
with ``--counterfactual-control``): each dataset's rows are toggled on the attribute (``x - 2 (2a - 1) mu_a``)
and, separately, moved by a control of the same size (``+-2 mu_c``, a random sign per row), both with a
per-row perturbation noise of 0.3 noise SDs. ``cf_null`` and ``cf_null_strong``: the head reads the
control exactly as much as the attribute (population excess 0 by symmetry: the share of datasets whose
``excess_ci`` lies above 0 is the rate of a false "used" from the control's half of the rule, to be <=
0.025; in ``cf_null_strong`` the response is above the margin, so the whole rule's level is measured
there); ``cf_used``, ``cf_used_strong`` and ``cf_real_used``: the head ignores the control (power).
Each design draws its own datasets (the seed offset by the design's place in ``CF_DESIGNS``); the
whole rule is :func:`wsca_jax.analysis.verdicts.decision_use_verdict` itself. Recorded: the coverage of ``ci`` (the response) and of
``excess_ci``, each with its Monte Carlo SE.

The first runs (``version`` 1: the level of three tests only) are kept in the records and shown
below the current table.
"""

from __future__ import annotations

import os
import time

import numpy as np

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from wsca_jax.analysis.verdicts import decision_use_verdict
from wsca_jax.analysis.use_stage import correlation_blocks, counterfactual_block, erasure_block, within_block
from wsca_jax.probes import ProbeConfig
from wsca_jax.use_resampling import bootstrap_rows
from wsca_jax.use import (decision_scores, erasure_estimate, score_correlation, whitened_probe_scores,
                          within_class_eta, within_class_shift)

RUNS = "use_calibration_runs.jsonl"
NO_TEST = ("erasure",)      # its p-value (random_subspace_p) is no test of use: shown in brackets, see report()
TESTS = ("within_class_eta", "within_class_shift", "score_correlation", "score_correlation_within", "erasure",
         "erasure_within")
ALPHA, CONFIDENCE, POP_N = 0.05, 0.95, 100_000
MARGIN = wsca.AnalysisConfig().inference.use_margin           # the verdict's margin (response and excess >= it)
ZOO_NETWORK = "text_band-0-fine_tuned-0"          # the real covariance's source (association 0: unused)
REAL_DIMS = 64                                     # its leading within-cell principal axes (of 256)
# name -> (family, agree, use, datasets)
DESIGNS = {"independent": ("synthetic", 0.5, 0.0, 500), "confounded": ("synthetic", 0.9, 0.0, 500),
           "used": ("synthetic", 0.5, 0.5, 200), "used_confounded": ("synthetic", 0.9, 0.5, 200),
           "real": ("real", 0.5, 0.0, 200), "real_confounded": ("real", 0.9, 0.0, 200),
           "real_used": ("real", 0.5, 1.0, 200)}
# counterfactual designs: name -> (family, use, control read as much as the attribute, datasets)
CF_DESIGNS = {"cf_null": ("synthetic", 0.5, True, 500), "cf_null_strong": ("synthetic", 1.5, True, 500),
              "cf_used": ("synthetic", 0.5, False, 500),
              "cf_used_strong": ("synthetic", 1.5, False, 500), "cf_real_used": ("real", 1.0, False, 200)}
CF_NOISE = 0.3


class World:
    """A design's generator: ``draw(rng, n) -> (x, y, a)`` and its head ``(2, d)``."""

    def __init__(self, family: str, agree: float, use: float, seed: int, cache: str | None = None):
        self.agree = agree
        rng = np.random.default_rng(10_000 + seed)
        if family == "synthetic":
            d = 8
            self.mix = np.eye(d) + 0.3 * rng.normal(size=(d, d))
            self.mu_y, self.mu_a = 1.5 * self.mix[0], 1.5 * self.mix[1]       # shifts of the mixed z axes
            self.noise = self.mix                                               # x noise = N(0, I) @ mix
            head = np.linalg.inv(self.mix)[:, 0] + use / 3 * np.linalg.inv(self.mix)[:, 1]   # levels differ by use
        else:
            with np.load(os.path.join(cache, f"{ZOO_NETWORK}.npz")) as z:
                n_val = len(z["label"]) // 2          # the cache holds the validation rows, then as many test rows
                x, y = np.asarray(z["embeddings"][:n_val], np.float64), np.asarray(z["label"][:n_val])
                a = (np.asarray(z["artefact"][:n_val]) != "none").astype(int)
            cells = [(y == i) & (a == j) for i in (0, 1) for j in (0, 1)]
            resid = np.concatenate([x[c] - x[c].mean(0) for c in cells])
            top = np.linalg.eigh(np.cov(resid.T))[1][:, ::-1][:, :REAL_DIMS]       # the leading principal axes
            x, resid = x @ top, resid @ top
            means = [x[c].mean(0) for c in cells]
            cov = np.cov(resid.T) + 1e-6 * np.trace(np.cov(resid.T)) / x.shape[1] * np.eye(x.shape[1])
            self.noise = np.linalg.cholesky(cov).T                               # x noise = N(0, I) @ L^T
            self.mu_y = ((means[2] + means[3]) - (means[0] + means[1])) / 4       # +-: half the class difference
            self.mu_a = ((means[1] + means[3]) - (means[0] + means[2])) / 4
            w = np.linalg.solve(cov, self.mu_y)                                    # the class's discriminant
            w -= (w @ self.mu_a) / (self.mu_a @ self.mu_a) * self.mu_a            # reads nothing of the attribute
            w /= np.sqrt(w @ cov @ w)                                              # score noise SD 1
            v = self.mu_a / (self.mu_a @ self.mu_a)                                # v . mu_a = 1
            head = w + use / 2 * v                                                 # +-mu_a moves the score +-use/2
        self.head = np.stack([np.zeros_like(head), head])

    def draw(self, rng: np.random.Generator, n: int):
        y = rng.integers(0, 2, n)
        a = np.where(rng.random(n) < self.agree, y, 1 - y)
        x = (rng.normal(size=(n, self.noise.shape[0])) @ self.noise
             + np.outer(2 * y - 1, self.mu_y) + np.outer(2 * a - 1, self.mu_a))
        return x, y, a


def estimates(x, y, a, head) -> dict:
    """Every statistic's point estimate (the population value on a large draw)."""
    s = decision_scores(head, x)
    p = whitened_probe_scores(x, a)
    return {"within_class_eta": within_class_eta(s, y, a, permutations=0)["estimate"],
            "within_class_shift": within_class_shift(s, y, a, permutations=0)["estimate"],
            "score_correlation": score_correlation(s, p), "score_correlation_within": score_correlation(s, p, y),
            "erasure": erasure_estimate(x, head, None, y, a), "erasure_within": erasure_estimate(x, head, None, y, a, True)}


def one_dataset(x, y, a, head, boot: int, draws: int, seed: int) -> dict:
    """``{statistic: (p_value, ci)}`` as ``wsca analyze`` computes them."""
    s = decision_scores(head, x)
    boots = bootstrap_rows(len(y), boot, seed + 17)
    out = {"within_class_eta": within_block(within_class_eta, s, y, a, boots, draws, seed, CONFIDENCE, 1.0),
           "within_class_shift": within_block(within_class_shift, s, y, a, boots, draws, seed, CONFIDENCE, None),
           **correlation_blocks(x, s, y, a, boots, draws, seed, CONFIDENCE, ProbeConfig())[0],
           "erasure": erasure_block(x, head, None, y, a, boots, draws, seed, CONFIDENCE, within=False),
           "erasure_within": erasure_block(x, head, None, y, a, boots, draws, seed, CONFIDENCE, within=True)}
    return {k: (v.get("random_subspace_p") if k in NO_TEST else v["p_value"], v["ci"]) for k, v in out.items()}


def one_design(name: str, args) -> dict:
    family, agree, use, datasets = DESIGNS[name]
    datasets = args.datasets or datasets
    world = World(family, agree, use, args.seed, args.cache)
    pop = estimates(*world.draw(np.random.default_rng(args.seed + 99), POP_N), world.head)
    rng = np.random.default_rng(args.seed)
    rej, cov, width = ({t: [] for t in TESTS} for _ in range(3))
    t0 = time.time()
    for i in range(datasets):
        x, y, a = world.draw(rng, args.rows)
        for t, (p, ci) in one_dataset(x, y, a, world.head, args.bootstrap, args.draws, i).items():
            rej[t].append(p is not None and p <= ALPHA)
            cov[t].append(bool(ci) and ci[0] <= pop[t] <= ci[1])
            width[t].append(np.nan if not ci else ci[1] - ci[0])
        if (i + 1) % 50 == 0:
            print(f"{name}: {i + 1}/{datasets} datasets ({time.time() - t0:.0f} s)", flush=True)
    out = {"version": 2, "design": name, "family": family, "agree": agree, "use": use, "datasets": datasets,
           "n": args.rows, "d": int(world.head.shape[1]), "bootstrap": args.bootstrap, "draws": args.draws,
           "seed": args.seed, "population": pop, "wsca_version": wsca.__version__}
    for t in TESTS:
        r, c = float(np.mean(rej[t])), float(np.mean(cov[t]))
        out[t] = {"rejection_rate": r, "rejection_mcse": float(np.sqrt(r * (1 - r) / datasets)),
                  "coverage": c, "coverage_mcse": float(np.sqrt(c * (1 - c) / datasets)),
                  "mean_width": float(np.nanmean(width[t]))}
    return out


def interventions(world: "World", rng, x, a, reads_control: bool):
    """``(x_cf, x_ctl)`` both ``(N, D)``: the attribute toggled, and a control move of the same size
    (a direction the head reads as much as the attribute's, or not at all), each with its own noise."""
    head = world.head[1]
    r = np.random.default_rng(77).normal(size=head.shape) @ world.noise
    r *= np.sqrt(world.mu_a @ world.mu_a / (r @ r))                      # the attribute's length
    target = head @ world.mu_a if reads_control else 0.0
    mu_c = r + (target - head @ r) / (head @ head) * head                   # head . mu_c = target
    noise = lambda: CF_NOISE * rng.normal(size=x.shape) @ world.noise      # noqa: E731
    x_cf = x - 2 * np.outer(2 * a - 1, world.mu_a) + noise()
    x_ctl = x + 2 * np.outer(2 * rng.integers(0, 2, len(a)) - 1, mu_c) + noise()
    return x_cf, x_ctl


def one_cf_design(name: str, args) -> dict:
    """Coverage of the counterfactual response's and excess's intervals, and the excess's rejection rate."""
    family, use, reads, datasets = CF_DESIGNS[name]
    datasets = args.datasets or datasets
    world = World(family, 0.5, use, args.seed, args.cache)
    prng = np.random.default_rng(args.seed + 99)
    xp, yp, ap = world.draw(prng, POP_N)
    cf, ctl = interventions(world, prng, xp, ap, reads)
    pop_cf = counterfactual_block(world.head, None, xp, cf, yp, [], CONFIDENCE, ctl)
    pop = {"counterfactual": pop_cf["estimate"], "excess": 0.0 if reads else pop_cf["excess"]}   # 0 by symmetry
    rng = np.random.default_rng([args.seed, list(CF_DESIGNS).index(name)])
    hits = {"counterfactual": [], "excess": []}
    above, used, t0 = [], [], time.time()
    for i in range(datasets):
        x, y, a = world.draw(rng, args.rows)
        cf, ctl = interventions(world, rng, x, a, reads)
        b = counterfactual_block(world.head, None, x, cf, y, bootstrap_rows(len(y), args.bootstrap, i + 17),
                                 CONFIDENCE, ctl)
        hits["counterfactual"].append(bool(b["ci"]) and b["ci"][0] <= pop["counterfactual"] <= b["ci"][1])
        hits["excess"].append(bool(b["excess_ci"]) and b["excess_ci"][0] <= pop["excess"] <= b["excess_ci"][1])
        above.append(bool(b["excess_ci"]) and b["excess_ci"][0] > 1e-6)
        used.append(decision_use_verdict({"counterfactual": b}, "counterfactual", MARGIN, ALPHA, None,
                                         CONFIDENCE)["verdict"] == "used")
        if (i + 1) % 100 == 0:
            print(f"{name}: {i + 1}/{datasets} datasets ({time.time() - t0:.0f} s)", flush=True)
    out = {"version": "cf1", "design": name, "family": family, "use": use, "control_read": reads,
           "datasets": datasets, "n": args.rows, "d": int(world.head.shape[1]), "bootstrap": args.bootstrap,
           "seed": args.seed, "population": pop, "wsca_version": wsca.__version__}
    r = float(np.mean(above))
    out["excess_above_zero"] = {"rate": r, "mcse": float(np.sqrt(r * (1 - r) / datasets))}
    u = float(np.mean(used))
    out["used_verdict"] = {"rate": u, "mcse": float(np.sqrt(u * (1 - u) / datasets)), "margin": MARGIN}
    for k, h in hits.items():
        c = float(np.mean(h))
        out[k] = {"coverage": c, "coverage_mcse": float(np.sqrt(c * (1 - c) / datasets))}
    return out


def run(args) -> None:
    path = os.path.join(args.out, RUNS)
    for name in args.designs:
        row = one_cf_design(name, args) if name in CF_DESIGNS else one_design(name, args)
        runner.append_record(path, row)
        print(name, {t: row[t] for t in TESTS + ("counterfactual", "excess", "excess_above_zero") if t in row},
              flush=True)


def report(out: str) -> str:
    rows = runner.read_records(os.path.join(out, RUNS))
    cur, old = [r for r in rows if r.get("version") == 2], [r for r in rows if r.get("version") in (1, None)]
    cfs = [r for r in rows if r.get("version") == "cf1"]
    lines = ["# Level, power and coverage of the decision-use statistics (rendered from `use_calibration_runs.jsonl` "
             "by `experiments/use_calibration.py`)", "",
             "Designs: a binary class and a binary attribute, each a mean shift of the embeddings; the attribute "
             "independent of the class or agreeing with it in 90% of rows (confounded); the head reads the class "
             "only (rows without 'used': the share rejected is the **false-positive rate**, to be near 0.05) or "
             "also the attribute (its mean differs by 0.5 (synthetic) or 1 (real) noise SDs between the levels: the share rejected is the **power**). "
             "`synthetic`: 8 mixed channels; `real`: the covariance and shifts of the validation embeddings of a "
             f"PneumoniaMNIST network ({ZOO_NETWORK}; its {REAL_DIMS} leading within-cell principal axes). Each cell: share of datasets rejected at "
             f"{ALPHA} / share of {100 * CONFIDENCE:g}% basic bootstrap intervals holding the population value "
             "(the estimate on 100,000 rows), Monte Carlo SEs in brackets. `erasure`: no test of use; in brackets "
             "the share its comparison with random erasures (`random_subspace_p`) rejected, which is why it is none: "
             "where the attribute goes with the class, erasing it erases part of the class.", "",
             "| design | family | datasets | rows x dims | B / P | " + " | ".join(f"`{t}`" for t in TESTS) + " |",
             "|---|---|---|---|---|" + "---|" * len(TESTS)]
    for r in cur:
        cells = [(f"no test ({r[t]['rejection_rate']:.3f})" if t in NO_TEST else
                  f"{r[t]['rejection_rate']:.3f} ({r[t]['rejection_mcse']:.3f})")
                 + f" / {r[t]['coverage']:.3f} ({r[t]['coverage_mcse']:.3f})" for t in TESTS]
        lines.append(f"| {r['design']} | {r['family']} | {r['datasets']} | {r['n']} x {r['d']} | {r['bootstrap']} / "
                     f"{r['draws']} | " + " | ".join(cells) + " |")
    lines += ["", "Population values (the estimate on 100,000 rows):", "",
              "| design | " + " | ".join(f"`{t}`" for t in TESTS) + " |", "|---|" + "---|" * len(TESTS)]
    for r in cur:
        lines.append(f"| {r['design']} | " + " | ".join(f"{r['population'][t]:.3f}" for t in TESTS) + " |")
    if cfs:
        lines += ["", "## The counterfactual's intervals", "",
                  "Each dataset's rows toggled on the attribute and, separately, moved by a control of the same size "
                  f"(per-row perturbation noise {CF_NOISE} noise SDs); the head reads the control as much as the "
                  "attribute (`cf_null`: population excess 0) or not at all. Coverage of the 95% basic bootstrap "
                  "intervals of the response (`ci`) and of the paired excess over the control (`excess_ci`), and the "
                  "share of datasets whose `excess_ci` lies above 0 (the control's half of the 'used' rule: a false "
                  "'used' rate in `cf_null`, to be <= 0.025; power otherwise), and the share the full rule calls 'used' (response and excess both >= the margin "
                  f"{MARGIN:g}, `excess_ci` above 0), Monte Carlo SEs in brackets.", "",
                  "| design | family | head reads the control | datasets | rows x dims | B | population response / excess "
                  "| coverage `ci` | coverage `excess_ci` | `excess_ci` above 0 | verdict 'used' |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in cfs:
            lines.append(f"| {r['design']} | {r['family']} | {'yes' if r['control_read'] else 'no'} | {r['datasets']} | "
                         f"{r['n']} x {r['d']} | {r['bootstrap']} | {r['population']['counterfactual']:.3f} / "
                         f"{r['population']['excess']:.3f} | {r['counterfactual']['coverage']:.3f} "
                         f"({r['counterfactual']['coverage_mcse']:.3f}) | {r['excess']['coverage']:.3f} "
                         f"({r['excess']['coverage_mcse']:.3f}) | {r['excess_above_zero']['rate']:.3f} "
                         f"({r['excess_above_zero']['mcse']:.3f}) | " + (
                             f"{r['used_verdict']['rate']:.3f} ({r['used_verdict']['mcse']:.3f}) |"
                             if "used_verdict" in r else "not recorded |"))
        for r in (r for r in cfs if r["control_read"]):
            z, v = r["excess_above_zero"], r.get("used_verdict")
            lines += ["", f"`{r['design']}`: the excess's interval lies above 0 in {z['rate']:.3f} ({z['mcse']:.3f}) of the "
                      f"datasets, {(z['rate'] - 0.025) / max(z['mcse'], 1e-12):+.1f} Monte Carlo SEs from the 0.025 of an "
                      "exact one-sided 2.5% bound"
                      + (f"; the whole rule (both effects >= {v['margin']:g} as well) called 'used' in {v['rate']:.3f} "
                         f"({v['mcse']:.3f})." if v else ".")
                      + " Coverage of `excess_ci` there: "
                      f"{r['excess']['coverage']:.3f} ({r['excess']['coverage_mcse']:.3f})."]
    if old:
        lines += ["", "Earlier runs (version 1: the level of three tests, no intervals):", "",
                  "| design | seed | datasets | rows x dims | `within_class_eta` | `erasure` | `erasure_within` |",
                  "|---|---|---|---|---|---|---|"]
        for r in old:
            lines.append(f"| {r['design']} | {r['seed']} | {r['datasets']} | {r['n']} x {r['d']} | " +
                         " | ".join(f"{r[t]['rejection_rate']:.3f} ({r[t]['mcse']:.3f})"
                                    for t in ("within_class_eta", "erasure", "erasure_within")) + " |")
    return "\n".join(lines) + "\n"


def build_parser():
    def arguments(p):
        p.add_argument("--designs", nargs="+", default=list(DESIGNS) + list(CF_DESIGNS), choices=list(DESIGNS) + list(CF_DESIGNS))
        p.add_argument("--datasets", type=int, default=None, help="datasets per design (default: the design's own)")
        p.add_argument("--rows", type=int, default=600)
        p.add_argument("--bootstrap", type=int, default=200)
        p.add_argument("--draws", type=int, default=200)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--cache", default=os.path.expanduser("~/.cache/wsca_jax/use_zoo"),
                       help="the zoo's cached embeddings (the real designs' covariance)")
    return runner.parser(__doc__, arguments, data_dir=False)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {"use_calibration.md": lambda a: report(a.out)})


if __name__ == "__main__":
    main()
