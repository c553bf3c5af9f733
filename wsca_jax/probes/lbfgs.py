"""L-BFGS for many problems in lock-step: state, init, one step, the loop (in the optax/jaxopt manner).

:class:`LBFGSState` holds one replicate's iterate and memory; :func:`init_state` builds it at a
start, :func:`update` takes one iteration (two-loop direction with the K-FAC preconditioner as the
initial Hessian, :func:`~wsca_jax.probes.linesearch._line_search`), :func:`refresh` recomputes the
logits exactly, and :func:`run` is the ``lax.while_loop`` over all replicates (vmapped) and tasks.

Two matrix products per iteration over all tasks and replicates at once: ``(N, E) @ (E, R*T*(K-1))``
(the direction's logits) and its transpose (the gradient); a third in the iterations that recompute
the logits exactly (every ``_REFRESH``-th, at the cap, and near the stop), so that the incremental
update ``z + alpha u`` cannot drift.

Shapes: ``T`` tasks, ``K`` classes, ``N`` rows, ``D`` dimensions, ``E`` the aligned width
(:func:`~wsca_jax.probes.objective._with_ones`), ``m`` the memory (``history``).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .basis import ProbeFit
from .linesearch import _if_any, _line_search
from .objective import _center, _Consts, _consts, _grad_floor, _grad_from_p, _logits, _objective, _sum_zero, _with_ones
from .precondition import Precond, _precond_rotated, _rotate, _unrotate


class LBFGSState(NamedTuple):
    """Solver state of one replicate. ``gh``, ``S``, ``Y``: the gradient and the L-BFGS pairs
    ``(m, T, K, D+1)`` in the rotated coordinates of :func:`_rotate`."""

    W: jax.Array; b: jax.Array; z: jax.Array; p: jax.Array; f: jax.Array   # noqa: E702
    fl: jax.Array                                             # (T,) float32 rounding floor of f
    gW: jax.Array; gb: jax.Array; gh: jax.Array               # noqa: E702
    S: jax.Array; Y: jax.Array; rho: jax.Array                # noqa: E702


def _hdot(a, b):
    """Per-task inner product of ``(..., T, K, E)`` arrays -> ``(..., T)``."""
    return jnp.sum(a * b, axis=(-2, -1))


def init_state(x1, P: Precond, cs: _Consts, W0, b0, history) -> LBFGSState:
    """The state at the start ``W0 (T, K, D)``, ``b0 (T, K)``: exact logits, objective and gradient,
    an empty memory of ``history`` pairs. x1 ``(N, E)`` (:func:`~wsca_jax.probes.objective._with_ones`)."""
    z = _logits(x1, W0, b0)
    f, fl, p = _objective(cs, W0, z)
    gW, gb = _grad_from_p(x1, cs, W0, p)
    gh = _rotate(P, gW, gb)
    S = jnp.zeros((history,) + gh.shape, x1.dtype)
    return LBFGSState(W0, b0, z, p, f, fl, gW, gb, gh, S, jnp.zeros_like(S),
                      jnp.zeros((history, W0.shape[0]), x1.dtype))


_REFRESH = 10
_NEAR = 1.5         # every problem's max |grad| within 1.5 tol: the next trial's logits are exact


def refresh(x1, P: Precond, cs: _Consts, st: LBFGSState) -> LBFGSState:
    """Recompute logits, objective, probabilities and gradient exactly from ``(W, b)``."""
    z = _logits(x1, st.W, st.b)
    f, fl, p = _objective(cs, st.W, z)
    gW, gb = _grad_from_p(x1, cs, st.W, p)
    return st._replace(z=z, f=f, fl=fl, p=p, gW=gW, gb=gb, gh=_rotate(P, gW, gb))


def _grad_max(st: LBFGSState):
    """``max |gradient|`` of each task ``(T,)`` (or ``(R, T)`` of a vmapped state)."""
    return jnp.maximum(jnp.max(jnp.abs(st.gW), axis=(-2, -1)), jnp.max(jnp.abs(st.gb), axis=-1))


def _direction(P: Precond, cs: _Consts, st: LBFGSState, it):
    """L-BFGS two-loop direction with the K-FAC preconditioner as the initial Hessian, computed in
    the rotated coordinates (:func:`_rotate`); the preconditioned gradient where that is not a
    descent direction. Returns ``dW (T,K,D), db (T,K)`` and the rotated direction ``(T,K,D+1)``."""
    maskf = cs.class_mask.astype(st.W.dtype)[..., None]
    m = st.rho.shape[0]

    def precond(h):
        return _precond_rotated(P, cs.reg, h) * maskf

    newest = (it - 1) % m                                     # circular buffer, newest pair first
    order = (newest - jnp.arange(m)) % m

    def first(q, i):
        a = st.rho[i] * _hdot(st.S[i], q)
        return q - a[:, None, None] * st.Y[i], a

    q, alphas = jax.lax.scan(first, st.gh, order)
    sN, yN = st.S[newest], st.Y[newest]
    yHy = _hdot(yN, precond(yN))
    gamma = jnp.where((st.rho[newest] > 0) & (yHy > 0), _hdot(sN, yN) / jnp.maximum(yHy, 1e-30), 1.0)
    r = precond(q) * gamma[:, None, None]

    def second(r, ia):
        i, a = ia
        coeff = a - st.rho[i] * _hdot(st.Y[i], r)
        return r + coeff[:, None, None] * st.S[i], None

    r, _ = jax.lax.scan(second, r, (order[::-1], alphas[::-1]))
    bad = ~(_hdot(st.gh, -r) < 0)
    dh = jnp.where(bad[:, None, None], -precond(st.gh), -r) * maskf
    # onto the rows' sum-zero subspace (:func:`_sum_zero`): the preconditioner is ~1/reg along the
    # softmax's flat direction (every row moved alike), where float32 rounding would otherwise grow
    dh = _center(dh, maskf)
    dW, db = _unrotate(P, dh)
    return _sum_zero(dW * maskf, cs.class_mask), db * maskf[..., 0], dh


def update(x1, P: Precond, cs: _Consts, st: LBFGSState, it, exact) -> tuple[LBFGSState, jax.Array]:
    """One L-BFGS iteration (two-loop direction, Newton line search with Armijo backtracking).
    x1 ``(N, E)`` (:func:`_with_ones`); ``exact``: recompute the logits (:func:`_line_search`).
    Returns the new state and whether it is exact (logits, objective and gradient computed from
    the weights: ``exact`` and every task took the first trial)."""
    maskf = cs.class_mask.astype(x1.dtype)
    m = st.rho.shape[0]
    dW, db, dh = _direction(P, cs, st, it)
    u = _logits(x1, dW, db)                   # 0 for absent classes (an absent last one: rounding, masked)
    tr = _line_search(x1, cs, st, dW, db, u, exact)
    # no acceptable step: stay, and restart the memory from the preconditioned gradient
    ok = tr.ok
    alpha = jnp.where(ok, tr.alpha, 0.0)
    f = jnp.where(ok, tr.f, st.f)
    fl = jnp.where(ok, tr.fl, st.fl)
    W = _sum_zero(st.W + alpha[:, None, None] * dW, cs.class_mask)
    b = st.b + alpha[:, None] * db * maskf

    def other_step(c, alpha):
        """Logits and probabilities where the step is not the first trial."""
        z, p = c
        first = tr.first[:, None, None]
        return (jnp.where(first, z, st.z + alpha[:, None, None] * u),
                jnp.where(first | ok[:, None, None], p, st.p))

    z, p = _if_any(~tr.first, other_step, (tr.z1, tr.p), alpha)
    gW, gb = _grad_from_p(x1, cs, W, p)
    gh = _rotate(P, gW, gb)
    s = alpha[:, None, None] * dh                                  # the step, rotated
    yv = gh - st.gh
    sy = _hdot(s, yv)
    good = sy > 1e-10 * jnp.sqrt(jnp.maximum(_hdot(yv, yv), 1e-30) * jnp.maximum(_hdot(s, s), 1e-30))
    slot = it % m
    return LBFGSState(W, b, z, p, f, fl, gW, gb, gh, st.S.at[slot].set(s), st.Y.at[slot].set(yv),
                  jnp.where(ok[None, :], st.rho, 0.0).at[slot].set(
                      jnp.where(good & ok, 1.0 / jnp.where(good, sy, 1.0), 0.0))), exact & jnp.all(tr.first)


def run(x, precond: Precond, labels, weights, class_mask, coef0, b0, C, n_iter, tol, history: int,
        init_batched: bool, patience: int) -> ProbeFit:
    """L-BFGS fits of every task for every replicate in lock-step inside one ``lax.while_loop``.

    The loop stops after ``n_iter`` iterations or once every problem has either met the gradient
    tolerance ``max |grad| <= tol`` or stalled: ``patience`` iterations in which neither the
    objective fell by more than its float32 rounding floor nor ``max |grad|`` by 10% (a stalled fit
    is returned converged provisionally, for the host recheck). Whenever the loop would stop, the
    stop is decided on exact gradients (:func:`refresh` unless the step was exact). ``n_iter`` and
    ``tol`` are traced values, so one compilation serves warm and cold starts.

    Args and shapes as :func:`~wsca_jax.probes.fit_batched` (``solver="lbfgs"``): x ``(N, D)``;
    labels, weights ``(R, T, N)``; class_mask ``(T, K)``; coef0 ``(T, K, D)``, b0 ``(T, K)`` (a
    leading ``R`` when ``init_batched``). Returns a :class:`ProbeFit` with leading axis ``R``.
    """
    init_ax = 0 if init_batched else None
    x1 = _with_ones(x)
    # the start onto the solver's subspace (:func:`_sum_zero`); the same softmax, a lower penalty
    coef0 = _sum_zero(_center(coef0, class_mask[..., None].astype(coef0.dtype)), class_mask)
    b0 = b0 * class_mask
    cs = jax.vmap(_consts, in_axes=(0, 0, None, None))(labels, weights, class_mask, C)
    st = jax.vmap(init_state, in_axes=(None, None, 0, init_ax, init_ax, None))(x1, precond, cs, coef0, b0, history)
    step = jax.vmap(update, in_axes=(None, None, 0, 0, None, None))
    refresh_all = jax.vmap(partial(refresh, x1, precond), in_axes=(0, 0))

    def cond(carry):
        it, st, f_best, g_best, since = carry
        done = (_grad_max(st) <= tol) | (since >= patience)
        return (it <= n_iter) & ~jnp.all(done)

    def body(carry):
        it, st, f_best, g_best, since = carry
        # exact logits in the first trial every _REFRESH-th iteration, at the cap, and when every
        # problem is near its stop (then the state is usually exact where the loop stops)
        near = jnp.all((_grad_max(st) <= _NEAR * tol) | (since + 1 >= patience))
        st, exact = step(x1, precond, cs, st, it, (it % _REFRESH == 0) | near | (it >= n_iter))
        # whenever the loop would stop (all converged or stalled, or the iteration cap), the stop --
        # and the convergence reported -- are decided on exact gradients: logits, objective and
        # gradient recomputed from (W, b) unless the step just computed them so
        would_stop = jnp.all((_grad_max(st) <= tol) | (since + 1 >= patience)) | (it >= n_iter)
        st = jax.lax.cond(would_stop & ~jnp.all(exact), lambda s: refresh_all(cs, s), lambda s: s, st)
        g = _grad_max(st)
        f_down = st.f < f_best - st.fl
        g_down = g < 0.9 * g_best
        return (it + 1, st, jnp.where(f_down, st.f, f_best), jnp.where(g_down, g, g_best),
                jnp.where(f_down | g_down, 0, since + 1))

    g0 = _grad_max(st)
    # the loop ends on a refreshed state: after a body that would stop, or on the exact start
    it, st, _, _, since = jax.lax.while_loop(
        cond, body, (jnp.asarray(1), st, st.f, g0, jnp.zeros_like(g0, jnp.int32)))
    fW, fb = jax.vmap(_grad_floor, in_axes=(None, 0, 0, 0, 0))(x1, cs, st.W, st.b, st.p)
    g = _grad_max(st)
    has_rows = jnp.any(weights > 0, axis=-1)                  # (R, T): a problem without rows has no fit
    # a stalled fit is only provisionally converged here: recheck_stalled judges it on the host
    converged = ((g <= tol) | (since >= patience)) & has_rows
    floor = jnp.maximum(jnp.max(fW, axis=(-2, -1)), jnp.max(fb, axis=-1))
    b = st.b * class_mask.astype(x.dtype)
    iterations = jnp.full((labels.shape[0],), it - 1)
    return ProbeFit(st.W, b, st.f, g, iterations, converged, floor, jnp.full_like(st.f, jnp.nan))
