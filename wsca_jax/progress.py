"""Progress for long work: a tqdm bar on a terminal, one line per stage (or epoch) otherwise.

A bar redrawn into a log file or a pipe (CI, ``make demo > log``) puts every refresh on the record;
when stderr is not a terminal :class:`LineBar` writes one line when a stage ends instead.
"""

from __future__ import annotations

import sys
import time


class NoBar:
    """Progress switched off."""

    def update(self, n=1):
        pass

    def set_postfix(self, **kw):
        pass

    def line(self, text: str):
        pass

    def close(self):
        pass


class LineBar(NoBar):
    """One line on stderr per :meth:`line` call and one when the stage ends (``desc: n unit in s``)."""

    def __init__(self, total: int, desc: str, unit: str, stream=None):
        self.total, self.desc, self.unit, self.n, self.t0 = total, desc, unit, 0, time.time()
        self.stream = stream or sys.stderr
        self.closed = False

    def update(self, n=1):
        self.n += n

    def line(self, text: str):
        print(f"{self.desc}: {text}", file=self.stream, flush=True)

    def close(self):
        if not self.closed:
            self.closed = True
            self.line(f"{self.n}/{self.total} {self.unit} in {time.time() - self.t0:.1f} s")


class _Tqdm(NoBar):
    def __init__(self, total: int, desc: str, unit: str):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc=desc, unit=unit)

    def update(self, n=1):
        self.bar.update(n)

    def set_postfix(self, **kw):
        self.bar.set_postfix(**kw)

    def line(self, text: str):
        pass                         # the bar's postfix shows it

    def close(self):
        self.bar.close()


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True):
    """A bar with ``update``, ``set_postfix``, ``line`` and ``close``: tqdm when stderr is a terminal,
    :class:`LineBar` when it is a file or a pipe, :class:`NoBar` when disabled."""
    if not enabled:
        return NoBar()
    if getattr(sys.stderr, "isatty", lambda: False)():
        return _Tqdm(total, desc, unit)
    return LineBar(total, desc, unit)
