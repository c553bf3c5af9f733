"""The settings of one analysis (:class:`AnalysisConfig`): one default, documentation line and
constraint per field, in five sections. ``wsca analyze``'s flags are generated from these fields, and
``wsca.json``'s ``settings`` block is ``AnalysisConfig.to_dict()``.

A new option is one field here plus its use; the CLI flag, its help and default, the check of its
value and its record in ``wsca.json`` follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, at_least, boolean, interval, one_of, optional, optional_name, section, setting
from ..errors import require
from ..probes import ProbeConfig
from ..tasks import EncodingConfig

CI_METHODS = ("corrected", "bca", "percentile", "basic")
USE_STATISTICS = ("within_class_shift", "within_class_eta", "score_correlation_within", "erasure_within")


@dataclass(frozen=True)
class ProjectionConfig(Config):
    """Where the heads are compared: the PCA projection and the rows' centring."""

    pca_variance: float = setting(0.99, "variance kept by the PCA", interval(0, 1, open_lo=True))
    pca_min: int = setting(50, "minimum PCA components", at_least(1))
    heads: str = setting("centered", "rows centred to sum to zero ('centered') or the paper's rows ('raw')",
                         one_of("centered", "raw"))


@dataclass(frozen=True)
class ResamplingConfig(Config):
    """Held-out quality, bootstrap, jackknife and permutations."""

    bootstrap: int = setting(200, "bootstrap replicates B for the intervals (0 switches them off)", at_least(0))
    permutations: int = setting(200, "label permutations P for the p-values (0 switches them off)", at_least(0))
    max_permutations: int | None = setting(
        None, "adaptive: add batches of P permutations while a p-value is within 3 Monte Carlo standard errors of "
        "alpha (Holm steps), up to this many (default: P, no adaptation)", optional(at_least(1)), type=int)
    permute_within: str | None = setting(None, "permute labels within strata of this column (e.g. the primary): "
                                         "the conditional null for confounded designs", optional_name())
    cv_folds: int = setting(5, "folds of the held-out probe quality (cold-started fits)", at_least(2))
    seed: int = setting(0, "seeds folds, bootstrap, jackknife blocks, permutations and the random reference",
                        at_least(0))

    def check(self) -> None:
        require(self.max_permutations is None or self.max_permutations >= self.permutations,
                f"--max-permutations ({self.max_permutations}) must be at least --permutations ({self.permutations})")


@dataclass(frozen=True)
class InferenceConfig(Config):
    """Levels, intervals, the attenuation correction and the equivalence margin."""

    alpha: float = setting(0.05, "level of the verdicts, Holm-adjusted across tasks", interval(0, 1, open_lo=True,
                                                                                               open_hi=True))
    confidence: float = setting(0.95, "interval level", interval(0, 1, open_lo=True, open_hi=True))
    ci_method: str = setting("corrected", "interval of max |WSC| and the cells: corrected (attenuation-corrected, "
                             "the best coverage in experiments/results/calibration.md; basic where a direction is "
                             "unreliable or the heads are fixed), basic, bca, percentile", one_of(*CI_METHODS))
    correction_noise: str = setting("jackknife", "noise estimate of the attenuation correction: jackknife "
                                    "(delete-one-block refits) or bootstrap (overstates the noise of "
                                    "well-separated probes)", one_of("jackknife", "bootstrap"))
    random_draws: int = setting(4000, "random heads drawn for each task's random-direction reference band",
                                at_least(100))
    equivalence_margin: float = setting(0.2, "population max |WSC| below which alignment is negligible: 'encoded "
                                        "but unused' is concluded when the bootstrap shows the corrected value "
                                        "below it", interval(0, 1, open_lo=True))
    skip_decision_use: bool = setting(False, "skip the decision-use statistics and verdict (summary.statistics keeps "
                                      "the paper's WSC alone; no summary.decision_use): for WSC-only simulation "
                                      "studies, where they cost more than WSC", boolean())
    use_statistic: str = setting("within_class_shift", "statistic of the decision-use verdict (summary.decision_use): "
                                 "shipped after the zoo's scoring in experiments/results/use_validation.md (the "
                                 "pre-specified choice, score_correlation_within, has no power where the attribute "
                                 "goes with the class; so has erasure_within's test: use_calibration.md)",
                                 one_of(*USE_STATISTICS))
    use_margin: float = setting(0.34, "effect of use_statistic below which use is negligible: 'used' needs the "
                                "estimate at or above it and its test to reject; 'not used' needs the whole "
                                "interval below it (chosen on the zoo: experiments/results/use_validation.md)",
                                interval(0, None, open_lo=True))


@dataclass(frozen=True)
class AnalysisConfig(Config):
    """Every setting of :func:`wsca_jax.analyze`, in sections.

    Build one with keywords by section, or change any field by its own name::

        config = AnalysisConfig().replace(bootstrap=500, group_column="patient", C=0.1)

    ``to_dict()`` is ``wsca.json``'s ``settings``; what an analysis resolved at run time (the
    permutations actually run, the memory budget, the jackknife blocks ...) is in ``resolved``.
    """

    encoding: EncodingConfig = section(EncodingConfig)
    projection: ProjectionConfig = section(ProjectionConfig)
    probe: ProbeConfig = section(ProbeConfig)
    resampling: ResamplingConfig = section(ResamplingConfig)
    inference: InferenceConfig = section(InferenceConfig)
