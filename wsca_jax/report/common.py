"""What every report shares: the Agg backend and PNG encoding, the page style, inlined figures,
file-name parts, and the atomic writing of an output folder.

This is the one module that selects matplotlib's backend; the figure modules take ``plt`` from here
so that the backend is set before pyplot is first used.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import tempfile

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..io import process_alive, umask_mode  # noqa: E402

DISTRIBUTIONS = "wsca_distributions.npz"

_CSS = """body{font-family:sans-serif;margin:2em;max-width:1150px;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}figure{display:inline-block;margin:8px;vertical-align:top}
figcaption{font-size:12px;color:#555}.verdict{font-weight:bold}.caveats{font-size:13px;color:#444}
section{border-top:1px solid #ddd;margin-top:1.5em}"""


def _safe(name: str) -> str:
    """A file-name part for a task: readable, at most 80 characters, and distinct for distinct names
    (a short hash of the name is added whenever characters were replaced or cut)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if clean == name and len(name) <= 80:
        return name
    import hashlib
    return f"{clean[:60]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _img(name: str, png: bytes) -> str:
    esc = html.escape
    return (f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'/>"
            f"<figcaption>{esc(name)}</figcaption></figure>")


def _write_figures(folder: str, figs: dict[str, bytes]) -> None:
    """Each figure's PNG bytes into ``folder/<name>``."""
    for k, v in figs.items():
        with open(os.path.join(folder, k), "wb") as f:
            f.write(v)


def _remove_orphans(parent: str, prefix: str, min_age_s: float = 60.0) -> None:
    """Remove ``<prefix><pid>-<random>`` folders left by a run that was killed while writing: the
    name matches this output exactly, its process is gone, and it is older than ``min_age_s`` (a
    process on another host sharing the folder still gets a minute)."""
    import time
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[A-Za-z0-9_]{8}")
    for name in os.listdir(parent):
        m = pattern.fullmatch(name)
        path = os.path.join(parent, name)
        if m and not process_alive(int(m.group(1))) and time.time() - os.path.getmtime(path) > min_age_s:
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
        os.chmod(tmp, umask_mode(folder=True))
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
