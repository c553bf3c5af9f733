"""Realistic example inputs for `wsca analyze`: PCA features of BUS-BRA pixels + its metadata.

Reads ``busbra_64.npz`` from ``--data-dir`` (default: $WSCA_DATA_DIR, else ../shared/data) and
writes, into ``--out``:
  * ``embeddings.npy`` (1875, 128): the first 128 principal components of the 64x64 pixels (scaled
    to [0, 1]) -- a fixed, untrained image representation, the kind of embedding in which the
    scanner is strongly encoded (vendor UI, burned-in text, intensity profile);
  * ``metadata.csv``: malignant (primary), device (scanner), side (view suffix), birads, and case
    (patient id, the group column).

Nothing derived from the data is committed: the outputs go under runs/ (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from wsca_jax.training.data import data_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--components", type=int, default=128)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    path = os.path.join(data_dir(args.data_dir), "busbra_64.npz")
    if not os.path.exists(path):
        print(f"busbra_pixel_features: error: {path} not found; set WSCA_DATA_DIR or --data-dir to the folder "
              "holding busbra_64.npz", file=sys.stderr)
        return 2
    with np.load(path, allow_pickle=False) as d:
        images = d["images"].reshape(len(d["images"]), -1).astype(np.float32) / 255.0
        meta = pd.DataFrame({"malignant": d["malignant"], "device": d["device"], "side": d["side"],
                             "birads": d["birads"], "case": d["case"]})
    emb = PCA(n_components=args.components, random_state=0).fit_transform(images).astype(np.float32)
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "embeddings.npy"), emb)
    meta.to_csv(os.path.join(args.out, "metadata.csv"), index=False)
    print(f"wrote {args.out}/embeddings.npy {emb.shape} and metadata.csv "
          f"({', '.join(meta.columns)}) from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
