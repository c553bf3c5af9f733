"""``wsca mid``: mid-range mining and last-layer retraining (ERM, JTT, MID, MID-oracle, DFR)."""

from __future__ import annotations

from .common import add_parser, csv, run_dataset

EXAMPLE = """\
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


def register(sub) -> None:
    m = add_parser(sub, "mid", help="find and fix a shortcut without group labels: mid-range mining, last-layer "
                                   "retraining (ERM, JTT, MID, MID-oracle, DFR), worst-group accuracy, WSC after the fix", example=EXAMPLE)
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
    m.set_defaults(handler=run)


def run(args) -> int:
    from ..errors import require
    from ..io import check_out_dir
    from ..mitigation.mining import METHODS
    from ..mitigation.app import analyze_mid, split_arrays
    from ..report import write_mid_outputs

    check_out_dir(args.out)
    methods = csv(args.methods)
    bad = sorted(set(methods) - set(METHODS))
    require(methods and not bad, f"--methods: unknown {', '.join(bad) or '(none given)'} (choose from {', '.join(METHODS)})")
    require(0 < args.band < 1, f"--band must be in (0, 1), found {args.band}")
    require(args.band_threshold is None or args.band_threshold > 0,
            f"--band-threshold must be positive, found {args.band_threshold}")
    require(args.min_cell >= 1, f"--min-cell must be at least 1, found {args.min_cell}")
    ks = _k_range(args.k)
    require(args.restarts >= 1 and args.refits >= 1, "--restarts and --refits must be at least 1")
    require(args.jtt_upweight > 0, f"--jtt-upweight must be positive, found {args.jtt_upweight}")
    groups, verify = csv(args.groups), csv(args.verify)
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
    ds = run_dataset(args, rec)
    out = {k: embedding_file(embed(args.run, ds, k, args.checkpoint, loaded=loaded)) for k in files}
    out["classes"] = list(spec[0]["classes"])             # the head's class order, from the run
    return out
