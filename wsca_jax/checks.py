"""Input checks shared by every pipeline: one :class:`~wsca_jax.errors.WscaInputError` line each,
naming what was wrong, where, and what was expected."""

from __future__ import annotations

import numpy as np

from .errors import WscaInputError, require
from .probes import ROW_BLOCK


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


def check_columns(names, columns, what: str, where: str = "", lengths: dict | None = None, rows: int | None = None) -> None:
    """Every name in ``names`` is a column of ``columns`` (a table's columns, or a mapping's keys);
    else one line: ``{what}: no column 'x'{ where} (columns: a, b)``, or, where ``lengths`` (an
    :class:`~wsca_jax.io.EmbeddingFile`'s ``mislength``) has the name, its length against ``rows``."""
    have = [str(c) for c in columns]
    for name in names:
        if name not in have and name in (lengths or {}):
            require(False, f"{what}: column {name!r}{' ' + where if where else ''} has {lengths[name]} values, the "
                           f"embeddings {rows} rows; expected one value per row")
        require(name in have, f"{what}: no column {name!r}{' ' + where if where else ''} "
                              f"(columns: {', '.join(sorted(have)) or 'none'})")


def check_counterfactual(counterfactual, shape: tuple, tasks, what: str = "counterfactual") -> dict:
    """``{task: (N, D) finite embeddings}`` of the same rows with that attribute intervened on, each
    for a metadata task (``tasks``; for a control: the tasks given a counterfactual) and of the
    analysed embeddings' ``shape``."""
    out = {}
    for name, v in dict(counterfactual or {}).items():
        require(name in tasks, (f"{what} {name!r}: not a metadata task (tasks: {', '.join(tasks) or 'none'})"
                                if what == "counterfactual" else
                                f"{what} {name!r}: no counterfactual for that task (counterfactuals: "
                                f"{', '.join(tasks) or 'none'}); expected a control beside a counterfactual"))
        try:
            a = np.asarray(v, np.float64)
        except (TypeError, ValueError):
            raise WscaInputError(f"{what} {name!r}: expected a numeric (N, D) array") from None
        require(a.shape == tuple(shape), f"{what} {name!r}: shape {a.shape}, the embeddings' is {tuple(shape)}; "
                                         "expected the same rows, in the same order, embedded by the same network")
        bad = np.flatnonzero(~np.isfinite(a).all(1))
        require(len(bad) == 0, f"{what} {name!r}: row {bad[0] if len(bad) else 0} holds a non-finite value "
                               f"({len(bad)} such rows); expected finite embeddings")
        out[name] = a
    return out


def check_head_null(head_null, task_heads) -> dict:
    """``{task: (M,) finite values}`` of the seed nulls, each for a task given a jointly trained head."""
    out = {}
    for name, v in dict(head_null or {}).items():
        require(name in (task_heads or {}), f"head_null {name!r}: no jointly trained head given for that task")
        a = np.asarray(v, float).ravel()
        require(len(a) >= 1 and np.isfinite(a).all(), f"head_null {name!r}: expected finite max |WSC| values")
        bad = a[(a < 0) | (a > 1)]
        require(len(bad) == 0, f"head_null {name!r}: value {bad[:1].tolist()[0] if len(bad) else ''} is not a max |WSC|; "
                               f"expected values in [0, 1] ({len(bad)} outside)")
        out[name] = a
    return out

