"""The induced-shortcut validation (METHOD.md 1.6) as reusable pieces: designs, one condition, verdicts.

A *condition* is a training design (a strength of class-confounder association) plus a *setting*
(``fine_tuned``: backbone trained on the primary task, confounder probed; ``multi_task``: primary,
confounder and extra heads trained jointly and compared head to head). :func:`run_condition` trains
the model, embeds its training images, runs :func:`wsca_jax.analysis.analyze` on primary x confounder
and returns the numbers the experiment tables and ``wsca demo`` report.

Designs (:class:`ShortcutSpec`):

* **BUS-BRA** (:func:`busbra_spec`): primary = malignant, confounder = scanner (GE Logiq 5, GE Logiq 7,
  Toshiba; U-Systems has 25 images and is left out). Images are *discarded* as in the paper, with a
  fixed number per class at every strength (:func:`~wsca_jax.training.data.confounded_indices`): strength 0 =
  the same scanner mix in both classes, strength s = a share s of each class moved to its majority
  scanner (benign -> GE Logiq 5, malignant -> GE Logiq 7).
* **Artefact** (:func:`artefact_spec`, PneumoniaMNIST / BreastMNIST / scikit-learn digits): no
  acquisition metadata, so an acquisition-like artefact is stamped on a share of each class:
  ``0.5 (1 - s) + s`` of the positive class and ``0.5 (1 - s)`` of the negative class.

Validation and test rows keep the natural (unbiased) design, so the primary test AUROC shows what a
shortcut costs on data where it does not hold.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile

import numpy as np
import pandas as pd

from ..analysis import AnalysisConfig, analyze
from ..training.data.shortcuts import artefact_indices, confounded_indices, stamp_artefact
from ..training.data.sources import ImageDataset
from ..errors import require
from .intervention import STAMP_SEED

# Training settings of the experiments and the demo (chosen in issue 4, see experiments/results):
# a small CNN with a 256-wide last stage (a 64-dim embedding gave the same WSC rise but a wider null),
# and multi-task heads weighted so that the easy scanner head does not swamp the primary.
EXPERIMENT_WIDTHS = (16, 32, 256)
MT_TASK_WEIGHTS = (1.0, 0.3, 0.3)

GE5, GE7, TOSHIBA = "GE Logiq 5 @10-12MHz", "GE Logiq 7 @10-14MHz", "Toshiba Aplio 300 @12-14 MHz"
BUSBRA_SCANNERS = (GE5, GE7, TOSHIBA)


@dataclasses.dataclass(frozen=True)
class ShortcutSpec:
    """How one dataset is confounded.

    Attributes:
      primary, confounder: columns.  extra_tasks: further heads in the multi-task setting.
      kind: ``"discard"`` (choose training rows, BUS-BRA) or ``"artefact"`` (stamp training rows).
      majority: ``{class: confounder value}`` each class leans on.  base: ``{value: share}`` at strength 0.
      n_per_class: training rows per class (``discard``).  artefact: stamp kind (``artefact``).
      fixed_marginals: keep the confounder's totals fixed across strengths too (``discard``;
        :func:`~wsca_jax.training.data.shortcuts.design_table_fixed_marginals`); False: the per-class mixes of
        :func:`~wsca_jax.training.data.confounded_indices`, under which a rare value shrinks as the strength grows.
    """

    dataset: str
    primary: str
    confounder: str
    extra_tasks: tuple = ()
    kind: str = "discard"
    majority: dict = dataclasses.field(default_factory=dict)
    base: dict = dataclasses.field(default_factory=dict)
    n_per_class: dict = dataclasses.field(default_factory=dict)
    artefact: str = "text_band"
    fixed_marginals: bool = False


def busbra_spec(n_per_class: dict | None = None) -> ShortcutSpec:
    """BUS-BRA malignant x scanner. The default sizes are the largest that every strength allows on
    the official training folds (malignant: 160 rows from GE Logiq 7 at strength 1)."""
    return ShortcutSpec(dataset="busbra", primary="malignant", confounder="device", extra_tasks=("birads",),
                        majority={0: GE5, 1: GE7}, base={GE5: 0.45, GE7: 0.45, TOSHIBA: 0.10},
                        n_per_class=n_per_class or {0: 320, 1: 160})


def artefact_spec(dataset: str, primary: str = "label", positive: int = 1, kind: str = "text_band",
                  column: str = "artefact") -> ShortcutSpec:
    """An artefact column ``column`` (``none`` / ``stamped``) leaning on class ``positive``."""
    return ShortcutSpec(dataset=dataset, primary=primary, confounder=column, kind="artefact",
                        majority={positive: "stamped"}, base={"none": 0.5, "stamped": 0.5}, artefact=kind)


def restrict_busbra(ds: ImageDataset) -> ImageDataset:
    """Keep the three scanners with enough images (every split)."""
    keep = np.isin(np.asarray(ds.columns["device"]), BUSBRA_SCANNERS)
    require(keep.any(), f"BUS-BRA: none of the scanners {', '.join(BUSBRA_SCANNERS)} found in the 'device' column")
    return ds.subset(keep)


def condition_dataset(ds: ImageDataset, spec: ShortcutSpec, strength: float | None, seed: int = 0) -> ImageDataset:
    """The dataset of one condition: training rows confounded at ``strength`` (None = all rows, the
    natural design); validation and test rows unchanged (artefact: stamped on half of each class)."""
    train = np.flatnonzero(ds.split == 0)
    other = np.flatnonzero(ds.split != 0)
    labels = np.asarray(ds.columns[spec.primary])
    if spec.kind == "discard":
        if strength is None:
            return ds
        conf = np.asarray(ds.columns[spec.confounder])
        keep = train[confounded_indices(labels[train], conf[train], strength, spec.majority, spec.base,
                                        spec.n_per_class, seed, fixed_marginals=spec.fixed_marginals)]
        return ds.subset(np.sort(np.concatenate([keep, other])))
    require(spec.kind == "artefact", f"unknown design kind {spec.kind!r}")
    s = 0.0 if strength is None else strength
    classes = np.unique(labels)
    frac = {c: 0.5 * (1 - s) + (s if spec.majority.get(c) == "stamped" else 0.0) for c in classes}
    mask = np.zeros(len(ds), bool)
    mask[train] = artefact_indices(labels[train], frac, seed)
    mask[other] = artefact_indices(labels[other], {c: 0.5 for c in classes}, seed + 1)
    images = stamp_artefact(ds.images, mask, spec.artefact, seed=STAMP_SEED)   # one pattern for all rows
    cols = dict(ds.columns)
    cols[spec.confounder] = np.where(mask, "stamped", "none")
    return ImageDataset(ds.name, images, cols, ds.split, ds.group)


def design_table(ds: ImageDataset, spec: ShortcutSpec) -> pd.DataFrame:
    """Training rows per (class, confounder) cell."""
    tr = ds.split == 0
    return pd.crosstab(pd.Series(np.asarray(ds.columns[spec.primary])[tr], name=spec.primary),
                       pd.Series(np.asarray(ds.columns[spec.confounder])[tr], name=spec.confounder))


def run_condition(ds: ImageDataset, spec: ShortcutSpec, setting: str, seed: int = 0, *, train_cfg=None,
                  config: AnalysisConfig | None = None, conditional: bool = True, workdir: str | None = None,
                  progress: bool = False, counterfactual=None) -> dict:
    """Train, embed the training rows and analyse primary x confounder for one condition.

    Args:
      ds: the condition's dataset (:func:`condition_dataset`).  setting: ``fine_tuned`` | ``multi_task``.
      train_cfg: a :class:`~wsca_jax.training.config.TrainConfig` (its ``setting`` and ``seed`` are replaced).
      config: the analysis settings (default: :class:`~wsca_jax.analysis.config.AnalysisConfig`'s own,
        bootstrap and permutations included); the condition sets its ``tasks`` and ``categorical``
        (the confounder), ``group_column`` (``group``) and ``seed`` (``seed``).
      conditional: also run the conditional null (labels permuted within primary classes: it keeps
        the class-confounder association of a biased design and tests alignment beyond it) and report
        its p-value beside the unconditional one (the headline, as ``wsca analyze`` computes it).
      workdir: where the run's checkpoints go (a temporary folder, removed, when None).
      counterfactual: ``(cf, control)`` :class:`ImageDataset` copies of ``ds`` (the same rows) with
        the confounder intervened on and under a control intervention: their training rows are
        embedded and given to the analysis (``counterfactual=``, ``counterfactual_control=``).
    Returns:
      ``{"metrics": M, "result": WscaResult, "conditional": WscaResult | None, "record": run record}``
      where M holds ``max_abs_wsc, ci, p_value, p_value_conditional, null_q95, null_q95_conditional,
      random_q95, primary_auroc, confounder_probe_auroc, wsc, cell, probe_max_abs_wsc`` and the
      diagnostics ``test, p_value_mcse, n_permutations, ci_method, ci_fallback, fit, warnings``.
      Multi-task runs compare fixed heads: ``p_value`` is None (no null of their statistic here),
      ``null_q95`` is the probe permutation null's 95% point, for reference only.
    """
    from ..training.embed import embed
    from ..training.train import TrainConfig, fit

    require(setting in ("fine_tuned", "multi_task"), f"setting must be fine_tuned or multi_task, found {setting!r}")
    config = (config or AnalysisConfig()).replace(tasks=[spec.confounder], categorical=[spec.confounder],
                                                  group_column="group", seed=seed)
    cfg = (train_cfg or TrainConfig()).replace(setting=setting, seed=seed)
    n_heads = 2 + len(spec.extra_tasks)
    tw = cfg.task_weights
    if setting != "multi_task" or tw is None:
        tw = None
    else:                                  # weights given for (primary, confounder, extras ...)
        require(len(tw) >= n_heads, f"task_weights: {len(tw)} given, {n_heads} heads to weight")
        tw = tuple(tw[:n_heads])
    cfg = cfg.replace(task_weights=tw)
    tmp = workdir or tempfile.mkdtemp(prefix="wsca-cond-")
    try:
        tasks = (spec.confounder,) + tuple(spec.extra_tasks) if setting == "multi_task" else ()
        record = fit(ds, spec.primary, tasks, cfg, run_dir=tmp, progress=progress)
        arrays = embed(tmp, ds, "train")
        cf = {} if counterfactual is None else \
            {k: {spec.confounder: embed(tmp, d, "train")["embeddings"]} for k, d in zip(("cf", "ctl"), counterfactual)}
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = pd.DataFrame({spec.primary: arrays[spec.primary], spec.confounder: arrays[spec.confounder],
                         "group": arrays["group"]})
    heads = {spec.confounder: arrays[f"head_{spec.confounder}"]} if setting == "multi_task" else None
    result = analyze(arrays["embeddings"], meta, spec.primary, arrays[f"head_{spec.primary}"], task_heads=heads,
                     config=config, counterfactual=cf.get("cf"), counterfactual_control=cf.get("ctl"))
    cond = None
    if conditional and config.resampling.permutations:
        cond = analyze(arrays["embeddings"], meta, spec.primary, arrays[f"head_{spec.primary}"], task_heads=heads,
                       config=config.replace(permute_within=spec.primary, bootstrap=0))
    m = _condition_metrics(result, cond, record, spec)
    return {"metrics": m, "result": result, "conditional": cond, "record": record}


def _condition_metrics(result, cond, record: dict, spec: ShortcutSpec) -> dict:
    """The numbers :func:`run_condition` returns as ``metrics`` (``cond``: the conditional null's result)."""
    t = result.tasks[spec.confounder]
    s = t.summary
    c = None if cond is None else cond.tasks[spec.confounder].summary
    return {"max_abs_wsc": s["max_abs_wsc"], "ci": s["ci"], "p_value": s["p_value"],
            "p_value_conditional": None if c is None else c["p_value"],
            "null_q95": s.get("null_q95"),
            "null_q95_conditional": None if c is None else c.get("null_q95"),
            "random_q95": s["random_direction_q95"],
            "primary_auroc": record.get("test", {}).get(spec.primary, {}).get("auroc"),
            "confounder_probe_auroc": t.probe.get("auroc"),
            "probe_max_abs_wsc": s.get("probe_max_abs_wsc"),
            "wsc": np.asarray(t.wsc).tolist(), "cell": s["cell"], "classes": list(t.classes),
            "n_train": int(result.n_samples), "source": t.source,
            "test": s.get("test"), "p_value_mcse": s.get("p_value_mcse"), "n_permutations": s.get("n_permutations"),
            "p_value_conditional_mcse": None if c is None else c.get("p_value_mcse"),
            "ci_method": s.get("ci_method"), "ci_fallback": s.get("ci_fallback"), "fit": t.fit,
            "decision_use": s.get("decision_use"), "statistics": s.get("statistics"),
            "warnings": list(result.warnings) + ([] if cond is None else list(cond.warnings))}


def permute_within_split(ds: ImageDataset, column: str, seed: int, split: int = 0,
                         within: str | None = None) -> ImageDataset:
    """A copy of ``ds`` whose ``column`` is permuted among the rows of ``split`` (whole patients:
    each group takes another group's value of the same size; see
    :func:`~wsca_jax.stats.permutation_indices`). Other splits are unchanged. With ``within`` (a
    column name, e.g. the primary label) values move only between rows with the same value of that
    column, which keeps the column-``within`` association of the design (the conditional null)."""
    from ..stats import permutation_indices

    rows = np.flatnonzero(ds.split == split)
    strata = None if within is None else np.asarray(ds.columns[within])[rows]
    perm = permutation_indices(np.random.default_rng(seed), len(rows), 1, ds.group[rows], strata=strata)[0]
    col = np.asarray(ds.columns[column]).copy()
    col[rows] = col[rows][perm]
    return ImageDataset(ds.name, ds.images, {**ds.columns, column: col}, ds.split, ds.group)


def null_network_wsc(ds: ImageDataset, spec: ShortcutSpec, seed: int, *, train_cfg=None,
                     within_class: bool = False) -> float:
    """One draw of the seed null of the multi-task statistic: a network trained like the condition's
    multi-task model but with the confounder's training labels permuted (by patient); returns the
    max |WSC| of its primary and confounder heads on its training embeddings
    (:func:`~wsca_jax.analysis.fixed_head_wsc`). Draw it for many seeds to build ``head_null``.

    ``within_class``: permute only within primary classes, so the null networks keep the design's
    class-confounder association (a confounder head may still read the class) and the comparison
    tests alignment beyond it -- the null to use for a confounded design."""
    from ..analysis import fixed_head_wsc
    from ..training.embed import embed
    from ..training.train import TrainConfig, fit

    cfg = (train_cfg or TrainConfig()).replace(setting="multi_task", seed=seed)
    n_heads = 2 + len(spec.extra_tasks)
    if cfg.task_weights is not None:
        cfg = cfg.replace(task_weights=tuple(cfg.task_weights[:n_heads]))
    null_ds = permute_within_split(ds, spec.confounder, seed=10_000 + seed,
                                   within=spec.primary if within_class else None)
    tmp = tempfile.mkdtemp(prefix="wsca-null-")
    try:
        fit(null_ds, spec.primary, (spec.confounder,) + tuple(spec.extra_tasks), cfg, run_dir=tmp, progress=False)
        arrays = embed(tmp, null_ds, "train")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return fixed_head_wsc(arrays["embeddings"], arrays[f"head_{spec.primary}"], arrays[f"head_{spec.confounder}"])


def verdict(m: dict, alpha: float = 0.05) -> str:
    """One plain-language line for a condition's metrics."""
    p = m["p_value"]
    if p is None:
        ref = "" if m.get("null_q95") is None else f"; probe null 95% {m['null_q95']:.3f}, not its null"
        return (f"max |WSC| {m['max_abs_wsc']:.3f} of the jointly trained heads: not tested (no null of "
                f"networks trained with permuted labels{ref})")
    used = p < alpha
    line = (f"max |WSC| {m['max_abs_wsc']:.3f} (null 95% {m['null_q95']:.3f}, p {p:.3f}): "
            + ("aligned beyond chance" if used else "not detected (which does not show it is unused)"))
    pc = m.get("p_value_conditional")
    if used and pc is not None:
        line += (f"; beyond the class-confounder association too (within-class p {pc:.3f})" if pc < alpha else
                 f"; not beyond the class-confounder association of the design (within-class p {pc:.3f})")
    if m.get("confounder_probe_auroc") is not None and m["confounder_probe_auroc"] < 0.7:
        line += f"; caution: confounder probe AUROC {m['confounder_probe_auroc']:.2f} (weakly encoded)"
    return line


__all__ = ["EXPERIMENT_WIDTHS", "MT_TASK_WEIGHTS", "ShortcutSpec", "busbra_spec", "artefact_spec", "restrict_busbra",
           "condition_dataset", "design_table", "run_condition", "permute_within_split", "null_network_wsc", "verdict"]
