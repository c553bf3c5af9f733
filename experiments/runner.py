"""The skeleton every experiment script shares: its command line, its records and its rendered texts.

A study computes units of work (a trained network, a simulated draw ...) and appends one JSON line per
unit to a records file in ``--out`` (``experiments/results/`` by default); its texts (``*.md``) are
rendered from those records only, so ``--report-only`` rebuilds them without computing anything, and
``tests/test_results_text.py`` re-renders them to check that no committed text has drifted::

    def build_parser():
        return runner.parser(__doc__, lambda p: p.add_argument("--seeds", default="0,1,2"))

    def run(args):
        path = os.path.join(args.out, RUNS)
        done = runner.done_keys(path, ("seed",))                 # resume: skip what is recorded
        for seed in ...:
            if (seed,) not in done:
                runner.append_record(path, {"seed": seed, ...})

    def main(argv=None):
        runner.run_study(build_parser().parse_args(argv), run, {"study.md": lambda a: report(a.out)})

Records: :func:`read_records`, :func:`records_frame`, :func:`append_record`, :func:`done_keys`.
Texts: :func:`render_template` (``templates/``, with the helpers of ``prose.py``), :func:`write_text`.
Importing this module also puts the repository root on ``sys.path``, so that the scripts run from a
checkout without installing ``wsca_jax``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
TEMPLATES = os.path.join(HERE, "templates")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import prose  # noqa: E402  (experiments/prose.py, beside this file)


# ---- command line


def parser(doc: str, arguments: Callable[[argparse.ArgumentParser], Any] | None = None, *,
           data_dir: bool = True) -> argparse.ArgumentParser:
    """A study's command line: ``--data-dir`` (unless ``data_dir`` is false), the study's own options
    (``arguments(parser)`` adds them), then ``--report-only`` and ``--out``. ``doc``: the script's
    docstring, shown verbatim by ``--help``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if data_dir:
        p.add_argument("--data-dir", help="folder holding the datasets (default: $WSCA_DATA_DIR, else ../shared/data)")
    if arguments is not None:
        arguments(p)
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: render the texts from the records already in --out")
    p.add_argument("--out", default=RESULTS, help="folder of the records and the rendered texts (default: %(default)s)")
    return p


# ---- records: one JSON object per line


def read_records(path: str, *, missing_ok: bool = False) -> list[dict]:
    """The records of the JSON-lines file ``path``, in file order; ``[]`` for a missing file when
    ``missing_ok`` (otherwise a missing file raises ``FileNotFoundError``)."""
    if missing_ok and not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def records_frame(path: str, *, missing_ok: bool = False) -> pd.DataFrame:
    """:func:`read_records` as a DataFrame, one row per record (an empty frame for no records)."""
    return pd.DataFrame(read_records(path, missing_ok=missing_ok))


def append_record(path: str, record: Mapping, *, default: Callable[[Any], Any] | None = None) -> None:
    """Append ``record`` to ``path`` as one JSON line (``default``: ``json.dumps``'s converter for values
    JSON cannot hold, e.g. ``float`` for NumPy scalars)."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=default) + "\n")


def done_keys(path: str, fields: Iterable[str], defaults: Mapping[str, Any] | None = None) -> set[tuple]:
    """The units already recorded in ``path``: ``{tuple(record[f] for f in fields)}`` (empty when the file
    does not exist), so that a rerun skips them. ``defaults``: the value of a field that older records
    lack (a field without one must be in every record)."""
    fields, defaults = tuple(fields), dict(defaults or {})
    return {tuple(r.get(f, defaults[f]) if f in defaults else r[f] for f in fields)
            for r in read_records(path, missing_ok=True)}


# ---- texts


def render_template(name: str, namespace: dict, *, missing_ok: bool = False) -> str:
    """``templates/<name>`` rendered in ``namespace`` (:func:`prose.render`); ``""`` for a missing
    template when ``missing_ok``."""
    path = os.path.join(TEMPLATES, name)
    if missing_ok and not os.path.exists(path):
        return ""
    with open(path) as f:
        return prose.render(f.read(), namespace)


def write_text(out: str, name: str, text: str) -> None:
    """Write ``text`` to ``out/name`` and say so."""
    with open(os.path.join(out, name), "w") as f:
        f.write(text)
    print(f"wrote {out}/{name}")


# ---- main


def run_study(args: argparse.Namespace, run: Callable[[argparse.Namespace], Any] | None,
              texts: Mapping[str, Callable[[argparse.Namespace], str]], *,
              prepare: Callable[[argparse.Namespace], Any] | None = None, fresh: str | None = None) -> None:
    """A study's ``main`` once its arguments are parsed.

    Unless ``--report-only``: ``run(args)`` computes and records (``fresh``: the name of a records file
    in ``--out`` that is deleted first, for a study that starts over instead of resuming; ``run=None``:
    nothing to compute). Then ``prepare(args)`` writes what the texts refer to (figures, summaries), and
    each text ``{file name: render(args)}`` is rendered from the records and written to ``--out``."""
    os.makedirs(args.out, exist_ok=True)
    if run is not None and not args.report_only:
        if fresh is not None and os.path.exists(os.path.join(args.out, fresh)):
            os.remove(os.path.join(args.out, fresh))
        run(args)
    if prepare is not None:
        prepare(args)
    for name, render in texts.items():
        write_text(args.out, name, render(args))
