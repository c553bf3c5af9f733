"""The settings of ``wsca mid`` (:class:`MidConfig`): one default, documentation line and constraint per
field, in three sections (mining, retraining, verification). ``wsca mid``'s settings flags are
generated from these fields, and ``mid.json``'s ``settings`` block is ``MidConfig.to_dict()``.

The WSC check of every head (``verification``) uses the analysis' own resampling defaults
(:class:`~wsca_jax.analysis.config.ResamplingConfig`): one bootstrap and permutation count for
``wsca analyze`` and ``wsca mid``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..analysis.config import ResamplingConfig
from ..config import Config, Constraint, at_least, integers, interval, names, numbers, one_of, optional, section, setting


METHODS = ("erm", "class_balanced", "jtt", "mid", "random_band", "mid_oracle", "dfr")
DFR_CS = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)        # DFR's published grid
# 1e2 .. 1e-3, log-spaced (the default), largest first like DFR's grid: a tie goes to the grid's first C
WIDE_CS = tuple(float(f"{c:.3g}") for c in np.logspace(2, -3, 16))
C_GRIDS = {"wide": WIDE_CS, "published": DFR_CS}
JTT_ID_CS = (0.003, 0.01, 0.03, 0.1)                   # JTT's identification head: strong penalties (early stopping)
JTT_UPWEIGHTS = (5.0, 10.0, 20.0, 50.0, 100.0)
_RESAMPLING = {f.name: f.default for f in dataclasses.fields(ResamplingConfig)}


K_MAX = 100          # the largest cluster count (--k): see MiningConfig.k
RESTARTS_MAX = 1000  # the most k-means++ restarts per k (--restarts): see MiningConfig.restarts


def k_values(k) -> tuple[int, ...]:
    """The cluster counts of a ``k`` setting: ``"K"``, ``"LO:HI"`` (inclusive), an int or a sequence of ints
    (a range above :data:`K_MAX` is refused before it is built)."""
    if isinstance(k, str):
        lo, _, hi = k.partition(":")
        lo, hi = int(lo), int(hi or lo)
        if hi > K_MAX:
            raise ValueError(f"cluster counts above {K_MAX}: {k!r}")
        return tuple(range(lo, hi + 1))
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        return (int(k),)
    vals = tuple(k)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
        raise ValueError(f"cluster counts must be integers, found {k!r}")
    return tuple(int(v) for v in vals)


def _cluster_counts() -> Constraint:
    """``"K"`` or ``"LO:HI"`` text (the ``--k`` flag), an int or a sequence of ints; every count >= 2."""
    def test(v):
        ks = k_values(v)
        return len(ks) > 0 and 2 <= min(ks) and max(ks) <= K_MAX and not isinstance(v, bool)
    return Constraint(test, f"K or LO:HI with 2 <= LO <= HI <= {K_MAX}")


def _k_text(ks) -> str | tuple[int, ...]:
    """The ``k`` setting of a deprecated ``ks=`` iterable: ``"LO:HI"`` when it is a range, else the ints."""
    ks = tuple(int(k) for k in ks)
    if not ks:
        return ks                                     # refused by the constraint, in one line
    if len(ks) > 1 and ks == tuple(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}:{ks[-1]}"
    return str(ks[0]) if len(ks) == 1 else ks


def _methods() -> Constraint:
    return Constraint(lambda v: not isinstance(v, str) and len(v) > 0 and all(m in METHODS for m in v),
                      "one or more of " + ", ".join(METHODS))


@dataclass(frozen=True)
class MiningConfig(Config):
    """The mid-range band of the validation rows and its clusters (MID's pseudo-groups)."""

    band: float = setting(0.2, "share of rows nearest 0 per predicted class", interval(0, 1, open_lo=True, open_hi=True))
    band_threshold: float | None = setting(None, "instead of --band: the rows with |margin| <= this",
                                           optional(interval(0, None, open_lo=True)), type=float)
    min_cell: int = setting(5, "MID pseudo-groups (band cluster x class) with fewer validation rows join their "
                            "class's rest", at_least(1))
    # The bounds: every (k, restart) is one fit of a single vmapped k-means call that holds its band rows x
    # max-k distances at once; more than K_MAX clusters of a band of a few thousand rows leaves most cells
    # below min_cell (merged back), and more than RESTARTS_MAX restarts buys nothing k-means++ seeding
    # does not; within the bounds, k-means checks the call's memory before it runs.
    k: str = setting("2:10", f"cluster counts: K or LO:HI, at most {K_MAX} (chosen by silhouette)", _cluster_counts(),
                     metavar="K|LO:HI")
    restarts: int = setting(10, f"k-means++ restarts per k (at most {RESTARTS_MAX}; all fits run in one call)",
                            integers(1, RESTARTS_MAX))

    def __post_init__(self):
        if isinstance(self.k, range):                      # frozen as a tuple, like lists
            object.__setattr__(self, "k", tuple(self.k))
        super().__post_init__()

    @property
    def ks(self) -> tuple[int, ...]:
        """The cluster counts tried."""
        return k_values(self.k)


@dataclass(frozen=True)
class RetrainingConfig(Config):
    """The heads retrained on the validation rows, and how they are scored."""

    methods: tuple[str, ...] = setting(METHODS, "heads to fit and score: erm (the model's own), class_balanced (classes "
                                       "balanced, no groups: the control), jtt, mid, random_band (MID on a random band "
                                       "of the same size: the control of the mining), mid_oracle, dfr", _methods(),
                                       type="names", metavar="METHOD,...")
    refits: int = setting(20, "balanced refits averaged per head (as DFR)", at_least(1))
    jtt_upweight: float | None = setting(None, "weight of the identification head's errors for JTT (default: tuned "
                                         "over " + ", ".join(f"{u:g}" for u in JTT_UPWEIGHTS) + " with the "
                                         "identification penalty, on the validation worst group)",
                                         optional(interval(0, None, open_lo=True)), type=float)
    penalty: str = setting("l1", "penalty of every retrained head (l1 as DFR)", one_of("l1", "l2"))
    c_grid: str = setting("wide", "C grid: wide (16 values, 1e-3 to 1e2, log-spaced) or published (DFR's seven, "
                          "0.01 to 1); C by the worst group on half the validation rows", one_of(*C_GRIDS))
    C_grid: tuple[float, ...] | None = setting(None, "an explicit C grid (overrides c_grid)",
                                               optional(numbers(0, open_lo=True)), cli=False)
    alpha: float = setting(0.05, "1 - level of the accuracy intervals", interval(0, 1, open_lo=True, open_hi=True),
                           cli=False)

    @property
    def Cs(self) -> tuple[float, ...]:
        """The C grid tried: ``C_grid`` when given, else the ``c_grid`` named one."""
        return tuple(self.C_grid) if self.C_grid is not None else C_GRIDS[self.c_grid]


@dataclass(frozen=True)
class VerificationConfig(Config):
    """WSC of every head against metadata columns of the test rows (``analyze`` with the head as primary)."""

    verify: tuple[str, ...] = setting((), "metadata column(s) to run WSC against for every head, on the test rows",
                                      names(), type="names")
    bootstrap: int = setting(_RESAMPLING["bootstrap"], "bootstrap replicates of the WSC check (0 switches them off)",
                             at_least(0))
    permutations: int = setting(_RESAMPLING["permutations"], "permutations of the WSC check (0 switches them off)",
                                at_least(0))


@dataclass(frozen=True)
class MidConfig(Config):
    """Every setting of :func:`~wsca_jax.mitigation.analyze_mid` (``wsca mid``), in sections.

    Change any field by its own name::

        config = MidConfig().replace(k="2:4", methods=["erm", "dfr"], verify=["place"], bootstrap=0)

    ``to_dict()`` is ``mid.json``'s ``settings`` (with the CLI's ``primary``); what the run resolved
    (the cluster counts tried, the training groups' shares) is in ``resolved``.
    """

    groups: tuple[str, ...] = setting((), "column(s) whose joint value is the group, e.g. label,place (needed by "
                                      "jtt, mid_oracle, dfr and to score worst-group accuracy)", names(), type="names")
    mining: MiningConfig = section(MiningConfig)
    retraining: RetrainingConfig = section(RetrainingConfig)
    verification: VerificationConfig = section(VerificationConfig)
    seed: int = setting(0, "seeds k-means, the refits' subsets, the accuracy bootstrap and the WSC check", at_least(0))


# deprecated flat keywords of analyze_mid / retrain_methods -> (field, conversion)
RENAMED = {  # the 0.8 keywords: old name -> (field, conversion)
    "quantile": ("band", None), "threshold": ("band_threshold", None), "ks": ("k", _k_text),
            "n_refits": ("refits", None), "Cs": ("C_grid", tuple), "jtt_up": ("jtt_upweight", None)}


__all__ = ["C_GRIDS", "DFR_CS", "JTT_ID_CS", "JTT_UPWEIGHTS", "WIDE_CS", "K_MAX", "METHODS", "RESTARTS_MAX", "MidConfig", "MiningConfig", "RetrainingConfig", "VerificationConfig", "k_values",
           "RENAMED"]
