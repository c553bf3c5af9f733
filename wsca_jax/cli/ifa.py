"""``wsca ifa``: integrated feature analysis of a trained run or stored feature maps."""

from __future__ import annotations

from .common import add_parser, csv, run_dataset

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
    f.add_argument("--layer", default="last", help="'last' (the maps before pooling), or a submodule: a name used "
                                                   "once (conv1b) or its path (backbone/stage1a/Conv_0)")
    f.add_argument("--method", default="cam", choices=["cam", "gradcam", "gradxact"])
    f.add_argument("--target", default="predicted", help="predicted (default), true, or a class index")
    f.add_argument("--fractions", default="0.05,0.1,0.15,0.25,0.5,1", help="channel fractions for the decomposition")
    f.add_argument("--random-masks", type=int, default=20, help="random channel masks per fraction (default 20)")
    f.add_argument("--tasks", help="metadata columns to locate (default: every other column with 2-20 classes)")
    f.add_argument("--region", help="y0:y1,x0:x1 image pixels: map mass inside it per class (a known confounder)")
    f.add_argument("--all-samples", action="store_true", help="profiles over all samples (default: correctly classified)")
    f.add_argument("--mapping", default="linear", choices=["linear", "tanh"], help="common-scale mapping")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--data-dir")
    f.add_argument("--tfds-dir")
    f.add_argument("--no-figures", action="store_true")
    f.add_argument("--quiet", action="store_true", help="(no progress is shown; accepted for symmetry)")
    f.add_argument("--out", required=True, help="output folder")
    f.set_defaults(handler=run)


def run(args) -> int:
    from ..errors import require
    from ..ifa import check_region, ifa_for_maps, ifa_for_run, parse_region
    from ..io import check_out_dir
    from ..report import write_ifa_outputs
    from ..training.train import read_run_json

    check_out_dir(args.out)
    require((args.run is None) != (args.embeddings is None), "wsca ifa needs --run or --embeddings (one of them)")
    rec = read_run_json(args.run) if args.run else None
    try:
        fractions = [float(v) for v in args.fractions.split(",")]
    except ValueError:
        fractions = []
    require(fractions and all(0 < v <= 1 for v in fractions),
            f"--fractions {args.fractions!r}: expected comma-separated numbers in (0, 1]")
    require(args.random_masks >= 1, f"--random-masks must be at least 1, found {args.random_masks}")
    target = None if args.target == "predicted" else "true" if args.target == "true" else None
    if args.target not in ("predicted", "true"):
        require(args.target.lstrip("-").isdigit(), f"--target {args.target!r}: expected predicted, true or a class index")
        target = int(args.target)
        if rec is not None:
            n_cls = len(rec["tasks"][0]["classes"])
            require(0 <= target < n_cls, f"--target {target}: the primary head has classes 0..{n_cls - 1}")
    region = parse_region(args.region)
    kw = dict(tasks=csv(args.tasks) or None, method=args.method, target=target, fractions=fractions,
              n_random=args.random_masks, correct_only=not args.all_samples, region=region, mapping=args.mapping,
              seed=args.seed)
    if rec is None:
        given = [f"--{k.replace('_', '-')}" for k in ("split", "checkpoint", "data_dir", "tfds_dir")
                 if getattr(args, k) is not None]
        require(not given, f"{', '.join(given)}: go with --run (an --embeddings file is one split of one checkpoint)")
        out, arrays, images = ifa_for_maps(args.embeddings, args.primary, layer=args.layer, **kw)
    else:
        require(args.primary is None, "--primary goes with --embeddings (a run's analysed head is its primary task)")
        if region is not None:
            check_region(region, *rec["image_shape"][:2])
        ds = run_dataset(args, rec)
        out, arrays, images = ifa_for_run(args.run, ds, args.split or "test", args.checkpoint or "best", args.layer, **kw)
    write_ifa_outputs(out, arrays, images, args.out, figures=not args.no_figures)
    for c, r in out["consistency"]["unscaled"]["pearson_r"].items():
        print(f"CAM-logit consistency, class {c}: r = {'n/a' if r is None else f'{r:.4f}'}")
    print(f"smallest sufficient channel fraction: {out['smallest_sufficient_fraction']}")
    for t, c in out.get("confounders", {}).items():
        print(f"{t}: {len(c['channels'])} channels carry it; decision share {c['decision_share']:.3f} "
              f"(random sets {c['random_share_mean']:.3f}, p = {c['p_value']:.3f})")
    print(f"wrote {args.out}/ifa.json and report.html")
    return 0
