"""Mid-range-logit mining (MID, O'Mahony et al., WACV 2025; METHOD.md section 3): the pure pieces.

Rows whose logits sit near 0 (where the model is unsure) are enriched for minority groups,
counterexamples to a spurious trend and mislabels. This module finds them, clusters them and
measures what the band and every cluster hold:

* :func:`margins` -- the decision margin of every row: binary, the logit difference; multiclass, the
  top-two margin.  :func:`band` -- the rows nearest 0, per predicted class (a quantile band) or by an
  |margin| threshold.
* :func:`kmeans` -- k-means++ initialisation and Lloyd iterations, jit-compiled and vmapped over a
  range of k x restarts in one call (seeded, deterministic); :func:`lloyd` from given centres (the
  parity check against scikit-learn); :func:`silhouette` on a seeded sample of rows; :func:`choose_k`.
* :func:`enrichment` -- per column value, the share in a subset against all rows, the odds ratio with
  its exact (conditional maximum-likelihood, Fisher) interval and Fisher's p, Holm-adjusted.
* :func:`mislabel_scores` -- the share of a row's k nearest neighbours (embedding space, batched)
  whose label disagrees with its own.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats as sps

from ..errors import WscaInputError, require
from ..config import with_deprecated_keywords
from .config import JTT_ID_CS, JTT_UPWEIGHTS, RENAMED, MidConfig, MiningConfig, RetrainingConfig
from .retrain import (accuracy_intervals, group_accuracy, predict_head, standardise, tune_and_refit, tune_jtt,
                      weighted_accuracy, weighted_accuracy_interval)
from ..probes import device_memory
from ..stats import holm


# ----------------------------------------------------------------------------------------- margins

def logit_array(logits, n_classes: int | None = None, what: str = "logits") -> np.ndarray:
    """The model's logits of one split, checked the same way whichever split or option they come from.

    ``(N,)`` or ``(N, 1)``: one logit of a two-class primary (class 1 when > 0), returned as ``(N,)``;
    ``(N, C)``: C per-class logits (C = ``n_classes`` when given, else any C >= 2). Any other shape,
    text, and NaN or inf values are refused in one line (``what`` names the array and its file).
    """
    try:
        z = np.asarray(logits, np.float64)
    except (TypeError, ValueError):
        raise WscaInputError(f"{what}: not numbers (dtype {np.asarray(logits).dtype})") from None
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    two = "(N,) or (N, 1) (one logit: class 1 when > 0)"
    if n_classes is None:
        ok, want = z.ndim == 1 or (z.ndim == 2 and z.shape[1] >= 2), f"{two} or (N, C) with C >= 2"
    else:
        ok = (z.ndim == 1 and n_classes == 2) or (z.ndim == 2 and z.shape[1] == n_classes)
        want = f"{two} or (N, 2) for 2 classes" if n_classes == 2 else f"(N, {n_classes}) for {n_classes} classes"
    require(ok and len(z) > 0, f"{what}: shape {np.shape(logits)}, expected {want} with N > 0")
    bad = ~np.isfinite(z if z.ndim == 2 else z[:, None]).all(1)
    require(not bad.any(), f"{what}: {int(bad.sum())} row(s) with NaN or inf logits (first: row {int(np.argmax(bad))})")
    return z


def margins(logits: np.ndarray) -> np.ndarray:
    """Decision margin per row. ``logits``: ``(N,)`` or ``(N, 1)`` (one binary logit), ``(N, 2)`` or
    ``(N, C)`` (checked by :func:`logit_array`).

    Returns ``(N,)``: the binary logit difference (class 1 minus class 0; the sign is the
    prediction), or for C > 2 the top-two margin (>= 0; 0 = a tie between the two best classes).
    """
    z = logit_array(logits)
    if z.ndim == 1:
        return z
    if z.shape[1] == 2:
        return z[:, 1] - z[:, 0]
    top = np.sort(z, axis=1)
    return top[:, -1] - top[:, -2]


def band(margin: np.ndarray, predicted: np.ndarray | None = None, quantile: float | None = 0.2,
         threshold: float | None = None) -> np.ndarray:
    """Rows in the mid-range band: ``(N,)`` bool.

    Args:
      margin: ``(N,)`` from :func:`margins`.
      predicted: ``(N,)`` predicted class; with ``quantile`` the band is taken per class (each class
        contributes its own ``quantile`` share of rows nearest 0), so a rare class is not crowded out.
      quantile: share of rows nearest 0 (in (0, 1)).  threshold: instead, ``|margin| <= threshold``.
    """
    m = np.abs(np.asarray(margin, np.float64))
    if threshold is not None:
        require(threshold > 0, f"--band-threshold must be positive, found {threshold}")
        return m <= threshold
    require(quantile is not None and 0 < quantile < 1, f"--band must be in (0, 1), found {quantile}")
    groups = np.zeros(len(m), int) if predicted is None else np.unique(np.asarray(predicted), return_inverse=True)[1].ravel()
    out = np.zeros(len(m), bool)
    for g in np.unique(groups):
        ix = np.flatnonzero(groups == g)
        take = max(1, int(round(quantile * len(ix))))
        out[ix[np.argsort(m[ix], kind="stable")[:take]]] = True
    return out


# ------------------------------------------------------------------------------------------ k-means

class KMeansFit(NamedTuple):
    """k-means fits, one per (k, restart): ``ks`` ``(R,)``, ``centres`` ``(R, kmax, D)`` (rows >= k
    unused), ``labels`` ``(R, N)``, ``inertia`` ``(R,)``, ``iterations`` ``(R,)``, ``converged`` ``(R,)``."""

    ks: np.ndarray
    centres: np.ndarray
    labels: np.ndarray
    inertia: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray


def _sq_dist(x, c, active):
    """``(N, K)`` squared distances of rows to centres; inactive centres at +inf."""
    d2 = jnp.sum(x * x, 1)[:, None] - 2.0 * x @ c.T + jnp.sum(c * c, 1)[None, :]
    return jnp.where(active[None, :], jnp.maximum(d2, 0.0), jnp.inf)


def _kmeanspp(key, x, k, kmax: int):
    """k-means++ seeding (D^2 sampling): ``(kmax, D)`` centres, rows >= k copies of the first."""
    n = x.shape[0]
    key, sub = jax.random.split(key)
    first = x[jax.random.randint(sub, (), 0, n)]
    c = jnp.broadcast_to(first, (kmax, x.shape[1]))
    d2 = jnp.sum((x - first) ** 2, 1)

    def body(i, carry):
        c, d2, key = carry
        key, sub = jax.random.split(key)
        logits = jnp.where(d2 > 0, jnp.log(jnp.maximum(d2, 1e-30)), -jnp.inf)
        new = x[jax.random.categorical(sub, logits)]
        use = i < k
        c = c.at[i].set(jnp.where(use, new, c[i]))
        d2 = jnp.where(use, jnp.minimum(d2, jnp.sum((x - new) ** 2, 1)), d2)
        return c, d2, key

    c, _, _ = jax.lax.fori_loop(1, kmax, body, (c, d2, key))
    return c


def _lloyd(x, c, k, n_iter: int, tol):
    """Lloyd iterations from ``c`` until the centres move less than ``tol`` (squared, summed) or
    ``n_iter``; an empty cluster keeps its centre. Returns (centres, labels, inertia, iterations, converged)."""
    kmax = c.shape[0]
    active = jnp.arange(kmax) < k

    def step(c):
        a = jnp.argmin(_sq_dist(x, c, active), 1)
        oh = jax.nn.one_hot(a, kmax, dtype=x.dtype)
        cnt = oh.sum(0)
        return jnp.where(cnt[:, None] > 0, (oh.T @ x) / jnp.maximum(cnt, 1)[:, None], c)

    def cond(s):
        _, it, shift = s
        return (it < n_iter) & (shift > tol)

    def body(s):
        c, it, _ = s
        new = step(c)
        return new, it + 1, jnp.sum(jnp.where(active[:, None], (new - c) ** 2, 0.0))

    c, it, shift = jax.lax.while_loop(cond, body, (c, jnp.asarray(0), jnp.asarray(jnp.inf, x.dtype)))
    d2 = _sq_dist(x, c, active)
    return c, jnp.argmin(d2, 1), jnp.sum(jnp.min(d2, 1)), it, shift <= tol


@functools.partial(jax.jit, static_argnames=("kmax", "n_iter"))
def _kmeans_batched(x, keys, ks, kmax: int, n_iter: int, tol):
    def one(key, k):
        return _lloyd(x, _kmeanspp(key, x, k, kmax), k, n_iter, tol)
    return jax.vmap(one)(keys, ks)


def kmeans(x: np.ndarray, ks=range(2, 11), restarts: int = 10, seed: int = 0, n_iter: int = 300,
           tol: float = 1e-4) -> KMeansFit:
    """k-means for every k in ``ks`` x ``restarts`` seeds in one compiled, vmapped call.

    Args:
      x: ``(N, D)`` rows (standardise first if the columns have different scales).
      ks: cluster counts (each >= 2 and <= N).  restarts: k-means++ seedings per k.
      tol: convergence when the summed squared centre shift is below ``tol`` x the mean per-column
        variance (scikit-learn's relative tolerance).
    Returns:
      :class:`KMeansFit` over R = len(ks) x restarts fits (k-major); :func:`best_per_k` keeps the
      lowest inertia per k.
    """
    x = np.asarray(x, np.float32)
    ks = np.asarray(list(ks), np.int32)
    require(x.ndim == 2 and len(x) > 0 and np.isfinite(x).all(), f"k-means: expected finite (N, D) rows, found shape {x.shape}")
    require(len(ks) > 0 and ks.min() >= 2, f"--k must be at least 2, found {ks.min() if len(ks) else 'none'}")
    require(ks.max() <= len(x), f"--k {ks.max()} exceeds the {len(x)} rows to cluster")
    require(restarts >= 1, f"restarts must be at least 1, found {restarts}")
    rk = np.repeat(ks, restarts)
    # one vmapped call holds every fit's (N, max k) distances and one-hot assignments, and its centres
    need, avail = 4.0 * len(rk) * (2 * len(x) * int(ks.max()) + 2 * int(ks.max()) * x.shape[1] + len(x)), device_memory()
    require(need <= 0.5 * avail, f"k-means: {len(rk)} fits (--k x --restarts) of {len(x)} rows with up to {ks.max()} "
                                 f"clusters need about {need / 1e9:.1f} GB at once, over half the {avail / 1e9:.1f} GB "
                                 "available: lower --restarts or narrow --k")
    keys = jax.random.split(jax.random.PRNGKey(seed), len(rk))
    tol_abs = float(tol * np.mean(np.var(x, axis=0)))
    c, lab, inertia, it, conv = _kmeans_batched(jnp.asarray(x), keys, jnp.asarray(rk), int(ks.max()), int(n_iter), tol_abs)
    return KMeansFit(rk, np.asarray(c), np.asarray(lab), np.asarray(inertia, np.float64), np.asarray(it), np.asarray(conv))


def lloyd(x: np.ndarray, centres: np.ndarray, n_iter: int = 300, tol: float = 1e-4) -> KMeansFit:
    """Lloyd iterations from given ``(k, D)`` centres (one fit; the parity check with scikit-learn)."""
    x = np.asarray(x, np.float32)
    c0 = np.asarray(centres, np.float32)
    tol_abs = float(tol * np.mean(np.var(x, axis=0)))
    c, lab, inertia, it, conv = jax.jit(_lloyd, static_argnums=(3,))(jnp.asarray(x), jnp.asarray(c0), len(c0), n_iter, tol_abs)
    return KMeansFit(np.array([len(c0)]), np.asarray(c)[None], np.asarray(lab)[None], np.array([float(inertia)]),
                     np.array([int(it)]), np.array([bool(conv)]))


def best_per_k(fit: KMeansFit) -> dict:
    """``{k: index into the fit}`` of the lowest-inertia restart per k."""
    return {int(k): int(np.flatnonzero(fit.ks == k)[np.argmin(fit.inertia[fit.ks == k])]) for k in np.unique(fit.ks)}


@jax.jit
def _silhouette(x, labels, kmax_onehot):
    d = jnp.sqrt(jnp.maximum(jnp.sum(x * x, 1)[:, None] - 2.0 * x @ x.T + jnp.sum(x * x, 1)[None, :], 0.0))
    d = d * (1.0 - jnp.eye(len(x), dtype=x.dtype))
    oh = kmax_onehot                                                     # (n, K)
    cnt = oh.sum(0)                                                      # (K,)
    per = d @ oh                                                         # (n, K): summed distance to each cluster
    own = jnp.sum(per * oh, 1)
    n_own = jnp.sum(cnt[None, :] * oh, 1)
    a = own / jnp.maximum(n_own - 1, 1)
    mean_other = jnp.where((oh > 0) | (cnt[None, :] == 0), jnp.inf, per / jnp.maximum(cnt, 1)[None, :])
    b = jnp.min(mean_other, 1)
    s = (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-30)
    return jnp.where(n_own > 1, s, 0.0)


def silhouette(x: np.ndarray, labels: np.ndarray, sample: int | None = 2000, seed: int = 0) -> float:
    """Mean silhouette (Euclidean) on a seeded sample of ``sample`` rows (all rows when fewer), as
    scikit-learn's ``silhouette_score(x, labels, sample_size=...)`` computes it on those rows."""
    x = np.asarray(x, np.float32)
    labels = np.asarray(labels)
    idx = np.arange(len(x)) if sample is None or sample >= len(x) else np.sort(
        np.random.default_rng(seed).choice(len(x), sample, replace=False))
    _, lab = np.unique(labels[idx], return_inverse=True)
    if lab.max() < 1:
        return float("nan")
    oh = np.eye(lab.max() + 1, dtype=np.float32)[lab]
    return float(np.mean(np.asarray(_silhouette(jnp.asarray(x[idx]), jnp.asarray(lab), jnp.asarray(oh)))))


def choose_k(x: np.ndarray, fit: KMeansFit, sample: int = 2000, seed: int = 0) -> tuple[int, dict]:
    """The k with the highest sampled silhouette among each k's best restart; ``(k, {k: silhouette})``."""
    best = best_per_k(fit)
    sil = {k: silhouette(x, fit.labels[i], sample, seed) for k, i in best.items()}
    return max(sil, key=lambda k: (np.nan_to_num(sil[k], nan=-2.0), -k)), sil


# --------------------------------------------------------------------------------------- enrichment

def enrichment(subset: np.ndarray, columns: dict, alpha: float = 0.05) -> pd.DataFrame:
    """Is a subset of rows (the band, a cluster) enriched for a column value?

    Args:
      subset: ``(N,)`` bool.  columns: ``{name: (N,) values}`` (missing values are left out per column).
    Returns:
      one row per (column, value): ``n_subset``, ``share_subset``, ``share_all`` (of rows with a value),
      ``odds_ratio`` (conditional MLE), ``ci_low``/``ci_high`` (exact, 1 - alpha), ``p_value`` (Fisher,
      two-sided) and ``p_holm`` (Holm over every row of the table). The odds ratio and its interval
      are undefined (NaN; None in ``mid.json``) when the table has an empty row or column (the subset
      holds every row, or none, of those with a value; or every row has this value). A defined odds
      ratio is infinite when the subset has no row without the value or the rest no row with it
      (``inf``; None in ``mid.json`` too): ``odds_ratio_kind`` (``finite``, ``infinite``,
      ``undefined``) tells them apart.
    """
    subset = np.asarray(subset, bool)
    rows = []
    for name, vals in columns.items():
        v = pd.Series(np.asarray(vals, dtype=object))
        ok = v.notna().to_numpy()
        for value in sorted(v[ok].unique(), key=str):
            hit = (v == value).to_numpy() & ok
            a, b = int((hit & subset).sum()), int((~hit & subset & ok).sum())
            c, d = int((hit & ~subset).sum()), int((~hit & ~subset & ok).sum())
            res = sps.contingency.odds_ratio([[a, b], [c, d]], kind="conditional")
            ci = res.confidence_interval(1 - alpha)
            lo, hi = (np.nan, np.nan) if np.isnan(res.statistic) else (ci.low, ci.high)   # empty row or column
            rows.append({"column": name, "value": value, "n_subset": a,
                         "share_subset": a / max(a + b, 1), "share_all": (a + c) / max(a + b + c + d, 1),
                         "odds_ratio": float(res.statistic), "ci_low": float(lo), "ci_high": float(hi),
                         "odds_ratio_kind": _odds_kind(float(res.statistic)),
                         "p_value": float(sps.fisher_exact([[a, b], [c, d]]).pvalue)})
    out = pd.DataFrame(rows, columns=["column", "value", "n_subset", "share_subset", "share_all", "odds_ratio",
                                      "ci_low", "ci_high", "odds_ratio_kind", "p_value"])
    out["p_holm"] = holm(out.p_value.to_numpy()) if len(out) else []
    return out


def _odds_kind(odds: float) -> str:
    return "undefined" if np.isnan(odds) else "infinite" if np.isinf(odds) else "finite"


# ------------------------------------------------------------------------------------ mislabelling

@functools.partial(jax.jit, static_argnames=("k",))
def _knn_disagree(q, x, q_idx, y_q, y, k: int):
    d2 = jnp.sum(q * q, 1)[:, None] - 2.0 * q @ x.T + jnp.sum(x * x, 1)[None, :]
    d2 = d2.at[jnp.arange(len(q)), q_idx].set(jnp.inf)                  # not one's own neighbour
    _, nn = jax.lax.top_k(-d2, k)
    return jnp.mean(y[nn] != y_q[:, None], 1)


def mislabel_scores(x: np.ndarray, labels: np.ndarray, k: int = 10, batch: int = 1024) -> np.ndarray:
    """``(N,)`` share of each row's ``k`` nearest neighbours (Euclidean, itself excluded) whose label
    differs from its own: 1 = every neighbour disagrees (a mislabel suspect)."""
    x = np.asarray(x, np.float32)
    y = np.asarray(pd.factorize(pd.Series(np.asarray(labels, dtype=object)))[0])
    require(1 <= k < len(x), f"mislabel k must be in [1, {len(x) - 1}], found {k}")
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    out = []
    for s in range(0, len(x), batch):
        idx = np.arange(s, min(s + batch, len(x)))
        pad = np.concatenate([idx, np.full(batch - len(idx), idx[-1])]) if len(idx) < batch and len(x) > batch else idx
        r = _knn_disagree(xj[pad], xj, jnp.asarray(pad), yj[pad], yj, k)
        out.append(np.asarray(r)[:len(idx)])
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------ methods

def mined_cells(x: np.ndarray, y: np.ndarray, logits: np.ndarray, mining: MiningConfig | None = None,
                seed: int = 0, random_band: bool = False) -> dict:
    """MID's pseudo-groups without group labels: the band (per predicted class) clustered by k-means
    (k by silhouette); a band row's cell is ``band:<cluster>:<class>``, any other row's ``rest:<class>``;
    a band cell with fewer than ``mining.min_cell`` rows joins its class's rest (a balanced refit keeps
    as many rows per cell as the smallest cell has). ``x``: ``(N, D)`` standardised embeddings;
    ``mining``: the band (``band`` share or ``band_threshold``), the cluster counts ``k`` and ``restarts``.
    ``random_band``: the control of the mining (``random_band`` method): as many rows per predicted
    class as the band holds, drawn at random instead of nearest 0, then the same clustering and cells.
    Returns ``{"cells", "band", "clusters" (N,; -1 off the band), "k", "silhouette", "centres",
    "cell_sizes", "merged"}``."""
    mining = MiningConfig() if mining is None else mining
    y = np.asarray(y)
    m = margins(logits)
    pred = _erm_pred(logits)
    in_band = band(m, pred, mining.band, mining.band_threshold)
    if random_band:
        rng, drawn = np.random.default_rng([seed, 7]), np.zeros(len(y), bool)
        for c in np.unique(pred):
            rows = np.flatnonzero(pred == c)
            drawn[rng.choice(rows, int(in_band[rows].sum()), replace=False)] = True
        in_band = drawn
    xb = np.asarray(x, np.float32)[in_band]
    ks = [k for k in mining.ks if k <= len(xb)]
    require(len(ks) > 0, f"the band holds {len(xb)} rows, too few to cluster (k >= 2); widen --band")
    fit = kmeans(xb, ks, mining.restarts, seed)
    k, sil = choose_k(xb, fit, seed=seed)
    i = best_per_k(fit)[k]
    clusters = np.full(len(y), -1)
    clusters[in_band] = fit.labels[i]
    rest = np.char.add("rest:", y.astype(str))
    cells = np.where(in_band, np.char.add(np.char.add("band:", clusters.astype(str)), np.char.add(":", y.astype(str))), rest)
    names, counts = np.unique(cells, return_counts=True)
    small = [n for n, c in zip(names, counts) if n.startswith("band:") and c < mining.min_cell]
    cells = np.where(np.isin(cells, small), rest, cells)
    names, counts = np.unique(cells, return_counts=True)
    return {"cells": cells, "band": in_band, "clusters": clusters, "k": int(k), "silhouette": sil,
            "centres": fit.centres[i, :k], "cell_sizes": {str(n): int(c) for n, c in zip(names, counts)},
            "merged": [str(n) for n in small]}


JTT_FIELDS = ("id_C", "upweight", "error_share", "weight_on_errors", "below_majority", "degenerate")  # JTT's record


def _erm_pred(logits) -> np.ndarray:
    """The model's classes from its logits (:func:`logit_array`: one logit is class 1 when > 0)."""
    z = logit_array(logits)
    return (z > 0).astype(int) if z.ndim == 1 else z.argmax(1)


def evaluate_predictions(y, pred, groups, train_shares: dict, alpha: float = 0.05, seed: int = 0) -> dict:
    """``{worst_group, worst_group_ci, mean, mean_ci, mean_plain, per_group, per_group_ci, per_group_n}`` on
    evaluation rows; ``mean`` weights the per-group accuracies by ``train_shares`` (the Waterbirds
    convention of DFR's paper), ``mean_plain`` is the share of all evaluation rows right (DFR's script)."""
    ci = accuracy_intervals(y, pred, groups, alpha)
    per = group_accuracy(y, pred, groups)
    return {"worst_group": min(per.values()), "worst_group_ci": list(ci["worst_group"]),
            "mean": weighted_accuracy(y, pred, groups, train_shares),
            "mean_ci": list(weighted_accuracy_interval(y, pred, groups, train_shares, alpha=alpha, seed=seed)),
            "mean_plain": float(np.mean(np.asarray(pred) == np.asarray(y))),
            "per_group": {str(g): v for g, v in per.items()},
            "per_group_n": {str(g): int(n) for g, n in zip(*np.unique(np.asarray(groups).astype(str), return_counts=True))},
            "per_group_ci": {str(g): list(v) for g, v in ci["per_group"].items()}}


def retrain_methods(val: dict, test: dict, train_shares: dict, config: MidConfig | None = None, **deprecated) -> dict:
    """ERM, class-balanced, JTT, MID, random-band, MID-oracle and DFR heads from the same frozen
    embeddings, scored on ``test``.

    Every retraining uses the validation rows (DFR's choice), standardised with their statistics:
    DFR balances their true groups; class_balanced balances the classes (no group labels; C by the
    worst class); JTT upweights the errors of an identification head (:func:`tune_jtt`); MID balances
    the pseudo-groups of :func:`mined_cells` (no group labels; C by the worst pseudo-group);
    random_band does the same on a random band of the band's size; MID-oracle balances the band's
    true groups against the rest. C: :func:`~wsca_jax.mitigation.retrain.tune_and_refit`
    (worst group on half the validation rows; MID: worst pseudo-group).

    Args:
      val, test: ``{"x": (N, D), "y": (N,) classes 0..K-1, "logits": (N,) or (N, K) ERM logits,
        "groups": (N,) or None}`` (test needs groups to be scored).
      train_shares: ``{group: share}`` of the training rows (for the weighted mean accuracy).
      config: a :class:`~wsca_jax.mitigation.config.MidConfig` (its ``mining`` and ``retraining``
        sections and ``seed``; default: the defaults). The settings as keywords (``methods=``,
        ``quantile=``, ``ks=``, ``restarts=`` ...) still work for one release, with a ``DeprecationWarning``.
    Returns:
      ``{"methods": {name: {..., "C"}}, "heads": {name: head on the validation-standardised columns},
      "mining": {"band", "k", "silhouette", "cells", "clusters"}}``.
    """
    if isinstance(config, (list, tuple)):                              # 0.8's fourth positional argument: methods
        deprecated, config = {"methods": config, **deprecated}, None
    config = with_deprecated_keywords(MidConfig, config, deprecated, "retrain_methods", RENAMED)
    rt, seed = config.retraining, config.seed
    yv, yt = np.asarray(val["y"]), np.asarray(test["y"])
    val, test = ({**s, "logits": logit_array(s["logits"], len(s["classes"]) if s.get("classes") else None,
                                             f"{w} logits")} for s, w in ((val, "validation"), (test, "test")))
    gv, gt = check_groups(val, test, rt.methods)
    xv, xt = standardise(val["x"], test["x"])
    shares = {str(g): v for g, v in train_shares.items()}
    mined = mined_cells(xv, yv, val["logits"], config.mining, seed) if {"mid", "mid_oracle"} & set(rt.methods) else None
    rand = mined_cells(xv, yv, val["logits"], config.mining, seed, random_band=True) if "random_band" in rt.methods else None
    out = {"methods": {}, "heads": {},
           "mining": None if mined is None else {k: mined[k] for k in ("band", "k", "silhouette", "cells", "clusters",
                                                                        "cell_sizes", "merged")}}
    for name in rt.methods:
        C = None
        if name == "erm":
            pred = _erm_pred(test["logits"])
        else:
            head = _refit(name, xv, yv, gv, val["logits"], {"mid": mined, "random_band": rand}, rt, seed)
            pred, C = predict_head(head, xt), head["C"]
            out["heads"][name] = head
        out["methods"][name] = {**evaluate_predictions(yt, pred, gt, shares, rt.alpha, seed), "C": C,
                                "converged": None if C is None else head["converged"],
                                "rows_per_refit": None if C is None else head["rows_per_refit"],
                                **{k: head[k] for k in JTT_FIELDS if C is not None and k in head}}
        if name == "random_band":
            out["methods"][name]["band_k"] = rand["k"]
    return out


def check_groups(val: dict, test: dict, methods) -> tuple:
    """The validation and test rows' groups as text ``((N_val,) or None, (N_test,))``, checked: the
    test rows have groups, the methods that need the validation rows' groups have them, and every
    test group has validation rows. Called before any retraining."""
    gv = None if val.get("groups") is None else np.asarray(val["groups"]).astype(str)
    require(test.get("groups") is not None, "the test rows have no group column: worst-group accuracy needs one")
    gt = np.asarray(test["groups"]).astype(str)
    need = [m for m in methods if m in ("dfr", "jtt", "mid_oracle")]
    require(gv is not None or not need, f"--methods {', '.join(need)} need the validation rows' groups (--groups)")
    if gv is not None:
        empty = sorted(set(gt) - set(gv))
        require(not empty, f"groups {', '.join(empty)} have no validation rows")
    return gv, gt


def _refit(name: str, xv, yv, gv, logits, mined, rt: RetrainingConfig, seed: int) -> dict:
    """One retrained head on the standardised validation rows (:func:`tune_and_refit`; JTT: :func:`tune_jtt`);
    ``mined``: ``{"mid": the band's cells, "random_band": the random band's}`` (:func:`mined_cells`)."""
    kw = dict(Cs=rt.Cs, n_refits=rt.refits, seed=seed, penalty=rt.penalty)
    if name == "dfr":
        return tune_and_refit(xv, yv, gv, gv, **kw)
    if name == "class_balanced":                      # no group labels: classes balanced, C by the worst class
        classes = np.char.add("class:", yv.astype(str))
        return tune_and_refit(xv, yv, classes, classes, **kw)
    if name == "jtt":
        ups = JTT_UPWEIGHTS if rt.jtt_upweight is None else (rt.jtt_upweight,)
        return tune_jtt(xv, yv, gv, Cs=rt.Cs, id_Cs=JTT_ID_CS, upweights=ups, seed=seed, penalty=rt.penalty)
    if name in ("mid", "random_band"):              # pseudo-groups balanced, C by the worst of them
        cells = mined[name]["cells"]
        return tune_and_refit(xv, yv, cells, cells, **kw)
    cells = np.where(mined["mid"]["band"], np.char.add("band:", gv), np.char.add("rest:", yv.astype(str)))  # mid_oracle
    return tune_and_refit(xv, yv, cells, gv, **kw)
