"""The mitigation report (``wsca mid``): ``mid.json``, ``report.html`` and the figures."""

from __future__ import annotations

import html
import json
import os

import numpy as np

from ..io import json_ready
from .common import _CSS, _img, _png, _write_figures, atomic_folder, plt


def mid_figures(rec: dict, arrays: dict) -> dict[str, bytes]:
    """The logit-ordered plot with the band marked, the clusters' composition, group accuracy per method."""
    figs = {}
    m = np.asarray(arrays["margin_val"])
    order = np.argsort(m)
    fig, ax = plt.subplots(figsize=(6.5, 3.2), dpi=100)
    y = np.asarray(arrays["y_val"])[order]
    ax.scatter(np.arange(len(m)), m[order], c=y, cmap="coolwarm", s=4)
    if "band" in arrays:
        b = np.asarray(arrays["band"])[order]
        ax.scatter(np.flatnonzero(b), m[order][b], facecolors="none", edgecolors="k", s=12, lw=0.5, label="mid-range band")
        ax.legend(fontsize=7, frameon=False)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("validation rows, ordered by margin"); ax.set_ylabel("ERM margin (logit)")  # noqa: E702
    ax.set_title("logit-ordered validation rows (colour: label)", fontsize=9)
    fig.tight_layout()
    figs["mid_logits.png"] = _png(fig)
    if "clusters" in arrays and "groups_val" in arrays:
        cl, g = np.asarray(arrays["clusters"]), np.asarray(arrays["groups_val"])
        names = sorted(np.unique(g))
        ks = sorted(c for c in np.unique(cl) if c >= 0)
        fig, ax = plt.subplots(figsize=(6.5, 3.0), dpi=100)
        bottom = np.zeros(len(ks) + 1)
        for name in names:
            share = [np.mean(g[cl == c] == name) for c in ks] + [np.mean(g == name)]
            ax.bar(range(len(ks) + 1), share, bottom=bottom, label=name)
            bottom += share
        ax.set_xticks(range(len(ks) + 1), [f"cluster {c}" for c in ks] + ["all rows"], fontsize=7)
        ax.set_ylabel("share"); ax.set_title("group composition of the band's clusters", fontsize=9)  # noqa: E702
        ax.legend(fontsize=6, frameon=False, bbox_to_anchor=(1, 1), loc="upper left")
        fig.tight_layout()
        figs["mid_clusters.png"] = _png(fig)
    meths = list(rec["methods"])
    fig, ax = plt.subplots(figsize=(6.5, 3.0), dpi=100)
    for i, name in enumerate(meths):
        r = rec["methods"][name]
        for j, (key, ci, color) in enumerate((("worst_group", "worst_group_ci", "tab:red"), ("mean", "mean_ci", "tab:blue"))):
            v, (lo, hi) = r[key], r[ci]
            ax.errorbar(i + (j - 0.5) * 0.2, v, yerr=[[v - lo], [hi - v]], fmt="o", color=color, capsize=3,
                        label=key.replace("_", "-") if i == 0 else None)
    ax.set_xticks(range(len(meths)), meths)
    ax.set_ylim(0, 1.02); ax.set_ylabel("test accuracy")  # noqa: E702
    ax.legend(fontsize=7, frameon=False)
    ax.set_title("worst-group and mean accuracy per method (95% intervals)", fontsize=9)
    fig.tight_layout()
    figs["mid_accuracy.png"] = _png(fig)
    return figs


def _odds_text(r: dict) -> str:
    """``2.31 [1.40, 3.85]``, ``inf [4.20, inf]`` for an infinite one, or ``n/a (undefined)`` for a
    table with an empty row or column."""
    if r.get("odds_ratio_kind") == "infinite":
        return f"inf [{r['ci_low']:.2f}, inf]"
    if r["odds_ratio"] is None or r["odds_ratio"] != r["odds_ratio"]:
        return "n/a (undefined)"
    return f"{r['odds_ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"


def _enrichment_rows(rows: list[dict]) -> str:
    esc = html.escape
    return "".join(f"<tr><td>{esc(str(r['column']))}</td><td>{esc(str(r['value']))}</td><td>{r['share_subset']:.3f}</td>"
                   f"<td>{r['share_all']:.3f}</td><td>{_odds_text(r)}</td>"
                   f"<td>{r['p_holm']:.3g}</td></tr>" for r in rows)


def _wsc_text(wsc: dict) -> str:
    """``place 0.412 (p 0.005); ...`` for one head's WSC after the fix."""
    return "; ".join(f"{t}: {w['note']}" if w.get("note") else
                     f"{t} {w['max_abs_wsc']:.3f}" + ("" if w["p_value"] is None else f" (p {w['p_value']:.3f})")
                     + f", within-class eta {w['within_class_eta']:.3f}" for t, w in wsc.items())


def render_mid_html(rec: dict, figures: dict[str, bytes]) -> str:
    esc = html.escape
    head = "<tr><th>column</th><th>value</th><th>share in subset</th><th>share overall</th><th>odds ratio [95%]</th><th>p (Holm)</th></tr>"
    meth = "".join(
        f"<tr><td>{esc(n)}</td><td>{r['worst_group']:.3f} [{r['worst_group_ci'][0]:.3f}, {r['worst_group_ci'][1]:.3f}]</td>"
        f"<td>{r['mean']:.3f} [{r['mean_ci'][0]:.3f}, {r['mean_ci'][1]:.3f}]</td><td>{'' if r['C'] is None else r['C']}</td>"
        f"<td>{'' if r['converged'] is None else ('yes' if r['converged'] else '<b>no</b>')}</td>"
        f"<td>{esc(_wsc_text(r['wsc']))}</td></tr>"
        for n, r in rec["methods"].items())
    band = ""
    if "band" in rec:
        b = rec["band"]
        rule = (f"{b['share']:.0%} nearest 0 per predicted class" if b.get("threshold") is None
                else f"|margin| &lt;= {b['threshold']:g}")
        outside = b["mislabel_suspicion_mean_outside"]
        band = (f"<h2>The mid-range band</h2><p>{b['n']} validation rows ({rule}); "
                f"mislabel suspicion (share of 10 nearest neighbours with another label) {b['mislabel_suspicion_mean']:.3f} "
                f"in the band, {'n/a (no rows outside)' if outside is None else format(outside, '.3f')} outside.</p><table>{head}{_enrichment_rows(b['enrichment'])}</table>"
                f"<h2>Clusters of the band (k = {rec['k']}, by silhouette)</h2>"
                + "".join(f"<h3>cluster {c['cluster']} ({c['n']} rows)</h3><table>{head}{_enrichment_rows(c['enrichment'])}</table>"
                          for c in rec["clusters"]))
    imgs = "".join(_img(k, v) for k, v in figures.items())
    stuck = [n for n, r in rec["methods"].items() if r.get("converged") is False]
    caveat = "" if not stuck else (
        f"<p class='caveats'><b>Not converged:</b> the solver of the {esc(', '.join(stuck))} head"
        f"{'s' if len(stuck) > 1 else ''} stopped at its iteration cap before its tolerance; "
        "the accuracy and WSC of an unconverged head are not those of the penalised optimum: read them with care.</p>")
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>wsca mid</title><style>{_CSS}</style></head><body>
<h1>Mitigation: last-layer retraining</h1>
<p>Heads retrained on the {esc(rec.get('resolved', rec['settings'])['retrained_on'])}; scored on the test rows. Worst-group interval: exact
(Clopper-Pearson per group, Bonferroni); mean accuracy weighted by the training groups' shares, stratified bootstrap.</p>
<table><tr><th>method</th><th>worst-group accuracy [95%]</th><th>mean accuracy [95%]</th><th>C</th><th>converged</th><th>after the fix: max |WSC| with the probe; within-class eta of the score</th></tr>{meth}</table>{caveat}
<p>WSC is the paper's weight-space cosine of the head with the attribute's probe on the top principal
components; the within-class eta is how much the head's score moves with the attribute once the class is
known (0: not at all). They can disagree: a retrained head can put weight on low-variance directions that
the projection drops.</p>
{band}
<h2>Figures</h2>{imgs}
</body></html>"""


def write_mid_outputs(rec: dict, arrays: dict, out_dir: str, figures: bool = True) -> list[str]:
    """``mid.json``, ``report.html`` and the figures, written atomically."""
    def fill(tmp):
        figs = mid_figures(rec, arrays) if figures else {}
        _write_figures(tmp, figs)
        with open(os.path.join(tmp, "mid.json"), "w") as f:
            json.dump(json_ready(rec), f, indent=1, allow_nan=False, default=str)
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(render_mid_html(rec, figs))
    return atomic_folder(out_dir, fill)
