"""Reading user files: embeddings (.npy / .npz), metadata (.csv / .parquet), heads (.npy).

Every problem becomes a one-line :class:`~wsca_jax.errors.WscaInputError` naming the file.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import WscaInputError, require


class EmbeddingFile(NamedTuple):
    """Contents of an embeddings file.

    Attributes:
      embeddings: ``(N, D)``.
      heads: ``{task: (C, D) or (D,)}`` from ``head_<task>`` arrays (``wsca embed`` writes them).
      columns: ``{name: (N,)}`` other 1-D arrays of length N (labels, metadata).
      logits: ``{task: (N, C)}`` from ``logits_<task>`` arrays (the model's outputs; None for ``.npy``).
      mislength: ``{name: length}`` of the 1-D arrays whose length is not N (not columns; a column
        asked for by one of these names is refused with its length: :func:`~wsca_jax.checks.check_columns`).
    """

    embeddings: np.ndarray
    heads: dict
    columns: dict
    logits: dict | None = None
    mislength: dict = {}


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit`` characters (for one-line errors)."""
    return (str(e).strip().splitlines() or [""])[0][:limit]


def _exists(path: str, what: str) -> None:
    require(os.path.exists(path), f"{what}: file not found: {path}")
    require(os.path.isfile(path), f"{what}: not a file: {path}")


def load_embeddings(path: str, what: str = "--embeddings") -> EmbeddingFile:
    """Read ``.npy`` (N, D) or ``.npz`` with key ``embeddings`` (+ ``head_<task>``, columns); errors
    name the option ``what`` the file came from (``--embeddings``, ``--runs``, ``--val`` ...)."""
    _exists(path, what)
    ext = os.path.splitext(path)[1].lower()
    require(ext in (".npy", ".npz"), f"{what} {path}: expected a .npy or .npz file, found {ext or 'no extension'}")
    try:                                   # .npy memory-mapped: read in blocks of rows, never copied whole
        data = np.load(path, allow_pickle=False, mmap_mode="r" if ext == ".npy" else None)
    except Exception as e:  # corrupt or not a NumPy file
        raise WscaInputError(f"{what} {path}: cannot be read as {ext} ({type(e).__name__}: {first_line(e)})") from None
    if ext == ".npy":
        return EmbeddingFile(data, {}, {})
    with data:
        keys = list(data.keys())
        require("embeddings" in keys, f"{what} {path}: no array named 'embeddings' (found: {', '.join(keys) or 'none'})")
        arrays = {}
        for k in keys:
            try:
                arrays[k] = np.asarray(data[k])
            except ValueError as e:
                if "pickle" in str(e):             # object arrays need pickle, which is refused
                    raise WscaInputError(f"{what} {path}: array {k!r} cannot be read without pickle ({e}); "
                                         "store text as fixed-width strings (np.array(..., dtype=str))") from None
                raise WscaInputError(f"{what} {path}: array {k!r} is damaged ({type(e).__name__}: "
                                     f"{first_line(e)})") from None
            except Exception as e:                 # damaged member: zip CRC, header tokens, truncation ...
                raise WscaInputError(f"{what} {path}: array {k!r} is damaged ({type(e).__name__}: "
                                     f"{first_line(e)})") from None
    return embedding_file(arrays)


def embedding_file(arrays: dict) -> EmbeddingFile:
    """An :class:`EmbeddingFile` from ``wsca embed``'s arrays (``embeddings``, ``head_``/``bias_``/``logits_``
    arrays, 1-D columns; ``meta_<name>`` restores a column whose name is reserved)."""
    emb = arrays["embeddings"]
    heads = {k[len("head_"):]: v for k, v in arrays.items() if k.startswith("head_")}
    logits = {k[len("logits_"):]: v for k, v in arrays.items() if k.startswith("logits_")}
    n = emb.shape[0] if emb.ndim >= 1 else -1
    cols, mislength = {}, {}
    for k, v in arrays.items():
        if k == "embeddings" or k.startswith(("head_", "bias_", "logits_")) or v.ndim != 1:
            continue
        name = k[len("meta_"):] if k.startswith("meta_") else k
        if v.shape[0] != n:
            mislength[name] = int(v.shape[0])
            continue
        if v.dtype.kind == "U":                     # "" marks a missing text value
            v = np.where(v == "", None, v.astype(object))
        cols[name] = v
    return EmbeddingFile(emb, heads, cols, logits, mislength)


def whole_numbers(v: np.ndarray) -> np.ndarray:
    """A float column whose values are all finite whole numbers as integers (so that 1.0 and 1 name
    one class in every split and file: ``wsca mid``'s classes and groups), else as it is."""
    if v.dtype.kind == "f" and len(v) and np.isfinite(v).all() and (v == np.round(v)).all() and np.abs(v).max() < 2 ** 53:
        return v.astype(np.int64)
    return v


def load_metadata(path: str) -> pd.DataFrame:
    """Read a ``.csv`` or ``.parquet`` table (one row per embedding)."""
    _exists(path, "--metadata")
    ext = os.path.splitext(path)[1].lower()
    require(ext in (".csv", ".parquet", ".pq"), f"--metadata {path}: expected a .csv or .parquet file, found {ext or 'no extension'}")
    try:
        if ext == ".csv":
            import csv
            with open(path, newline="", encoding="utf-8-sig") as f:
                header = next(csv.reader(f), [])
            dup = next((c for c in header if header.count(c) > 1), None)
            require(dup is None, f"--metadata {path}: column {dup!r} appears {header.count(dup)} times in the header; "
                                 "expected unique column names")
            meta = pd.read_csv(path)
        else:
            meta = pd.read_parquet(path)
    except WscaInputError:
        raise
    except Exception as e:
        raise WscaInputError(f"--metadata {path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for c in meta.columns:
        v = meta[c]
        if v.dtype == object:
            nested = v.map(lambda x: isinstance(x, (list, tuple, dict, set, np.ndarray))).to_numpy()
            if nested.any():
                raise WscaInputError(f"--metadata {path}: column {c!r} holds {type(v[nested].iloc[0]).__name__} values "
                                     f"(row {int(np.flatnonzero(nested)[0])}); expected one number or text per cell")
    return meta


def load_head(path: str) -> np.ndarray:
    """Read a ``.npy`` head of shape (C, D) or (D,)."""
    _exists(path, "--primary-head")
    require(path.lower().endswith(".npy"), f"--primary-head {path}: expected a .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise WscaInputError(f"--primary-head {path}: cannot be read ({type(e).__name__}: {e})") from None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def umask_mode(folder: bool = False) -> int:
    """The mode a new file (``0o666``) or folder (``0o777``) gets under the user's umask. Temporary
    names are created private (``0o600`` / ``0o700``); outputs get this mode before they are renamed,
    so colleagues on a shared folder can read them as they could any file the user makes."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def atomic_write(path, write) -> None:
    """Create ``path`` through a temporary file in the same folder, then rename (never half-written).

    Args:
      write: called with a binary file object open on the temporary file.
    """
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            os.fchmod(f.fileno(), umask_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finite_or_none(x):
    """``x`` as a float, or None where it is None, NaN or infinite (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else x


def json_ready(obj):
    """``obj`` with NumPy values as Python ones and non-finite floats as None (JSON has no NaN or
    Infinity; every record the tool writes uses None for them, as ``wsca.json`` does)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "tolist"):                           # NumPy arrays and scalars
        return json_ready(obj.tolist())
    return finite_or_none(obj) if isinstance(obj, float) else obj


def atomic_write_text(path, text: str) -> None:
    """Write a text file atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def _name_ok(path: str, what: str) -> None:
    for part in os.path.abspath(path).split(os.sep):
        require(len(part.encode()) <= 255, f"{what} {path[:60]}...: a path component is {len(part.encode())} bytes "
                                           "long; expected at most 255")


def _probe_writable(folder: str, what: str, path: str) -> None:
    """Create and remove a temporary folder in ``folder`` (the nearest existing ancestor of ``path``):
    the only reliable test that outputs can be written there (``os.access`` says yes to root in /proc)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".wsca-check-", dir=folder))
    except OSError as e:
        raise WscaInputError(f"{what} {path}: cannot write in {folder} ({e.strerror or type(e).__name__})") from None


def _existing_ancestor(path: str, what: str) -> str:
    d = os.path.abspath(path)
    while not os.path.exists(d):
        d = os.path.dirname(d)
    require(os.path.isdir(d), f"{what} {path}: {d} is a file, not a folder")
    return d


def check_out_dir(path: str, what: str = "--out") -> None:
    """Before any work: ``path`` is (or can be created as) a writable folder."""
    require(isinstance(path, str) and path.strip() != "", f"{what}: empty path; expected an output folder")
    _name_ok(path, what)
    require(not os.path.exists(path) or os.path.isdir(path), f"{what} {path}: exists and is not a folder")
    _probe_writable(_existing_ancestor(path, what), what, path)


def check_out_file(path: str, ext: str | None, what: str = "--out") -> None:
    """Before any work: ``path`` can be written as a file (not a folder; parent writable)."""
    require(isinstance(path, str) and path.strip() != "", f"{what}: empty path; expected a file name")
    _name_ok(path, what)
    require(not os.path.isdir(path), f"{what} {path}: is a folder; expected a file name"
                                     + (f" ending in {ext}" if ext else ""))
    require(not path.endswith(os.sep), f"{what} {path}: ends in {os.sep}; expected a file name")
    _probe_writable(_existing_ancestor(os.path.dirname(os.path.abspath(path)), what), what, path)
