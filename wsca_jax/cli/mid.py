"""``wsca mid``: mid-range mining and last-layer retraining (ERM, class-balanced, JTT, MID, random band,
MID-oracle, DFR). The
settings flags are generated from :class:`~wsca_jax.mitigation.config.MidConfig`."""

from __future__ import annotations

from ..mitigation.config import MidConfig
from .common import add_config_arguments, add_parser, config_from_args, run_dataset

CONFIG = MidConfig                      # the settings flags below are generated from it

EXAMPLE = """\
example:
  wsca mid --train tr.npz --val va.npz --test te.npz --primary label --groups label,place \\
      --verify place --out runs/wb_mid
  wsca mid --run runs/wb --primary label --groups label,place --out runs/wb_mid

  Mines the validation rows whose ERM logits sit near 0 (--band: the share nearest 0 per predicted
  class), clusters them (k-means, k by silhouette over --k), reports what the band and each cluster
  are enriched for, and retrains the last layer on the validation rows: ERM (the model's head),
  class_balanced (classes balanced: the control, no group labels), JTT (an identification head's
  errors upweighted, tuned on the worst group), MID (band clusters x class balanced against the rest;
  no group labels), random_band (the same on a random band: the mining's control), MID-oracle (the
  band's true groups) and DFR (true groups balanced). Worst-group and mean accuracy
  on the test rows with intervals; WSC of every head against --verify columns. Writes mid.json,
  report.html and figures. The .npz files are wsca embed outputs (with logits_<primary>).
"""


def register(sub) -> None:
    m = add_parser(sub, "mid", help="find and fix a shortcut without group labels: mid-range mining, last-layer "
                                   "retraining (ERM, class-balanced, JTT, MID, random band, MID-oracle, DFR), "
                                   "worst-group accuracy, WSC after the fix", example=EXAMPLE)
    m.add_argument("--run", help="a wsca train run folder (embeds its train, val and test splits)")
    m.add_argument("--train", help="wsca embed .npz of the training split (its group shares weight the mean accuracy)")
    m.add_argument("--val", help="wsca embed .npz of the validation split (mining and retraining)")
    m.add_argument("--test", help="wsca embed .npz of the test split (scoring)")
    m.add_argument("--checkpoint", default="best", choices=["best", "latest"], help="with --run: the checkpoint embedded")
    m.add_argument("--data-dir", help="with --run: folder with the named datasets")
    m.add_argument("--tfds-dir", help="with --run: where the array_record TFDS copy is prepared "
                                      "(default $WSCA_TFDS_DIR or ~/.cache/wsca_jax/tfds)")
    m.add_argument("--primary", required=True, help="the label column")
    add_config_arguments(m, CONFIG, group="mitigation settings (wsca_jax.mitigation.MidConfig)")
    m.add_argument("--no-figures", action="store_true", help="write mid.json and report.html without PNG figures")
    m.add_argument("--out", required=True, help="output folder")
    m.set_defaults(handler=run)


def run(args) -> int:
    from ..checks import check_columns
    from ..errors import require
    from ..io import check_out_dir
    from ..mitigation.app import analyze_mid, split_arrays
    from ..report import write_mid_outputs

    check_out_dir(args.out)
    config = config_from_args(CONFIG, args)                    # every setting checked before any reading
    groups = list(config.groups)
    require(groups, "--groups: worst-group accuracy needs the group column(s) of the test rows")
    splits = _mid_splits(args)
    arr = {}
    for k in ("train", "val", "test"):                         # every split's arrays checked by one function
        arr[k] = split_arrays(splits[k], args.primary, groups, arr["train"]["classes"] if arr else splits.get("classes"),
                              what=f"--{k}", source=getattr(args, k) or f"(the {k} split of run {args.run})")
    tr, va, te = arr["train"], arr["val"], arr["test"]
    for t in config.verification.verify:
        check_columns([t], te["meta"], "--verify", "in the test split")
    rec, arrays = analyze_mid(tr, va, te, config)
    rec["settings"] = {**rec["settings"], "primary": args.primary}
    write_mid_outputs(rec, arrays, args.out, figures=not args.no_figures)
    _print_summary(rec, args.out)
    return 0


def _print_summary(rec: dict, out: str) -> None:
    """Worst-group and mean accuracy (and WSC) per method, the band's most enriched value."""
    for name, r in rec["methods"].items():
        print(f"{name:14s} worst-group {r['worst_group']:.3f} [{r['worst_group_ci'][0]:.3f}, {r['worst_group_ci'][1]:.3f}]"
              f"  mean {r['mean']:.3f}" + ("" if not r["wsc"] else "  WSC " + ", ".join(
                  f"{t} {'n/a (all-zero head)' if w['max_abs_wsc'] is None else format(w['max_abs_wsc'], '.3f')}"
                  + ("" if w["within_class_eta"] is None else f" (within-class eta {w['within_class_eta']:.2f})")
                  for t, w in r["wsc"].items()))
              + ("  NOT CONVERGED (the solver hit its iteration cap: read this head's numbers with care)"
                 if r.get("converged") is False else "")
              + ("  DEGENERATE: below chance on a class in every configuration" if r.get("degenerate") else
                 "  below the majority-class rate on the tuning half" if r.get("below_majority") else ""))
    if "band" in rec:
        defined = [e for e in rec["band"]["enrichment"] if e.get("odds_ratio_kind", "finite") != "undefined"
                   and (e["odds_ratio"] is not None or e.get("odds_ratio_kind") == "infinite")]
        top = max(defined, key=lambda e: (e.get("odds_ratio_kind") == "infinite", e["odds_ratio"] or 0.0,
                                          -e["p_holm"]), default=None)
        odds = None if top is None else ("inf" if top.get("odds_ratio_kind") == "infinite" else f"{top['odds_ratio']:.2f}")
        print(f"band: {rec['band']['n']} rows, " + ("no enrichment odds ratio is defined (the band holds every row "
              "or none of a value's)" if top is None else f"most enriched {top['column']}={top['value']} "
              f"(odds ratio {odds}, Holm p {top['p_holm']:.3g})") + f"; k = {rec['k']}")
    print(f"wrote {out}/mid.json and report.html")


def _mid_splits(args) -> dict:
    """``{split: EmbeddingFile}`` from --train/--val/--test or by embedding --run's splits."""
    from ..errors import require
    from ..io import embedding_file, load_embeddings
    files = {k: getattr(args, k) for k in ("train", "val", "test")}
    if args.run is None:
        missing = [f"--{k}" for k, v in files.items() if v is None]
        require(not missing, f"wsca mid needs --run, or --train, --val and --test (missing {', '.join(missing)})")
        return {k: load_embeddings(v, f"--{k}") for k, v in files.items()}
    require(all(v is None for v in files.values()), "wsca mid: give --run or the three .npz files, not both")
    from ..training.embed import embed
    from ..training.train import load_run, read_run_json
    rec = read_run_json(args.run)
    spec = [t for t in rec["tasks"] if t["name"] == args.primary]
    require(spec, f"--primary {args.primary!r}: the run has no head for it (heads: {', '.join(t['name'] for t in rec['tasks'])})")
    loaded = load_run(args.run, args.checkpoint)
    ds = run_dataset(args, rec)
    out = {k: embedding_file(embed(args.run, ds, k, args.checkpoint, loaded=loaded)) for k in files}
    out["classes"] = list(spec[0]["classes"])             # the head's class order, from the run
    return out
