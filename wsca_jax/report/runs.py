"""The combined report of several runs (:func:`~wsca_jax.analysis.runs.analyze_runs`): ``runs.json``,
``report.html`` and one analysis folder per run."""

from __future__ import annotations

import html
import json
import os

from .analysis import fill_folder
from .common import atomic_folder


def render_runs_html(result) -> str:
    """One HTML page for :func:`~wsca_jax.analysis.runs.analyze_runs`: the combined answer per task, then links to
    each run's own report."""
    esc = html.escape
    f3 = lambda x: "" if x is None else f"{x:.3f}"  # noqa: E731
    secs = []
    for task, c in result.combined.items():
        per = "".join(f"<tr><td>{esc(n)}</td><td>{f3(m)}</td><td>{f3(p)}</td></tr>" for n, m, p in
                      zip(result.names, c["max_abs_wsc"], c.get("p_values") or [None] * len(result.names)))
        lc = c["largest_cell"]
        ex = c.get("excess")
        re_ = "" if not ex else (f"<li>excess over each run's null (null-SD units): random-effects mean "
                                 f"{ex['random_effects']['mean']:.2f} [{ex['random_effects']['ci'][0]:.2f}, "
                                 f"{ex['random_effects']['ci'][1]:.2f}], tau^2 {ex['random_effects']['tau2']:.2f}; "
                                 f"bootstrap over runs [{ex['seed_bootstrap_ci'][0]:.2f}, {ex['seed_bootstrap_ci'][1]:.2f}]</li>")
        comb = "" if "fisher_p" not in c else (f"<li>combined p: Fisher {c['fisher_p']:.3g}, Stouffer {c['stouffer_p']:.3g} "
                                               f"(independent runs); twice the mean p {c['mean_merged_p']:.3g} (any dependence)</li>")
        inn = c.get("inter_network_null")
        inn = "" if not inn else (f"<li>inter-network null ({inn['pairs']} pairs of different networks): mean "
                                  f"{inn['mean']:.3f}, 95% {inn['q95']:.3f}</li>")
        secs.append(f"<section><h3>{esc(task)}</h3><p class='verdict'>{esc(c['verdict'])}</p><ul>"
                    f"<li>largest cell {lc['cell']}: mean {lc['mean']:+.3f} [{lc['ci'][0]:+.3f}, {lc['ci'][1]:+.3f}] "
                    f"over {c['runs']} runs, same sign in {100 * lc['sign_consistency']:.0f}%</li>{comb}{re_}{inn}</ul>"
                    f"<table><tr><th>run</th><th>max |WSC|</th><th>p</th></tr>{per}</table></section>")
    links = "".join(f"<li><a href='{esc(n)}/report.html'>{esc(n)}</a></li>" for n in result.names)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>WSC across runs</title>"
            f"<style>body{{font-family:sans-serif;max-width:60em;margin:auto}} td,th{{padding:2px 8px}}"
            f".verdict{{font-weight:bold}}</style></head><body><h1>WSC across {len(result.names)} runs</h1>"
            f"<p>Combination: {esc(result.settings['combination'])}.</p>{''.join(secs)}"
            f"<h2>Runs</h2><ul>{links}</ul></body></html>")


def write_runs_outputs(result, out_dir: str, figures: bool = True) -> list[str]:
    """``runs.json``, ``report.html`` (combined) and one analysis folder per run, written atomically."""
    def fill(tmp):
        for n, r in zip(result.names, result.runs):
            os.makedirs(os.path.join(tmp, n))
            fill_folder(r, os.path.join(tmp, n), figures)
        with open(os.path.join(tmp, "runs.json"), "w") as f:
            f.write(json.dumps(result.to_dict(), indent=2, allow_nan=False))
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(render_runs_html(result))
    return atomic_folder(out_dir, fill)
