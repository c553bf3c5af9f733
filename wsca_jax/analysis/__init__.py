"""The analysis pipeline: embeddings + metadata -> tasks -> probes -> WSC -> statistics -> result."""

from .core import *  # noqa: F401,F403  (temporary face while the stages are split out)
from .core import _Wsc  # noqa: F401
from .runs import RunsResult, analyze_runs  # noqa: F401
