"""tensorflow-datasets builders in the array_record format, without TensorFlow.

Any :class:`~wsca_jax.training.data.ImageDataset` (BUS-BRA, Waterbirds, MedMNIST, a generic ``.npz`` or an
image folder) is written once as a TFDS dataset -- images, every metadata column and the
patient group as features; train / val / test splits as the reader made them (patient-grouped)
-- and read back through ``tfds`` data sources. The builder's config name carries a fingerprint
of the content, so a changed source is rebuilt instead of silently reused.

Features: ``image`` (``Tensor`` uint8, zlib-compressed; TFDS's ``Image`` feature would need
TensorFlow to encode arrays), ``index`` (the row in the source), ``group``, and one feature per
column (``Scalar`` int64 / float32, or ``Text``; missing text is stored as "").
"""

from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

from ...errors import require
from .sources import SPLITS, ImageDataset

SPLIT_NAMES = {v: k for k, v in SPLITS.items()}


def fingerprint(ds: ImageDataset) -> str:
    """Short content hash of images, columns, split and group."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(ds.images).tobytes())
    for k in sorted(ds.columns):
        h.update(k.encode())
        h.update(np.asarray(ds.columns[k]).astype(str).tobytes())
    h.update(ds.split.tobytes())
    h.update(ds.group.tobytes())
    return h.hexdigest()[:12]


def _column_kind(v: np.ndarray) -> str:
    if np.issubdtype(v.dtype, np.integer) or v.dtype == bool:
        return "int"
    if np.issubdtype(v.dtype, np.floating):
        return "float"
    return "text"


@functools.lru_cache(maxsize=None)
def _builder_class():
    """The builder and config classes (defined once: TFDS registers builders by name)."""
    import tensorflow_datasets as tfds

    class WscaImagesConfig(tfds.core.BuilderConfig):
        def __init__(self, *, dataset: ImageDataset | None = None, **kw):
            super().__init__(**kw)
            self.dataset = dataset

    class WscaImages(tfds.core.GeneratorBasedBuilder):
        """Images + metadata + patient groups of one :class:`ImageDataset`."""

        VERSION = tfds.core.Version("1.0.0")
        code_path = None            # defined inside a package: skip tfds's source-path lookup

        def _info(self):
            ds = self.builder_config.dataset
            feats = {"image": tfds.features.Tensor(shape=ds.images.shape[1:], dtype=np.uint8, encoding="zlib"),
                     "index": tfds.features.Scalar(dtype=np.int64),
                     "group": tfds.features.Scalar(dtype=np.int64)}
            for k, v in ds.columns.items():
                kind = _column_kind(np.asarray(v))
                feats[k] = (tfds.features.Scalar(dtype=np.int64) if kind == "int" else
                            tfds.features.Scalar(dtype=np.float32) if kind == "float" else tfds.features.Text())
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(feats),
                                         description=f"wsca_jax images: {ds.name}", disable_shuffling=True)

        def _split_generators(self, dl_manager):
            ds = self.builder_config.dataset
            return {SPLIT_NAMES[s]: self._generate_examples(np.flatnonzero(ds.split == s))
                    for s in np.unique(ds.split)}

        def _generate_examples(self, rows):
            ds = self.builder_config.dataset
            kinds = {k: _column_kind(np.asarray(v)) for k, v in ds.columns.items()}
            for i in rows:
                ex = {"image": ds.images[i], "index": int(i), "group": int(ds.group[i])}
                for k, v in ds.columns.items():
                    x = v[i]
                    ex[k] = ("" if x is None or (isinstance(x, float) and np.isnan(x)) else str(x)) \
                        if kinds[k] == "text" else x
                yield int(i), ex

    return WscaImages, WscaImagesConfig


def build_tfds(ds: ImageDataset, data_dir: str) -> str:
    """Write ``ds`` as an array_record TFDS dataset under ``data_dir`` (once per content).

    Returns:
      the prepared dataset's directory (``data_dir/wsca_images/<name>-<hash>/1.0.0``).
    """
    import tensorflow_datasets as tfds
    from absl import logging as absl_logging

    tfds.disable_progress_bar()
    absl_logging.set_verbosity(min(absl_logging.get_verbosity(), absl_logging.ERROR))   # quieter, never louder
    Builder, Config = _builder_class()
    name = f"{''.join(c if c.isalnum() else '_' for c in ds.name)}-{fingerprint(ds)}"
    b = Builder(config=Config(name=name, dataset=ds), data_dir=data_dir, file_format="array_record")
    if not b.is_prepared():
        # TFDS prints "Downloading and preparing dataset Unknown size ..." to stdout; our callers
        # say what they do themselves, and --quiet must mean quiet
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            b.download_and_prepare()
    return str(b.data_dir)


def tfds_dir(arg: str | None = None) -> str:
    """Where prepared TFDS datasets live: ``arg``, ``$WSCA_TFDS_DIR``, or ``~/.cache/wsca_jax/tfds``."""
    return arg or os.environ.get("WSCA_TFDS_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "wsca_jax", "tfds")


def prepare_dataset(source: str, data_dir_arg: str | None = None, tfds_dir_arg: str | None = None,
                    seed: int = 0, check=None) -> ImageDataset:
    """Read ``source`` (a dataset name or path), store it as an array_record TFDS dataset (once per
    content) and return it as read back from TFDS -- the path ``wsca train`` and ``wsca embed`` take.

    ``check(ds)``: called on the source before anything is written (bad columns fail in a second)."""
    from .sources import load_dataset

    ds = load_dataset(source, data_dir_arg, seed=seed)
    if check is not None:
        check(ds)
    return load_tfds(build_tfds(ds, tfds_dir(tfds_dir_arg)), name=ds.name)


def load_tfds(path: str, name: str | None = None) -> ImageDataset:
    """Read a dataset written by :func:`build_tfds` back (all splits) into an ImageDataset."""
    import tensorflow_datasets as tfds

    require(os.path.isdir(path), f"TFDS dataset folder not found: {path}")
    b = tfds.builder_from_directory(path)
    feats = b.info.features
    cols = [k for k in feats.keys() if k not in ("image", "index", "group")]
    images, index, group, split, values = [], [], [], [], {k: [] for k in cols}
    for sname in b.info.splits.keys():
        src = b.as_data_source(split=sname)
        recs = src.__getitems__(list(range(len(src))))
        images.append(np.stack([r["image"] for r in recs]))
        index.append(np.array([r["index"] for r in recs]))
        group.append(np.array([r["group"] for r in recs]))
        split.append(np.full(len(recs), SPLITS[sname], np.int8))
        for k in cols:
            values[k] += [r[k] for r in recs]
    order = np.argsort(np.concatenate(index))
    columns = {}
    for k in cols:
        v = values[k]
        if isinstance(feats[k], tfds.features.Text):
            arr = np.array([x.decode() if isinstance(x, bytes) else x for x in v], dtype=object)
            arr[arr == ""] = None
        else:
            arr = np.asarray(v)
        columns[k] = arr[order]
    return ImageDataset(name or b.info.description.replace("wsca_jax images: ", ""),
                        np.concatenate(images)[order], columns, np.concatenate(split)[order],
                        np.concatenate(group)[order])
