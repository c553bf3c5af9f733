"""The line search of an L-BFGS iteration: Newton steps along the direction, Armijo backtracking.

The logits move by ``alpha * X d`` along a direction ``d``, so a trial step costs no matrix product
(:func:`_line_search`). :func:`_if_any` runs rare work (the second Newton step, steps that are not
the first trial) only when some problem needs it.

Shapes: ``T`` tasks, ``K`` classes, ``N`` rows, ``D`` dimensions; all of one replicate.
"""

from __future__ import annotations

from functools import reduce
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .objective import _classes, _Consts, _ksum, _logits, _objective, _residual

_ARMIJO = 1e-4
_SECOND_STEP = 0.1      # a second Newton step where |phi'(alpha_1)| > 0.1 |phi'(0)|
_MAX_BACKTRACK = 40


def _pdot(a, b):
    """Per-task inner product of parameter pairs ((T,K,D), (T,K)) -> (T,)."""
    return jnp.sum(a[0] * b[0], axis=(1, 2)) + jnp.sum(a[1] * b[1], axis=1)


def _if_any(pred, fn, operand, *args):
    """``fn(operand, *args)`` (same structure as ``operand``) if any entry of ``pred`` is True, else
    ``operand``: a ``while_loop`` of at most one pass, so that under ``vmap`` (the replicates) the
    work is skipped when no replicate needs it (a ``lax.cond`` there becomes a select that always
    evaluates both branches).

    ``fn`` must compute its expensive values from its arguments, not from values it closes over:
    XLA's loop-invariant code motion hoists out of the loop (always evaluates) whatever depends only
    on values that do not change in it. The arguments pass an optimization barrier together with
    the loop counter, which makes them loop-variant."""
    def body(c):
        x, a, i = jax.lax.optimization_barrier(c)
        return fn(x, *a), a, i + 1

    out, _, _ = jax.lax.while_loop(lambda c: jnp.any(pred) & (c[2] < 1), body, (operand, args, jnp.asarray(0)))
    return out


def _curvature(cs: _Consts, p, u, dW):
    """``phi''(alpha)`` along the direction at probabilities ``p``: ``sum_i w_i u_i^T S_i u_i / n +
    reg |dW|^2`` with ``S_i = diag(p_i) - p_i p_i^T``. p, u ``(T, K, N)``; dW ``(T, K, D)`` -> ``(T,)``."""
    pu = [a * b for a, b in zip(_classes(p), _classes(u))]
    quad = reduce(jnp.add, [a * b for a, b in zip(pu, _classes(u))]) - jnp.square(reduce(jnp.add, pu))
    return jnp.sum(cs.wn * quad, axis=1) + cs.reg * jnp.sum(dW * dW, axis=(1, 2))


class _Trial(NamedTuple):
    """The line search's outcome per task: step ``alpha``, objective ``f`` and its floor ``fl``,
    probabilities ``p``, ``ok`` (an acceptable step was found) and ``first`` (the step is the first
    trial, whose logits ``z1`` are then those at the step)."""

    alpha: jax.Array; f: jax.Array; fl: jax.Array; p: jax.Array; ok: jax.Array    # noqa: E702
    first: jax.Array; z1: jax.Array                                               # noqa: E702


def _line_search(x1, cs: _Consts, st, dW, db, u, exact) -> _Trial:
    """Step length along ``(dW, db)`` (logits move by ``alpha * u``) for every task. x1 ``(N, E)``;
    st: the :class:`~wsca_jax.probes.lbfgs.LBFGSState` (its weights, logits and probabilities);
    dW ``(T, K, D)``, db ``(T, K)``; u ``(T, K, N)``; exact: a scalar bool.

    A Newton step on ``phi(alpha)`` from 0 (slope from the gradient, curvature from the current
    probabilities); ``phi'(alpha_1)`` from a pass over the trial's probabilities (taking it from the
    trial's gradient instead saves that pass but costs a third matrix product in every iteration
    where some problem takes another step: the realistic benchmark's bootstrap of 24 replicates
    took 9.4 and 8.9 s that way against 8.4 and 8.0 s this way). A second Newton step from there
    where the first failed the Armijo condition ``phi(alpha) <= phi(0) + 1e-4 alpha phi'(0) +
    floor`` (floor: float32 rounding of ``phi``) or left more than ``_SECOND_STEP`` of the starting slope (``phi`` far from
    quadratic, as in near-separable problems), kept where it is acceptable and either the first was
    not or it is lower; then backtracking by safeguarded quadratic interpolation where neither step
    is acceptable. The second trial is evaluated (for every task, then selected per task) only when
    some task needs it (a ``while_loop`` of at most one pass, :func:`_if_any`): on well-conditioned
    problems the first step is nearly always enough; never evaluating it left a near-separable fit
    (C = 100, 3 classes, ``tests/test_probes.py``) stalled above its float32 floor.

    The logits move incrementally (``z + alpha u``); where ``exact`` (a scalar: every
    ``lbfgs._REFRESH``-th iteration, at the cap, and when every problem is within ``lbfgs._NEAR``
    tol of its stop) the first trial's logits are recomputed from its weights instead (one matrix
    product), so that float32 drift cannot leave the gradient inconsistent with the weights (a
    problem that takes another step keeps incremental logits until the next such iteration or the
    stop's refresh).
    """
    slope = _pdot((st.gW, st.gb), (dW, db))                               # (T,) < 0

    def phi(alpha):
        W = st.W + alpha[:, None, None] * dW
        return _objective(cs, W, st.z + alpha[:, None, None] * u)

    def armijo(alpha, f):
        return jnp.isfinite(f) & (f <= st.f + _ARMIJO * alpha * slope + st.fl)

    a1 = jnp.clip(-slope / jnp.maximum(_curvature(cs, st.p, u, dW), 1e-30), 0.0, 1e6)
    W1 = st.W + a1[:, None, None] * dW
    z1 = jax.lax.cond(exact, lambda: _logits(x1, W1, st.b + a1[:, None] * db),
                      lambda: st.z + a1[:, None, None] * u)
    f1, fl1, p1 = _objective(cs, W1, z1)
    ok1 = armijo(a1, f1)
    d1b = (jnp.sum(cs.wn * _ksum(_residual(p1, cs.y1) * u), axis=1)      # phi'(a1)
           + cs.reg * jnp.sum(W1 * dW, axis=(1, 2)))
    # the second Newton step: where the first failed Armijo, or left the slope above _SECOND_STEP of
    # its start (phi far from quadratic: near-separable problems)
    need2 = ~ok1 | (jnp.abs(d1b) > _SECOND_STEP * jnp.abs(slope))

    def second(c):                       # evaluated only when some task needs it
        a1, f1, fl1, p1, ok1, _ = c      # (all derived from the carried a1: nothing is hoisted)
        a2 = jnp.clip(a1 - d1b / jnp.maximum(_curvature(cs, p1, u, dW), 1e-30), 0.0, 1e6)
        f2, fl2, p2 = phi(a2)
        ok2 = armijo(a2, f2)
        use2 = need2 & ok2 & (~ok1 | (f2 < f1))
        pick = lambda a, b: jnp.where(use2.reshape(use2.shape + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        return pick(a2, a1), pick(f2, f1), pick(fl2, fl1), pick(p2, p1), ok1 | (need2 & ok2), ok1 & ~use2

    # first: the step is the first trial (decided by flag, not by comparing step lengths: a second
    # step can round to the first's length while its probabilities come from incremental logits)
    *start, first = _if_any(need2, second, (a1, f1, fl1, p1, ok1, ok1))
    start = tuple(start) + (jnp.asarray(0),)
    alpha, f, fl, p, ok, _ = _backtrack(st.f, slope, phi, armijo, start)
    return _Trial(alpha, f, fl, p, ok, first, z1)   # backtracking moves only tasks that were not ok


def _backtrack(f0, slope, phi, armijo, start):
    """Backtracking by safeguarded quadratic interpolation for the tasks without an acceptable step
    (the others keep theirs), at most ``_MAX_BACKTRACK`` passes.

    f0, slope: ``phi(0)`` and ``phi'(0)`` ``(T,)``; ``phi(alpha) -> (f, floor, p)`` and
    ``armijo(alpha, f) -> ok`` of :func:`_line_search`; start: ``(alpha (T,), f (T,), fl (T,),
    p (T, K, N), ok (T,), 0)``. Returns the same tuple after the loop."""
    def cond(c):
        return jnp.any(~c[4]) & (c[5] < _MAX_BACKTRACK)

    def body(c):
        alpha, f, fl, p, ok, j = c
        excess = f - f0 - slope * alpha
        interp = -slope * alpha * alpha / (2.0 * jnp.maximum(excess, 1e-30))
        interp = jnp.where(jnp.isfinite(f) & (excess > 0), interp, 0.1 * alpha)
        trial = jnp.where(ok, alpha, jnp.clip(interp, 0.1 * alpha, 0.5 * alpha))
        ft, flt, pt = phi(trial)
        okt = ok | armijo(trial, ft)
        keep = lambda new, old: jnp.where(ok.reshape(ok.shape + (1,) * (new.ndim - 1)), old, new)  # noqa: E731
        return trial, keep(ft, f), keep(flt, fl), keep(pt, p), okt, j + 1

    return jax.lax.while_loop(cond, body, start)
