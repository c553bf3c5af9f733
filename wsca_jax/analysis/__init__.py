"""The analysis pipeline: embeddings + metadata -> tasks -> probes -> WSC -> statistics -> result.

Modules, in the order the data flows through them:

- ``config``: :class:`AnalysisConfig`, every setting with its one default, documentation and check;
- ``prepare``: tasks, groups, the rotated basis, the projection, the fixed heads, the resampling design;
- ``compare``: WSC of probe fits against the primary head;
- ``stages``: ``point -> quality -> resample -> null -> k_sensitivity``, typed results in :class:`Stages`;
- ``inference``: one task's intervals, p-values, power and equivalence;
- ``verdicts``: the plain-language verdict and caveats;
- ``summarise``: all of it -> :class:`WscaResult` (``result``);
- ``pipeline``: :func:`analyze`, the sequence of stage calls; :func:`fixed_head_wsc`;
- ``runs``: several trained networks combined (:func:`analyze_runs`).
"""

from ..lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    **dict.fromkeys(["AnalysisConfig", "EncodingConfig", "InferenceConfig", "ProjectionConfig", "ResamplingConfig"],
                    "config"),
    **dict.fromkeys(["analyze", "fixed_head_wsc"], "pipeline"),
    "permuted_labels": "prepare",
    **dict.fromkeys(["TaskResult", "WscaResult"], "result"),
    **dict.fromkeys(["RunsResult", "analyze_runs"], "runs"),
})
