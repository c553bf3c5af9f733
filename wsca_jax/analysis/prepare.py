"""The ``prepare`` stage: tasks, groups, strata, the rotated basis, the projection size and the fixed
heads; and the permuted labels of the null."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..checks import check_columns, check_head
from ..errors import WscaInputError, require
from ..metrics import fold_ids
from ..probes import Basis, ProbeConfig, make_basis, resolve_memory
from ..stats import jackknife_weights, permutation_indices
from ..tasks import build_tasks, class_mask
from ..wsc import choose_components


class Prepared(NamedTuple):
    """Everything the fitting stages share (output of :func:`prepare`).

    Attributes:
      taskset: encoded tasks.  groups, strata: ``(N,)`` codes or None.  basis: rotated embeddings.
      k: PCA components.  explained: their variance share.  probe_tasks: metadata tasks, then the
      primary when it is probed.  labels: ``(T', N)``.  cmask: ``(T', K)``.  T: metadata tasks.
      p_rows: ``(Ca, D)`` primary head in the rotated basis (None when probed).
      fixed: indices of tasks with jointly trained heads; f_rows ``(F, K, D)``, f_mask ``(F, K)``.
      probe: the solver settings with the memory budget resolved (every fit uses this chunk).
      folds: ``(N,)`` cross-validation fold per row.  jack: ``(J, N)`` jackknife weights, or None
        when neither BCa nor the jackknife noise estimate needs them.
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
    probe: ProbeConfig
    folds: np.ndarray
    jack: np.ndarray | None

    def n_fits(self, bootstrap: int, permutations: int) -> int:
        """Replicate fits the stages will run (the progress bar's total before adaptive permutations)."""
        return 1 + (self.folds.max() + 1) + bootstrap + (0 if self.jack is None else len(self.jack)) + permutations


def prepare(x: np.ndarray, meta: pd.DataFrame, primary: str, primary_head, task_heads, config) -> Prepared:
    """Tasks, groups, strata, the rotated basis, the PCA size, the fixed heads, the solver's memory
    budget and the resampling design (folds, jackknife blocks) of an :class:`AnalysisConfig`."""
    enc, res = config.encoding, config.resampling
    taskset = build_tasks(meta, primary, enc.tasks, enc.categorical, enc.continuous, enc.bins, enc.binning,
                          enc.group_column, min_class_count=enc.min_class_count)
    require(len(taskset.tasks) > 0, "no usable metadata task: " + (
        "; ".join(f"{k}: {v}" for k, v in taskset.skipped.items()) or "the table has no other column"))
    groups = _groups(meta, enc.group_column)
    d = x.shape[1]
    head = None if primary_head is None else check_head(primary_head, d, taskset.primary.n_classes)
    task_heads = _task_heads(task_heads, taskset, head is not None, d)
    strata = _strata(meta, primary, res.permute_within, taskset)
    basis = make_basis(x)
    proj = choose_components(basis.variances, config.projection.pca_variance, config.projection.pca_min)
    probe_tasks = list(taskset.tasks) + ([] if head is not None else [taskset.primary])
    labels = np.stack([t.labels for t in probe_tasks]).astype(np.int32)
    cmask = class_mask(probe_tasks)
    fixed = [i for i, t in enumerate(taskset.tasks) if t.name in task_heads]
    f_rows, f_mask = _fixed_rows(fixed, taskset, task_heads, basis, cmask.shape[1], d)
    p_rows = None if head is None else (head @ basis.rotation).astype(np.float32)
    n = x.shape[0]
    probe = resolve_memory(config.probe, n, basis.x.shape[1], *cmask.shape)
    require(res.cv_folds <= n, f"--cv-folds {res.cv_folds}: more folds than rows ({n}); expected at most {n}")
    folds = fold_ids(n, res.cv_folds, groups, res.seed)
    return Prepared(taskset, groups, strata, basis, proj.k, float(proj.explained_variance), probe_tasks, labels,
                    cmask, len(taskset.tasks), p_rows, fixed, f_rows, f_mask, probe, folds,
                    _jackknife(n, groups, config))


def _jackknife(n: int, groups, config) -> np.ndarray | None:
    """``(J, N)`` jackknife weights where BCa or the correction's jackknife noise needs them."""
    ci, noise, B = config.inference.ci_method, config.inference.correction_noise, config.resampling.bootstrap
    if B == 0 or not (ci == "bca" or noise == "jackknife"):
        return None
    blocks = 50 if ci == "bca" else int(np.clip(B // 4, 10, 50))
    return jackknife_weights(n, groups, max_blocks=blocks, rng=np.random.default_rng(config.resampling.seed + 1))


def _task_heads(task_heads, taskset, have_primary: bool, d: int) -> dict:
    """Checked ``{task: (C, D)}`` jointly trained heads."""
    task_heads = dict(task_heads or {})
    by_name = {t.name: t for t in taskset.tasks}
    for name, h in task_heads.items():
        require(name in by_name, f"task head {name!r}: no such analysed task (tasks: {', '.join(by_name) or 'none'})")
        require(have_primary, f"task head {name!r}: comparing fixed task heads needs the model's primary head too")
        task_heads[name] = check_head(h, d, by_name[name].n_classes, what=f"head of task {name!r}")
    return task_heads


def _strata(meta: pd.DataFrame, primary: str, permute_within: str | None, taskset) -> np.ndarray | None:
    """``(N,)`` strata codes of the conditional null, or None."""
    if permute_within is None:
        return None
    if permute_within == primary:
        strata = taskset.primary.labels
    else:
        check_columns([permute_within], meta.columns, "--permute-within")
        strata = pd.factorize(meta[permute_within])[0]
    for t in taskset.tasks:
        rows = t.labels >= 0
        codes = strata[rows] * (int(t.labels.max()) + 1) + t.labels[rows]       # (stratum, label) pairs
        require(len(np.unique(codes)) > len(np.unique(strata[rows])),
                f"--permute-within {permute_within!r}: it determines task {t.name!r} (one {t.name} value per "
                f"stratum), so permuting within it leaves {t.name!r}'s labels unchanged and the null equals the "
                "observed value; expected a column that does not determine the analysed tasks (usually the primary)")
    return strata


def _fixed_rows(fixed: list, taskset, task_heads: dict, basis: Basis, K: int, d: int) -> tuple:
    """The jointly trained heads in the rotated basis: rows ``(F, K, D)`` and mask ``(F, K)`` (None, None without)."""
    if not fixed:
        return None, None
    f_rows = np.zeros((len(fixed), K, d), np.float32)
    f_mask = np.zeros((len(fixed), K), bool)
    for j, i in enumerate(fixed):
        h = task_heads[taskset.tasks[i].name] @ basis.rotation
        f_rows[j, : h.shape[0]] = h
        f_mask[j, : h.shape[0]] = True
    return f_rows, f_mask


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

