"""Figures and a self-contained HTML report for a :class:`~wsca_jax.analysis.WscaResult`.

``write_outputs`` writes ``wsca.json``, ``report.html`` and ``wsca_<task>.png`` /
``encoded_vs_used.png`` into a folder, through a temporary folder so that a failure leaves nothing
half-written.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import tempfile

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


DISTRIBUTIONS = "wsca_distributions.npz"


def _safe(name: str) -> str:
    """A file-name part for a task: readable, at most 80 characters, and distinct for distinct names
    (a short hash of the name is added whenever characters were replaced or cut)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if clean == name and len(name) <= 80:
        return name
    import hashlib
    return f"{clean[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


_CSS = """body{font-family:sans-serif;margin:2em;max-width:1150px;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}figure{display:inline-block;margin:8px;vertical-align:top}
figcaption{font-size:12px;color:#555}.verdict{font-weight:bold}.caveats{font-size:13px;color:#444}
section{border-top:1px solid #ddd;margin-top:1.5em}"""


def _img(name: str, png: bytes) -> str:
    esc = html.escape
    return (f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"
            f"<figcaption>{esc(name)}</figcaption></figure>")


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
    settings = esc(json.dumps(d["settings"], indent=1))
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
{warn_html}<h2>Summary per task</h2>
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
    for k, v in figs.items():
        with open(os.path.join(folder, k), "wb") as f:
            f.write(v)
    with open(os.path.join(folder, "report.html"), "w") as f:
        f.write(render_html(result, figs))
    with open(os.path.join(folder, "wsca.json"), "w") as f:
        json.dump(result.to_dict(), f, indent=2, allow_nan=False)
    if result.distributions():
        save_distributions(result, os.path.join(folder, DISTRIBUTIONS))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(parent: str, prefix: str, min_age_s: float = 60.0) -> None:
    """Remove ``<prefix><pid>-<random>`` folders left by a run that was killed while writing: the
    name matches this output exactly, its process is gone, and it is older than ``min_age_s`` (a
    process on another host sharing the folder still gets a minute)."""
    import time
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[A-Za-z0-9_]{8}")
    for name in os.listdir(parent):
        m = pattern.fullmatch(name)
        path = os.path.join(parent, name)
        if m and not _alive(int(m.group(1))) and time.time() - os.path.getmtime(path) > min_age_s:
            shutil.rmtree(path, ignore_errors=True)


def atomic_folder(out_dir: str, fill, stale=lambda name: False) -> list[str]:
    """Render into a temporary folder beside ``out_dir`` with ``fill(tmp)``, then move every entry in.

    A failure leaves ``out_dir`` untouched; a temporary folder left by a killed run (named after
    ``out_dir`` and its process id) is removed by the next run. Entries of ``out_dir`` for which ``stale(name)`` is true
    and that the new output does not replace are removed. Returns the paths written.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    prefix = f".wsca-tmp-{os.path.basename(out_dir)[:40]}-"
    _remove_orphans(parent, prefix)
    tmp = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent)
    try:
        fill(tmp)
        new = set(os.listdir(tmp))
        os.makedirs(out_dir, exist_ok=True)
        for old in os.listdir(out_dir):
            if old not in new and stale(old):
                p = os.path.join(out_dir, old)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        written = []
        for k in sorted(new):
            dst = os.path.join(out_dir, k)
            if os.path.isdir(dst) and not os.path.islink(dst):
                shutil.rmtree(dst)
            os.replace(os.path.join(tmp, k), dst)
            written.append(dst)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stale_figure(name: str) -> bool:
    """Files of an earlier run that a new one may not overwrite (its tasks may differ)."""
    return name == DISTRIBUTIONS or (name.endswith(".png") and name.startswith(("wsca_", "dist_")))


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


def demo_comparison_figure(record: dict):
    """max |WSC| per condition and setting, with bootstrap intervals and the permutation-null 95% marks."""
    conds = list(record["conditions"])
    settings = list(next(iter(record["conditions"].values())))
    fig, ax = plt.subplots(figsize=(6.2, 3.6), dpi=110)
    width = 0.8 / len(settings)
    for j, s in enumerate(settings):
        xs = np.arange(len(conds)) + (j - (len(settings) - 1) / 2) * width
        ys = [record["conditions"][c][s]["max_abs_wsc"] for c in conds]
        ax.bar(xs, ys, width * 0.9, label=s.replace("_", "-"), alpha=0.8)
        for x, c in zip(xs, conds):
            m = record["conditions"][c][s]
            if m.get("ci"):
                ax.plot([x, x], m["ci"], "k-", lw=1)
            if m.get("null_q95") is not None:
                ax.plot([x - width * 0.45, x + width * 0.45], [m["null_q95"]] * 2, "r-", lw=2)
            if m.get("p_value") is not None:
                ax.annotate(f"p={m['p_value']:.3f}", (x, m["max_abs_wsc"]), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(range(len(conds)), conds)
    st = record["settings"]
    ax.set_ylabel(f"max |WSC| {st['primary']} x {st['confounder']}")
    ax.set_ylim(0, 1)
    ax.set_title("bars: observed; black: bootstrap 95% CI; red: permutation-null 95%", fontsize=8)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def demo_encoded_used_figure(record: dict):
    """Confounder probe AUROC (encoded) against max |WSC| (used) for every condition, with null marks."""
    points = [(f"{c}, {st.replace('_', '-')}", m.get("confounder_probe_auroc"), m["max_abs_wsc"], m.get("ci"),
               m.get("null_q95")) for c, by in record["conditions"].items() for st, m in by.items()]
    return _encoded_used(points, f"{record['settings']['confounder']} probe AUROC (encoded)",
                         "encoded vs used per condition (bars: permutation-null 95%)")


def render_demo_html(record: dict, results: dict, designs: dict, confounder: str) -> str:
    """The demo's self-contained report: verdicts, the comparison figure, designs, and per condition
    the WSC heatmap and the resampling distributions."""
    esc = html.escape
    st = record["settings"]
    rows = []
    for (cond, setting), res in results.items():
        m = record["conditions"][cond][setting]
        ci = "" if not m.get("ci") else f"[{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"
        p = "" if m.get("p_value") is None else f"{m['p_value']:.4f}"
        pu = "" if m.get("p_value_conditional") is None else f"{m['p_value_conditional']:.4f}"
        f3 = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
        rows.append(f"<tr><td>{esc(cond)}</td><td>{esc(setting)}</td><td>{f3(m['primary_auroc'])}</td>"
                    f"<td>{f3(m['confounder_probe_auroc'])}</td><td>{m['max_abs_wsc']:.3f}</td><td>{ci}</td>"
                    f"<td>{p}</td><td>{pu}</td><td>{f3(m.get('null_q95'))}</td>"
                    f"<td>{esc(res.tasks[confounder].summary.get('verdict', ''))}</td></tr>")
    design_html = "".join(f"<figure><figcaption>{esc(c)}: training images per cell</figcaption>"
                          f"{t.to_html(border=0)}</figure>" for c, t in designs.items())
    sections = []
    for (cond, setting), res in results.items():
        figs = result_figures(res)
        sections.append(task_section(res, confounder, figs, title=f"{cond}, {setting.replace('_', '-')}"))
    comp = (_img("comparison.png", _png(demo_comparison_figure(record)))
            + _img("encoded_vs_used.png", _png(demo_encoded_used_figure(record))))
    links = " ".join(f"<a href='{esc(c)}_{esc(s)}/report.html'>{esc(c)}, {esc(s.replace('_', '-'))}</a>"
                     for c, s in results)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>wsca demo: {esc(record['dataset'])}</title>
<style>{_CSS}</style></head>
<body><h1>Induced-shortcut demo: does the {esc(st['primary'])} decision use the {esc(st['confounder'])}?</h1>
<p>{esc(record['note'])}. Models are trained on a <b>balanced</b> design ({esc(st['confounder'])} independent of
{esc(st['primary'])}) and on a <b>biased</b> one (each class's majority from one {esc(st['confounder'])} value,
strength {st['strengths']['biased']}), each <i>fine-tuned</i> (the model's {esc(st['primary'])} head against a
{esc(st['confounder'])} probe) and <i>multi-task</i> (jointly trained heads). {st['epochs']} epochs, seed {st['seed']},
{st['bootstrap']} bootstrap and {st['permutations']} permutation refits; null: {esc(st['null'])}.</p>
<p>Expected (Wong et al., MIDL 2026): max |WSC| stays inside the null on balanced data and rises on biased data,
most in the multi-task setting (paper: 0.06 balanced; 0.12 fine-tuned, 0.30 multi-task biased).</p>
<h2>Verdicts</h2>
<table><tr><th>condition</th><th>setting</th><th>{esc(st['primary'])} test AUROC</th><th>{esc(st['confounder'])} probe AUROC</th>
<th>max |WSC|</th><th>95% CI</th><th>p</th><th>p (conditional)</th><th>null 95%</th><th>verdict</th></tr>
{''.join(rows)}</table>
{comp}
<h2>Training designs</h2>{design_html}
<h2>Per condition</h2><p>Full reports (all figures, settings, diagnostics): {links}.</p>{''.join(sections)}
<p>Finished in {record['seconds']} s.</p></body></html>"""


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


# -------------------------------------------------------------------------------------------------
# integrated feature analysis (wsca ifa)


def ifa_figures(rec: dict, arrays: dict, images: np.ndarray | None, n_examples: int = 6) -> dict[str, bytes]:
    """``ifa_importance.png`` (mean channel importance, overall and class minus overall),
    ``ifa_decomposition.png`` (AUROC against the channel fraction, random band) and
    ``ifa_cams.png`` (maps on the common vs the per-image scale) and ``ifa_outliers.png`` (the samples
    whose importance profile is farthest from their class's, with their maps). ``images`` None (stored
    feature maps without the images): the image rows are left out."""
    figs = {}
    overall = np.asarray(rec["profile"]["overall"])
    order = np.argsort(-overall)
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.bar(np.arange(len(order)), overall[order], color="0.6", label="overall")
    for name, d in rec["profile"]["difference"].items():
        ax.plot(np.arange(len(order)), np.asarray(d)[order], lw=1, label=f"{name} - overall")
    ax.set_xlabel("channel (sorted by mean importance)")
    ax.set_ylabel("importance")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    figs["ifa_importance.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    rows = rec["decomposition"]
    for mode, style in (("importance", "-o"), ("difference", "-s")):
        r = [x for x in rows if x["mode"] == mode]
        ax.plot([x["fraction"] for x in r], [x["auroc"] for x in r], style, ms=3, label=f"top by {mode}")
    r = [x for x in rows if x["mode"] == "random"]
    fr = [x["fraction"] for x in r]
    ax.fill_between(fr, [x["auroc_low"] for x in r], [x["auroc_high"] for x in r], color="0.85", label="random masks")
    ax.plot(fr, [x["auroc"] for x in r], color="0.5", lw=1)
    if rec["full_model"]["auroc"] is not None:
        ax.axhline(rec["full_model"]["auroc"], color="k", lw=0.8, ls="--", label="full model")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of channels kept")
    ax.set_ylabel("AUROC")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    figs["ifa_decomposition.png"] = _png(fig)
    cams = arrays["cams_common"]
    k = min(n_examples, len(cams))
    idx = np.linspace(0, len(cams) - 1, k).astype(int)
    first = 0 if images is not None else 1                   # row 0 shows the image when there is one
    fig, axes = plt.subplots(3 - first, k, figsize=(1.4 * k, 1.5 * (3 - first) - 0.1), squeeze=False)
    raw = arrays.get("cams", cams)                           # per-image min-max of the unscaled maps (IFA's)
    lo = raw.min(axis=(1, 2), keepdims=True)
    hi = raw.max(axis=(1, 2), keepdims=True)
    per = (raw - lo) / np.where(hi > lo, hi - lo, 1)
    for j, i in enumerate(idx):
        img = None if images is None else images[i][..., 0] if images.shape[-1] == 1 else images[i]
        for row, (pic, title) in enumerate(((img, "image"), (cams[i], "common scale"), (per[i], "per image"))):
            if row < first:
                continue
            a = axes[row - first, j]
            a.imshow(pic, cmap="gray" if row == 0 else "jet", vmin=None if row == 0 else 0, vmax=None if row == 0 else 1)
            a.set_xticks([])
            a.set_yticks([])
            if j == 0:
                a.set_ylabel(title, fontsize=7)
    fig.tight_layout()
    figs["ifa_cams.png"] = _png(fig)
    out = rec.get("outliers", [])[:n_examples]
    if out:
        first = 0 if images is not None else 1
        fig, axes = plt.subplots(2 - first, len(out), figsize=(1.5 * len(out), 1.6 * (2 - first)), squeeze=False)
        for j, o in enumerate(out):
            if images is not None:
                axes[0, j].imshow(images[o["row"]][..., 0] if images.shape[-1] == 1 else images[o["row"]], cmap="gray")
            axes[0, j].set_title(f"row {o['row']}\n{o['class']}, d {o['distance']:.1f}", fontsize=6)
            axes[1 - first, j].imshow(cams[o["row"]], cmap="jet", vmin=0, vmax=1)
            for a in axes[:, j]:
                a.set_xticks([])
                a.set_yticks([])
        axes[1 - first, 0].set_ylabel("common scale", fontsize=7)
        fig.tight_layout()
        figs["ifa_outliers.png"] = _png(fig)
    return figs


def render_ifa_html(rec: dict, figures: dict[str, bytes]) -> str:
    esc = html.escape
    cons = rec["consistency"]
    crow = "".join(f"<tr><td>{esc(k)}</td>" + "".join(f"<td>{'' if v is None else f'{v:.3f}'}</td>"
                                                      for v in d["pearson_r"].values()) + "</tr>" for k, d in cons.items())
    chead = "".join(f"<th>{esc(c)}</th>" for c in next(iter(cons.values()))["pearson_r"])
    conf = "".join(f"<tr><td>{esc(t)}</td><td>{len(c['channels'])}</td><td>{c['probe_accuracy']:.3f}</td>"
                   f"<td>{c['decision_share']:.3f}</td><td>{c['random_share_mean']:.3f}</td><td>{c['p_value']:.3f}</td></tr>"
                   for t, c in rec.get("confounders", {}).items())
    loc = "".join(f"<tr><td>{esc(c)}</td><td>{v['mass_in_region']:.3f}</td><td>{v['area_share']:.3f}</td></tr>"
                  for c, v in rec.get("localization", {}).items())
    outl = "".join(f"<tr><td>{o['row']}</td><td>{esc(o['class'])}</td><td>{o['distance']:.2f}</td></tr>"
                   for o in rec["outliers"])
    ssf = ", ".join(f"{esc(k)}: {'none' if v is None else v}" for k, v in rec["smallest_sufficient_fraction"].items())
    imgs = "".join(_img(k, v) for k, v in figures.items())
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>wsca ifa</title><style>{_CSS}</style></head><body>
<h1>Integrated feature analysis: {esc(str(rec.get('primary', '')))}</h1>
<p>{esc(rec['method'])} maps at layer {esc(str(rec.get('layer', '')))}, {rec['n']} images ({rec['n_profile']} in the
profiles), {rec['channels']} channels, accuracy {rec['accuracy']:.3f}; common scale [{rec['scale']['low']:.3g},
{rec['scale']['high']:.3g}] ({esc(rec['scale']['mapping'])}).</p>
<h2>Does the map follow the logit?</h2><table><tr><th>scale</th>{chead}</tr>{crow}</table>
<h2>How few channels suffice?</h2><p>Smallest fraction within {rec['tolerance']} AUROC of the full model: {ssf}.</p>
<h2>Where the metadata live</h2>{'<table><tr><th>column</th><th>channels</th><th>probe accuracy</th><th>decision share</th><th>random sets</th><th>p</th></tr>' + conf + '</table>' if conf else '<p>No metadata column with 2-20 classes in this split (<code>--tasks</code>).</p>'}
{'<h2>Localisation</h2><table><tr><th>class</th><th>map mass in region</th><th>region area</th></tr>' + loc + '</table>' if loc else ''}
<h2>Figures</h2>{imgs}
<h2>Outliers</h2><table><tr><th>row</th><th>class</th><th>robust distance</th></tr>{outl}</table>
</body></html>"""


def write_ifa_outputs(rec: dict, arrays: dict, images: np.ndarray | None, out_dir: str, figures: bool = True) -> list[str]:
    """``ifa.json``, ``ifa_importance.npz``, ``report.html`` and the figures, written atomically."""
    def fill(tmp):
        figs = ifa_figures(rec, arrays, images) if figures else {}
        for k, v in figs.items():
            with open(os.path.join(tmp, k), "wb") as f:
                f.write(v)
        with open(os.path.join(tmp, "ifa.json"), "w") as f:
            json.dump(rec, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        np.savez(os.path.join(tmp, "ifa_importance.npz"), **arrays)
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(render_ifa_html(rec, figs))
    return atomic_folder(out_dir, fill)


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


def _enrichment_rows(rows: list[dict]) -> str:
    esc = html.escape
    return "".join(f"<tr><td>{esc(str(r['column']))}</td><td>{esc(str(r['value']))}</td><td>{r['share_subset']:.3f}</td>"
                   f"<td>{r['share_all']:.3f}</td><td>{r['odds_ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]</td>"
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
        band = (f"<h2>The mid-range band</h2><p>{b['n']} validation rows ({b['share']:.0%} nearest 0 per predicted class); "
                f"mislabel suspicion (share of 10 nearest neighbours with another label) {b['mislabel_suspicion_mean']:.3f} "
                f"in the band, {b['mislabel_suspicion_mean_outside']:.3f} outside.</p><table>{head}{_enrichment_rows(b['enrichment'])}</table>"
                f"<h2>Clusters of the band (k = {rec['k']}, by silhouette)</h2>"
                + "".join(f"<h3>cluster {c['cluster']} ({c['n']} rows)</h3><table>{head}{_enrichment_rows(c['enrichment'])}</table>"
                          for c in rec["clusters"]))
    imgs = "".join(_img(k, v) for k, v in figures.items())
    return f"""<!doctype html><html><head><meta charset='utf-8'><title>wsca mid</title><style>{_CSS}</style></head><body>
<h1>Mitigation: last-layer retraining</h1>
<p>Heads retrained on the {esc(rec['settings']['retrained_on'])}; scored on the test rows. Worst-group interval: exact
(Clopper-Pearson per group, Bonferroni); mean accuracy weighted by the training groups' shares, stratified bootstrap.</p>
<table><tr><th>method</th><th>worst-group accuracy [95%]</th><th>mean accuracy [95%]</th><th>C</th><th>converged</th><th>after the fix: max |WSC| with the probe; within-class eta of the score</th></tr>{meth}</table>
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
        for k, v in figs.items():
            with open(os.path.join(tmp, k), "wb") as f:
                f.write(v)
        with open(os.path.join(tmp, "mid.json"), "w") as f:
            json.dump(rec, f, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(render_mid_html(rec, figs))
    return atomic_folder(out_dir, fill)
