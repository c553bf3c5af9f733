"""The decision-use stage: statistics of the decision beside the paper's WSC (:mod:`wsca_jax.use`).

For every metadata task, on the rows with a primary label: the within-class dependence of the
decision score on the attribute (``within_class_eta``, within-class permutation null), the
correlation of the decision score with the attribute probe's score -- the probe fitted on whitened
embeddings, over all rows and within classes (``score_correlation``, ``score_correlation_within``;
the covariance-metric WSC) -- and the LEACE erasure effect, marginal and class-conditional
(``erasure``, ``erasure_within``; random-erasure nulls). The
decision is the model's primary head when given (its bias is not: no flip rate), else the primary
probe. Every statistic is invariant to invertible linear changes of the embedding coordinates that
keep the logits (``tests/test_use.py``). Nulls use ``resampling.permutations`` draws; intervals are
not computed yet (``ci`` None).
"""

from __future__ import annotations

import numpy as np

from ..use import decision_scores, erasure_effect, score_correlation, whitened_probe_scores, within_class_eta


def decision_head(prep, pt) -> tuple[np.ndarray, np.ndarray | None]:
    """The decision's rows ``(C, D)`` in the rotated basis and its bias ``(C,)`` (None for a given
    head, which comes without one): the model's head, else the primary probe's present classes."""
    if prep.p_rows is not None:
        return np.asarray(prep.p_rows, np.float64), None
    present = np.asarray(prep.cmask[prep.T], bool)
    return (np.asarray(pt.fit.coef[0, prep.T], np.float64)[present],
            np.asarray(pt.fit.intercept[0, prep.T], np.float64)[present])


def decision_use(prep, config, pt) -> dict:
    """``{task: {statistic: {"estimate", "ci", "p_value", "p_mcse", ...}}}`` for the metadata tasks."""
    head, bias = decision_head(prep, pt)
    y_all = np.asarray(prep.taskset.primary.labels)
    keep = y_all >= 0
    x, y = np.asarray(prep.basis.x, np.float64)[keep], y_all[keep]
    scores = decision_scores(head, x, bias)
    draws, seed, C = config.resampling.permutations, config.resampling.seed, prep.probe.C
    out = {}
    for t in range(prep.T):
        a = np.asarray(prep.labels[t])[keep]
        if len(np.unique(a[a >= 0])) < 2:
            continue
        probe = whitened_probe_scores(x, a, C)
        rows = a >= 0
        eta = within_class_eta(scores, y, a, permutations=draws, seed=seed)
        out[prep.probe_tasks[t].name] = {
            "within_class_eta": {**eta, "ci": None},
            "score_correlation": {"estimate": score_correlation(scores[rows], probe[rows]), "ci": None,
                                  "p_value": None, "p_mcse": None},
            "score_correlation_within": {"estimate": score_correlation(scores[rows], probe[rows], y[rows]),
                                         "ci": None, "p_value": None, "p_mcse": None},
            "erasure": {**erasure_effect(x, head, bias, y, a, draws=draws, seed=seed), "ci": None},
            "erasure_within": {**erasure_effect(x, head, bias, y, a, draws=draws, seed=seed, within=True), "ci": None},
        }
    return out
