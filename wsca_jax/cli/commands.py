"""The ``wsca`` command line: a thin shell over the Python API.

Exit codes: 0 success, 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

TRAIN_EXAMPLE = """\
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

EMBED_EXAMPLE = """\
example:
  wsca embed --run runs/busbra_mt --split train --out emb.npz [--feature-maps]

  writes embeddings (N, D), head_<task> (C, D) for every trained head, the metadata columns and
  'group'; `wsca analyze --embeddings emb.npz --primary COLUMN` then needs no other flag.
"""


MID_EXAMPLE = """\
example:
  wsca mid --train tr.npz --val va.npz --test te.npz --primary label --groups label,place \\
      --verify place --out runs/wb_mid
  wsca mid --run runs/wb --primary label --groups label,place --out runs/wb_mid

  Mines the validation rows whose ERM logits sit near 0 (--band: the share nearest 0 per predicted
  class), clusters them (k-means, k by silhouette over --k), reports what the band and each cluster
  are enriched for, and retrains the last layer on the validation rows: ERM (the model's head), JTT
  (ERM errors upweighted), MID (band clusters x class balanced against the rest; no group labels),
  MID-oracle (the band's true groups) and DFR (true groups balanced). Worst-group and mean accuracy
  on the test rows with intervals; WSC of every head against --verify columns. Writes mid.json,
  report.html and figures. The .npz files are wsca embed outputs (with logits_<primary>).
"""

IFA_EXAMPLE = """\
example:
  wsca ifa --run runs/busbra_mt --split test --method cam --region 0:8,0:64 --out runs/busbra_mt/ifa

  CAMs (or Grad-CAM, gradient x activation) of the primary head for every image of the split,
  channel importance profiles, the common intensity scale, feature decomposition against random
  channel sets, and for every metadata column the channels that carry it and the decision's share
  on them. Writes ifa.json, ifa_importance.npz, report.html and figures.
"""


REPORT_EXAMPLE = """\
example:
  wsca report --run results/            # re-renders results/report.html from wsca.json
  wsca report --run results/ --out /tmp/wsc.html

  reads wsca.json (and wsca_distributions.npz when present, for the bootstrap and permutation
  histograms) written by `wsca analyze` or `wsca demo`, and writes one self-contained HTML file.
"""

DEMO_EXAMPLE = """\
example:
  wsca demo --out runs/demo

  BUS-BRA (read from --data-dir, else $WSCA_DATA_DIR, else ../shared/data): malignancy models
  trained on a balanced design (scanner independent of the class) and on a biased one (each
  class's majority from one scanner), fine-tuned and multi-task; WSC malignancy x scanner with
  bootstrap intervals and permutation p-values. Without BUS-BRA it uses scikit-learn's bundled
  digits with a stamped artefact as the confounder, and says so. Writes runs/demo/report.html,
  runs/demo/summary.json and one analysis folder per condition.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _csv(s: str | None) -> list[str]:
    return [c.strip() for c in s.split(",") if c.strip()] if s else []


def register_legacy(sub) -> None:
    """train, embed, ifa, mid, report, demo (being moved to one module each)."""
    t = sub.add_parser("train", help="train a Flax model with readable heads (Orbax checkpoints)",
                       description="Train a backbone on the primary task (fine_tuned), on the primary and "
                                   "every --tasks column jointly (multi_task), or with a pooling head.",
                       epilog=TRAIN_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--dataset", required=True)
    t.add_argument("--data-dir", help="folder with the named datasets")
    t.add_argument("--tfds-dir", help="where the array_record TFDS copy is prepared "
                                      "(default $WSCA_TFDS_DIR or ~/.cache/wsca_jax/tfds)")
    t.add_argument("--primary", required=True)
    t.add_argument("--tasks", help="comma-separated head columns for --setting multi_task")
    t.add_argument("--setting", default="fine_tuned", choices=["fine_tuned", "multi_task", "pooling"])
    t.add_argument("--backbone", default="small_cnn", choices=["small_cnn", "resnet18", "sononet"])
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--learning-rate", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0, help="initialisation, batch order and augmentation (default 0)")
    t.add_argument("--split-seed", type=int, default=0,
                   help="train/val/test split of a dataset without a 'split' array (default 0; kept apart from "
                        "--seed so that seeds share one split)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint that verifies")
    t.add_argument("--overwrite", action="store_true", help="replace the wsca run already in --out")
    t.add_argument("--quiet", action="store_true", help="no progress (results are still printed)")
    t.add_argument("--out", required=True, help="run folder: new or empty (one training per folder; see --resume, "
                                                "--overwrite)")
    t.set_defaults(handler=cmd_train)

    e = sub.add_parser("embed", help="embeddings, heads and metadata of a trained run -> .npz",
                       epilog=EMBED_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--run", required=True)
    e.add_argument("--split", default="train", choices=["train", "val", "test"])
    e.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    e.add_argument("--data-dir")
    e.add_argument("--tfds-dir")
    e.add_argument("--feature-maps", action="store_true", help="also store the last feature maps (for CAMs)")
    e.add_argument("--out", required=True, help=".npz path")
    e.set_defaults(handler=cmd_embed)

    f = sub.add_parser("ifa", help="integrated feature analysis of a trained run: where the decision and the metadata live",
                       epilog=IFA_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    f.set_defaults(handler=cmd_ifa)

    m = sub.add_parser("mid", help="find and fix a shortcut without group labels: mid-range mining, last-layer "
                                   "retraining (ERM, JTT, MID, MID-oracle, DFR), worst-group accuracy, WSC after the fix",
                       epilog=MID_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--run", help="a wsca train run folder (embeds its train, val and test splits)")
    m.add_argument("--train", help="wsca embed .npz of the training split (its group shares weight the mean accuracy)")
    m.add_argument("--val", help="wsca embed .npz of the validation split (mining and retraining)")
    m.add_argument("--test", help="wsca embed .npz of the test split (scoring)")
    m.add_argument("--checkpoint", default="best", choices=["best", "latest"])
    m.add_argument("--data-dir")
    m.add_argument("--tfds-dir")
    m.add_argument("--primary", required=True, help="the label column")
    m.add_argument("--groups", help="column(s) whose joint value is the group, e.g. label,place (needed by jtt, "
                                    "mid_oracle, dfr and to score worst-group accuracy)")
    m.add_argument("--band", type=float, default=0.2, help="share of rows nearest 0 per predicted class (default 0.2)")
    m.add_argument("--band-threshold", type=float, help="instead of --band: the rows with |margin| <= this")
    m.add_argument("--min-cell", type=int, default=5,
                   help="MID pseudo-groups (band cluster x class) with fewer validation rows join their class's rest (default 5)")
    m.add_argument("--k", default="2:10", help="cluster counts: K or LO:HI (default 2:10; chosen by silhouette)")
    m.add_argument("--restarts", type=int, default=10, help="k-means++ restarts per k (default 10)")
    m.add_argument("--refits", type=int, default=20, help="balanced refits averaged per head (default 20, as DFR)")
    m.add_argument("--methods", default="erm,jtt,mid,mid_oracle,dfr")
    m.add_argument("--jtt-upweight", type=float, default=20.0, help="weight of ERM's errors for JTT (default 20)")
    m.add_argument("--penalty", default="l1", choices=["l1", "l2"], help="of every retrained head (default l1, as DFR)")
    m.add_argument("--verify", help="metadata column(s) to run WSC against for every head, on the test rows")
    m.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates of the WSC check (default 100)")
    m.add_argument("--permutations", type=int, default=100, help="permutations of the WSC check (default 100)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--no-figures", action="store_true")
    m.add_argument("--out", required=True, help="output folder")
    m.set_defaults(handler=cmd_mid)

    r = sub.add_parser("report", help="render report.html from a wsca.json folder",
                       epilog=REPORT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--run", required=True, help="folder with wsca.json (an analyze or demo condition output)")
    r.add_argument("--out", help="HTML path (default RUN/report.html)")
    r.set_defaults(handler=cmd_report)

    d = sub.add_parser("demo", help="induced-shortcut demo on BUS-BRA: balanced vs biased, fine-tuned and multi-task",
                       epilog=DEMO_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--data-dir", help="folder with busbra_64.npz")
    d.add_argument("--dataset", default="auto", choices=["auto", "busbra", "digits"],
                   help="auto: BUS-BRA when found, else the bundled digits (default auto)")
    d.add_argument("--epochs", type=int, help="training epochs per condition (default: the dataset's)")
    d.add_argument("--bootstrap", type=int, default=200)
    d.add_argument("--permutations", type=int, default=200)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true")
    d.add_argument("--out", required=True, help="output folder")
    d.set_defaults(handler=cmd_demo)


def cmd_train(args) -> int:
    import os

    from ..training.data import prepare_dataset
    from ..training.data.sources import NAMED_DATASETS
    from ..errors import require
    from ..training.data.tfds_builder import fingerprint
    from ..training.train import TrainConfig, check_config, check_data, check_run_folder, fit, read_run_json

    cfg = TrainConfig(setting=args.setting, backbone=args.backbone, epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, seed=args.seed)
    check_config(cfg)                                   # before reading the data: fail in a second, not minutes
    check_run_folder(args.out, args.resume, args.overwrite)
    require(args.split_seed >= 0, f"--split-seed must be an integer >= 0, found {args.split_seed}")
    old = read_run_json(args.out, "--resume:") if args.resume else {}
    if args.resume and "split_seed" not in old:          # a run from before --split-seed: its split used --seed
        args.split_seed = int(old["config"].get("seed", 0))
    seen = {}

    def check(d):                                        # on the source, before the TFDS copy is written
        check_data(d, args.primary, _csv(args.tasks), cfg)
        seen["fp"] = fingerprint(d)
        was = old.get("data_fingerprint")
        require(was is None or was == seen["fp"], f"--resume: the data differ from those the run was trained on "
                f"(content fingerprint {seen['fp']} != {was}: another file, another split or another --split-seed)")
    ds = prepare_dataset(args.dataset, args.data_dir, args.tfds_dir, seed=args.split_seed, check=check)
    source = args.dataset if args.dataset in NAMED_DATASETS else os.path.abspath(args.dataset)
    rec = fit(ds, args.primary, _csv(args.tasks), cfg, args.out, resume=args.resume, progress=_progress(args),
              dataset_source=source, overwrite=args.overwrite, split_seed=args.split_seed,
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


def _run_dataset(args, rec: dict):
    """The data a run was trained on (``--data-dir``/``--tfds-dir`` from ``args``): its source, split
    seed (runs before ``--split-seed`` drew the split with ``--seed``) and content fingerprint."""
    from ..training.data import prepare_dataset
    from ..training.data.tfds_builder import fingerprint
    from ..errors import require

    require(isinstance(rec.get("dataset_source"), str), f"--run {args.run}/run.json: no dataset_source")

    def check(d):
        was, now = rec.get("data_fingerprint"), fingerprint(d)
        require(was is None or was == now, f"--run {args.run}: the dataset {rec['dataset_source']} differs from the "
                                           f"one the run was trained on (content fingerprint {now} != {was})")
    split_seed = rec.get("split_seed")
    return prepare_dataset(rec["dataset_source"], args.data_dir, args.tfds_dir,
                           seed=rec["config"].get("seed", 0) if split_seed is None else split_seed, check=check)


def cmd_embed(args) -> int:
    from ..training.embed import embed, save_embeddings
    from ..io import check_out_file
    from ..training.train import load_run, read_run_json

    check_out_file(args.out, ".npz", "--out")
    rec = read_run_json(args.run)
    loaded = load_run(args.run, args.checkpoint)      # verify the checkpoint before preparing any data
    ds = _run_dataset(args, rec)
    arrays = embed(args.run, ds, args.split, args.checkpoint, args.feature_maps, loaded=loaded)
    save_embeddings(args.out, arrays)
    print(f"wrote {args.out}: embeddings {arrays['embeddings'].shape}, heads "
          f"{', '.join(k[5:] for k in arrays if k.startswith('head_'))}")
    return 0


def cmd_ifa(args) -> int:
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
    kw = dict(tasks=_csv(args.tasks) or None, method=args.method, target=target, fractions=fractions,
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
        ds = _run_dataset(args, rec)
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


def _k_range(text: str) -> list[int]:
    from ..errors import require
    try:
        lo, _, hi = text.partition(":")
        ks = list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        ks = []
    require(ks, f"--k {text!r}: expected K or LO:HI with LO <= HI")
    require(ks[0] >= 2, f"--k must be at least 2, found {ks[0]}")
    return ks


def _mid_splits(args) -> dict:
    """``{split: EmbeddingFile}`` from --train/--val/--test or by embedding --run's splits."""
    from ..errors import require
    from ..io import embedding_file, load_embeddings
    files = {k: getattr(args, k) for k in ("train", "val", "test")}
    if args.run is None:
        missing = [f"--{k}" for k, v in files.items() if v is None]
        require(not missing, f"wsca mid needs --run, or --train, --val and --test (missing {', '.join(missing)})")
        return {k: load_embeddings(v) for k, v in files.items()}
    require(all(v is None for v in files.values()), "wsca mid: give --run or the three .npz files, not both")
    from ..training.embed import embed
    from ..training.train import load_run, read_run_json
    rec = read_run_json(args.run)
    spec = [t for t in rec["tasks"] if t["name"] == args.primary]
    require(spec, f"--primary {args.primary!r}: the run has no head for it (heads: {', '.join(t['name'] for t in rec['tasks'])})")
    loaded = load_run(args.run, args.checkpoint)
    ds = _run_dataset(args, rec)
    out = {k: embedding_file(embed(args.run, ds, k, args.checkpoint, loaded=loaded)) for k in files}
    out["classes"] = list(spec[0]["classes"])             # the head's class order, from the run
    return out


def cmd_mid(args) -> int:
    from ..errors import require
    from ..io import check_out_dir
    from ..mitigation.mining import METHODS
    from ..mitigation.app import analyze_mid, split_arrays
    from ..report import write_mid_outputs

    check_out_dir(args.out)
    methods = _csv(args.methods)
    bad = sorted(set(methods) - set(METHODS))
    require(methods and not bad, f"--methods: unknown {', '.join(bad) or '(none given)'} (choose from {', '.join(METHODS)})")
    require(0 < args.band < 1, f"--band must be in (0, 1), found {args.band}")
    require(args.band_threshold is None or args.band_threshold > 0,
            f"--band-threshold must be positive, found {args.band_threshold}")
    require(args.min_cell >= 1, f"--min-cell must be at least 1, found {args.min_cell}")
    ks = _k_range(args.k)
    require(args.restarts >= 1 and args.refits >= 1, "--restarts and --refits must be at least 1")
    require(args.jtt_upweight > 0, f"--jtt-upweight must be positive, found {args.jtt_upweight}")
    groups, verify = _csv(args.groups), _csv(args.verify)
    require(groups, "--groups: worst-group accuracy needs the group column(s) of the test rows")
    splits = _mid_splits(args)
    tr = split_arrays(splits["train"], args.primary, groups, splits.get("classes"), what="--train")
    va = split_arrays(splits["val"], args.primary, groups, tr["classes"], what="--val")
    te = split_arrays(splits["test"], args.primary, groups, tr["classes"], what="--test")
    for t in verify:
        require(t in te["meta"], f"--verify: no column {t!r} in the test split")
    rec, arrays = analyze_mid(tr, va, te, methods=methods, band=args.band, band_threshold=args.band_threshold,
                              min_cell=args.min_cell, ks=ks, restarts=args.restarts,
                              n_refits=args.refits, jtt_up=args.jtt_upweight, verify=verify, bootstrap=args.bootstrap,
                              permutations=args.permutations, seed=args.seed, penalty=args.penalty)
    rec["settings"].update(primary=args.primary, groups=groups, verify=verify)
    write_mid_outputs(rec, arrays, args.out, figures=not args.no_figures)
    for name, r in rec["methods"].items():
        print(f"{name:10s} worst-group {r['worst_group']:.3f} [{r['worst_group_ci'][0]:.3f}, {r['worst_group_ci'][1]:.3f}]"
              f"  mean {r['mean']:.3f}" + ("" if not r["wsc"] else "  WSC " + ", ".join(
                  f"{t} {'n/a (all-zero head)' if w['max_abs_wsc'] is None else format(w['max_abs_wsc'], '.3f')}"
                  + ("" if w["within_class_eta"] is None else f" (within-class eta {w['within_class_eta']:.2f})")
                  for t, w in r["wsc"].items())))
    if "band" in rec:
        top = max(rec["band"]["enrichment"], key=lambda e: e["odds_ratio"], default=None)
        if top is not None:
            print(f"band: {rec['band']['n']} rows, most enriched {top['column']}={top['value']} "
                  f"(odds ratio {top['odds_ratio']:.2f}, Holm p {top['p_holm']:.3g}); k = {rec['k']}")
    print(f"wrote {args.out}/mid.json and report.html")
    return 0


def cmd_report(args) -> int:
    from ..errors import require
    from ..io import check_out_file
    from ..report import write_report

    require(os.path.isdir(args.run), f"--run {args.run}: no such folder")
    check_out_file(args.out or os.path.join(args.run, "report.html"), ".html", "--out")
    path = write_report(args.run, args.out)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from ..validation.demo import run_demo

    run_demo(args.out, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, bootstrap=args.bootstrap,
             permutations=args.permutations, seed=args.seed, progress=_progress(args))
    return 0


def _progress(args) -> bool:
    """Progress is on unless --quiet (results and 'wrote' lines print either way)."""
    return not getattr(args, "quiet", False)
