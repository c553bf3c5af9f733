"""The typed results of an analysis: :class:`TaskResult` per task, :class:`WscaResult` for the whole
(``to_dict()`` is the ``wsca.json`` schema)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from .. import __version__
from ..io import atomic_write_text, finite_or_none


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

    ``settings`` is the :class:`~wsca_jax.analysis.config.AnalysisConfig` serialised (one section
    per concern); ``resolved`` what the run resolved from it and the data (permutations run, the
    solver's memory budget and chunk, folds, jackknife blocks, the permutation scheme ...).

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
    resolved: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "wsca_version": __version__,
            "n_samples": self.n_samples,
            "embedding_dim": self.embedding_dim,
            "settings": self.settings,
            "resolved": self.resolved,
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
                   warnings=d.get("warnings", []), k_sensitivity=d.get("k_sensitivity"),
                   resolved=d.get("resolved", {}))

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


def _mat(a):
    if a is None:
        return None
    return [[finite_or_none(v) for v in row] for row in np.asarray(a, float)]
