"""``wsca ifa``: integrated feature analysis of a trained run or stored feature maps. The settings
flags are generated from :class:`~wsca_jax.ifa.config.IfaConfig`."""

from __future__ import annotations

from ..ifa.config import IfaConfig
from .common import add_config_arguments, add_parser, config_from_args, run_dataset

CONFIG = IfaConfig                      # the settings flags below are generated from it

EXAMPLE = """\
example:
  wsca ifa --run runs/busbra_mt --split test --method cam --region 0:8,0:64 --out runs/busbra_mt/ifa

  CAMs (or Grad-CAM, gradient x activation) of the primary head for every image of the split,
  channel importance profiles, the common intensity scale, feature decomposition against random
  channel sets, and for every metadata column the channels that carry it and the decision's share
  on them. Writes ifa.json, ifa_importance.npz, report.html and figures.
"""


def register(sub) -> None:
    f = add_parser(sub, "ifa", help="integrated feature analysis of a trained run: where the decision and the metadata live", example=EXAMPLE)
    f.add_argument("--run", help="a wsca train run folder")
    f.add_argument("--embeddings", help="instead of --run: a wsca embed --feature-maps .npz (CAM only: no network, "
                                        "so no gradients, earlier layers or --region)")
    f.add_argument("--primary", help="with --embeddings: the analysed head (default: the file's only head_ array)")
    f.add_argument("--split", choices=["train", "val", "test"], help="with --run: the split analysed (default test)")
    f.add_argument("--checkpoint", choices=["best", "latest"], help="with --run: the checkpoint (default best)")
    f.add_argument("--data-dir", help="with --run: folder with the named datasets")
    f.add_argument("--tfds-dir", help="with --run: where the array_record TFDS copy is prepared "
                                      "(default $WSCA_TFDS_DIR or ~/.cache/wsca_jax/tfds)")
    add_config_arguments(f, CONFIG, group="IFA settings (wsca_jax.ifa.IfaConfig)")
    f.add_argument("--no-figures", action="store_true", help="write ifa.json, ifa_importance.npz and report.html "
                                                             "without PNG figures")
    f.add_argument("--quiet", action="store_true", help="(no progress is shown; accepted for symmetry)")
    f.add_argument("--out", required=True, help="output folder")
    f.set_defaults(handler=run)


def run(args) -> int:
    from ..errors import require
    from ..ifa import check_region, ifa_for_maps, ifa_for_run
    from ..io import check_out_dir
    from ..report import write_ifa_outputs
    from ..training.train import read_run_json

    check_out_dir(args.out)
    require((args.run is None) != (args.embeddings is None), "wsca ifa needs --run or --embeddings (one of them)")
    config = config_from_args(CONFIG, args, tasks=args.tasks or None)     # every setting checked before reading
    rec = read_run_json(args.run) if args.run else None
    if rec is None:
        given = [f"--{k.replace('_', '-')}" for k in ("split", "checkpoint", "data_dir", "tfds_dir")
                 if getattr(args, k) is not None]
        require(not given, f"{', '.join(given)}: go with --run (an --embeddings file is one split of one checkpoint)")
        out, arrays, images = ifa_for_maps(args.embeddings, args.primary, config)
    else:
        require(args.primary is None, "--primary goes with --embeddings (a run's analysed head is its primary task)")
        if isinstance(config.target_class, int):
            n_cls = len(rec["tasks"][0]["classes"])
            require(0 <= config.target_class < n_cls,
                    f"--target {config.target_class}: the primary head has classes 0..{n_cls - 1}")
        if config.region is not None:
            check_region(config.region, *rec["image_shape"][:2])
        ds = run_dataset(args, rec)
        out, arrays, images = ifa_for_run(args.run, ds, args.split or "test", args.checkpoint or "best", config)
    write_ifa_outputs(out, arrays, images, args.out, figures=not args.no_figures)
    for c, r in out["consistency"]["unscaled"]["pearson_r"].items():
        print(f"CAM-logit consistency, class {c}: r = {'n/a' if r is None else f'{r:.4f}'}")
    print(f"smallest sufficient channel fraction: {out['smallest_sufficient_fraction']}")
    for t, c in out.get("confounders", {}).items():
        print(f"{t}: {len(c['channels'])} channels carry it; decision share {c['decision_share']:.3f} "
              f"(random sets {c['random_share_mean']:.3f}, p = {c['p_value']:.3f})")
    print(f"wrote {args.out}/ifa.json and report.html")
    return 0
