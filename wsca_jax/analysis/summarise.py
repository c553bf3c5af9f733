"""The ``summarise`` stage: every task's intervals, p-values (Holm-adjusted across tasks), reference
bands, verdict and caveats, the run's resolved design and diagnostics -> :class:`WscaResult`."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..io import json_ready
from ..stats import exchangeable_fraction, holm, random_cosine_quantile, random_direction_null
from .inference import TaskDraws, task_statistics
from .result import TaskResult, WscaResult
from .stages import Stages
from .verdicts import caveats, convergence_warnings, decision_use_verdict, verdict


def summarise(st: Stages, config, primary: str, head_null: dict, shape: tuple) -> WscaResult:
    """:class:`WscaResult` of the stages' outputs (``shape``: the embeddings' ``(N, D)``)."""
    prep = st.prepared
    results = _task_results(st, config, head_null)
    resolved = resolved_design(st, config, head_null)
    stage_fits = st.fits()
    fits = {t.name: fit_summary(stage_fits, i, prep.probe.max_iter, prep.T if prep.p_rows is None else None)
            for i, t in enumerate(prep.probe_tasks)}
    warn_lines = convergence_warnings(fits, stage_fits)
    inf = config.inference
    for name, r in results.items():
        r.fit.update(fits[name])
        r.summary["statistics"] = statistics_block(r.summary, (st.decision_use or {}).get(name, {}))
        r.summary["verdict"] = verdict(r.summary, r.probe, st.null is not None, r.source, inf.alpha)
        r.summary["caveats"] = caveats(r.summary, r.probe, r.source, r.fit, alpha=inf.alpha,
                                       permutations=resolved["permutations"],
                                       permute_within=config.resampling.permute_within,
                                       exchangeable=resolved["permutation_exchangeable_rows"])
    primary_task = prep.taskset.primary
    pfit = fits.get(primary_task.name) if prep.p_rows is None else None
    if pfit is not None and not pfit["converged"]:
        for r in results.values():            # every WSC uses the primary probe's direction
            r.summary["caveats"].insert(0, f"the primary probe ({primary_task.name!r}) did not converge (max |gradient| "
                                           f"{pfit['grad_max']:.1e}): every WSC against it is not to be trusted")
    Ca = st.point.compare.rows.shape[0]
    prim_info = {"name": primary, "classes": list(primary_task.classes),
                 "source": "head" if prep.p_rows is not None else "probe",
                 "probe": st.quality.metrics[prep.T] if prep.p_rows is None else None, "head_rows": int(Ca),
                 "centered": bool(config.projection.heads == "centered" and Ca > 1),
                 "fit": fits[primary_task.name] if prep.p_rows is None else None}
    decision_use_block(results, inf)
    for line in warn_lines:
        warnings.warn(line, UserWarning, stacklevel=3)
    return WscaResult(n_samples=shape[0], embedding_dim=shape[1], settings=config.to_dict(), resolved=resolved,
                      pca={"components": int(prep.k), "explained_variance": prep.explained},
                      primary=prim_info, tasks=results, skipped=dict(prep.taskset.skipped),
                      null_reference=_null_reference(prep.k), diagnostics=_diagnostics(st), warnings=warn_lines,
                      k_sensitivity=st.k_sensitivity, heads=heads_in_embedding_coords(st))


def statistics_block(summary: dict, use: dict) -> dict:
    """``summary.statistics``: the paper's WSC (``wsc``: its estimate, interval and p-value as in the
    summary) beside the decision-use statistics of :mod:`~wsca_jax.analysis.use_stage`, each
    ``{"estimate", "ci", "p_value", "p_mcse", ...}`` with non-finite values as None."""
    wsc = {"estimate": summary.get("max_abs_wsc"), "ci": summary.get("ci"), "p_value": summary.get("p_value"),
           "p_mcse": summary.get("p_value_mcse")}
    return json_ready({"wsc": wsc, **use})


def decision_use_block(results: dict, inf) -> None:
    """``summary.decision_use`` of every task (:func:`decision_use_verdict`): by the counterfactual
    response where the user gave one, else by ``inference.use_statistic``, whose p-values are
    Holm-adjusted across the tasks that have one."""
    name = {t: "counterfactual" if "counterfactual" in r.summary["statistics"] else inf.use_statistic
            for t, r in results.items()}
    ps = {t: (r.summary["statistics"].get(name[t]) or {}).get("p_value") for t, r in results.items()}
    tested = [t for t, p in ps.items() if p is not None]
    adj = dict(zip(tested, holm(np.asarray([ps[t] for t in tested], float))))
    for t, r in results.items():
        if r.summary["statistics"].keys() - {"wsc"}:
            r.summary["decision_use"] = decision_use_verdict(
                r.summary["statistics"], name[t], inf.use_margin, inf.alpha,
                None if t not in adj else float(adj[t]), inf.confidence)


def _task_results(st: Stages, config, head_null: dict) -> dict[str, TaskResult]:
    """:func:`task_statistics` of every task, p-values Holm-adjusted across the tested tasks."""
    prep, rs = st.prepared, st.resampled
    T, Ca = prep.T, st.point.compare.rows.shape[0]
    n_tests = sum(1 for i in range(T) if i not in prep.fixed) + len(head_null)   # every task with a p
    results: dict[str, TaskResult] = {}
    rnd_rng = np.random.default_rng(config.resampling.seed + 2)
    corr, null = rs.corr, None if st.null is None else st.null.wsc
    for i, t in enumerate(prep.taskset.tasks):
        C = t.n_classes
        sl = lambda a: None if a is None else a[:, i, :, :C]  # noqa: E731
        fixed = i in prep.fixed
        draws = TaskDraws(boot=sl(rs.boot), jack=sl(rs.jack), null=sl(null),
                          random_null=random_direction_null(rnd_rng, prep.k, Ca, C, st.point.compare.centered,
                                                             config.inference.random_draws),
                          head_null=head_null.get(t.name),
                          corr=None if (corr is None or fixed) else (corr.cells[i, :, :C], corr.scale[i, :, :C]))
        r = task_statistics(t, st.quality.metrics[i], st.point.wsc[i, :, :C], draws, config.inference,
                            source="head" if fixed else "probe", n_tests=n_tests)
        if corr is not None and not fixed:
            r.summary["reliability"] = {"primary": [float(v) for v in corr.rel_primary],
                                        "probe": [float(v) for v in corr.rel_tasks[i, :C]]}
        if fixed:
            r.summary["probe_max_abs_wsc"] = float(np.nanmax(np.abs(st.point.probe_wsc[i, :, :C])))
        results[t.name] = r
    tested = [name for name, r in results.items() if r.summary["p_value"] is not None]
    if tested:
        adj = holm(np.array([results[nm].summary["p_value"] for nm in tested], float))
        for nm, a in zip(tested, adj):
            results[nm].summary["p_adjusted"] = float(a)
    return results


def fit_summary(fits: dict, i: int, max_iter: int, primary_index: int | None = None) -> dict:
    """Convergence of task ``i``'s probe: the full-data fit (``gap``: its estimated relative
    optimality gap, the criterion of ``converged``; ``at_cap``: L-BFGS stopped at ``max_iter``)
    and the count of replicate fits (per stage) that did not converge."""
    point = fits["point"]
    gap = float(point.gap[0, i])
    out = {"converged": bool(point.converged[0, i]), "grad_max": float(point.grad_max[0, i]),
           "grad_floor": float(point.grad_floor[0, i]), "gap": gap if np.isfinite(gap) else None,
           "objective": float(point.objective[0, i]),
           "iterations": int(point.iterations[0, i]), "at_cap": bool(int(point.iterations[0, i]) >= max_iter)}
    # the primary probe's permutation refits are not used (the null keeps the observed primary)
    unused = {"permutation"} if i == primary_index else set()
    out["replicates_not_converged"] = {name: int((~np.asarray(f.converged[:, i])).sum())
                                       for name, f in fits.items() if name != "point" and name not in unused}
    return out


def resolved_design(st: Stages, config, head_null: dict) -> dict:
    """What the run resolved from its config and data (``wsca.json``'s ``resolved``): the permutations
    run, the solver's memory budget and chunk, folds, jackknife blocks, the permutation scheme and
    what the fixed heads were tested against."""
    prep, res = st.prepared, config.resampling
    groups, permute_within, B = prep.groups, res.permute_within, res.bootstrap
    P = 0 if st.null is None else int(len(st.null.wsc))
    return {
        "permutations": P, "probe": prep.probe.to_dict(), "cv_folds": int(prep.folds.max() + 1), "cv_start": "cold",
        "ci_method": config.inference.ci_method if B > 0 else None,
        "jackknife_blocks": None if prep.jack is None else int(len(prep.jack)),
        "correction_noise": config.inference.correction_noise if B > 0 else None,
        "permutation_scheme": None if P == 0 else (
            ("groups exchanged among groups of equal size, rows shuffled within groups" if groups is not None else "rows")
            + " (each task among its labelled rows)"
            + ("" if permute_within is None else f", within strata of {permute_within!r} (conditional null)")),
        "task_heads": sorted(prep.taskset.tasks[i].name for i in prep.fixed),
        "fixed_head_inference": None if not prep.fixed else (
            "seed null: p over networks trained with permuted attribute labels, for tasks given in head_null; "
            "untested otherwise (the probe permutation null is of another statistic)"),
        "head_null_tasks": sorted(head_null),
        "pca_fitted_on": "all rows given (fixed across bootstrap replicates of probe tasks"
                         + ("; refitted per replicate for the fixed heads, whose interval resamples the projection only)"
                            if prep.fixed else ")"),
        "head_null_settings": None if not head_null else {
            "heads": config.projection.heads, "pca_variance": config.projection.pca_variance,
            "pca_min": config.projection.pca_min,
            "note": "head_null values must be max |WSC| computed with these settings (fixed_head_wsc)"},
        "permutation_exchangeable_rows": None if (P == 0 or groups is None) else exchangeable_fraction(groups),
    }


def _null_reference(k: int) -> dict:
    return {"random_direction": {"k": int(k), "cell_sd": float(1 / math.sqrt(k)),
                                 "cell_abs_q95": random_cosine_quantile(k, 0.95),
                                 "note": "cosines between random directions in the projected space; "
                                         "per-task max |cos| quantiles are in each task's summary"}}


def _diagnostics(st: Stages) -> dict:
    fits, tol = st.fits(), st.prepared.probe.tol
    all_fits = list(fits.values())
    return {"point_iterations": int(fits["point"].iterations[0].max()),
            "replicate_iterations_max": int(max(int(f.iterations.max()) for f in all_fits)),
            "replicate_grad_max": float(max(float(f.grad_max.max()) for f in all_fits)),
            "fits_not_converged": int(sum(int((~np.asarray(f.converged)).sum()) for f in all_fits)),
            "fits_above_tol": int(sum(int((f.grad_max > tol).sum()) for f in all_fits)),
            "fits_total": int(sum(int(f.grad_max.size) for f in all_fits)),
            "tol": float(tol),
            "point_grad_max": [float(g) for g in fits["point"].grad_max[0]],
            "point_objective": [float(o) for o in fits["point"].objective[0]],
            "probe_tasks": [t.name for t in st.prepared.probe_tasks]}


def heads_in_embedding_coords(st: Stages) -> dict:
    """The compared directions in the embedding's coordinates: ``primary`` ``(Ca, D)``, ``axes``
    ``(D, k)`` the projection, ``tasks`` ``{name: (C, D)}`` (probe rows, or the jointly trained head)."""
    prep, point = st.prepared, st.point.fit
    rot = prep.basis.rotation
    out = {"primary": np.asarray(st.point.compare.rows, float) @ rot.T, "axes": rot[:, :prep.k],
           "tasks": {t.name: np.asarray(point.coef[0, i, :t.n_classes], float) @ rot.T
                     for i, t in enumerate(prep.taskset.tasks)}}
    for j, i in enumerate(prep.fixed):
        t = prep.taskset.tasks[i]
        out["tasks"][t.name] = np.asarray(prep.f_rows[j, :t.n_classes], float) @ rot.T
    return out
