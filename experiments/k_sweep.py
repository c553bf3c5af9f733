"""How the projection size k changes max |WSC| (the paper swept k from 5 to 2048).

One multi-task BUS-BRA model per design (balanced, strength 0.9; seed 0, the demo's settings); the same
embeddings analysed with PCA floors k = 10 ... 256. Each (design, k) is one line of
``results/k_sweep_runs.jsonl``; ``results/k_sweep.md`` is rendered from that file only.

Reported per k: max |WSC| of the jointly trained heads, the random-direction 95% reference of the same
shape in k dimensions, and -- for the multi-task model's primary head against a scanner *probe* --
max |WSC| with its permutation p (a statistic the permutation null does test). The fixed heads
themselves have no null here (issue 8; see fixed_head_null.md).

    .venv/bin/python experiments/k_sweep.py                # about 6 minutes on 2 cores
    .venv/bin/python experiments/k_sweep.py --report-only
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings

import pandas as pd

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from wsca_jax.training.data import load_dataset
from wsca_jax.training.embed import embed
from wsca_jax.training.train import TrainConfig, fit
from wsca_jax.validation.experiment import (EXPERIMENT_WIDTHS, MT_TASK_WEIGHTS, busbra_spec, condition_dataset,
                                            restrict_busbra)

KS = (10, 25, 50, 100, 256)
RUNS = "k_sweep_runs.jsonl"


def run(args) -> None:
    path = os.path.join(args.out, RUNS)
    ds = restrict_busbra(load_dataset("busbra", args.data_dir))
    spec = busbra_spec()
    for name, strength in (("balanced", 0.0), ("strength 0.9", 0.9)):
        cd = condition_dataset(ds, spec, strength, 0)
        tmp = tempfile.mkdtemp()
        try:
            cfg = TrainConfig(setting="multi_task", epochs=20, batch_size=32, widths=EXPERIMENT_WIDTHS,
                              task_weights=MT_TASK_WEIGHTS, seed=0)
            fit(cd, spec.primary, (spec.confounder,) + spec.extra_tasks, cfg, run_dir=tmp, progress=False)
            a = embed(tmp, cd, "train")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        meta = pd.DataFrame({spec.primary: a[spec.primary], spec.confounder: a[spec.confounder], "group": a["group"]})
        # bootstrap=0 (and permutations=0 for the heads): the study was run when the API's defaults were 0
        common = wsca.AnalysisConfig().replace(tasks=[spec.confounder], group_column="group", pca_variance=1e-6,
                                               seed=0, bootstrap=0, permutations=0)
        for k in KS:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                heads = wsca.analyze(a["embeddings"], meta, spec.primary, a[f"head_{spec.primary}"],
                                     task_heads={spec.confounder: a[f"head_{spec.confounder}"]},
                                     config=common.replace(pca_min=k))
                probe = wsca.analyze(a["embeddings"], meta, spec.primary, a[f"head_{spec.primary}"],
                                     config=common.replace(pca_min=k, permutations=args.permutations,
                                                           max_permutations=args.max_permutations))
            s, sp = heads.tasks[spec.confounder].summary, probe.tasks[spec.confounder].summary
            row = {"design": name, "strength": strength, "k": heads.pca["components"],
                   "explained_variance": heads.pca["explained_variance"], "heads_max_abs_wsc": s["max_abs_wsc"],
                   "random_q95": s["random_direction_q95"], "probe_max_abs_wsc": sp["max_abs_wsc"],
                   "probe_p_value": sp["p_value"], "probe_p_mcse": sp["p_value_mcse"],
                   "probe_null_q95": sp["null_q95"], "n_permutations": sp["n_permutations"],
                   "probe_converged": probe.tasks[spec.confounder].fit["converged"],
                   "warnings": [str(w.message) for w in caught], "wsca_version": wsca.__version__}
            runner.append_record(path, row)
            print(row, flush=True)


def report(path: str) -> str:
    r = runner.records_frame(path)
    lines = ["# k sweep (rendered from `k_sweep_runs.jsonl` by `experiments/k_sweep.py`)", "",
             "One multi-task BUS-BRA model per design (seed 0). *Heads*: max |WSC| of the jointly trained malignancy "
             "and scanner heads (no null of its own here: see fixed_head_null.md). *Probe*: the same malignancy head "
             "against a scanner probe, with its permutation test.", "",
             "| design | k | explained variance | max \\|WSC\\| (heads) | random 95% | max \\|WSC\\| (probe) "
             "| probe null 95% | probe p (± MC SE) | permutations |", "|---|---|---|---|---|---|---|---|---|"]
    for _, x in r.iterrows():
        lines.append(f"| {x.design} | {x.k} | {x.explained_variance:.3f} | {x.heads_max_abs_wsc:.3f} | {x.random_q95:.3f} | "
                     f"{x.probe_max_abs_wsc:.3f} | {x.probe_null_q95:.3f} | {x.probe_p_value:.3f} ± {x.probe_p_mcse:.3f} | "
                     f"{x.n_permutations} |")
    return "\n".join(lines) + "\n"


def build_parser():
    def arguments(p):
        p.add_argument("--permutations", type=int, default=200)
        p.add_argument("--max-permutations", type=int, default=2000)
    return runner.parser(__doc__, arguments)


def main(argv=None) -> None:
    """Starts over (the records are deleted first), then renders ``k_sweep.md``."""
    runner.run_study(build_parser().parse_args(argv), run,
                     {"k_sweep.md": lambda a: report(os.path.join(a.out, RUNS))}, fresh=RUNS)


if __name__ == "__main__":
    main()
