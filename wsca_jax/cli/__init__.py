"""The ``wsca`` command line: a thin shell over the Python API.

One module per sub-command (``analyze``, ``train``, ``embed``, ``ifa``, ``mid``, ``report``, ``demo``),
each with ``register(subparsers)`` (which sets ``handler``) and ``run(args) -> int``; settings flags are generated from the
entry point's config (``common.add_config_arguments``). Exit codes: 0 success, 2 bad input (one line
on stderr, nothing written), 130 interrupted.
"""

from __future__ import annotations

import os
import sys

from . import analyze, demo, embed, ifa, mid, report, train
from .common import Parser

SUBCOMMANDS = (analyze, train, embed, ifa, mid, report, demo)


def build_parser() -> Parser:
    """The ``wsca`` parser with every sub-command registered."""
    p = Parser(prog="wsca", description="Weight Space Correlation analysis: does a model's decision use "
                                        "the metadata its embedding encodes?")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    for module in SUBCOMMANDS:
        module.register(sub)
    return p


def main(argv=None) -> int:
    from ..errors import WscaInputError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:                        # bad usage (one line, printed) or --help
        return int(e.code or 0)
    if args.version:
        from .. import __version__
        print(__version__)
        return 0
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    import warnings
    try:
        with warnings.catch_warnings():
            _route_warnings(args.command)
            return args.handler(args)
    except WscaInputError as e:
        print(f"wsca {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsca {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- only a write that failed for want of space is ours to word
        from ..errors import out_of_space
        why = out_of_space(e)
        if why is None:
            raise
        where = getattr(args, "out", None)
        print(f"wsca {args.command}: error: cannot write {'--out ' + str(where) if where else 'the outputs'}: {why} "
              "(the disk, the quota or the file-size limit is full); nothing written: free space and run again",
              file=sys.stderr)
        return 2


def _route_warnings(command: str) -> None:
    """Inside ``warnings.catch_warnings()``: our caveats (WscaWarning) as one ``warning:`` line each;
    library warnings (missing glyphs, NumPy RuntimeWarning ...) are not the user's concern."""
    import warnings

    from ..errors import WscaWarning

    import logging

    import pandas as pd

    warnings.simplefilter("ignore")
    warnings.simplefilter("always", WscaWarning)
    warnings.filterwarnings("always", category=UserWarning, module=r"wsca_jax\.")      # our caveats
    warnings.filterwarnings("always", category=pd.errors.DtypeWarning)                # mixed-type columns

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"wsca {command}: warning: {str(message).splitlines()[0]}", file=sys.stderr, flush=True)
    warnings.showwarning = show
    _quiet_failed_reads(logging)


def _quiet_failed_reads(logging) -> None:
    """When an Orbax restore fails, reads still in flight call back into its closed asyncio loop:
    Python prints each "Event loop is closed" as an unraisable exception and asyncio logs every
    failed read. The failure itself is reported once, as one line; drop those (CLI only)."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # Orbax's threads log a failed write (an OS error code in the message) that is reported once, as
    # one line: a filter (a level change would be undone by libraries, and would hide other errors)
    logging.getLogger("absl").addFilter(lambda record: "os_error_code" not in _log_text(record))
    previous = sys.unraisablehook

    def hook(u):
        if isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value):
            return
        previous(u)
    sys.unraisablehook = hook


def _log_text(record) -> str:
    """A log record's message and exception text (for the failed-write filter)."""
    try:
        text = record.getMessage()
    except Exception:  # noqa: BLE001 -- a record whose arguments do not format
        text = str(record.msg)
    return text + ("" if not record.exc_info else str(record.exc_info[1]))


def entry() -> None:
    """The ``wsca`` console script. After a failure, exit without the interpreter's shutdown: a
    checkpoint read that failed can leave library threads (tensorstore, asyncio) that print
    tracebacks while Python tears down; nothing of ours is left to flush (outputs are atomic)."""
    code = main()
    if code != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

