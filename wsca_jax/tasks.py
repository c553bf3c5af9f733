"""Metadata table -> encoded classification tasks.

Every metadata column becomes a task with integer targets in ``[0, C)`` and ``-1`` where the value
is missing (masked per task, so a row missing ``scanner`` still counts for ``birth_weight``).

Kinds:
  * ``binary``      -- exactly two distinct values;
  * ``categorical`` -- strings, booleans, categories or integers with few distinct values;
  * ``binned``      -- continuous values cut into ``bins`` classes, by quantiles (default) or into
    equal-width intervals (``uniform``, the paper's choice); bin edges appear in the class names.

Columns that are constant, have a class with fewer than ``min_class_count`` rows, or look like
identifiers (a non-float column with more than ``max_categories`` distinct values) are skipped with
the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .config import Config, at_least, integers, one_of, optional, optional_name, setting
from .config import names as column_names
from .errors import WscaInputError, require

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("binary", "categorical", "binned")


@dataclass(frozen=True)
class Task:
    """One encoded classification task.

    Attributes:
      name: the metadata column.
      kind: ``"binary"``, ``"categorical"`` or ``"binned"``.
      classes: class names, ``C`` of them (bin intervals for binned tasks).
      labels: ``(N,)`` int32 in ``[0, C)``, ``-1`` where missing.
    """

    name: str
    kind: str
    classes: tuple[str, ...]
    labels: np.ndarray = field(repr=False)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_used(self) -> int:
        return int((self.labels >= 0).sum())


@dataclass(frozen=True)
class TaskSet:
    """The primary task, the metadata tasks and the columns skipped (with reasons)."""

    primary: Task
    tasks: tuple[Task, ...]
    skipped: dict[str, str]


def class_mask(tasks: Sequence[Task]) -> np.ndarray:
    """``(T, K)`` bool, True for the real classes of each task, padded to the widest task ``K``."""
    mask = np.zeros((len(tasks), max(t.n_classes for t in tasks)), bool)
    for i, t in enumerate(tasks):
        mask[i, : t.n_classes] = True
    return mask


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def encode_categorical(values: pd.Series) -> tuple[np.ndarray, tuple[str, ...]]:
    """Values -> ``(labels (N,) int32, -1 missing; class names)``; numbers sort numerically,
    strings alphabetically; empty strings count as missing."""
    import pandas as pd           # here: the CLI's parser imports this module (EncodingConfig)

    values = values.where(~values.astype(str).eq(""), None) if values.dtype == object or pd.api.types.is_string_dtype(values) else values
    present = values.dropna()
    uniques = pd.unique(present)
    try:
        uniques = np.sort(uniques)
    except TypeError:  # mixed types: order by string form
        uniques = np.array(sorted(uniques, key=str), dtype=object)
    index = {u: i for i, u in enumerate(uniques)}
    labels = np.full(len(values), -1, np.int32)
    mask = values.notna().to_numpy()
    labels[mask] = [index[v] for v in values[mask]]
    names = tuple(_class_name(u) for u in uniques)
    return labels, names


def _class_name(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


MAX_BINS = 50


@dataclass(frozen=True)
class EncodingConfig(Config):
    """Which metadata columns become tasks, and how they are encoded (:func:`build_tasks`; the
    ``encoding`` section of :class:`~wsca_jax.analysis.config.AnalysisConfig`)."""

    tasks: tuple[str, ...] | None = setting(None, "columns to analyse (default: every column but the primary and "
                                            "the group column)", optional(column_names()), type="names")
    categorical: tuple[str, ...] = setting((), "columns to treat as categorical", column_names(), type="names")
    continuous: tuple[str, ...] = setting((), "columns to bin", column_names(), type="names")
    bins: int = setting(4, "bins for continuous columns", integers(2, 50))
    binning: str = setting("quantile", "bin edges", one_of("quantile", "uniform"))
    min_class_count: int = setting(5, "rows every class of a task needs; a task with a smaller class is skipped "
                                   "(listed in 'skipped' with the reason)", at_least(1))
    group_column: str | None = setting(None, "patient/group id: folds, bootstrap and permutations keep groups whole",
                                       optional_name())



_ENCODING = EncodingConfig()      # build_tasks' and make_task's defaults: the config's


def bin_continuous(values: np.ndarray, bins: int, binning: str = "quantile") -> tuple[np.ndarray, tuple[str, ...]]:
    """Cut continuous values into classes.

    Args:
      values: ``(N,)`` float, NaN where missing.
      bins: requested number of bins K >= 2.
      binning: ``"quantile"`` (equal counts; duplicate edges merged) or ``"uniform"`` (equal width
        over the observed range, as in the WSC paper).

    Returns:
      ``(labels (N,) int32 with -1 for missing, class names "[lo, hi)" / "[lo, hi]")``.
    """
    require(bins >= 2, f"--bins must be at least 2, found {bins}")
    require(binning in ("quantile", "uniform"), f"--binning must be 'quantile' or 'uniform', found {binning!r}")
    values = np.asarray(values, float)
    ok = np.isfinite(values)
    v = values[ok]
    if binning == "quantile":
        edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)))
    else:
        edges = np.linspace(v.min(), v.max(), bins + 1)
    if len(edges) < 3:  # fewer than two bins survive
        return np.full(len(values), -1, np.int32), ()
    inner = edges[1:-1]
    lab = np.searchsorted(inner, v, side="right").astype(np.int32)
    labels = np.full(len(values), -1, np.int32)
    labels[ok] = lab
    names = []
    for i in range(len(edges) - 1):
        close = "]" if i == len(edges) - 2 else ")"
        names.append(f"[{_fmt(edges[i])}, {_fmt(edges[i + 1])}{close}")
    return labels, tuple(names)


def infer_kind(series: pd.Series, max_categories: int = 20) -> str:
    """Guess ``binary`` / ``categorical`` / ``binned`` / ``identifier`` / ``constant`` for a column."""
    import pandas as pd           # here: the CLI's parser imports this module (EncodingConfig)

    present = series.dropna()
    n_unique = present.nunique()
    if n_unique <= 1:
        return "constant"
    if n_unique == 2:
        return "binary"
    if pd.api.types.is_float_dtype(series.dtype):
        if np.all(np.mod(present.to_numpy(float), 1) == 0) and n_unique <= max_categories:
            return "categorical"
        return "binned"
    if n_unique > max_categories:
        return "identifier"
    return "categorical"


def make_task(
    series: pd.Series,
    kind: str | None = None,
    bins: int = _ENCODING.bins,
    binning: str = _ENCODING.binning,
    min_class_count: int = _ENCODING.min_class_count,
    max_categories: int = 20,
) -> Task | str:
    """Encode one column; returns a :class:`Task`, or the reason (str) it is skipped."""
    import pandas as pd           # here: the CLI's parser imports this module (EncodingConfig)

    name = str(series.name)
    inferred = infer_kind(series, max_categories)
    if inferred == "constant":
        return "constant (fewer than two distinct values)"
    if kind is None:
        kind = inferred
        if kind == "identifier":
            return (f"looks like an identifier ({series.nunique()} distinct values); "
                    "pass it with --continuous or --categorical to use it")
    if kind == "continuous":
        kind = "binned"
    if kind == "binned":
        numeric = pd.to_numeric(series, errors="coerce")
        bad = series.notna() & numeric.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise WscaInputError(
                f"column {name!r} row {row}: expected a number to bin, found {series.iloc[row]!r}")
        labels, classes = bin_continuous(numeric.to_numpy(float), bins, binning)
        if len(classes) < 2:
            return "fewer than two bins with data"
    else:
        labels, classes = encode_categorical(series)
        kind = "binary" if len(classes) == 2 else "categorical"
    counts = np.bincount(labels[labels >= 0], minlength=len(classes))
    if counts.min() < min_class_count:
        worst = int(np.argmin(counts))
        return f"class {classes[worst]!r} has {counts[worst]} rows (< {min_class_count})"
    return Task(name=name, kind=kind, classes=tuple(classes), labels=labels)


def build_tasks(
    metadata: pd.DataFrame,
    primary: str,
    tasks: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    continuous: Sequence[str] = (),
    bins: int = _ENCODING.bins,
    binning: str = _ENCODING.binning,
    group_column: str | None = None,
    min_class_count: int = _ENCODING.min_class_count,
    max_categories: int = 20,
    exclude: Sequence[str] = (),
) -> TaskSet:
    """Encode the primary column and the metadata tasks of a table.

    Args:
      metadata: N rows, one column per attribute, rows in the order of the embeddings.
      primary: the primary (clinical) task's column.
      tasks: columns to analyse; default every column except primary, group and ``exclude``.
      categorical / continuous: force a column's kind (continuous columns are binned).
      bins, binning: discretisation of continuous columns (K >= 2; quantile or uniform).
      group_column: a grouping column (patient id), never a task.
      min_class_count: a task with a class rarer than this is skipped.
      max_categories: a non-float column with more distinct values looks like an identifier.

    Raises:
      WscaInputError: unknown columns, bins < 2, an unusable primary column.
    """
    require(isinstance(bins, (int, np.integer)) and 2 <= bins <= MAX_BINS,
            f"--bins must be an integer from 2 to {MAX_BINS} (every bin is a class a probe must learn), found {bins}")
    require(binning in ("quantile", "uniform"), f"--binning must be 'quantile' or 'uniform', found {binning!r}")
    cols = [str(c) for c in metadata.columns]
    metadata = metadata.set_axis(cols, axis=1)
    named = [("--primary", [primary]), ("--tasks", list(tasks or [])), ("--categorical", list(categorical)),
             ("--continuous", list(continuous)), ("--group-column", [group_column] if group_column else [])]
    for flag, names in named:
        for c in names:
            require(c in cols, f"{flag}: column {c!r} not in metadata (columns: {', '.join(cols)})")
    dup = [c for c in cols if cols.count(c) > 1]
    require(not dup, f"metadata: column {dup[0] if dup else ''!r} appears {len(dup)} times; expected unique column names")
    require(group_column is None or group_column != primary,
            f"--group-column {group_column!r} is also the --primary column; expected a patient/group id column "
            "(each group would hold one class, and no fold could score the primary)")
    for c in cols:
        v = metadata[c]
        if v.dtype.kind == "f" and np.isinf(v.to_numpy()).any():
            n_inf = int(np.isinf(v.to_numpy()).sum())
            raise WscaInputError(f"metadata column {c!r}: {n_inf} infinite value(s) (first at row "
                                 f"{int(np.flatnonzero(np.isinf(v.to_numpy()))[0])}); expected finite numbers or empty "
                                 "cells for missing values")
    both = set(categorical) & set(continuous)
    if both:
        raise WscaInputError(f"column {sorted(both)[0]!r} is given both as --categorical and --continuous")
    forced = {c: "categorical" for c in categorical} | {c: "binned" for c in continuous}

    p = make_task(metadata[primary], forced.get(primary), bins, binning, min_class_count=1,
                  max_categories=max_categories)
    if isinstance(p, str):
        raise WscaInputError(f"--primary column {primary!r} cannot be a task: {p}")
    if tasks:
        names = [c for c in tasks if c != primary]
    else:
        skip = {primary, group_column, *exclude}
        names = [c for c in cols if c not in skip]
    out, skipped = [], {}
    for c in names:
        t = make_task(metadata[c], forced.get(c), bins, binning, min_class_count, max_categories)
        if isinstance(t, str):
            skipped[c] = t
        else:
            out.append(t)
    return TaskSet(primary=p, tasks=tuple(out), skipped=skipped)
