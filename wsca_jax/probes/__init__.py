"""Batched linear probes: multinomial L2 logistic regression for many tasks x many replicates.

One jit-compiled call fits every task of one class width (tasks are grouped by their number of
classes, each group padded to its widest task with a class mask: :func:`width_groups`) for every
replicate (a row of sample weights: bootstrap counts, cross-validation folds,
jackknife blocks) and, optionally, every permutation of the labels.

Objective per (replicate r, task t), the one scikit-learn's ``LogisticRegression`` minimises with
``sample_weight`` (for ``K >= 3``; see :func:`sklearn_equivalent_C` for binary tasks)::

    f(W, b) = (1 / n) * sum_i w_i * CE(y_i, softmax(W x_i + b)) + ||W||^2 / (2 * C * n),
    n = sum_i w_i   (rows with a missing label have w_i = 0)

Numerical design:
  * Embeddings are centred and rotated once into their principal axes (``Basis``). Rotation is
    exact (the L2 penalty is rotation invariant; centring is absorbed by the unpenalised intercept)
    and makes a diagonal preconditioner ``1 / (c * var_d + reg)`` nearly exact for the data term.
  * L-BFGS with a Kronecker-factored preconditioner for all problems of one class width in lock-step
    inside one ``lax.while_loop``, and a Newton line search along the direction (the logits move by
    ``alpha * X d``, so a line search costs one matmul; a second Newton step where the first is
    poor) with an Armijo test and backtracking where the Newton steps fail. The loop stops when
    every problem has met the gradient tolerance or stalled (no progress beyond float32 rounding for
    ``patience`` iterations), or at the cap. Each
    fit carries ``converged``: False at the cap, or when it stalled with a float64 gradient above
    ten times the measured float32 error of its gradient -- such a fit is flagged, never reported
    as converged.
  * Float32 care where near-separable problems (large C) need it: the loss is
    ``log1p(sum of the other classes)`` of max-shifted logits, the label's residual is
    ``-sum of the other probabilities``, and the logits are recomputed from the weights every few
    iterations (no drift of the incremental update).
  * Two GEMMs per iteration over all tasks and replicates at once: ``(N, E) @ (E, R*T*(K-1))`` and
    its transpose (a head's rows sum to zero, so the last class's logits and gradient follow from the
    others'), ``E`` = D + 1 (a ones column: the intercepts) rounded up to a multiple of 16 (a third
    GEMM in the iterations that recompute the logits exactly). Convergence diagnostics come back as
    arrays.
  * ``solver="ridge"``: closed-form ridge regression on one-hot targets (one factorisation per
    task x replicate); cheap when weights are uniform, O(N D^2) per fit otherwise.

Modules (a change goes where its name says):
  * ``config``: :class:`ProbeConfig`, the solver's settings.
  * ``basis``: :class:`Basis` (:func:`make_basis`, :func:`to_original`) and the result type :class:`ProbeFit`.
  * ``objective``: loss, gradient (the matrix products over K - 1 classes) and its float32 floor.
  * ``precondition``: the K-FAC preconditioner (:func:`kfac_precond`).
  * ``linesearch``: the Newton line search with Armijo backtracking.
  * ``lbfgs``: the solver state, ``init_state``, one ``update``, the ``run`` loop.
  * ``ridge``: the closed-form ridge solver.
  * ``engine``: memory sizing, width groups, chunking, sharding, the compiled call
    (:func:`fit_batched`), the host recheck, :func:`fit_replicates` and :func:`fit_probes`.
"""

from .basis import ROW_BLOCK, Basis, ProbeFit, make_basis, to_original
from .config import ProbeConfig
from .engine import (REPLICATE_BYTES, SOLVER_OVERHEAD, available_memory, chunk_for_memory, device_memory, fit_batched,
                     fit_probes, fit_replicates, initial_params, recheck_stalled, resolve_memory, sklearn_equivalent_C,
                     width_groups)
from .precondition import Precond, kfac_precond

__all__ = ["REPLICATE_BYTES", "ROW_BLOCK", "SOLVER_OVERHEAD", "Basis", "Precond", "ProbeConfig", "ProbeFit",
           "available_memory", "chunk_for_memory", "device_memory", "fit_batched", "fit_probes", "fit_replicates", "initial_params",
           "kfac_precond", "make_basis", "recheck_stalled", "resolve_memory", "sklearn_equivalent_C", "to_original",
           "width_groups"]
