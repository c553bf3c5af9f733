"""User-facing errors.

Every problem with what a user passed in (a file, a column, a shape, a flag) raises
:class:`WscaInputError` with a one-line message naming *what*, *where* and *expected vs found*.
The CLI turns it into one line on stderr and exit code 2; the Python API lets it propagate.
"""

from __future__ import annotations


class WscaInputError(ValueError):
    """Bad input from the user (one-line message; CLI exit code 2)."""


class WscaWarning(UserWarning):
    """A result we can stand behind only with a caveat (the CLI prints it as one ``warning:`` line)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`WscaInputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WscaInputError(message)
