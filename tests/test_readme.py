"""The README's Python example runs and says what the README claims."""

import pathlib
import re


def test_readme_python_example(tmp_path, monkeypatch):
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(code, "README.md", "exec"), ns)
    s = ns["result"].tasks["scanner"]
    assert s.probe["auroc"] > 0.85                   # encoded
    assert s.summary["p_value"] > 0.05               # unused
    assert s.summary["max_abs_wsc"] < s.summary["random_direction_q95"]
    assert s.summary["equivalence"]["below_margin"]  # concluded, within the margin
    assert (tmp_path / "wsca.json").exists()
