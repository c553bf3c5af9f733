"""The integrated feature analysis report (``wsca ifa``): ``ifa.json``, ``ifa_importance.npz``,
``report.html`` and the figures."""

from __future__ import annotations

import html
import json
import os

import numpy as np

from ..io import json_ready
from .common import _CSS, _img, _png, _write_figures, atomic_folder, plt


def _importance_figure(rec: dict):
    """Mean channel importance (bars, channels sorted by it) and each class minus overall (lines)."""
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
    return fig


def _decomposition_figure(rec: dict):
    """AUROC against the fraction of channels kept: top by importance, top by difference, the random
    masks' band, and the full model."""
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
    return fig


def _cams_figure(arrays: dict, images: np.ndarray | None, n_examples: int):
    """``n_examples`` evenly spaced samples: the image (when there is one), the map on the common scale
    and on the per-image scale."""
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
    return fig


def _outliers_figure(out: list, cams: np.ndarray, images: np.ndarray | None):
    """The outlying samples ``out`` (records' ``outliers``): image (when there is one) and common-scale map."""
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
    return fig


def ifa_figures(rec: dict, arrays: dict, images: np.ndarray | None, n_examples: int = 6) -> dict[str, bytes]:
    """``ifa_importance.png`` (mean channel importance, overall and class minus overall),
    ``ifa_decomposition.png`` (AUROC against the channel fraction, random band) and
    ``ifa_cams.png`` (maps on the common vs the per-image scale) and ``ifa_outliers.png`` (the samples
    whose importance profile is farthest from their class's, with their maps). ``images`` None (stored
    feature maps without the images): the image rows are left out."""
    figs = {"ifa_importance.png": _png(_importance_figure(rec)),
            "ifa_decomposition.png": _png(_decomposition_figure(rec)),
            "ifa_cams.png": _png(_cams_figure(arrays, images, n_examples))}
    out = rec.get("outliers", [])[:n_examples]
    if out:
        figs["ifa_outliers.png"] = _png(_outliers_figure(out, arrays["cams_common"], images))
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
        _write_figures(tmp, figs)
        with open(os.path.join(tmp, "ifa.json"), "w") as f:
            json.dump(json_ready(rec), f, indent=1, allow_nan=False, default=str)
        np.savez(os.path.join(tmp, "ifa_importance.npz"), **arrays)
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(render_ifa_html(rec, figs))
    return atomic_folder(out_dir, fill)
