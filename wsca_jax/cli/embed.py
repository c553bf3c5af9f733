"""``wsca embed``: embeddings, heads and metadata of a trained run -> ``.npz``."""

from __future__ import annotations

from .common import add_parser, run_dataset

EXAMPLE = """\
example:
  wsca embed --run runs/busbra_mt --split train --out emb.npz [--feature-maps]

  writes embeddings (N, D), head_<task> (C, D) for every trained head, the metadata columns and
  'group'; `wsca analyze --embeddings emb.npz --primary COLUMN` then needs no other flag.

  wsca embed --run runs/busbra_mt --dataset scanner_swapped.npz --split train --out cf.npz
  wsca analyze --embeddings emb.npz --primary malignant --counterfactual device=cf.npz --out res

  (cf.npz: the same rows with the device intervened on, embedded by the same run: the decision's
  measured response to the attribute, beside the statistics that estimate it)
"""


def register(sub) -> None:
    e = add_parser(sub, "embed", help="embeddings, heads and metadata of a trained run -> .npz", example=EXAMPLE)
    e.add_argument("--run", required=True, help="run folder written by `wsca train` (run.json and ckpt/)")
    e.add_argument("--dataset", help="embed this image set instead of the run's own (a named dataset or an .npz/folder "
                                     "as `wsca train --dataset` reads; the run's image shape): a counterfactual copy "
                                     "of the rows for `wsca analyze --counterfactual`, or an external site")
    e.add_argument("--split", default="train", choices=["train", "val", "test"],
                   help="rows to embed (WSC reads the training rows)")
    e.add_argument("--checkpoint", default="best", choices=["best", "latest"],
                   help="best: the epoch with the best validation AUROC of the primary; latest: the last epoch")
    e.add_argument("--data-dir", help="folder with the named datasets, if the run was trained on one "
                                      "(default $WSCA_DATA_DIR, else ../shared/data)")
    e.add_argument("--tfds-dir", help="where the array_record TFDS copy is prepared "
                                      "(default $WSCA_TFDS_DIR or ~/.cache/wsca_jax/tfds)")
    e.add_argument("--feature-maps", action="store_true", help="also store the last feature maps (for CAMs)")
    e.add_argument("--out", required=True, help=".npz path (embeddings, heads, metadata columns and 'group')")
    e.set_defaults(handler=run)


def run(args) -> int:
    from ..training.embed import embed, save_embeddings
    from ..io import check_out_file
    from ..training.train import load_run, read_run_json

    check_out_file(args.out, ".npz", "--out")
    rec = read_run_json(args.run)
    loaded = load_run(args.run, args.checkpoint)      # verify the checkpoint before preparing any data
    ds = run_dataset(args, rec)
    arrays = embed(args.run, ds, args.split, args.checkpoint, args.feature_maps, loaded=loaded)
    save_embeddings(args.out, arrays)
    print(f"wrote {args.out}: embeddings {arrays['embeddings'].shape}, heads "
          f"{', '.join(k[5:] for k in arrays if k.startswith('head_'))}")
    return 0
