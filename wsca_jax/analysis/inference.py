"""Statistics of one task from its stage outputs: held-out probe quality, intervals (raw, BCa,
corrected), p-values, power and equivalence (:func:`task_statistics`)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..metrics import classification_metrics, predict_proba
from ..probes import Basis
from ..stats import (basic_interval, guarded_bca_interval, near_threshold, percentile_interval, permutation_pvalue,
                     pvalue_mcse, recentred_replicates)
from ..io import finite_or_none
from .result import TaskResult


def heldout_quality(basis: Basis, tasks, folds: np.ndarray, cv_fit, class_mask: np.ndarray) -> list[dict]:
    """Metrics of each task's probe on cross-validated (held-out) predictions.

    Args:
      basis: rotated embeddings.  tasks: the ``T`` probed tasks.  folds: ``(N,)`` fold per row.
      cv_fit: :class:`~wsca_jax.probes.ProbeFit` with one replicate per fold (``(F, T, K, D)``).
      class_mask: ``(T, K)``.
    """
    xr = np.asarray(basis.x)
    out = []
    for i, t in enumerate(tasks):
        proba = np.zeros((xr.shape[0], class_mask.shape[1]))
        for f in range(folds.max() + 1):
            rows = folds == f
            proba[rows] = predict_proba(xr[rows], cv_fit.coef[f, i], cv_fit.intercept[f, i], class_mask[i])
        used = t.labels >= 0
        out.append(classification_metrics(t.labels[used], proba[used, : t.n_classes]))
    return out


def _raw_intervals(cells, stat, boot, jack, confidence: float) -> tuple:
    """Raw-statistic intervals: for cells ``(lo, hi, method)`` (guarded BCa when a jackknife is
    given, else percentile) and for max |WSC| every method ``{name: [lo, hi]}`` with BCa's guard."""
    absmax = lambda a: np.nanmax(np.abs(a), axis=(-2, -1))  # noqa: E731
    bmax = absmax(boot)
    lo, hi = percentile_interval(bmax, confidence)
    out = {"percentile": [float(lo), float(hi)]}
    lo, hi = basic_interval(stat, bmax, confidence)
    out["basic"] = [float(np.clip(lo, 0.0, 1.0)), float(np.clip(hi, 0.0, 1.0))]
    info = {"ci_z0": None, "bca_fallback": None, "cells_percentile_fallback": 0}
    if jack is None:
        lo_c, hi_c = percentile_interval(boot, confidence)
        return lo_c, hi_c, "percentile", out, info
    lo_c, hi_c, why_c, _ = guarded_bca_interval(cells, boot, jack, confidence)
    lo, hi, why, z0 = guarded_bca_interval(stat, bmax, absmax(jack), confidence)
    out["bca"] = [float(lo), float(hi)]
    info.update(ci_z0=finite_or_none(z0), bca_fallback=str(why) or None, cells_percentile_fallback=int(np.sum(why_c != "")))
    return lo_c, hi_c, "bca", out, info


def _intervals(cells, stat, boot, jack, ci_method: str, confidence: float, corr=None) -> tuple:
    """Every interval of one task, and the default one.

    Args:
      cells: ``(Ca, C)`` raw WSC; stat: raw max |WSC|.  boot ``(B, Ca, C)``, jack ``(J, Ca, C)`` or None.
      corr: ``(corrected cells (Ca, C), scale (Ca, C))`` from :func:`~wsca_jax.wsc.disattenuate`, or None.
    Returns:
      ``(lo, hi, cell_intervals, info)``: the default cell interval ``(Ca, C)`` each, all cell intervals
      by kind, and the summary entries (``ci``, ``ci_method``, ``ci_fallback``, ``ci_raw``,
      ``max_abs_wsc_corrected``, ``ci_corrected``, ``intervals`` of max |WSC| by method ...).
    """
    lo_r, hi_r, raw_m, by_method, extra = _raw_intervals(cells, stat, boot, jack, confidence)
    kinds = {"raw": {"method": raw_m, "low": lo_r, "high": hi_r}}
    info = {"ci_raw": by_method.get(raw_m), "ci_raw_method": raw_m, "max_abs_wsc_corrected": None,
            "ci_corrected": None, **extra}
    # the corrected max is over every cell or none: a cell without a reliable direction is unknown,
    # and a max (or an equivalence bound) over the others would describe a subset
    if corr is not None and np.isfinite(corr[0]).all():
        cb = np.clip(recentred_replicates(corr[0], boot, corr[1]), -1, 1)           # (B, Ca, C)
        lo_k, hi_k = percentile_interval(cb, confidence)
        kinds["corrected"] = {"method": "percentile of recentred replicates", "low": lo_k, "high": hi_k}
        cmax = np.nanmax(np.abs(cb), axis=(-2, -1))
        info["_cmax"] = cmax
        lo, hi = percentile_interval(cmax, confidence)
        by_method["corrected"] = [float(lo), float(hi)]
        info.update(max_abs_wsc_corrected=float(np.nanmax(np.abs(corr[0]))), ci_corrected=by_method["corrected"])
    method, why = ci_method, None
    if method == "corrected" and "corrected" not in by_method:
        method, why = "basic", ("fixed_heads" if corr is None else "no_reliable_direction")
    elif method == "bca" and "bca" not in by_method:
        method = "percentile"
    if method == "bca" and extra["bca_fallback"]:
        method, why = "percentile", extra["bca_fallback"]
    info.update(ci=by_method[method], ci_method=method, ci_fallback=why, intervals=by_method)
    cell_kind = "corrected" if method == "corrected" else "raw"
    if method in ("percentile", "basic") and ci_method != "bca":   # the cells follow (BCa cells keep their guard)
        lo_c, hi_c = (basic_interval(cells, boot, confidence) if method == "basic"
                      else percentile_interval(boot, confidence))
        kinds["raw"] = {"method": method, "low": lo_c, "high": hi_c}
    return kinds[cell_kind]["low"], kinds[cell_kind]["high"], kinds, info


def sensitivity(stat: float, boot, null_stat, cmax, scale, alpha: float, margin: float, n_tests: int = 1) -> dict:
    """What the test can and cannot say: effect size, power, the minimum detectable WSC, equivalence.

    Args:
      stat: observed max |WSC|.  boot: ``(B, Ca, C)`` raw replicates or None.  null_stat: ``(P,)``
      max |WSC| under the null (permutations or null networks) or None.  cmax: ``(B,)`` corrected max
      replicates or None.  scale: the attenuation factor of the largest cell (corrected / raw).
      margin: the population max |WSC| below which alignment counts as negligible.
      n_tests: tasks tested together: power is computed at the strictest Holm step ``alpha / n_tests``.
    Returns:
      ``excess_sd``: (stat - mean null) / SD null, comparable across k and head shapes;
      ``mde_raw`` / ``mde``: the max |WSC| (raw, and in population units) that the test detects with
      80% power at ``alpha / n_tests`` (null (1 - alpha / n_tests) point + 0.84 bootstrap SD; the raw
      value times the attenuation factor, None without one); ``power_at_margin``: chance of detecting a population value equal to
      ``margin`` (normal approximation); ``equivalence``: TOST-style bound -- ``p`` is the share of
      corrected replicates at or above the margin, ``upper`` the (1 - 2 alpha) upper bound; ``below_margin``
      when ``p < alpha`` (alignment is concluded to be smaller than the margin).
    """
    from scipy.stats import norm
    out = {"excess_sd": None, "mde_raw": None, "mde": None, "power_at_margin": None,
           "equivalence": None, "equivalence_margin": float(margin)}
    bmax = None if boot is None else np.nanmax(np.abs(boot), axis=(-2, -1))
    if null_stat is not None and len(null_stat) > 2 and np.std(null_stat) > 0:
        out["excess_sd"] = float((stat - np.mean(null_stat)) / np.std(null_stat, ddof=1))
        if bmax is not None and len(bmax) > 2:
            crit = float(np.quantile(null_stat, 1 - alpha / max(1, n_tests)))
            sd = float(np.std(bmax, ddof=1))
            out["mde_raw"] = min(1.0, crit + norm.ppf(0.8) * sd)
            if scale is not None:
                out["mde"] = min(1.0, out["mde_raw"] * scale)
                out["power_at_margin"] = float(norm.cdf((margin / scale - crit) / max(sd, 1e-12)))
    if cmax is not None and len(cmax) > 1:
        B = len(cmax)
        p = float((1 + np.sum(cmax >= margin)) / (B + 1))
        out["equivalence"] = {"p": p, "upper": float(np.quantile(cmax, 1 - alpha)), "below_margin": bool(p < alpha),
                              "replicates": int(B)}
    return out


class TaskDraws(NamedTuple):
    """The resampling distributions of one task (each None when that stage did not run).

    Attributes:
      boot: ``(B, Ca, C)`` bootstrap WSC.  jack: ``(J, Ca, C)`` jackknife WSC (BCa's acceleration).
      null: ``(P, Ca, C)`` probes of permuted labels against the primary head.
      random_null: ``(n_draws,)`` max |cos| of random heads of the same shape.
      head_null: ``(M,)`` max |WSC| of the heads of M networks trained with permuted attribute labels
        (:func:`~wsca_jax.analysis.fixed_head_wsc` on each): the null of the fixed-head statistic.
      corr: ``(cells (Ca, C), scale (Ca, C))`` attenuation-corrected WSC (:func:`~wsca_jax.wsc.disattenuate`).
    """

    boot: np.ndarray | None = None
    jack: np.ndarray | None = None
    null: np.ndarray | None = None
    random_null: np.ndarray | None = None
    head_null: np.ndarray | None = None
    corr: tuple | None = None


def _permutation_test(summary: dict, cells, stat: float, null, source: str, alpha: float, n_tests: int):
    """Permutation p-values into ``summary`` (probe tasks) or the probe null's band (fixed heads);
    returns the cell p-values ``(Ca, C)`` or None."""
    null_max = np.nanmax(np.abs(null), axis=(-2, -1))
    P = null.shape[0]
    p = float(permutation_pvalue(stat, null_max))
    q95 = float(np.quantile(null_max, 0.95))
    summary["n_permutations"] = int(P)
    if source != "probe":
        # the probe null is the null of the *probe's* statistic (summary.probe_max_abs_wsc), not of the
        # fixed heads': it is kept beside the probe value only
        summary["probe_null_q95"] = q95
        return None
    summary["null_q95"] = q95
    summary.update(test="permutation", p_value=p, p_value_mcse=float(pvalue_mcse(p, P)),
                   p_near_alpha=bool(near_threshold(p, P, [alpha / j for j in range(1, max(1, n_tests) + 1)])))
    return permutation_pvalue(cells, null)


def _seed_null_test(summary: dict, stat: float, head_null) -> None:
    """The fixed heads' test against networks trained with permuted attribute labels, into ``summary``."""
    hn = np.asarray(head_null, float)
    p = float(permutation_pvalue(stat, hn))
    M, q95 = len(hn), float(np.quantile(hn, 0.95))
    summary.update(test="seed_null", p_value=p, p_value_mcse=float(np.sqrt(p * (1 - p) / M)),
                   head_null_n=int(M), head_null_q95=q95, null_q95=q95)


def task_statistics(task, quality: dict, cells: np.ndarray, draws: TaskDraws, inference,
                    source: str = "probe", n_tests: int = 1) -> TaskResult:
    """Intervals, p-values (or the reference band of fixed heads) and the summary of one task.

    Args:
      task: the :class:`~wsca_jax.tasks.Task`.  quality: its held-out probe metrics.
      cells: ``(Ca, C)`` WSC.  draws: its :class:`TaskDraws`.
      inference: the :class:`~wsca_jax.analysis.config.InferenceConfig` (level, interval method and
        level, equivalence margin). ``ci_method`` is the default interval (``summary.ci``,
        ``ci_low``/``ci_high``): ``"corrected"`` (percentile interval of the raw replicates recentred on
        the corrected estimate; basic where there is none), ``"basic"``, ``"bca"`` (guarded) or
        ``"percentile"`` (of the raw statistic).
      source: ``"probe"`` (cells from a probe: ``null`` is the null of the same statistic, p-values)
        or ``"head"`` (a jointly trained head: the probe ``null`` is of another statistic and gives no
        p-value; ``head_null`` does, the ``"seed_null"`` test).
      n_tests: number of tasks tested together: ``p_near_alpha`` flags a p within 3 Monte Carlo SE of
        any Holm step ``alpha / j`` (j = 1 .. n_tests), the thresholds that can decide it.
    """
    boot, jack, null, corr, alpha = draws.boot, draws.jack, draws.null, draws.corr, inference.alpha
    cell = np.unravel_index(int(np.nanargmax(np.abs(cells))), cells.shape)
    stat = float(np.abs(cells[cell]))
    ci_low = ci_high = pv = cell_iv = None
    summary = {"max_abs_wsc": stat, "cell": [int(cell[0]), int(cell[1])], "ci": None,
               "p_value": None, "p_value_mcse": None, "p_adjusted": None,
               "test": None, "null_q95": None, "random_direction_q95": float(np.quantile(draws.random_null, 0.95))}
    if boot is not None:
        ci_low, ci_high, cell_iv, info = _intervals(cells, stat, boot, jack, inference.ci_method,
                                                    inference.confidence, corr)
        summary.update(info)
    if null is not None:
        pv = _permutation_test(summary, cells, stat, null, source, alpha, n_tests)
    if source == "head" and draws.head_null is not None:
        _seed_null_test(summary, stat, draws.head_null)
    cmax = summary.pop("_cmax", None)
    null_stat = None if summary["test"] is None else (
        np.asarray(draws.head_null, float) if summary["test"] == "seed_null" else np.nanmax(np.abs(null), axis=(-2, -1)))
    scale = None if (corr is None or cmax is None or not np.isfinite(corr[1][cell])) else float(corr[1][cell])
    summary.update(sensitivity(stat, boot, null_stat, cmax, scale, alpha, inference.equivalence_margin, n_tests))
    return TaskResult(name=task.name, kind=task.kind, classes=task.classes, n_used=task.n_used,
                      probe=quality, wsc=cells, ci_low=ci_low, ci_high=ci_high, p_value=pv,
                      summary=summary, boot=boot, null=null, random_null=draws.random_null, source=source,
                      wsc_corrected=None if corr is None else corr[0], cell_intervals=cell_iv)
