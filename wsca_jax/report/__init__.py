"""Figures and self-contained HTML reports of every pipeline's record.

``common``: PNG encoding, the page style, inlined figures and the atomic writing of an output folder;
``analysis``: ``wsca.json`` and its report (``wsca analyze``, ``wsca report``); ``runs``: the combined
report of several runs; ``demo``: the induced-shortcut demo; ``ifa``: ``wsca ifa``; ``mid``: ``wsca mid``.
A new output gets its own module here with a ``write_<name>_outputs`` built on :func:`atomic_folder`.
"""

from .common import atomic_folder
from .analysis import fill_folder, load_result, render_html, write_outputs, write_report
from .demo import render_demo_html
from .ifa import ifa_figures, write_ifa_outputs
from .mid import write_mid_outputs
from .runs import write_runs_outputs

__all__ = ["atomic_folder", "fill_folder", "ifa_figures", "load_result", "render_demo_html", "render_html",
           "write_ifa_outputs", "write_mid_outputs", "write_outputs", "write_report", "write_runs_outputs"]
