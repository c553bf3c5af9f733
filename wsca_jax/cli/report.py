"""``wsca report``: re-render ``report.html`` from a ``wsca.json`` folder."""

from __future__ import annotations

import os

from .common import add_parser

EXAMPLE = """\
example:
  wsca report --run results/            # re-renders results/report.html from wsca.json
  wsca report --run results/ --out /tmp/wsc.html

  reads wsca.json (and wsca_distributions.npz when present, for the bootstrap and permutation
  histograms) written by `wsca analyze` or `wsca demo`, and writes one self-contained HTML file.
"""


def register(sub) -> None:
    r = add_parser(sub, "report", help="render report.html from a wsca.json folder", example=EXAMPLE)
    r.add_argument("--run", required=True, help="folder with wsca.json (an analyze or demo condition output)")
    r.add_argument("--out", help="HTML path (default RUN/report.html)")
    r.set_defaults(handler=run)


def run(args) -> int:
    from ..errors import require
    from ..io import check_out_file
    from ..report import write_report

    require(os.path.isdir(args.run), f"--run {args.run}: no such folder")
    check_out_file(args.out or os.path.join(args.run, "report.html"), ".html", "--out")
    path = write_report(args.run, args.out)
    print(f"wrote {path}")
    return 0
