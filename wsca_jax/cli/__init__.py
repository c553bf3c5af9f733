"""The ``wsca`` command line: a thin shell over the Python API."""

from .commands import build_parser, entry, main  # noqa: F401
