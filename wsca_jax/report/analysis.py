"""The analysis report: figures and HTML of a :class:`~wsca_jax.analysis.WscaResult`, and its folder.

``write_outputs`` writes ``wsca.json``, ``report.html``, ``wsca_<task>.png`` / ``dist_<task>.png`` /
``encoded_vs_used.png`` / ``k_sensitivity.png`` and ``wsca_distributions.npz`` into a folder, through a
temporary folder so that a failure leaves nothing half-written; ``write_report`` re-renders the page
from such a folder (``load_result``).
"""

from __future__ import annotations

import html
import json
import os

import numpy as np

from .common import DISTRIBUTIONS, _CSS, _img, _png, _safe, _stale_figure, _write_figures, atomic_folder, plt


def heatmap_figure(result, name: str):
    """WSC heatmap of one task: raw cell value; the corrected value ("c") with its interval, or the raw
    interval; the permutation p when available."""
    t = result.tasks[name]
    w = np.asarray(t.wsc, float)
    ca, cm = w.shape
    fig, ax = plt.subplots(figsize=(1.6 + 1.25 * cm, 1.2 + 0.9 * ca), dpi=110)
    im = ax.imshow(w, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for i in range(ca):
        for j in range(cm):
            txt = f"{w[i, j]:+.2f}"
            if t.ci_low is not None:
                corr = "" if t.wsc_corrected is None or t.summary.get("ci_method") != "corrected" else (
                    f"c {t.wsc_corrected[i, j]:+.2f} ")
                txt += f"\n{corr}[{t.ci_low[i, j]:+.2f}, {t.ci_high[i, j]:+.2f}]"
            if t.p_value is not None:
                txt += f"\np={t.p_value[i, j]:.3f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if abs(w[i, j]) > 0.6 else "black")
    ax.set_xticks(range(cm), [c[:18] for c in t.classes], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(ca), [c[:18] for c in result.primary["classes"]][:ca] if ca > 1 else ["logit"], fontsize=8)
    ax.set_xlabel(name); ax.set_ylabel(result.primary["name"])  # noqa: E702
    s = t.summary
    src = "jointly trained heads" if getattr(t, "source", "probe") == "head" else "head vs probe"
    ax.set_title(f"WSC {result.primary['name']} x {name}: max|WSC| {s['max_abs_wsc']:.3f}\n({src})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return fig


def _encoded_used(points, xlabel: str, title: str):
    """Probe AUROC (encoded) against max |WSC| (used).

    Args:
      points: ``(label, auroc, max_abs_wsc, ci or None, null 95% or None)`` per point.
    """
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for label, a, y, ci, ref in points:
        if a is None:
            continue
        if ci:
            ax.errorbar(a, y, yerr=[[max(y - ci[0], 0)], [max(ci[1] - y, 0)]], fmt="o", capsize=3)
        else:
            ax.plot(a, y, "o")
        if ref is not None:
            ax.plot([a - 0.012, a + 0.012], [ref, ref], "k-", lw=2, alpha=0.5)
        ax.annotate(label, (a, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhspan(0, 0.06, color="0.85", zorder=0, label="paper's inter-network null (|cos| < 0.06)")
    ax.legend(loc="upper left", fontsize=7, frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("max |WSC| (how much the primary head aligns)")
    ax.set_xlim(0.4, 1.02); ax.set_ylim(0, 1)  # noqa: E702
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def encoded_vs_used_figure(result):
    """Probe AUROC (encoded) against max |WSC| (used) per task, with the null references: the
    permutation null of probe tasks, the seed null of fixed heads, else the random-direction one."""
    ref = lambda s: s["random_direction_q95"] if s.get("null_q95") is None else s["null_q95"]  # noqa: E731
    points = [(name, t.probe.get("auroc"), t.summary["max_abs_wsc"], t.summary["ci"], ref(t.summary))
              for name, t in result.tasks.items()]
    return _encoded_used(points, "probe AUROC, held out (how strongly the attribute is encoded)",
                         "encoded vs used (bars: 95% null reference of each task)")


def distributions_figure(result, name: str):
    """Bootstrap and permutation-null distributions of max |WSC| for one task (None without either)."""
    t = result.tasks[name]
    if t.boot is None and t.null is None:
        return None
    absmax = lambda a: np.nanmax(np.abs(np.asarray(a, float)), axis=(-2, -1))  # noqa: E731
    fig, ax = plt.subplots(figsize=(5.2, 3.2), dpi=110)
    bins = np.linspace(0, 1, 51)
    if t.null is not None and t.source != "head":          # a fixed head's statistic has no probe null
        ax.hist(absmax(t.null), bins=bins, color="0.6", alpha=0.8, label=f"permutation null ({len(t.null)})")
    if t.boot is not None:
        ax.hist(absmax(t.boot), bins=bins, color="tab:blue", alpha=0.55, label=f"bootstrap ({len(t.boot)})")
    s = t.summary
    ax.axvline(s["max_abs_wsc"], color="tab:red", lw=2, label=f"observed {s['max_abs_wsc']:.3f}")
    ax.axvline(s["random_direction_q95"], color="k", ls="--", lw=1, label="random directions, 95%")
    ax.set_xlabel("max |WSC|"); ax.set_ylabel("replicates")  # noqa: E702
    p = "" if s["p_value"] is None else f", p = {s['p_value']:.3f}"
    ax.set_title(f"{result.primary['name']} x {name}{p}", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def k_sensitivity_figure(result):
    """Max |WSC| against the projection size k per task, with the permutation-null and random-direction
    95% points at each k (``result.k_sensitivity``); None when the result has no such block."""
    ks = result.k_sensitivity
    if not ks:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 3.6), dpi=110)
    for i, (name, v) in enumerate(ks["tasks"].items()):
        color = f"C{i % 10}"
        ax.plot(ks["ks"], v["max_abs_wsc"], "o-", color=color, label=f"{name[:24]}: max |WSC|")
        if v.get("null_q95"):
            ax.plot(ks["ks"], v["null_q95"], "--", color=color, label=f"{name[:24]}: null 95%")
        ax.plot(ks["ks"], v["random_q95"], ":", color=color, lw=1)
    ax.axvline(ks["k_used"], color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("projection size k (grey: k used; dotted: random-direction 95%)")
    ax.set_ylabel("max |WSC|")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("k sensitivity (the paper's Fig. 4)", fontsize=9)
    fig.tight_layout()
    return fig


def result_figures(result) -> dict[str, bytes]:
    """PNG bytes by file name: ``encoded_vs_used.png``, ``k_sensitivity.png``, ``wsca_<task>.png``,
    ``dist_<task>.png``."""
    figs = {"encoded_vs_used.png": _png(encoded_vs_used_figure(result))}
    kfig = k_sensitivity_figure(result)
    if kfig is not None:
        figs["k_sensitivity.png"] = _png(kfig)
    for name in result.tasks:
        figs[f"wsca_{_safe(name)}.png"] = _png(heatmap_figure(result, name))
        fig = distributions_figure(result, name)
        if fig is not None:
            figs[f"dist_{_safe(name)}.png"] = _png(fig)
    return figs


def _ci_text(s: dict) -> str:
    """``", corrected 0.62, 95% CI [..] (corrected); raw interval [..]"`` from a task summary."""
    if not s.get("ci"):
        return ""
    lo, hi = s["ci"]
    if s.get("ci_method") == "corrected":
        return (f", attenuation-corrected {s['max_abs_wsc_corrected']:.3f} with 95% CI [{lo:.3f}, {hi:.3f}] for the "
                f"population value (raw bootstrap interval [{s['ci_raw'][0]:.3f}, {s['ci_raw'][1]:.3f}])")
    return f", 95% CI [{lo:.3f}, {hi:.3f}] ({s.get('ci_method')})"


def task_section(result, name: str, figures: dict[str, bytes], title: str | None = None) -> str:
    """HTML for one task: verdict, caveats, heatmap and distributions."""
    esc = html.escape
    t = result.tasks[name]
    s = t.summary
    ci = _ci_text(s)
    if s.get("p_value") is None:
        p = ", not tested" if t.source == "head" else ""
    elif s.get("test") == "seed_null":
        p = f", p {s['p_value']:.4f} over {s['head_null_n']} networks trained with permuted labels"
    else:
        mc = "" if s.get("p_value_mcse") is None else f" ± {s['p_value_mcse']:.4f} (Monte Carlo SE, {s['n_permutations']} permutations)"
        p = f", permutation p {s['p_value']:.4f}{mc}"
    fit = t.fit or {}
    conv = "" if not fit else (" Probe fit converged." if fit.get("converged") else
                               f" <b>The probe fit did not converge</b> (max |gradient| {fit['grad_max']:.1e}).")
    au = t.probe.get("auroc")
    src = "the model's jointly trained heads" if t.source == "head" else "the primary head against a probe"
    cav = "".join(f"<li>{esc(c)}</li>" for c in s.get("caveats", [])) or "<li>none</li>"
    imgs = "".join(_img(k, figures[k]) for k in (f"wsca_{_safe(name)}.png", f"dist_{_safe(name)}.png") if k in figures)
    return (f"<section><h3>{esc(title or name)}</h3>"
            f"<p class='verdict'>{esc(s.get('verdict', ''))}</p>"
            f"<p>max |WSC| {s['max_abs_wsc']:.3f}{ci}{p}; random-direction 95% {s['random_direction_q95']:.3f}; "
            f"probe AUROC {'n/a' if au is None else f'{au:.3f}'} ({esc(src)}).{conv}</p>"
            f"<p>Caveats:</p><ul class='caveats'>{cav}</ul>{imgs}</section>")


USE_NAMES = {"within_class_shift": "shift", "within_class_eta": "eta", "score_correlation_within": "corr (within)",
             "erasure_within": "erasure (within)", "score_correlation": "corr", "erasure": "erasure"}
USE_BEGIN, USE_END = "<!-- decision use -->", "<!-- /decision use -->"   # its own lines (tests/test_golden.py)
ZOO_RECORD = os.path.join(os.path.dirname(__file__), "zoo_accuracy.json")


def zoo_accuracy() -> dict:
    """The measured accuracy of each statistic and of the verdict's rule on the networks whose use
    was measured by intervention (written by ``experiments/use_validation.py``; {} when absent)."""
    try:
        with open(ZOO_RECORD) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _stat_cell(v: dict | None) -> str:
    if not v or v.get("estimate") is None:
        return ""
    ci = "" if not v.get("ci") else f" [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]"
    p = "" if v.get("p_value") is None else f", p {v['p_value']:.3f}"
    return f"{v['estimate']:.3f}{ci}{p}"


def use_table(d: dict) -> str:
    """HTML: per task the decision-use verdict beside every statistic and the paper's WSC, and how
    well each recovered use measured by intervention (:func:`zoo_accuracy`)."""
    esc = html.escape
    rows = []
    for name, t in d["tasks"].items():
        s = t["summary"]
        du, st = s.get("decision_use"), s.get("statistics") or {}
        if not du:
            continue
        cells = "".join(f"<td>{_stat_cell(st.get(k))}</td>" for k in ("wsc", *USE_NAMES))
        rows.append(f"<tr><td>{esc(name)}</td><td class='verdict'>{esc(du['verdict'])}</td>{cells}"
                    f"<td>{esc(du['reason'])}</td></tr>")
    if not rows:
        return ""
    acc = zoo_accuracy()
    inf = (d.get("settings") or {}).get("inference") or {}
    rule_is_default = (inf.get("use_statistic"), inf.get("use_margin")) == ((acc.get("rule") or {}).get("statistic"),
                                                                            (acc.get("rule") or {}).get("margin"))
    head = "".join(f"<th>{esc(v)}</th>" for v in ("WSC (paper)", *USE_NAMES.values()))
    note = ""
    if acc:
        label = {**USE_NAMES, "wsc": "the paper's WSC"}
        parts = [f"{esc(label.get(k, k))}: AUROC {v['auroc']:.2f}" for k, v in acc.get("statistics", {}).items()]
        r = acc.get("rule", {})
        note = (f"<p>Measured on {acc['networks']} networks whose use of a planted artefact was measured by intervention "
                f"({esc(acc['source'])}): AUROC for telling use from none -- {'; '.join(parts)}. The default rule "
                f"({esc(r.get('text', ''))}): sensitivity {r.get('sensitivity', float('nan')):.2f}, specificity "
                f"{r.get('specificity', float('nan')):.2f} (margins chosen on held-out kinds)"
                + ("" if not acc.get("external") else
                   f"; on {acc['external']['networks']} networks added after the rule was fixed (other datasets, "
                   f"backbones and artefacts), unchanged: sensitivity {acc['external']['sensitivity']:.2f}, "
                   f"specificity {acc['external']['specificity']:.2f}")
                + ("" if rule_is_default else "; this analysis used another statistic or margin, whose accuracy "
                   "was not measured") + ".</p>")
    return (f"\n{USE_BEGIN}\n<h2>Does the decision use it?</h2><table><tr><th>task</th><th>decision use</th>{head}<th>why</th></tr>"
            f"{''.join(rows)}</table>{note}<p>Every statistic but the paper's WSC is a property of the decision's scores "
            "(unchanged by any invertible change of embedding coordinates that keeps the logits); each cell is the "
            f"estimate [bootstrap interval], p of its own null.</p>\n{USE_END}\n")


def render_html(result, figures: dict[str, bytes]) -> str:
    """One self-contained HTML page (figures inlined as base64 PNG)."""
    d = result.to_dict()
    esc = html.escape
    rows = []
    for name, t in d["tasks"].items():
        s = t["summary"]
        ci = "" if not s["ci"] else f"[{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"
        corr = "" if s.get("max_abs_wsc_corrected") is None else f"{s['max_abs_wsc_corrected']:.3f}"
        p = "" if s["p_value"] is None else f"{s['p_value']:.4f}"
        pa = "" if s["p_adjusted"] is None else f"{s['p_adjusted']:.4f}"
        au = t["probe"].get("auroc")
        rows.append(f"<tr><td>{esc(name)}</td><td>{esc(t['kind'])}</td><td>{t['n_used']}</td>"
                    f"<td>{'' if au is None else f'{au:.3f}'}</td><td>{s['max_abs_wsc']:.3f}</td><td>{corr}</td>"
                    f"<td>{ci}</td><td>{p}</td><td>{pa}</td><td>{s['random_direction_q95']:.3f}</td><td>{esc(s['verdict'])}</td></tr>")
    overview = "".join(_img(k, figures[k]) for k in ("encoded_vs_used.png", "k_sensitivity.png") if k in figures)
    sections = "".join(task_section(result, name, figures) for name in result.tasks)
    skipped = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in d["skipped"].items()) or "<li>none</li>"
    settings = esc(json.dumps({"settings": d["settings"], "resolved": d.get("resolved", {})}, indent=1))
    warn = d.get("warnings") or []
    warn_html = "" if not warn else ("<h2>Warnings</h2><ul class='caveats'>"
                                     + "".join(f"<li>{esc(w)}</li>" for w in warn) + "</ul>")
    prim = d["primary"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>WSC analysis: {esc(prim['name'])}</title>
<style>{_CSS}</style></head>
<body><h1>Weight Space Correlation analysis</h1>
<p>Primary task <b>{esc(prim['name'])}</b> ({esc(', '.join(prim['classes']))}); head from the {esc(prim['source'])}
({'centred rows' if prim['centered'] else 'raw rows'}). {d['n_samples']} samples, embedding dimension {d['embedding_dim']},
PCA to {d['pca']['components']} components ({100 * d['pca']['explained_variance']:.1f}% of the variance).</p>
{warn_html}{use_table(d)}<h2>Summary per task</h2>
<table><tr><th>task</th><th>kind</th><th>n</th><th>probe AUROC</th><th>max |WSC|</th><th>corrected</th><th>CI</th><th>p</th>
<th>p (Holm)</th><th>random 95%</th><th>verdict</th></tr>{''.join(rows)}</table>
<p>How to read: the probe AUROC says how strongly an attribute is <i>encoded</i>; max |WSC| says how much the primary
head's decision direction aligns with the attribute's direction (<i>used</i>). Compare it with the permutation null
of the same embedding (p-value) rather than with a fixed threshold; a high WSC with a weak probe is not evidence.</p>
<h2>Encoded vs used</h2>{overview}
<h2>Per task</h2>{sections}
<h2>Skipped columns</h2><ul>{skipped}</ul>
<h2>Settings</h2><pre>{settings}</pre></body></html>"""


def save_distributions(result, path: str) -> None:
    """The bootstrap / permutation / random-direction distributions as ``.npz`` (task names in ``tasks``)."""
    names = list(result.tasks)
    arrays = {"tasks": np.array(names, dtype=str)}
    for key, a in result.distributions().items():
        kind, name = key.split("/", 1)
        arrays[f"{kind}_{names.index(name)}"] = a
    np.savez(path, **arrays)


def load_result(folder: str):
    """A :class:`~wsca_jax.analysis.WscaResult` from a folder written by :func:`write_outputs`."""
    from ..analysis import WscaResult
    from ..errors import WscaInputError, require
    from ..io import first_line

    path = os.path.join(folder, "wsca.json")
    require(os.path.isfile(path), f"{folder}: no wsca.json (not a wsca analyze output folder)")
    try:
        with open(path) as f:
            d = json.load(f)
    except (ValueError, OSError) as e:
        raise WscaInputError(f"{path}: not a readable wsca.json ({type(e).__name__}: {e})") from None
    arrays = {}
    dpath = os.path.join(folder, DISTRIBUTIONS)
    if os.path.isfile(dpath):
        try:
            with np.load(dpath, allow_pickle=False) as z:
                names = [str(x) for x in z["tasks"]]
                for key in z.files:
                    if key != "tasks":
                        kind, i = key.rsplit("_", 1)
                        arrays[f"{kind}/{names[int(i)]}"] = z[key]
        except Exception as e:                   # truncated or damaged: zip, header or payload errors
            raise WscaInputError(f"{dpath}: damaged ({type(e).__name__}: {first_line(e)}); delete it to render the report "
                                 "without the distribution figures, or run wsca analyze again") from None
    try:
        return WscaResult.from_dict(d, arrays)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise WscaInputError(f"{path}: not a readable wsca.json ({type(e).__name__}: {e})") from None


def fill_folder(result, folder: str, figures: bool = True) -> None:
    """Write ``wsca.json``, ``report.html``, the figures and the distributions into ``folder``."""
    figs = result_figures(result) if figures else {}
    _write_figures(folder, figs)
    with open(os.path.join(folder, "report.html"), "w") as f:
        f.write(render_html(result, figs))
    with open(os.path.join(folder, "wsca.json"), "w") as f:
        json.dump(result.to_dict(), f, indent=2, allow_nan=False)
    if result.distributions():
        save_distributions(result, os.path.join(folder, DISTRIBUTIONS))


def write_outputs(result, out_dir: str, figures: bool = True) -> list[str]:
    """Write ``wsca.json``, ``report.html``, PNG figures and ``wsca_distributions.npz`` into ``out_dir``.

    Everything is first rendered into a temporary folder beside ``out_dir``; only when all of it
    exists are the files moved in (figures of an earlier run with other tasks are removed).
    Returns the paths written.
    """
    return atomic_folder(out_dir, lambda tmp: fill_folder(result, tmp, figures), _stale_figure)


def write_report(folder: str, out: str | None = None) -> str:
    """Re-render ``report.html`` (and figures) from a folder holding ``wsca.json``; returns the HTML path.

    ``out``: another HTML path (default ``folder/report.html``). Figures are re-drawn into memory only.
    """
    from ..io import atomic_write_text

    result = load_result(folder)
    html_text = render_html(result, result_figures(result))
    path = out or os.path.join(folder, "report.html")
    atomic_write_text(path, html_text)
    return path
