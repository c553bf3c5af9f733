"""The probe solver's settings (:class:`ProbeConfig`), the ``probe`` section of an analysis config."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, at_least, interval, one_of, optional, setting

_POSITIVE = interval(0, None, open_lo=True)


@dataclass(frozen=True)
class ProbeConfig(Config):
    """Solver settings (frozen and hashable; a field's doc, default and constraint in one place).

    ``C`` is the inverse L2 strength in scikit-learn's convention (objective
    ``sum w CE + ||W||^2/(2C)``); ``tol`` is of the mean-normalised objective, as scikit-learn's
    lbfgs ``tol``. A stalled fit (``patience``) is converged only if its gradient is at its float32
    floor. ``chunk``: every call is padded to the chunk so that one compilation serves them all
    (memory about ``REPLICATE_BYTES * T * K * N`` bytes per replicate). ``memory_gb`` counts the
    logistic solver only: the ridge solver's ``(T, N, D)`` centred copies are not counted.
    ``warm_iter`` None means ``min(500, max_iter)``; :func:`~wsca_jax.probes.resolve_memory` fills
    it in, so the config every fit of an analysis uses holds a number (``wsca.json``: ``settings.probe``
    as given, ``resolved.probe`` as used).
    """

    C: float = setting(1.0, "inverse L2 strength in scikit-learn's convention (objective sum w CE + ||W||^2/(2C))",
                       _POSITIVE, flag="C")
    tol: float = setting(1e-5, "stop once every problem in a chunk has max |gradient| <= tol (of the "
                         "mean-normalised objective, as scikit-learn's lbfgs tol)", _POSITIVE, cli=False)
    max_iter: int = setting(1000, "iteration cap from a cold start (zero weights); fits that reach it are flagged "
                         "not converged (warm starts: at most min(500, max_iter))", at_least(1), flag="max-iter")
    warm_iter: int | None = setting(None, "iteration cap for replicates warm-started at the full-data solution "
                                    "(bootstrap, jackknife; the cross-validation folds start cold); None: min(500, max_iter)",
                                    optional(at_least(0)), cli=False)
    gap_tol: float = setting(1e-6, "a full-data fit counts as converged only where its estimated relative optimality gap "
                             "(Newton decrement lambda^2 / 2 over the objective, float64) is at most gap_tol",
                             _POSITIVE, cli=False)
    newton_steps: int = setting(20, "float64 Newton-CG steps the host may take to bring a full-data fit's gap to gap_tol",
                                at_least(0), cli=False)
    history: int = setting(10, "L-BFGS memory", at_least(1), cli=False)
    patience: int = setting(100, "iterations without progress (objective down by more than its float32 rounding "
                            "floor, or max |gradient| down by 10%) after which a problem counts as stalled",
                            at_least(1), cli=False)
    solver: str = setting("lbfgs", "'lbfgs' (logistic, the paper's probe) or 'ridge' (closed form, one-hot targets)",
                          one_of("lbfgs", "ridge"), flag="solver")
    chunk: int = setting(8, "most replicates per compiled call (the last call padded: one compilation serves all)",
                         at_least(1), cli=False)
    memory_gb: float | None = setting(None, "memory the solver may use, per device; the chunk shrinks to fit it. "
                                      "None: half of the memory available when the analysis starts (the "
                                      "accelerator's memory limit on a GPU or TPU)", optional(_POSITIVE),
                                      flag="memory-gb", type=float)

    @property
    def warm_cap(self) -> int:
        """The warm-start iteration cap: ``warm_iter``, or ``min(500, max_iter)`` where that is None."""
        return min(500, self.max_iter) if self.warm_iter is None else self.warm_iter

    def to_dict(self) -> dict:
        return {"model": "multinomial_logistic_l2" if self.solver == "lbfgs" else "ridge_one_hot",
                "C": self.C, "solver": self.solver, "tol": self.tol, "max_iter": self.max_iter,
                "warm_iter": self.warm_iter, "history": self.history,
                "patience": self.patience, "gap_tol": self.gap_tol, "newton_steps": self.newton_steps, "chunk": self.chunk, "memory_gb": self.memory_gb,
                "objective": "mean weighted cross-entropy + ||W||^2 / (2 C n)"}

    @classmethod
    def from_dict(cls, d: dict) -> ProbeConfig:
        """Inverse of :meth:`to_dict` (its derived ``model`` and ``objective`` entries are dropped)."""
        return super().from_dict({k: v for k, v in d.items() if k not in ("model", "objective")})
