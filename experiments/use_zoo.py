"""A zoo of networks whose use of an artefact is measured by intervention (issue 28, Build 1-2).

Each network is a small CNN (``--backbone small_cnn``, widths 16-32-256) or a ResNet-18-style
network (``--backbone resnet18``, stage widths 16-32-64-128) trained on its own draw of
PneumoniaMNIST training rows (``--dataset pneumoniamnist``; ``digits``: scikit-learn's digits at
16x16, odd vs even; ``breastmnist``; ``busbra``: BUS-BRA at 64x64, primary ``malignant``), where a scanner-like signature is stamped on the training
images with an **association** to the label:
0 = stamped on half of each class (encoded, useless to the decision) up to 1 = stamped on exactly
the positive class (perfectly predictive). Kinds: ``text_band`` (vendor text / UI band),
``intensity`` (a gain curve), ``noise`` (a speckle texture), ``corner_stamp`` (a site logo or
ruler mark in the top-left corner), ``blur`` (a horizontal box blur: another lateral resolution).
Settings: ``fine_tuned`` (one head) and ``multi_task`` (a second head learns the artefact, so the
embedding encodes it strongly).

The first 192 networks (PneumoniaMNIST, small CNN, the first three kinds) are the **development
zoo** on which the verdict's rule was chosen (``experiments/use_validation.py``). The networks
of the other datasets, the ResNet-18-style backbone and the kinds ``corner_stamp`` and ``blur``
were added after the rule was fixed and are scored as an **external zoo**: the rule is not
changed by them.

**Ground truth of use, by intervention** (defined before any statistic is looked at): every test
image is shown clean and with the artefact; the effect is the mean |delta decision score| in SDs
of the clean scores (``effect``), with the flip rate and the primary AUROC on the stamped test set.
The same is measured for a **control** perturbation of the same kind and size that the network
never saw with the label (the band upside down at the bottom rows, the gain curve reversed,
another texture, the stamp in the bottom-left corner, the blur vertical; training flips are
horizontal only).
A network **uses** the artefact when its effect is above the 99th percentile of the effects of the
association-0 networks of the same dataset, backbone, kind and setting, taken as one of their values (their maximum
with fewer than 100 of them; computed when the records are scored by
``experiments/use_validation.py``; the continuous effect is stored). Each network draws its own training rows (seeded by its kind,
setting, association and seed).

**Statistics**: ``wsca.analyze`` on the embeddings of the validation rows (the artefact stamped on
half of each class; the truth is measured on the test rows) with the model's primary head: the paper's WSC and the statistics
of ``summary.statistics`` (within-class eta, covariance-metric WSC, LEACE erasure), 200
permutations, 200 bootstrap replicates. Embeddings are cached outside the repository (``--cache``, default
``~/.cache/wsca_jax/use_zoo``) so that statistics can be recomputed without retraining; one JSON
line per network in ``results/use_zoo_runs.jsonl`` (a rerun skips the networks recorded).

    .venv/bin/python experiments/use_zoo.py                      # every network (hours on 2 cores)
    .venv/bin/python experiments/use_zoo.py --seeds 0 --kinds text_band
    .venv/bin/python experiments/use_zoo.py --recompute          # statistics again, from the cache
    .venv/bin/python experiments/use_zoo.py --associations 0 --seeds 4,5,...,19   # a larger unused arm
    .venv/bin/python experiments/use_zoo.py --backbone resnet18 --kinds corner_stamp,blur   # external zoo
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from wsca_jax.training.data import load_dataset, load_digits_dataset
from wsca_jax.training.embed import embed
from wsca_jax.training.train import TrainConfig, fit
from wsca_jax.validation.experiment import EXPERIMENT_WIDTHS, artefact_spec, condition_dataset
from wsca_jax.validation.intervention import intervention

RUNS = "use_zoo_runs.jsonl"
ASSOCIATIONS = (0.0, 0.5, 0.8, 1.0)
KINDS = ("text_band", "intensity", "noise", "corner_stamp", "blur")
DATASETS = ("pneumoniamnist", "digits", "breastmnist", "busbra")
PRIMARY = {"busbra": "malignant"}                  # the primary column where it is not "label"
BACKBONE_WIDTHS = {"small_cnn": EXPERIMENT_WIDTHS, "resnet18": (16, 32, 64, 128)}
SETTINGS = ("fine_tuned", "multi_task")


def network_key(dataset: str, backbone: str, kind: str, assoc: float, setting: str, seed: int) -> str:
    """The record's key (the development zoo's keys carry no dataset or backbone)."""
    prefix = "" if (dataset, backbone) == ("pneumoniamnist", "small_cnn") else f"{dataset}-{backbone}-"
    return f"{prefix}{kind}-{assoc:g}-{setting}-{seed}"


def zoo_dataset(name: str, data_dir: str | None):
    """The zoo's image set: a named dataset from the data folder, or scikit-learn's digits."""
    return load_digits_dataset() if name == "digits" else load_dataset(name, data_dir)


def one(args, ds, kind: str, assoc: float, setting: str, seed: int) -> dict:
    """Train one network, measure its use by intervention, cache its embeddings, run the statistics."""
    spec = artefact_spec(args.dataset, primary=PRIMARY.get(args.dataset, "label"), kind=kind)
    extra = [] if (args.dataset, args.backbone) == ("pneumoniamnist", "small_cnn") else \
        [DATASETS.index(args.dataset), list(BACKBONE_WIDTHS).index(args.backbone)]
    rng = np.random.default_rng([seed, KINDS.index(kind), SETTINGS.index(setting), int(round(100 * assoc)), *extra])
    tr = np.flatnonzero(ds.split == 0)
    keep = rng.choice(tr, min(args.train_rows, int(0.8 * len(tr))), replace=False)   # the network's own rows
    sub = ds.subset(np.sort(np.concatenate([keep, np.flatnonzero(ds.split != 0)])))
    cond = condition_dataset(sub, spec, assoc, seed)
    tasks = ("artefact",) if setting == "multi_task" else ()
    tmp = tempfile.mkdtemp(prefix="wsca-zoo-")
    try:
        cfg = TrainConfig(setting=setting, epochs=args.epochs, batch_size=32, backbone=args.backbone,
                          widths=BACKBONE_WIDTHS[args.backbone], seed=seed)
        rec = fit(cond, spec.primary, tasks, cfg, run_dir=tmp, progress=False)
        test = sub.split == 2
        y = np.asarray(sub.columns[spec.primary])[test].astype(int)
        truth = intervention(tmp, sub.images[test], y, kind)
        parts = [embed(tmp, cond, s) for s in ("val", "test")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in ("embeddings", spec.primary, "artefact")}
    arrays["label"] = arrays.pop(spec.primary)          # the cache's primary column is always "label"
    arrays["split"] = np.repeat([1, 2], [len(p["embeddings"]) for p in parts])
    head, bias = parts[0][f"head_{spec.primary}"], parts[0][f"bias_{spec.primary}"]
    key = network_key(args.dataset, args.backbone, kind, assoc, setting, seed)
    os.makedirs(args.cache, exist_ok=True)
    np.savez(os.path.join(args.cache, f"{key}.npz"), head=head, bias=bias, **arrays)
    return {"key": key, "dataset": args.dataset, "backbone": args.backbone, "kind": kind, "association": assoc,
            "setting": setting, "seed": seed,
            "train_rows": int(len(keep)), "epochs": args.epochs, "primary_test_auroc":
            rec.get("test", {}).get(spec.primary, {}).get("auroc"), "intervention": truth,
            "statistics": statistics(arrays, head, spec, args.permutations, seed, args.bootstrap), "analysed": "val",
            "wsca_version": wsca.__version__}


def statistics(arrays: dict, head: np.ndarray, spec, permutations: int, seed: int, bootstrap: int = 200) -> dict:
    """The paper's WSC and the decision-use statistics of the artefact task, and its probe's AUROC,
    on the validation rows only (``split`` 1): the truth is measured on the test rows, so that no
    statistic is computed on the rows and stamps its truth was measured with."""
    val = np.asarray(arrays["split"]) == 1
    arrays = {k: np.asarray(v)[val] for k, v in arrays.items()}
    meta = pd.DataFrame({spec.primary: arrays["label"], "artefact": arrays["artefact"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = wsca.AnalysisConfig().replace(tasks=["artefact"], bootstrap=bootstrap, permutations=permutations,
                                                 seed=seed)
        r = wsca.analyze(arrays["embeddings"], meta, spec.primary, head, config=cfg)
    t = r.tasks["artefact"]
    return {"probe_auroc": t.probe["auroc"], **t.summary["statistics"]}


def recompute(args) -> None:
    """The recorded networks' statistics again from their cached embeddings (no retraining): those
    that lack one of the statistics scored (``use_validation.STATISTICS``), or every one with
    ``--recompute all``; the records file is rewritten; a network without a cache is kept as it was."""
    import json

    from use_validation import STATISTICS
    path = os.path.join(args.out, RUNS)
    rows = runner.read_records(path)
    n_val = int((load_dataset("pneumoniamnist", args.data_dir).split == 1).sum())   # caches written without split
    for row in rows:
        dataset = row.get("dataset", "pneumoniamnist")
        if args.recompute != "all" and all(k in row["statistics"] for k in STATISTICS) and row.get("analysed") == "val":
            continue
        cached = os.path.join(args.cache, f"{row['key']}.npz")
        if not os.path.exists(cached):
            print(f"{row['key']}: no cached embeddings; kept", flush=True)
            continue
        with np.load(cached) as z:
            arrays = {k: z[k] for k in ("embeddings", "label", "artefact")}
            head = z["head"]
            arrays["split"] = z["split"] if "split" in z else np.repeat([1, 2], [n_val, len(z["label"]) - n_val])
        spec = artefact_spec(dataset, PRIMARY.get(dataset, "label"), kind=row["kind"])
        row["statistics"] = statistics(arrays, head, spec, args.permutations, row["seed"], args.bootstrap)
        row["wsca_version"], row["analysed"] = wsca.__version__, "val"
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(path + ".tmp", path)
    print(f"recomputed {len(rows)} networks' statistics", flush=True)


def run(args) -> None:
    if args.recompute:
        return recompute(args)
    ds = zoo_dataset(args.dataset, args.data_dir)
    path = os.path.join(args.out, RUNS)
    done = runner.done_keys(path, ["key"])
    assocs = [float(a) for a in args.associations.split(",")]
    unknown = sorted(set(args.kinds.split(",")) - set(KINDS))
    if unknown:
        raise SystemExit(f"--kinds {unknown[0]}: not an artefact kind; expected one of {', '.join(KINDS)}")
    grid = itertools.product([int(s) for s in args.seeds.split(",")], args.kinds.split(","), SETTINGS, assocs)
    for seed, kind, setting, assoc in grid:
        if (network_key(args.dataset, args.backbone, kind, assoc, setting, seed),) in done:
            continue
        t0 = time.time()
        row = one(args, ds, kind, assoc, setting, seed)
        row["seconds"] = round(time.time() - t0, 1)
        runner.append_record(path, row)
        s, e = row["statistics"], row["intervention"]
        print(f"{row['key']}: effect {e['artefact']['effect']:.3f} (control {e['control']['effect']:.3f}), "
              f"probe AUROC {s['probe_auroc']:.2f}, WSC p {s['wsc']['p_value']}, eta p {s['within_class_eta']['p_value']}, "
              f"erasure p {s['erasure']['p_value']} [{row['seconds']:.0f} s]", flush=True)


def build_parser():
    def arguments(p):
        p.add_argument("--seeds", default="0,1,2,3")
        p.add_argument("--dataset", default="pneumoniamnist", choices=DATASETS)
        p.add_argument("--backbone", default="small_cnn", choices=sorted(BACKBONE_WIDTHS))
        p.add_argument("--kinds", default=",".join(KINDS[:3]), help=f"comma-separated, of {', '.join(KINDS)}")
        p.add_argument("--associations", default=",".join(f"{a:g}" for a in ASSOCIATIONS),
                       help="associations to train (e.g. 0 alone: more networks in the unused arm)")
        p.add_argument("--epochs", type=int, default=4)
        p.add_argument("--train-rows", type=int, default=1500)
        p.add_argument("--permutations", type=int, default=200)
        p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates of every interval")
        p.add_argument("--recompute", nargs="?", const="missing", choices=["missing", "all"],
                       help="recompute the recorded networks' statistics from the cached embeddings (no training): "
                            "those missing a statistic (default), or all")
        p.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "wsca_jax", "use_zoo"),
                       help="where the networks' embeddings are kept (never in the repository)")
    return runner.parser(__doc__, arguments)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {})


if __name__ == "__main__":
    main()
