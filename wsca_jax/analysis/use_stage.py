"""The decision-use stage: statistics of the decision beside the paper's WSC (:mod:`wsca_jax.use`).

For every metadata task, on the rows with a primary label: the within-class dependence of the
decision score on the attribute (``within_class_eta``) and its shift between the attribute's levels
in SDs of the score (``within_class_shift``), the correlation of the decision score with
the attribute probe's score -- the probe fitted on whitened embeddings, over all rows and within
classes (``score_correlation``, ``score_correlation_within``; the covariance-metric WSC) -- and the
LEACE erasure effect, marginal and class-conditional (``erasure``, ``erasure_within``). The
decision is the model's primary head when given (its bias is not: no flip rate), else the primary
probe. Every statistic is invariant to invertible linear changes of the embedding coordinates that
keep the logits (``tests/test_use.py``).

Each statistic gets a basic bootstrap interval (``resampling.bootstrap`` resamples of the rows, of
whole groups with ``--groups``; the probes and erasers refitted on each) and a null of its own
(``resampling.permutations`` draws): the attribute permuted within classes for eta and the score
correlations (the probe refitted on each permutation), random erasures of the same rank for the
erasure effects. Their level and coverage: ``experiments/results/use_calibration.md``.
"""

from __future__ import annotations

import numpy as np

from ..use import (decision_effect, delta_sd, decision_scores, erasure_effect, permutation_p, score_rows, whiten,
                   score_correlation, whitened, whitened_probe_scores, within_class_eta,
                   varies_within_classes, within_class_permutations, within_class_shift)

from ..use_resampling import basic_ci, bootstrap_rows, erasure_delta_sd, probe_score_replicates

BOOTSTRAP_SEED = 17          # offset of the decision-use bootstrap's seed from resampling.seed


def decision_head(prep, pt) -> tuple[np.ndarray, np.ndarray | None]:
    """The decision's rows ``(C, D)`` in the rotated basis and its bias ``(C,)`` (None for a given
    head, which comes without one): the model's head, else the primary probe's present classes."""
    if prep.p_rows is not None:
        return np.asarray(prep.p_rows, np.float64), None
    present = np.asarray(prep.cmask[prep.T], bool)
    return (np.asarray(pt.fit.coef[0, prep.T], np.float64)[present],
            np.asarray(pt.fit.intercept[0, prep.T], np.float64)[present])


NOT_WITHIN = "the attribute does not vary within any class of the primary: its effect cannot be told from the class's"


def within_block(test, scores, y, a, boots, draws: int, seed: int, confidence: float, hi: float | None,
                 groups=None) -> dict:
    """``test`` (:func:`within_class_eta` or :func:`within_class_shift`) with its within-class
    permutation null (whole ``groups`` where they nest in classes) and a bootstrap interval
    (clipped to ``[0, hi]``); not applicable (estimate None, with a note) where no class holds two
    levels of the attribute."""
    if not varies_within_classes(y, a):
        return {"estimate": None, "ci": None, "p_value": None, "p_mcse": None, "null_q95": None, "note": NOT_WITHIN}
    out = test(scores, y, a, permutations=draws, seed=seed, groups=groups)
    reps = [test(scores[i], y[i], a[i], permutations=0)["estimate"] for i in boots]
    return {**out, "ci": basic_ci(out["estimate"], reps, confidence, 0.0, hi)}


def correlation_blocks(x, scores, y, labels, boots, draws: int, seed: int, confidence: float, probe,
                       groups=None) -> list[dict]:
    """Per task of ``labels (T, N)``: ``score_correlation`` (total) and ``score_correlation_within``.
    Estimates from the certified whitened probes; intervals from probes refitted on bootstrap
    resamples; p-values from probes refitted on the attribute permuted within classes (the draws of
    :func:`within_block`'s null). Every task and replicate in one batched fit per kind; the replicate
    fits that did not converge are counted (``bootstrap_not_converged``, ``permutations_not_converged``)
    and named in the task's caveats."""
    labels = np.atleast_2d(labels)
    xw, est_probe = whitened(x), whitened_probe_scores(x, labels, probe.C)
    out = []
    for a, pr in zip(labels, est_probe):
        r = a >= 0
        est = {"score_correlation": score_correlation(scores[r], pr[r]),
               "score_correlation_within": score_correlation(scores[r], pr[r], y[r])}
        out.append({k: {"estimate": v, "ci": None, "p_value": None, "p_mcse": None} for k, v in est.items()})
    if boots:
        counts = np.stack([np.bincount(i, minlength=len(y)) for i in boots]).astype(np.float32)
        reps, ok = probe_score_replicates(xw, labels, counts, probe)
        for a, rep, o, bad in zip(labels, reps, out, (~ok).sum(0)):
            kept = [i[a[i] >= 0] for i in boots]
            for name, yy in (("score_correlation", None), ("score_correlation_within", y)):
                vals = [score_correlation(scores[i], rep[b][i], None if yy is None else yy[i]) for b, i in enumerate(kept)]
                o[name]["ci"] = basic_ci(o[name]["estimate"], vals, confidence, 0.0, 1.0)
                o[name]["bootstrap_not_converged"] = int(bad)
    if draws:
        perms = np.full((draws,) + labels.shape, -1, labels.dtype)
        for t, a in enumerate(labels):
            r = a >= 0
            perms[:, t, r] = within_class_permutations(np.random.default_rng(seed), y[r], a[r], draws,
                                                       None if groups is None else groups[r])
        reps, ok = probe_score_replicates(xw, perms, np.ones((draws, len(y)), np.float32), probe, labels_batched=True)
        for a, rep, o, bad in zip(labels, reps, out, (~ok).sum(0)):
            r = a >= 0
            for name, yy in (("score_correlation", None), ("score_correlation_within", y[r])):
                null = np.asarray([score_correlation(scores[r], p[r], yy) for p in rep])
                o[name]["p_value"], o[name]["p_mcse"] = permutation_p(o[name]["estimate"], null)
                o[name]["permutations_not_converged"] = int(bad)
    return out


MARGINAL_ERASURE_NOTE = ("no test of use: where the attribute goes with the class, erasing it also erases class "
                         "information, so the comparison with random erasures (random_subspace_p) rejects without any "
                         "use (every confounded unused dataset in experiments/results/use_calibration.md); "
                         "erasure_within carries the test")


def erasure_block(x, head, bias, y, a, boots, draws: int, seed: int, confidence: float, within: bool) -> dict:
    """``erasure`` (``within``: ``erasure_within``) with its random-erasure null and a bootstrap
    interval (the eraser refitted on each resample, in closed form: :func:`erasure_delta_sd`).
    The marginal eraser's comparison with random erasures is kept as ``random_subspace_p``, not as
    a ``p_value``: it is no test of use where the attribute goes with the class
    (:data:`MARGINAL_ERASURE_NOTE`)."""
    e = erasure_effect(x, head, bias, y, a, draws=draws, seed=seed, within=within)
    if not within and e["rank"] > 0:
        e = {**e, "random_subspace_p": e["p_value"], "p_value": None, "p_mcse": None, "note": MARGINAL_ERASURE_NOTE}
    if e["rank"] == 0:
        return {**e, "ci": None}
    wh = whiten(x)
    t, g = (x - wh.mean) @ wh.forward, wh.back @ score_rows(head).T
    reps = [erasure_delta_sd(t[i], g, y[i], a[i], within) for i in boots]
    return {**e, "ci": basic_ci(e["estimate"], reps, confidence, 0.0)}


def counterfactual_block(head, bias, x, x_cf, y, boots, confidence: float, x_ctl=None) -> dict:
    """``counterfactual``: the decision's measured response when the attribute is intervened on
    (``x_cf (N, D)``: the same rows' counterfactual embeddings): mean |delta score| / SD(score),
    flip rate, primary AUROC change (:func:`decision_effect`), a bootstrap interval over the rows,
    and no p-value (a measured response has no null to test against: it is the truth the other
    statistics estimate). With ``x_ctl (N, D)`` (the same rows under a control intervention of the
    same size that the network never saw with the label): ``control`` (its response) and
    ``excess`` = response - control response with a paired bootstrap interval (``excess_ci``; with
    more than two classes each response is its largest over score columns, which may differ)."""
    eff = decision_effect(head, bias, x, x_cf, y)
    s0, s1 = decision_scores(head, x, bias), decision_scores(head, x_cf, bias)
    s2 = None if x_ctl is None else decision_scores(head, x_ctl, bias)
    reps = np.array([delta_sd(s0[i], s1[i]) for i in boots])
    out = {"estimate": eff.delta_sd, "flip_rate": eff.flip_rate, "auroc_change": eff.auroc_change,
           "ci": basic_ci(eff.delta_sd, reps, confidence, 0.0), "p_value": None, "p_mcse": None}
    if s2 is not None:
        ctl = decision_effect(head, bias, x, x_ctl, y)
        excess = reps - np.array([delta_sd(s0[i], s2[i]) for i in boots])
        out["control"] = {"estimate": ctl.delta_sd, "flip_rate": ctl.flip_rate, "auroc_change": ctl.auroc_change}
        out["excess"] = eff.delta_sd - ctl.delta_sd
        out["excess_ci"] = basic_ci(out["excess"], excess, confidence, -np.inf)
    return out


def decision_use(prep, config, pt, counterfactual: dict | None = None, progress=None,
                 control: dict | None = None) -> dict:
    """``{task: {statistic: {"estimate", "ci", "p_value", "p_mcse", ...}}}`` for the metadata tasks;
    ``counterfactual``: ``{task: (N, D)}`` counterfactual embeddings (original coordinates);
    ``control``: ``{task: (N, D)}`` the same rows under a control intervention (those tasks only)."""
    head, bias = decision_head(prep, pt)
    y_all = np.asarray(prep.taskset.primary.labels)
    keep = y_all >= 0
    x, y = np.asarray(prep.basis.x, np.float64)[keep], y_all[keep]
    scores = decision_scores(head, x, bias)
    res, conf = config.resampling, config.inference.confidence
    draws, seed = res.permutations, res.seed
    groups = None if prep.groups is None else np.asarray(prep.groups)[keep]
    boots = bootstrap_rows(len(y), res.bootstrap, seed + BOOTSTRAP_SEED, groups) if res.bootstrap else []
    rows = {t: np.asarray(prep.labels[t])[keep] for t in range(prep.T)}
    tasks = [t for t, a in rows.items() if len(np.unique(a[a >= 0])) >= 2]     # the attribute varies
    if not tasks:
        return {}
    labels = np.stack([rows[t] for t in tasks])
    corr = correlation_blocks(x, scores, y, labels, boots, draws, seed, conf, prep.probe, groups)
    out = {}
    for t, a, c in zip(tasks, labels, corr):
        out[prep.probe_tasks[t].name] = {
            "within_class_eta": within_block(within_class_eta, scores, y, a, boots, draws, seed, conf, 1.0, groups),
            "within_class_shift": within_block(within_class_shift, scores, y, a, boots, draws, seed, conf, None, groups),
            **c,
            "erasure": erasure_block(x, head, bias, y, a, boots, draws, seed, conf, within=False),
            "erasure_within": erasure_block(x, head, bias, y, a, boots, draws, seed, conf, within=True),
        }
        name = prep.probe_tasks[t].name
        if name in (counterfactual or {}):
            def basis(e):                               # original coordinates -> the basis's x (its rounding too)
                z = (np.asarray(e, np.float64)[keep] - prep.basis.mean) @ prep.basis.rotation
                return z.astype(np.float32).astype(np.float64)
            x_ctl = basis(control[name]) if name in (control or {}) else None
            out[name]["counterfactual"] = counterfactual_block(head, bias, x, basis(counterfactual[name]), y, boots,
                                                               conf, x_ctl)
        if progress is not None:
            progress(1)
    return out
