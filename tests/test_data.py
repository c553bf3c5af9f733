"""Data layouts (tiny fixtures written here) and shortcut-induction index sets."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from wsca_jax import WscaInputError
from wsca_jax.training.data import (ARTEFACT_KINDS, artefact_indices, balanced_indices, biased_indices, group_split, load_busbra_npz,
                           load_busbra_release, load_dataset, load_generic_npz, load_image_folder,
                           load_medmnist_npz, load_waterbirds_npz, stamp_artefact)


def test_generic_npz_with_and_without_split(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (30, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=imgs, label=np.arange(30) % 2, scanner=np.array(["a", "b", "c"] * 10),
             group=np.repeat(np.arange(15), 2))
    ds = load_generic_npz(str(tmp_path / "a.npz"))
    assert ds.images.shape == (30, 8, 8, 1) and set(ds.columns) == {"label", "scanner"}
    for g in np.unique(ds.group):                          # seeded split keeps patients whole
        assert len(np.unique(ds.split[ds.group == g])) == 1
    assert set(np.unique(ds.split)) == {0, 1, 2}
    np.savez(tmp_path / "b.npz", images=np.zeros((4, 8, 8, 3), np.uint8), y=np.arange(4), split=np.array([0, 0, 1, 2]))
    assert load_dataset(str(tmp_path / "b.npz")).split.tolist() == [0, 0, 1, 2]
    np.savez(tmp_path / "c.npz", images=np.zeros((4, 8, 8), np.float32))
    with pytest.raises(WscaInputError, match="uint8"):
        load_generic_npz(str(tmp_path / "c.npz"))


def test_busbra_npz_and_release_layouts(tmp_path):
    n = 10
    rng = np.random.default_rng(1)
    case = np.repeat(np.arange(5), 2)
    np.savez(tmp_path / "busbra_64.npz", images=rng.integers(0, 255, (n, 64, 64), dtype=np.uint8),
             malignant=np.arange(n) % 2, birads=np.full(n, 4), device=np.array(["GE"] * n), side=np.array(["left"] * n),
             histology=np.array(["x"] * n), case=case, fold5=case % 5 + 1)
    ds = load_busbra_npz(str(tmp_path / "busbra_64.npz"))
    assert ds.split.tolist() == [2, 2, 1, 1, 0, 0, 0, 0, 0, 0]
    assert load_dataset("busbra", str(tmp_path)).images.shape == (10, 64, 64, 1)

    rel = tmp_path / "BUSBRA"
    (rel / "Images").mkdir(parents=True)
    ids = [f"bus_{i // 2 + 1:04d}-{'lr'[i % 2]}" for i in range(n)]
    for i, ident in enumerate(ids):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50), dtype=np.uint8)).save(rel / "Images" / f"{ident}.png")
    pd.DataFrame({"ID": ids, "Case": case + 1, "Histology": "fibroadenoma",
                  "Pathology": ["benign", "malignant"] * 5, "BIRADS": [3, 4] * 5, "Device": "GE",
                  "Width": 50, "Height": 40, "Side": ["left", "right"] * 5, "BBOX": "[0, 0, 1, 1]"}
                 ).to_csv(rel / "bus_data.csv", index=False)
    pd.DataFrame({"ID": ids, "kFold": case % 5 + 1}).to_csv(rel / "5-fold-cv.csv", index=False)
    ds = load_dataset(str(rel))
    assert ds.images.shape == (10, 64, 64, 1) and ds.columns["malignant"].tolist() == [0, 1] * 5
    assert ds.split.tolist() == [2, 2, 1, 1, 0, 0, 0, 0, 0, 0]
    os.remove(rel / "Images" / f"{ids[3]}.png")
    with pytest.raises(WscaInputError, match="not found"):
        load_busbra_release(str(rel))


def test_waterbirds_and_medmnist(tmp_path):
    np.savez(tmp_path / "wb.npz", images=np.zeros((6, 32, 32, 3), np.uint8), y=np.array([0, 1] * 3),
             place=np.array([0, 0, 1, 1, 0, 1]), split=np.array([0, 0, 1, 1, 2, 2]))
    wb = load_waterbirds_npz(str(tmp_path / "wb.npz"))
    assert wb.images.shape[-1] == 3 and wb.select_split("test").columns["place"].tolist() == [0, 1]
    parts = {f"{s}_images": np.zeros((k, 28, 28), np.uint8) for s, k in (("train", 5), ("val", 2), ("test", 3))}
    parts |= {f"{s}_labels": np.ones((k, 1), np.uint8) for s, k in (("train", 5), ("val", 2), ("test", 3))}
    np.savez(tmp_path / "breastmnist.npz", **parts)
    mm = load_medmnist_npz(str(tmp_path / "breastmnist.npz"))
    assert mm.images.shape == (10, 28, 28, 1) and np.bincount(mm.split).tolist() == [5, 2, 3]


def test_image_folder(tmp_path):
    rng = np.random.default_rng(2)
    files = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        files.append(f"im{i}.png")
    pd.DataFrame({"file": files, "label": [0, 1] * 3, "site": list("aabbcc"),
                  "split": ["train"] * 4 + ["val", "test"]}).to_csv(tmp_path / "metadata.csv", index=False)
    ds = load_image_folder(str(tmp_path))
    assert ds.images.shape == (6, 12, 12, 3) and ds.split.tolist() == [0, 0, 0, 0, 1, 2]
    assert set(ds.columns) == {"label", "site"}


def test_group_split_fractions():
    s = group_split(np.repeat(np.arange(100), 3), seed=0)
    assert np.bincount(s).tolist() == [210, 45, 45]


def grid(n_per=(40, 30, 50, 60, 45, 35), seed=0):
    """Rows in a 2-class x 3-value grid with the given cell sizes."""
    labels, conf = [], []
    for i, m in enumerate(n_per):
        labels += [i // 3] * m
        conf += [i % 3] * m
    perm = np.random.default_rng(seed).permutation(len(labels))
    return np.array(labels)[perm], np.array(conf)[perm]


def cell_counts(labels, conf, idx):
    return np.array([[np.sum((labels[idx] == c) & (conf[idx] == v)) for v in range(3)] for c in range(2)])


def test_balanced_and_biased_cell_counts():
    y, s = grid()
    assert (cell_counts(y, s, balanced_indices(y, s)) == 30).all()
    assert (cell_counts(y, s, balanced_indices(y, s, per_cell=10)) == 10).all()
    np.testing.assert_array_equal(cell_counts(y, s, biased_indices(y, s, 0.0)), np.full((2, 3), 30))
    np.testing.assert_array_equal(cell_counts(y, s, biased_indices(y, s, 0.5)), [[30, 15, 15], [15, 30, 15]])
    np.testing.assert_array_equal(cell_counts(y, s, biased_indices(y, s, 1.0)), [[30, 0, 0], [0, 30, 0]])
    np.testing.assert_array_equal(
        cell_counts(y, s, biased_indices(y, s, 0.8, majority={0: 2, 1: 2}, majority_count=35, per_cell=20)),
        [[4, 4, 35], [4, 4, 35]])
    idx = biased_indices(y, s, 0.5)
    assert len(np.unique(idx)) == len(idx)
    with pytest.raises(WscaInputError, match="strength"):
        biased_indices(y, s, 1.5)


def test_artefact_stamping_changes_only_selected_rows():
    y = np.array([0] * 50 + [1] * 50)
    mask = artefact_indices(y, {1: 0.6, 0: 0.1}, seed=3)
    assert mask[y == 1].sum() == 30 and mask[y == 0].sum() == 5
    imgs = np.random.default_rng(4).integers(20, 200, (100, 16, 16, 1), dtype=np.uint8)
    for kind in ARTEFACT_KINDS:
        out = stamp_artefact(imgs, mask, kind)
        changed = (out != imgs).reshape(100, -1).any(1)
        assert (changed == mask).all() and out.dtype == np.uint8


def test_tfds_array_record_round_trip(tmp_path):
    import sys
    from wsca_jax.training.data.tfds_builder import build_tfds, load_tfds
    rng = np.random.default_rng(5)
    n = 24
    from wsca_jax.training.data import ImageDataset
    scanner = np.array(["GE", "Toshiba", None] * 8, dtype=object)
    ds = ImageDataset("toy", rng.integers(0, 255, (n, 8, 8, 1), dtype=np.uint8),
                      {"label": rng.integers(0, 2, n), "age": rng.normal(50, 9, n), "scanner": scanner},
                      np.array([0, 0, 1, 2] * 6, np.int8), np.repeat(np.arange(12), 2))
    path = build_tfds(ds, str(tmp_path / "tfds"))
    assert any(".array_record-" in f for f in os.listdir(path))
    back = load_tfds(path)
    np.testing.assert_array_equal(back.images, ds.images)
    np.testing.assert_array_equal(back.split, ds.split)
    np.testing.assert_array_equal(back.group, ds.group)
    np.testing.assert_array_equal(back.columns["label"], ds.columns["label"])
    np.testing.assert_allclose(back.columns["age"], ds.columns["age"], rtol=1e-6)
    assert list(back.columns["scanner"]) == list(scanner)
    assert "tensorflow" not in sys.modules
    assert build_tfds(ds, str(tmp_path / "tfds")) == path              # same content: reused


def test_confounded_design_keeps_sizes_and_moves_the_mix():
    from wsca_jax.training.data import confounded_indices
    from wsca_jax.errors import WscaInputError
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 3000)
    conf = rng.choice(np.array(["a", "b", "c"]), 3000)
    base = {"a": 0.45, "b": 0.45, "c": 0.10}
    sizes = {0: 300, 1: 150}
    shares = []
    for s in (0.0, 0.5, 1.0):
        ix = confounded_indices(labels, conf, s, {0: "a", 1: "b"}, base, sizes, seed=1)
        assert len(np.unique(ix)) == len(ix) == 450
        assert (labels[ix] == 0).sum() == 300
        shares.append(((conf[ix] == "b") & (labels[ix] == 1)).sum() / 150)
    np.testing.assert_allclose(shares, [0.45, 0.725, 1.0], atol=0.01)
    with pytest.raises(WscaInputError, match="needs"):
        confounded_indices(labels, conf, 1.0, {0: "a", 1: "b"}, base, {0: 2000, 1: 10})
    # fixed marginals: the confounder's totals (and the class sizes) stay while the association grows
    totals, assoc = [], []
    for s in (0.0, 0.25, 0.5, 0.75, 0.9):
        ix = confounded_indices(labels, conf, s, {0: "a", 1: "b"}, base, sizes, seed=1, fixed_marginals=True)
        assert len(ix) == 450 and (labels[ix] == 0).sum() == 300
        totals.append([(conf[ix] == v).sum() for v in "abc"])
        assoc.append(((conf[ix] == "b") & (labels[ix] == 1)).sum() / 150)
    assert all(abs(t - u) <= 2 for row in totals for t, u in zip(row, [202.5, 202.5, 45]))
    assert np.all(np.diff(assoc) > 0) and assoc[0] == pytest.approx(0.45, abs=0.01)
