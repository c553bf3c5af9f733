"""Integrated feature analysis (IFA; Li et al., arXiv 2407.01142; METHOD.md section 2): where in a
CNN's last feature maps the decision lives, for whole datasets at once.

``config``: every setting (:class:`IfaConfig`); ``cams``: the model cut at a layer, and per batch the
maps, channel weights and importances; ``profiles``: the common scale, consistency with the logits,
importance profiles, redundancy, outliers; ``decomposition``: the model with a fraction of the
channels, the confounder's channels and the map mass in a region; ``app``: the whole analysis
(:func:`analyze_ifa`) of a run or of stored maps.
Everything but ``app`` is a pure function of arrays.
"""

from ..lazy import attach

__getattr__, __dir__, __all__ = attach(__name__, {
    **dict.fromkeys(["METHODS", "Split", "feature_maps", "ifa_arrays", "ifa_batch", "maps_split", "resize_maps",
                     "split_at"], "cams"),
    **dict.fromkeys(["apply_scale", "cam_percentiles", "common_scale", "consistency", "importance_profile", "outliers",
                     "per_image_scale", "principal_channels", "redundancy"], "profiles"),
    **dict.fromkeys(["cam_similarity", "channel_masks", "check_region", "confounder_channels", "decompose",
                     "masked_logits", "region_mass"], "decomposition"),
    **dict.fromkeys(["analyze_ifa", "ifa_for_maps", "ifa_for_run"], "app"),
    **dict.fromkeys(["IfaConfig", "parse_region"], "config"),
})
