"""Last-layer retraining on fixed embeddings (DFR, JTT, MID; issue 12): the solver and the metrics.

* :func:`standardise` -- column means and SDs of the training rows applied to every split.
* :func:`fit_l1_logistic` -- L1-penalised logistic regression (binary: one logit; more classes:
  multinomial), scikit-learn's objective ``||W||_1 + C sum_i s_i loss_i`` with an unpenalised
  intercept (as ``solver="saga"``), by FISTA with adaptive restart in JAX; a grid of C values x
  row-weight vectors (refits on resampled subsets) in one vmapped, jit-compiled call.
* :func:`group_accuracy`, :func:`worst_group_accuracy`, :func:`weighted_accuracy` -- per-group and
  worst-group accuracy, and the mean accuracy weighted by the training groups' shares (the Waterbirds
  convention).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import require
from .config import DFR_CS    # tune_and_refit's default grid: DFR's published one


def standardise(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(train, *others)`` with the training rows' column means removed and SDs divided out
    (constant columns keep SD 1). Shapes ``(N_i, D)`` in and out."""
    train = np.asarray(train, np.float64)
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return tuple((np.asarray(a, np.float64) - mu) / sd for a in (train, *others))


def _top_eigenvalues(xt: np.ndarray, S: np.ndarray) -> np.ndarray:
    """``(R,)`` largest eigenvalue of ``xt' diag(s) xt`` per weight row (Lanczos, without forming the
    Gram matrix; computed once per distinct weight vector: a C grid repeats them)."""
    from scipy.sparse.linalg import LinearOperator, eigsh
    uniq, inv = np.unique(S, axis=0, return_inverse=True)
    top = np.empty(len(uniq))
    for i, s in enumerate(uniq):
        if xt.shape[1] <= 64:
            top[i] = np.linalg.eigvalsh(xt.T @ (s[:, None] * xt))[-1]
            continue
        op = LinearOperator((xt.shape[1],) * 2, matvec=lambda v, s=s: xt.T @ (s * (xt @ v)), dtype=np.float64)
        top[i] = eigsh(op, k=1, which="LA", tol=1e-6, v0=np.ones(xt.shape[1]))[0][0] * (1 + 1e-4)
    return top[np.ravel(inv)]


class L1Fit(NamedTuple):
    """``coef`` ``(R, D, K')`` (K' = 1 for two classes, else K), ``intercept`` ``(R, K')``,
    ``objective`` ``(R,)`` (scikit-learn's, divided by C x the weight sum), ``iterations``, ``converged``."""

    coef: np.ndarray
    intercept: np.ndarray
    objective: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def _smooth(theta, x, y, s, binary: bool):
    """Mean weighted loss and its gradient. theta = (W (D, K'), b (K',)); y: (N,) int; s: (N,) sums to 1."""
    W, b = theta
    z = x @ W + b
    if binary:
        z = z[:, 0]
        loss = jnp.sum(s * (jax.nn.softplus(z) - y * z))          # y in {0, 1}
        r = (jax.nn.sigmoid(z) - y)[:, None]
    else:
        loss = jnp.sum(s * (jax.nn.logsumexp(z, 1) - jnp.take_along_axis(z, y[:, None], 1)[:, 0]))
        r = jax.nn.softmax(z, 1) - jax.nn.one_hot(y, W.shape[1], dtype=z.dtype)
    return loss, (x.T @ (s[:, None] * r), jnp.sum(s[:, None] * r, 0))


def _prox(W, t, penalty: str):
    """Proximal map of ``t * ||W||_1`` (soft threshold) or of ``t/2 * ||W||^2`` (shrinkage)."""
    if penalty == "l1":
        return jnp.sign(W) * jnp.maximum(jnp.abs(W) - t, 0.0)
    return W / (1.0 + t)


def _penalty(W, penalty: str):
    return jnp.sum(jnp.abs(W)) if penalty == "l1" else 0.5 * jnp.sum(W * W)


@functools.partial(jax.jit, static_argnames=("k", "binary", "n_iter", "penalty"))
def _fista(x, y, S, lam, L, k: int, binary: bool, n_iter: int, tol, penalty: str = "l1"):
    """Batched over R = rows of ``S`` (weights (R, N), each summing to 1), ``lam`` (R,), ``L`` (R,)."""
    d = x.shape[1]

    def one(s, lam, L):
        def obj(th):
            return _smooth(th, x, y, s, binary)[0] + lam * _penalty(th[0], penalty)

        def body(st):
            th, v, t, it, _, _ = st
            _, (gW, gb) = _smooth(v, x, y, s, binary)
            new = (_prox(v[0] - gW / L, lam / L, penalty), v[1] - gb / L)
            # restart the momentum when it points uphill (O'Donoghue & Candes)
            up = jnp.sum((v[0] - new[0]) * (new[0] - th[0])) + jnp.sum((v[1] - new[1]) * (new[1] - th[1])) > 0
            t_new = jnp.where(up, 1.0, (1 + jnp.sqrt(1 + 4 * t * t)) / 2)
            mom = jnp.where(up, 0.0, (t - 1) / t_new)
            v_new = (new[0] + mom * (new[0] - th[0]), new[1] + mom * (new[1] - th[1]))
            step = jnp.maximum(jnp.max(jnp.abs(new[0] - th[0])), jnp.max(jnp.abs(new[1] - th[1])))
            scale = jnp.maximum(1.0, jnp.maximum(jnp.max(jnp.abs(new[0])), jnp.max(jnp.abs(new[1]))))
            return new, v_new, t_new, it + 1, step / scale, up

        def cond(st):
            return (st[3] < n_iter) & (st[4] > tol)

        th0 = (jnp.zeros((d, k), x.dtype), jnp.zeros((k,), x.dtype))
        st = jax.lax.while_loop(cond, body, (th0, th0, jnp.asarray(1.0, x.dtype), jnp.asarray(0),
                                             jnp.asarray(jnp.inf, x.dtype), jnp.asarray(False)))
        th = st[0]
        return th[0], th[1], obj(th), st[3], st[4] <= tol

    return jax.vmap(one)(S, lam, L)


def fit_l1_logistic(x: np.ndarray, y: np.ndarray, C, sample_weight: np.ndarray | None = None,
                    n_iter: int = 5000, tol: float = 1e-5, penalty: str = "l1") -> L1Fit:
    """L1 (or, with ``penalty="l2"``, L2) logistic regression for every C x weight vector in one call.

    scikit-learn's objectives: ``||W||_1 + C sum_i w_i loss_i`` (``saga``) or ``0.5 ||W||^2 + C sum_i
    w_i loss_i`` (``lbfgs``), intercept unpenalised; reported divided by ``C sum_i w_i``.

    Args:
      x: ``(N, D)`` (standardise first).  y: ``(N,)`` classes 0..K-1 (K >= 2).
      C: scalar or ``(R,)`` inverse penalties (scikit-learn's C).
      sample_weight: ``(N,)`` or ``(R, N)`` non-negative row weights (a refit on a subset: 0/1), one per C.
      tol: stop when the largest parameter change is below ``tol`` x max(1, largest parameter).
    Returns:
      :class:`L1Fit`; ``converged`` False where ``n_iter`` ran out (the caller must flag it).
    """
    require(penalty in ("l1", "l2"), f"penalty must be l1 or l2, found {penalty!r}")
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    require(x.ndim == 2 and len(x) == len(y) and np.isfinite(x).all(), f"retraining: expected finite (N, D) rows and N labels, found {x.shape} and {y.shape}")
    require(np.issubdtype(y.dtype, np.integer) and y.min() >= 0, "retraining: labels must be class indices 0..K-1")
    K = int(y.max()) + 1
    require(K >= 2, "retraining: the labels have one class")
    C = np.atleast_1d(np.asarray(C, np.float64))
    W = np.ones((1, len(x))) if sample_weight is None else np.atleast_2d(np.asarray(sample_weight, np.float64))
    R = max(len(C), len(W))
    C, W = np.broadcast_to(C, (R,)), np.broadcast_to(W, (R, len(x)))
    require((C > 0).all(), "C must be positive")
    require((W >= 0).all() and (W.sum(1) > 0).all(), "sample weights must be non-negative with a positive sum")
    S = W / W.sum(1, keepdims=True)
    lam = 1.0 / (C * W.sum(1))
    xt = np.hstack([x, np.ones((len(x), 1))])
    # Lipschitz constant of the mean loss (the prox takes the penalty): 1/4 (binary) or 1/2 (softmax)
    # x the top eigenvalue of X~' diag(s) X~
    L = (0.25 if K == 2 else 0.5) * _top_eigenvalues(xt, S)
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    coef, b, obj, it, conv = _fista(f32(x), jnp.asarray(y, jnp.int32), f32(S), f32(lam), f32(L),
                                    1 if K == 2 else K, K == 2, int(n_iter), float(tol), penalty)
    return L1Fit(np.asarray(coef, np.float64), np.asarray(b, np.float64), np.asarray(obj, np.float64),
                 np.asarray(it), np.asarray(conv))


def predict(fit: L1Fit, x: np.ndarray, r: int | None = None) -> np.ndarray:
    """Class predictions ``(N,)`` of fit ``r``, or averaged coefficients over all fits (DFR's refits)
    when ``r`` is None."""
    W = fit.coef.mean(0) if r is None else fit.coef[r]
    b = fit.intercept.mean(0) if r is None else fit.intercept[r]
    return _classes(np.asarray(x, np.float64) @ W + b)


def _classes(z: np.ndarray) -> np.ndarray:
    """``(N, K')`` decision values -> classes: one column is a binary logit, more are per-class scores."""
    return (z[:, 0] > 0).astype(int) if z.shape[1] == 1 else z.argmax(1)


# ---------------------------------------------------------------------------------------- metrics

def group_accuracy(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict:
    """``{group: accuracy}`` over the groups present (sorted by name)."""
    y, pred, groups = np.asarray(y), np.asarray(pred), np.asarray(groups)
    return {g: float(np.mean(pred[groups == g] == y[groups == g])) for g in sorted(np.unique(groups), key=str)}


def worst_group_accuracy(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> float:
    """The lowest per-group accuracy."""
    return min(group_accuracy(y, pred, groups).values())


def weighted_accuracy(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, weights: dict) -> float:
    """Per-group accuracies averaged with ``weights`` ``{group: share}`` (the training groups' shares:
    the Waterbirds "mean accuracy"); groups absent from ``groups`` are an error."""
    acc = group_accuracy(y, pred, groups)
    missing = set(weights) - set(acc)
    require(not missing, f"groups {sorted(map(str, missing))} have no evaluation rows")
    tot = sum(weights.values())
    return float(sum(acc[g] * w for g, w in weights.items()) / tot)


def accuracy_intervals(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, alpha: float = 0.05) -> dict:
    """Exact intervals for per-group and worst-group accuracy.

    Per group: Clopper-Pearson at ``1 - alpha / G`` (Bonferroni over the G groups). When every
    group's interval holds, the worst-group accuracy ``min_g p_g`` lies in ``[min_g low_g, min_g
    high_g]``, so that interval has coverage at least ``1 - alpha`` whatever the groups' accuracies
    (conservative; ``experiments`` and ``tests/test_mid.py`` measure it).
    Returns ``{"per_group": {g: (low, high)}, "worst_group": (low, high)}``.
    """
    from scipy.stats import binomtest
    y, pred, groups = np.asarray(y), np.asarray(pred), np.asarray(groups)
    names = sorted(np.unique(groups), key=str)
    level = 1 - alpha / len(names)
    per = {}
    for g in names:
        m = groups == g
        ci = binomtest(int((pred[m] == y[m]).sum()), int(m.sum())).proportion_ci(level, method="exact")
        per[g] = (float(ci.low), float(ci.high))
    return {"per_group": per, "worst_group": (min(v[0] for v in per.values()), min(v[1] for v in per.values()))}


def weighted_accuracy_interval(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, weights: dict,
                               n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of :func:`weighted_accuracy` from a bootstrap stratified by group (each
    group's rows resampled within the group, so every group keeps its size)."""
    y, pred, groups = np.asarray(y), np.asarray(pred), np.asarray(groups)
    rng = np.random.default_rng(seed)
    tot = sum(weights.values())
    acc = np.zeros(n_boot)
    for g, w in weights.items():
        hit = (pred[groups == g] == y[groups == g]).astype(float)
        require(len(hit) > 0, f"group {g!r} has no evaluation rows")
        acc += w / tot * rng.binomial(len(hit), hit.mean(), n_boot) / len(hit)   # a resampled group's accuracy
    lo, hi = np.quantile(acc, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# -------------------------------------------------------------------------------------- protocols


def balanced_subsets(cells: np.ndarray, n_refits: int, rng: np.random.Generator, rows: np.ndarray | None = None) -> np.ndarray:
    """``(n_refits, N)`` 0/1 weights: each refit keeps, from every cell, as many rows (drawn without
    replacement) as the smallest cell has. ``rows``: ``(N,)`` bool, the rows eligible (default all)."""
    cells = np.asarray(cells)
    rows = np.ones(len(cells), bool) if rows is None else np.asarray(rows, bool)
    names = np.unique(cells[rows])
    require(len(names) > 0, "no rows to balance")
    ix = [np.flatnonzero(rows & (cells == c)) for c in names]
    m = min(len(i) for i in ix)
    out = np.zeros((n_refits, len(cells)))
    for r in range(n_refits):
        for i in ix:
            out[r, rng.choice(i, m, replace=False)] = 1.0
    return out


def _halves(strata: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N,)`` bool, a random half of every stratum (True = the fitting half)."""
    fit_half = np.zeros(len(strata), bool)
    for s in np.unique(strata):
        i = rng.permutation(np.flatnonzero(strata == s))
        fit_half[i[: (len(i) + 1) // 2]] = True
    return fit_half


def tune_and_refit(x: np.ndarray, y: np.ndarray, cells: np.ndarray, eval_groups: np.ndarray, Cs=DFR_CS,
                   n_refits: int = 20, seed: int = 0, weights: np.ndarray | None = None, penalty: str = "l1") -> dict:
    """DFR's protocol (as adapted here; the differences from DFR's code: README) on rows ``x`` ``(N, D)``
    (standardised), labels ``y``.

    C: on a random half of every cell, ``n_refits`` fits per C on cell-balanced subsets (or with the
    fixed row ``weights``, e.g. JTT's upweighted errors), coefficients averaged per C, scored by the
    worst ``eval_groups`` accuracy on the other half (ties: the higher mean accuracy, then the first C
    of the grid). Final: ``n_refits`` fits at the chosen C on balanced subsets of
    all rows, averaged.
    Returns ``{"C", "coef" (D, K'), "intercept" (K',), "tuning": [{C, worst, mean}], "converged"}``.
    """
    rng = np.random.default_rng(seed)
    Cs = np.asarray(Cs, float)
    fit_half = _halves(cells, rng)
    R = 1 if weights is not None else n_refits
    if weights is not None:
        Wt = (np.asarray(weights, float) * fit_half)[None]
    else:
        Wt = balanced_subsets(cells, R, rng, fit_half)
    grid = fit_l1_logistic(x, y, np.repeat(Cs, R), sample_weight=np.tile(Wt, (len(Cs), 1)), penalty=penalty)
    tuning = []
    for j, C in enumerate(Cs):
        sub = L1Fit(*(a[j * R:(j + 1) * R] for a in grid))
        pred = predict(sub, x[~fit_half])
        acc = group_accuracy(y[~fit_half], pred, eval_groups[~fit_half])
        tuning.append({"C": float(C), "worst": min(acc.values()), "mean": float(np.mean(pred == y[~fit_half]))})
    best = max(range(len(Cs)), key=lambda j: (tuning[j]["worst"], tuning[j]["mean"]))
    Wf = np.asarray(weights, float)[None] if weights is not None else balanced_subsets(cells, n_refits, rng)
    final = fit_l1_logistic(x, y, np.full(len(Wf), Cs[best]), sample_weight=Wf, penalty=penalty)
    return {"C": float(Cs[best]), "coef": final.coef.mean(0), "intercept": final.intercept.mean(0), "tuning": tuning,
            "converged": bool(grid.converged.all() and final.converged.all()),
            "rows_per_refit": int(np.count_nonzero(Wf[0]))}


def tune_jtt(x: np.ndarray, y: np.ndarray, eval_groups: np.ndarray, Cs=DFR_CS, id_Cs=(0.003, 0.01, 0.03, 0.1),
             upweights=(5.0, 10.0, 20.0, 50.0, 100.0), seed: int = 0, penalty: str = "l1") -> dict:
    """JTT (Liu et al., ICML 2021) adapted to last-layer retraining on rows ``x`` ``(N, D)`` (standardised).

    Published JTT trains an identification model (ERM stopped after T epochs), upweights its training
    errors lambda_up times and retrains, tuning T and lambda_up on the validation worst-group accuracy.
    Here: the identification head is a plain (unbalanced) L1 logistic regression whose strong penalty
    (``id_Cs``) stands in for early stopping, fitted on a random half of every group; its errors on
    that half are upweighted (``upweights``) and a head is fitted for every C; every (id C, upweight, C)
    is scored by the worst ``eval_groups`` accuracy on the other half (group labels for tuning, as JTT;
    ties: the higher mean accuracy). A degenerate configuration -- its class-averaged accuracy there
    below 0.5, i.e. it learned the opposite of the label, as JTT with ERM's own errors did on our
    Waterbirds networks -- is not chosen while another is left (``degenerate`` True when none was);
    ``below_majority``: the chosen head's accuracy on that half is below its majority-class rate (a
    flag, not a criterion: a good class-balanced head can sit there). Final: the identification head
    on all rows (its penalty kept: C scaled by half / all rows), its errors upweighted, one fit at the
    chosen C (as DFR's final fit). Returns :func:`tune_and_refit`'s fields plus ``{"id_C", "upweight",
    "error_share", "weight_on_errors", "below_majority", "degenerate"}``.
    """
    rng = np.random.default_rng(seed)
    Cs, id_Cs, ups = (np.asarray(v, float) for v in (Cs, id_Cs, upweights))
    fit_half = _halves(eval_groups, rng)
    ident = fit_l1_logistic(x[fit_half], y[fit_half], id_Cs, penalty=penalty)
    errs = np.stack([predict(ident, x, r) != y for r in range(len(id_Cs))])           # (I, N)
    cfg = [(i, u, c) for i in range(len(id_Cs)) for u in ups for c in Cs]
    W = np.stack([np.where(errs[i], u, 1.0) * fit_half for i, u, _ in cfg])
    grid = fit_l1_logistic(x, y, np.array([c for *_, c in cfg]), sample_weight=W, penalty=penalty)
    held = ~fit_half
    majority = np.bincount(y[held]).max() / held.sum()
    tuning = []
    for j, (i, u, c) in enumerate(cfg):
        pred = predict(grid, x[held], j)
        acc = group_accuracy(y[held], pred, eval_groups[held])
        per_class = group_accuracy(y[held], pred, y[held])
        tuning.append({"id_C": float(id_Cs[i]), "upweight": float(u), "C": float(c), "worst": min(acc.values()),
                       "mean": float(np.mean(pred == y[held])), "balanced": float(np.mean(list(per_class.values())))})
    ok = [j for j, t in enumerate(tuning) if t["balanced"] >= 0.5]        # not worse than chance on every class
    best = max(ok or range(len(cfg)), key=lambda j: (tuning[j]["worst"], tuning[j]["mean"]))
    i, u, c = cfg[best]
    # the identification head refitted on all rows with the penalty it had on the half (the penalty is
    # 1 / (C x rows): the same C on twice the rows would halve it and change which rows it gets wrong)
    ident_all = fit_l1_logistic(x, y, id_Cs[i:i + 1] * fit_half.sum() / len(y), penalty=penalty)
    err = predict(ident_all, x, 0) != y
    w = np.where(err, u, 1.0)
    final = fit_l1_logistic(x, y, np.array([c]), sample_weight=w[None], penalty=penalty)
    return {"C": float(c), "coef": final.coef[0], "intercept": final.intercept[0], "tuning": tuning,
            "converged": bool(ident.converged.all() and grid.converged.all() and ident_all.converged.all()
                              and final.converged.all()),
            "rows_per_refit": int(len(y)), "id_C": float(id_Cs[i]), "upweight": float(u),
            "error_share": float(err.mean()), "weight_on_errors": float(w[err].sum() / w.sum()),
            "below_majority": bool(tuning[best]["mean"] < majority), "degenerate": not ok}


def predict_head(head: dict, x: np.ndarray) -> np.ndarray:
    """Class predictions of a :func:`tune_and_refit` head."""
    return _classes(np.asarray(x, np.float64) @ head["coef"] + head["intercept"])
