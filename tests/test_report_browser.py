"""The HTML reports render in a real browser: headless Chromium loads every figure, logs no error,
and the screenshot is not blank."""

import json
import re
import subprocess

import numpy as np
from PIL import Image

import wsca_jax as wsca
from conftest import make_known_answer
from wsca_jax.report import write_outputs

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=10000"]

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(e.target && e.target.tagName ? 'failed to load ' + e.target.tagName : String(e.message));
}, true);
var _err = console.error;
console.error = function () { window.__errors.push(Array.prototype.join.call(arguments, ' ')); _err.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; });
  document.body.setAttribute('data-check', JSON.stringify({n: imgs.length, bad: bad, errors: window.__errors,
                                                           width: document.body.scrollWidth}));
});
</script>"""


def _run(chromium, args, tmp_path):
    cmd = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def check_renders(chromium, html_path, tmp_path, min_figures):
    text = html_path.read_text()
    assert "<script" not in text.lower(), "the report should need no script"
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    dom = _run(chromium, ["--dump-dom", probe.as_uri()], tmp_path)
    m = re.search(r"data-check=\"([^\"]*)\"", dom.stdout)
    assert m, f"the page did not finish loading: {dom.stderr[-2000:]}"
    check = json.loads(m.group(1).replace("&quot;", '"'))
    assert check["n"] >= min_figures, check
    assert check["bad"] == [], f"figures that did not load: {check['bad']}"
    assert check["errors"] == [], f"errors in the page: {check['errors']}"
    shot = tmp_path / "shot.png"
    run = _run(chromium, [f"--screenshot={shot}", "--window-size=1200,1800", html_path.as_uri()], tmp_path)
    assert shot.exists(), run.stderr[-2000:]
    assert not re.search(r"CONSOLE.*(error|Uncaught)", run.stderr, re.I), run.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), float)
    assert img.std() > 10, "screenshot is blank"
    assert (img < 200).mean() > 0.01, "screenshot has almost no ink"


def test_analysis_report_renders_in_chromium(chromium, tmp_path):
    z, meta, head = make_known_answer(n=300, d=10, used=True)
    meta["scanner"] = np.arange(300) % 3
    res = wsca.analyze(z, meta, "label", head, config=wsca.AnalysisConfig().replace(bootstrap=20, permutations=20, pca_min=10))
    out = tmp_path / "out"
    write_outputs(res, str(out))
    # per task: heatmap + distributions; plus encoded-vs-used
    check_renders(chromium, out / "report.html", tmp_path, min_figures=1 + 2 * len(res.tasks))
