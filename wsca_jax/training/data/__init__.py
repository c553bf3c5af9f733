"""Image datasets with metadata, patient-grouped splits, and shortcut induction.

Layer 1 of the pipeline (data -> models -> train -> embed -> ...). Loaders return an
:class:`ImageDataset`; shortcut-induction functions return index sets.
"""

from .sources import (ImageDataset, data_dir, group_split, load_busbra_npz, load_busbra_release,
                      load_dataset, load_digits_dataset, load_generic_npz, load_image_folder, load_medmnist_npz,
                      load_waterbirds_npz)
from .shortcuts import ARTEFACT_KINDS, artefact_indices, balanced_indices, biased_indices, confounded_indices, stamp_artefact
from .tfds_builder import build_tfds, load_tfds, prepare_dataset

__all__ = ["ARTEFACT_KINDS", "ImageDataset", "data_dir", "group_split", "load_busbra_npz", "load_busbra_release",
           "load_dataset", "load_digits_dataset", "load_generic_npz", "load_image_folder", "load_medmnist_npz",
           "load_waterbirds_npz", "artefact_indices", "balanced_indices", "biased_indices", "confounded_indices",
           "stamp_artefact", "build_tfds", "load_tfds", "prepare_dataset"]
