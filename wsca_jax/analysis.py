"""Orchestration: embeddings + metadata -> tasks -> probes -> WSC -> statistics -> result.

:func:`analyze` is the Python entry point; the CLI's ``wsca analyze`` is a thin shell over it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import pandas as pd

from . import __version__
from .errors import WscaInputError, require
from .io import atomic_write_text
from .metrics import classification_metrics, fold_ids, fold_weights, predict_proba
from .probes import Basis, ProbeConfig, fit_replicates, make_basis
from .stats import (bca_interval, bootstrap_weights, exchangeable_fraction, holm, jackknife_weights, percentile_interval,
                    permutation_indices, permutation_pvalue, random_cosine_quantile, random_direction_null)
from .tasks import build_tasks, class_mask
from .wsc import choose_components, wsc_jit, wsc_reweighted_basis_jit


@dataclass(frozen=True)
class TaskResult:
    """WSC of the primary head against one metadata task.

    Arrays: ``wsc``, ``ci_low``, ``ci_high``, ``p_value`` are ``(C_primary, C_task)``;
    ``boot`` ``(B, C_primary, C_task)`` and ``null`` ``(P, C_primary, C_task)`` keep the resampling
    distributions (empty when not run); ``random_null`` ``(n_draws,)`` max |cos| of random heads.
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    n_used: int
    probe: dict
    wsc: np.ndarray
    ci_low: np.ndarray | None
    ci_high: np.ndarray | None
    p_value: np.ndarray | None
    summary: dict
    boot: np.ndarray = field(repr=False, default=None)
    null: np.ndarray = field(repr=False, default=None)
    random_null: np.ndarray = field(repr=False, default=None)
    source: str = "probe"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "source": self.source,
            "classes": list(self.classes),
            "n_used": self.n_used,
            "probe": self.probe,
            "wsc": _mat(self.wsc),
            "ci_low": _mat(self.ci_low),
            "ci_high": _mat(self.ci_high),
            "p_value": _mat(self.p_value),
            "summary": self.summary,
        }


@dataclass(frozen=True)
class WscaResult:
    """Everything :func:`analyze` computed. ``to_dict()`` is the ``wsca.json`` schema."""

    n_samples: int
    embedding_dim: int
    settings: dict
    pca: dict
    primary: dict
    tasks: dict[str, TaskResult]
    skipped: dict[str, str]
    null_reference: dict
    diagnostics: dict = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "wsca_version": __version__,
            "n_samples": self.n_samples,
            "embedding_dim": self.embedding_dim,
            "settings": self.settings,
            "pca": self.pca,
            "primary": self.primary,
            "tasks": {k: v.to_dict() for k, v in self.tasks.items()},
            "skipped": self.skipped,
            "null_reference": self.null_reference,
            "diagnostics": self.diagnostics,
        }

    @classmethod
    def from_dict(cls, d: dict, arrays: Mapping[str, np.ndarray] | None = None) -> "WscaResult":
        """Rebuild a result from ``to_dict()`` (a ``wsca.json``) and, optionally, the resampling
        distributions written beside it (``boot/<task>``, ``null/<task>``, ``random/<task>``)."""
        arrays = arrays or {}
        arr = lambda a: None if a is None else np.array(a, float)  # noqa: E731
        tasks = {}
        for name, t in d["tasks"].items():
            tasks[name] = TaskResult(name=name, kind=t["kind"], classes=tuple(t["classes"]), n_used=t["n_used"],
                                     probe=t["probe"], wsc=arr(t["wsc"]), ci_low=arr(t["ci_low"]),
                                     ci_high=arr(t["ci_high"]), p_value=arr(t["p_value"]), summary=t["summary"],
                                     boot=arrays.get(f"boot/{name}"), null=arrays.get(f"null/{name}"),
                                     random_null=arrays.get(f"random/{name}"), source=t.get("source", "probe"))
        return cls(n_samples=d["n_samples"], embedding_dim=d["embedding_dim"], settings=d["settings"], pca=d["pca"],
                   primary=d["primary"], tasks=tasks, skipped=d.get("skipped", {}),
                   null_reference=d.get("null_reference", {}), diagnostics=d.get("diagnostics", {}))

    def distributions(self) -> dict[str, np.ndarray]:
        """The resampling distributions by ``boot/<task>``, ``null/<task>``, ``random/<task>`` (for ``np.savez``)."""
        out = {}
        for name, t in self.tasks.items():
            for key, a in (("boot", t.boot), ("null", t.null), ("random", t.random_null)):
                if a is not None:
                    out[f"{key}/{name}"] = np.asarray(a, np.float32)
        return out

    def to_json(self, path: str | os.PathLike) -> None:
        """Write ``to_dict()`` as JSON atomically (temporary file + rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False))

    def summary_table(self) -> pd.DataFrame:
        """One row per task: probe AUROC, max |WSC| (cell, CI, p) and the random reference."""
        rows = []
        for name, t in self.tasks.items():
            s = t.summary
            rows.append({"task": name, "kind": t.kind, "n_used": t.n_used,
                         "probe_auroc": t.probe.get("auroc"), "max_abs_wsc": s["max_abs_wsc"],
                         "ci_low": (s["ci"] or [None, None])[0], "ci_high": (s["ci"] or [None, None])[1],
                         "p_value": s["p_value"], "p_adjusted": s["p_adjusted"],
                         "random_q95": s["random_direction_q95"], "verdict": s["verdict"]})
        return pd.DataFrame(rows)


def _clean(x):
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else x


def _mat(a):
    if a is None:
        return None
    return [[_clean(v) for v in row] for row in np.asarray(a, float)]


# ---------------------------------------------------------------------------------------------
# Input checks


def check_embeddings(embeddings) -> np.ndarray:
    """Validate ``(N, D)`` finite numbers; returns float64 array."""
    try:
        x = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise WscaInputError(f"embeddings: expected a numeric (N, D) array ({e})") from None
    require(x.ndim == 2, f"embeddings: expected a 2-D (N, D) array, found shape {x.shape}")
    require(x.shape[0] >= 4 and x.shape[1] >= 1, f"embeddings: expected at least 4 rows and 1 column, found {x.shape}")
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise WscaInputError(f"embeddings: row {rows[0]} contains NaN or inf ({len(rows)} such rows); "
                             "expected finite values")
    return x


def check_head(head, d: int, n_classes: int, what: str = "primary head") -> np.ndarray:
    """Validate a model head ``(C, D)`` or ``(D,)``; returns ``(C, D)`` (C = 1 for one logit)."""
    h = np.asarray(head, dtype=np.float64)
    if h.ndim == 1:
        h = h[None]
    require(h.ndim == 2, f"{what}: expected shape (C, D) or (D,), found {np.shape(head)}")
    require(h.shape[1] == d, f"{what}: width {h.shape[1]} does not match the embedding dimension {d}")
    require(h.shape[0] in (1, n_classes),
            f"{what}: {h.shape[0]} rows, expected {n_classes} (one per class) or 1 (one logit)")
    require(np.isfinite(h).all(), f"{what}: contains NaN or inf")
    require(np.abs(h).sum() > 0, f"{what}: all zeros")
    return h


def _verdict(s: dict, probe: dict, has_perm: bool) -> str:
    auroc = probe.get("auroc")
    weak = auroc is not None and auroc < 0.7
    if not has_perm:
        base = "above" if s["max_abs_wsc"] > s["random_direction_q95"] else "within"
        v = f"max |WSC| {s['max_abs_wsc']:.3f} is {base} the random-direction 95% reference; run permutations to test"
    elif s["p_adjusted"] is not None and s["p_adjusted"] < 0.05:
        v = "aligned: the primary head uses this attribute's direction (permutation p_adj < 0.05)"
    else:
        v = "not detected: alignment within the permutation null"
    if weak:
        v += f"; caution: the probe is weak (AUROC {auroc:.2f}), so its direction is unreliable"
    return v


def _caveats(s: dict, probe: dict, source: str, settings: dict) -> list[str]:
    """Plain-language caveats that go with a task's verdict."""
    out = []
    auroc = probe.get("auroc")
    if auroc is not None and auroc < 0.7:
        out.append(f"the attribute is weakly encoded (probe AUROC {auroc:.2f}): its direction is unreliable, and a high "
                   "WSC with a poor probe is not evidence (the paper discounts such values itself)")
    if s.get("ci"):
        out.append("the interval of max |WSC| is biased upward near zero (a maximum of absolute values never "
                   "reaches 0): judge alignment by the permutation p-value, use the interval for spread")
        if source == "head":
            out.append("the heads are the model's own (fixed): the interval resamples the PCA projection only; "
                       "training randomness (seed variation) is not in it")
    if settings.get("permutations", 0) == 0:
        out.append("no permutation test was run: compare with the random-direction reference only with care, "
                   "it is far narrower than the null of a real embedding")
    elif settings.get("permute_within"):
        out.append(f"conditional null: labels were permuted within strata of {settings['permute_within']!r}, "
                   "so p tests alignment beyond what that association explains")
    ex = settings.get("permutation_exchangeable_rows")
    if ex is not None and ex < 0.5:
        out.append(f"only {100 * ex:.0f}% of the rows are in groups a grouped permutation can exchange: "
                   "group-level attributes barely move under the null")
    return out


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


def task_statistics(task, quality: dict, cells: np.ndarray, boot=None, jack=None, null=None,
                    random_null=None, ci_method: str = "bca", confidence: float = 0.95,
                    source: str = "probe") -> TaskResult:
    """Intervals, p-values and the summary of one task's WSC matrix.

    Args:
      task: the :class:`~wsca_jax.tasks.Task`.  quality: its held-out probe metrics.
      cells: ``(Ca, C)`` WSC.  boot: ``(B, Ca, C)``; jack: ``(J, Ca, C)``; null: ``(P, Ca, C)``.
      random_null: ``(n_draws,)`` max |cos| of random heads of the same shape.
    """
    absmax = lambda a: np.nanmax(np.abs(a), axis=(-2, -1))  # noqa: E731
    cell = np.unravel_index(int(np.nanargmax(np.abs(cells))), cells.shape)
    stat = float(np.abs(cells[cell]))
    ci_low = ci_high = pv = s_ci = None
    if boot is not None:
        if ci_method == "bca":
            ci_low, ci_high = bca_interval(cells, boot, jack, confidence)
            lo, hi = bca_interval(stat, absmax(boot), absmax(jack), confidence)
        else:
            ci_low, ci_high = percentile_interval(boot, confidence)
            lo, hi = percentile_interval(absmax(boot), confidence)
        s_ci = [float(lo), float(hi)]
    summary = {"max_abs_wsc": stat, "cell": [int(cell[0]), int(cell[1])], "ci": s_ci,
               "p_value": None, "p_adjusted": None,
               "random_direction_q95": float(np.quantile(random_null, 0.95))}
    if null is not None:
        pv = permutation_pvalue(cells, null)
        summary["p_value"] = float(permutation_pvalue(stat, absmax(null)))
        summary["null_q95"] = float(np.quantile(absmax(null), 0.95))
    return TaskResult(name=task.name, kind=task.kind, classes=task.classes, n_used=task.n_used,
                      probe=quality, wsc=cells, ci_low=ci_low, ci_high=ci_high, p_value=pv,
                      summary=summary, boot=boot, null=null, random_null=random_null, source=source)


# ---------------------------------------------------------------------------------------------


def analyze(
    embeddings,
    metadata: pd.DataFrame | Mapping[str, Sequence],
    primary: str,
    primary_head=None,
    *,
    task_heads: Mapping[str, np.ndarray] | None = None,
    permute_within: str | None = None,
    tasks: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    bins: int = 4,
    binning: str = "quantile",
    group_column: str | None = None,
    bootstrap: int = 0,
    permutations: int = 0,
    pca_variance: float = 0.99,
    pca_min: int = 50,
    heads: str = "centered",
    seed: int = 0,
    probe: ProbeConfig | None = None,
    cv_folds: int = 5,
    confidence: float = 0.95,
    ci_method: str = "bca",
    min_class_count: int = 5,
    progress: bool = False,
) -> WscaResult:
    """Weight Space Correlation analysis of one primary head against every metadata task.

    Args:
      embeddings: ``(N, D)`` training-set embeddings.
      metadata: N rows (same order), one column per attribute, including ``primary``.
      primary: the primary task's column.
      primary_head: the model's own head ``(C, D)`` or ``(D,)``; None = a probe on ``primary``.
      task_heads: ``{task: (C_t, D)}`` jointly trained heads (the multi-task setting). Those tasks
        are compared head to head (the paper's multi-task WSC); their probes still give the probe
        quality, the permutation null (probes on permuted labels) and ``probe_max_abs_wsc``.
        Bootstrap intervals of a fixed head resample the PCA projection only (conditional on the
        trained weights; seed variation is the other half). Needs ``primary_head``.
      permute_within: a column (usually the primary) whose strata the permutations keep: the
        conditional null for confounded designs (tests alignment beyond what the association of the
        attribute with that column explains). None: unconditional permutations.
      tasks, categorical, continuous, bins, binning, min_class_count: task encoding
        (:func:`wsca_jax.tasks.build_tasks`).
      group_column: patient/group id; folds, bootstrap and permutations respect it.
      bootstrap: B replicates (0 = none); probes (and the primary probe) are refitted on each.
      permutations: P label permutations of the metadata tasks (0 = none).
      pca_variance, pca_min: PCA components kept (99% of the variance, at least 50).
      heads: ``"centered"`` (rows centred to sum to zero) or ``"raw"`` (the paper's rows).
      seed: seeds folds, bootstrap, permutations and the random-direction reference.
      probe: solver settings (:class:`wsca_jax.probes.ProbeConfig`).
      cv_folds: folds for the held-out probe quality.
      confidence: interval level; ci_method: ``"bca"`` or ``"percentile"``.
      progress: show a progress bar.

    Returns:
      :class:`WscaResult`.

    Example:
      >>> import numpy as np, pandas as pd, wsca_jax as wsca
      >>> rng = np.random.default_rng(0)
      >>> meta = pd.DataFrame({"label": rng.integers(0, 2, 400), "site": rng.integers(0, 3, 400)})
      >>> z = rng.normal(size=(400, 16)) + np.outer(meta["site"], np.eye(16)[0]) * 2
      >>> res = wsca.analyze(z, meta, primary="label", pca_min=8)
      >>> sorted(res.tasks)
      ['site']
    """
    probe = probe or ProbeConfig()
    require(heads in ("centered", "raw"), f"--heads must be 'centered' or 'raw', found {heads!r}")
    require(ci_method in ("bca", "percentile"), f"ci_method must be 'bca' or 'percentile', found {ci_method!r}")
    require(bootstrap >= 0 and permutations >= 0, "--bootstrap and --permutations must be >= 0")
    require(cv_folds >= 2, f"cv_folds must be at least 2, found {cv_folds}")
    require(isinstance(seed, (int, np.integer)) and seed >= 0, f"--seed must be a non-negative integer, found {seed}")
    require(probe.C > 0, f"probe C must be > 0, found {probe.C}")
    require(probe.solver in ("lbfgs", "ridge"), f"probe solver must be 'lbfgs' or 'ridge', found {probe.solver!r}")
    x = check_embeddings(embeddings)
    meta = metadata if isinstance(metadata, pd.DataFrame) else pd.DataFrame(dict(metadata))
    require(len(meta) == x.shape[0], f"metadata has {len(meta)} rows, embeddings have {x.shape[0]}; "
                                     "expected one metadata row per embedding, in the same order")
    taskset = build_tasks(meta, primary, tasks, categorical, continuous, bins, binning, group_column,
                          min_class_count=min_class_count)
    require(len(taskset.tasks) > 0, "no usable metadata task: " + (
        "; ".join(f"{k}: {v}" for k, v in taskset.skipped.items()) or "the table has no other column"))
    groups = None
    if group_column is not None:
        gcol = meta[group_column]
        if gcol.isna().any():
            row = int(np.flatnonzero(gcol.isna().to_numpy())[0])
            raise WscaInputError(f"--group-column {group_column!r}: row {row} is missing; expected a group id on every row")
        groups = pd.factorize(gcol)[0]
        require(groups.max() + 1 >= 2, f"--group-column {group_column!r}: found one group; expected at least 2 "
                                       "(folds, bootstrap and permutations resample groups)")
    n, d = x.shape
    centered = heads == "centered"
    rng = np.random.default_rng(seed)

    head = None
    if primary_head is not None:
        head = check_head(primary_head, d, taskset.primary.n_classes)
    task_heads = dict(task_heads or {})
    by_name = {t.name: t for t in taskset.tasks}
    for name, h in task_heads.items():
        require(name in by_name, f"task head {name!r}: no such analysed task (tasks: {', '.join(by_name) or 'none'})")
        require(head is not None, f"task head {name!r}: comparing fixed task heads needs the model's primary head too")
        task_heads[name] = check_head(h, d, by_name[name].n_classes, what=f"head of task {name!r}")
    strata = None
    if permute_within is not None:
        if permute_within == primary:
            strata = taskset.primary.labels
        else:
            require(permute_within in meta.columns, f"--permute-within {permute_within!r}: no such column")
            strata = pd.factorize(meta[permute_within])[0]

    basis = make_basis(x)
    proj = choose_components(basis.variances, pca_variance, pca_min)
    k = proj.k

    # probe set: metadata tasks, plus the primary column when no head is given
    probe_tasks = list(taskset.tasks) + ([] if head is not None else [taskset.primary])
    labels = np.stack([t.labels for t in probe_tasks]).astype(np.int32)
    cmask = class_mask(probe_tasks)
    T = len(taskset.tasks)

    n_folds = cv_folds
    folds = fold_ids(n, n_folds, groups, seed)
    jack = None
    if bootstrap > 0 and ci_method == "bca":
        jack = jackknife_weights(n, groups, rng=np.random.default_rng(seed + 1))
    total = 1 + (folds.max() + 1) + bootstrap + (0 if jack is None else len(jack)) + permutations
    bar = _progress(total, progress)

    point = fit_replicates(basis, labels, np.ones((1, n), np.float32), cmask, probe, progress=bar.update)
    init = (point.coef[0], point.intercept[0])
    fits = []

    if head is not None:
        p_rows = (head @ basis.rotation).astype(np.float32)               # (Ca, D) rotated basis
        primary_source = "head"
    else:
        p_rows = point.coef[0, T, : taskset.primary.n_classes]
        primary_source = "probe"
    p_mask = np.ones(p_rows.shape[0], bool)
    Ca = p_rows.shape[0]
    tmask = cmask[:T]

    def wsc_of(fit, refit_primary: bool = True) -> np.ndarray:
        """(R, T, Ca, K) WSC for replicate fits (primary rows from the fit when probed)."""
        fits.append(fit)
        task_rows = fit.coef[:, :T]
        if head is None and refit_primary:
            prim = fit.coef[:, T, :Ca]
        else:
            prim = np.broadcast_to(p_rows, (fit.coef.shape[0],) + p_rows.shape)
        return np.array(wsc_jit(prim, p_mask, task_rows, tmask, k=k, centered=centered))

    wsc_hat = wsc_of(point)[0]                                            # (T, Ca, K)
    # fixed task heads (multi-task): head-to-head cosines replace the probe's for those tasks
    fixed = [i for i, t in enumerate(taskset.tasks) if t.name in task_heads]
    probe_hat = wsc_hat.copy()
    if fixed:
        K = cmask.shape[1]
        f_rows = np.zeros((len(fixed), K, d), np.float32)
        f_mask = np.zeros((len(fixed), K), bool)
        for j, i in enumerate(fixed):
            h = task_heads[taskset.tasks[i].name] @ basis.rotation
            f_rows[j, : h.shape[0]] = h
            f_mask[j, : h.shape[0]] = True
        wsc_hat[fixed] = np.asarray(wsc_jit(p_rows, p_mask, f_rows, f_mask, k=k, centered=centered))

        def fixed_resampled(weights) -> np.ndarray:
            return np.asarray(wsc_reweighted_basis_jit(basis.x, jnp.asarray(weights, jnp.float32), p_rows, p_mask,
                                                       f_rows, f_mask, k=k, centered=centered))

    # held-out quality from cross-validated predictions
    cv = fit_replicates(basis, labels, fold_weights(folds), cmask, probe, init=init, progress=bar.update)
    fits.append(cv)
    quality = heldout_quality(basis, probe_tasks, folds, cv, cmask)

    boot = jk = None
    if bootstrap > 0:
        bw = bootstrap_weights(rng, n, bootstrap, groups)
        boot = wsc_of(fit_replicates(basis, labels, bw, cmask, probe, init=init, progress=bar.update))
        if fixed:
            boot[:, fixed] = fixed_resampled(bw)
        if jack is not None:
            jk = wsc_of(fit_replicates(basis, labels, jack, cmask, probe, init=init, progress=bar.update))
            if fixed:
                jk[:, fixed] = fixed_resampled(jack)
    null = None
    if permutations > 0:
        perms = permutation_indices(rng, n, permutations, groups, strata)
        plab = np.broadcast_to(labels, (permutations,) + labels.shape).copy()   # (P, T', N)
        plab[:, :T] = labels[:T][:, perms].transpose(1, 0, 2)              # the primary row stays
        pfit = fit_replicates(basis, plab, np.ones((permutations, n), np.float32), cmask, probe,
                              labels_batched=True, progress=bar.update)
        null = wsc_of(pfit, refit_primary=False)
    bar.close()

    # statistics per task
    results: dict[str, TaskResult] = {}
    rnd_rng = np.random.default_rng(seed + 2)
    for i, t in enumerate(taskset.tasks):
        C = t.n_classes
        results[t.name] = task_statistics(
            t, quality[i], wsc_hat[i, :, :C],
            boot=None if boot is None else boot[:, i, :, :C],
            jack=None if jk is None else jk[:, i, :, :C],
            null=None if null is None else null[:, i, :, :C],
            random_null=random_direction_null(rnd_rng, k, Ca, C, centered),
            ci_method=ci_method, confidence=confidence, source="head" if i in fixed else "probe")
        if i in fixed:
            results[t.name].summary["probe_max_abs_wsc"] = float(np.nanmax(np.abs(probe_hat[i, :, :C])))
    if null is not None:
        adj = holm(np.array([r.summary["p_value"] for r in results.values()], float))
        for (name, r), a in zip(results.items(), adj):
            r.summary["p_adjusted"] = float(a)
    settings = {
        "bootstrap": int(bootstrap), "permutations": int(permutations), "seed": int(seed),
        "pca_variance": float(pca_variance), "pca_min": int(pca_min), "heads": heads,
        "binning": binning, "bins": int(bins), "group_column": group_column,
        "probe": probe.to_dict(), "cv_folds": int(folds.max() + 1), "confidence": float(confidence),
        "ci_method": ci_method if bootstrap > 0 else None,
        "jackknife_blocks": None if jack is None else int(len(jack)),
        "permutation_scheme": None if permutations == 0 else (
            ("groups exchanged among groups of equal size, rows shuffled within groups" if groups is not None else "rows")
            + ("" if permute_within is None else f", within strata of {permute_within!r} (conditional null)")),
        "permute_within": permute_within,
        "task_heads": sorted(task_heads),
        "pca_fitted_on": "all rows given (fixed across bootstrap replicates)",
        "permutation_exchangeable_rows": None if (permutations == 0 or groups is None) else exchangeable_fraction(groups),
    }
    for name, r in results.items():
        r.summary["verdict"] = _verdict(r.summary, r.probe, null is not None)
        r.summary["caveats"] = _caveats(r.summary, r.probe, r.source, settings)
    prim_info = {"name": primary, "classes": list(taskset.primary.classes), "source": primary_source,
                 "probe": quality[T] if head is None else None, "head_rows": int(Ca),
                 "centered": bool(centered and Ca > 1)}
    null_ref = {"random_direction": {"k": int(k), "cell_sd": float(1 / math.sqrt(k)),
                                     "cell_abs_q95": random_cosine_quantile(k, 0.95),
                                     "note": "cosines between random directions in the projected space; "
                                             "per-task max |cos| quantiles are in each task's summary"}}
    diagnostics = {"point_iterations": int(point.iterations[0]),
                   "replicate_iterations_max": int(max([int(f.iterations.max()) for f in fits] or [0])),
                   "replicate_grad_max": float(max([float(f.grad_max.max()) for f in fits] or [0.0])),
                   "fits_above_tol": int(sum(int((f.grad_max > probe.tol).sum()) for f in fits)),
                   "fits_total": int(sum(int(f.grad_max.size) for f in fits)),
                   "tol": float(probe.tol),
                   "point_grad_max": [float(g) for g in point.grad_max[0]],
                   "point_objective": [float(o) for o in point.objective[0]],
                   "probe_tasks": [t.name for t in probe_tasks]}
    return WscaResult(n_samples=n, embedding_dim=d, settings=settings,
                      pca={"components": int(k), "explained_variance": float(proj.explained_variance)},
                      primary=prim_info, tasks=results, skipped=dict(taskset.skipped),
                      null_reference=null_ref, diagnostics=diagnostics)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="probe fits (replicates)", unit="rep")
