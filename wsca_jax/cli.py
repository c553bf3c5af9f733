"""The ``wsca`` command line: a thin shell over the Python API.

Exit codes: 0 success, 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import sys
import time

ANALYZE_EXAMPLE = """\
example:
  wsca analyze --embeddings emb.npy --metadata meta.csv --primary malignant \\
      --group-column case --bootstrap 200 --permutations 200 --out results/

  reads N embeddings (.npy (N, D), or .npz with 'embeddings' and optional 'head_<task>' arrays)
  and N metadata rows (.csv/.parquet, same order); writes results/wsca.json, report.html, *.png.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _csv(s: str | None) -> list[str]:
    return [c.strip() for c in s.split(",") if c.strip()] if s else []


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wsca", description="Weight Space Correlation analysis: does a model's decision use "
                                         "the metadata its embedding encodes?")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    a = sub.add_parser("analyze", help="WSC of a primary head against every metadata task",
                       description="WSC of the primary head (the model's own, or a probe) against a "
                                   "linear probe for every metadata column, with bootstrap intervals "
                                   "and permutation p-values.",
                       epilog=ANALYZE_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--embeddings", required=True, help=".npy (N, D) or .npz with 'embeddings'")
    a.add_argument("--metadata", help=".csv or .parquet with N rows (default: the 1-D arrays in the .npz)")
    a.add_argument("--primary", required=True, help="primary task column")
    a.add_argument("--primary-head", help=".npy head (C, D) or (D,); default head_<primary> from the .npz, else a probe")
    a.add_argument("--tasks", help="comma-separated columns to analyse (default: all but primary/group)")
    a.add_argument("--categorical", help="comma-separated columns to treat as categorical")
    a.add_argument("--continuous", help="comma-separated columns to bin")
    a.add_argument("--bins", type=int, default=4, help="bins for continuous columns (default 4)")
    a.add_argument("--binning", default="quantile", choices=["quantile", "uniform"], help="bin edges (default quantile)")
    a.add_argument("--group-column", help="patient/group id: folds, bootstrap and permutations keep groups whole")
    a.add_argument("--bootstrap", type=int, default=0, help="bootstrap replicates B (default 0)")
    a.add_argument("--permutations", type=int, default=0, help="label permutations P (default 0)")
    a.add_argument("--pca-variance", type=float, default=0.99, help="variance kept by the PCA (default 0.99)")
    a.add_argument("--pca-min", type=int, default=50, help="minimum PCA components (default 50)")
    a.add_argument("--heads", default="centered", choices=["centered", "raw"], help="row centring (default centered)")
    a.add_argument("--C", type=float, default=1.0, dest="C", help="probe inverse L2 strength, scikit-learn convention (default 1)")
    a.add_argument("--solver", default="lbfgs", choices=["lbfgs", "ridge"], help="probe solver (default lbfgs)")
    a.add_argument("--ci-method", default="bca", choices=["bca", "percentile"], help="bootstrap interval (default bca)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-figures", action="store_true", help="write wsca.json and report.html without PNG figures")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.add_argument("--out", required=True, help="output folder")
    a.set_defaults(func=cmd_analyze)
    return p


def cmd_analyze(args) -> int:
    from .analysis import analyze
    from .errors import WscaInputError
    from .io import load_embeddings, load_head, load_metadata
    from .probes import ProbeConfig
    from .report import write_outputs

    import pandas as pd

    ef = load_embeddings(args.embeddings)
    if args.metadata:
        meta = load_metadata(args.metadata)
    elif ef.columns:
        meta = pd.DataFrame(ef.columns)
    else:
        raise WscaInputError("--metadata is required (the embeddings file holds no metadata columns)")
    head = None
    if args.primary_head:
        head = load_head(args.primary_head)
    elif args.primary in ef.heads:
        head = ef.heads[args.primary]
    t0 = time.time()
    result = analyze(
        ef.embeddings, meta, args.primary, head,
        tasks=_csv(args.tasks) or None, categorical=_csv(args.categorical), continuous=_csv(args.continuous),
        bins=args.bins, binning=args.binning, group_column=args.group_column,
        bootstrap=args.bootstrap, permutations=args.permutations, pca_variance=args.pca_variance,
        pca_min=args.pca_min, heads=args.heads, seed=args.seed,
        probe=ProbeConfig(C=args.C, solver=args.solver), ci_method=args.ci_method, progress=not args.quiet)
    write_outputs(result, args.out, figures=not args.no_figures)
    if not args.quiet:
        print(f"wsca analyze: {result.n_samples} samples, {len(result.tasks)} tasks, "
              f"PCA {result.pca['components']} components, {time.time() - t0:.1f} s")
        cols = ["task", "probe_auroc", "max_abs_wsc", "ci_low", "ci_high", "p_value", "p_adjusted", "random_q95"]
        with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
            print(result.summary_table()[cols].to_string(index=False))
        dg = result.diagnostics
        if dg["fits_above_tol"]:
            print(f"note: {dg['fits_above_tol']} of {dg['fits_total']} probe fits stopped above the gradient "
                  f"tolerance {dg['tol']:g} (largest {dg['replicate_grad_max']:.1e}; float32 round-off floor "
                  "or iteration cap); see diagnostics in wsca.json")
        print(f"wrote {args.out}/wsca.json and report.html")
    return 0


def main(argv=None) -> int:
    from .errors import WscaInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__
        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except WscaInputError as e:
        print(f"wsca {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsca {args.command}: interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
