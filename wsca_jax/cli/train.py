"""``wsca train``: train a Flax backbone with readable heads (Orbax checkpoints)."""

from __future__ import annotations

from ..training.config import TrainConfig
from .common import add_config_arguments, add_parser, config_from_args, csv, progress_enabled

CONFIG = TrainConfig                    # the training settings flags are generated from it

EXAMPLE = """\
example:
  wsca train --dataset busbra --primary malignant --setting multi_task --tasks device,birads \\
      --epochs 8 --out runs/busbra_mt
  wsca embed --run runs/busbra_mt --split train --out runs/busbra_mt/emb_train.npz
  wsca analyze --embeddings runs/busbra_mt/emb_train.npz --primary malignant --out runs/busbra_mt/wsc

  --dataset: busbra | waterbirds | breastmnist | pneumoniamnist (read from --data-dir, else
  $WSCA_DATA_DIR, else ../shared/data), or a path: a .npz with 'images' (N, H, W[, C]) uint8 and one
  array per metadata column (optional 'split' 0/1/2 and 'group'), a BUS-BRA release folder, or a
  folder of images with metadata.csv ('file' column).
"""


def register(sub) -> None:
    t = add_parser(sub, "train", help="train a Flax model with readable heads (Orbax checkpoints)",
                       description="Train a backbone on the primary task (fine_tuned), on the primary and "
                                   "every --tasks column jointly (multi_task), or with a pooling head.", example=EXAMPLE)
    t.add_argument("--dataset", required=True,
                   help="busbra | waterbirds | breastmnist | pneumoniamnist, or a path (.npz, a BUS-BRA folder, or a "
                        "folder of images with metadata.csv; see below)")
    t.add_argument("--data-dir", help="folder with the named datasets (default $WSCA_DATA_DIR, else ../shared/data)")
    t.add_argument("--tfds-dir", help="where the array_record TFDS copy is prepared "
                                      "(default $WSCA_TFDS_DIR or ~/.cache/wsca_jax/tfds)")
    t.add_argument("--primary", required=True, help="primary task column (the first head)")
    t.add_argument("--tasks", help="comma-separated head columns for --setting multi_task (default: none)")
    add_config_arguments(t, CONFIG, group="training settings (wsca_jax.training.TrainConfig)")
    t.add_argument("--split-seed", type=int, default=0,
                   help="train/val/test split of a dataset without a 'split' array (default 0; kept apart from "
                        "--seed so that seeds share one split)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint that verifies")
    t.add_argument("--overwrite", action="store_true", help="replace the wsca run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress (results are still printed)")
    t.add_argument("--out", required=True, help="run folder: new or empty (one training per folder; see --resume, "
                                                "--overwrite)")
    t.set_defaults(handler=run)


def run(args) -> int:
    import os

    from ..training.data import prepare_dataset
    from ..training.data.sources import NAMED_DATASETS
    from ..errors import require
    from ..training.data.tfds_builder import fingerprint
    from ..training.train import check_data, check_run_folder, fit, read_run_json

    cfg = config_from_args(CONFIG, args)                # checked before reading the data: fail in a second, not minutes
    check_run_folder(args.out, args.resume, args.overwrite)
    require(args.split_seed >= 0, f"--split-seed must be an integer >= 0, found {args.split_seed}")
    old = read_run_json(args.out, "--resume:") if args.resume else {}
    split_seed = args.split_seed
    if args.resume and "split_seed" not in old:          # a run from before --split-seed: its split used --seed
        split_seed = int(old["config"].get("seed", 0))
    seen = {}

    def check(d):                                        # on the source, before the TFDS copy is written
        check_data(d, args.primary, csv(args.tasks), cfg)
        seen["fp"] = fingerprint(d)
        was = old.get("data_fingerprint")
        require(was is None or was == seen["fp"], f"--resume: the data differ from those the run was trained on "
                f"(content fingerprint {seen['fp']} != {was}: another file, another split or another --split-seed)")
    ds = prepare_dataset(args.dataset, args.data_dir, args.tfds_dir, seed=split_seed, check=check)
    source = args.dataset if args.dataset in NAMED_DATASETS else os.path.abspath(args.dataset)
    rec = fit(ds, args.primary, csv(args.tasks), cfg, args.out, resume=args.resume, progress=progress_enabled(args),
              dataset_source=source, overwrite=args.overwrite, split_seed=split_seed,
              data_fingerprint=seen["fp"])
    last = rec["history"][-1]["val"] if rec["history"] else {}
    for name, m in last.items():
        print(f"val {name}: accuracy {m['accuracy']:.3f}, balanced {m['balanced_accuracy']:.3f}, "
              f"AUROC {m['auroc'] if m['auroc'] is None else round(m['auroc'], 3)}")
    for name, m in rec.get("test", {}).items():
        print(f"test {name} ({rec['test_checkpoint']} checkpoint): accuracy {m['accuracy']:.3f}, "
              f"balanced {m['balanced_accuracy']:.3f}, AUROC {m['auroc'] if m['auroc'] is None else round(m['auroc'], 3)}")
    if rec.get("throughput_images_per_s"):
        print(f"throughput {rec['throughput_images_per_s']:.0f} images/s; run in {args.out}")
    return 0
