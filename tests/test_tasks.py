import numpy as np
import pandas as pd
import pytest

from wsca_jax import WscaInputError
from wsca_jax.tasks import bin_continuous, build_tasks


def table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "label": rng.integers(0, 2, n),
        "scanner": rng.choice(["GE", "Toshiba", "Philips"], n),
        "weight": rng.normal(3000, 400, n),
        "const": np.ones(n),
        "patient": [f"p{i}" for i in range(n)],
        "rare": np.r_[np.zeros(n - 2), [1, 2]].astype(int),
        "flag": rng.integers(0, 2, n).astype(bool),
    })


def test_kinds_and_skips():
    ts = build_tasks(table(), "label")
    kinds = {t.name: t.kind for t in ts.tasks}
    assert kinds == {"scanner": "categorical", "weight": "binned", "flag": "binary"}
    assert set(ts.skipped) == {"const", "patient", "rare"}
    assert "constant" in ts.skipped["const"]
    assert "identifier" in ts.skipped["patient"]
    assert "rows" in ts.skipped["rare"]
    assert ts.primary.classes == ("0", "1")


def test_missing_values_are_masked_per_task():
    df = table()
    df.loc[:9, "scanner"] = None
    df.loc[100:104, "weight"] = np.nan
    ts = build_tasks(df, "label", tasks=["scanner", "weight"])
    sc, w = ts.tasks
    assert sc.n_used == 190 and (sc.labels[:10] == -1).all()
    assert w.n_used == 195 and (w.labels[:10] >= 0).all() and (w.labels[100:105] == -1).all()


def test_quantile_bins_match_pandas_qcut():
    v = np.random.default_rng(1).gamma(2.0, size=1000)
    labels, names = bin_continuous(v, 5, "quantile")
    ref = pd.qcut(v, 5, labels=False)
    np.testing.assert_array_equal(labels, ref)
    assert len(names) == 5 and names[0].startswith("[") and names[-1].endswith("]")
    assert np.bincount(labels).tolist() == [200] * 5


def test_uniform_bins_are_equal_width_with_edges_in_names():
    v = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 10.0, np.nan])
    labels, names = bin_continuous(v, 2, "uniform")
    assert labels.tolist() == [0, 0, 0, 0, 0, 1, -1]
    assert names == ("[0, 5)", "[5, 10]")


def test_forced_kinds_and_errors():
    df = table()
    ts = build_tasks(df, "label", tasks=["weight"], categorical=[], continuous=["weight"], bins=3)
    assert ts.tasks[0].kind == "binned" and ts.tasks[0].n_classes == 3
    with pytest.raises(WscaInputError, match="'nope' not in metadata"):
        build_tasks(df, "label", tasks=["nope"])
    with pytest.raises(WscaInputError, match="--bins must be an integer from 2 to 50"):
        build_tasks(df, "label", bins=1)
    with pytest.raises(WscaInputError, match="--primary column 'const'"):
        build_tasks(df, "const")
    with pytest.raises(WscaInputError, match="expected a number to bin"):
        build_tasks(df, "label", tasks=["scanner"], continuous=["scanner"])
