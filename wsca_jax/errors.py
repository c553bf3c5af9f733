"""User-facing errors.

Every problem with what a user passed in (a file, a column, a shape, a flag) raises
:class:`WscaInputError` with a one-line message naming *what*, *where* and *expected vs found*.
The CLI turns it into one line on stderr and exit code 2; the Python API lets it propagate.
"""

from __future__ import annotations

import errno
import os
import re


class WscaInputError(ValueError):
    """Bad input from the user (one-line message; CLI exit code 2)."""


class WscaWarning(UserWarning):
    """A result we can stand behind only with a caveat (the CLI prints it as one ``warning:`` line)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`WscaInputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise WscaInputError(message)


# a write that failed for want of space: the disk or the quota full, or the file-size limit
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CODE = re.compile(r"os_error_code='?(\d+)")      # how tensorstore (Orbax) reports the OS error


def out_of_space(e: BaseException) -> str | None:
    """The reason, when ``e`` (or what caused it) is a write that failed for want of space: an
    ``OSError`` with ENOSPC, EDQUOT or EFBIG, or a library error naming one (Orbax's
    ``os_error_code``); else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return os.strerror(e.errno) + (f" ({e.filename})" if e.filename else "")
        m = _CODE.search(str(e))
        if m and int(m.group(1)) in _NO_SPACE:
            return os.strerror(int(m.group(1)))
        e = e.__cause__ or e.__context__
    return None
