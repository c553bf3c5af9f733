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

_NAMES = {
    "errors": ("WscaInputError", "WscaWarning"),
    "analysis": ("AnalysisConfig", "TaskResult", "WscaResult", "analyze", "fixed_head_wsc"),
    "analysis.runs": ("RunsResult", "analyze_runs"),
    "probes": ("ProbeConfig", "fit_probes"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
SUBPACKAGES = ("analysis", "checks", "cli", "config", "errors", "ifa", "io", "metrics", "mitigation", "probes",
               "progress", "report", "sharding", "stats", "tasks", "training", "validation")


def __getattr__(name: str):
    import importlib
    module = _WHERE.get(name)
    if module is None:
        if name in SUBPACKAGES:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'wsca_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


# `wsc` is both a function and the module that defines it: importing the module would bind the name
# to the module, so the function is bound now (the module needs only jax and numpy).
from .wsc import wsc  # noqa: E402


def __dir__():
    return sorted(list(globals()) + list(_WHERE) + list(SUBPACKAGES))


__all__ = ["__version__", "wsc", *_WHERE]
