"""Batched linear probes: multinomial L2 logistic regression for many tasks x many replicates.

One jit-compiled call fits every task (padded to the widest task's class count ``K`` with a class
mask) for every replicate (a row of sample weights: bootstrap counts, cross-validation folds,
jackknife blocks) and, optionally, every permutation of the labels.

Objective per (replicate r, task t), the one scikit-learn's ``LogisticRegression`` minimises with
``sample_weight`` (for ``K >= 3``; see :func:`sklearn_equivalent_C` for binary tasks)::

    f(W, b) = (1 / n) * sum_i w_i * CE(y_i, softmax(W x_i + b)) + ||W||^2 / (2 * C * n),
    n = sum_i w_i   (rows with a missing label have w_i = 0)

Numerical design:
  * Embeddings are centred and rotated once into their principal axes (``Basis``). Rotation is
    exact (the L2 penalty is rotation invariant; centring is absorbed by the unpenalised intercept)
    and makes a diagonal preconditioner ``1 / (c * var_d + reg)`` nearly exact for the data term.
  * L-BFGS with that preconditioner, a fixed number of iterations inside ``lax.scan`` (a vmapped
    while-loop would run as long as its slowest member), and an exact two-step Newton line search
    along the direction: the logits move by ``alpha * X d``, so a line search costs one matmul.
  * Two GEMMs per iteration over all tasks and replicates at once:
    ``(N, D) @ (D, R*T*K)`` and its transpose. Convergence diagnostics come back as arrays.
  * ``solver="ridge"``: closed-form ridge regression on one-hot targets (one factorisation per
    task x replicate); cheap when weights are uniform, O(N D^2) per fit otherwise.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .errors import require


class ProbeConfig(NamedTuple):
    """Solver settings.

    Attributes:
      C: inverse L2 strength in scikit-learn's convention (objective ``sum w CE + ||W||^2/(2C)``).
      max_iter: L-BFGS iterations from a cold start (fixed; no early exit).
      warm_iter: iterations for replicates warm-started from the full-data solution (bootstrap,
        jackknife, cross-validation folds).
      history: L-BFGS memory.
      solver: ``"lbfgs"`` (logistic, the paper's probe) or ``"ridge"`` (closed form, one-hot targets).
      chunk: replicates fitted per compiled call (bounds memory: ~ 4 * chunk * T * N * K * 4 bytes).
    """

    C: float = 1.0
    max_iter: int = 150
    warm_iter: int = 60
    history: int = 10
    solver: str = "lbfgs"
    chunk: int = 32

    def to_dict(self) -> dict:
        return {"model": "multinomial_logistic_l2" if self.solver == "lbfgs" else "ridge_one_hot",
                "C": self.C, "solver": self.solver, "max_iter": self.max_iter,
                "warm_iter": self.warm_iter, "history": self.history,
                "objective": "mean weighted cross-entropy + ||W||^2 / (2 C n)"}


class Basis(NamedTuple):
    """Centred embeddings in their principal axes.

    Attributes:
      mean: ``(D,)`` column means.
      rotation: ``(D, D)`` orthogonal; column j is the j-th principal axis (descending variance).
      variances: ``(D,)`` variance along each axis (eigenvalues of ``Xc^T Xc / N``), descending.
      x: ``(N, D)`` float32 rotated centred embeddings ``(X - mean) @ rotation``.
    """

    mean: np.ndarray
    rotation: np.ndarray
    variances: np.ndarray
    x: jax.Array


class ProbeFit(NamedTuple):
    """Fitted probes, in the rotated basis (``to_original`` maps them back).

    Shapes carry any leading replicate axes ``...`` before ``T`` (tasks) and ``K`` (padded classes).

    Attributes:
      coef: ``(..., T, K, D)``; padded classes are zero rows.
      intercept: ``(..., T, K)``.
      objective: ``(..., T)`` final objective value.
      grad_max: ``(..., T)`` max |gradient| at the end (scikit-learn's stopping criterion).
    """

    coef: jax.Array
    intercept: jax.Array
    objective: jax.Array
    grad_max: jax.Array


def make_basis(embeddings: np.ndarray) -> Basis:
    """Centre and rotate ``(N, D)`` embeddings into their principal axes (float64 eigh)."""
    x = np.asarray(embeddings, np.float64)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / x.shape[0]
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    evecs = evecs[:, order]
    # deterministic signs (largest |entry| of each axis positive), as scikit-learn's svd_flip
    signs = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(evecs.shape[1])])
    signs[signs == 0] = 1.0
    evecs = evecs * signs
    return Basis(mean=mean, rotation=evecs, variances=evals,
                 x=jnp.asarray((xc @ evecs).astype(np.float32)))


def to_original(fit_coef: np.ndarray, fit_intercept: np.ndarray, basis: Basis) -> tuple[np.ndarray, np.ndarray]:
    """Map rotated-basis coefficients ``(..., K, D)`` back to the embedding's own coordinates."""
    coef = np.asarray(fit_coef, np.float64) @ basis.rotation.T
    intercept = np.asarray(fit_intercept, np.float64) - coef @ basis.mean
    return coef, intercept


def sklearn_equivalent_C(C: float, n_classes: int) -> float:
    """scikit-learn C giving the same decision function for a ``n_classes`` task.

    scikit-learn fits binary problems with one weight vector ``v``; our two-row softmax head has
    rows ``-v/2, +v/2`` under the same penalty, which equals scikit-learn's binary model at ``2 C``.
    """
    return 2.0 * C if n_classes == 2 else C


# ----------------------------------------------------------------------------------------------
# Core solver (pure functions of arrays; vmapped over replicates by the callers)


def _pdot(a, b):
    """Per-task inner product of parameter pairs ((T,K,D), (T,K)) -> (T,)."""
    return jnp.sum(a[0] * b[0], axis=(1, 2)) + jnp.sum(a[1] * b[1], axis=1)


def _masked_logits(z, class_mask):
    return jnp.where(class_mask[:, None, :], z, -jnp.inf)


def _loss_terms(z, labels, weights, class_mask):
    """Per-task weighted CE sum and probabilities. z (T,N,K) -> ((T,), p (T,N,K))."""
    zm = _masked_logits(z, class_mask)
    lse = jax.nn.logsumexp(zm, axis=-1)
    zy = jnp.take_along_axis(z, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    ce = jnp.sum(weights * (lse - zy), axis=1)
    p = jnp.exp(zm - lse[..., None])
    return ce, p


def _onehot(labels, k):
    return jax.nn.one_hot(labels, k, dtype=jnp.float32)  # -1 -> all zeros


def _lbfgs_fit(x, var, labels, weights, class_mask, coef0, b0, C, n_iter, history, c_curv=0.25):
    """Fit T probes by preconditioned L-BFGS with an exact Newton line search.

    Args:
      x: (N, D) rotated centred embeddings.  var: (D,) their variances.
      labels: (T, N) int32, -1 missing.  weights: (T, N) float, 0 where missing.
      class_mask: (T, K) bool.  coef0: (T, K, D), b0: (T, K) start.
      C: inverse penalty.  n_iter, history: static ints.
    Returns:
      ProbeFit with coef (T,K,D), intercept (T,K), objective (T,), grad_max (T,).
    """
    T, K = class_mask.shape
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)            # (T,)
    reg = 1.0 / (C * n)                                          # (T,)
    wn = weights / n[:, None]                                    # (T, N) normalised weights
    y1 = _onehot(labels, K)                                      # (T, N, K)
    maskf = class_mask.astype(x.dtype)
    h0w = 1.0 / (c_curv * var[None, :] + reg[:, None])           # (T, D) diagonal preconditioner
    h0b = jnp.full((T,), 1.0 / c_curv)

    def logits(W, b):
        return jnp.einsum("nd,tkd->tnk", x, W) + b[:, None, :]

    def value_grad(W, b, z):
        ce, p = _loss_terms(z, labels, wn, class_mask)
        f = ce + 0.5 * reg * jnp.sum(W * W, axis=(1, 2))
        r = (p - y1) * wn[..., None]
        gW = jnp.einsum("tnk,nd->tkd", r, x) + reg[:, None, None] * W
        gb = jnp.sum(r, axis=1) * maskf
        return f, (gW * maskf[..., None], gb), p

    def precond(g):
        return (g[0] * h0w[:, None, :], g[1] * h0b[:, None])

    def two_loop(g, S, Y, rho, newest):
        # newest: index of the most recent pair in the circular buffers (m, ...)
        m = S[0].shape[0]
        order = (newest - jnp.arange(m)) % m                     # newest -> oldest
        def first(q, i):
            s = (S[0][i], S[1][i]); yv = (Y[0][i], Y[1][i])
            a = rho[i] * _pdot(s, q)
            q = (q[0] - a[:, None, None] * yv[0], q[1] - a[:, None] * yv[1])
            return q, a
        q, alphas = jax.lax.scan(first, g, order)
        # scaled preconditioner from the newest pair: gamma = s.y / y.H0.y
        sN = (S[0][newest], S[1][newest]); yN = (Y[0][newest], Y[1][newest])
        yHy = _pdot(yN, precond(yN))
        gamma = jnp.where((rho[newest] > 0) & (yHy > 0), _pdot(sN, yN) / jnp.maximum(yHy, 1e-30), 1.0)
        r = precond(q)
        r = (r[0] * gamma[:, None, None], r[1] * gamma[:, None])
        def second(r, ia):
            i, a = ia
            s = (S[0][i], S[1][i]); yv = (Y[0][i], Y[1][i])
            beta = rho[i] * _pdot(yv, r)
            coeff = a - beta
            return (r[0] + coeff[:, None, None] * s[0], r[1] + coeff[:, None] * s[1]), None
        r, _ = jax.lax.scan(second, r, (order[::-1], alphas[::-1]))
        return r

    def line_quantities(z, u, W, dW, alpha):
        zz = z + alpha[:, None, None] * u
        ce, p = _loss_terms(zz, labels, wn, class_mask)
        Wa = W + alpha[:, None, None] * dW
        f = ce + 0.5 * reg * jnp.sum(Wa * Wa, axis=(1, 2))
        uy = jnp.take_along_axis(u, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
        pu = jnp.sum(p * u, axis=-1)
        d1 = jnp.sum(wn * (pu - uy), axis=1) + reg * _pdot((Wa, jnp.zeros_like(dW[..., 0])), (dW, jnp.zeros_like(dW[..., 0])))
        d2 = jnp.sum(wn * (jnp.sum(p * u * u, axis=-1) - pu * pu), axis=1) + reg * jnp.sum(dW * dW, axis=(1, 2))
        return f, d1, d2, zz

    z0 = logits(coef0, b0)
    f0, g0, _ = value_grad(coef0, b0, z0)
    m = history
    S = (jnp.zeros((m, T, K, x.shape[1]), x.dtype), jnp.zeros((m, T, K), x.dtype))
    Y = (jnp.zeros_like(S[0]), jnp.zeros_like(S[1]))
    rho = jnp.zeros((m, T), x.dtype)

    def step(carry, it):
        W, b, z, f, g, S, Y, rho = carry
        newest = (it - 1) % m
        d = two_loop(g, S, Y, rho, newest)
        d = (-d[0], -d[1])
        slope = _pdot(g, d)
        # fall back to the preconditioned gradient when d is not a descent direction
        pg = precond(g)
        bad = ~(slope < 0)
        d = (jnp.where(bad[:, None, None], -pg[0], d[0]), jnp.where(bad[:, None], -pg[1], d[1]))
        d = (d[0] * maskf[..., None], d[1] * maskf)
        u = jnp.einsum("nd,tkd->tnk", x, d[0]) + d[1][:, None, :]
        u = jnp.where(class_mask[:, None, :], u, 0.0)
        # exact line search: two Newton steps on phi(alpha) from alpha = 0
        zeros = jnp.zeros((T,), x.dtype)
        _, d1, d2, _ = line_quantities(z, u, W, d[0], zeros)
        a1 = jnp.clip(-d1 / jnp.maximum(d2, 1e-30), 0.0, 1e6)
        f1, d1b, d2b, _ = line_quantities(z, u, W, d[0], a1)
        a2 = jnp.clip(a1 - d1b / jnp.maximum(d2b, 1e-30), 0.0, 1e6)
        f2, _, _, _ = line_quantities(z, u, W, d[0], a2)
        alpha = jnp.where(f2 <= f1, a2, a1)
        fbest = jnp.minimum(f1, f2)
        alpha = jnp.where(fbest <= f, alpha, 0.0)                # never increase the objective
        Wn = W + alpha[:, None, None] * d[0]
        bn = b + alpha[:, None] * d[1]
        zn = z + alpha[:, None, None] * u
        fn, gn, _ = value_grad(Wn, bn, zn)
        s = (Wn - W, bn - b)
        yv = (gn[0] - g[0], gn[1] - g[1])
        sy = _pdot(s, yv)
        ok = sy > 1e-12 * jnp.maximum(_pdot(yv, yv), 1e-30) ** 0.5 * jnp.maximum(_pdot(s, s), 1e-30) ** 0.5
        slot = it % m
        S = (S[0].at[slot].set(s[0]), S[1].at[slot].set(s[1]))
        Y = (Y[0].at[slot].set(yv[0]), Y[1].at[slot].set(yv[1]))
        rho = rho.at[slot].set(jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0))
        return (Wn, bn, zn, fn, gn, S, Y, rho), None

    carry = (coef0, b0, z0, f0, g0, S, Y, rho)
    carry, _ = jax.lax.scan(step, carry, jnp.arange(1, n_iter + 1))
    W, b, z, f, g, *_ = carry
    gmax = jnp.maximum(jnp.max(jnp.abs(g[0]), axis=(1, 2)), jnp.max(jnp.abs(g[1]), axis=1))
    return ProbeFit(W, b * maskf, f, gmax)


def _ridge_fit(x, var, labels, weights, class_mask, C):
    """Closed-form weighted ridge on one-hot targets, per task. Shapes as ``_lbfgs_fit``."""
    T, K = class_mask.shape
    y1 = _onehot(labels, K)
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    wn = weights / n[:, None]
    mu_x = wn @ x                                                   # (T, D)
    mu_y = jnp.einsum("tn,tnk->tk", wn, y1)
    xc = x[None] - mu_x[:, None, :]                                 # (T, N, D)
    G = jnp.einsum("tn,tnd,tne->tde", wn, xc, xc) + (1.0 / (C * n))[:, None, None] * jnp.eye(x.shape[1])
    R = jnp.einsum("tn,tnd,tnk->tdk", wn, xc, y1 - mu_y[:, None, :])
    W = jnp.swapaxes(jnp.linalg.solve(G, R), 1, 2) * class_mask[..., None]
    b = (mu_y - jnp.einsum("tkd,td->tk", W, mu_x)) * class_mask
    resid = (y1 - jnp.einsum("nd,tkd->tnk", x, W) - b[:, None, :]) * class_mask[:, None, :]
    f = 0.5 * jnp.sum(wn * jnp.sum(resid ** 2, -1), 1) + 0.5 / (C * n) * jnp.sum(W * W, (1, 2))
    return ProbeFit(W, b, f, jnp.zeros((T,), x.dtype))


@partial(jax.jit, static_argnames=("n_iter", "history", "solver", "labels_batched", "init_batched"))
def fit_batched(x, var, labels, weights, class_mask, coef0, b0, C, *, n_iter, history, solver,
                labels_batched=False, init_batched=False):
    """Fit every task for every replicate in one compiled call.

    Args:
      x: ``(N, D)`` rotated centred embeddings; var: ``(D,)`` their variances.
      labels: ``(T, N)`` int32, or ``(R, T, N)`` when ``labels_batched`` (permutations).
      weights: ``(R, T, N)`` per-replicate, per-task sample weights (0 where a label is missing).
      class_mask: ``(T, K)`` bool.
      coef0, b0: start ``(T, K, D)``, ``(T, K)``, or with a leading ``R`` when ``init_batched``.
      C: inverse L2 strength.
    Returns:
      :class:`ProbeFit` with a leading replicate axis ``R``.
    """
    lab_ax = 0 if labels_batched else None
    init_ax = 0 if init_batched else None
    if solver == "ridge":
        fn = lambda lab, w, c0, bb0: _ridge_fit(x, var, lab, w, class_mask, C)
    else:
        fn = lambda lab, w, c0, bb0: _lbfgs_fit(x, var, lab, w, class_mask, c0, bb0, C, n_iter, history)
    return jax.vmap(fn, in_axes=(lab_ax, 0, init_ax, init_ax))(labels, weights, coef0, b0)


def initial_params(labels: np.ndarray, class_mask: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Cold start: zero weights, intercepts at the log class frequencies. ``(T,K,D)``, ``(T,K)``."""
    T, K = class_mask.shape
    b = np.zeros((T, K), np.float32)
    for t in range(T):
        counts = np.bincount(labels[t][labels[t] >= 0], minlength=K)[:K].astype(float) + 0.5
        lb = np.log(counts / counts.sum())
        b[t] = np.where(class_mask[t], lb - lb[class_mask[t]].mean(), 0.0)
    return np.zeros((T, K, d), np.float32), b


def fit_replicates(basis: Basis, labels: np.ndarray, weights: np.ndarray, class_mask: np.ndarray,
                   config: ProbeConfig, init: tuple | None = None, labels_batched: bool = False,
                   progress=None) -> ProbeFit:
    """Fit ``R`` replicates x ``T`` tasks, in chunks of ``config.chunk`` replicates.

    Args:
      basis: from :func:`make_basis`.
      labels: ``(T, N)`` (or ``(R, T, N)`` with ``labels_batched``), -1 missing.
      weights: ``(R, N)`` replicate sample weights; the missing-label mask is applied here.
      class_mask: ``(T, K)``.
      init: warm start ``(coef (T,K,D), intercept (T,K))`` shared by all replicates; None = cold.
      progress: optional callable ``(n_done)`` called after each chunk.
    Returns:
      :class:`ProbeFit` as NumPy arrays with leading axis ``R``.
    """
    labels = np.asarray(labels, np.int32)
    weights = np.asarray(weights, np.float32)
    R = weights.shape[0]
    d = basis.x.shape[1]
    if init is None:
        base_labels = labels[0] if labels_batched else labels
        coef0, b0 = initial_params(base_labels, class_mask, d)
        n_iter = config.max_iter
    else:
        coef0, b0 = (np.asarray(a, np.float32) for a in init)
        n_iter = config.warm_iter
    var = jnp.asarray(basis.variances, jnp.float32)
    cm = jnp.asarray(class_mask)
    outs = []
    chunk = max(1, int(config.chunk))
    for start in range(0, R, chunk):
        stop = min(R, start + chunk)
        w = weights[start:stop]
        lab = labels[start:stop] if labels_batched else labels
        lab_valid = (lab >= 0)
        w_task = w[:, None, :] * (lab_valid if labels_batched else lab_valid[None])
        # pad the last chunk to the chunk size so one compiled function serves every chunk
        pad = chunk - (stop - start) if R > chunk else 0
        if pad:
            w_task = np.concatenate([w_task, np.repeat(w_task[-1:], pad, 0)])
            if labels_batched:
                lab = np.concatenate([lab, np.repeat(lab[-1:], pad, 0)])
        fit = fit_batched(basis.x, var, jnp.asarray(lab), jnp.asarray(w_task), cm,
                          jnp.asarray(coef0), jnp.asarray(b0), float(config.C),
                          n_iter=int(n_iter), history=int(config.history), solver=config.solver,
                          labels_batched=labels_batched)
        fit = jax.tree_util.tree_map(lambda a: np.asarray(a)[: stop - start], fit)
        outs.append(fit)
        if progress is not None:
            progress(stop - start)
    return ProbeFit(*(np.concatenate(parts) for parts in zip(*outs)))


def fit_probes(embeddings: np.ndarray, labels: np.ndarray, class_mask: np.ndarray | None = None,
               sample_weight: np.ndarray | None = None, config: ProbeConfig = ProbeConfig(),
               basis: Basis | None = None) -> dict:
    """Fit one probe per task on full data and return them in the embedding's coordinates.

    Args:
      embeddings: ``(N, D)``.
      labels: ``(T, N)`` int (``-1`` missing) or ``(N,)`` for one task.
      class_mask: ``(T, K)``; default: classes ``0..max(label)`` of each task.
      sample_weight: ``(N,)`` optional.
    Returns:
      dict with ``coef (T, K, D)``, ``intercept (T, K)``, ``objective (T,)``, ``grad_max (T,)``.

    Example:
      >>> from sklearn.datasets import load_digits
      >>> X, y = load_digits(return_X_y=True)
      >>> out = fit_probes(X, y)            # one 10-class probe
      >>> out["coef"].shape
      (1, 10, 64)
    """
    labels = np.atleast_2d(np.asarray(labels)).astype(np.int32)
    require(labels.shape[1] == len(embeddings),
            f"labels have {labels.shape[1]} rows, embeddings have {len(embeddings)}")
    if class_mask is None:
        K = max(2, int(labels.max()) + 1)
        class_mask = np.zeros((labels.shape[0], K), bool)
        for t in range(labels.shape[0]):
            class_mask[t, : int(labels[t].max()) + 1] = True
    basis = basis or make_basis(embeddings)
    w = np.ones((1, len(embeddings)), np.float32) if sample_weight is None else np.asarray(sample_weight, np.float32)[None]
    fit = fit_replicates(basis, labels, w, class_mask, config)
    coef, intercept = to_original(fit.coef[0], fit.intercept[0], basis)
    return {"coef": coef, "intercept": intercept, "objective": fit.objective[0], "grad_max": fit.grad_max[0]}
