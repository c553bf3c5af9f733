"""wsca_jax: Weight Space Correlation analysis in JAX.

Does a model's decision use what its embedding encodes (scanner, hospital, background ...)?
WSC compares, on the data manifold, the primary task's head with linear probes for every metadata
attribute, with bootstrap intervals and permutation p-values.

Public surface::

    import wsca_jax as wsca
    result = wsca.analyze(embeddings, metadata, primary="label")
    result.to_json("wsca.json")
"""

__version__ = "0.7.0"

from .errors import WscaInputError, WscaWarning  # noqa: E402
from .tasks import Task, TaskSet, build_tasks, bin_continuous  # noqa: E402
from .probes import Basis, ProbeConfig, ProbeFit, fit_probes, fit_replicates, make_basis, to_original  # noqa: E402
from .wsc import Projection, choose_components, cosine_matrix, wsc  # noqa: E402
from .stats import (bca_interval, bootstrap_weights, guarded_bca_interval, holm, jackknife_weights,  # noqa: E402
                    near_threshold, percentile_interval, permutation_indices, permutation_pvalue, pvalue_mcse,
                    random_cosine_quantile, random_direction_null)
from .metrics import classification_metrics  # noqa: E402
from .analysis import TaskResult, WscaResult, analyze, fixed_head_wsc  # noqa: E402
from .runs import RunsResult, analyze_runs  # noqa: E402
from .ifa import (Split, analyze_ifa, apply_scale, common_scale, confounder_channels, consistency,  # noqa: E402
                  decompose, ifa_arrays, ifa_batch, ifa_for_run, maps_split, split_at)
from .mid import (band, best_per_k, choose_k, enrichment, kmeans, lloyd, margins, mined_cells,  # noqa: E402
                  mislabel_scores, retrain_methods, silhouette)
from .retrain import (accuracy_intervals, fit_l1_logistic, group_accuracy, tune_and_refit,  # noqa: E402
                      weighted_accuracy, worst_group_accuracy)
from .mitigate import analyze_mid, split_arrays  # noqa: E402
from .simulate import MultitaskSim, multitask_networks  # noqa: E402
from .experiment import (ShortcutSpec, artefact_spec, busbra_spec, condition_dataset,  # noqa: E402
                         run_condition)
from .demo import run_demo  # noqa: E402

__all__ = [
    "__version__", "WscaInputError", "WscaWarning", "Task", "TaskSet", "build_tasks", "bin_continuous",
    "Basis", "ProbeConfig", "ProbeFit", "fit_probes", "fit_replicates", "make_basis", "to_original",
    "Projection", "choose_components", "cosine_matrix", "wsc",
    "bca_interval", "bootstrap_weights", "guarded_bca_interval", "holm", "jackknife_weights", "near_threshold",
    "percentile_interval", "permutation_indices", "permutation_pvalue", "pvalue_mcse",
    "random_cosine_quantile", "random_direction_null",
    "classification_metrics", "TaskResult", "WscaResult", "analyze", "fixed_head_wsc", "RunsResult", "analyze_runs",
    "Split", "analyze_ifa", "apply_scale", "common_scale", "confounder_channels", "consistency", "decompose",
    "ifa_arrays", "ifa_batch", "ifa_for_run", "maps_split", "split_at",
    "band", "best_per_k", "choose_k", "enrichment", "kmeans", "lloyd", "margins", "mined_cells", "mislabel_scores",
    "retrain_methods", "silhouette", "accuracy_intervals", "fit_l1_logistic", "group_accuracy", "tune_and_refit",
    "weighted_accuracy", "worst_group_accuracy", "analyze_mid", "split_arrays",
    "MultitaskSim", "multitask_networks",
    "ShortcutSpec", "artefact_spec", "busbra_spec", "condition_dataset", "run_condition", "run_demo",
]
