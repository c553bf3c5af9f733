"""The fitting stages of an analysis: ``point -> quality -> resample -> null -> k_sensitivity``.

Each stage is ``(prepared, config, run, earlier results...) -> typed result``: ``prepared`` is the
:class:`~wsca_jax.analysis.prepare.Prepared` data, ``config`` the
:class:`~wsca_jax.analysis.config.AnalysisConfig`, ``run`` the :class:`Runtime` (the random stream,
drawn in stage order, the progress bar and the stage clock). The results are collected in
:class:`Stages`, which ``summarise`` turns into a :class:`~wsca_jax.analysis.result.WscaResult`.
A new statistic is a new stage (or a field of one) of this shape.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from ..metrics import fold_weights
from ..probes import ProbeFit, fit_replicates
from ..stats import bootstrap_weights, near_threshold, permutation_pvalue, random_direction_null
from ..wsc import disattenuate
from .compare import Comparison
from .inference import heldout_quality
from .prepare import Prepared, permuted_labels


class Clock:
    """Wall seconds per stage: ``lap(name)`` adds the time since the previous lap to ``name``."""

    def __init__(self):
        self.t, self.seconds = time.perf_counter(), {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self.t
        self.t = now


class Runtime(NamedTuple):
    """What the stages share while they run: ``rng`` (bootstrap draws, then permutations), the
    progress ``bar`` (``update(n)``) and the stage ``clock``."""

    rng: np.random.Generator
    bar: object
    clock: Clock


class Point(NamedTuple):
    """Full-data fits and the observed WSC.

    Attributes:
      fit: the :class:`~wsca_jax.probes.ProbeFit` (one replicate).  compare: the comparison with the
      primary head.  wsc: ``(T, Ca, K)`` observed WSC (fixed heads: head to head).  probe_wsc:
      ``(T, Ca, K)`` the probes' WSC for every task (fixed heads too).
    """

    fit: ProbeFit
    compare: Comparison
    wsc: np.ndarray
    probe_wsc: np.ndarray


class Quality(NamedTuple):
    """Held-out probe quality: ``fit`` (one replicate per fold, cold-started) and ``metrics`` per probed task."""

    fit: ProbeFit
    metrics: list


class Resampled(NamedTuple):
    """Bootstrap and jackknife refits and what they give.

    Attributes:
      boot_fit, jack_fit: the refits (None when not run).  boot: ``(B, T, Ca, K)`` WSC.  jack:
      ``(J, T, Ca, K)`` WSC where BCa needs them.  corr: the attenuation correction
      (:func:`~wsca_jax.wsc.disattenuate`) or None.
    """

    boot_fit: ProbeFit | None = None
    jack_fit: ProbeFit | None = None
    boot: np.ndarray | None = None
    jack: np.ndarray | None = None
    corr: object = None


class Null(NamedTuple):
    """The permutation null: ``fit`` (every permuted refit) and ``wsc`` ``(P, T, Ca, K)``."""

    fit: ProbeFit
    wsc: np.ndarray


class Stages(NamedTuple):
    """Every stage's result, in order (``null`` None without permutations)."""

    prepared: Prepared
    point: Point
    quality: Quality
    resampled: Resampled
    null: Null | None
    k_sensitivity: dict
    decision_use: dict | None = None        # {task: {statistic: {...}}} (analysis.use_stage)

    def fits(self) -> dict[str, ProbeFit]:
        """The probe fits by stage name (``point``, ``cv``, ``bootstrap``, ``jackknife``, ``permutation``)."""
        out = {"point": self.point.fit, "cv": self.quality.fit, "bootstrap": self.resampled.boot_fit,
               "jackknife": self.resampled.jack_fit, "permutation": None if self.null is None else self.null.fit}
        return {k: v for k, v in out.items() if v is not None}


def point(prep: Prepared, config, run: Runtime) -> Point:
    """Full-data fits, certified by their Newton decrement (:func:`~wsca_jax.probes.certify.certify`),
    and the observed WSC (fixed heads: head to head)."""
    n = prep.basis.x.shape[0]
    fit = fit_replicates(prep.basis, prep.labels, np.ones((1, n), np.float32), prep.cmask, prep.probe,
                         progress=run.bar.update, certified=True)
    compare = Comparison(prep, fit, config.projection.heads == "centered")
    wsc_hat = compare.probes(fit)[0]                                      # (T, Ca, K)
    probe_hat = wsc_hat.copy()
    if prep.fixed:
        wsc_hat[prep.fixed] = compare.fixed_heads()
    run.clock.lap("point")
    return Point(fit, compare, wsc_hat, probe_hat)


def quality(prep: Prepared, config, run: Runtime) -> Quality:
    """Cross-validated predictions from cold-started fits (a warm start from the full-data fit would
    have seen the held-out fold) and their metrics."""
    fit = fit_replicates(prep.basis, prep.labels, fold_weights(prep.folds), prep.cmask, prep.probe,
                         progress=run.bar.update)
    metrics = heldout_quality(prep.basis, prep.probe_tasks, prep.folds, fit, prep.cmask)
    run.clock.lap("cv")
    return Quality(fit, metrics)


def resample(prep: Prepared, config, run: Runtime, pt: Point) -> Resampled:
    """Bootstrap refits (warm-started at the full-data fit), jackknife refits and the attenuation correction."""
    B, inf = config.resampling.bootstrap, config.inference
    if B == 0:
        return Resampled()
    n = prep.basis.x.shape[0]
    init = (pt.fit.coef[0], pt.fit.intercept[0])
    bw = bootstrap_weights(run.rng, n, B, prep.groups)
    boot_fit = fit_replicates(prep.basis, prep.labels, bw, prep.cmask, prep.probe, init=init, progress=run.bar.update)
    boot = pt.compare.probes(boot_fit)
    if prep.fixed:
        boot[:, prep.fixed] = pt.compare.fixed_resampled(bw)
    run.clock.lap("bootstrap")
    jack_fit = jk = None
    if prep.jack is not None:
        jack_fit = fit_replicates(prep.basis, prep.labels, prep.jack, prep.cmask, prep.probe, init=init,
                                  progress=run.bar.update)
    if inf.ci_method == "bca":
        jk = pt.compare.probes(jack_fit)
        if prep.fixed:
            jk[:, prep.fixed] = pt.compare.fixed_resampled(prep.jack)
    noise_fit = jack_fit if inf.correction_noise == "jackknife" else boot_fit
    a_hat, b_hat = (v[0] for v in pt.compare.compared_rows(pt.fit))
    a_rep, b_rep = pt.compare.compared_rows(noise_fit)
    corr = disattenuate(a_hat, a_rep, b_hat, b_rep, noise=inf.correction_noise)   # corrected cells (T, Ca, K)
    run.clock.lap("jackknife" if prep.jack is not None else "correction")
    return Resampled(boot_fit, jack_fit, boot, jk, corr)


def null(prep: Prepared, config, run: Runtime, pt: Point, n_head_null: int) -> Null | None:
    """Permutation null ``(P, T, Ca, K)``, with batches added while a p-value is undecided.

    The first batch has ``permutations`` label permutations. With ``max_permutations`` above it,
    further batches of the same size are added while any task's p-value is within 3 Monte Carlo
    standard errors of a threshold that decides it (``alpha / j``, j = 1 .. number of tests: the Holm
    steps, seed-null tests of ``n_head_null`` fixed heads included), up to ``max_permutations``.
    """
    res = config.resampling
    if res.permutations == 0:
        return None
    batch, cap = res.permutations, max(res.permutations, res.max_permutations or 0)
    stat = np.nanmax(np.abs(pt.wsc), axis=(-2, -1))                        # (T,)
    tested = [t for t in range(prep.T) if t not in prep.fixed]            # fixed heads: not this null's statistic
    thresholds = [config.inference.alpha / j for j in range(1, len(tested) + n_head_null + 1)]
    nulls, fits = [], []
    while True:
        size = min(batch, cap - sum(len(n) for n in nulls))
        plab = permuted_labels(run.rng, prep.labels, prep.T, size, prep.groups, prep.strata)
        pfit = fit_replicates(prep.basis, plab, np.ones((size, prep.basis.x.shape[0]), np.float32), prep.cmask,
                              prep.probe, labels_batched=True, progress=run.bar.update)
        fits.append(pfit)
        nulls.append(pt.compare.probes(pfit, refit_primary=False))
        wsc_null = np.concatenate(nulls)
        P = len(wsc_null)
        if P >= cap:
            break
        nmax = np.nanmax(np.abs(wsc_null), axis=(-2, -1))                   # (P, T)
        p = np.array([permutation_pvalue(stat[t], nmax[:, t]) for t in tested])
        if not tested or not near_threshold(p, P, thresholds).any():
            break
        _grow(run.bar, min(batch, cap - P))
    merged = fits[0] if len(fits) == 1 else type(fits[0])(*(np.concatenate(a) for a in zip(*fits)))
    run.clock.lap("permutation")
    return Null(merged, wsc_null)


def _grow(bar, n: int) -> None:
    """Add ``n`` fits to a progress bar's total (adaptive permutations)."""
    if hasattr(bar, "total"):
        bar.total = (bar.total or 0) + n
        bar.refresh()


K_SENSITIVITY = (10, 25, 50, 100, 250)


def k_sensitivity(prep: Prepared, config, run: Runtime, pt: Point, nl: Null | None) -> dict:
    """Max |WSC| and its reference bands against the projection size k (the paper's Fig. 4).

    ks: 10, 25, 50, 100, 250 (those below the numerical rank), the rank ("all") and the k used.
    Per task: max |WSC| at each k; the 95% point of the permutation null at each k (probe tasks, when
    permutations ran: the same permuted fits projected to each k); the random-direction 95% point.
    """
    cmp = pt.compare
    v = np.asarray(prep.basis.variances, float)
    rank = max(1, int(np.sum(v > 1e-10 * max(v.max(initial=0.0), 1e-300))))
    ks = sorted({k for k in K_SENSITIVITY if k < rank} | {rank, prep.k})
    point_k = cmp.by_k(pt.fit, ks)[0]                                       # (n_k, T, Ca, K)
    null_k = None if nl is None else np.nanmax(np.abs(cmp.by_k(nl.fit, ks, refit_primary=False)), axis=(-2, -1))
    rng = np.random.default_rng(config.resampling.seed + 3)
    Ca = cmp.rows.shape[0]
    tasks = {}
    for i, t in enumerate(prep.taskset.tasks):
        tasks[t.name] = {
            "max_abs_wsc": [float(np.nanmax(np.abs(point_k[q, i]))) for q in range(len(ks))],
            "null_q95": None if (null_k is None or i in prep.fixed) else
            [float(np.quantile(null_k[:, q, i], 0.95)) for q in range(len(ks))],
            "random_q95": [float(np.quantile(random_direction_null(rng, k, Ca, t.n_classes, cmp.centered, 1000), 0.95))
                           for k in ks]}
    run.clock.lap("k_sensitivity")
    return {"ks": [int(k) for k in ks], "k_used": int(prep.k), "rank": rank, "tasks": tasks,
            "note": "the probes are fitted once in the full space; each k projects the same fits (and the same "
                    "permuted fits for the null band)"}
