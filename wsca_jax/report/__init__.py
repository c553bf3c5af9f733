"""Figures and self-contained HTML reports of every pipeline's record."""

from .core import *  # noqa: F401,F403  (temporary face)
