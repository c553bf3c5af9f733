"""``wsca analyze``: WSC of a primary head against every metadata task (one embedding file, or
several runs combined). The settings flags are generated from :class:`AnalysisConfig`."""

from __future__ import annotations

import os
import sys
import time
import warnings

from ..analysis.config import AnalysisConfig
from ..checks import check_columns
from ..errors import WscaInputError, require
from .common import add_config_arguments, add_parser, config_from_args, csv

CONFIG = AnalysisConfig                  # the settings flags below are generated from it

EXAMPLE = """\
example:
  wsca analyze --embeddings emb.npy --metadata meta.csv --primary malignant \\
      --group-column case --bootstrap 200 --permutations 200 --out results/

  reads N embeddings (.npy (N, D), or .npz with 'embeddings' and optional 'head_<task>' arrays)
  and N metadata rows (.csv/.parquet, same order); writes results/wsca.json, report.html, *.png.

  wsca analyze --runs seed0.npz seed1.npz seed2.npz --primary malignant --permutations 200 --out runs/
  analyses each network (seed) and combines them: runs/runs.json, runs/report.html, runs/<seed>/.
"""


def register(sub) -> None:
    a = add_parser(sub, "analyze", "WSC of a primary head against every metadata task", EXAMPLE,
                   description="WSC of the primary head (the model's own, or a probe) against a linear probe for "
                               "every metadata column, with bootstrap intervals and permutation p-values.")
    a.add_argument("--embeddings", help=".npy (N, D) or .npz with 'embeddings' (or give --runs)")
    a.add_argument("--runs", nargs="+", metavar="NPZ",
                   help="two or more .npz files (as `wsca embed` writes them) of networks trained on one design "
                        "(seeds): each is analysed, and runs.json / report.html give the combined answer")
    a.add_argument("--independent-runs", action="store_true",
                   help="the --runs were trained on independent data: combine p-values with Fisher's method "
                        "(default: they share training rows; twice the mean p, valid under any dependence)")
    a.add_argument("--metadata", help=".csv or .parquet with N rows (default: the 1-D arrays in the .npz)")
    a.add_argument("--primary", required=True, help="primary task column")
    a.add_argument("--primary-head", help=".npy head (C, D) or (D,); default head_<primary> from the .npz, else a probe")
    a.add_argument("--task-heads", help="comma-separated tasks compared with their own trained head_<task> from the "
                                        ".npz (the multi-task setting); default: probes for every task")
    a.add_argument("--head-null", action="append", default=[], metavar="TASK=FILE",
                   help="seed null of a fixed task head: FILE (.npy, or text with one value per line) holds the max "
                        "|WSC| of networks trained with TASK's labels permuted (wsca_jax.fixed_head_wsc); repeatable. "
                        "Without it fixed heads are reported as not tested")
    a.add_argument("--counterfactual", action="append", default=[], metavar="TASK=FILE",
                   help="FILE (.npy, or .npz as `wsca embed --dataset` writes it) holds the embeddings of the same "
                        "rows, in the same order, with TASK's attribute intervened on (e.g. the images re-rendered "
                        "as another scanner): the decision's measured response, on which the decision-use verdict "
                        "then rests; repeatable")
    a.add_argument("--counterfactual-control", action="append", default=[], metavar="TASK=FILE",
                   help="FILE holds the embeddings of the same rows under a control intervention of the same size that "
                        "the network never saw with the label (e.g. the stamp in another corner), for a TASK given "
                        "--counterfactual: 'used' then needs the response to exceed the control's by --use-margin; repeatable")
    add_config_arguments(a, CONFIG, group="analysis settings (wsca_jax.AnalysisConfig)")
    a.add_argument("--no-figures", action="store_true", help="write wsca.json and report.html without PNG figures")
    a.add_argument("--quiet", action="store_true", help="no progress (the results table and 'wrote' line still print)")
    a.add_argument("--distributed", action="store_true",
                   help="join JAX's distributed runtime (one command per host or process; SLURM and TPU pods are "
                        "detected, else --coordinator/--num-processes/--process-id or WSCA_* variables): the "
                        "replicates are shared out over every process's devices, process 0 writes --out")
    a.add_argument("--coordinator", help="with --distributed: HOST:PORT of process 0")
    a.add_argument("--num-processes", type=int, help="with --distributed: number of processes")
    a.add_argument("--process-id", type=int, help="with --distributed: this process's rank (0 .. n-1)")
    a.add_argument("--join-timeout", type=float, default=300.0,
                   help="with --distributed: seconds every process waits for the others to join (default: 300)")
    a.add_argument("--out", required=True, help="output folder")
    a.set_defaults(handler=run)


def run(args) -> int:
    from ..io import check_out_dir

    check_out_dir(args.out)
    config = config_from_args(CONFIG, args)                    # every setting checked before any reading
    quiet, main_process = args.quiet, True
    if args.distributed:
        from ..sharding import initialize, is_main
        require(args.join_timeout > 0 and args.join_timeout < 1e6,
                f"--join-timeout must be a number of seconds > 0, found {args.join_timeout}")
        initialize(args.coordinator, args.num_processes, args.process_id, args.join_timeout)
        main_process = is_main()
        quiet = quiet or not main_process
    else:
        require(args.coordinator is None and args.num_processes is None and args.process_id is None,
                "--coordinator, --num-processes and --process-id go with --distributed")
    if args.runs:
        require(not args.embeddings, "give --embeddings or --runs, not both")
        require(not args.distributed, "--distributed analyses one --embeddings file (not --runs)")
        return _run_many(args, config, quiet)
    require(bool(args.embeddings), "--embeddings is required (or --runs with two or more .npz files)")
    return _run_one(args, config, quiet, main_process)


def _run_one(args, config: AnalysisConfig, quiet: bool, main_process: bool) -> int:
    from ..analysis import analyze
    from ..io import load_embeddings, load_head
    from ..report import write_outputs

    ef = load_embeddings(args.embeddings)
    meta, config = _metadata(args, ef, config)
    head = load_head(args.primary_head) if args.primary_head else ef.heads.get(args.primary)
    task_heads = {}
    for name in csv(args.task_heads):
        if name not in ef.heads:
            raise WscaInputError(f"--task-heads {name}: {args.embeddings} has no head_{name} array "
                                 f"(heads found: {', '.join(ef.heads) or 'none'})")
        task_heads[name] = ef.heads[name]
    head_null = head_nulls(args.head_null)
    cf = counterfactuals(args.counterfactual, ef, meta, args.primary)
    ctl = counterfactuals(args.counterfactual_control, ef, meta, args.primary, "--counterfactual-control")
    extra = sorted(set(ctl) - set(cf))
    require(not extra, f"--counterfactual-control {extra[0] if extra else ''}: no --counterfactual for that task; "
                       "expected a control beside a counterfactual of the same task")
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # printed below as notes, and kept in wsca.json
        result = analyze(ef.embeddings, meta, args.primary, head, task_heads=task_heads or None,
                         head_null=head_null or None, counterfactual=cf or None,
                         counterfactual_control=ctl or None, config=config,
                         progress=not quiet)
    if not main_process:                                   # process 0 writes the outputs
        return 0
    write_outputs(result, args.out, figures=not args.no_figures)
    print_summary(result, args.out, time.time() - t0)
    for line in result.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _metadata(args, ef, config: AnalysisConfig):
    """The metadata table (--metadata, else the .npz's columns) and the config with ``group`` as the
    group column when `wsca embed` wrote one and --group-column was not given."""
    import pandas as pd

    from ..io import load_metadata
    if args.metadata:
        return load_metadata(args.metadata), config
    if not ef.columns:
        raise WscaInputError("--metadata is required (the embeddings file holds no metadata columns)")
    named = [args.primary, *(config.encoding.tasks or ()), *config.encoding.categorical, *config.encoding.continuous]
    check_columns([c for c in named if c in ef.mislength], ef.columns, "--embeddings", "in the file",
                  lengths=ef.mislength, rows=len(ef.embeddings))
    meta = pd.DataFrame(ef.columns)
    if "group" in meta.columns and config.encoding.group_column is None:
        config = config.replace(group_column="group")      # written by `wsca embed`: the patient id
    return meta, config


def counterfactuals(specs: list[str], ef, meta, primary: str, flag: str = "--counterfactual") -> dict:
    """``["task=file", ...]`` -> ``{task: (N, D)}``; a file of other rows (its count, or a primary
    column that differs from the analysed one) is one clear line (``flag``: the option named in it)."""
    import numpy as np

    from ..io import load_embeddings
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise WscaInputError(f"{flag} {spec!r}: expected TASK=FILE")
        require(name not in out, f"{flag} {name}: given twice; expected one file per task")
        cf = load_embeddings(path, f"{flag} {name}")
        require(cf.embeddings.shape == ef.embeddings.shape,
                f"{flag} {name}: {path} holds embeddings {cf.embeddings.shape}, --embeddings "
                f"{ef.embeddings.shape}; expected the same rows, in the same order, from the same network")
        if primary in cf.columns and primary in meta.columns:
            same = np.asarray(cf.columns[primary]).astype(str) == np.asarray(meta[primary]).astype(str)
            require(bool(same.all()), f"{flag} {name}: {path}'s {primary!r} differs from the analysed one at "
                                      f"row {int(np.argmin(same))} ({int((~same).sum())} rows); expected the same rows "
                                      "in the same order")
        out[name] = np.asarray(cf.embeddings)
    return out


def head_nulls(specs: list[str]) -> dict:
    """``["task=file", ...]`` -> ``{task: (M,) float}``; a bad spec or file is one clear line."""
    import numpy as np

    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise WscaInputError(f"--head-null {spec!r}: expected TASK=FILE")
        if not os.path.isfile(path):
            raise WscaInputError(f"--head-null {name}: file not found: {path}")
        try:
            vals = np.load(path, allow_pickle=False) if path.endswith(".npy") else np.loadtxt(path, ndmin=1)
            vals = np.asarray(vals, float).ravel()
        except (ValueError, OSError) as e:
            raise WscaInputError(f"--head-null {name}: cannot read {path} as numbers ({e})") from None
        out[name] = vals
    return out


def _run_many(args, config: AnalysisConfig, quiet: bool) -> int:
    """``wsca analyze --runs a.npz b.npz ...``: every run analysed, then combined (wsca_jax.analyze_runs)."""
    import pandas as pd

    from ..analysis import analyze_runs
    from ..io import load_embeddings
    from ..report import write_runs_outputs

    require(len(args.runs) >= 2, f"--runs: {len(args.runs)} file given; expected at least 2 runs to combine")
    require(not (args.metadata or args.primary_head or args.head_null or args.counterfactual
                 or args.counterfactual_control),
            "--runs: metadata and heads come from each .npz; --metadata, --primary-head, --head-null and "
            "--counterfactual(-control) do not apply")
    runs, names, real = [], [], {}
    for path in args.runs:
        require(os.path.isfile(path), f"--runs {path}: file not found")
        key = os.path.realpath(path)
        require(key not in real, f"--runs {path}: given twice (also as {real.get(key)}); expected distinct runs")
        real[key] = path
        ef = load_embeddings(path, "--runs")
        if not ef.columns:
            raise WscaInputError(f"--runs {path}: holds no metadata columns; expected an .npz written by `wsca embed`")
        check_columns([args.primary], ef.columns, f"--runs {path}", lengths=ef.mislength, rows=len(ef.embeddings))
        meta = pd.DataFrame(ef.columns)
        missing = [t for t in csv(args.task_heads) if t not in ef.heads]
        require(not missing, f"--runs {path}: no head_{missing[0] if missing else ''} array for --task-heads")
        runs.append({"embeddings": ef.embeddings, "metadata": meta, "primary_head": ef.heads.get(args.primary),
                     "task_heads": {t: ef.heads[t] for t in csv(args.task_heads)} or None})
        names.append(_unique_name(os.path.splitext(os.path.basename(path))[0] or "run", names))
    if "group" in runs[0]["metadata"].columns and config.encoding.group_column is None:
        config = config.replace(group_column="group")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = analyze_runs(runs, args.primary, names=names, shared_data=not args.independent_runs, config=config,
                              progress=not quiet)
    write_runs_outputs(result, args.out, figures=not args.no_figures)
    for task, c in result.combined.items():
        print(f"{task}: {c['verdict']}")
    print(f"wrote {args.out}/runs.json and report.html (one folder per run)")
    return 0


def _unique_name(stem: str, taken: list[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3`` ... : the first not among ``taken`` (each run's output folder)."""
    name, i = stem, 1
    while name in taken:
        i += 1
        name = f"{stem}_{i}"
    return name


def print_summary(result, out: str, seconds: float) -> None:
    """The results table and notes of one analysis."""
    import pandas as pd

    print(f"wsca analyze: {result.n_samples} samples, {len(result.tasks)} tasks, "
          f"PCA {result.pca['components']} components, {seconds:.1f} s")
    cols = ["task", "probe_auroc", "max_abs_wsc", "max_abs_wsc_corrected", "ci_low", "ci_high", "p_value", "p_mcse",
            "p_adjusted", "random_q95", "converged"]
    with pd.option_context("display.width", 180, "display.float_format", "{:.3f}".format):
        print(result.summary_table()[cols].to_string(index=False))
    for name, t in result.tasks.items():
        du = t.summary.get("decision_use")
        if du:
            print(f"{name}: decision use -- {du['verdict']}: {du['reason']}")
    ex = result.resolved.get("permutation_exchangeable_rows")
    if ex is not None and ex < 0.5:
        print(f"note: only {100 * ex:.0f}% of the rows belong to groups that a grouped permutation can exchange "
              "(groups are exchanged among groups of equal size); group-level attributes barely move under the null")
    dg = result.diagnostics
    if dg["fits_not_converged"]:
        print(f"note: {dg['fits_not_converged']} of {dg['fits_total']} probe fits did not converge (a full-data fit "
              "whose optimality gap stayed above its tolerance, or a replicate at the iteration cap or stalled "
              f"above the float32 floor; largest max |gradient| {dg['replicate_grad_max']:.1e}); "
              "see 'fit' per task and 'warnings' in wsca.json")
    if any(r.summary.get("ci_method") == "corrected" for r in result.tasks.values()):
        print("note: max_abs_wsc is the raw value (the paper's number); ci_low/ci_high are the interval of the "
              "population value, around max_abs_wsc_corrected (probe noise shrinks cosines toward 0)")
    print(f"wrote {out}/wsca.json and report.html")
