""":func:`analyze`, the Python entry point (``wsca analyze`` is a thin shell over it): the stages
``prepare -> point -> quality -> resample -> null -> k_sensitivity -> summarise`` in order."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
import pandas as pd

from .. import sharding
from ..checks import check_counterfactual, check_embeddings, check_head, check_head_null
from ..config import with_deprecated_keywords
from ..errors import require
from ..probes import ProbeConfig, make_basis
from ..progress import progress_bar
from ..wsc import choose_components, wsc_jit
from . import stages
from .config import AnalysisConfig, ProjectionConfig
from .prepare import prepare
from .result import WscaResult
from .summarise import summarise
from .use_stage import decision_use


def analyze(embeddings, metadata: pd.DataFrame | Mapping[str, Sequence], primary: str, primary_head=None, *,
            task_heads: Mapping[str, np.ndarray] | None = None, head_null: Mapping[str, Sequence[float]] | None = None,
            counterfactual: Mapping[str, np.ndarray] | None = None,
            counterfactual_control: Mapping[str, np.ndarray] | None = None, config: AnalysisConfig | None = None,
            progress: bool = False, **settings) -> WscaResult:
    """Weight Space Correlation analysis of one primary head against every metadata task.

    Args:
      embeddings: ``(N, D)`` training-set embeddings.
      metadata: N rows (same order), one column per attribute, including ``primary``.
      primary: the primary task's column.
      primary_head: the model's own head ``(C, D)`` or ``(D,)``; None = a probe on ``primary``.
      task_heads: ``{task: (C_t, D)}`` jointly trained heads (the multi-task setting), compared head
        to head (the paper's multi-task WSC). The probe permutation null is of another statistic
        and gives them no p-value; the probes still give the probe quality. Bootstrap intervals of
        a fixed head resample the PCA projection only. Needs ``primary_head``.
      head_null: ``{task: (M,) values}``: max |WSC| of the heads of M networks trained like the model
        but with that task's labels permuted (:func:`fixed_head_wsc` on each network's embeddings
        and heads) -- the null of the fixed-head statistic; gives those tasks a p-value.
      counterfactual: ``{task: (N, D)}`` embeddings of the same rows, in the same order, with that
        attribute intervened on (``wsca embed --dataset`` of a counterfactual copy of the images):
        the decision's measured response, ``summary.statistics.counterfactual``, which the
        decision-use verdict then rests on.
      counterfactual_control: ``{task: (N, D)}`` the same rows under a control intervention of the
        same size, never seen with the label (tasks given a ``counterfactual``): "used" then needs
        the response to exceed the control's (an intervention moves decisions by itself).
      config: every setting (:class:`~wsca_jax.analysis.config.AnalysisConfig`: task encoding,
        projection, probe, resampling, inference; each field documented there, with its default).
      progress: show a progress bar.
      **settings: deprecated: flat settings (``bootstrap=100``, ``pca_min=8`` ...) applied to
        ``config`` with :meth:`AnalysisConfig.replace`; use ``config=`` (removed in 0.10).

    Returns:
      :class:`WscaResult`. A probe fit that did not converge raises a ``UserWarning`` and is listed
      in ``result.warnings`` and in its task's ``fit``.

    Example:
      >>> import numpy as np, pandas as pd, wsca_jax as wsca
      >>> rng = np.random.default_rng(0)
      >>> meta = pd.DataFrame({"label": rng.integers(0, 2, 400), "site": rng.integers(0, 3, 400)})
      >>> z = rng.normal(size=(400, 16)) + np.outer(meta["site"], np.eye(16)[0]) * 2
      >>> config = wsca.AnalysisConfig().replace(pca_min=8, bootstrap=0, permutations=0)
      >>> res = wsca.analyze(z, meta, "label", config=config)
      >>> sorted(res.tasks)
      ['site']
    """
    config = with_deprecated_keywords(AnalysisConfig, config, settings, "wsca_jax.analyze", _RENAMED)
    head_null = check_head_null(head_null, task_heads)
    x = check_embeddings(embeddings)
    clock = stages.Clock()
    meta = metadata if isinstance(metadata, pd.DataFrame) else pd.DataFrame(dict(metadata))
    require(len(meta) == x.shape[0], f"metadata has {len(meta)} rows, embeddings have {x.shape[0]}; "
                                     "expected one metadata row per embedding, in the same order")
    prep = prepare(x, meta, primary, primary_head, task_heads, config)
    cf = check_counterfactual(counterfactual, x.shape, [t.name for t in prep.probe_tasks[:prep.T]])
    ctl = check_counterfactual(counterfactual_control, x.shape, list(cf), what="counterfactual control")
    require(not (cf and config.inference.skip_decision_use),
            "counterfactual embeddings were given with skip_decision_use: the counterfactual is a decision-use statistic")
    clock.lap("prepare")
    res = config.resampling
    bar = progress_bar(prep.n_fits(res.bootstrap, res.permutations), "probe fits (replicates)", "fits", progress)
    run = stages.Runtime(np.random.default_rng(res.seed), bar, clock)
    point = stages.point(prep, config, run)
    quality = stages.quality(prep, config, run)
    resampled = stages.resample(prep, config, run, point)
    null = stages.null(prep, config, run, point, n_head_null=len(head_null))
    bar.close()
    k_sens = stages.k_sensitivity(prep, config, run, point, null)
    use = {} if config.inference.skip_decision_use else decision_use(prep, config, point, cf, control=ctl)
    clock.lap("decision_use")
    st = stages.Stages(prep, point, quality, resampled, null, k_sens, use)
    result = summarise(st, config, primary, head_null, x.shape)
    clock.lap("statistics")
    result.diagnostics.update(
        stage_seconds={k: round(v, 4) for k, v in clock.seconds.items()},
        stage_fits={k: int(v.grad_max.size) for k, v in st.fits().items()},
        devices={"devices": jax.device_count(), "processes": jax.process_count(),
                 "platform": jax.devices()[0].platform,
                 "replicates_per_call": sharding.chunk_size(prep.probe.chunk, sharding.mesh())})
    return result


# the 0.8 keyword ``probe`` took a whole ProbeConfig (None: the defaults)
_RENAMED = {"probe": ("probe", lambda v: v or ProbeConfig())}


def fixed_head_wsc(embeddings, primary_head, task_head, projection: ProjectionConfig | None = None,
                   **deprecated) -> float:
    """Max |WSC| between two jointly trained heads on their network's embeddings (the multi-task
    statistic), as :func:`analyze` computes it. Run it on networks trained with one task's labels
    permuted to build that task's ``head_null``.

    Args:
      embeddings: ``(N, D)`` training-set embeddings of one network.
      primary_head: ``(Ca, D)`` or ``(D,)``.  task_head: ``(C, D)``.
      projection: the PCA size and the rows' centring (:class:`~wsca_jax.analysis.config.ProjectionConfig`,
        default: ``analyze``'s); use the analysis's own. ``**deprecated``: ``pca_variance``, ``pca_min``,
        ``heads`` as keywords (0.8), applied to ``projection`` with a ``DeprecationWarning``.
    """
    projection = with_deprecated_keywords(ProjectionConfig, projection, deprecated, "fixed_head_wsc")
    x = check_embeddings(embeddings)
    a = check_head(primary_head, x.shape[1], np.shape(primary_head)[0] if np.ndim(primary_head) == 2 else 1)
    b = check_head(task_head, x.shape[1], np.shape(task_head)[0], what="task head")
    basis = make_basis(x)
    k = choose_components(basis.variances, projection.pca_variance, projection.pca_min).k
    rot = lambda h: (h @ basis.rotation).astype(np.float32)  # noqa: E731
    cells = np.asarray(wsc_jit(rot(a), np.ones(len(a), bool), rot(b)[None], np.ones((1, len(b)), bool),
                               k=k, centered=projection.heads == "centered"))
    return float(np.nanmax(np.abs(cells)))
