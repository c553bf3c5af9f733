"""The optimality certificate of a full-data fit: Newton decrement in float64, Newton-CG polish.

A small gradient does not show that a fit is at its optimum: in a flat valley (unstandardised
features, large C) ``max |grad|`` can be below the tolerance while the objective is 1% above its
minimum. What does show it is the Newton decrement ``lambda^2 = g^T H^-1 g``: near the optimum the
objective is ``lambda^2 / 2`` above its minimum (exactly so for a quadratic). :func:`certify` computes
it on the host in float64, with exact Hessian-vector products (:func:`_hvp`) and conjugate
gradients preconditioned by the Hessian's diagonal (:func:`_pcg`), and where the estimated
relative gap ``lambda^2 / (2 f)`` is above ``gap_tol`` takes damped Newton steps from the fit
(Armijo backtracking on the float64 objective) until it is below, or ``newton_steps`` are spent.
The fit is ``converged`` only where the final gap is at most ``gap_tol``.

Everything stays on the solver's subspace (a task's weight rows and intercepts sum to zero over
its classes: :func:`~wsca_jax.probes.objective._sum_zero`), where the Hessian is positive definite.

Shapes: ``N`` rows, ``D`` dimensions, ``K`` (padded) classes of one task.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .basis import ROW_BLOCK, ProbeFit

CACHE_BYTES = 2e9          # a float64 copy of the embeddings is kept while it is at most this size


class _Problem(NamedTuple):
    """One task's data: float64 row blocks of x, labels ``(N,)``, normalised weights ``(N,)``,
    class mask ``(K,)`` and the penalty ``reg = 1 / (C n)``."""

    blocks: list
    labels: np.ndarray
    wn: np.ndarray
    mask: np.ndarray
    reg: float


class _Point(NamedTuple):
    """The objective ``f``, gradient ``(gW (K, D), gb (K,))`` and probabilities ``p (N, K)`` at a point."""

    f: float
    gW: np.ndarray
    gb: np.ndarray
    p: np.ndarray


def _blocks(x) -> list:
    """Row blocks of ``x (N, D)`` in float64: copies when they fit in ``CACHE_BYTES``, else lazy views."""
    n, d = x.shape
    spans = [(s, min(n, s + ROW_BLOCK)) for s in range(0, n, ROW_BLOCK)]
    if 8.0 * n * d <= CACHE_BYTES:
        return [(a, np.asarray(x[a:b], np.float64)) for a, b in spans]
    return [(a, x[a:b]) for a, b in spans]


def _rows(prob: _Problem):
    """``(start, float64 block)`` over the problem's rows."""
    for a, xb in prob.blocks:
        yield a, np.asarray(xb, np.float64)


def _center(W, b, mask):
    """Project ``W (K, D)``, ``b (K,)`` onto rows summing to zero over the present classes (zeros elsewhere)."""
    m = mask.astype(np.float64)
    k = max(m.sum(), 1.0)
    return (W - (m @ W) / k) * m[:, None], (b - (m @ b) / k) * m


def evaluate(prob: _Problem, W, b) -> _Point:
    """Objective, gradient and probabilities at ``W (K, D)``, ``b (K,)`` in float64."""
    n = len(prob.labels)
    p = np.zeros((n, len(prob.mask)))
    loss, gW, gb = 0.0, np.zeros_like(W), np.zeros_like(b)
    for a, xb in _rows(prob):
        sl = slice(a, a + len(xb))
        z = np.where(prob.mask, xb @ W.T + b, -np.inf)
        top = z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
        lab, wn = prob.labels[sl], prob.wn[sl]
        zy = np.take_along_axis(z, np.maximum(lab, 0)[:, None], axis=1)[:, 0]
        loss += float(np.sum(np.where(wn > 0, wn * (lse - zy), 0.0)))
        pb = np.exp(z - lse[:, None])
        p[sl] = pb
        r = (pb - np.eye(len(prob.mask))[np.maximum(lab, 0)]) * wn[:, None]
        gW += r.T @ xb
        gb += r.sum(axis=0)
    gW, gb = _center(gW + prob.reg * W, gb, prob.mask)
    return _Point(loss + 0.5 * prob.reg * float(np.sum(W * W)), gW, gb, p)


def _hvp(prob: _Problem, p, VW, Vb):
    """Hessian-vector product at probabilities ``p (N, K)`` with ``(VW (K, D), Vb (K,))``: the data
    term ``sum_i w_i x_i (diag(p_i) - p_i p_i^T) dz_i`` plus the penalty, on the sum-zero subspace."""
    HW, Hb = prob.reg * VW, np.zeros_like(Vb)
    for a, xb in _rows(prob):
        pb = p[a:a + len(xb)]
        dz = xb @ VW.T + Vb
        dp = pb * (dz - np.sum(pb * dz, axis=1, keepdims=True)) * prob.wn[a:a + len(xb), None]
        HW += dp.T @ xb
        Hb += dp.sum(axis=0)
    return _center(HW, Hb, prob.mask)


def _diagonal(prob: _Problem, p):
    """The Hessian's diagonal ``((K, D), (K,))`` at ``p`` (the conjugate gradients' preconditioner)."""
    dW = np.full((len(prob.mask), prob.blocks[0][1].shape[1]), prob.reg)
    db = np.zeros(len(prob.mask))
    for a, xb in _rows(prob):
        v = p[a:a + len(xb)] * (1.0 - p[a:a + len(xb)]) * prob.wn[a:a + len(xb), None]
        dW += v.T @ (xb * xb)
        db += v.sum(axis=0)
    return dW, np.maximum(db, 1e-300)


def _pcg(prob: _Problem, pt: _Point, rtol: float, max_iter: int):
    """Solve ``H s = g`` by conjugate gradients preconditioned with the diagonal. Returns the step
    ``(sW, sb)``, the decrement ``g^T s`` (a lower bound on ``g^T H^-1 g`` that rises to it) and
    whether the residual reached ``rtol`` (else the decrement may be too low: not a certificate)."""
    dW, db = _diagonal(prob, pt.p)

    def dot(a, b):
        return float(np.sum(a[0] * b[0]) + np.sum(a[1] * b[1]))

    def precond(r):
        return _center(r[0] / dW, r[1] / db, prob.mask)

    g = (pt.gW, pt.gb)
    s = (np.zeros_like(pt.gW), np.zeros_like(pt.gb))
    r, gnorm = g, np.sqrt(dot(g, g))
    zr = precond(r)
    d, rz = zr, dot(r, zr)
    for _ in range(max_iter + 1):
        if np.sqrt(dot(r, r)) <= rtol * gnorm or gnorm == 0:
            return s, dot(g, s), True
        Hd = _hvp(prob, pt.p, *d)
        dHd = dot(d, Hd)
        if not (dHd > 0 and rz > 0):
            break
        a = rz / dHd
        s = (s[0] + a * d[0], s[1] + a * d[1])
        r = (r[0] - a * Hd[0], r[1] - a * Hd[1])
        zr = precond(r)
        rz_new = dot(r, zr)
        d = (zr[0] + rz_new / rz * d[0], zr[1] + rz_new / rz * d[1])
        rz = rz_new
    return s, dot(g, s), False


class Certificate(NamedTuple):
    """The outcome for one task: weights ``W (K, D)``, ``b (K,)``, objective, ``max |grad|``, the
    estimated relative gap ``lambda^2 / (2 f)`` (NaN where it could not be estimated: a non-finite
    objective, or conjugate gradients that did not reach their tolerance) and the Newton steps taken."""

    W: np.ndarray
    b: np.ndarray
    f: float
    grad_max: float
    gap: float
    steps: int


def certify_task(prob: _Problem, W, b, gap_tol: float, newton_steps: int, cg_rtol: float = 1e-6,
                 cg_iter: int | None = None) -> Certificate:
    """The Newton decrement at ``(W, b)`` and, while the estimated relative gap is above
    ``gap_tol``, damped Newton steps (at most ``newton_steps``; a step that lowers nothing ends
    them). W ``(K, D)``, b ``(K,)`` as the solver returned them. ``cg_iter`` None: the problem's
    dimension ``K (D + 1)`` (where exact conjugate gradients end), at most 2000."""
    W, b = _center(np.asarray(W, np.float64), np.asarray(b, np.float64), prob.mask)
    cg_iter = min(2000, W.size + b.size) if cg_iter is None else cg_iter
    pt = evaluate(prob, W, b)
    steps = 0
    while True:
        (sW, sb), dec, solved = _pcg(prob, pt, cg_rtol, cg_iter)
        gap = 0.5 * max(dec, 0.0) / abs(pt.f) if solved and np.isfinite(pt.f) and pt.f != 0 else float("nan")
        if gap <= gap_tol or steps >= newton_steps or not np.isfinite(pt.f) or not dec > 0:
            break                  # certified, out of steps, or nothing to step along (a cut-short solve still steps)
        t, moved = 1.0, False
        while t > 1e-12:
            W1, b1 = _center(W - t * sW, b - t * sb, prob.mask)
            new = evaluate(prob, W1, b1)
            if new.f <= pt.f - 1e-4 * t * dec:
                W, b, pt, moved = W1, b1, new, True
                break
            t *= 0.5
        steps += 1
        if not moved:
            break
    gmax = float(max(np.abs(pt.gW).max(initial=0.0), np.abs(pt.gb).max(initial=0.0)))
    return Certificate(W, b, pt.f, gmax, gap, steps)


def certify(x, labels, weights, class_mask, C, gap_tol: float, newton_steps: int, fit: ProbeFit,
            blocks: list | None = None) -> ProbeFit:
    """Certify (and where needed polish) every fit of ``fit`` in float64 (see the module docstring).

    A fit is ``converged`` only where its final estimated relative gap is at most ``gap_tol``;
    ``coef``, ``intercept``, ``objective`` and ``grad_max`` are replaced by the polished float64
    values (as float32), ``gap`` holds the estimated relative gap. A problem without rows is left
    as it is. Shapes: x ``(N, D)``; labels, weights ``(R, T, N)``; class_mask ``(T, K)``; fit with
    leading axes ``(R, T)`` as NumPy arrays.
    """
    blocks = _blocks(x) if blocks is None else blocks      # the float64 row blocks of x (made once by the caller)
    coef, icpt = fit.coef.copy(), fit.intercept.copy()
    obj, gmax, conv, gap = fit.objective.copy(), fit.grad_max.copy(), fit.converged.copy(), fit.gap.copy()
    for r in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            k = class_mask.shape[1]                   # labels beyond the width carry no weight (as in the solver)
            lab = np.where((labels[r, t] >= 0) & (labels[r, t] < k), labels[r, t], -1)
            w = np.where(lab >= 0, np.asarray(weights[r, t], np.float64), 0.0)
            n = w.sum()
            if n <= 0 or class_mask[t].sum() < 2:
                continue
            prob = _Problem(blocks, lab, w / n, np.asarray(class_mask[t], bool), 1.0 / (C * n))
            c = certify_task(prob, coef[r, t], icpt[r, t], gap_tol, newton_steps)
            coef[r, t], icpt[r, t], obj[r, t], gmax[r, t], gap[r, t] = c.W, c.b, c.f, c.grad_max, c.gap
            conv[r, t] = bool(c.gap <= gap_tol)                  # NaN (no certificate): not converged
    return fit._replace(coef=coef, intercept=icpt, objective=obj, grad_max=gmax, converged=conv, gap=gap)
