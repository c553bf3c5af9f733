"""Inference across independently trained networks (seeds): one answer from several runs.

A single network is one draw of the training randomness; the paper trained four seeds. Given M
analyses of the same design (:func:`analyze_runs`), the combined answer per metadata task is:

* the mean signed WSC of every cell with a t interval over runs, and the sign consistency of the
  largest cell (share of runs whose cell has the mean's sign);
* combined permutation p-values: Fisher and Stouffer (valid when the runs are independent: trained on
  independent data), and twice the mean p (Vovk & Wang 2020, "Combining p-values via averaging",
  valid under any dependence: for seeds that reuse the same training rows);
* the excess over each run's own null in null-SD units, ``(max|WSC| - mean null) / SD null``,
  summarised by a DerSimonian-Laird random-effects model (within-run variance from the bootstrap)
  and by a bootstrap over runs;
* the paper's inter-network null: max |WSC| between the primary head of one network and the probe of
  *another* network (projected on the first network's manifold) -- directions that share no training,
  the alignment to expect by chance between unrelated heads of this shape.

The verdict rests on the combination that the runs' dependence allows (``shared_data``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from ..errors import require
from ..io import atomic_write_text
from ..stats import holm
from ..wsc import wsc_jit
from .config import AnalysisConfig
from ..config import with_deprecated_keywords
from .pipeline import _RENAMED, analyze
from .result import WscaResult


@dataclass(frozen=True)
class RunsResult:
    """Per-run results and the combined answer. ``to_dict()`` is the ``runs.json`` schema."""

    names: list
    runs: list
    combined: dict
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"runs": self.names, "settings": self.settings, "combined": self.combined,
                "per_run": {n: {t: {k: r.tasks[t].summary.get(k) for k in
                                    ("max_abs_wsc", "max_abs_wsc_corrected", "ci", "p_value", "p_adjusted",
                                     "null_q95", "cell")} for t in r.tasks}
                            for n, r in zip(self.names, self.runs)}}

    def to_json(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False))


def fisher(p: np.ndarray) -> float:
    """Fisher's combination of independent p-values, ``chi2_{2M}`` of ``-2 sum log p``."""
    return float(sps.combine_pvalues(np.asarray(p, float), method="fisher")[1])


def stouffer(p: np.ndarray, n_perm: Sequence[int] | None = None) -> float:
    """Stouffer's combination of independent one-sided p-values (``sum z / sqrt(M)``).

    A permutation p of exactly 1 would be ``z = -inf`` and erase every other run; with ``n_perm``
    each p is capped at ``1 - 1 / (2 (P + 1))``, half a step below 1 (a mid-p at the top)."""
    p = np.asarray(p, float)
    if n_perm is not None:
        p = np.minimum(p, 1 - 0.5 / (np.asarray(n_perm, float) + 1))
    return float(sps.combine_pvalues(p, method="stouffer")[1])


def mean_merged(p: np.ndarray) -> float:
    """``min(1, 2 mean p)``: a valid p-value under any dependence between the runs (Vovk & Wang 2020)."""
    return float(min(1.0, 2.0 * np.mean(np.asarray(p, float))))


def random_effects(y: np.ndarray, v: np.ndarray, confidence: float = 0.95) -> dict:
    """DerSimonian-Laird random-effects mean of per-run effects ``y (M,)`` with within-run
    variances ``v (M,)``: pooled mean, its SE and a t interval (M - 1 df), between-run variance tau^2,
    I^2, and the one-sided p of a positive mean."""
    y, v = np.asarray(y, float), np.maximum(np.asarray(v, float), 1e-12)
    w = 1 / v
    m = len(y)
    mu_f = np.sum(w * y) / w.sum()
    q = float(np.sum(w * (y - mu_f) ** 2))
    c = w.sum() - np.sum(w**2) / w.sum()
    tau2 = max(0.0, (q - (m - 1)) / c) if c > 0 else 0.0
    ws = 1 / (v + tau2)
    mu = float(np.sum(ws * y) / ws.sum())
    se = float(math.sqrt(1 / ws.sum()))
    # few runs: a t with M - 1 degrees of freedom rather than the normal (DerSimonian-Laird's z is
    # anti-conservative for M of 2-5); p one-sided for a positive excess
    t = sps.t.ppf(0.5 + confidence / 2, max(m - 1, 1))
    return {"mean": mu, "se": se, "ci": [mu - t * se, mu + t * se], "tau2": tau2,
            "i2": float(max(0.0, (q - (m - 1)) / q)) if q > 0 else 0.0,
            "p_value": float(sps.t.sf(mu / se, max(m - 1, 1))), "df": int(max(m - 1, 1))}


def inter_network_null(results: Sequence[WscaResult], task: str, centered: bool) -> np.ndarray:
    """Max |WSC| of run i's primary head against run j's probe for ``task`` (i != j), both projected
    on run i's top-k axes: ``(M (M - 1),)``. Empty when the runs' embedding widths differ."""
    out = []
    for i, ri in enumerate(results):
        for j, rj in enumerate(results):
            if i == j or ri.heads is None or rj.heads is None:
                continue
            u = ri.heads["axes"]                                               # (D, k)
            b = rj.heads["tasks"].get(task)
            if b is None or b.shape[1] != u.shape[0]:
                continue
            a = (ri.heads["primary"] @ u).astype(np.float32)
            bb = (b @ u).astype(np.float32)[None]
            cells = np.asarray(wsc_jit(a, np.ones(len(a), bool), bb, np.ones((1, len(b)), bool), k=u.shape[1],
                                       centered=centered))
            out.append(float(np.nanmax(np.abs(cells))))
    return np.array(out)


def _excess(r: WscaResult, task: str):
    """(excess in null-SD units, its within-run variance) or (None, None) without a permutation null."""
    t = r.tasks[task]
    if t.null is None or t.source != "probe":
        return None, None
    nmax = np.nanmax(np.abs(t.null), axis=(-2, -1))
    sd = float(np.std(nmax, ddof=1))
    if not sd > 0:
        return None, None
    y = (t.summary["max_abs_wsc"] - float(np.mean(nmax))) / sd
    if t.boot is not None and len(t.boot) > 1:
        v = float(np.var(np.nanmax(np.abs(t.boot), axis=(-2, -1)), ddof=1)) / sd**2
    else:
        v = 1.0                                    # the statistic's spread taken as the null's
    return y, v


def combine_task(results: Sequence[WscaResult], task: str, shared_data: bool, alpha: float = 0.05,
                 confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """The combined answer for one task over M runs (see the module docstring)."""
    cells = np.stack([np.asarray(r.tasks[task].wsc, float) for r in results])           # (M, Ca, C)
    m = len(results)
    mean, sd = np.nanmean(cells, 0), np.nanstd(cells, 0, ddof=1)
    half = sps.t.ppf(0.5 + confidence / 2, m - 1) * sd / math.sqrt(m)
    big = np.unravel_index(int(np.nanargmax(np.abs(mean))), mean.shape)
    sign = np.sign(mean[big])
    out = {"runs": m, "cells_mean": mean.tolist(), "cells_sd": sd.tolist(),
           "cells_ci": [(mean - half).tolist(), (mean + half).tolist()],
           "largest_cell": {"cell": [int(big[0]), int(big[1])], "mean": float(mean[big]),
                            "ci": [float(mean[big] - half[big]), float(mean[big] + half[big])],
                            "sign_consistency": float(np.mean(np.sign(cells[(slice(None),) + big]) == sign))},
           "max_abs_wsc": [float(r.tasks[task].summary["max_abs_wsc"]) for r in results]}
    ps = [r.tasks[task].summary.get("p_value") for r in results]
    if all(p is not None for p in ps):
        ps = np.array(ps, float)
        n_perm = [r.tasks[task].summary.get("head_null_n") or r.tasks[task].summary.get("n_permutations")
                  for r in results]
        floor = None if None in n_perm else mean_merged(np.array([1.0 / (n + 1) for n in n_perm]))
        out.update(p_values=ps.tolist(), min_attainable_p=floor, fisher_p=fisher(ps),
                   stouffer_p=stouffer(ps, None if None in n_perm else n_perm), mean_merged_p=mean_merged(ps),
                   n_significant=int(np.sum(np.array([r.tasks[task].summary["p_adjusted"] for r in results]) < alpha)))
    ex = [_excess(r, task) for r in results]
    if all(y is not None for y, _ in ex):
        y = np.array([e[0] for e in ex])
        v = np.array([e[1] for e in ex])
        rng = np.random.default_rng(seed)
        bmeans = y[rng.integers(0, m, (n_boot, m))].mean(1)
        a = (1 - confidence) / 2
        out["excess"] = {"per_run": y.tolist(), "within_var": v.tolist(), "random_effects": random_effects(y, v, confidence),
                         "seed_bootstrap_ci": [float(np.quantile(bmeans, a)), float(np.quantile(bmeans, 1 - a))],
                         "seed_bootstrap_note": f"resamples of {m} runs ({m ** m} ordered draws at most): crude for few runs",
                         "unit": "(max |WSC| - mean of the run's permutation null) / SD of that null"}
    st = results[0].settings
    centered = st.get("projection", st).get("heads") == "centered"          # 0.9 sections, or a 0.8 result's flat settings
    inter = inter_network_null(results, task, centered)
    out["inter_network_null"] = None if len(inter) == 0 else {
        "pairs": int(len(inter)), "mean": float(inter.mean()), "q95": float(np.quantile(inter, 0.95)),
        "note": "max |WSC| of one network's primary head against another network's probe (the paper's null)"}
    return out


def _verdict(c: dict, shared_data: bool, alpha: float) -> str:
    if "fisher_p" not in c:
        return "not tested: the runs have no permutation p-values (run with permutations)"
    name = ("twice the mean p, valid for runs that share training data" if shared_data
            else "Fisher's combination, for independent runs")
    p = c["combined_p_adjusted"]
    lc = c["largest_cell"]
    tail = (f"; largest cell mean {lc['mean']:+.3f} [{lc['ci'][0]:+.3f}, {lc['ci'][1]:+.3f}], same sign in "
            f"{100 * lc['sign_consistency']:.0f}% of runs; {c['n_significant']} of {c['runs']} runs significant alone")
    if p < alpha:
        return f"aligned across runs: combined p_adj {p:.3g} ({name}; Holm across tasks){tail}"
    floor = c.get("min_attainable_p")
    if shared_data and floor is not None and floor >= alpha:
        tail += (f"; with these permutations twice the mean p cannot fall below {floor:.3g} (>= alpha): "
                 "run more permutations")
    return f"not detected across runs: combined p_adj {p:.3g} ({name}; Holm across tasks){tail}"


def signed_contrast(result: WscaResult, task: str, row: int, col: int) -> dict:
    """A pre-specified signed cell tested one-sided against its permutation null.

    For an induced shortcut the direction is known in advance (the malignant row should lean toward
    the scanner the malignant images were moved to), so the test of that one signed cell needs no
    maximum over cells and no two-sided correction: ``p = (1 + #{null cell >= observed}) / (P + 1)``.

    Args:
      result: an analysis with permutations.  task: the metadata task.  row: primary class index (for a
        one-logit head, class 1 is its row and class 0 its negative).
      col: task class index.
    Returns:
      ``{"cell", "observed", "p_value", "n_permutations"}`` (p None without permutations).
    """
    t = result.tasks[task]
    r, sign = row, 1.0
    if t.wsc.shape[0] == 1:                                  # a one-logit head: its row is the positive class's
        r, sign = 0, (1.0 if row == 1 else -1.0)
    obs = sign * float(t.wsc[r, col])
    p = None
    if t.null is not None and t.source == "probe":
        nul = sign * np.asarray(t.null[:, r, col], float)
        p = float((1 + np.sum(nul >= obs - 1e-12)) / (len(nul) + 1))
    return {"cell": [int(r), int(col)], "observed": obs, "p_value": p,
            "n_permutations": None if t.null is None else int(len(t.null))}


def check_runs(results: Sequence[WscaResult], names: Sequence[str]) -> None:
    """Runs must share the primary's classes and the analysed tasks."""
    require(len(results) >= 2, f"--runs: {len(results)} run given; expected at least 2 to combine")
    first = results[0]
    for n, r in zip(names[1:], results[1:]):
        require(r.primary["classes"] == first.primary["classes"],
                f"--runs {n}: primary classes {r.primary['classes']} differ from {names[0]}'s {first.primary['classes']}")
        require(sorted(r.tasks) == sorted(first.tasks),
                f"--runs {n}: analysed tasks {sorted(r.tasks)} differ from {names[0]}'s {sorted(first.tasks)}")
        for t in first.tasks:
            require(tuple(r.tasks[t].classes) == tuple(first.tasks[t].classes),
                    f"--runs {n}: task {t!r} has classes {list(r.tasks[t].classes)}, {names[0]} has "
                    f"{list(first.tasks[t].classes)}; expected the same classes in every run")


def check_run_inputs(runs: Sequence[Mapping], primary: str, names: Sequence[str]) -> None:
    """Runs that can be combined, before any is analysed: at least two, distinct (no run given twice,
    by content), the same metadata columns and primary classes, and all with the model's primary
    head or all without (otherwise different heads would be compared and combined)."""
    require(len(runs) >= 2, f"--runs: {len(runs)} run given; expected at least 2 to combine")
    require(len(names) == len(runs), f"names: {len(names)} given for {len(runs)} runs")
    seen = {}
    for n, r in zip(names, runs):
        digest = hashlib.sha1(np.ascontiguousarray(r["embeddings"]).tobytes()).hexdigest()
        require(digest not in seen, f"--runs {n}: the same embeddings as {seen.get(digest)} (a run given twice); "
                                    "expected independently trained networks")
        seen[digest] = n
    cols0 = sorted(map(str, runs[0]["metadata"].columns))
    for n, r in zip(names[1:], runs[1:]):
        cols = sorted(map(str, r["metadata"].columns))
        require(cols == cols0, f"--runs {n}: metadata columns {cols} differ from {names[0]}'s {cols0}")
    classes0 = sorted(map(str, runs[0]["metadata"][primary].dropna().unique())) if primary in runs[0]["metadata"] else None
    for n, r in zip(names[1:], runs[1:]):
        if classes0 is not None and primary in r["metadata"]:
            cl = sorted(map(str, r["metadata"][primary].dropna().unique()))
            require(cl == classes0, f"--runs {n}: primary {primary!r} classes {cl} differ from {names[0]}'s {classes0}")
    with_head = [n for n, r in zip(names, runs) if r.get("primary_head") is not None]
    require(len(with_head) in (0, len(runs)),
            f"--runs: {', '.join(with_head)} have the model's primary head and "
            f"{', '.join(n for n in names if n not in with_head)} do not; expected all runs with it or all without "
            "(a probe and a model's head are different statistics)")


def analyze_runs(runs: Sequence[Mapping], primary: str, *, names: Sequence[str] | None = None,
                 shared_data: bool = True, config: AnalysisConfig | None = None, progress: bool = False,
                 **settings) -> RunsResult:
    """Analyse M trained networks of one design and combine them.

    Args:
      runs: M mappings with ``embeddings`` ``(N_m, D)``, ``metadata`` (DataFrame) and optionally
        ``primary_head`` and ``task_heads`` -- the arguments of :func:`~wsca_jax.analysis.analyze`.
      primary: the primary column.  names: one label per run (default ``run0`` ...).
      shared_data: the runs reuse (most of) the same training rows, so their p-values are dependent:
        the verdict uses twice the mean p (valid under any dependence) instead of Fisher's method.
      config: the :class:`~wsca_jax.analysis.config.AnalysisConfig` of every run's analysis (its
        ``alpha`` and ``confidence`` are the combination's too).
      settings: deprecated flat settings applied to ``config`` (as :func:`~wsca_jax.analysis.analyze`).
    Returns:
      :class:`RunsResult`.
    """
    config = with_deprecated_keywords(AnalysisConfig, config, settings, "wsca_jax.analyze_runs", _RENAMED)
    alpha, confidence = config.inference.alpha, config.inference.confidence
    names = list(names or [f"run{i}" for i in range(len(runs))])
    check_run_inputs(runs, primary, names)
    results = []
    for n, r in zip(names, runs):
        if progress:
            print(f"analysing {n} ...", flush=True)
        results.append(analyze(r["embeddings"], r["metadata"], primary, r.get("primary_head"),
                               task_heads=r.get("task_heads"), config=config))
    check_runs(results, names)
    combined = {t: combine_task(results, t, shared_data, alpha, confidence) for t in results[0].tasks}
    key = "mean_merged_p" if shared_data else "fisher_p"
    tested = [t for t, c in combined.items() if key in c]
    for t, p in zip(tested, holm(np.array([combined[t][key] for t in tested], float))):
        combined[t]["combined_p"], combined[t]["combined_p_adjusted"] = combined[t][key], float(p)
    for c in combined.values():
        c["verdict"] = _verdict(c, shared_data, alpha)
    settings = {"shared_data": bool(shared_data), "alpha": alpha, "confidence": confidence,
                "combination": "twice the mean p (any dependence)" if shared_data else "Fisher (independent runs)",
                "analyze": results[0].settings, "resolved": {n: r.resolved for n, r in zip(names, results)}}
    return RunsResult(names=names, runs=results, combined=combined, settings=settings)
