"""The fixed small analyses whose outputs must not change when the code is reorganised.

``python tests/golden/make_golden.py`` runs ``wsca analyze`` (a probed primary, and the model's heads
with a jointly trained task head and its seed null), ``wsca ifa --embeddings`` and ``wsca mid`` on
synthetic inputs made here, and stores each output normalised (:func:`normalise`) in
``tests/golden/``. ``tests/test_golden.py`` reruns them and compares. The records were written by the
code before the sub-package redesign (0.8.3); regenerate them only for a deliberate change of output.
"""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = ("analyze_probe", "analyze_heads", "ifa_maps", "mid")
OUTPUT = {"analyze_probe": "wsca.json", "analyze_heads": "wsca.json", "ifa_maps": "ifa.json", "mid": "mid.json"}


def make_inputs(d: str) -> None:
    """Synthetic inputs of every case in folder ``d``."""
    rng = np.random.default_rng(7)
    n, dim = 240, 12
    y = rng.integers(0, 2, n)
    site = rng.integers(0, 2, n)
    hosp = rng.integers(0, 3, n)
    age = rng.normal(50, 10, n)
    z = rng.normal(size=(n, dim))
    z[:, 0] += 1.5 * (2 * y - 1)
    z[:, 1] += 1.5 * (2 * site - 1)
    z[:, 2] += 0.8 * hosp
    z[:, 3] += 0.05 * (age - 50)
    head = np.zeros((2, dim))
    head[1, 0], head[1, 1] = 1.0, 0.4
    site_head = np.zeros((2, dim))
    site_head[1, 1], site_head[1, 0] = 1.0, 0.2
    group = np.arange(n) // 2
    np.savez(os.path.join(d, "emb.npz"), embeddings=z.astype(np.float32), head_label=head, head_site=site_head,
             label=y, site=site, hosp=np.array(["a", "b", "c"])[hosp], age=age, group=group)
    np.savez(os.path.join(d, "emb_probe.npz"), embeddings=z.astype(np.float32), label=y, site=site,
             hosp=np.array(["a", "b", "c"])[hosp], age=age)
    np.savetxt(os.path.join(d, "site_null.txt"), rng.uniform(0.05, 0.6, 19))
    # IFA: stored last-layer maps and a GAP + linear head
    m = rng.gamma(1.0, 1.0, (60, 4, 4, 8)).astype(np.float32)
    lab = rng.integers(0, 2, 60)
    src = rng.integers(0, 2, 60)
    m[:, :, :, 0] += 1.5 * lab[:, None, None]
    m[:, :, :, 1] += 1.5 * src[:, None, None]
    W = np.zeros((2, 8), np.float32)
    W[1, 0], W[1, 1] = 1.0, 0.5
    b = np.array([0.0, -1.0], np.float32)
    emb = m.mean((1, 2))
    np.savez(os.path.join(d, "maps.npz"), embeddings=emb, feature_maps=m, head_label=W, bias_label=b,
             logits_label=emb @ W.T + b, label=lab, source=src)
    # MID: a planted shortcut (Waterbirds-like)
    hd = np.zeros((2, 10))
    hd[1, :2] = [0.6, 1.6]
    for name, k, p in (("train", 400, 0.95), ("val", 300, 0.85), ("test", 400, 0.5)):
        yy = rng.integers(0, 2, k)
        a = np.where(rng.random(k) < p, yy, 1 - yy)
        x = rng.normal(size=(k, 10))
        x[:, 0] += 1.5 * (2 * yy - 1)
        x[:, 1] += 2.0 * (2 * a - 1)
        logit = 1.6 * x[:, 1] + 0.6 * x[:, 0]
        np.savez(os.path.join(d, f"{name}.npz"), embeddings=x.astype(np.float32), head_label=hd,
                 bias_label=np.zeros(2), logits_label=np.stack([np.zeros(k), logit], 1), label=yy,
                 place=a.astype(str))


def commands(d: str) -> dict[str, list[str]]:
    """The CLI call of every case (inputs in ``d``, outputs in ``d/<case>``)."""
    o = lambda c: os.path.join(d, c)  # noqa: E731
    emb = o("emb.npz")
    return {
        "analyze_probe": ["analyze", "--embeddings", o("emb_probe.npz"), "--primary", "label", "--continuous", "age",
                          "--bins", "3", "--bootstrap", "20", "--permutations", "20", "--pca-min", "6",
                          "--seed", "3", "--no-figures", "--quiet", "--out", o("analyze_probe")],
        "analyze_heads": ["analyze", "--embeddings", emb, "--primary", "label", "--continuous", "age",
                          "--task-heads", "site", "--head-null", f"site={o('site_null.txt')}", "--bootstrap", "20",
                          "--permutations", "20", "--pca-min", "6", "--ci-method", "bca", "--no-figures", "--quiet",
                          "--out", o("analyze_heads")],
        "ifa_maps": ["ifa", "--embeddings", o("maps.npz"), "--fractions", "0.25,0.5,1", "--random-masks", "4",
                     "--no-figures", "--out", o("ifa_maps")],
        "mid": ["mid", "--train", o("train.npz"), "--val", o("val.npz"), "--test", o("test.npz"), "--primary", "label",
                "--groups", "label,place", "--k", "2:3", "--restarts", "2", "--refits", "3", "--verify", "place",
                "--c-grid", "published", "--methods", "erm,mid,mid_oracle,dfr",     # as 0.8.3 (issue 29: see test)
                "--bootstrap", "10", "--permutations", "10", "--no-figures", "--out", o("mid")],
    }


# versions, timings, and the memory the solver found free on this machine (resolved at run time)
_VOLATILE = {"wsca_version", "stage_seconds", "seconds", "elapsed_s", "throughput_images_per_s", "memory_gb"}
_IMG = re.compile(r"data:image/[a-z+]+;base64,[A-Za-z0-9+/=]+")
_SETTINGS = re.compile(r"<h2>Settings</h2><pre>.*?</pre>", re.S)


def normalise(rec):
    """A record without what legitimately changes from run to run (versions, timings)."""
    if isinstance(rec, dict):
        return {k: normalise(v) for k, v in rec.items() if k not in _VOLATILE}
    if isinstance(rec, list):
        return [normalise(v) for v in rec]
    return rec


def html_text(path: str, d: str) -> str:
    """The report's HTML with embedded images, the temporary folder's name and the settings block
    taken out (the settings are compared in the JSON record, layout aside)."""
    with open(path, encoding="utf-8") as f:
        text = _IMG.sub("data:image", f.read()).replace(d, "<DIR>")
    return _SETTINGS.sub("<h2>Settings</h2><pre>SETTINGS</pre>", text)


def run_case(case: str, d: str) -> tuple[dict, str]:
    """Run one case's CLI call in ``d``; returns (normalised record, normalised HTML)."""
    from wsca_jax.cli import main
    code = main(commands(d)[case])
    assert code == 0, f"{case}: exit {code}"
    out = os.path.join(d, case)
    with open(os.path.join(out, OUTPUT[case]), encoding="utf-8") as f:
        rec = json.loads(f.read().replace(d, "<DIR>"))
    return normalise(rec), html_text(os.path.join(out, "report.html"), d)


def main() -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        make_inputs(d)
        for case in CASES:
            rec, html = run_case(case, d)
            with open(os.path.join(HERE, f"{case}.json"), "w", encoding="utf-8") as f:
                json.dump(rec, f, indent=1, sort_keys=True)
            with open(os.path.join(HERE, f"{case}.html"), "w", encoding="utf-8") as f:
                f.write(html)
            print(f"wrote {case}", file=sys.stderr)


if __name__ == "__main__":
    main()
