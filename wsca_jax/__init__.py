"""wsca_jax: Weight Space Correlation analysis in JAX.

Does a model's decision use what its embedding encodes (scanner, hospital, background ...)?
WSC compares, on the data manifold, the primary task's head with linear probes for every metadata
attribute, with bootstrap intervals and permutation p-values.

Public surface::

    import wsca_jax as wsca
    result = wsca.analyze(embeddings, metadata, primary="label")
    result.to_json("wsca.json")
"""

__version__ = "0.8.3"

# Names are imported from their modules on first use (PEP 562): `wsca analyze` does not pay for
# Flax, the IFA and MID modules or the datasets it never touches.
_MODULES = {
    "errors": ("WscaInputError", "WscaWarning"),
    "tasks": ("Task", "TaskSet", "build_tasks", "bin_continuous"),
    "probes": ("Basis", "ProbeConfig", "ProbeFit", "chunk_for_memory", "fit_probes", "fit_replicates", "make_basis",
               "to_original"),
    "wsc": ("Projection", "choose_components", "cosine_matrix", "wsc"),
    "stats": ("bca_interval", "bootstrap_weights", "guarded_bca_interval", "holm", "jackknife_weights",
              "near_threshold", "percentile_interval", "permutation_indices", "permutation_pvalue", "pvalue_mcse",
              "random_cosine_quantile", "random_direction_null"),
    "metrics": ("classification_metrics",),
    "analysis": ("TaskResult", "WscaResult", "analyze", "fixed_head_wsc"),
    "runs": ("RunsResult", "analyze_runs"),
    "ifa": ("Split", "analyze_ifa", "apply_scale", "common_scale", "confounder_channels", "consistency", "decompose",
            "ifa_arrays", "ifa_batch", "ifa_for_maps", "ifa_for_run", "maps_split", "split_at"),
    "mid": ("band", "best_per_k", "choose_k", "enrichment", "kmeans", "lloyd", "margins", "mined_cells",
            "mislabel_scores", "retrain_methods", "silhouette"),
    "retrain": ("accuracy_intervals", "fit_l1_logistic", "group_accuracy", "tune_and_refit", "weighted_accuracy",
                "worst_group_accuracy"),
    "mitigate": ("analyze_mid", "split_arrays"),
    "sharding": ("init_distributed",),
    "simulate": ("MultitaskSim", "multitask_networks"),
    "experiment": ("ShortcutSpec", "artefact_spec", "busbra_spec", "condition_dataset", "run_condition"),
    "demo": ("run_demo",),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}
_ALIASES = {"init_distributed": "initialize"}


def __getattr__(name: str):
    import importlib
    module = _WHERE.get(name)
    if module is None:                                   # a submodule: wsca_jax.probes, wsca_jax.io ...
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'wsca_jax' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), _ALIASES.get(name, name))
    globals()[name] = value
    return value


# `wsc` is both a function and the submodule that defines it: importing the submodule would bind the
# name to the module, so the function is bound now (the module needs only jax and numpy).
from .wsc import wsc  # noqa: E402


def __dir__():
    return sorted(list(globals()) + list(_WHERE))


__all__ = ["__version__", *_WHERE]
