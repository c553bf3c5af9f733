"""Dataset readers: BUS-BRA (release folder or ``busbra_64.npz``), Waterbirds, MedMNIST, and
generic layouts (``.npz`` with ``images`` + one array per column, or a folder of images + CSV).

Every reader returns an :class:`ImageDataset`: uint8 images ``(N, H, W, C)``, metadata columns,
a split array (0 train, 1 val, 2 test) and, where known, a group (patient) id. Splits are
patient-grouped: no patient appears in two splits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...errors import WscaInputError, require

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ImageDataset:
    """Images with metadata.

    Attributes:
      name: dataset name.
      images: ``(N, H, W, C)`` uint8.
      columns: ``{name: (N,)}`` labels and metadata (missing values as NaN / None).
      split: ``(N,)`` int8, 0 train / 1 val / 2 test.
      group: ``(N,)`` int64 patient/group id (one id per row when unknown).
    """

    name: str
    images: np.ndarray = field(repr=False)
    columns: dict = field(repr=False)
    split: np.ndarray = field(repr=False)
    group: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "ImageDataset":
        """Rows ``index`` (indices or a boolean mask) of every array."""
        index = np.asarray(index)
        return ImageDataset(self.name, self.images[index], {k: v[index] for k, v in self.columns.items()},
                            self.split[index], self.group[index])

    def select_split(self, split: str | int) -> "ImageDataset":
        s = SPLITS[split] if isinstance(split, str) else int(split)
        return self.subset(self.split == s)

    def metadata(self) -> pd.DataFrame:
        """The columns as a DataFrame (one row per image)."""
        return pd.DataFrame(self.columns)


def data_dir(arg: str | None = None) -> str:
    """``arg``, else ``$WSCA_DATA_DIR``, else ``../shared/data`` beside the repository."""
    if arg:
        return arg
    if os.environ.get("WSCA_DATA_DIR"):
        return os.environ["WSCA_DATA_DIR"]
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "..", "shared", "data"))


def group_split(groups: np.ndarray, seed: int = 0, fractions=(0.7, 0.15, 0.15)) -> np.ndarray:
    """Seeded split of groups into train/val/test ``(N,)`` int8 (whole groups per split)."""
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(uniq))
    cuts = np.cumsum(np.asarray(fractions) / np.sum(fractions))[:-1] * len(uniq)
    assign = np.zeros(len(uniq), np.int8)
    assign[order[int(round(cuts[0])):int(round(cuts[1]))]] = 1
    assign[order[int(round(cuts[1])):]] = 2
    return assign[inv.ravel()]


def _nhwc(images: np.ndarray, where: str) -> np.ndarray:
    images = np.asarray(images)
    require(images.dtype == np.uint8, f"{where}: images must be uint8, found {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    require(images.ndim == 4, f"{where}: images must be (N, H, W) or (N, H, W, C), found shape {images.shape}")
    return images


def _open_npz(path: str):
    require(os.path.isfile(path), f"dataset file not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise WscaInputError(f"{path}: cannot be read as .npz ({type(e).__name__}: {str(e)[:160]})") from None


def _member(npz, key: str, path: str) -> np.ndarray:
    """One array of an open ``.npz``; an object array (needs pickle) or a damaged member is one line."""
    try:
        return npz[key]
    except ValueError as e:
        if "pickle" in str(e):
            raise WscaInputError(f"{path}: array {key!r} holds Python objects (needs pickle, refused); store text "
                                 "as fixed-width strings (np.array(..., dtype=str))") from None
        raise WscaInputError(f"{path}: array {key!r} is damaged ({type(e).__name__}: {str(e)[:160]})") from None
    except Exception as e:
        raise WscaInputError(f"{path}: array {key!r} is damaged ({type(e).__name__}: {str(e)[:160]})") from None


def load_generic_npz(path: str, seed: int = 0) -> ImageDataset:
    """``.npz`` with ``images`` (N, H, W[, C]) uint8, one array of length N per metadata column,
    optional ``split`` (0/1/2) and ``group`` (patient ids); without ``split`` a seeded group-aware
    70/15/15 split is made."""
    with _open_npz(path) as npz:
        keys = list(npz.keys())
        require("images" in keys, f"{path}: no array named 'images' (found: {', '.join(keys)})")
        d = {k: _member(npz, k, path) for k in keys}
        images = _nhwc(d["images"], path)
        n = len(images)
        require(n > 0, f"{path}: 'images' holds 0 images; expected at least one per split")
        cols = {}
        for k in keys:
            if k in ("images", "split", "group"):
                continue
            a = d[k]
            require(a.ndim == 1 and len(a) == n, f"{path}: array {k!r} has shape {a.shape}, expected ({n},)")
            cols[k] = a
        group = d["group"] if "group" in keys else np.arange(n)
        require(len(group) == n, f"{path}: 'group' has {len(group)} rows, expected {n}")
        if "split" in keys:
            split = d["split"].astype(np.int8)
            require(len(split) == n and set(np.unique(split)) <= {0, 1, 2},
                    f"{path}: 'split' must hold 0 (train), 1 (val), 2 (test) for each of {n} rows")
        else:
            split = group_split(group, seed)
    return ImageDataset(os.path.splitext(os.path.basename(path))[0], images, cols, split,
                        pd.factorize(np.asarray(group))[0].astype(np.int64))


def _busbra_split(fold: np.ndarray, test_fold: int = 1, val_fold: int = 2) -> np.ndarray:
    """Official case-grouped 5-fold CV: one fold test, one val, three train."""
    split = np.zeros(len(fold), np.int8)
    split[fold == val_fold] = 1
    split[fold == test_fold] = 2
    return split


def load_busbra_npz(path: str, test_fold: int = 1, val_fold: int = 2) -> ImageDataset:
    """``busbra_64.npz``: 1,875 images 64x64, split by the official case-grouped folds."""
    with _open_npz(path) as d:
        images = _nhwc(d["images"], path)
        cols = {"malignant": d["malignant"].astype(np.int64), "birads": d["birads"].astype(np.int64),
                "device": d["device"].astype(str), "side": d["side"].astype(str),
                "histology": d["histology"].astype(str)}
        split = _busbra_split(d["fold5"], test_fold, val_fold)
        group = d["case"].astype(np.int64)
    return ImageDataset("busbra", images, cols, split, group)


def load_busbra_release(folder: str, size: int = 64, test_fold: int = 1, val_fold: int = 2,
                        seed: int = 0) -> ImageDataset:
    """The official BUS-BRA release: ``Images/bus_XXXX-{l,r,s}.png``, ``bus_data.csv``
    (``ID, Case, Histology, Pathology, BIRADS, Device, Width, Height, Side, BBOX``) and, when
    present, ``5-fold-cv.csv``; images are resized to ``size`` x ``size`` (bicubic) grayscale."""
    from PIL import Image

    csv = os.path.join(folder, "bus_data.csv")
    require(os.path.isfile(csv), f"BUS-BRA folder {folder}: bus_data.csv not found")
    meta = pd.read_csv(csv)
    need = {"ID", "Case", "Pathology", "BIRADS", "Device", "Side"}
    missing = need - set(meta.columns)
    require(not missing, f"{csv}: missing columns {sorted(missing)} (found: {', '.join(meta.columns)})")
    images = np.zeros((len(meta), size, size, 1), np.uint8)
    for i, ident in enumerate(meta["ID"]):
        p = os.path.join(folder, "Images", f"{ident}.png")
        require(os.path.isfile(p), f"BUS-BRA folder {folder}: image {p} listed in bus_data.csv not found")
        with Image.open(p) as im:
            images[i, ..., 0] = np.asarray(im.convert("L").resize((size, size), Image.BICUBIC))
    cols = {"malignant": (meta["Pathology"].astype(str).str.lower() == "malignant").astype(np.int64).to_numpy(),
            "birads": meta["BIRADS"].to_numpy(), "device": meta["Device"].astype(str).to_numpy(),
            "side": meta["Side"].astype(str).to_numpy()}
    if "Histology" in meta:
        cols["histology"] = meta["Histology"].astype(str).to_numpy()
    group = pd.factorize(meta["Case"])[0].astype(np.int64)
    folds_csv = os.path.join(folder, "5-fold-cv.csv")
    if os.path.isfile(folds_csv):
        f = pd.read_csv(folds_csv)
        fold_col = [c for c in f.columns if c != "ID"][0]
        fold = meta[["ID"]].merge(f, on="ID", how="left")[fold_col].to_numpy()
        require(not pd.isna(fold).any(), f"{folds_csv}: some IDs of bus_data.csv have no fold")
        split = _busbra_split(fold.astype(int), test_fold, val_fold)
    else:
        split = group_split(group, seed)
    return ImageDataset("busbra", images, cols, split, group)


def load_waterbirds_npz(path: str) -> ImageDataset:
    """``waterbirds_32.npz``: RGB 32x32, ``y`` (waterbird) and ``place`` (water background), official split."""
    with _open_npz(path) as d:
        images = _nhwc(d["images"], path)
        cols = {"y": d["y"].astype(np.int64), "place": d["place"].astype(np.int64)}
        split = d["split"].astype(np.int8)
    return ImageDataset("waterbirds", images, cols, split, np.arange(len(images), dtype=np.int64))


def load_medmnist_npz(path: str, name: str | None = None) -> ImageDataset:
    """An official MedMNIST v2 ``.npz`` (``{train,val,test}_images``, ``*_labels``)."""
    with _open_npz(path) as d:
        parts = [(s, d[f"{s}_images"], d[f"{s}_labels"]) for s in ("train", "val", "test")]
    images = _nhwc(np.concatenate([p[1] for p in parts]), path)
    label = np.concatenate([p[2].reshape(len(p[2]), -1)[:, 0] for p in parts]).astype(np.int64)
    split = np.concatenate([np.full(len(p[1]), SPLITS[p[0]], np.int8) for p in parts])
    nm = name or os.path.splitext(os.path.basename(path))[0]
    return ImageDataset(nm, images, {"label": label}, split, np.arange(len(images), dtype=np.int64))


def load_image_folder(folder: str, csv: str | None = None, file_column: str = "file", size: int | None = None,
                      group_column: str | None = None, seed: int = 0) -> ImageDataset:
    """A folder of images plus a CSV with a ``file`` column (relative paths) and metadata columns;
    optional ``split`` (train/val/test or 0/1/2) and group columns."""
    from PIL import Image

    csv = csv or os.path.join(folder, "metadata.csv")
    require(os.path.isfile(csv), f"image folder {folder}: metadata CSV {csv} not found")
    meta = pd.read_csv(csv)
    require(file_column in meta.columns, f"{csv}: no column {file_column!r} naming the image files")
    arrays = []
    for f in meta[file_column]:
        p = os.path.join(folder, str(f))
        require(os.path.isfile(p), f"{csv}: image {p} not found")
        with Image.open(p) as im:
            im = im.convert("L") if im.mode in ("L", "I", "I;16", "1") else im.convert("RGB")
            if size:
                im = im.resize((size, size), Image.BICUBIC)
            arrays.append(np.asarray(im, np.uint8))
    shapes = {a.shape for a in arrays}
    require(len(shapes) == 1, f"{folder}: images differ in shape {sorted(shapes)[:3]}; pass size= to resize")
    images = _nhwc(np.stack(arrays), folder)
    group = meta[group_column].to_numpy() if group_column else np.arange(len(meta))
    if "split" in meta.columns:
        raw = meta["split"]
        split = raw.to_numpy() if pd.api.types.is_numeric_dtype(raw) else raw.astype(str).map(SPLITS).to_numpy()
        require(not pd.isna(split).any(), f"{csv}: 'split' must be train/val/test or 0/1/2")
        split = split.astype(np.int8)
    else:
        split = group_split(group, seed)
    cols = {c: meta[c].to_numpy() for c in meta.columns if c not in (file_column, "split", group_column)}
    return ImageDataset(os.path.basename(os.path.normpath(folder)), images, cols, split,
                        pd.factorize(group)[0].astype(np.int64))


def load_digits_dataset(seed: int = 0, scale: int = 2) -> ImageDataset:
    """scikit-learn's bundled digits (1,797 images 8x8, upscaled ``scale``-fold) as a tiny offline dataset.

    Columns: ``label`` = odd digit (1) vs even (0), ``digit`` 0..9. Split 60/20/20 at random (seeded).
    Used where no real data is available (the demo's fallback, tests).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.kron(d.images, np.ones((scale, scale))) * (255.0 / 16.0)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)[..., None]
    digit = d.target.astype(np.int64)
    group = np.arange(len(images), dtype=np.int64)
    return ImageDataset("digits", images, {"label": digit % 2, "digit": digit},
                        group_split(group, seed, (0.6, 0.2, 0.2)), group)


NAMED_DATASETS = ("busbra", "waterbirds", "breastmnist", "pneumoniamnist")


def load_dataset(name: str, data_dir_arg: str | None = None, seed: int = 0) -> ImageDataset:
    """``busbra | waterbirds | breastmnist | pneumoniamnist`` from the data folder, or a path to a
    generic ``.npz``, a BUS-BRA release folder (holding ``bus_data.csv``) or an image folder."""
    files = {"busbra": ("busbra_64.npz", load_busbra_npz), "waterbirds": ("waterbirds_32.npz", load_waterbirds_npz),
             "breastmnist": ("breastmnist.npz", load_medmnist_npz),
             "pneumoniamnist": ("pneumoniamnist.npz", load_medmnist_npz)}
    if name in files:
        fname, fn = files[name]
        path = os.path.join(data_dir(data_dir_arg), fname)
        require(os.path.isfile(path), f"dataset {name!r}: {path} not found; set WSCA_DATA_DIR or --data-dir")
        return fn(path)
    if os.path.isdir(name):
        if os.path.isfile(os.path.join(name, "bus_data.csv")):
            return load_busbra_release(name)
        return load_image_folder(name, seed=seed)
    require(os.path.isfile(name), f"--dataset {name!r}: not a known dataset "
                                  f"({', '.join(files)}) and no such file or folder")
    require(name.endswith(".npz"), f"--dataset {name}: expected a .npz file or a folder")
    return load_generic_npz(name, seed=seed)
