"""The whole integrated feature analysis of one head on one dataset (:func:`analyze_ifa`), and its two
sources: a ``wsca train`` run and its dataset (:func:`ifa_for_run`), or stored feature maps with their
GAP + linear head (:func:`ifa_for_maps`)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..errors import require
from .cams import Split, feature_maps, ifa_arrays, maps_split, resize_maps, split_at
from ..checks import check_columns
from ..config import with_deprecated_keywords
from .config import RENAMED, IfaConfig
from .decomposition import confounder_channels, decompose, region_mass
from .profiles import (apply_scale, cam_percentiles, common_scale, consistency, importance_profile, outliers,
                       per_image_scale, principal_channels, redundancy)


def analyze_ifa(split: Split, images: np.ndarray, labels: np.ndarray, metadata: dict | None = None,
                config: IfaConfig | None = None, *, class_names=None, **deprecated) -> tuple[dict, dict]:
    """Integrated feature analysis of one head on one dataset.

    Args:
      split: the model cut at its layer (:func:`split_at`, ``columns`` = the analysed head).
      images: ``(N, H, W, C)``; labels: ``(N,)`` true classes of that head.
      metadata: ``{column: (N,)}`` attributes to locate (``confounders``).
      config: an :class:`~wsca_jax.ifa.config.IfaConfig` (default: the defaults): the map ``method``,
        its ``target`` (predicted, true or a class index), the decomposition's ``fractions`` and
        ``random_masks``, the ``region``, ``all_samples``, ``mapping``, ``seed`` and ``batch_size``
        (``layer`` and ``tasks`` are the callers': :func:`ifa_for_run`, :func:`ifa_for_maps`). The
        settings as keywords (``method=``, ``n_random=``, ``correct_only=`` ...) still work for one
        release, with a ``DeprecationWarning``.
      class_names: the head's class names (default ``"0"``, ``"1"`` ...).
    Returns:
      ``(record, arrays)``: the JSON-ready record (``ifa.json``; its ``settings`` is ``config.to_dict()``)
      and arrays for ``ifa_importance.npz`` (``importance (N, K)``, ``target``, ``logits``, ``cam_max``,
      ``cam_min``, ``weights``, ``cams`` (unscaled maps) and ``cams_common`` (on the common scale)).
    """
    config = with_deprecated_keywords(IfaConfig, config, deprecated, "analyze_ifa", RENAMED)
    target, mapping = config.target_class, config.mapping
    y = np.asarray(labels, int)
    r = ifa_arrays(split, images, y if target == "true" else target, config.method, config.batch_size)
    C = r["logits"].shape[1]
    if target is not None and not isinstance(target, str):
        require(0 <= int(target) < C, f"--target {target}: the head has classes 0..{C - 1}")
    correct = r["logits"].argmax(1) == y
    keep = correct if not config.all_samples and correct.any() else np.ones(len(y), bool)
    prof = importance_profile(r["importance"], r["target"], keep)
    low, high = common_scale(r["cam_max"], r["cam_min"])
    common = apply_scale(r["cam"], low, high, mapping)
    diff = np.max(np.abs(np.stack(list(prof["diff"].values()))), axis=0)
    dec = decompose(split, images, y, r["weights"], {"importance": prof["overall"], "difference": diff},
                    config.fractions, config.random_masks, config.seed, config.batch_size)
    names = list(class_names) if class_names is not None else [str(c) for c in range(C)]
    rec = {"method": config.method, "n": int(len(y)), "n_profile": int(keep.sum()),
           "channels": int(r["importance"].shape[1]), "map_shape": list(r["cam"].shape[1:]), "classes": names,
           "target": "predicted" if target is None else str(target), "accuracy": float(correct.mean()),
           **_profile_record(r, prof, keep, names),
           "scale": {"low": low, "high": high, "mapping": mapping, "low_percentile_of_minima": 50,
                     "high_percentile_of_maxima": 90},
           "consistency": {k: {"pearson_r": {names[c]: v for c, v in d.items()}}
                           for k, d in _consistency(r, common).items()},
           "decomposition": dec["rows"], "full_model": dec["full"], "tolerance": dec["tolerance"],
           "smallest_sufficient_fraction": dec["smallest_sufficient_fraction"]}
    if metadata:
        emb = feature_maps(split, images, config.batch_size).mean(axis=(1, 2))
        rec["confounders"] = {}
        for col, vals in metadata.items():
            c = confounder_channels(emb, vals, r["importance"], seed=config.seed)
            c["contribution"] = c["contribution"].tolist()
            rec["confounders"][col] = c
    if config.region is not None:
        scaled = apply_scale(resize_maps(r["cam"], images.shape[1:3]), low, high, mapping)
        rec["localization"] = {names[c]: v for c, v in region_mass(scaled, config.region, r["target"]).items()}
        rec["region"] = list(config.region)
    rec["settings"] = config.to_dict()
    arrays = {k: r[k] for k in ("importance", "target", "logits", "cam_max", "cam_min", "weights")}
    arrays["cams_common"] = common.astype(np.float32)
    arrays["cams"] = np.asarray(r["cam"], np.float32)
    return rec, arrays


def _profile_record(r: dict, prof: dict, keep: np.ndarray, names: list) -> dict:
    """The importance profiles, principal channels, redundancy, outliers and CAM percentiles."""
    kept = np.flatnonzero(keep)                      # outlier rows are reported as rows of ``images``
    return {"profile": {"overall": prof["overall"].tolist(),
                        "by_class": {names[c]: v.tolist() for c, v in prof["by_class"].items()},
                        "difference": {names[c]: v.tolist() for c, v in prof["diff"].items()},
                        "n": {names[c]: k for c, k in prof["n"].items()}},
            "principal_channels": {str(k): v for k, v in principal_channels(prof["overall"]).items()},
            "redundancy": redundancy(r["importance"][keep]),
            "outliers": [{"row": int(kept[i]), "class": names[c], "distance": d}
                         for i, c, d in outliers(r["importance"][keep], r["target"][keep])],
            "cam_percentiles": cam_percentiles(r["cam_max"], r["cam_min"])}


def _consistency(r: dict, common: np.ndarray) -> dict:
    """CAM-logit consistency of the unscaled maps, on the common scale and scaled per image."""
    return {"unscaled": consistency(r["cam"], r["logits"], r["target"]),
            "common_scale": consistency(common, r["logits"], r["target"]),
            "per_image_scale": consistency(per_image_scale(r["cam"]), r["logits"], r["target"])}


def ifa_for_run(run_dir: str, dataset, split_name: str = "test", which: str = "best", config: IfaConfig | None = None,
                **deprecated) -> tuple[dict, dict, np.ndarray]:
    """:func:`analyze_ifa` of a ``wsca train`` run's primary head on one split of its dataset.

    Args:
      dataset: the run's :class:`~wsca_jax.training.data.ImageDataset`.
      config: an :class:`~wsca_jax.ifa.config.IfaConfig`; its ``layer`` is ``last`` (the backbone's
        output, the maps before pooling) or the name of a submodule of the backbone, its ``tasks`` the
        metadata columns to locate (default: every other column with 2-20 classes). Settings as
        keywords (``layer=``, ``tasks=``, ``region=`` ...) still work for one release, with a
        ``DeprecationWarning``.
    Returns: ``(record, arrays, images)``; ``arrays["rows"]`` are the split's rows analysed (those with a
      primary label), and the record's row numbers (``outliers``) index them.
    """
    import pandas as pd

    from ..tasks import encode_categorical
    from ..training.train import encode_labels, load_run

    if isinstance(config, str):                          # the 0.8 signature's fifth argument: the layer
        deprecated, config = {"layer": config, **deprecated}, None
    config = with_deprecated_keywords(IfaConfig, config, deprecated, "ifa_for_run", RENAMED)
    model, params, rec = load_run(run_dir, which)
    sub = dataset.select_split(split_name)
    require(len(sub) > 0, f"--split {split_name}: the dataset has no {split_name} rows")
    primary = rec["primary"]
    classes = rec["tasks"][0]["classes"]
    y, specs = encode_labels(sub.columns, [primary])
    require(list(specs[0].classes) == list(classes),
            f"--split {split_name}: primary classes {list(specs[0].classes)} differ from the run's {list(classes)}")
    keep = y[:, 0] >= 0
    images, labels = sub.images[keep], y[keep, 0]
    meta = {}
    names = config.tasks if config.tasks is not None else [c for c in sub.columns if c != primary]
    for c in names:
        check_columns([c], sub.columns, "--tasks", "in the dataset")
        lab, cl = encode_categorical(pd.Series(np.asarray(sub.columns[c])[keep]))
        if 2 <= len(cl) <= 20:
            meta[c] = lab
    split = split_at(model, params, "backbone" if config.layer == "last" else config.layer, columns=(0, len(classes)))
    out, arrays = analyze_ifa(split, images, labels, meta, config, class_names=[str(c) for c in classes])
    arrays["rows"] = np.flatnonzero(keep)                # rows of the split analysed (primary label present)
    out.update(layer=config.layer, run=run_dir, checkpoint=which, split=split_name, primary=primary,
               n_split=int(len(sub)))
    return out, arrays, images


def _check_maps(maps: np.ndarray, head: np.ndarray, path: str, n: int, primary: str) -> None:
    """Stored maps ``(N, h, w, K)`` that a CAM analysis can read: finite, not all zero; a finite head."""
    require(maps.ndim == 4 and len(maps) == n,
            f"--embeddings {path}: feature_maps must be (N, h, w, K) with N = {n}, found {maps.shape}")
    bad = ~np.isfinite(maps).reshape(len(maps), -1).all(1)
    require(not bad.any(), f"--embeddings {path}: feature_maps of image {int(np.argmax(bad))} contain NaN or inf "
                           f"({int(bad.sum())} such images); expected finite values")
    require(bool(np.any(maps != 0)), f"--embeddings {path}: feature_maps are all zero (no channel carries anything); "
                                     "expected the maps `wsca embed --feature-maps` writes")
    require(np.isfinite(head).all(), f"--embeddings {path}: head_{primary} contains NaN or inf")


def ifa_for_maps(path: str, primary: str | None = None, config: IfaConfig | None = None,
                 **deprecated) -> tuple[dict, dict, None]:
    """:func:`analyze_ifa` of stored feature maps (a ``wsca embed --feature-maps`` file), no network.

    CAM only: the file holds the last maps and the GAP + linear head (``head_<primary>``,
    ``bias_<primary>``), not the network, so there are no gradients (Grad-CAM, gradient x activation),
    no earlier layer and no image-resolution maps for ``region``. When the file has
    ``logits_<primary>``, the maps and head must reproduce them (a check that they belong together).

    Args:
      primary: the analysed head (default: the file's only ``head_`` array).
      config: an :class:`~wsca_jax.ifa.config.IfaConfig`; its ``tasks`` are the metadata columns to
        locate (default: every other column with 2-20 classes). Settings as keywords still work for one
        release, with a ``DeprecationWarning``.
    Returns: ``(record, arrays, None)`` like :func:`ifa_for_run` (``None``: no images).
    """
    import pandas as pd

    from ..io import load_embeddings
    from ..tasks import encode_categorical

    if isinstance(config, (list, tuple)):                             # 0.8's third positional argument: tasks
        deprecated, config = {"tasks": config, **deprecated}, None
    config = with_deprecated_keywords(IfaConfig, config, deprecated, "ifa_for_maps", RENAMED)
    require(config.method == "cam", f"--method {config.method}: stored feature maps support CAM only (gradients "
                                    "need the network: use --run)")
    require(config.layer == "last", f"--layer {config.layer}: stored feature maps are the last layer's (other layers "
                                    "need --run)")
    require(config.region is None, "--region: stored feature maps are not at image resolution (use --run)")
    ef = load_embeddings(path)
    with np.load(path, allow_pickle=False) as data:
        require("feature_maps" in data.files, f"--embeddings {path}: no feature_maps array (write it with "
                                              "wsca embed --feature-maps)")
        maps = np.asarray(data["feature_maps"], np.float32)
        if primary is None:
            require(len(ef.heads) == 1, f"--embeddings {path}: --primary needed (heads: {', '.join(ef.heads) or 'none'})")
            primary = next(iter(ef.heads))
        require(primary in ef.heads, f"--primary {primary!r}: no head_{primary} in {path} "
                                     f"(heads: {', '.join(ef.heads) or 'none'})")
        bias = np.asarray(data[f"bias_{primary}"]) if f"bias_{primary}" in data.files else None
    head = np.atleast_2d(np.asarray(ef.heads[primary], np.float32))
    _check_maps(maps, head, path, len(ef.embeddings), primary)
    require(head.shape[1] == maps.shape[-1], f"--embeddings {path}: head_{primary} has {head.shape[1]} columns but the "
            f"maps {maps.shape[-1]} channels (a --setting pooling run's head is on its evidence map: use --run)")
    require(primary in ef.columns, f"--embeddings {path}: no column {primary!r} with the labels")
    lab, names = encode_categorical(pd.Series(np.asarray(ef.columns[primary], dtype=object)))
    require(len(names) == head.shape[0], f"--embeddings {path}: column {primary!r} has {len(names)} classes, "
                                         f"head_{primary} {head.shape[0]} rows")
    keep = lab >= 0
    split = maps_split(head, bias)
    logits = (ef.logits or {}).get(primary)
    if logits is not None:
        mine = np.asarray(split.head(jnp.asarray(maps[:256]), None))
        ref = np.asarray(logits, np.float32)[:256].reshape(len(mine), -1)
        require(np.allclose(mine, ref, atol=1e-3 * max(1.0, np.abs(ref).max())),
                f"--embeddings {path}: feature_maps with head_{primary} do not reproduce logits_{primary}")
    meta = {}
    for c in (config.tasks if config.tasks is not None else [c for c in ef.columns if c not in (primary, "group")]):
        check_columns([c], ef.columns, "--tasks", f"in {path}")
        ml, cl = encode_categorical(pd.Series(np.asarray(ef.columns[c], dtype=object)[keep]))
        if 2 <= len(cl) <= 20:
            meta[c] = ml
    out, arrays = analyze_ifa(split, maps[keep], lab[keep], meta, config, class_names=[str(c) for c in names])
    arrays["rows"] = np.flatnonzero(keep)
    out.update(layer="last", embeddings=path, primary=primary, n_split=int(len(maps)), stored_maps=True)
    return out, arrays, None
