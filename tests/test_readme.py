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

    from wsca_jax.training.models import WscaModel
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


def test_readme_mid_example_runs():
    """The MID snippet of the README, on a planted shortcut (the place axis carries the ERM decision)."""
    import numpy as np
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "retrain_methods" in c][0]
    rng = np.random.default_rng(0)
    names = np.array([["landbird/land", "landbird/water"], ["waterbird/land", "waterbird/water"]])
    ns = {}
    for split, n, p in (("val", 800, 0.8), ("test", 1600, 0.5)):
        y = rng.integers(0, 2, n)
        place = np.where(rng.random(n) < p, y, 1 - y)
        z = rng.normal(size=(n, 8))
        z[:, 0] += 1.5 * (2 * y - 1)
        z[:, 1] += 2.0 * (2 * place - 1)
        ns.update({f"z_{split}": z, f"y_{split}": y, f"logits_{split}": 1.6 * z[:, 1] + 0.6 * z[:, 0],
                   f"groups_{split}": names[y, place]})
    exec(compile(code, "README.md", "exec"), ns)
    m = ns["out"]["methods"]
    assert m["dfr"]["worst_group"] > m["erm"]["worst_group"] + 0.15 and m["mid"]["worst_group"] > m["erm"]["worst_group"]
