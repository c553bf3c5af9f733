"""Integrated feature analysis (IFA; Li et al., arXiv 2407.01142; METHOD.md section 2): where in a
CNN's last feature maps the decision lives, for whole datasets at once.

``config``: every setting (:class:`IfaConfig`); ``cams``: the model cut at a layer, and per batch the
maps, channel weights and importances; ``profiles``: the common scale, consistency with the logits,
importance profiles, redundancy, outliers; ``decomposition``: the model with a fraction of the
channels, the confounder's channels and the map mass in a region; ``app``: the whole analysis
(:func:`analyze_ifa`) of a run or of stored maps.
Everything but ``app`` is a pure function of arrays.
"""

from ..errors import WscaInputError
from .cams import METHODS, Split, feature_maps, ifa_arrays, ifa_batch, maps_split, resize_maps, split_at
from .profiles import (apply_scale, cam_percentiles, common_scale, consistency, importance_profile, outliers,
                       per_image_scale, principal_channels, redundancy)
from .decomposition import (cam_similarity, channel_masks, check_region, confounder_channels, decompose, masked_logits,
                        region_mass)
from .app import analyze_ifa, ifa_for_maps, ifa_for_run
from .config import IfaConfig, parse_region

__all__ = ["IfaConfig", "METHODS", "Split", "WscaInputError", "analyze_ifa", "apply_scale", "cam_percentiles", "cam_similarity",
           "channel_masks", "check_region", "common_scale", "confounder_channels", "consistency", "decompose",
           "feature_maps", "ifa_arrays", "ifa_batch", "ifa_for_maps", "ifa_for_run", "importance_profile",
           "maps_split", "masked_logits", "outliers", "parse_region", "per_image_scale", "principal_channels",
           "redundancy", "region_mass", "resize_maps", "split_at"]
