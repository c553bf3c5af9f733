"""Integrated feature analysis: CAMs, channel importance, feature decomposition, confounder channels."""

from .core import *  # noqa: F401,F403  (temporary face)
