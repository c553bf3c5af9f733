"""Orchestration: embeddings + metadata -> tasks -> probes -> WSC -> statistics -> result.

:func:`analyze` is the Python entry point; the CLI's ``wsca analyze`` is a thin shell over it.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .. import __version__
from ..errors import WscaInputError, require
from ..io import atomic_write_text
from ..metrics import classification_metrics, fold_ids, fold_weights, predict_proba
from .. import sharding
from ..probes import ROW_BLOCK, Basis, ProbeConfig, fit_replicates, make_basis, resolve_memory
from ..progress import progress_bar
from ..stats import (basic_interval, bootstrap_weights, exchangeable_fraction, guarded_bca_interval, holm, jackknife_weights,
                    near_threshold, percentile_interval, permutation_indices, permutation_pvalue, pvalue_mcse,
                    random_cosine_quantile, random_direction_null, recentred_replicates)
from ..tasks import build_tasks, class_mask
from ..wsc import choose_components, disattenuate, prepare_head_jit, wsc_by_k_jit, wsc_jit, wsc_reweighted_basis_jit


@dataclass(frozen=True)
class TaskResult:
    """WSC of the primary head against one metadata task.

    Arrays: ``wsc``, ``ci_low``, ``ci_high``, ``p_value`` are ``(C_primary, C_task)``;
    ``boot`` ``(B, C_primary, C_task)`` and ``null`` ``(P, C_primary, C_task)`` keep the resampling
    distributions (empty when not run); ``random_null`` ``(n_draws,)`` max |cos| of random heads.
    ``wsc_corrected`` ``(C_primary, C_task)``: the attenuation-corrected WSC (None without a bootstrap or
    for fixed heads); ``cell_intervals``: ``{"raw" | "corrected": {"method", "low", "high"}}``.
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
    fit: dict = field(default_factory=dict)
    wsc_corrected: np.ndarray | None = None
    cell_intervals: dict | None = None

    def to_dict(self) -> dict:
        iv = None if self.cell_intervals is None else {
            k: {"method": v["method"], "low": _mat(v["low"]), "high": _mat(v["high"])}
            for k, v in self.cell_intervals.items()}
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
            "wsc_corrected": _mat(self.wsc_corrected),
            "cell_intervals": iv,
            "summary": self.summary,
            "fit": self.fit,
        }


@dataclass(frozen=True)
class WscaResult:
    """Everything :func:`analyze` computed. ``to_dict()`` is the ``wsca.json`` schema.

    ``heads`` (not written to ``wsca.json``): the compared directions in the embedding's own
    coordinates -- ``primary`` ``(Ca, D)`` (the model's head or the primary probe), ``tasks``
    ``{name: (C, D)}`` (probe rows, or the jointly trained head), ``axes`` ``(D, k)`` the projection.
    """

    n_samples: int
    embedding_dim: int
    settings: dict
    pca: dict
    primary: dict
    tasks: dict[str, TaskResult]
    skipped: dict[str, str]
    null_reference: dict
    diagnostics: dict = field(repr=False, default_factory=dict)
    warnings: list = field(default_factory=list)
    k_sensitivity: dict | None = None
    heads: dict | None = field(repr=False, default=None)

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
            "k_sensitivity": self.k_sensitivity,
            "diagnostics": self.diagnostics,
            "warnings": list(self.warnings),
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
                                     random_null=arrays.get(f"random/{name}"), source=t.get("source", "probe"),
                                     fit=t.get("fit", {}), wsc_corrected=arr(t.get("wsc_corrected")),
                                     cell_intervals=None if t.get("cell_intervals") is None else {
                                         k: {"method": v["method"], "low": arr(v["low"]), "high": arr(v["high"])}
                                         for k, v in t["cell_intervals"].items()})
        return cls(n_samples=d["n_samples"], embedding_dim=d["embedding_dim"], settings=d["settings"], pca=d["pca"],
                   primary=d["primary"], tasks=tasks, skipped=d.get("skipped", {}),
                   null_reference=d.get("null_reference", {}), diagnostics=d.get("diagnostics", {}),
                   warnings=d.get("warnings", []), k_sensitivity=d.get("k_sensitivity"))

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
        """One row per task: probe AUROC, max |WSC| (raw and attenuation-corrected; CI, p ± Monte Carlo SE, or the reference band of
        fixed heads), the null and random references, convergence and the verdict."""
        rows = []
        for name, t in self.tasks.items():
            s = t.summary
            rows.append({"task": name, "kind": t.kind, "n_used": t.n_used, "source": t.source,
                         "probe_auroc": t.probe.get("auroc"), "max_abs_wsc": s["max_abs_wsc"],
                         "max_abs_wsc_corrected": s.get("max_abs_wsc_corrected"),
                         "ci_low": (s["ci"] or [None, None])[0], "ci_high": (s["ci"] or [None, None])[1],
                         "ci_method": s.get("ci_method"),
                         "p_value": s["p_value"], "p_mcse": s.get("p_value_mcse"), "p_adjusted": s["p_adjusted"],
                         "test": s.get("test"), "null_q95": s.get("null_q95"),
                         "random_q95": s["random_direction_q95"], "converged": t.fit.get("converged"),
                         "verdict": s["verdict"]})
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
    """Validate ``(N, D)`` finite real numbers that vary; returns the array as given (float32 and
    memory-mapped arrays are not copied: the checks run over blocks of rows), other dtypes as float64."""
    try:
        arr = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    except (TypeError, ValueError) as e:
        raise WscaInputError(f"embeddings: expected a numeric (N, D) array ({e})") from None
    require(arr.dtype.kind != "c", "embeddings: complex numbers; expected real values (take .real or the magnitude first)")
    require(arr.dtype.kind in "biuf", f"embeddings: array of {arr.dtype} values; expected numbers")
    x = arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)
    require(x.ndim == 2, f"embeddings: expected a 2-D (N, D) array, found shape {x.shape}")
    require(x.shape[0] >= 4 and x.shape[1] >= 1, f"embeddings: expected at least 4 rows and 1 column, found {x.shape}")
    lo, hi = np.full(x.shape[1], np.inf), np.full(x.shape[1], -np.inf)
    for s in range(0, x.shape[0], ROW_BLOCK):
        block = np.asarray(x[s:s + ROW_BLOCK], np.float64)
        bad = ~np.isfinite(block).all(1)
        if bad.any():
            rows = s + np.flatnonzero(bad)
            n_bad = int(sum((~np.isfinite(np.asarray(x[a:a + ROW_BLOCK]))).any(1).sum()
                            for a in range(s, x.shape[0], ROW_BLOCK)))
            raise WscaInputError(f"embeddings: row {rows[0]} contains NaN or inf ({n_bad} such rows); "
                                 "expected finite values")
        big = np.abs(block).max()
        if big > _MAX_ABS:
            r, c = np.unravel_index(int(np.abs(block).argmax()), block.shape)
            raise WscaInputError(f"embeddings: |value| {big:.3g} at row {s + r}, column {c}; expected at most "
                                 f"{_MAX_ABS:.0e} (the probes run in float32, whose squares overflow beyond that): "
                                 "rescale the embeddings")
        lo, hi = np.minimum(lo, block.min(0)), np.maximum(hi, block.max(0))
    require(bool((hi > lo).any()), f"embeddings: every one of the {x.shape[1]} columns is constant "
                                   "(no direction to probe); expected varying values")
    return x


_MAX_ABS = 1e15


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


FIXED_HEAD_NOTE = (
    "jointly trained (fixed) heads are tested only against heads of their own kind: networks trained with "
    "permuted attribute labels (head_null; p over those networks). The probe permutation null is of another "
    "statistic and does not calibrate it: in simulation (experiments/fixed_head_null.py) heads trained on "
    "labels independent of the attribute exceeded its 95% point far more often than 5%, while the null of "
    "permuted-label networks kept the nominal rate.")


def _absence(s: dict, alpha: float) -> str:
    """What a non-detection means: equivalence (unused within the margin) when shown, else how large an
    alignment would have gone unseen."""
    eq, m = s.get("equivalence"), s.get("equivalence_margin")
    if eq and eq["below_margin"]:
        return (f"; and the population max |WSC| is below the equivalence margin {m:g} (equivalence p {eq['p']:.3g}, "
                f"upper bound {eq['upper']:.2f}): encoded but unused, within that margin")
    tail = f"; alignment below about {s['null_q95']:.2f} (the null's 95% point) would go unseen"
    if s.get("mde") is not None:
        tail += f" (80% power at a population max |WSC| of about {s['mde']:.2f})"
    if eq:
        tail += f"; equivalence to below {m:g} not shown (p {eq['p']:.3g})"
    return tail + ", so this is no evidence that the attribute is unused"


def _verdict(s: dict, probe: dict, has_perm: bool, source: str, alpha: float) -> str:
    """One plain-language line saying what was tested and what the outcome means (and does not)."""
    x = s["max_abs_wsc"]
    if source == "head" and s.get("test") != "seed_null":
        v = (f"not tested: max |WSC| {x:.3f} of the jointly trained heads; a test needs heads of networks "
             "trained with permuted attribute labels (head_null); the probe permutation null does not apply")
    elif source == "head" and s["p_adjusted"] < alpha:
        v = (f"aligned beyond training chance: max |WSC| {x:.3f} of the jointly trained heads exceeds what "
             f"networks trained with permuted attribute labels give (p_adj {s['p_adjusted']:.3g}, "
             f"{s['head_null_n']} null networks). Not shown: that the decision relies on the attribute itself "
             "rather than on what goes with it in the training design (permute within classes for that)")
    elif source == "head":
        v = (f"not detected: max |WSC| {x:.3f} of the jointly trained heads is within the null of networks trained "
             f"with permuted attribute labels (p_adj {s['p_adjusted']:.3g}; their 95% point {s['head_null_q95']:.2f}); "
             "no evidence that the attribute is unused")
    elif not has_perm:
        base = "above" if x > s["random_direction_q95"] else "within"
        v = (f"max |WSC| {x:.3f} is {base} the random-direction 95% reference; not tested "
             "(run permutations for a test)")
    elif s["p_adjusted"] is not None and s["p_adjusted"] < alpha:
        v = (f"aligned beyond chance: max |WSC| {x:.3f}, p_adj {s['p_adjusted']:.3g} -- the primary head is "
             "closer to this attribute's probe direction than to probes of permuted labels. Tested against: "
             "the attribute unrelated to the embedding. Not shown: that the decision relies on the attribute "
             "itself rather than on what goes with it (see the conditional null, --permute-within)")
    else:
        v = f"not detected: max |WSC| {x:.3f} is within the permutation null (p_adj {s['p_adjusted']:.3g})"
        v += _absence(s, alpha)
    auroc = probe.get("auroc")
    if auroc is not None and auroc < 0.7:
        v += f"; caution: the probe is weak (AUROC {auroc:.2f}), so its direction is unreliable"
    return v


def _caveats(s: dict, probe: dict, source: str, settings: dict, fit: dict) -> list[str]:
    """Plain-language caveats that go with a task's verdict."""
    out = []
    auroc = probe.get("auroc")
    if auroc is not None and auroc < 0.7:
        out.append(f"the attribute is weakly encoded (probe AUROC {auroc:.2f}): its direction is unreliable, and a high "
                   "WSC with a poor probe is not evidence (the paper discounts such values itself)")
    if not fit.get("converged", True):
        why = (f"it reached the iteration cap ({fit['iterations']})" if fit.get("at_cap") else
               "it stalled with the gradient above its float32 rounding floor")
        out.append(f"the probe fit did not converge: {why}, max |gradient| {fit['grad_max']:.1e} (tolerance "
                   f"not met; floor {fit['grad_floor']:.1e}): its WSC is not to be trusted; raise max_iter, "
                   "lower C, or check the embeddings' scale")
    bad = {k: v for k, v in fit.get("replicates_not_converged", {}).items() if v}
    if bad:
        out.append("replicate fits that did not converge: " + ", ".join(f"{v} {k}" for k, v in bad.items())
                   + " (kept in the distributions; see diagnostics)")
    if s.get("ci"):
        if s.get("ci_method") == "corrected":
            out.append("the interval is for the population value (attenuation-corrected: probe noise shrinks "
                       "cosines toward 0, see max_abs_wsc_corrected); max_abs_wsc is the raw value (the paper's "
                       "number) and ci_raw its bootstrap interval. Judge alignment by the permutation test")
        else:
            out.append("the interval of max |WSC| is biased upward near zero (a maximum of absolute values never "
                       "reaches 0): judge alignment by the permutation test, use the interval for spread")
        if s.get("ci_fallback") and s["ci_fallback"] != "fixed_heads":     # fixed heads: basic by design
            z0 = "infinite" if s.get("ci_z0") is None else f"{s['ci_z0']:.2f}"
            why = {"extreme_z0": f"BCa's bias-corrected levels (z0 {z0}, with the acceleration) fall among the last "
                                 "few bootstrap replicates, so BCa would read an end from a handful of them",
                   "narrower_than_spread": "the BCa interval was narrower than half the bootstrap spread",
                   "excludes_median": "the BCa interval did not contain the median of the bootstrap replicates",
                   "no_reliable_direction": "no attenuation-corrected value: a probe direction's estimated "
                                            "reliability is below 0.1 (its direction is mostly noise)",
                   "fixed_heads": "the compared heads are fixed (no probe noise to correct)"}[s["ci_fallback"]]
            out.append(f"{s['ci_method']} interval instead of the requested one for max |WSC|: {why}")
        if source == "head":
            out.append("the heads are the model's own (fixed): the interval resamples the PCA projection only; "
                       "training randomness (seed variation) is not in it")
    if source == "head":
        out.append(FIXED_HEAD_NOTE)
        m = s.get("head_null_n")
        if m is not None and 1.0 / (m + 1) > settings.get("alpha", 0.05):
            out.append(f"only {m} null networks: the smallest attainable p is {1 / (m + 1):.3f}, above alpha, so "
                       "this test cannot reject; train more null networks")
    if settings.get("permutations", 0) == 0 and source == "probe":
        out.append("no permutation test was run: compare with the random-direction reference only with care, "
                   "it is far narrower than the null of a real embedding")
    else:
        if settings.get("permute_within") and source == "probe":
            out.append(f"conditional null: labels were permuted within strata of {settings['permute_within']!r}, "
                       "so p tests alignment beyond what that association explains")
        if s.get("p_near_alpha"):
            out.append(f"p is within 3 Monte Carlo standard errors of alpha (or of a Holm step alpha/j) after "
                       f"{s['n_permutations']} permutations "
                       f"(p {s['p_value']:.3f} ± {s['p_value_mcse']:.3f}): the decision could flip with other "
                       "permutations; rerun with more (max_permutations)")
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


CI_METHODS = ("corrected", "bca", "percentile", "basic")


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
    info.update(ci_z0=_clean(z0), bca_fallback=str(why) or None, cells_percentile_fallback=int(np.sum(why_c != "")))
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


def task_statistics(task, quality: dict, cells: np.ndarray, boot=None, jack=None, null=None,
                    random_null=None, ci_method: str = "bca", confidence: float = 0.95,
                    source: str = "probe", alpha: float = 0.05, head_null=None, n_tests: int = 1,
                    corr=None, margin: float = 0.2) -> TaskResult:
    """Intervals, p-values (or the reference band of fixed heads) and the summary of one task.

    Args:
      task: the :class:`~wsca_jax.tasks.Task`.  quality: its held-out probe metrics.
      cells: ``(Ca, C)`` WSC.  boot: ``(B, Ca, C)``; jack: ``(J, Ca, C)``; null: ``(P, Ca, C)``
        (probes of permuted labels against the primary head).
      random_null: ``(n_draws,)`` max |cos| of random heads of the same shape.
      source: ``"probe"`` (cells from a probe: ``null`` is the null of the same statistic, p-values)
        or ``"head"`` (a jointly trained head: the probe ``null`` is of another statistic and gives no
        p-value; ``head_null`` does).
      head_null: ``(M,)`` max |WSC| of the heads of M networks trained with permuted attribute labels
        (:func:`fixed_head_wsc` on each): the null of the fixed-head statistic itself (``"seed_null"``).
      n_tests: number of tasks tested together: ``p_near_alpha`` flags a p within 3 Monte Carlo SE of
        any Holm step ``alpha / j`` (j = 1 .. n_tests), the thresholds that can decide it.
      corr: ``(cells (Ca, C), scale (Ca, C))`` attenuation-corrected WSC (:func:`~wsca_jax.wsc.disattenuate`).
      margin: equivalence margin of the population max |WSC| (:func:`sensitivity`).
      ci_method: the default interval (``summary.ci``, ``ci_low``/``ci_high``): ``"corrected"``
        (percentile interval of the raw replicates recentred on the corrected estimate; basic where
        there is none), ``"basic"``, ``"bca"`` (guarded) or ``"percentile"`` (of the raw statistic).
    """
    cell = np.unravel_index(int(np.nanargmax(np.abs(cells))), cells.shape)
    stat = float(np.abs(cells[cell]))
    ci_low = ci_high = pv = cell_iv = None
    summary = {"max_abs_wsc": stat, "cell": [int(cell[0]), int(cell[1])], "ci": None,
               "p_value": None, "p_value_mcse": None, "p_adjusted": None,
               "test": None, "null_q95": None, "random_direction_q95": float(np.quantile(random_null, 0.95))}
    if boot is not None:
        ci_low, ci_high, cell_iv, info = _intervals(cells, stat, boot, jack, ci_method, confidence, corr)
        summary.update(info)
    if null is not None:
        null_max = np.nanmax(np.abs(null), axis=(-2, -1))
        P = null.shape[0]
        p = float(permutation_pvalue(stat, null_max))
        q95 = float(np.quantile(null_max, 0.95))
        summary["n_permutations"] = int(P)
        if source == "probe":
            summary["null_q95"] = q95
            pv = permutation_pvalue(cells, null)
            summary.update(test="permutation", p_value=p, p_value_mcse=float(pvalue_mcse(p, P)),
                           p_near_alpha=bool(near_threshold(p, P, [alpha / j for j in range(1, max(1, n_tests) + 1)])))
        else:
            # the probe null is the null of the *probe's* statistic (summary.probe_max_abs_wsc), not of the
            # fixed heads': it is kept beside the probe value only
            summary["probe_null_q95"] = q95
    if source == "head" and head_null is not None:
        hn = np.asarray(head_null, float)
        p = float(permutation_pvalue(stat, hn))
        M, q95 = len(hn), float(np.quantile(hn, 0.95))
        summary.update(test="seed_null", p_value=p, p_value_mcse=float(np.sqrt(p * (1 - p) / M)),
                       head_null_n=int(M), head_null_q95=q95, null_q95=q95)
    cmax = summary.pop("_cmax", None)
    null_stat = None if summary["test"] is None else (
        np.asarray(head_null, float) if summary["test"] == "seed_null" else np.nanmax(np.abs(null), axis=(-2, -1)))
    scale = None if (corr is None or cmax is None or not np.isfinite(corr[1][cell])) else float(corr[1][cell])
    summary.update(sensitivity(stat, boot, null_stat, cmax, scale, alpha, margin, n_tests))
    return TaskResult(name=task.name, kind=task.kind, classes=task.classes, n_used=task.n_used,
                      probe=quality, wsc=cells, ci_low=ci_low, ci_high=ci_high, p_value=pv,
                      summary=summary, boot=boot, null=null, random_null=random_null, source=source,
                      wsc_corrected=None if corr is None else corr[0], cell_intervals=cell_iv)


# ---------------------------------------------------------------------------------------------
# Stages: prepare -> point -> quality -> resample -> null -> summarise


class Prepared(NamedTuple):
    """Everything the fitting stages share (output of :func:`prepare`).

    Attributes:
      taskset: encoded tasks.  groups, strata: ``(N,)`` codes or None.  basis: rotated embeddings.
      k: PCA components.  explained: their variance share.  probe_tasks: metadata tasks, then the
      primary when it is probed.  labels: ``(T', N)``.  cmask: ``(T', K)``.  T: metadata tasks.
      p_rows: ``(Ca, D)`` primary head in the rotated basis (None when probed).
      fixed: indices of tasks with jointly trained heads; f_rows ``(F, K, D)``, f_mask ``(F, K)``.
    """

    taskset: object
    groups: np.ndarray | None
    strata: np.ndarray | None
    basis: Basis
    k: int
    explained: float
    probe_tasks: list
    labels: np.ndarray
    cmask: np.ndarray
    T: int
    p_rows: np.ndarray | None
    fixed: list
    f_rows: np.ndarray | None
    f_mask: np.ndarray | None


def prepare(x: np.ndarray, meta: pd.DataFrame, primary: str, primary_head, task_heads, cfg: dict) -> Prepared:
    """Tasks, groups, strata, the rotated basis, the PCA size and the fixed heads."""
    taskset = build_tasks(meta, primary, cfg["tasks"], cfg["categorical"], cfg["continuous"], cfg["bins"],
                          cfg["binning"], cfg["group_column"], min_class_count=cfg["min_class_count"])
    require(len(taskset.tasks) > 0, "no usable metadata task: " + (
        "; ".join(f"{k}: {v}" for k, v in taskset.skipped.items()) or "the table has no other column"))
    groups = _groups(meta, cfg["group_column"])
    d = x.shape[1]
    head = None if primary_head is None else check_head(primary_head, d, taskset.primary.n_classes)
    task_heads = dict(task_heads or {})
    by_name = {t.name: t for t in taskset.tasks}
    for name, h in task_heads.items():
        require(name in by_name, f"task head {name!r}: no such analysed task (tasks: {', '.join(by_name) or 'none'})")
        require(head is not None, f"task head {name!r}: comparing fixed task heads needs the model's primary head too")
        task_heads[name] = check_head(h, d, by_name[name].n_classes, what=f"head of task {name!r}")
    strata = None
    pw = cfg["permute_within"]
    if pw is not None:
        if pw == primary:
            strata = taskset.primary.labels
        else:
            require(pw in meta.columns, f"--permute-within {pw!r}: no such column")
            strata = pd.factorize(meta[pw])[0]
    basis = make_basis(x)
    proj = choose_components(basis.variances, cfg["pca_variance"], cfg["pca_min"])
    probe_tasks = list(taskset.tasks) + ([] if head is not None else [taskset.primary])
    labels = np.stack([t.labels for t in probe_tasks]).astype(np.int32)
    cmask = class_mask(probe_tasks)
    fixed = [i for i, t in enumerate(taskset.tasks) if t.name in task_heads]
    f_rows = f_mask = None
    if fixed:
        K = cmask.shape[1]
        f_rows = np.zeros((len(fixed), K, d), np.float32)
        f_mask = np.zeros((len(fixed), K), bool)
        for j, i in enumerate(fixed):
            h = task_heads[taskset.tasks[i].name] @ basis.rotation
            f_rows[j, : h.shape[0]] = h
            f_mask[j, : h.shape[0]] = True
    p_rows = None if head is None else (head @ basis.rotation).astype(np.float32)
    return Prepared(taskset, groups, strata, basis, proj.k, float(proj.explained_variance), probe_tasks, labels,
                    cmask, len(taskset.tasks), p_rows, fixed, f_rows, f_mask)


def _groups(meta: pd.DataFrame, group_column: str | None) -> np.ndarray | None:
    if group_column is None:
        return None
    gcol = meta[group_column]
    if gcol.isna().any():
        row = int(np.flatnonzero(gcol.isna().to_numpy())[0])
        raise WscaInputError(f"--group-column {group_column!r}: row {row} is missing; expected a group id on every row")
    groups = pd.factorize(gcol)[0]
    require(groups.max() + 1 >= 2, f"--group-column {group_column!r}: found one group; expected at least 2 "
                                   "(folds, bootstrap and permutations resample groups)")
    return groups


class _Wsc:
    """WSC of replicate fits against the primary head (rows refitted when the primary is probed)."""

    def __init__(self, prep: Prepared, point, centered: bool):
        self.prep, self.centered = prep, centered
        T = prep.T
        if prep.p_rows is not None:
            self.rows = prep.p_rows
        else:
            self.rows = point.coef[0, T, : prep.taskset.primary.n_classes]
        self.mask = np.ones(self.rows.shape[0], bool)

    def probes(self, fit, refit_primary: bool = True) -> np.ndarray:
        """``(R, T, Ca, K)`` for the probe rows of ``fit``."""
        prep, T, Ca = self.prep, self.prep.T, self.rows.shape[0]
        if prep.p_rows is None and refit_primary:
            prim = fit.coef[:, T, :Ca]
        else:
            prim = np.broadcast_to(self.rows, (fit.coef.shape[0],) + self.rows.shape)
        return np.array(wsc_jit(prim, self.mask, fit.coef[:, :T], prep.cmask[:T], k=prep.k, centered=self.centered))

    def compared_rows(self, fit) -> tuple[np.ndarray, np.ndarray]:
        """The rows as the cosines see them (projected on k axes, centred):
        primary ``(R, Ca, k)`` (the fixed head broadcast when not probed) and tasks ``(R, T, K, k)``."""
        prep, T, Ca = self.prep, self.prep.T, self.rows.shape[0]
        R = fit.coef.shape[0]
        prim = fit.coef[:, T, :Ca] if prep.p_rows is None else np.broadcast_to(self.rows, (R,) + self.rows.shape)
        a = prepare_head_jit(jnp.asarray(prim), self.mask, k=prep.k, centered=self.centered)
        b = prepare_head_jit(jnp.asarray(fit.coef[:, :T]), prep.cmask[:T], k=prep.k, centered=self.centered)
        return np.asarray(a), np.asarray(b)

    def by_k(self, fit, ks, refit_primary: bool = True) -> np.ndarray:
        """``(R, n_k, T, Ca, K)`` WSC of the probe rows of ``fit`` at every projection size in ``ks``;
        the fixed heads' tasks take the head-to-head values."""
        prep, T, Ca = self.prep, self.prep.T, self.rows.shape[0]
        R = fit.coef.shape[0]
        prim = fit.coef[:, T, :Ca] if (prep.p_rows is None and refit_primary) else np.broadcast_to(
            self.rows, (R,) + self.rows.shape)
        out = np.array(wsc_by_k_jit(prim, self.mask, fit.coef[:, :T], prep.cmask[:T], np.asarray(ks),
                                    centered=self.centered))
        if prep.fixed:
            out[:, :, prep.fixed] = np.asarray(wsc_by_k_jit(self.rows[None], self.mask, prep.f_rows[None], prep.f_mask,
                                                            np.asarray(ks), centered=self.centered))
        return out

    def fixed_heads(self) -> np.ndarray:
        """``(F, Ca, K)`` head-to-head WSC of the jointly trained heads."""
        p = self.prep
        return np.asarray(wsc_jit(self.rows, self.mask, p.f_rows, p.f_mask, k=p.k, centered=self.centered))

    def fixed_resampled(self, weights) -> np.ndarray:
        """``(R, F, Ca, K)``: the fixed heads with the PCA projection refitted on reweighted rows."""
        p = self.prep
        return np.asarray(wsc_reweighted_basis_jit(p.basis.x, jnp.asarray(weights, jnp.float32), self.rows,
                                                   self.mask, p.f_rows, p.f_mask, k=p.k, centered=self.centered))


def permuted_labels(rng: np.random.Generator, labels: np.ndarray, T: int, n_perm: int,
                    groups: np.ndarray | None = None, strata: np.ndarray | None = None) -> np.ndarray:
    """``(P, T', N)`` labels: the first ``T`` tasks permuted, the rest (the primary) kept.

    Each task is permuted among its own labelled rows only: rows with a missing label stay missing,
    so every permuted fit uses the same rows as the observed fit (groups and strata restricted to
    those rows).
    """
    out = np.broadcast_to(labels, (n_perm,) + labels.shape).copy()
    for t in range(T):
        rows = np.flatnonzero(labels[t] >= 0)
        sub = lambda a: None if a is None else np.asarray(a)[rows]  # noqa: E731
        perms = permutation_indices(rng, len(rows), n_perm, sub(groups), sub(strata))
        out[:, t, rows] = labels[t, rows][perms]
    return out


K_SENSITIVITY = (10, 25, 50, 100, 250)


def k_sensitivity(prep: Prepared, wsc: _Wsc, stages: dict, seed: int) -> dict:
    """Max |WSC| and its reference bands against the projection size k (the paper's Fig. 4).

    ks: 10, 25, 50, 100, 250 (those below the numerical rank), the rank ("all") and the k used.
    Per task: max |WSC| at each k; the 95% point of the permutation null at each k (probe tasks, when
    permutations ran: the same permuted fits projected to each k); the random-direction 95% point.
    """
    v = np.asarray(prep.basis.variances, float)
    rank = max(1, int(np.sum(v > 1e-10 * max(v.max(initial=0.0), 1e-300))))
    ks = sorted({k for k in K_SENSITIVITY if k < rank} | {rank, prep.k})
    point = wsc.by_k(stages["point"], ks)[0]                                   # (n_k, T, Ca, K)
    null = None
    if "permutation" in stages:
        null = np.nanmax(np.abs(wsc.by_k(stages["permutation"], ks, refit_primary=False)), axis=(-2, -1))
    rng = np.random.default_rng(seed + 3)
    Ca = wsc.rows.shape[0]
    tasks = {}
    for i, t in enumerate(prep.taskset.tasks):
        tasks[t.name] = {
            "max_abs_wsc": [float(np.nanmax(np.abs(point[q, i]))) for q in range(len(ks))],
            "null_q95": None if (null is None or i in prep.fixed) else
            [float(np.quantile(null[:, q, i], 0.95)) for q in range(len(ks))],
            "random_q95": [float(np.quantile(random_direction_null(rng, k, Ca, t.n_classes, wsc.centered, 1000), 0.95))
                           for k in ks]}
    return {"ks": [int(k) for k in ks], "k_used": int(prep.k), "rank": rank, "tasks": tasks,
            "note": "the probes are fitted once in the full space; each k projects the same fits (and the same "
                    "permuted fits for the null band)"}


def _fit_summary(stages: dict, i: int, max_iter: int, primary_index: int | None = None) -> dict:
    """Convergence of task ``i``'s probe: the full-data fit (``at_cap``: it stopped at ``max_iter``)
    and the count of replicate fits (per stage) that did not converge."""
    point = stages["point"]
    out = {"converged": bool(point.converged[0, i]), "grad_max": float(point.grad_max[0, i]),
           "grad_floor": float(point.grad_floor[0, i]), "objective": float(point.objective[0, i]),
           "iterations": int(point.iterations[0, i]), "at_cap": bool(int(point.iterations[0, i]) >= max_iter)}
    # the primary probe's permutation refits are not used (the null keeps the observed primary)
    unused = {"permutation"} if i == primary_index else set()
    out["replicates_not_converged"] = {name: int((~np.asarray(f.converged[:, i])).sum())
                                       for name, f in stages.items() if name != "point" and name not in unused}
    return out


def _null_stage(prep: Prepared, wsc: _Wsc, cfg: dict, rng, bar) -> tuple:
    """Permutation null ``(P, T, Ca, K)``, with batches added while a p-value is undecided.

    The first batch has ``permutations`` label permutations. With ``max_permutations`` above it,
    further batches of the same size are added while any task's p-value (or, for fixed heads, its
    reference exceedance) is within 3 Monte Carlo standard errors of a threshold that decides it
    (``alpha / j``, j = 1 .. number of tasks: the Holm steps), up to ``max_permutations``.
    """
    batch, cap = cfg["permutations"], max(cfg["permutations"], cfg["max_permutations"] or 0)
    stat = np.nanmax(np.abs(cfg["_observed"]), axis=(-2, -1))              # (T,)
    tested = [t for t in range(prep.T) if t not in prep.fixed]            # fixed heads: not this null's statistic
    n_tests = len(tested) + cfg.get("_n_head_null", 0)                    # Holm counts seed-null tests too
    thresholds = [cfg["alpha"] / j for j in range(1, n_tests + 1)]
    nulls, fits = [], []
    while True:
        size = min(batch, cap - sum(len(n) for n in nulls))
        plab = permuted_labels(rng, prep.labels, prep.T, size, prep.groups, prep.strata)
        pfit = fit_replicates(prep.basis, plab, np.ones((size, prep.basis.x.shape[0]), np.float32), prep.cmask,
                              cfg["probe"], labels_batched=True, progress=bar.update)
        fits.append(pfit)
        nulls.append(wsc.probes(pfit, refit_primary=False))
        null = np.concatenate(nulls)
        P = len(null)
        if P >= cap:
            break
        nmax = np.nanmax(np.abs(null), axis=(-2, -1))                       # (P, T)
        p = np.array([permutation_pvalue(stat[t], nmax[:, t]) for t in tested])
        if not tested or not near_threshold(p, P, thresholds).any():
            break
        if hasattr(bar, "total"):
            bar.total = (bar.total or 0) + min(batch, cap - P)
            bar.refresh()
    merged = fits[0] if len(fits) == 1 else type(fits[0])(*(np.concatenate(a) for a in zip(*fits)))
    return null, merged


def analyze(
    embeddings,
    metadata: pd.DataFrame | Mapping[str, Sequence],
    primary: str,
    primary_head=None,
    *,
    task_heads: Mapping[str, np.ndarray] | None = None,
    head_null: Mapping[str, Sequence[float]] | None = None,
    permute_within: str | None = None,
    tasks: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    bins: int = 4,
    binning: str = "quantile",
    group_column: str | None = None,
    bootstrap: int = 0,
    permutations: int = 0,
    max_permutations: int | None = None,
    alpha: float = 0.05,
    pca_variance: float = 0.99,
    pca_min: int = 50,
    heads: str = "centered",
    seed: int = 0,
    probe: ProbeConfig | None = None,
    cv_folds: int = 5,
    confidence: float = 0.95,
    ci_method: str = "corrected",
    equivalence_margin: float = 0.2,
    min_class_count: int = 5,
    correction_noise: str = "jackknife",
    progress: bool = False,
) -> WscaResult:
    """Weight Space Correlation analysis of one primary head against every metadata task.

    Args:
      embeddings: ``(N, D)`` training-set embeddings.
      metadata: N rows (same order), one column per attribute, including ``primary``.
      primary: the primary task's column.
      primary_head: the model's own head ``(C, D)`` or ``(D,)``; None = a probe on ``primary``.
      task_heads: ``{task: (C_t, D)}`` jointly trained heads (the multi-task setting), compared head
        to head (the paper's multi-task WSC). The probe permutation null is of another statistic
        and gives them no p-value; the probes still give the probe quality. Bootstrap intervals of
        a fixed head resample the PCA projection only. Needs ``primary_head``.
      head_null: ``{task: (M,) values}``: max |WSC| of the heads of M networks trained like the model
        but with that task's labels permuted (:func:`fixed_head_wsc` on each network's embeddings
        and heads) -- the null of the fixed-head statistic; gives those tasks a p-value.
      permute_within: a column (usually the primary) whose strata the permutations keep: the
        conditional null for confounded designs. None: unconditional permutations.
      tasks, categorical, continuous, bins, binning, min_class_count: task encoding
        (:func:`wsca_jax.tasks.build_tasks`).
      group_column: patient/group id; folds, bootstrap and permutations respect it.
      bootstrap: B replicates (0 = none); probes (and the primary probe) are refitted on each.
      permutations: P label permutations of the metadata tasks (0 = none), each task permuted among
        its labelled rows.
      max_permutations: adaptive mode: add batches of P permutations while a p-value is within 3
        Monte Carlo standard errors of a Holm threshold of ``alpha``, up to this many (None = P).
      alpha: level of the verdicts (Holm-adjusted across tasks).
      pca_variance, pca_min: PCA components kept (99% of the variance, at least 50).
      heads: ``"centered"`` (rows centred to sum to zero) or ``"raw"`` (the paper's rows).
      seed: seeds folds, bootstrap, permutations and the random-direction reference.
      probe: solver settings (:class:`wsca_jax.probes.ProbeConfig`).
      cv_folds: folds for the held-out probe quality (cold-started fits).
      confidence: interval level.
      ci_method: the default interval (``summary.ci`` and the cell ``ci_low``/``ci_high``):
        ``"corrected"`` (default, chosen by coverage of the population value in
        experiments/results/calibration.md: the attenuation-corrected estimate, see
        ``correction_noise``, with the raw replicates' spread stretched by the correction; the basic
        interval, with the reason, where a direction is unreliable or the heads are fixed),
        ``"basic"`` (``2 t - q``, the bootstrap's own bias correction), ``"bca"`` (guarded: percentile where BCa is degenerate, with the
        reason; 50 jackknife blocks) or ``"percentile"`` (of the raw statistic, which is attenuated
        toward 0: it misses the population value). The intervals of max |WSC| are all in
        ``summary.intervals`` (BCa only with ``ci_method="bca"``).
      equivalence_margin: population max |WSC| below which alignment is negligible; with a bootstrap,
        "encoded but unused" is concluded when the corrected replicates show the value below it
        (``summary.equivalence``); ``summary.mde`` is the alignment detected with 80% power.
      correction_noise: the noise estimate of the attenuation correction
        (:func:`~wsca_jax.wsc.disattenuate`): ``"jackknife"`` (default; delete-one-block refits,
        ``min(50, max(10, B // 4))`` blocks, 50 with BCa; with ``group_column`` the blocks are groups,
        merged at random when there are more, and the variance formula treats blocks as equal in
        size) or ``"bootstrap"`` (the bootstrap's spread, which overstated the noise of well-separated
        probes in the calibration study and over-corrected).
      progress: show a progress bar.

    Returns:
      :class:`WscaResult`. A probe fit that did not converge raises a ``UserWarning`` and is listed
      in ``result.warnings`` and in its task's ``fit``.

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
    cfg = dict(tasks=tasks, categorical=categorical, continuous=continuous, bins=bins, binning=binning,
               group_column=group_column, min_class_count=min_class_count, permute_within=permute_within,
               pca_variance=pca_variance, pca_min=pca_min, probe=probe, permutations=permutations,
               max_permutations=max_permutations, alpha=alpha, equivalence_margin=equivalence_margin)
    _check_settings(heads, ci_method, bootstrap, permutations, max_permutations, alpha, cv_folds, seed, probe)
    require(correction_noise in ("jackknife", "bootstrap"),
            f"correction noise must be 'jackknife' or 'bootstrap', found {correction_noise!r}")
    require(0 < equivalence_margin <= 1, f"equivalence margin must be in (0, 1], found {equivalence_margin}")
    head_null = _check_head_null(head_null, task_heads)
    clock = _Clock()
    x = check_embeddings(embeddings)
    meta = metadata if isinstance(metadata, pd.DataFrame) else pd.DataFrame(dict(metadata))
    require(len(meta) == x.shape[0], f"metadata has {len(meta)} rows, embeddings have {x.shape[0]}; "
                                     "expected one metadata row per embedding, in the same order")
    prep = prepare(x, meta, primary, primary_head, task_heads, cfg)
    probe = cfg["probe"] = resolve_memory(probe, x.shape[0], prep.basis.x.shape[1], *prep.cmask.shape)
    clock.lap("prepare")
    n, T, centered = x.shape[0], prep.T, heads == "centered"
    rng = np.random.default_rng(seed)
    folds = fold_ids(n, cv_folds, prep.groups, seed)
    jack = None
    if bootstrap > 0 and (ci_method == "bca" or correction_noise == "jackknife"):   # BCa; the correction's noise
        blocks = 50 if ci_method == "bca" else int(np.clip(bootstrap // 4, 10, 50))
        jack = jackknife_weights(n, prep.groups, max_blocks=blocks, rng=np.random.default_rng(seed + 1))
    total = 1 + (folds.max() + 1) + bootstrap + (0 if jack is None else len(jack)) + permutations
    bar = _progress(total, progress)
    ones = np.ones((1, n), np.float32)

    # point: full-data fits and the observed WSC (fixed heads: head to head)
    stages = {"point": fit_replicates(prep.basis, prep.labels, ones, prep.cmask, probe, progress=bar.update)}
    point = stages["point"]
    init = (point.coef[0], point.intercept[0])
    wsc = _Wsc(prep, point, centered)
    wsc_hat = wsc.probes(point)[0]                                        # (T, Ca, K)
    probe_hat = wsc_hat.copy()
    if prep.fixed:
        wsc_hat[prep.fixed] = wsc.fixed_heads()
    clock.lap("point")
    # quality: cross-validated predictions from cold-started fits (a warm start from the full-data
    # fit would have seen the held-out fold)
    stages["cv"] = fit_replicates(prep.basis, prep.labels, fold_weights(folds), prep.cmask, probe, progress=bar.update)
    quality = heldout_quality(prep.basis, prep.probe_tasks, folds, stages["cv"], prep.cmask)
    clock.lap("cv")
    # resample: bootstrap and jackknife
    boot = jk = corr = None
    if bootstrap > 0:
        bw = bootstrap_weights(rng, n, bootstrap, prep.groups)
        stages["bootstrap"] = fit_replicates(prep.basis, prep.labels, bw, prep.cmask, probe, init=init, progress=bar.update)
        boot = wsc.probes(stages["bootstrap"])
        if prep.fixed:
            boot[:, prep.fixed] = wsc.fixed_resampled(bw)
        clock.lap("bootstrap")
        if jack is not None:
            stages["jackknife"] = fit_replicates(prep.basis, prep.labels, jack, prep.cmask, probe, init=init,
                                                 progress=bar.update)
        if ci_method == "bca":
            jk = wsc.probes(stages["jackknife"])
            if prep.fixed:
                jk[:, prep.fixed] = wsc.fixed_resampled(jack)
        noise_fit = stages["jackknife" if correction_noise == "jackknife" else "bootstrap"]
        a_hat, b_hat = (v[0] for v in wsc.compared_rows(point))
        a_rep, b_rep = wsc.compared_rows(noise_fit)
        corr = disattenuate(a_hat, a_rep, b_hat, b_rep, noise=correction_noise)   # corrected cells (T, Ca, K)
        clock.lap("jackknife" if jack is not None else "correction")
    # null: permutations (adaptive when max_permutations > permutations)
    null = None
    if permutations > 0:
        null, stages["permutation"] = _null_stage(prep, wsc, {**cfg, "_observed": wsc_hat,
                                                             "_n_head_null": len(head_null or {})}, rng, bar)
        clock.lap("permutation")
    bar.close()
    ksens = k_sensitivity(prep, wsc, stages, seed)
    clock.lap("k_sensitivity")
    rot = prep.basis.rotation
    heads_out = {"primary": np.asarray(wsc.rows, float) @ rot.T, "axes": rot[:, :prep.k],
                 "tasks": {t.name: np.asarray(point.coef[0, i, :t.n_classes], float) @ rot.T
                           for i, t in enumerate(prep.taskset.tasks)}}
    for j, i in enumerate(prep.fixed):
        t = prep.taskset.tasks[i]
        heads_out["tasks"][t.name] = np.asarray(prep.f_rows[j, :t.n_classes], float) @ rot.T
    result = _summarise(prep, cfg, stages, quality, wsc_hat, probe_hat, boot, jk, null, folds, jack, x.shape,
                        dict(heads=heads, seed=seed, bootstrap=bootstrap, ci_method=ci_method, confidence=confidence,
                             correction_noise=correction_noise,
                             centered=centered, primary=primary, Ca=wsc.rows.shape[0], head_null=head_null,
                             corr=corr, k_sensitivity=ksens, head_rows=heads_out))
    clock.lap("statistics")
    result.diagnostics["stage_seconds"] = {k: round(v, 4) for k, v in clock.seconds.items()}
    result.diagnostics["stage_fits"] = {k: int(v.grad_max.size) for k, v in stages.items()}
    result.diagnostics["devices"] = {"devices": jax.device_count(), "processes": jax.process_count(),
                                     "platform": jax.devices()[0].platform, "replicates_per_call":
                                     sharding.chunk_size(probe.chunk, sharding.mesh())}
    return result


class _Clock:
    """Wall seconds per stage: ``lap(name)`` adds the time since the previous lap to ``name``."""

    def __init__(self):
        self.t, self.seconds = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.t
        self.t = now


def fixed_head_wsc(embeddings, primary_head, task_head, pca_variance: float = 0.99, pca_min: int = 50,
                   heads: str = "centered") -> float:
    """Max |WSC| between two jointly trained heads on their network's embeddings (the multi-task
    statistic), as :func:`analyze` computes it. Run it on networks trained with one task's labels
    permuted to build that task's ``head_null``.

    Args:
      embeddings: ``(N, D)`` training-set embeddings of one network.
      primary_head: ``(Ca, D)`` or ``(D,)``.  task_head: ``(C, D)``.
    """
    x = check_embeddings(embeddings)
    a = check_head(primary_head, x.shape[1], np.shape(primary_head)[0] if np.ndim(primary_head) == 2 else 1)
    b = check_head(task_head, x.shape[1], np.shape(task_head)[0], what="task head")
    basis = make_basis(x)
    k = choose_components(basis.variances, pca_variance, pca_min).k
    rot = lambda h: (h @ basis.rotation).astype(np.float32)  # noqa: E731
    cells = np.asarray(wsc_jit(rot(a), np.ones(len(a), bool), rot(b)[None], np.ones((1, len(b)), bool),
                               k=k, centered=heads == "centered"))
    return float(np.nanmax(np.abs(cells)))


def _check_head_null(head_null, task_heads) -> dict:
    out = {}
    for name, v in dict(head_null or {}).items():
        require(name in (task_heads or {}), f"head_null {name!r}: no jointly trained head given for that task")
        a = np.asarray(v, float).ravel()
        require(len(a) >= 1 and np.isfinite(a).all(), f"head_null {name!r}: expected finite max |WSC| values")
        out[name] = a
    return out


def _check_settings(heads, ci_method, bootstrap, permutations, max_permutations, alpha, cv_folds, seed, probe):
    require(heads in ("centered", "raw"), f"--heads must be 'centered' or 'raw', found {heads!r}")
    require(ci_method in CI_METHODS, f"ci_method must be one of {', '.join(CI_METHODS)}, found {ci_method!r}")
    require(bootstrap >= 0 and permutations >= 0, "--bootstrap and --permutations must be >= 0")
    require(max_permutations is None or max_permutations >= permutations,
            f"--max-permutations ({max_permutations}) must be at least --permutations ({permutations})")
    require(0 < alpha < 1, f"alpha must be in (0, 1), found {alpha}")
    require(cv_folds >= 2, f"cv_folds must be at least 2, found {cv_folds}")
    require(isinstance(seed, (int, np.integer)) and seed >= 0, f"--seed must be a non-negative integer, found {seed}")
    require(np.isfinite(probe.C) and probe.C > 0, f"probe C (--C) must be a finite number > 0, found {probe.C}")
    require(probe.solver in ("lbfgs", "ridge"), f"probe solver must be 'lbfgs' or 'ridge', found {probe.solver!r}")


def _summarise(prep, cfg, stages, quality, wsc_hat, probe_hat, boot, jk, null, folds, jack, shape, opt) -> WscaResult:
    """Intervals, p-values, reference bands, verdicts, caveats, diagnostics -> :class:`WscaResult`."""
    T, k, Ca, alpha = prep.T, prep.k, opt["Ca"], cfg["alpha"]
    n_tests = sum(1 for i in range(T) if i not in prep.fixed) + len(opt["head_null"])   # every task with a p
    results: dict[str, TaskResult] = {}
    rnd_rng = np.random.default_rng(opt["seed"] + 2)
    corr = opt["corr"]
    for i, t in enumerate(prep.taskset.tasks):
        C = t.n_classes
        sl = lambda a: None if a is None else a[:, i, :, :C]  # noqa: E731
        r = task_statistics(t, quality[i], wsc_hat[i, :, :C], boot=sl(boot), jack=sl(jk), null=sl(null),
                            random_null=random_direction_null(rnd_rng, k, Ca, C, opt["centered"]),
                            ci_method=opt["ci_method"], confidence=opt["confidence"],
                            source="head" if i in prep.fixed else "probe", alpha=alpha,
                            head_null=opt["head_null"].get(t.name), n_tests=n_tests,
                            corr=None if (corr is None or i in prep.fixed) else (corr.cells[i, :, :C], corr.scale[i, :, :C]),
                            margin=cfg["equivalence_margin"])
        if corr is not None and i not in prep.fixed:
            r.summary["reliability"] = {"primary": [float(v) for v in corr.rel_primary],
                                        "probe": [float(v) for v in corr.rel_tasks[i, :C]]}
        if i in prep.fixed:
            r.summary["probe_max_abs_wsc"] = float(np.nanmax(np.abs(probe_hat[i, :, :C])))
        results[t.name] = r
    tested = [name for name, r in results.items() if r.summary["p_value"] is not None]
    if tested:
        adj = holm(np.array([results[nm].summary["p_value"] for nm in tested], float))
        for nm, a in zip(tested, adj):
            results[nm].summary["p_adjusted"] = float(a)
    settings = _settings(prep, cfg, opt, folds, jack, null)
    fits = {t.name: _fit_summary(stages, i, cfg["probe"].max_iter, T if prep.p_rows is None else None) for i, t in enumerate(prep.probe_tasks)}
    warn_lines = _convergence_warnings(fits, stages)
    for name, r in results.items():
        r.fit.update(fits[name])
        r.summary["verdict"] = _verdict(r.summary, r.probe, null is not None, r.source, alpha)
        r.summary["caveats"] = _caveats(r.summary, r.probe, r.source, settings, r.fit)
    primary = prep.taskset.primary
    pfit = fits.get(primary.name) if prep.p_rows is None else None
    if pfit is not None and not pfit["converged"]:
        for r in results.values():            # every WSC uses the primary probe's direction
            r.summary["caveats"].insert(0, f"the primary probe ({primary.name!r}) did not converge (max |gradient| "
                                           f"{pfit['grad_max']:.1e}): every WSC against it is not to be trusted")
    prim_info = {"name": opt["primary"], "classes": list(primary.classes),
                 "source": "head" if prep.p_rows is not None else "probe",
                 "probe": quality[T] if prep.p_rows is None else None, "head_rows": int(Ca),
                 "centered": bool(opt["centered"] and Ca > 1),
                 "fit": fits[primary.name] if prep.p_rows is None else None}
    null_ref = {"random_direction": {"k": int(k), "cell_sd": float(1 / math.sqrt(k)),
                                     "cell_abs_q95": random_cosine_quantile(k, 0.95),
                                     "note": "cosines between random directions in the projected space; "
                                             "per-task max |cos| quantiles are in each task's summary"}}
    all_fits = list(stages.values())
    diagnostics = {"point_iterations": int(stages["point"].iterations[0].max()),
                   "replicate_iterations_max": int(max(int(f.iterations.max()) for f in all_fits)),
                   "replicate_grad_max": float(max(float(f.grad_max.max()) for f in all_fits)),
                   "fits_not_converged": int(sum(int((~np.asarray(f.converged)).sum()) for f in all_fits)),
                   "fits_above_tol": int(sum(int((f.grad_max > cfg["probe"].tol).sum()) for f in all_fits)),
                   "fits_total": int(sum(int(f.grad_max.size) for f in all_fits)),
                   "tol": float(cfg["probe"].tol),
                   "point_grad_max": [float(g) for g in stages["point"].grad_max[0]],
                   "point_objective": [float(o) for o in stages["point"].objective[0]],
                   "probe_tasks": [t.name for t in prep.probe_tasks]}
    for line in warn_lines:
        warnings.warn(line, UserWarning, stacklevel=3)
    return WscaResult(n_samples=shape[0], embedding_dim=shape[1], settings=settings,
                      pca={"components": int(k), "explained_variance": prep.explained},
                      primary=prim_info, tasks=results, skipped=dict(prep.taskset.skipped),
                      null_reference=null_ref, diagnostics=diagnostics, warnings=warn_lines,
                      k_sensitivity=opt.get("k_sensitivity"), heads=opt.get("head_rows"))


def _convergence_warnings(fits: dict, stages: dict) -> list[str]:
    out = []
    for name, f in fits.items():
        if not f["converged"]:
            how = "at the iteration cap" if f["at_cap"] else "stalled above its float32 floor"
            out.append(f"probe {name!r}: the full-data fit did not converge ({how}: max |gradient| {f['grad_max']:.1e} "
                       f"after {f['iterations']} iterations, float32 floor {f['grad_floor']:.1e}); its WSC is not to be trusted")
        bad = {k: v for k, v in f["replicates_not_converged"].items() if v}
        if bad:
            out.append(f"probe {name!r}: replicate fits did not converge: "
                       + ", ".join(f"{v} of {len(stages[k].converged)} {k}" for k, v in bad.items()))
    return out


def _settings(prep, cfg, opt, folds, jack, null) -> dict:
    groups, permute_within = prep.groups, cfg["permute_within"]
    P = 0 if null is None else int(len(null))
    return {
        "bootstrap": int(opt["bootstrap"]), "permutations": P, "permutations_requested": int(cfg["permutations"]),
        "max_permutations": cfg["max_permutations"], "alpha": float(cfg["alpha"]), "seed": int(opt["seed"]),
        "pca_variance": float(cfg["pca_variance"]), "pca_min": int(cfg["pca_min"]), "heads": opt["heads"],
        "binning": cfg["binning"], "bins": int(cfg["bins"]), "group_column": cfg["group_column"],
        "probe": cfg["probe"].to_dict(), "cv_folds": int(folds.max() + 1), "cv_start": "cold",
        "confidence": float(opt["confidence"]), "equivalence_margin": float(cfg["equivalence_margin"]),
        "ci_method": opt["ci_method"] if opt["bootstrap"] > 0 else None,
        "jackknife_blocks": None if jack is None else int(len(jack)),
        "correction_noise": opt["correction_noise"] if opt["bootstrap"] > 0 else None,
        "permutation_scheme": None if P == 0 else (
            ("groups exchanged among groups of equal size, rows shuffled within groups" if groups is not None else "rows")
            + " (each task among its labelled rows)"
            + ("" if permute_within is None else f", within strata of {permute_within!r} (conditional null)")),
        "permute_within": permute_within,
        "task_heads": sorted(prep.taskset.tasks[i].name for i in prep.fixed),
        "fixed_head_inference": None if not prep.fixed else (
            "seed null: p over networks trained with permuted attribute labels, for tasks given in head_null; "
            "untested otherwise (the probe permutation null is of another statistic)"),
        "head_null_tasks": sorted(opt["head_null"]),
        "pca_fitted_on": "all rows given (fixed across bootstrap replicates of probe tasks"
                         + ("; refitted per replicate for the fixed heads, whose interval resamples the projection only)"
                            if prep.fixed else ")"),
        "head_null_settings": None if not opt["head_null"] else {
            "heads": opt["heads"], "pca_variance": cfg["pca_variance"], "pca_min": cfg["pca_min"],
            "note": "head_null values must be max |WSC| computed with these settings (fixed_head_wsc)"},
        "permutation_exchangeable_rows": None if (P == 0 or groups is None) else exchangeable_fraction(groups),
    }


def _progress(total: int, enabled: bool):
    return progress_bar(total, "probe fits (replicates)", "fits", enabled)
