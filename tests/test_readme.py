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


def test_readme_ifa_example_runs_on_any_flax_model():
    """The IFA snippet of the README, on a small untrained model of ours (any Flax model would do)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from wsca_jax.models import WscaModel
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "split_at" in c][0]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (48, 64, 64, 1)).astype(np.uint8)
    model = WscaModel(head_classes=(2,), setting="fine_tuned", widths=(4, 8))
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(images[:1]))["params"]
    ns = {"model": model, "params": params, "images": images, "labels": rng.integers(0, 2, 48),
          "scanner_codes": rng.integers(0, 3, 48)}
    exec(compile(code, "README.md", "exec"), ns)
    rec = ns["record"]
    assert set(rec["smallest_sufficient_fraction"]) == {"importance", "difference", "random"}
    assert 0 < rec["confounders"]["scanner"]["p_value"] <= 1 and set(rec["localization"]) <= set(rec["classes"])
