"""Mitigate and verify (issues 12, 29): ERM / class-balanced / JTT / MID / random-band / MID-oracle / DFR
heads from ``wsca embed`` files,
scored by worst-group accuracy, and WSC of every head against the group attribute's probe.

:func:`analyze_mid` is what ``wsca mid`` runs: the record it returns is ``mid.json`` (schema in
DESIGN.md's spirit: documented in :func:`analyze_mid`), the arrays feed the figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis import AnalysisConfig, analyze
from ..errors import require
from .. import use
from ..io import EmbeddingFile, whole_numbers
from ..checks import check_columns
from ..config import with_deprecated_keywords
from .config import MidConfig, RENAMED
from .mining import check_groups, enrichment, logit_array, margins, mislabel_scores, retrain_methods
from .retrain import standardise
from ..tasks import bin_continuous, build_tasks, encode_categorical


def split_arrays(ef: EmbeddingFile, primary: str, groups: list[str], classes=None, what: str = "--val",
                 source: str | None = None) -> dict:
    """One split as :func:`~wsca_jax.mitigation.mining.retrain_methods` takes it.

    ``ef``: a loaded ``wsca embed`` file (with ``logits_<primary>``, the model's outputs; their columns
    follow the class order of ``wsca train``: numbers numerically, text alphabetically).
    ``groups``: columns whose joint value is the group (e.g. ``label,place``). ``classes``: the
    primary class names in the logits' order (default: this split's values in that order; pass the
    training split's, or the run's). The logits are checked by
    :func:`~wsca_jax.mitigation.mining.logit_array` (``(N,)`` or ``(N, 1)``: one logit of a two-class
    primary, returned as ``(N,)``; ``(N, C)``; no NaN or inf), the embeddings for NaN and inf;
    ``source`` (the file) is named in those messages. The split records ``group_columns`` (:func:`analyze_mid` writes
    them as the ``groups`` setting).
    """
    check_columns([primary, *groups], ef.columns, what, lengths=ef.mislength, rows=len(ef.embeddings))
    cols = {**ef.columns, **{c: whole_numbers(np.asarray(ef.columns[c])) for c in (primary, *groups)}}
    lab, names = encode_categorical(pd.Series(np.asarray(cols[primary], dtype=object)))
    require((lab >= 0).all(), f"{what}: column {primary!r} has missing values")
    classes = list(names) if classes is None else [str(c) for c in classes]
    unknown = [n for n in names if n not in classes]
    require(not unknown, f"{what}: primary classes {', '.join(unknown)} not among the training split's ({', '.join(classes)})")
    y = np.array([classes.index(names[i]) for i in lab], int)
    logits = (ef.logits or {}).get(primary)
    require(logits is not None, f"{what}: no logits_{primary} array (the model's outputs; wsca embed writes them "
                                "from version 0.7 on: embed the split again)")
    where = what if source is None else f"{what} {source}"
    logits = logit_array(logits, len(classes), f"{where}: logits_{primary}")
    require(len(logits) == len(y), f"{what}: logits_{primary} has {len(logits)} rows, embeddings {len(y)}")
    x = np.asarray(ef.embeddings, np.float64)
    bad = ~np.isfinite(x).all(1) if x.ndim == 2 else None
    require(bad is not None and not bad.any(), f"{where}: embeddings " + (f"of shape {x.shape}, expected (N, D)"
            if bad is None else f"have {int(bad.sum())} row(s) with NaN or inf (first: row {int(np.argmax(bad))})"))
    g = None
    if groups:
        parts = [np.array([f"{c}={v}" for v in np.asarray(cols[c], dtype=object)]) for c in groups]
        g = parts[0]
        for p in parts[1:]:
            g = np.char.add(np.char.add(g, ","), p)
    return {"x": x, "y": y, "logits": logits, "groups": g, "classes": classes,
            "head": ef.heads.get(primary), "meta": cols, "group_columns": list(groups), "primary": primary}


def enrichment_columns(split: dict, max_levels: int = 20) -> dict:
    """What the band and the clusters are tested for: the primary's classes (under the primary's own
    name), the joint group, and every other metadata column with 2 to ``max_levels`` values (a patient
    id or a continuous column is left out). A derived column never hides a metadata column: the joint
    group is ``group``, or ``group (label,place)`` when a metadata column is called ``group``; without a
    ``primary`` name the classes are ``label`` (``label (primary classes)`` when that name is taken)."""
    meta = split.get("meta", {})
    primary = split.get("primary") or _unshadowed("label", meta, "primary classes")
    cols = {primary: np.array(split["classes"])[split["y"]]}       # the primary's own column, as class names
    if split["groups"] is not None:
        cols[_unshadowed("group", {**meta, **cols}, ",".join(split.get("group_columns") or []) or "joint groups")] = split["groups"]
    for name, v in sorted(meta.items()):
        if name in cols:
            continue
        levels = pd.Series(np.asarray(v, dtype=object)).dropna().nunique()
        if 2 <= levels <= max_levels:
            cols[name] = np.asarray(v, dtype=object)
    return cols


def _unshadowed(name: str, taken: dict, qualifier: str) -> str:
    """``name``, or ``name (qualifier)`` while a column in ``taken`` is called that (a derived column's name)."""
    while name in taken:
        name = f"{name} ({qualifier})"
    return name


def _head_in_embedding_coords(coef: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """A head fitted on standardised columns, as ``(K', D)`` weights on the raw embedding."""
    return (np.asarray(coef) / sd[:, None]).T


def analyze_mid(train: dict, val: dict, test: dict, config: MidConfig | None = None, **deprecated) -> tuple[dict, dict]:
    """The mitigation record and the arrays behind its figures.

    Args:
      train, val, test: :func:`split_arrays` outputs (train: for the group shares only).
      config: a :class:`~wsca_jax.mitigation.config.MidConfig` (default: the defaults): the band
        (``band`` share nearest 0 per predicted class, or ``band_threshold``), the clusters, the heads
        retrained (``methods``) and the WSC check of every head against the ``verify`` columns of the
        test split (``bootstrap`` / ``permutations`` as in ``analyze``). The settings as keywords
        (``band=``, ``ks=``, ``n_refits=``, ``verify=`` ...) still work for one release, with a
        ``DeprecationWarning``.
    Returns:
      ``(record, arrays)``; record = ``{"methods": {name: {worst_group, worst_group_ci, mean, mean_ci,
      mean_plain, per_group, per_group_ci, per_group_n, C, converged, wsc}}`` (JTT also ``id_C``, ``upweight``,
      ``error_share``, ``weight_on_errors``, ``below_majority``, ``degenerate``; ``random_band`` its ``band_k``), "band": {share, n, enrichment: [...]},
      "clusters": [{cluster, n, enrichment: [...]}], "k", "silhouette", "settings", "resolved"}``;
      ``settings`` is ``config.to_dict()``, ``resolved`` the cluster counts tried (``k``), the C grid
      tried, the training groups' shares and the rows retrained on.
    """
    config = _with_split_groups(with_deprecated_keywords(MidConfig, config, deprecated, "analyze_mid", RENAMED), train)
    shares = _group_shares(train, val, test)
    check_groups(val, test, config.retraining.methods)          # every check before the retraining
    check_verify(test, config.verification.verify)
    r = retrain_methods(val, test, shares, config)
    rec = {"methods": r["methods"], "settings": config.to_dict(),
           "resolved": {"k": list(config.mining.ks), "C_grid": list(config.retraining.Cs), "retrained_on": "validation rows",
                        "group_shares_train": shares}}
    arrays = {"margin_val": margins(val["logits"]), "y_val": val["y"]}
    if r["mining"] is not None:
        _mining_record(rec, arrays, r["mining"], val, config.mining)
    sd = val["x"].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    ver = config.verification
    for name, m in rec["methods"].items():
        head = test["head"] if name == "erm" else _head_in_embedding_coords(r["heads"][name]["coef"], sd)
        m["wsc"] = {} if head is None else verify_head(test, head, ver.verify, ver.bootstrap, ver.permutations,
                                                       config.seed)
    return rec, arrays


def check_verify(split: dict, tasks) -> None:
    """Every ``--verify`` column is in ``split`` (the test rows) and can be a task there (not constant,
    no class rarer than analyze's ``min_class_count``, not an identifier): the check
    :func:`verify_head` would otherwise fail at, after the retraining."""
    for t in tasks:
        check_columns([t], split["meta"], "--verify", "in the test split")
        meta = pd.DataFrame({"__primary": np.array(split["classes"])[split["y"]], t: split["meta"][t]})
        reason = build_tasks(meta, "__primary", tasks=[t]).skipped.get(t)
        require(reason is None, f"--verify {t}: the test split's column cannot be a task: {reason}")


def _with_split_groups(config: MidConfig, train: dict) -> MidConfig:
    """``config`` with ``groups`` = the columns the splits' groups were made of (:func:`split_arrays`)."""
    made = train.get("group_columns")
    if made is None:
        return config
    require(not config.groups or list(config.groups) == list(made),
            f"--groups {','.join(config.groups)}: the splits' groups are of {','.join(made) or 'no columns'}")
    return config.replace(groups=list(made))


def _group_shares(train: dict, val: dict, test: dict) -> dict:
    """``{group: share}`` of the training rows, after checking the splits fit together."""
    require(train["groups"] is not None, "--groups: the training split has no group column")
    widths = {k: s["x"].shape[1] for k, s in (("--train", train), ("--val", val), ("--test", test))}
    require(len(set(widths.values())) == 1, "the splits' embeddings differ in width ("
            + ", ".join(f"{k} {v}" for k, v in widths.items()) + "): embed them with the same model")
    names, counts = np.unique(train["groups"], return_counts=True)
    shares = {str(g): float(c / counts.sum()) for g, c in zip(names, counts)}
    absent = sorted(set(np.asarray(test["groups"]).astype(str)) - set(shares)) if test["groups"] is not None else []
    require(not absent, f"groups {', '.join(absent)} of the test rows have no training rows (the mean accuracy "
                        "weights groups by their training shares)")
    return shares


def _mining_record(rec: dict, arrays: dict, mi: dict, val: dict, mining) -> None:
    """The band and its clusters, with what they are enriched for, into ``rec`` and ``arrays``."""
    cols = enrichment_columns(val)
    suspicion = mislabel_scores(standardise(val["x"])[0], val["y"], k=min(10, len(val["y"]) - 1))
    rec["band"] = {"share": mining.band, "threshold": mining.band_threshold, "n": int(mi["band"].sum()),
                   "cells": mi["cell_sizes"], "enrichment": _records(enrichment(mi["band"], cols)),
                   "mislabel_suspicion_mean": float(suspicion[mi["band"]].mean()),
                   "mislabel_suspicion_mean_outside": float(suspicion[~mi["band"]].mean()) if (~mi["band"]).any() else None}
    rec["k"], rec["silhouette"] = mi["k"], {str(k): v for k, v in mi["silhouette"].items()}
    rec["clusters"] = [{"cluster": c, "n": int((mi["clusters"] == c).sum()),
                        "mislabel_suspicion_mean": float(suspicion[mi["clusters"] == c].mean()),
                        "enrichment": _records(enrichment(mi["clusters"] == c, cols))}
                       for c in range(mi["k"]) if (mi["clusters"] == c).any()]       # k-means may leave one empty
    arrays.update(band=mi["band"], clusters=mi["clusters"])
    if val["groups"] is not None:
        arrays["groups_val"] = val["groups"]


def _attribute_levels(values: np.ndarray, bins: int = 4) -> np.ndarray:
    """``(N,)`` int levels, -1 missing: categories as ``analyze`` encodes them; a numeric column with more
    than 20 values is cut into ``bins`` quantile bins (as ``analyze`` bins continuous columns)."""
    v = pd.Series(np.asarray(values, dtype=object))
    num = pd.to_numeric(v, errors="coerce")
    if num.notna().sum() == v.notna().sum() and num.nunique() > 20:
        return bin_continuous(num.to_numpy(float), bins)[0]
    return encode_categorical(v)[0]


def within_class_eta(score: np.ndarray, y: np.ndarray, attribute: np.ndarray, permutations: int = 200,
                     seed: int = 0) -> dict:
    """How much a head's output follows an attribute beyond the label: :func:`wsca_jax.use.within_class_eta`
    on the attribute's levels (:func:`_attribute_levels`: a numeric attribute with more than 20 values
    is binned), as ``{"eta", "null_q95", "p_value"}``."""
    r = use.within_class_eta(score, y, _attribute_levels(attribute), permutations=permutations, seed=seed)
    return {"eta": r["estimate"], "null_q95": r["null_q95"], "p_value": r["p_value"]}


def verify_head(split: dict, head: np.ndarray, tasks, bootstrap: int, permutations: int, seed: int) -> dict:
    """Does a head still use each metadata column in ``tasks``? On ``split``'s rows: WSC of the head
    against the column's probe (``analyze`` with the head as the primary head; the paper's weight-space
    cosine) and the within-class correlation ratio of the head's score on the column
    (:func:`within_class_eta`, an output-space check: two heads with similar weight cosines can
    differ there; with more than two classes the largest over the class scores).
    ``{task: {max_abs_wsc, ci, p_value, within_class_eta, within_class_eta_null_q95, within_class_eta_p}}``."""
    if not tasks:
        return {}
    for t in tasks:
        check_columns([t], split["meta"], "--verify", "in the test split")
    if not np.abs(head).sum() > 0:             # the chosen penalty removed every feature: a constant model
        return {t: {"max_abs_wsc": None, "ci": None, "p_value": None, "within_class_eta": None,
                    "within_class_eta_null_q95": None, "within_class_eta_p": None,
                    "note": "all-zero head (the chosen C removed every feature): no direction to compare"} for t in tasks}
    meta = {"__primary": np.array(split["classes"])[split["y"]], **{t: split["meta"][t] for t in tasks}}
    res = analyze(split["x"], meta, "__primary", primary_head=head,
                  config=AnalysisConfig().replace(tasks=list(tasks), bootstrap=bootstrap, permutations=permutations,
                                                  seed=seed))
    scores = use.decision_scores(head, split["x"])
    out = {}
    for t in tasks:
        etas = [within_class_eta(sc, split["y"], split["meta"][t], seed=seed) for sc in scores.T]
        e = max(etas, key=lambda d: d["eta"])                     # the class score that follows it most
        out[t] = {**{k: res.tasks[t].summary.get(k) for k in ("max_abs_wsc", "ci", "p_value")},
                  "within_class_eta": e["eta"], "within_class_eta_null_q95": e["null_q95"],
                  "within_class_eta_p": e["p_value"]}
    return out


def _records(df) -> list[dict]:
    """The rows of an :func:`~wsca_jax.mitigation.mining.enrichment` table as plain values; a
    non-finite value (NaN: an odds ratio of a table with an empty row or column; inf: an infinite
    one, told apart by ``odds_ratio_kind``) is None, as in ``mid.json``."""
    def plain(v):
        v = v.item() if hasattr(v, "item") else v
        return None if isinstance(v, float) and not np.isfinite(v) else v
    return [{k: plain(v) for k, v in row.items()} for row in df.to_dict("records")]
