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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def heatmap_figure(result, name: str):
    """WSC heatmap of one task: cell value, CI and permutation p when available."""
    t = result.tasks[name]
    w = np.asarray(t.wsc, float)
    ca, cm = w.shape
    fig, ax = plt.subplots(figsize=(1.6 + 1.25 * cm, 1.2 + 0.9 * ca), dpi=110)
    im = ax.imshow(w, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for i in range(ca):
        for j in range(cm):
            txt = f"{w[i, j]:+.2f}"
            if t.ci_low is not None:
                txt += f"\n[{t.ci_low[i, j]:+.2f}, {t.ci_high[i, j]:+.2f}]"
            if t.p_value is not None:
                txt += f"\np={t.p_value[i, j]:.3f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                    color="white" if abs(w[i, j]) > 0.6 else "black")
    ax.set_xticks(range(cm), [c[:18] for c in t.classes], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(ca), [c[:18] for c in result.primary["classes"]][:ca] if ca > 1 else ["logit"], fontsize=8)
    ax.set_xlabel(name); ax.set_ylabel(result.primary["name"])  # noqa: E702
    s = t.summary
    ax.set_title(f"WSC {result.primary['name']} x {name}: max|WSC| {s['max_abs_wsc']:.3f}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return fig


def encoded_vs_used_figure(result):
    """Probe AUROC (encoded) against max |WSC| (used), with the null references."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for name, t in result.tasks.items():
        a = t.probe.get("auroc")
        s = t.summary
        if a is None:
            continue
        y = s["max_abs_wsc"]
        if s["ci"]:
            ax.errorbar(a, y, yerr=[[max(y - s["ci"][0], 0)], [max(s["ci"][1] - y, 0)]], fmt="o", capsize=3)
        else:
            ax.plot(a, y, "o")
        ref = s.get("null_q95", s["random_direction_q95"])
        ax.plot([a - 0.012, a + 0.012], [ref, ref], "k-", lw=2, alpha=0.5)
        ax.annotate(name, (a, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("probe AUROC, held out (how strongly the attribute is encoded)")
    ax.set_ylabel("max |WSC| (how much the primary head aligns)")
    ax.set_xlim(0.4, 1.02); ax.set_ylim(0, 1)  # noqa: E702
    ax.set_title("encoded vs used (bars: 95% null reference of each task)", fontsize=9)
    fig.tight_layout()
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def render_html(result, figures: dict[str, bytes]) -> str:
    """One self-contained HTML page (figures inlined as base64 PNG)."""
    d = result.to_dict()
    esc = html.escape
    rows = []
    for name, t in d["tasks"].items():
        s = t["summary"]
        ci = "" if not s["ci"] else f"[{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"
        p = "" if s["p_value"] is None else f"{s['p_value']:.4f}"
        pa = "" if s["p_adjusted"] is None else f"{s['p_adjusted']:.4f}"
        au = t["probe"].get("auroc")
        rows.append(f"<tr><td>{esc(name)}</td><td>{esc(t['kind'])}</td><td>{t['n_used']}</td>"
                    f"<td>{'' if au is None else f'{au:.3f}'}</td><td>{s['max_abs_wsc']:.3f}</td><td>{ci}</td>"
                    f"<td>{p}</td><td>{pa}</td><td>{s['random_direction_q95']:.3f}</td><td>{esc(s['verdict'])}</td></tr>")
    imgs = "".join(
        f"<figure><img alt='{esc(k)}' src='data:image/png;base64,{base64.b64encode(v).decode()}'/>"
        f"<figcaption>{esc(k)}</figcaption></figure>" for k, v in figures.items())
    skipped = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in d["skipped"].items()) or "<li>none</li>"
    settings = esc(json.dumps(d["settings"], indent=1))
    prim = d["primary"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>WSC analysis: {esc(prim['name'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>Weight Space Correlation analysis</h1>
<p>Primary task <b>{esc(prim['name'])}</b> ({esc(', '.join(prim['classes']))}); head from the {esc(prim['source'])}
({'centred rows' if prim['centered'] else 'raw rows'}). {d['n_samples']} samples, embedding dimension {d['embedding_dim']},
PCA to {d['pca']['components']} components ({100 * d['pca']['explained_variance']:.1f}% of the variance).</p>
<h2>Summary per task</h2>
<table><tr><th>task</th><th>kind</th><th>n</th><th>probe AUROC</th><th>max |WSC|</th><th>CI</th><th>p</th>
<th>p (Holm)</th><th>random 95%</th><th>verdict</th></tr>{''.join(rows)}</table>
<p>How to read: the probe AUROC says how strongly an attribute is <i>encoded</i>; max |WSC| says how much the primary
head's decision direction aligns with the attribute's direction (<i>used</i>). Compare it with the permutation null
of the same embedding (p-value) rather than with a fixed threshold; a high WSC with a weak probe is not evidence.</p>
<h2>Figures</h2>{imgs}
<h2>Skipped columns</h2><ul>{skipped}</ul>
<h2>Settings</h2><pre>{settings}</pre></body></html>"""


def write_outputs(result, out_dir: str, figures: bool = True) -> list[str]:
    """Write ``wsca.json``, ``report.html`` and PNG figures into ``out_dir`` (atomically per file).

    Everything is first rendered into a temporary folder beside ``out_dir``; only when all of it
    exists are the files moved in. Returns the paths written.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".wsca-tmp-", dir=parent)
    try:
        figs = {}
        if figures:
            figs["encoded_vs_used.png"] = _png(encoded_vs_used_figure(result))
            for name in result.tasks:
                figs[f"wsca_{_safe(name)}.png"] = _png(heatmap_figure(result, name))
        for k, v in figs.items():
            with open(os.path.join(tmp, k), "wb") as f:
                f.write(v)
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(render_html(result, figs))
        with open(os.path.join(tmp, "wsca.json"), "w") as f:
            json.dump(result.to_dict(), f, indent=2, allow_nan=False)
        os.makedirs(out_dir, exist_ok=True)
        for old in os.listdir(out_dir):             # figures of an earlier run with other tasks
            if old.startswith("wsca_") and old.endswith(".png") and old not in figs:
                os.remove(os.path.join(out_dir, old))
        written = []
        for k in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, k), os.path.join(out_dir, k))
            written.append(os.path.join(out_dir, k))
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
