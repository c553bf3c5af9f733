"""Calibration study: do WSC's estimates, intervals and tests keep what they promise?

Synthetic embeddings with a known population value (:mod:`wsca_jax.validation.simulate`: ``CalibrationDesign``,
``calibration_data``). The population value of every statistic is the same pipeline (``wsca.analyze``,
same k, same solver) on one draw of 200,000 rows. Each setting then analyses ``reps`` fresh draws of N rows
exactly as a user would (``wsca.analyze`` with a bootstrap, a jackknife for BCa and a permutation test) and
records, per draw:

* coverage settings: the raw and the attenuation-corrected max |WSC| and cells; the interval of max |WSC|
  by every method (percentile, basic, BCa (guarded), corrected) and the raw and corrected cell intervals;
  the permutation p (power where the head uses the attribute).
* null settings (the head does not use the attribute): the permutation p under the free, grouped
  (patients) and within-strata (primary label) schemes -> the false-positive rate at alpha 0.05. The
  ``null_confounded_*`` settings keep their names in the records but are not nulls: the label depends on
  the attribute, so the probe-based primary's population max |WSC| is 0.219 and the share rejected is
  the power there (rendered under "power").

Every share (coverage, rejection rate, power) is printed with its Monte Carlo SE
``sqrt(p (1 - p) / draws)``, draws the setting's count in the summary. ``real_cov`` and
``real_cov_null0`` take the latent covariance from real embeddings (``REAL_COV``, cached by
``experiments/use_zoo.py``, outside the repository: those settings stop with one line when it is absent).
Each new record carries ``wsca_version`` and ``date``; the committed records predate that, and the report
gives their provenance from the git history of the summary (``GIT_PROVENANCE``).

One line per draw in ``results/calibration_runs.jsonl`` (a rerun skips the draws already there, so the study
can run in parts; several MB, so not in git); population values in ``results/calibration_population.json``;
both are summarised per setting into ``results/calibration_summary.json`` (committed), from which
``results/calibration.md`` and the README paragraph are rendered.

    .venv/bin/python experiments/calibration.py                      # every setting (see --list)
    .venv/bin/python experiments/calibration.py --settings base n300 # some
    .venv/bin/python experiments/calibration.py --report-only

A rerun of some settings into a fresh folder summarises only those; ``--merge-into`` puts them into the
committed summary, replacing exactly their entries and keeping every other setting's (``merge_summary``;
each merged setting must be complete, and the summary then records the rerun's version and dates, which
lifts the report's staleness flag of a ``STALE`` setting)::

    .venv/bin/python experiments/calibration.py --settings weak --out /tmp/cal_weak
    .venv/bin/python experiments/calibration.py --settings weak --out /tmp/cal_weak --jackknife-only
    .venv/bin/python experiments/calibration.py --settings weak --out /tmp/cal_weak --report-only \
        --merge-into experiments/results
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pandas as pd

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from wsca_jax.stats import basic_interval, percentile_interval
from wsca_jax.validation.simulate import CalibrationDesign, calibration_data

RUNS = "calibration_runs.jsonl"
POP_N = 200_000
ALPHA = 0.05
METHODS = ("percentile", "basic", "bca", "corrected")


def _s(kind, n=3000, k=50, primary="head", reps=200, B=100, P=49, scheme="free", **design):
    return dict(kind=kind, n=n, k=k, primary=primary, reps=reps, B=B, P=P, scheme=scheme, design=design)


# the real embeddings whose within-cell covariance the real_cov settings use (first 574 = validation rows)
REAL_COV = "~/.cache/wsca_jax/use_zoo/text_band-0-fine_tuned-0.npz"

# name -> setting. Coverage: 200 draws each; nulls: 500 draws each (the head does not use the attribute).
SETTINGS = {
    "base": _s("coverage"),                                             # 3 classes, strong probe, fixed head
    "strong": _s("coverage", shift=4.0),                                 # probe AUROC about 0.99 (the case)
    "probed": _s("coverage", primary="probe"),                           # the primary is a probe too
    "n300": _s("coverage", n=300, k=25),
    "n1000": _s("coverage", n=1000),
    "n10000": _s("coverage", n=10000),
    "c2": _s("coverage", n_classes=2),
    "c6": _s("coverage", n_classes=6),
    "weak": _s("coverage", shift=0.35),                                  # probe AUROC about 0.53 (extreme)
    "moderate": _s("coverage", shift=0.8),                               # probe AUROC about 0.62
    "use0.3": _s("coverage", use=0.3),
    "unused": _s("coverage", use=0.0),
    "grouped": _s("coverage", group_size=4, scheme="grouped"),
    "k10": _s("coverage", k=10),
    "k500": _s("coverage", n=2000, k=500, d=512, reps=200, B=60),
    # the permutation test's own null: the attribute not encoded at all (shift 0)
    "null0_free": _s("null", n=500, k=20, d=32, shift=0.0, use=0.0, reps=500, B=0, P=49),
    "null0_grouped_naive": _s("null", n=500, k=20, d=32, shift=0.0, use=0.0, group_size=5, reps=500, B=0, P=49),
    "null0_grouped": _s("null", n=500, k=20, d=32, shift=0.0, use=0.0, group_size=5, reps=500, B=0, P=49,
                        scheme="grouped"),
    # encoded but unused: conservative for this hypothesis (the null is "not encoded")
    "null_free": _s("null", n=500, k=20, d=32, use=0.0, reps=500, B=0, P=49),
    "null_grouped_naive": _s("null", n=500, k=20, d=32, use=0.0, group_size=5, reps=500, B=0, P=49, scheme="free"),
    "null_grouped": _s("null", n=500, k=20, d=32, use=0.0, group_size=5, reps=500, B=0, P=49, scheme="grouped"),
    "null_confounded_free": _s("null", n=500, k=20, d=32, use=0.0, confound=2.0, primary="probe", reps=500, B=0,
                               P=49, scheme="free"),
    "null_confounded_within": _s("null", n=500, k=20, d=32, use=0.0, confound=2.0, primary="probe", reps=500, B=0,
                                 P=49, scheme="within"),
    # the latent covariance of real embeddings (256 dimensions; shift in SDs of the attribute's eigen-axes,
    # about the synthetic base's 1.2 on an axis of SD 1.9)
    "real_cov": _s("coverage", covariance=REAL_COV, shift=0.6),
    "real_cov_null0": _s("null", n=500, k=20, covariance=REAL_COV, shift=0.0, use=0.0, reps=500, B=0, P=49),
}

# Left out after a first look (issue 28): rerun needed with the current defaults.
STALE = ("unused", "weak", "k500")

# Provenance of the records in the committed summary, which holds no version or date: the commit that first
# committed each setting's records (git log of results/calibration_summary.json and calibration.md) and the
# package version at that commit (the draws ran before it). Used only for settings whose summary lacks it.
GIT_PROVENANCE = {
    **dict.fromkeys(["base", "strong", "probed", "n300", "n10000", "c2", "weak", "moderate", "unused", "grouped",
                     "k10", "k500", "null0_free", "null0_grouped_naive", "null0_grouped", "null_free",
                     "null_grouped_naive", "null_grouped", "null_confounded_free", "null_confounded_within"],
                    "0.4.0, 2026-11-29, commit 034a747"),
    **dict.fromkeys(["c6", "use0.3"], "0.5.0, 2026-11-29, commit 9cc362b"),
    "n1000": "0.5.0, 2026-11-29, commit 9cc362b (8 draws at 034a747, 0.4.0)",
}
GIT_PROVENANCE_JACKKNIFE = "0.6.0, 2026-11-29, commit 77c9b81"


def _design(setting: dict) -> CalibrationDesign:
    return CalibrationDesign(**setting["design"])


def _missing_files(names) -> list[str]:
    """``"setting: path"`` for each setting whose design reads a file that is not there."""
    out = []
    for name in names:
        cov = SETTINGS[name]["design"].get("covariance")
        if isinstance(cov, str) and not os.path.exists(os.path.expanduser(cov)):
            out.append(f"{name}: {cov}")
    return out


def _stamp() -> dict:
    """What every record carries: the package version and the UTC date."""
    return {"wsca_version": wsca.__version__, "date": time.strftime("%Y-%m-%d", time.gmtime())}


def _analyze(setting: dict, z, meta, head, seed: int, bootstrap: int, permutations: int, ci_method="bca",
             correction_noise="bootstrap"):
    """``wsca.analyze`` as a user runs it, without the decision-use statistics (``skip_decision_use``:
    they have their own study, ``use_calibration.py``, and every WSC output is the same without them:
    k500 draw 54 gave identical p-value, estimates, intervals and cells both ways, in 11 s instead of
    about 50 s)."""
    scheme = setting["scheme"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = wsca.AnalysisConfig().replace(
            tasks=["attr"], categorical=["attr"], group_column="group" if scheme == "grouped" else None,
            permute_within="label" if scheme == "within" else None, bootstrap=bootstrap, permutations=permutations,
            pca_variance=1e-9, pca_min=setting["k"], cv_folds=2, seed=seed, ci_method=ci_method,
            correction_noise=correction_noise, skip_decision_use=True)
        return wsca.analyze(z, meta[["label", "attr", "group"]], primary="label",
                            primary_head=head if setting["primary"] == "head" else None, config=config)


def population(setting: dict) -> dict:
    """The pipeline's value on one draw of ``POP_N`` rows (the population value)."""
    z, meta, head = calibration_data(_design(setting), POP_N, seed=10**6)
    r = _analyze(setting, z, meta, head, seed=0, bootstrap=0, permutations=0)
    t = r.tasks["attr"]
    return {"max_abs_wsc": t.summary["max_abs_wsc"], "cells": t.wsc.tolist(), "probe_auroc": t.probe["auroc"],
            "primary_auroc": None if r.primary["probe"] is None else r.primary["probe"]["auroc"], "n": POP_N}


def _pair(lohi) -> list:
    return [np.asarray(lohi[0]).tolist(), np.asarray(lohi[1]).tolist()]


def one_draw(name: str, setting: dict, rep: int) -> dict:
    seed = 1000 * rep + 7
    z, meta, head = calibration_data(_design(setting), setting["n"], seed=seed)
    t0 = time.time()
    r = _analyze(setting, z, meta, head, seed=rep, bootstrap=setting["B"], permutations=setting["P"])
    t = r.tasks["attr"]
    s = t.summary
    row = {"setting": name, "rep": rep, **_stamp(), "seconds": time.time() - t0, "p_value": s["p_value"],
           "max_abs_wsc": s["max_abs_wsc"], "probe_auroc": t.probe["auroc"], "converged": t.fit["converged"]}
    if setting["kind"] == "coverage":
        iv = t.cell_intervals
        row.update(max_abs_wsc_corrected=s["max_abs_wsc_corrected"], intervals=s["intervals"],
                   bca_fallback=s["bca_fallback"], cells=t.wsc.tolist(),
                   cells_corrected=None if t.wsc_corrected is None else t.wsc_corrected.tolist(),
                   cell_raw=[iv["raw"]["low"].tolist(), iv["raw"]["high"].tolist()],
                   cell_corrected=None if "corrected" not in iv else [iv["corrected"]["low"].tolist(),
                                                                      iv["corrected"]["high"].tolist()],
                   cell_percentile=_pair(percentile_interval(t.boot, 0.95)),
                   cell_basic=_pair(basic_interval(t.wsc, t.boot, 0.95)),
                   boot_sd=float(np.nanstd(np.nanmax(np.abs(t.boot), axis=(-2, -1)))),
                   boot_median=float(np.nanmedian(np.nanmax(np.abs(t.boot), axis=(-2, -1)))),
                   reliability=s.get("reliability"))
    return row


def cells_draw(name: str, setting: dict, rep: int) -> dict:
    """The basic and percentile cell intervals of one draw, for records written before they were kept:
    the same data and the same bootstrap (its rows come first from ``default_rng(rep)``, before the
    jackknife and the permutations), without the permutations and the jackknife."""
    z, meta, head = calibration_data(_design(setting), setting["n"], seed=1000 * rep + 7)
    t0 = time.time()
    t = _analyze(setting, z, meta, head, seed=rep, bootstrap=setting["B"], permutations=0, ci_method="basic").tasks["attr"]
    return {"setting": name, "rep": rep, **_stamp(), "seconds": time.time() - t0, "cells": t.wsc.tolist(),
            "cell_percentile": _pair(percentile_interval(t.boot, 0.95)),
            "cell_basic": _pair(basic_interval(t.wsc, t.boot, 0.95))}


def jackknife_draw(name: str, setting: dict, rep: int) -> dict:
    """The attenuation correction with the jackknife's noise estimate (``correction_noise="jackknife"``,
    the library default since 0.6) on the same data and bootstrap rows as the main record (without the
    permutations): the corrected max |WSC|, its interval, the corrected cells and their intervals."""
    z, meta, head = calibration_data(_design(setting), setting["n"], seed=1000 * rep + 7)
    t0 = time.time()
    t = _analyze(setting, z, meta, head, seed=rep, bootstrap=setting["B"], permutations=0, ci_method="corrected",
                 correction_noise="jackknife").tasks["attr"]
    s, iv = t.summary, t.cell_intervals
    return {"setting": name, "rep": rep, **_stamp(), "seconds": time.time() - t0, "cells": t.wsc.tolist(),
            "max_abs_wsc_corrected": s["max_abs_wsc_corrected"], "interval": s["intervals"].get("corrected"),
            "cells_corrected": None if t.wsc_corrected is None else t.wsc_corrected.tolist(),
            "cell_corrected": None if "corrected" not in iv else [iv["corrected"]["low"].tolist(),
                                                                  iv["corrected"]["high"].tolist()],
            "reliability": s.get("reliability")}


def _done(path: str) -> set:
    return runner.done_keys(path, ("setting", "rep"))


def run(args) -> None:
    runs = os.path.join(args.out, RUNS)
    pop_path = os.path.join(args.out, "calibration_population.json")
    pops = json.load(open(pop_path)) if os.path.exists(pop_path) else {}
    done = _done(runs)
    missing = _missing_files(args.settings or list(SETTINGS))
    if missing:
        raise SystemExit("calibration: the real embeddings these settings need are not on this machine ("
                         + "; ".join(missing) + "); run experiments/use_zoo.py first or leave them out with --settings")
    if args.cells_only:                          # supplement: cell intervals missing from older records
        runs, todo = os.path.join(args.out, "calibration_cells.jsonl"), done - _with_cells(args.out)
        done = _done(runs) | {(s, r) for s in SETTINGS for r in range(500) if (s, r) not in todo}
    if args.jackknife_only:                      # supplement: the correction with the jackknife's noise
        runs = os.path.join(args.out, "calibration_jackknife.jsonl")
        done = _done(runs)
    for name in args.settings or list(SETTINGS):
        setting = SETTINGS[name]
        if (args.cells_only or args.jackknife_only) and setting["kind"] != "coverage":
            continue
        if name not in pops:
            pops[name] = {**population(setting), "setting": setting}
            with open(pop_path, "w") as f:
                json.dump(pops, f, indent=1)
        t0 = time.time()
        for rep in range(args.reps or setting["reps"]):
            if (name, rep) in done:
                continue
            row = (cells_draw if args.cells_only else jackknife_draw if args.jackknife_only else one_draw)(name, setting, rep)
            runner.append_record(runs, row)
            if rep % 20 == 0:
                print(f"{name} rep {rep}: {time.time() - t0:.0f} s", flush=True)


# ---------------------------------------------------------------------------------------------
# Report


def _cover(lo, hi, truth) -> np.ndarray:
    return (np.asarray(lo) <= truth) & (truth <= np.asarray(hi))


def _corrected_valid(x) -> bool:
    """A corrected value over every cell: each compared row's reliability at least 0.1 (the rule of
    ``wsca_jax.analysis``; records written before that rule may hold a max over a subset of cells)."""
    if not isinstance(x.get("intervals"), dict) or "corrected" not in x["intervals"]:
        return False
    return _reliable(x.get("reliability"))


def _reliable(rel) -> bool:
    """Every compared row's reliability at least 0.1 (``disattenuate``'s ``min_reliability``)."""
    return bool(rel) and min(rel["primary"] + rel["probe"]) >= 0.1


def coverage_table(runs: pd.DataFrame, pops: dict) -> pd.DataFrame:
    """One row per coverage setting: bias of raw and corrected, coverage and width of every interval."""
    out = []
    for name, g in runs.groupby("setting", sort=False):
        if pops[name]["setting"]["kind"] != "coverage":
            continue
        truth = pops[name]["max_abs_wsc"]
        cells_t = np.array(pops[name]["cells"], float)
        corr = g.max_abs_wsc_corrected.astype(float).where([_corrected_valid(x) for _, x in g.iterrows()])
        row = {"setting": name, "draws": len(g), "population": truth, "probe_auroc": g.probe_auroc.mean(),
               "raw_mean": g.max_abs_wsc.mean(), "corrected_mean": corr.mean(),
               "raw_sd": g.max_abs_wsc.std(), "corrected_sd": corr.std(),
               "power": float((g.p_value <= ALPHA).mean()) if g.p_value.notna().all() else None,
               "seconds": g.seconds.mean()}
        valid = [_corrected_valid(x) for _, x in g.iterrows()]
        row["corrected_available"] = float(np.mean(valid))
        for m in METHODS:
            # corrected: as a user gets it -- the guarded BCa interval where no corrected value exists
            iv = [x.get(m) if (m != "corrected" or ok) else x.get("bca") for x, ok in zip(g.intervals, valid)]
            ok = [v for v in iv if v is not None]
            row[f"cov_{m}"] = float(np.mean([_cover(v[0], v[1], truth) for v in ok])) if ok else None
            row[f"width_{m}"] = float(np.mean([v[1] - v[0] for v in ok])) if ok else None
            row[f"n_{m}"] = len(ok)                      # draws with this interval (the MC SE's count)
        for kind, col in (("raw", "cell_raw"), ("corrected", "cell_corrected"), ("basic", "cell_basic"),
                          ("percentile", "cell_percentile")):
            hits = [_cover(np.array(v[0]), np.array(v[1]), cells_t).ravel() for v in g[col] if isinstance(v, list)]
            row[f"cells_cov_{kind}"] = float(np.mean(np.concatenate(hits))) if hits else None
            row[f"n_cells_{kind}"] = len(hits)
        row["bca_fallback_share"] = float(g.bca_fallback.notna().mean())
        out.append(row)
    return pd.DataFrame(out)


def reliability_table(runs: pd.DataFrame, pops: dict) -> pd.DataFrame:
    """Does the bootstrap measure the probe noise the correction removes? For the population's largest
    cell (i, j): the reliability implied by the attenuation across draws, ``(mean raw cell / population
    cell)^2``, against the mean bootstrap estimate ``rel_primary[i] rel_probe[j]`` that the correction uses."""
    out = []
    for name, g in runs.groupby("setting", sort=False):
        if pops[name]["setting"]["kind"] != "coverage":
            continue
        pop = np.array(pops[name]["cells"], float)
        i, j = np.unravel_index(np.argmax(np.abs(pop)), pop.shape)
        if abs(pop[i, j]) < 0.1:
            continue
        raw = np.array([c[i][j] for c in g.cells], float)
        boot = np.array([r["primary"][i] * r["probe"][j] if r else np.nan for r in g.reliability], float)
        out.append({"setting": name, "probe_auroc": g.probe_auroc.mean(), "population": pop[i, j],
                    "raw_mean": raw.mean(), "implied": (raw.mean() / pop[i, j]) ** 2,
                    "bootstrap": float(np.nanmean(boot))})
    return pd.DataFrame(out)


def load_jackknife(out: str) -> pd.DataFrame | None:
    path = os.path.join(out, "calibration_jackknife.jsonl")
    return runner.records_frame(path) if os.path.exists(path) else None


def _jk_valid(x) -> bool:
    return x.get("interval") is not None and _reliable(x.get("reliability"))


def jackknife_table(runs: pd.DataFrame, jk: pd.DataFrame | None, pops: dict) -> pd.DataFrame:
    """The correction with the jackknife's noise estimate (``calibration_jackknife.jsonl``), paired with the
    main records of the same draws: bias, coverage as a user gets it (the corrected interval, or the basic
    interval where a row's reliability is below 0.1), the basic interval's coverage on the same draws, and
    the mean jackknife reliability of the largest population cell."""
    if jk is None:
        return pd.DataFrame()
    out = []
    main = runs.set_index(["setting", "rep"])
    for name, g in jk.groupby("setting", sort=False):
        truth, cells_t = pops[name]["max_abs_wsc"], np.array(pops[name]["cells"], float)
        i, j = np.unravel_index(np.argmax(np.abs(cells_t)), cells_t.shape)
        m = main.loc[[(name, r) for r in g.rep]]
        assert np.allclose(np.stack(g.cells.map(np.array)), np.stack(m.cells.map(np.array)), atol=1e-5), name
        valid = np.array([_jk_valid(x) for _, x in g.iterrows()])
        iv = [x.interval if ok else y["basic"] for (_, x), ok, y in zip(g.iterrows(), valid, m.intervals)]
        ivc = [x.cell_corrected if ok else y for (_, x), ok, y in zip(g.iterrows(), valid, m.cell_basic)]
        corr = g.max_abs_wsc_corrected.astype(float).where(valid)
        rel = [r["primary"][i] * r["probe"][j] if r else np.nan for r in g.reliability]
        basic = [y["basic"] for y in m.intervals]
        out.append({"setting": name, "draws": len(g), "population": truth, "probe_auroc": float(m.probe_auroc.mean()),
                    "corrected_mean": corr.mean(), "corrected_sd": corr.std(), "available": float(valid.mean()),
                    "coverage": float(np.mean([_cover(v[0], v[1], truth) for v in iv])),
                    "width": float(np.mean([v[1] - v[0] for v in iv])),
                    "cells_cov": float(np.mean(np.concatenate([_cover(np.array(v[0]), np.array(v[1]), cells_t).ravel()
                                                               for v in ivc]))),
                    "cov_basic_same": float(np.mean([_cover(v[0], v[1], truth) for v in basic])),
                    "reliability": float(np.nanmean(rel)), "seconds": float(g.seconds.mean())})
    return pd.DataFrame(out)


def null_table(runs: pd.DataFrame, pops: dict) -> pd.DataFrame:
    out = []
    for name, g in runs.groupby("setting", sort=False):
        st = pops[name]["setting"]
        if st["kind"] != "null":
            continue
        fpr = float((g.p_value <= ALPHA).mean())
        out.append({"setting": name, "scheme": st["scheme"], "primary": st["primary"], "design": st["design"],
                    "draws": len(g), "fpr": fpr, "mcse": _se(fpr, len(g)), "seconds": g.seconds.mean()})
    return pd.DataFrame(out)


def eligible(cov: pd.DataFrame) -> pd.DataFrame:
    """The settings the default is chosen on: complete (at least 200 draws), probe AUROC at least 0.6, population max |WSC| at least 0.1 (no interval of a maximum
    of absolute values can cover a value at the boundary 0; cells are the measure there)."""
    return cov[(cov.draws >= 200) & (cov.probe_auroc >= 0.6) & (cov.population >= 0.1)]


def _choice_table(cov: pd.DataFrame, jk: pd.DataFrame | None = None) -> dict:
    """Per method: the coverage of max |WSC| in each :func:`eligible` setting (a Series by setting).
    ``corrected`` is the library's correction (jackknife noise, ``calibration_jackknife.jsonl``), taken
    only where it has at least 200 draws in every eligible setting; ``corrected_bootstrap`` the earlier
    correction with the bootstrap's noise (the main records)."""
    good = eligible(cov).set_index("setting")
    out = {m: good[f"cov_{m}"].astype(float) for m in ("percentile", "basic", "bca")}
    out["corrected_bootstrap"] = good["cov_corrected"].astype(float)
    if jk is not None and len(jk):
        j = jk.set_index("setting")
        if all(s in j.index and j.loc[s, "draws"] >= 200 for s in good.index):
            out["corrected"] = j.loc[good.index, "coverage"].astype(float)
    return out


def choose_default(cov: pd.DataFrame, jk: pd.DataFrame | None = None) -> tuple[dict, str]:
    """Mean |coverage - 0.95| per method over the :func:`eligible` settings, and the method closest to
    nominal among the library's ``--ci-method`` values (``corrected_bootstrap`` is shown, not chosen:
    the library's correction is the jackknife's); a test checks the library's default agrees."""
    score = {m: float(np.nanmean(np.abs(c - 0.95))) for m, c in _choice_table(cov, jk).items()}
    choosable = [m for m in score if m != "corrected_bootstrap"]
    return score, min(choosable, key=score.get)


def _choice_draws(cov: pd.DataFrame, jk: pd.DataFrame | None = None) -> dict:
    """Per method of :func:`_choice_table`: the draws behind each coverage (a Series by setting)."""
    good = eligible(cov).set_index("setting")
    out = {m: pd.Series({k: _n(x, m) for k, x in good.iterrows()}) for m in ("percentile", "basic", "bca")}
    out["corrected_bootstrap"] = pd.Series({k: _n(x, "corrected") for k, x in good.iterrows()})
    if jk is not None and len(jk):
        out["corrected"] = jk.set_index("setting").reindex(good.index)["draws"]
    return out


def _mean_se(c: pd.Series, n: pd.Series) -> float:
    """The Monte Carlo SE of the mean of independent settings' coverages ``c`` over ``n`` draws each."""
    return float(np.sqrt(sum(_se(v, n[k]) ** 2 for k, v in c.items())) / len(c))


def _coverage_line(c: pd.Series, n: pd.Series) -> str:
    """``"mean coverage .. ± SE (min .. ± SE, max .. ± SE) over n eligible settings; outside 0.93-0.97: .."``
    of a Series of coverages indexed by setting (NaN: not recorded) and their draws ``n``."""
    rec = c.dropna().astype(float)
    if not len(rec):
        return "not recorded"
    out = [f"{k} ({_pm(v, n[k])})" for k, v in rec.items() if not 0.93 <= v <= 0.97]
    missing = [k for k, v in c.items() if not np.isfinite(v)]
    lo, hi = rec.idxmin(), rec.idxmax()
    return (f"mean coverage {_f(rec.mean(), 2)} ± {_f(_mean_se(rec, n), 3)} (min {_pm(rec[lo], n[lo])}, "
            f"max {_pm(rec[hi], n[hi])}) over {len(rec)} eligible settings; outside 0.93-0.97: "
            + (", ".join(out) or "none") + (f"; not recorded: {', '.join(missing)}" if missing else ""))


def _cells_line(cov: pd.DataFrame, method: str) -> str:
    """Coverage of the population cells by ``method``'s cell intervals over the eligible settings."""
    kind = "raw" if method == "bca" else method
    col = f"cells_cov_{kind}"
    good = eligible(cov)
    if col not in good or good[col].isna().all():
        return "not recorded"
    g = good.set_index("setting")
    return _coverage_line(g[col].astype(float), pd.Series({k: _n(x, f"cells_{kind}") for k, x in g.iterrows()}))


def _jk_cells_line(jk: pd.DataFrame, good: pd.DataFrame) -> str:
    j = jk.set_index("setting").loc[list(good.setting)]
    return _coverage_line(j["cells_cov"].astype(float), j["draws"])


def _f(x, nd=3):
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def _se(p, n) -> float:
    """The Monte Carlo SE of a share ``p`` over ``n`` draws, ``sqrt(p (1 - p) / n)``."""
    return float(np.sqrt(p * (1 - p) / n)) if p is not None and n and np.isfinite(p) else float("nan")


def _pm(p, n, nd=2) -> str:
    """``"p ± SE"`` (SE to 3 decimals); empty where ``p`` is not recorded."""
    return "" if p is None or not np.isfinite(float(p)) else f"{float(p):.{nd}f} ± {_se(float(p), n):.3f}"


def _n(x, col: str) -> int:
    """The draws behind a coverage column of a summary row: its own count where the summary records it
    (``n_*``, summaries since 0.9), else the setting's draws (the older summaries hold no other count)."""
    v = x.get(f"n_{col}") if hasattr(x, "get") else None
    return int(v) if v is not None and np.isfinite(float(v)) else int(x["draws"])


def null_role(setting: dict) -> str:
    """``level`` (the attribute is not encoded: the permutation test's own null), ``conservative`` (encoded
    but unused: a null of WSC, not of the test's hypothesis) or ``power`` (the label depends on the
    attribute: the probe-based primary takes up its direction, a population value above 0)."""
    design = setting["design"]
    if design.get("confound", 0.0) > 0:
        return "power"
    return "level" if design.get("shift", 1.2) == 0 else "conservative"


def _provenance(rows: pd.DataFrame) -> dict:
    """Per setting: the package versions and first and last dates its records carry (where they do)."""
    if "wsca_version" not in rows:
        return {}
    out = {}
    for name, g in rows.groupby("setting", sort=False):
        v, d = g.wsca_version.dropna(), g.date.dropna()
        if len(v):
            out[name] = {"wsca_version": sorted(set(v)), "first": min(d), "last": max(d), "stamped": int(len(v))}
    return out


def summarise(out: str) -> dict:
    """The committed record: per-setting tables from the per-draw lines (``calibration_runs.jsonl``,
    several MB, kept out of git) and the population values."""
    runs, pops = load(out)
    cov, nul, rel = coverage_table(runs, pops), null_table(runs, pops), reliability_table(runs, pops)
    jk_rows = load_jackknife(out)
    jk = jackknife_table(runs, jk_rows, pops)
    return {"populations": pops, "coverage": cov.to_dict("records"), "null": nul.to_dict("records"),
            "reliability": rel.to_dict("records"), "jackknife": jk.to_dict("records"),
            "provenance": {"main": _provenance(runs),
                           "jackknife": _provenance(jk_rows) if jk_rows is not None else {}},
            "draws": int(len(runs)), "seconds_total": float(runs.seconds.sum()),
            "seconds_mean": float(runs.seconds.mean()), **_cells_seconds(out)}


def _cells_seconds(out: str) -> dict:
    path = os.path.join(out, "calibration_cells.jsonl")
    if not os.path.exists(path):
        return {}
    sec = [r["seconds"] for r in runner.read_records(path)]
    return {"cells_draws": len(sec), "cells_seconds_total": float(np.sum(sec))}


def load_summary(out: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    with open(os.path.join(out, "calibration_summary.json")) as f:
        rec = json.load(f)
    return rec, pd.DataFrame(rec["coverage"]), pd.DataFrame(rec["null"])


def _design_text(st: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in st["design"].items()) or "defaults"


def rerun_of(name: str, rec: dict) -> dict | None:
    """The summary's record of a complete rerun of ``name`` (``rec["reruns"]``, written by
    :func:`merge_summary`: version, dates, draws of the fresh records), or None where the setting was not
    rerun or not with all its planned draws. A setting of :data:`STALE` is stale until it has one."""
    r = (rec.get("reruns") or {}).get(name)
    return r if r and r["draws"] >= r["planned"] else None


def _rerun_text(r: dict) -> str:
    """``"0.9.0, 2026-12-07, all 200 draws"`` of a :func:`rerun_of` record."""
    return (f"{', '.join(r['wsca_version'])}, {r['first']}" + (f" to {r['last']}" if r["last"] != r["first"] else "")
            + f", all {r['draws']} draws")


def _status(name: str, st: dict, cov: dict, jk: dict, nul: dict, rerun: dict | None = None) -> str:
    """What a setting's records lack, from the summary; the settings of :data:`STALE` flagged first
    (``rerun``: their :func:`rerun_of` record, which lifts the flag)."""
    if name not in cov and name not in nul:
        return "**not run**: no records in the summary"
    x = cov.get(name) or nul.get(name)
    lacks = []
    if x["draws"] < st["reps"]:
        lacks.append(f"{x['draws']} of {st['reps']} draws")
    if st["kind"] == "coverage":
        if jk.get(name, {}).get("draws", 0) < st["reps"]:
            lacks.append("no jackknife supplement (the library's correction since 0.6)" if name not in jk
                         else f"jackknife supplement {jk[name]['draws']} of {st['reps']} draws")
        if pd.isna(x.get("cells_cov_basic")):
            lacks.append("no basic or percentile cell intervals")
    text = "; ".join(lacks) or "complete"
    if name in STALE and rerun:
        return f"rerun with the current code ({_rerun_text(rerun)}; merged with `--merge-into`); {text}"
    if name in STALE:
        return f"**stale: left out after a first look, rerun needed with the current defaults (not rerun)**; {text}"
    return text


def _recorded_with(name: str, rec: dict, part: str, git: str | None, draws: int) -> str:
    prov = (rec.get("provenance") or {}).get(part, {}).get(name)
    if prov:
        return f"{', '.join(prov['wsca_version'])}, {prov['first']}" + (
            f" to {prov['last']}" if prov["last"] != prov["first"] else "") + f" ({prov['stamped']} records stamped" + (
            f"; {draws - prov['stamped']} older records without a stamp" if draws > prov["stamped"] else "") + ")"
    return f"{git} (git history)" if git else "not recorded"


def report(out: str) -> str:
    rec, cov, nul = load_summary(out)
    pops = rec["populations"]
    jk = pd.DataFrame(rec.get("jackknife") or [])
    cov_d = {x["setting"]: x for x in rec["coverage"]}
    nul_d = {x["setting"]: x for x in rec["null"]}
    jk_d = {x["setting"]: x for x in rec.get("jackknife") or []}
    planned = {name: p["setting"] for name, p in pops.items()}
    planned.update({name: st for name, st in SETTINGS.items() if name not in planned})
    lines = ["# Calibration study (rendered from `calibration_summary.json` by `experiments/calibration.py`)", "",
             f"Synthetic embeddings with a known population value (the same pipeline on {POP_N:,} rows). "
             "Settings and generators: `experiments/calibration.py`, `wsca_jax/validation/simulate.py` (`CalibrationDesign`).",
             "", "Every coverage, rejection rate and power carries its Monte Carlo SE, sqrt(p (1 - p) / draws), with "
             "draws the setting's number of draws in the summary (its `draws` column). The summary holds that count "
             "per setting, not per interval method: where a draw lacked an interval the count is smaller and the SE "
             "larger than shown. Cell coverages pool the cells of each draw, which are not independent: their SE "
             "uses the draws, an upper bound. A share of 0 or 1 has an SE of 0 by this formula; the rule of three "
             "then bounds the true rate by 3 / draws (95%).",
             "", "## Provenance: which settings are current", "",
             "The summary records no package version or date per setting. `recorded with`: the package version and "
             "date of the commit that first committed a setting's records (from the git history of "
             "`calibration_summary.json`; the draws ran before it), or, for records stamped with them (new "
             "records), the versions and dates they carry. The main records hold the correction with the bootstrap's "
             "noise estimate (the library's before 0.6); the library's correction since 0.6 (the jackknife's) "
             "is the `--jackknife-only` supplement. Status: what the records lack, from the summary.", "",
             "| setting | kind | draws | planned | recorded with | jackknife supplement | status |",
             "|---|---|---|---|---|---|---|"]
    for name, st in planned.items():
        x = cov_d.get(name) or nul_d.get(name)
        j = jk_d.get(name)
        lines.append(f"| {name} | {st['kind']} | {x['draws'] if x else 0} | {st['reps']} | "
                     f"{_recorded_with(name, rec, 'main', GIT_PROVENANCE.get(name), x['draws']) if x else ''} | "
                     + (f"{j['draws']} draws, {_recorded_with(name, rec, 'jackknife', GIT_PROVENANCE_JACKKNIFE, j['draws'])}"
                        if j else ("none" if st["kind"] == "coverage" else "")) + f" | {_status(name, st, cov_d, jk_d, nul_d, rerun_of(name, rec))} |")
    stale = [n for n in STALE if n in planned and not rerun_of(n, rec)]
    rerun = [n for n in STALE if n in planned and rerun_of(n, rec)]
    not_run = [n for n in planned if n not in cov_d and n not in nul_d]
    lines += ["", ("Stale: " + ", ".join(f"`{n}`" for n in stale) + " were left out after a first look (what their "
              "records lack: the status column). They need a rerun with the current defaults and have not had one: "
              "their rows below are the records listed above (a rerun skips the draws already in "
              "`calibration_runs.jsonl`: remove these settings' lines first, or use a new `--out`"
              + (" and `--merge-into`" if rerun else "") + ")." if stale else "")
              + (("" if not stale else " ") + "Rerun: " + "; ".join(
                  f"`{n}` ({_rerun_text(rerun_of(n, rec))}; merged {rerun_of(n, rec)['merged']})" for n in rerun)
                 + " -- left out after a first look, then rerun with the current code into a fresh `--out` and merged "
                   "into this summary with `--merge-into`, which replaced exactly these settings' entries (their rows "
                   "below are the rerun's); no longer stale." if rerun else "")
              + (" Not run yet: " + ", ".join(f"`{n}`" for n in not_run) + " (no records"
                 + ("; `real_cov*` need the cached embeddings of `REAL_COV`, outside the repository"
                    if any(n.startswith("real_cov") for n in not_run) else "") + ")." if not_run else "")]
    lines += ["", "## Settings", "", "| setting | kind | N | k | primary | B | P | scheme | design |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, st in planned.items():
        lines.append(f"| {name} | {st['kind']} | {st['n']} | {st['k']} | {st['primary']} | {st['B']} | {st['P']} | "
                     f"{st['scheme']} | {_design_text(st)} |")
    if any("covariance" in st["design"] for st in planned.values()):
        lines += ["", "`covariance`: the latent covariance is the within-cell (label x artefact) covariance of the "
                      "574 validation rows of real embeddings (a PneumoniaMNIST network of `experiments/use_zoo.py`, "
                      "256 dimensions), scaled so its largest eigenvalue is 4; the attribute and the head sit on its "
                      "eigen-axes as the synthetic design's sit on coordinate axes, `shift` in SDs of the attribute's "
                      "axes (`CalibrationDesign`)."]
    if len(cov):
        lines += ["", "## Bias of max |WSC| (raw: the paper's number; corrected: disattenuated with the bootstrap's noise estimate)", "",
                  "| setting | draws | probe AUROC | population | raw mean ± SD | corrected mean ± SD | power (p <= 0.05) ± MC SE |",
                  "|---|---|---|---|---|---|---|"]
        for _, x in cov.iterrows():
            lines.append(f"| {x.setting} | {x.draws} | {_f(x.probe_auroc, 2)} | {_f(x.population)} | "
                         f"{_f(x.raw_mean)} ± {_f(x.raw_sd)} | {_f(x.corrected_mean)} ± {_f(x.corrected_sd)} | "
                         f"{_pm(x.power, x.draws)} |")
        low = [x.setting for _, x in cov.iterrows() if x.population < 0.1]
        if low:
            lines += ["", "Power is the share of draws with p <= 0.05; where the population max |WSC| is near 0 ("
                      + ", ".join(f"`{n}`" for n in low) + ") it is a rejection rate, not power."]
        lines += ["", "## Coverage of the population value by 95% intervals (± MC SE; mean width in brackets)", "",
                  "| setting | draws | max: percentile | max: basic | max: BCa (guarded) | max: corrected (bootstrap noise) | "
                  "cells: percentile | cells: basic | cells: BCa (guarded) | cells: corrected (bootstrap noise) | "
                  "BCa fell back | corrected available |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, x in cov.iterrows():
            cells = " | ".join(f"{_pm(x[f'cov_{m}'], _n(x, m))} ({_f(x[f'width_{m}'], 3)})" for m in METHODS)
            cc = " | ".join(_pm(x.get(f"cells_cov_{m}"), _n(x, f"cells_{m}"))
                            for m in ("percentile", "basic", "raw", "corrected"))
            lines.append(f"| {x.setting} | {x.draws} | {cells} | {cc} | {_f(x.bca_fallback_share, 2)} | "
                         f"{_f(x.corrected_available, 2)} |")
        lines += ["", "Corrected (bootstrap noise): the interval as a user of version 0.5 got it -- the "
                      "attenuation-corrected interval, or the guarded BCa interval in draws where a compared row's reliability is below 0.1 (no corrected "
                      "value; share of draws with one in the last column)."]
    if len(jk):
        rel = {x["setting"]: x for x in rec.get("reliability") or []}
        lines += ["", "## The correction with the jackknife's noise estimate (the library's since 0.6)", "",
                  "The same draws (data and bootstrap rows) analysed with `correction_noise=\"jackknife\"` "
                  "(`--jackknife-only`; delete-one-block refits, B / 4 blocks here): the corrected max |WSC|, "
                  "the coverage of its interval as a user gets it (the corrected interval, or the basic interval "
                  "where a compared row's reliability is below 0.1: share with a corrected value in `available`), "
                  "the basic interval's coverage on the same draws, and the reliability of the largest population "
                  "cell: implied by the attenuation, estimated by the bootstrap (the earlier correction) and by "
                  "the jackknife. Coverages ± MC SE over the supplement's draws.", "",
                  "| setting | draws | probe AUROC | population | corrected mean ± SD | max: coverage (width) | "
                  "cells: coverage | basic, same draws | available | implied reliability | bootstrap | jackknife |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, x in jk.iterrows():
            r = rel.get(x.setting, {})
            lines.append(f"| {x.setting} | {x.draws} | {_f(x.probe_auroc, 2)} | {_f(x.population)} | "
                         f"{_f(x.corrected_mean)} ± {_f(x.corrected_sd)} | {_pm(x.coverage, x.draws)} ({_f(x.width)}) | "
                         f"{_pm(x.cells_cov, x.draws)} | {_pm(x.cov_basic_same, x.draws)} | {_f(x.available, 2)} | "
                         f"{_f(r.get('implied'))} | {_f(r.get('bootstrap'))} | {_f(x.reliability)} |")
    if len(cov) and len(eligible(cov)):
        good = eligible(cov)
        table = _choice_table(cov, jk if len(jk) else None)
        draws = _choice_draws(cov, jk if len(jk) else None)
        score, best = choose_default(cov, jk if len(jk) else None)
        widths = {m: good[f"width_{m}"].astype(float).mean() for m in ("percentile", "basic", "bca")}
        widths["corrected_bootstrap"] = good["width_corrected"].astype(float).mean()
        if "corrected" in table:
            widths["corrected"] = jk.set_index("setting").loc[list(good.setting), "width"].mean()
        lines += ["", "## Choice of the default interval", "",
                  f"Over the {len(good)} eligible settings ({', '.join(good.setting)}): complete (200 draws), probe "
                  "AUROC at least 0.6 and a population max |WSC| of at least 0.1 (this rule was written after a first "
                  "look at the results). `corrected`: the library's correction (jackknife noise; "
                  + ("every eligible setting has 200 draws of it" if "corrected" in table else
                     "not in the choice until every eligible setting has 200 draws of it") +
                  "); `corrected_bootstrap`: the earlier correction with the bootstrap's noise. Mean coverage ± the "
                  "MC SE of the mean over independent settings; min and max ± their setting's MC SE.", "",
                  "| method | mean coverage | min | max | mean \\|coverage - 0.95\\| | mean width |", "|---|---|---|---|---|---|"]
        for m, c in table.items():
            n = draws[m]
            lines.append(f"| {m} | {_f(c.mean(), 2)} ± {_f(_mean_se(c, n), 3)} | {_pm(c.min(), n[c.idxmin()])} | "
                         f"{_pm(c.max(), n[c.idxmax()])} | {_f(score[m], 3)} | {_f(widths[m], 3)} |")
        outside = [f"{k} ({_pm(v, draws[best][k])})" for k, v in table[best].items() if not 0.93 <= v <= 0.97]
        lines += ["", f"Default: **{best}** (closest to the nominal 0.95 on average; `wsca analyze --ci-method`). "
                      "Eligible settings where it leaves 0.93-0.97: " + (", ".join(outside) or "none") + ". "
                      "Its cell intervals: " + (_cells_line(cov, best) if best != "corrected" else _jk_cells_line(jk, good))
                  + "."]
    if rec.get("reliability") and not len(jk):
        lines += ["", "## Where the correction goes wrong: the bootstrap's estimate of probe noise", "",
                  "For the largest population cell: the reliability implied by the attenuation over the draws, "
                  "(mean raw cell / population cell)^2, against the mean bootstrap reliability the correction "
                  "divides by. Where the bootstrap reliability is lower, the correction over-corrects.", "",
                  "| setting | probe AUROC | population cell | raw mean | implied reliability | bootstrap reliability |",
                  "|---|---|---|---|---|---|"]
        for x in rec["reliability"]:
            lines.append(f"| {x['setting']} | {_f(x['probe_auroc'], 2)} | {_f(x['population'])} | {_f(x['raw_mean'])} | "
                         f"{_f(x['implied'])} | {_f(x['bootstrap'])} |")
    if len(nul):
        role = nul.setting.map(lambda n: null_role(pops[n]["setting"]))
        fp, pw = nul[role != "power"], nul[role == "power"]
        if len(fp):
            lines += ["", f"## False-positive rate of the permutation test at alpha {ALPHA}", "",
                      "| setting | scheme | primary | design | population max \\|WSC\\| | draws | FPR ± MC SE |",
                      "|---|---|---|---|---|---|---|"]
            for _, x in fp.iterrows():
                lines.append(f"| {x.setting} | {x.scheme} | {x.primary} | {_design_text(x)} | "
                             f"{_f(pops[x.setting]['max_abs_wsc'])} | {x.draws} | {_pm(x.fpr, x.draws, 3)} |")
            lines += ["", "`null0_*`: the attribute is not encoded (shift 0), the hypothesis the permutation null "
                          "represents (its population max |WSC| is that of a probe fitted to noise, not a WSC the head "
                          "has). `null_*`: encoded but unused (use 0): the permuted probes point in random "
                          "directions while the real probe points along the attribute, orthogonal to the head, so the "
                          "test is conservative there; absence is concluded with the equivalence test instead. "
                          "`grouped_naive`: rows of one patient share the attribute and an offset, but rows are "
                          "permuted freely; `grouped`: patients are exchanged whole."]
        if len(pw):
            lines += ["", f"## Power of the permutation test at alpha {ALPHA} where the label depends on the attribute", "",
                      "| setting | scheme | primary | design | population max \\|WSC\\| | draws | power ± MC SE |",
                      "|---|---|---|---|---|---|---|"]
            for _, x in pw.iterrows():
                lines.append(f"| {x.setting} | {x.scheme} | {x.primary} | {_design_text(x)} | "
                             f"{_f(pops[x.setting]['max_abs_wsc'])} | {x.draws} | {_pm(x.fpr, x.draws, 3)} |")
            lines += ["", "These settings keep their names (`null_confounded_*`) in the records but are not nulls: the "
                          "attribute goes with the label (confound 2.0) and the primary is a probe fitted to that "
                          "label, so the primary takes up the attribute's direction and the population max |WSC| is "
                          f"{_f(float(pops[pw.setting.iloc[0]]['max_abs_wsc']))}, not 0; the share rejected is the power "
                          "at that value. `within` permutes the attribute within primary classes: every permutation "
                          "keeps the attribute's association with the label, through which this WSC arises."]
    short = cov[cov.draws < 200] if len(cov) else cov
    if len(short):
        lines += ["", "Incomplete settings (fewer than 200 draws, so not eligible for the choice of the default): " + "; ".join(
            f"{x.setting} (N {pops[x.setting]['setting']['n']:,}, k {pops[x.setting]['setting']['k']}): {x.draws} draws, raw max |WSC| "
            f"{_f(x.raw_mean)} ± {_f(x.raw_sd)} (mean ± SD) against a population value of {_f(x.population)}, coverage "
            f"(± MC SE over {x.draws} draws) of the percentile / basic / BCa / corrected intervals "
            f"{_pm(x.cov_percentile, _n(x, 'percentile'))} / {_pm(x.cov_basic, _n(x, 'basic'))} / "
            f"{_pm(x.cov_bca, _n(x, 'bca'))} / {_pm(x.cov_corrected, _n(x, 'corrected'))}"
            + (f" (where 0: below {3 / x.draws:.2f} at 95% by the rule of three)"
               if any(x[f"cov_{m}"] in (0.0, 1.0) for m in METHODS) else "")
            + f", a corrected value in {_f(x.corrected_available, 2)} of them"
            for _, x in short.iterrows()) + "."
            + (" k500: where the raw estimate sits this far below the population value in every draw, more draws would "
               "not change the conclusion: with this many components for this many rows the probe direction is mostly "
               "noise, no interval built around the estimate covers, and a user sees it as reliabilities below 0.1 (no "
               "corrected value) and the basic-interval fallback." if "k500" in set(short.setting) else "")]
    lines += ["", f"Run time: {rec['seconds_total'] / 60:.0f} minutes of `wsca.analyze` for {rec['draws']} analysed "
                  f"datasets ({rec['seconds_mean']:.1f} s each on average, 2 CPU cores, several studies sharing them)"
                  + (f"; the basic and percentile cell intervals of {rec['cells_draws']} draws recorded before they were "
                     f"kept were recomputed from the same data and bootstrap rows (`--cells-only`, "
                     f"{rec['cells_seconds_total'] / 60:.0f} minutes)" if rec.get("cells_draws") else "")
                  + (f"; the jackknife supplement {sum(x['seconds'] * x['draws'] for x in rec['jackknife']) / 60:.0f} "
                     f"minutes for {sum(x['draws'] for x in rec['jackknife'])} draws" if rec.get("jackknife") else "")
                  + "."]
    return "\n".join(lines) + "\n"


def _with_cells(out: str) -> set:
    """(setting, rep) of the main records that hold the basic cell intervals themselves."""
    return {(r["setting"], r["rep"]) for r in runner.read_records(os.path.join(out, RUNS))
            if r.get("cell_basic") is not None}


def load(out: str):
    """Per-draw records; basic and percentile cell intervals from ``calibration_cells.jsonl`` where the
    main record predates them (checked: the supplement's cells equal the record's)."""
    runs = runner.records_frame(os.path.join(out, RUNS))
    for col in ("cell_basic", "cell_percentile"):
        if col not in runs:
            runs[col] = None
        runs[col] = runs[col].astype(object)
    sup_path = os.path.join(out, "calibration_cells.jsonl")
    if os.path.exists(sup_path):
        sup = {(r["setting"], r["rep"]): r for r in runner.read_records(sup_path)}
        for i, x in runs.iterrows():
            r = sup.get((x.setting, x.rep))
            if r is None or isinstance(x.cell_basic, list):
                continue
            assert np.allclose(r["cells"], x.cells, atol=1e-5), f"supplement differs from the record: {x.setting} {x.rep}"
            runs.at[i, "cell_basic"], runs.at[i, "cell_percentile"] = r["cell_basic"], r["cell_percentile"]
    with open(os.path.join(out, "calibration_population.json")) as f:
        pops = json.load(f)
    return runs, pops


def se_span(df: pd.DataFrame, col: str, count: str | None = None, nd: int = 2) -> str:
    """``"lo ± SE (setting) to hi ± SE (setting)"`` of a share over settings, each SE over that setting's
    draws (``count``: the column whose ``n_*`` count applies, :func:`_n`; else ``draws``)."""
    d = df[pd.to_numeric(df[col], errors="coerce").notna()]
    if not len(d):
        return "n/a"
    v = d[col].astype(float)
    lo, hi = d.loc[v.idxmin()], d.loc[v.idxmax()]
    one = lambda x: f"{_pm(x[col], _n(x, count) if count else x['draws'], nd)} ({x['setting']})"  # noqa: E731
    return one(lo) if lo["setting"] == hi["setting"] else f"{one(lo)} to {one(hi)}"


def prose_namespace(out: str) -> dict:
    """Values for ``templates/readme_calibration.md``, from the records only."""
    from prose import namespace
    rec, cov, nul = load_summary(out)
    good = eligible(cov)
    _, best = choose_default(cov, pd.DataFrame(rec.get("jackknife") or []))
    weakest = cov.loc[cov.probe_auroc.idxmin()]
    role = nul.setting.map(lambda n: null_role(rec["populations"][n]["setting"]))
    closer = int(np.sum(np.abs(good.cov_corrected.astype(float) - 0.95) < np.abs(good.cov_basic.astype(float) - 0.95)))
    jk = pd.DataFrame(rec.get("jackknife") or [])
    jkg = jk[jk.setting.isin(good.setting)] if len(jk) else pd.DataFrame(columns=["setting", "coverage", "cells_cov",
                                                                                   "cov_basic_same", "draws"])
    jk_closer = int(np.sum(np.abs(jkg.coverage - 0.95) < np.abs(jkg.cov_basic_same - 0.95))) if len(jkg) else 0
    outside = ", ".join(f"{x.setting} ({_pm(x.coverage, x.draws)})" for _, x in jkg.iterrows()
                        if not 0.93 <= x.coverage <= 0.97)
    draws = sorted(set(int(d) for d in jkg.draws)) if len(jkg) else []
    pops = rec["populations"]
    power = nul[role == "power"]
    stale = [n for n in STALE if n in pops and not rerun_of(n, rec)]
    rerun = [n for n in STALE if n in pops and rerun_of(n, rec)]
    cov_d = {x["setting"]: x for x in rec["coverage"]}
    stale_text = ", ".join(f"`{n}`" + (f" ({cov_d[n]['draws']} of {pops[n]['setting']['reps']} draws)"
                                         if n in cov_d and cov_d[n]["draws"] < pops[n]["setting"]["reps"] else "")
                           for n in stale)
    return namespace(good=good, n_cov=len(cov), n_draws=rec["draws"], best=best, weakest_auroc=_f(weakest.probe_auroc, 2),
                     n_corr_closer=closer, jkg=jkg, n_jk_closer=jk_closer, jk_outside=outside or "none",
                     jk_draws=" to ".join(str(d) for d in (draws[:1] + draws[-1:] if len(draws) > 1 else draws)) or "no",
                     weakest_cov=_f(weakest.cov_corrected, 2), nul0=nul[role == "level"],
                     nul_enc=nul[role == "conservative"], nul_power=power, se_span=se_span,
                     power_population=_f(max(pops[n]["max_abs_wsc"] for n in power.setting)) if len(power) else "n/a",
                     stale=stale_text or "none",
                     rerun=("; rerun since with the current code: " + ", ".join(
                         f"`{n}` ({_rerun_text(rerun_of(n, rec))})" for n in rerun)) if rerun else "")


def build_parser():
    def arguments(p):
        p.add_argument("--settings", nargs="*", choices=list(SETTINGS))
        p.add_argument("--reps", type=int, help="draws per setting (default: the setting's own, 200 or 500)")
        p.add_argument("--list", action="store_true")
        p.add_argument("--cells-only", action="store_true",
                       help="only the basic and percentile cell intervals of draws recorded without them "
                            "(-> calibration_cells.jsonl, merged into the summary)")
        p.add_argument("--jackknife-only", action="store_true",
                       help="only the attenuation correction with the jackknife's noise estimate "
                            "(-> calibration_jackknife.jsonl, summarised beside the main records)")
        p.add_argument("--merge-into", metavar="DIR",
                       help="after summarising --out (a fresh folder holding a rerun's records), merge the settings "
                            "of --settings (default: every setting summarised there) into DIR's "
                            "calibration_summary.json and calibration_population.json, replacing exactly their "
                            "entries (each rerun must be complete and every record stamped; see merge_summary), "
                            "and render DIR/calibration.md")
    return runner.parser(__doc__, arguments, data_dir=False)


def write_summary(args) -> None:
    """``calibration_summary.json`` from the per-draw records, where they are (they are not in git)."""
    if os.path.exists(os.path.join(args.out, RUNS)):
        with open(os.path.join(args.out, "calibration_summary.json"), "w") as f:
            json.dump(summarise(args.out), f, indent=1)


SUMMARY_LISTS = ("coverage", "null", "reliability", "jackknife")


def merge_summary(fresh: str, into: str, names: list[str] | None = None) -> dict:
    """Merge the settings ``names`` (default: every setting summarised in ``fresh``) of the summary in
    ``fresh`` (a rerun's ``--out``: ``calibration_summary.json``, written from its records by
    :func:`summarise`, and ``calibration_population.json``) into the committed summary and population file
    in ``into``; returns the merged summary.

    A run into a fresh ``--out`` summarises only the settings it ran; this puts them beside the records
    of every other setting, whose per-draw lines may be gone. For each merged setting:

    * its entries in ``coverage``, ``null``, ``reliability`` and ``jackknife`` and its population value
      (in the summary and in the population file) are replaced by the fresh ones: an entry that only the
      fresh summary has is inserted in the population file's order of settings, and an old entry that the
      fresh summary lacks is removed (a ``reliability`` row, or a ``jackknife`` row paired with the
      replaced draws);
    * ``provenance`` holds the versions and dates its fresh records carry, and ``reruns[name]`` records the
      rerun: ``wsca_version`` (list), ``first`` and ``last`` date, ``draws`` and ``planned`` draws,
      ``jackknife_draws`` and the date ``merged``. :func:`rerun_of` reads it; the report's staleness flag of
      a :data:`STALE` setting turns off only with it;
    * ``draws``, ``seconds_total`` and ``seconds_mean`` lose the old entry's draws and seconds
      (``draws * seconds``) and gain the fresh ones (``cells_draws`` and ``cells_seconds_total`` belong to
      the ``--cells-only`` supplement of older records and stay).

    Every other setting's entries stay as they were, byte for byte (the files are written as
    :func:`write_summary` writes them: ``json.dump(..., indent=1)``). Refused (``SystemExit``, nothing
    written) unless each merged setting's fresh main records -- and its jackknife supplement, where the
    fresh folder has one -- hold all its planned draws, every record stamped with ``wsca_version`` and
    ``date``, and its fresh population was computed for the setting as :data:`SETTINGS` defines it now."""
    fresh_rec, _, _ = load_summary(fresh)
    with open(os.path.join(fresh, "calibration_population.json")) as f:
        fresh_pops = json.load(f)
    rec, _, _ = load_summary(into)
    pop_path = os.path.join(into, "calibration_population.json")
    with open(pop_path) as f:
        pops = json.load(f)
    entries = {key: {x["setting"]: x for x in fresh_rec.get(key) or []} for key in SUMMARY_LISTS}
    summarised = [n for n in fresh_rec["populations"] if n in entries["coverage"] or n in entries["null"]]
    names = list(names or summarised)
    if not names:
        raise SystemExit(f"calibration --merge-into: nothing merged: no settings summarised in {fresh}")
    prov = fresh_rec.get("provenance") or {}
    problems = []
    for name in names:
        main = entries["coverage"].get(name) or entries["null"].get(name)
        st = fresh_rec["populations"].get(name, {}).get("setting")
        if main is None:
            problems.append(f"{name}: no records in {fresh}")
            continue
        if name not in SETTINGS or st != SETTINGS[name] or fresh_pops.get(name) != fresh_rec["populations"][name]:
            problems.append(f"{name}: the fresh population is not that of the setting as SETTINGS defines it now")
        if main["draws"] < st["reps"]:
            problems.append(f"{name}: {main['draws']} of {st['reps']} draws")
        if prov.get("main", {}).get(name, {}).get("stamped") != main["draws"]:
            problems.append(f"{name}: not every record stamped with wsca_version and date")
        jk = entries["jackknife"].get(name)
        if jk is not None and jk["draws"] < st["reps"]:
            problems.append(f"{name}: jackknife supplement {jk['draws']} of {st['reps']} draws (complete it, or "
                            "move calibration_jackknife.jsonl aside to merge the main records alone)")
        if jk is not None and prov.get("jackknife", {}).get(name, {}).get("stamped") != jk["draws"]:
            problems.append(f"{name}: not every jackknife record stamped")
    if problems:
        raise SystemExit("calibration --merge-into: nothing merged: " + "; ".join(problems))
    order = list(pops) + [n for n in fresh_rec["populations"] if n not in pops]
    for name in names:
        old = next((x for x in (rec.get("coverage") or []) + (rec.get("null") or []) if x["setting"] == name), None)
        new = entries["coverage"].get(name) or entries["null"].get(name)
        if old is not None:
            rec["draws"] -= int(old["draws"])
            rec["seconds_total"] -= float(old["draws"]) * float(old["seconds"])
        rec["draws"] += int(new["draws"])
        rec["seconds_total"] += float(new["draws"]) * float(new["seconds"])
        for key in SUMMARY_LISTS:
            rows = [x for x in rec.get(key) or [] if x["setting"] != name]
            if name in entries[key]:
                rank = {n: i for i, n in enumerate(order)}
                at = next((i for i, x in enumerate(rows) if rank.get(x["setting"], len(order)) > rank[name]), len(rows))
                old_at = next((i for i, x in enumerate(rec.get(key) or []) if x["setting"] == name), None)
                rows.insert(at if old_at is None else old_at, entries[key][name])
            rec[key] = rows
        for target in (rec["populations"], pops):
            target[name] = fresh_rec["populations"][name]
        rec.setdefault("provenance", {"main": {}, "jackknife": {}})
        for part in ("main", "jackknife"):
            rec["provenance"].setdefault(part, {}).pop(name, None)
            if name in prov.get(part, {}):
                rec["provenance"][part][name] = prov[part][name]
        p = prov["main"][name]
        rec.setdefault("reruns", {})[name] = {
            "wsca_version": p["wsca_version"], "first": p["first"], "last": p["last"], "draws": int(new["draws"]),
            "planned": int(fresh_rec["populations"][name]["setting"]["reps"]),
            "jackknife_draws": int(entries["jackknife"][name]["draws"]) if name in entries["jackknife"] else 0,
            "merged": _stamp()["date"]}
    rec["seconds_mean"] = rec["seconds_total"] / rec["draws"]
    with open(os.path.join(into, "calibration_summary.json"), "w") as f:
        json.dump(rec, f, indent=1)
    with open(pop_path, "w") as f:
        json.dump(pops, f, indent=1)
    print(f"merged {', '.join(names)} from {fresh} into {into}")
    return rec


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.list:
        for k, v in SETTINGS.items():
            print(k, v)
        return
    if args.merge_into and os.path.abspath(args.merge_into) == os.path.abspath(args.out):
        raise SystemExit("calibration: --merge-into names the --out folder itself")
    runner.run_study(args, run, {"calibration.md": lambda a: report(a.out)}, prepare=write_summary)
    if args.merge_into:
        merge_summary(args.out, args.merge_into, args.settings)
        runner.write_text(args.merge_into, "calibration.md", report(args.merge_into))


if __name__ == "__main__":
    main()
