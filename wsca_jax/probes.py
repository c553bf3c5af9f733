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
  * L-BFGS with that preconditioner for all problems in lock-step inside one ``lax.while_loop``
    (stopping when every problem meets the gradient tolerance, or at the iteration cap), and an
    exact two-step Newton line search along the direction: the logits move by ``alpha * X d``, so
    a line search costs one matmul.
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
      tol: stop once every problem in a chunk has ``max |gradient| <= tol`` (of the mean-normalised
        objective, as scikit-learn's lbfgs ``tol``).
      max_iter: iteration cap from a cold start (zero weights).
      warm_iter: iteration cap for replicates warm-started at the full-data solution (bootstrap,
        jackknife, cross-validation folds).
      history: L-BFGS memory.
      solver: ``"lbfgs"`` (logistic, the paper's probe) or ``"ridge"`` (closed form, one-hot targets).
      chunk: replicates per compiled call; every call is padded to this many so that one
        compilation serves them all (memory ~ 6 * chunk * T * N * K * 4 bytes).
    """

    C: float = 1.0
    tol: float = 1e-5
    max_iter: int = 300
    warm_iter: int = 150
    history: int = 10
    solver: str = "lbfgs"
    chunk: int = 8

    def to_dict(self) -> dict:
        return {"model": "multinomial_logistic_l2" if self.solver == "lbfgs" else "ridge_one_hot",
                "C": self.C, "solver": self.solver, "tol": self.tol, "max_iter": self.max_iter,
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
      iterations: ``(...)`` L-BFGS iterations run (shared by the replicates of one compiled call).
    """

    coef: jax.Array
    intercept: jax.Array
    objective: jax.Array
    grad_max: jax.Array
    iterations: jax.Array


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


class _Consts(NamedTuple):
    """Loop-invariant quantities of one replicate (T tasks)."""

    labels: jax.Array      # (T, N) int32
    wn: jax.Array          # (T, N) weights / n
    y1: jax.Array          # (T, N, K) one-hot (zeros where missing)
    reg: jax.Array         # (T,) 1 / (C n)
    class_mask: jax.Array  # (T, K) bool


class Precond(NamedTuple):
    """Kronecker-factored curvature of each task, ``H_t ~ A_t (x) B_t + reg I``, by eigenpairs.

    ``A_t = sum_i w_i c_i [x_i, 1][x_i, 1]^T / n`` with ``c_i = tr S_i`` and
    ``B_t = sum_i w_i S_i / sum_i w_i c_i``, ``S_i = diag(p_i) - p_i p_i^T`` the softmax curvature
    at the starting point. Exact for binary tasks (and for any task at zero weights); for more
    classes the usual K-FAC approximation.

    Attributes:
      UA: ``(T, D+1, D+1)``, lA: ``(T, D+1)`` eigenpairs of A; UB: ``(T, K, K)``, lB: ``(T, K)``.
    """

    UA: jax.Array
    lA: jax.Array
    UB: jax.Array
    lB: jax.Array


class _State(NamedTuple):
    W: jax.Array; b: jax.Array; z: jax.Array; p: jax.Array; f: jax.Array   # noqa: E702
    gW: jax.Array; gb: jax.Array                              # noqa: E702
    SW: jax.Array; Sb: jax.Array; YW: jax.Array; Yb: jax.Array; rho: jax.Array  # noqa: E702


def _consts(labels, weights, class_mask, C) -> _Consts:
    T, K = class_mask.shape
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    return _Consts(labels=labels, wn=weights / n[:, None], y1=_onehot(labels, K), reg=1.0 / (C * n),
                   class_mask=class_mask)


@jax.jit
def kfac_precond(x, weights, class_mask, W, b) -> Precond:
    """Kronecker-factored curvature at ``(W, b)`` for every task (see :class:`Precond`).

    Args:
      x: ``(N, D)``; weights: ``(T, N)`` (0 for missing labels); class_mask ``(T, K)``;
      W: ``(T, K, D)``; b: ``(T, K)``.
    """
    n = jnp.maximum(jnp.sum(weights, axis=1), 1e-12)
    wn = weights / n[:, None]
    z = jnp.einsum("nd,tkd->tnk", x, W) + b[:, None, :]
    p = jax.nn.softmax(_masked_logits(z, class_mask), axis=-1)            # (T, N, K)
    c = 1.0 - jnp.sum(p * p, axis=-1)                                      # tr S_i
    xt = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)  # (N, D+1)

    def gram(wc):
        return (xt * wc[:, None]).T @ xt

    A = jax.lax.map(gram, wn * c)                                          # (T, D+1, D+1)
    B = (jnp.einsum("tn,tnk->tk", wn, p)[..., None] * jnp.eye(p.shape[-1])
         - jnp.einsum("tn,tnk,tnl->tkl", wn, p, p)) / jnp.maximum(jnp.sum(wn * c, axis=1), 1e-12)[:, None, None]
    lA, UA = jnp.linalg.eigh(A)
    lB, UB = jnp.linalg.eigh(B)
    return Precond(UA, jnp.maximum(lA, 0.0), UB, jnp.maximum(lB, 0.0))


def _apply_precond(P: Precond, reg, gW, gb):
    """``(A (x) B + reg I)^-1 g`` per task; gW ``(T, K, D)``, gb ``(T, K)``, reg ``(T,)``."""
    d = gW.shape[-1]
    G = jnp.concatenate([gW, gb[..., None]], axis=-1)                      # (T, K, D+1)
    G = jnp.einsum("tkd,tde->tke", G, P.UA)
    G = jnp.einsum("tke,tkl->tle", G, P.UB)
    G = G / (P.lB[:, :, None] * P.lA[:, None, :] + reg[:, None, None])
    G = jnp.einsum("tle,tkl->tke", G, P.UB)
    G = jnp.einsum("tke,tde->tkd", G, P.UA)
    return G[..., :d], G[..., d]


def _value_grad(x, cs: _Consts, W, b, z):
    ce, p = _loss_terms(z, cs.labels, cs.wn, cs.class_mask)
    f = ce + 0.5 * cs.reg * jnp.sum(W * W, axis=(1, 2))
    gW, gb = _grad_from_p(x, cs, W, p)
    return f, gW, gb, p


def _grad_from_p(x, cs: _Consts, W, p):
    r = (p - cs.y1) * cs.wn[..., None]
    maskf = cs.class_mask.astype(x.dtype)
    gW = (jnp.einsum("tnk,nd->tkd", r, x) + cs.reg[:, None, None] * W) * maskf[..., None]
    gb = jnp.sum(r, axis=1) * maskf
    return gW, gb


def _init(x, cs: _Consts, W0, b0, history) -> _State:
    z = jnp.einsum("nd,tkd->tnk", x, W0) + b0[:, None, :]
    f, gW, gb, p = _value_grad(x, cs, W0, b0, z)
    SW = jnp.zeros((history,) + W0.shape, x.dtype)
    Sb = jnp.zeros((history,) + b0.shape, x.dtype)
    return _State(W0, b0, z, p, f, gW, gb, SW, Sb, jnp.zeros_like(SW), jnp.zeros_like(Sb),
                  jnp.zeros((history, W0.shape[0]), x.dtype))


def _grad_max(st: _State):
    return jnp.maximum(jnp.max(jnp.abs(st.gW), axis=(-2, -1)), jnp.max(jnp.abs(st.gb), axis=-1))


def _step(x, P: Precond, cs: _Consts, st: _State, it) -> _State:
    """One L-BFGS iteration (two-loop direction, exact two-step Newton line search) for T tasks."""
    maskf = cs.class_mask.astype(x.dtype)
    m = st.rho.shape[0]

    def precond(g):
        out = _apply_precond(P, cs.reg, g[0], g[1])
        return (out[0] * maskf[..., None], out[1] * maskf)

    # two-loop recursion over the circular buffer, newest pair first
    newest = (it - 1) % m
    order = (newest - jnp.arange(m)) % m
    g = (st.gW, st.gb)

    def first(q, i):
        s = (st.SW[i], st.Sb[i]); yv = (st.YW[i], st.Yb[i])   # noqa: E702
        a = st.rho[i] * _pdot(s, q)
        return (q[0] - a[:, None, None] * yv[0], q[1] - a[:, None] * yv[1]), a

    q, alphas = jax.lax.scan(first, g, order)
    sN = (st.SW[newest], st.Sb[newest]); yN = (st.YW[newest], st.Yb[newest])   # noqa: E702
    yHy = _pdot(yN, precond(yN))
    gamma = jnp.where((st.rho[newest] > 0) & (yHy > 0), _pdot(sN, yN) / jnp.maximum(yHy, 1e-30), 1.0)
    r = precond(q)
    r = (r[0] * gamma[:, None, None], r[1] * gamma[:, None])

    def second(r, ia):
        i, a = ia
        s = (st.SW[i], st.Sb[i]); yv = (st.YW[i], st.Yb[i])   # noqa: E702
        coeff = a - st.rho[i] * _pdot(yv, r)
        return (r[0] + coeff[:, None, None] * s[0], r[1] + coeff[:, None] * s[1]), None

    r, _ = jax.lax.scan(second, r, (order[::-1], alphas[::-1]))
    d = (-r[0], -r[1])
    # fall back to the preconditioned gradient when d is not a descent direction
    bad = ~(_pdot(g, d) < 0)
    pg = precond(g)
    dW = jnp.where(bad[:, None, None], -pg[0], d[0]) * maskf[..., None]
    db = jnp.where(bad[:, None], -pg[1], d[1]) * maskf
    u = jnp.einsum("nd,tkd->tnk", x, dW) + db[:, None, :]
    u = jnp.where(cs.class_mask[:, None, :], u, 0.0)

    def along(alpha):
        """phi(alpha), phi'(alpha), phi''(alpha) and the probabilities, for every task."""
        zz = st.z + alpha[:, None, None] * u
        ce, p = _loss_terms(zz, cs.labels, cs.wn, cs.class_mask)
        Wa = st.W + alpha[:, None, None] * dW
        f = ce + 0.5 * cs.reg * jnp.sum(Wa * Wa, axis=(1, 2))
        uy = jnp.take_along_axis(u, jnp.maximum(cs.labels, 0)[..., None], axis=-1)[..., 0]
        pu = jnp.sum(p * u, axis=-1)
        d1 = jnp.sum(cs.wn * (pu - uy), axis=1) + cs.reg * jnp.sum(Wa * dW, axis=(1, 2))
        return f, d1, _curvature(p, u), p

    def _curvature(p, u):
        pu = jnp.sum(p * u, axis=-1)
        return jnp.sum(cs.wn * (jnp.sum(p * u * u, axis=-1) - pu * pu), axis=1) + cs.reg * jnp.sum(dW * dW, axis=(1, 2))

    # exact line search: Newton steps on phi(alpha) from alpha = 0 (slope and curvature at 0 are
    # known from the gradient and the current probabilities), then one more from alpha_1
    d1 = _pdot(g, (dW, db))
    a1 = jnp.clip(-d1 / jnp.maximum(_curvature(st.p, u), 1e-30), 0.0, 1e6)
    f1, d1b, d2b, p1 = along(a1)
    a2 = jnp.clip(a1 - d1b / jnp.maximum(d2b, 1e-30), 0.0, 1e6)
    f2, d1c, _, p2 = along(a2)
    use2 = jnp.abs(d1c) <= jnp.abs(d1b)                                 # closer to the line's minimum
    alpha = jnp.where(use2, a2, a1)
    fa = jnp.where(use2, f2, f1)
    # reject a step that increases the objective beyond float32 rounding; restart the memory then
    accept = fa <= st.f + 1e-6 * (1.0 + jnp.abs(st.f))
    alpha = jnp.where(accept, alpha, 0.0)
    f = jnp.where(accept, fa, st.f)
    sel = lambda a, b_, c: jnp.where(accept[:, None, None], jnp.where(use2[:, None, None], a, b_), c)  # noqa: E731
    p = sel(p2, p1, st.p)
    W = st.W + alpha[:, None, None] * dW
    b = st.b + alpha[:, None] * db
    z = st.z + alpha[:, None, None] * u
    gW, gb = _grad_from_p(x, cs, W, p)
    s = (W - st.W, b - st.b)
    yv = (gW - st.gW, gb - st.gb)
    sy = _pdot(s, yv)
    ok = sy > 1e-10 * jnp.sqrt(jnp.maximum(_pdot(yv, yv), 1e-30) * jnp.maximum(_pdot(s, s), 1e-30))
    slot = it % m
    return _State(W, b, z, p, f, gW, gb,
                  st.SW.at[slot].set(s[0]), st.Sb.at[slot].set(s[1]),
                  st.YW.at[slot].set(yv[0]), st.Yb.at[slot].set(yv[1]),
                  jnp.where(accept[None, :], st.rho, 0.0).at[slot].set(
                      jnp.where(ok & accept, 1.0 / jnp.where(ok, sy, 1.0), 0.0)))


def _ridge_fit(x, labels, weights, class_mask, C):
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
    return ProbeFit(W, b, f, jnp.zeros((T,), x.dtype), jnp.asarray(0))


@partial(jax.jit, static_argnames=("history", "solver", "init_batched", "patience"))
def fit_batched(x, precond, labels, weights, class_mask, coef0, b0, C, n_iter, tol, *, history=10,
                solver="lbfgs", init_batched=False, patience=10):
    """Fit every task for every replicate in one compiled call.

    The L-BFGS iterations of all ``R x T`` problems run in lock-step inside one ``lax.while_loop``
    that stops after ``n_iter`` iterations or once every problem has ``max |grad| <= tol``
    (scikit-learn's criterion) or has stalled (no 10% reduction of its gradient in ``patience``
    iterations: float32 round-off in the gradient sets a floor that large-scale features can lift
    above ``tol``); ``n_iter`` and ``tol`` are traced values, so one compilation serves warm and
    cold starts.

    Args:
      x: ``(N, D)`` rotated centred embeddings; precond: :class:`Precond` shared by the replicates
        (from :func:`kfac_precond` at the starting point), None for ``solver="ridge"``.
      labels: ``(R, T, N)`` int32, -1 missing.
      weights: ``(R, T, N)`` per-replicate, per-task sample weights (0 where a label is missing).
      class_mask: ``(T, K)`` bool.
      coef0, b0: start ``(T, K, D)``, ``(T, K)`` (a leading ``R`` when ``init_batched``).
      C: inverse L2 strength.  n_iter: iteration cap.  tol: gradient tolerance.
    Returns:
      :class:`ProbeFit` with leading axis ``R``.
    """
    if solver == "ridge":
        return jax.vmap(lambda lab, w: _ridge_fit(x, lab, w, class_mask, C))(labels, weights)
    init_ax = 0 if init_batched else None
    cs = jax.vmap(_consts, in_axes=(0, 0, None, None))(labels, weights, class_mask, C)
    st = jax.vmap(_init, in_axes=(None, 0, init_ax, init_ax, None))(x, cs, coef0, b0, history)
    step = jax.vmap(_step, in_axes=(None, None, 0, 0, None))

    def cond(carry):
        it, st, best, since = carry
        done = (_grad_max(st) <= tol) | (since >= patience)
        return (it <= n_iter) & ~jnp.all(done)

    def body(carry):
        it, st, best, since = carry
        st = step(x, precond, cs, st, it)
        g = _grad_max(st)
        improved = g < 0.9 * best
        return it + 1, st, jnp.where(improved, g, best), jnp.where(improved, 0, since + 1)

    g0 = _grad_max(st)
    it, st, _, _ = jax.lax.while_loop(cond, body, (jnp.asarray(1), st, g0, jnp.zeros_like(g0, jnp.int32)))
    b = st.b * class_mask.astype(x.dtype)
    iterations = jnp.full((labels.shape[0],), it - 1)
    return ProbeFit(st.W, b, st.f, _grad_max(st), iterations)


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
    """Fit ``R`` replicates x ``T`` tasks, ``config.chunk`` replicates per compiled call.

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
    cm = jnp.asarray(class_mask)
    c0, bb0 = jnp.asarray(coef0), jnp.asarray(b0)
    precond = None
    if config.solver == "lbfgs":
        base = labels[0] if labels_batched else labels
        precond = kfac_precond(basis.x, jnp.asarray(base >= 0, jnp.float32), cm, c0, bb0)
    outs = []
    chunk = max(1, int(config.chunk))
    for start in range(0, R, chunk):
        stop = min(R, start + chunk)
        idx = np.minimum(np.arange(start, start + chunk), R - 1)        # pad with the last replicate
        lab = labels[idx] if labels_batched else np.broadcast_to(labels, (chunk,) + labels.shape)
        w_task = weights[idx][:, None, :] * (lab >= 0)
        fit = fit_batched(basis.x, precond, jnp.asarray(lab), jnp.asarray(w_task, jnp.float32), cm,
                              c0, bb0, jnp.float32(config.C), jnp.int32(n_iter), jnp.float32(config.tol),
                              history=int(config.history), solver=config.solver)
        outs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[: stop - start], fit))
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
      dict with ``coef (T, K, D)``, ``intercept (T, K)``, ``objective (T,)``, ``grad_max (T,)``,
      ``iterations``.

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
    return {"coef": coef, "intercept": intercept, "objective": fit.objective[0], "grad_max": fit.grad_max[0],
            "iterations": int(fit.iterations[0])}
