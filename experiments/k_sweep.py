"""How the projection size k changes max |WSC| and its null (the paper swept k from 5 to 2048).

One multi-task BUS-BRA model per design (balanced, strength 0.9; seed 0, the demo's settings); the same
embeddings analysed with PCA floors k = 10 ... 256. Prints a markdown table (appended to the notes
by hand): observed max |WSC|, permutation-null 95% and p for each k.

    .venv/bin/python experiments/k_sweep.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import wsca_jax as wsca  # noqa: E402
from wsca_jax.data import load_dataset  # noqa: E402
from wsca_jax.embed import embed  # noqa: E402
from wsca_jax.experiment import (EXPERIMENT_WIDTHS, MT_TASK_WEIGHTS, busbra_spec, condition_dataset,  # noqa: E402
                                 restrict_busbra)
from wsca_jax.train import TrainConfig, fit  # noqa: E402


def main() -> None:
    ds = restrict_busbra(load_dataset("busbra", sys.argv[1] if len(sys.argv) > 1 else None))
    spec = busbra_spec()
    print("| design | k | explained variance | max \\|WSC\\| (heads) | null 95% | p | random 95% |")
    print("|---|---|---|---|---|---|---|")
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
        for k in (10, 25, 50, 100, 256):
            r = wsca.analyze(a["embeddings"], meta, spec.primary, a[f"head_{spec.primary}"],
                             task_heads={spec.confounder: a[f"head_{spec.confounder}"]}, tasks=[spec.confounder],
                             group_column="group", permutations=200, pca_min=k, pca_variance=1e-6, seed=0)
            s = r.tasks[spec.confounder].summary
            print(f"| {name} | {r.pca['components']} | {r.pca['explained_variance']:.3f} | {s['max_abs_wsc']:.3f} | "
                  f"{s['null_q95']:.3f} | {s['p_value']:.3f} | {s['random_direction_q95']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
