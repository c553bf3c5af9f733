"""wsca_jax: Weight Space Correlation analysis in JAX.

Does a model's decision use what its embedding encodes (scanner, hospital, background ...)?
WSC compares, on the data manifold, the primary task's head with linear probes for every metadata
attribute, with bootstrap intervals and permutation p-values.

Public surface::

    import wsca_jax as wsca
    result = wsca.analyze(embeddings, metadata, "label", config=wsca.AnalysisConfig())
    result.to_json("wsca.json")

The top level holds the analysis entry points, their settings and results, the probe solver and the
error types; everything else is reached through its sub-package (``wsca.stats.holm``,
``wsca.ifa.analyze_ifa``, ``wsca.mitigation.analyze_mid``, ``wsca.training.train.fit`` ...).
Names and sub-packages are imported on first use (PEP 562): ``wsca analyze`` does not pay for Flax,
IFA, MID or the datasets it never touches.
"""

__version__ = "0.9.0"

from .lazy import attach  # noqa: E402  (importlib only)

_NAMES = {
    "errors": ("WscaInputError", "WscaWarning"),
    "analysis": ("AnalysisConfig", "TaskResult", "WscaResult", "analyze", "fixed_head_wsc"),
    "analysis.runs": ("RunsResult", "analyze_runs"),
    "probes": ("ProbeConfig", "fit_probes"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}

SUBPACKAGES = ("analysis", "checks", "cli", "config", "errors", "ifa", "io", "lazy", "metrics", "mitigation", "probes",
               "progress", "report", "sharding", "stats", "tasks", "training", "validation")


# 0.8's top-level names that now live in a sub-package: still served, with a DeprecationWarning, until 0.10
_MOVED = {
    **dict.fromkeys(["Task", "TaskSet", "build_tasks", "bin_continuous"], "tasks"),
    **dict.fromkeys(["Basis", "ProbeFit", "chunk_for_memory", "fit_replicates", "make_basis", "to_original"], "probes"),
    **dict.fromkeys(["Projection", "choose_components", "cosine_matrix"], "wsc"),
    **dict.fromkeys(["bca_interval", "bootstrap_weights", "guarded_bca_interval", "holm", "jackknife_weights",
                     "near_threshold", "percentile_interval", "permutation_indices", "permutation_pvalue", "pvalue_mcse",
                     "random_cosine_quantile", "random_direction_null"], "stats"),
    "classification_metrics": "metrics",
    **dict.fromkeys(["Split", "analyze_ifa", "apply_scale", "common_scale", "confounder_channels", "consistency",
                     "decompose", "ifa_arrays", "ifa_batch", "ifa_for_maps", "ifa_for_run", "maps_split", "split_at"],
                    "ifa"),
    **dict.fromkeys(["band", "best_per_k", "choose_k", "enrichment", "kmeans", "lloyd", "margins", "mined_cells",
                     "mislabel_scores", "retrain_methods", "silhouette"], "mitigation.mining"),
    **dict.fromkeys(["accuracy_intervals", "fit_l1_logistic", "group_accuracy", "tune_and_refit", "weighted_accuracy",
                     "worst_group_accuracy"], "mitigation.retrain"),
    **dict.fromkeys(["analyze_mid", "split_arrays"], "mitigation.app"),
    "init_distributed": "sharding",
    **dict.fromkeys(["MultitaskSim", "multitask_networks"], "validation.simulate"),
    **dict.fromkeys(["ShortcutSpec", "artefact_spec", "busbra_spec", "condition_dataset", "run_condition"],
                    "validation.experiment"),
    "run_demo": "validation.demo",
}


_names = attach(__name__, _WHERE)[0]


def __getattr__(name: str):
    import importlib
    if name in _MOVED:
        import warnings
        where = f"wsca_jax.{_MOVED[name]}"
        attr = "initialize" if name == "init_distributed" else name
        warnings.warn(f"wsca_jax.{name} is deprecated: use {where}.{attr} (removed in 0.10)", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(where), attr)
    if name in SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    value = _names(name)                                    # AttributeError for an unknown name
    globals()[name] = value
    return value


# `wsc` is both a function and the module that defines it: importing the module would bind the name
# to the module, so the function is bound now (the module needs only jax and numpy).
from .wsc import wsc  # noqa: E402


def __dir__():
    return sorted(list(globals()) + list(_WHERE) + list(SUBPACKAGES))


__all__ = ["__version__", "wsc", *_WHERE]
