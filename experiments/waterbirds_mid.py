"""Mitigation on Waterbirds and BUS-BRA (issues 12, 29): ERM networks, then every ``wsca mid`` head.

For every backbone x seed: an ERM network is trained on Waterbirds' training split (32 px, primary
``y`` = waterbird; no class or group weights), its train/val/test splits are embedded (cached outside
the repository: derived from the dataset), and ``wsca_jax.analyze_mid`` retrains the last layer on the
validation rows with group = bird x place, scores the test rows and runs WSC of every head against
the place probe. Protocol 2 (issue 29): every method of ``wsca mid`` (with the controls
``class_balanced`` and ``random_band``, JTT as published) on the default C grid (1e-3 to 1e2), and DFR
and MID again on DFR's published grid (``published_grid``). The networks are trained as the README
says: ``wsca train --class-weights none``. One JSON line per network in
``results/waterbirds_mid_runs.jsonl`` (a rerun skips the networks already there; protocol-1 records,
three seeds of issue 12, are kept and shown last); ``results/waterbirds_mid.md`` is rendered from it
only, with paired differences over seeds and their 95% t intervals.

    .venv/bin/python experiments/waterbirds_mid.py --backbones small_cnn,resnet18     # ten seeds each
    .venv/bin/python experiments/waterbirds_mid.py --dataset busbra --backbones small_cnn   # BUS-BRA, biased design
    .venv/bin/python experiments/waterbirds_mid.py --report-only

``--dataset busbra``: the induced-shortcut BUS-BRA design of issue 4 at strength 0.9 (each class's
training rows lean on its own scanner; validation and test rows natural), group = malignant x scanner,
WSC against the scanner probe.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

import runner  # first: puts the repository root on sys.path
import wsca_jax as wsca
from wsca_jax.io import load_embeddings
from wsca_jax.mitigation import MidConfig
from wsca_jax.mitigation.app import analyze_mid, split_arrays
from wsca_jax.training.data import load_dataset
from wsca_jax.training.embed import embed, save_embeddings
from wsca_jax.training.train import TrainConfig, fit
from wsca_jax.validation.experiment import EXPERIMENT_WIDTHS, busbra_spec, condition_dataset, restrict_busbra

RUNS = "waterbirds_mid_runs.jsonl"
PROTOCOL = 2          # issue 29: the controls, JTT as published, the wide C grid (1: issue 12's five methods)
# paired differences over seeds reported (a - b), when both were run
PAIRS = [(m, "erm") for m in ("class_balanced", "jtt", "mid", "random_band", "mid_oracle", "dfr")] + [
    ("mid", "class_balanced"), ("mid", "random_band"), ("dfr", "mid"), ("dfr", "class_balanced")]
# per dataset: primary, group columns, the attribute to verify against, training epochs' default, minority groups
DATASETS = {"waterbirds": {"primary": "y", "groups": ["y", "place"], "verify": "place", "widths": None,
                           "minority": ("y=0,place=1", "y=1,place=0")},
            "busbra": {"primary": "malignant", "groups": ["malignant", "device"], "verify": "device",
                       "widths": EXPERIMENT_WIDTHS, "minority": None}}
BUSBRA_STRENGTH = 0.9
# published (ResNet-50, ImageNet-pretrained, full resolution; METHOD.md section 3) and the data README's
# reference numbers on fixed pixel features: worst-group accuracy
PUBLISHED = {"erm": "74.9 (ResNet-50) / 13-19 (pixel features)", "dfr": "92.9 (ResNet-50) / 52-54 (pixel features)",
             "jtt": "86.7 (ResNet-50)", "mid": "30 (MID-like, pixel features)", "mid_oracle": ""}


def dataset_for(args, seed: int):
    """The training dataset of one network (BUS-BRA: the seed's biased design)."""
    if args.dataset == "waterbirds":
        return load_dataset("waterbirds", args.data_dir)
    return condition_dataset(restrict_busbra(load_dataset("busbra", args.data_dir)), busbra_spec(), BUSBRA_STRENGTH, seed)


def embeddings_for(args, backbone: str, seed: int) -> dict:
    """Train the ERM network once and embed its three splits; ``{split: path}`` of the cached .npz."""
    paths = {s: os.path.join(args.cache, f"{args.dataset}_{backbone}_e{args.epochs}_seed{seed}_{s}.npz") for s in ("train", "val", "test")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    ds = dataset_for(args, seed)
    conf = DATASETS[args.dataset]
    tmp = tempfile.mkdtemp(prefix="wsca-mid-")
    try:
        cfg = TrainConfig(setting="fine_tuned", backbone=backbone, epochs=args.epochs, batch_size=64,
                          widths=conf["widths"] if backbone == "small_cnn" else None, class_weights="none", seed=seed)
        fit(ds, conf["primary"], (), cfg, run_dir=tmp, progress=False)
        for s, p in paths.items():
            save_embeddings(p, embed(tmp, ds, s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def run(args) -> None:
    os.makedirs(args.cache, exist_ok=True)
    conf = DATASETS[args.dataset]
    path = os.path.join(args.out, RUNS)
    done = runner.done_keys(path, ("dataset", "backbone", "seed", "epochs", "protocol"),
                            {"dataset": "waterbirds", "protocol": 1})
    for backbone in args.backbones.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            if (args.dataset, backbone, seed, args.epochs, PROTOCOL) in done:
                continue
            t0 = time.time()
            paths = embeddings_for(args, backbone, seed)
            t_train = time.time() - t0
            splits = {s: load_embeddings(p) for s, p in paths.items()}
            p, g = conf["primary"], conf["groups"]
            tr = split_arrays(splits["train"], p, g, what="train")
            va = split_arrays(splits["val"], p, g, tr["classes"], what="val")
            te = split_arrays(splits["test"], p, g, tr["classes"], what="test")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = MidConfig().replace(groups=g, band=args.band, verify=[conf["verify"]], bootstrap=args.bootstrap,
                                             permutations=args.permutations, seed=seed)
                rec, _ = analyze_mid(tr, va, te, config)
                pub, _ = analyze_mid(tr, va, te, config.replace(methods=["mid", "dfr"], c_grid="published", verify=[]))
            row = {"dataset": args.dataset, "backbone": backbone, "seed": seed, "epochs": args.epochs, "protocol": PROTOCOL,
                   "wsca_version": wsca.__version__, "train_seconds": round(t_train, 1),
                   "seconds": round(time.time() - t0, 1), **rec, "published_grid": pub["methods"]}
            runner.append_record(path, row, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
            m = rec["methods"]
            print(f"{args.dataset} {backbone} seed {seed}: " + ", ".join(f"{k} {v['worst_group']:.3f}" for k, v in m.items())
                  + f" (worst group) [{row['seconds']:.0f} s]", flush=True)


def _ms(x) -> str:
    x = np.asarray([v for v in x if v is not None], float)
    if len(x) == 0:
        return ""
    return f"{100 * x.mean():.1f} ± {100 * x.std(ddof=1):.1f}" if len(x) > 1 else f"{100 * x[0]:.1f}"


def load_runs(out: str) -> pd.DataFrame:
    runs = runner.records_frame(os.path.join(out, RUNS))
    for col, default in (("dataset", "waterbirds"), ("protocol", 1)):
        if col not in runs:
            runs[col] = default
        runs[col] = runs[col].fillna(default)
    return runs


def paired(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Mean of the paired differences ``a - b`` over seeds ``(S,)`` with its t interval."""
    from scipy import stats as sps
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2:
        return {"n": len(d), "mean": float(d.mean()) if len(d) else None, "ci": None, "per_seed": d.tolist()}
    half = sps.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return {"n": len(d), "mean": float(d.mean()), "ci": [float(d.mean() - half), float(d.mean() + half)],
            "per_seed": d.tolist()}


def _pt(x) -> str:
    return f"{100 * x:+.1f}"


def pair_rows(g: pd.DataFrame) -> list[tuple[str, dict]]:
    """``[(label, paired(...))]`` of :data:`PAIRS` for one setting's protocol-2 runs (worst-group accuracy)."""
    names = set(g.iloc[0]["methods"])
    out = []
    for a, b in PAIRS:
        if a in names and b in names:
            wa, wb = ([r[k]["worst_group"] for r in g.methods] for k in (a, b))
            out.append((f"{a} - {b}", paired(np.array(wa), np.array(wb))))
    return out


def simulation_text(out: str) -> str:
    """A sentence on ``mid_simulation_runs.jsonl`` (``experiments/mid_simulation.py``), or "" without it."""
    sim = runner.records_frame(os.path.join(out, "mid_simulation_runs.jsonl"), missing_ok=True)
    if not len(sim):
        return ""
    parts, above, below = [], 0, 0
    for s, g in sim.groupby("strength"):
        v = {k: paired(np.array([m["mid"]["worst_group"] for m in g.methods]), np.array([m[k]["worst_group"] for m in g.methods]))
             for k in ("class_balanced", "mid_oracle")}
        parts.append(f"{s:g}: MID - class_balanced {_pt(v['class_balanced']['mean'])} [{_pt(v['class_balanced']['ci'][0])}, "
                     f"{_pt(v['class_balanced']['ci'][1])}], MID - MID-oracle {_pt(v['mid_oracle']['mean'])} "
                     f"[{_pt(v['mid_oracle']['ci'][0])}, {_pt(v['mid_oracle']['ci'][1])}] ({len(g)} seeds; minority share "
                     f"{g.minority_share.mean():.2f} of all rows, {g.band_minority_share.mean():.2f} of the band)")
        above += v["class_balanced"]["ci"][0] > 0
        below += v["class_balanced"]["ci"][1] < 0
    return (" On simulated embeddings whose band is enriched for the minority groups by construction "
            "([experiments/results/mid_simulation.md](experiments/results/mid_simulation.md)), worst-group points by "
            "the strength of the spurious correlation in the validation rows, " + "; ".join(parts)
            + f": MID is above class balancing with its interval above 0 at {above} of {sim.strength.nunique()} "
            f"strengths and below it with its interval below 0 at {below}.")


def readme_text(out: str) -> str:
    """The README's ``mid`` paragraph, from the records."""
    runs = load_runs(out)
    cur = runs[runs.protocol == PROTOCOL]
    parts = []
    for (dataset, backbone, epochs), g in cur.groupby(["dataset", "backbone", "epochs"], sort=False):
        pairs = dict(pair_rows(g))
        txt = "; ".join(f"{k} {_pt(v['mean'])} [{_pt(v['ci'][0])}, {_pt(v['ci'][1])}]" for k, v in pairs.items()
                        if k in ("mid - erm", "mid - class_balanced", "mid - random_band", "dfr - mid") and v["ci"])
        parts.append(f"{dataset}, {backbone} ({len(g)} seeds, {epochs} epochs): worst-group accuracy "
                     + ", ".join(f"{k} {_ms([r[k]['worst_group'] for r in g.methods])}" for k in g.iloc[0]["methods"])
                     + f" %; paired differences in points [95% t interval over seeds]: {txt}")
    if not parts:
        old = runs[runs.protocol != PROTOCOL]
        n = old.groupby(["dataset", "backbone"]).size()
        return ("**Mitigation** ([experiments/results/waterbirds_mid.md](experiments/results/waterbirds_mid.md), `wsca mid`; "
                f"rendered from its records): only the first protocol's runs are recorded ({', '.join(f'{d} {b} {k} seeds' for (d, b), k in n.items())}: "
                "ERM, a degenerate JTT, MID, MID-oracle and DFR on DFR's published C grid, without the class-balanced "
                "and random-band controls); the ten-seed study with the controls (`experiments/waterbirds_mid.py`) has "
                "not been run yet, so this README makes no claim that mining adds anything over class balancing on "
                "real data." + simulation_text(out) + "\n")
    return ("**Mitigation** ([experiments/results/waterbirds_mid.md](experiments/results/waterbirds_mid.md), `wsca mid`; "
            "rendered from its records): last layers retrained on the validation rows, scored on the test rows "
            "(mean ± SD over seeds). " + "; ".join(parts) + ". Published for orientation (ResNet-50, ImageNet-pretrained, "
            "full resolution, Waterbirds): ERM 74.9, DFR 92.9 worst-group." + simulation_text(out) + "\n")


def _method_table(g: pd.DataFrame, conf: dict, dataset: str, plain: bool) -> list[str]:
    lines = ["| method | worst-group accuracy, % (mean ± SD over seeds) | per run [95% interval] | mean accuracy, % "
             "(training-share weighted) | " + ("plain mean, % | " if plain else "")
             + f"max \\|WSC\\| head x {conf['verify']} (within-class eta; per run) | published worst-group |",
             "|---|---|---|---|---|" + ("---|" if plain else "") + "---|"]
    for name in g.iloc[0]["methods"]:
        ms = [r[name] for r in g.methods]
        per_run = "; ".join(f"{100 * m['worst_group']:.1f} [{100 * m['worst_group_ci'][0]:.1f}, "
                            f"{100 * m['worst_group_ci'][1]:.1f}]" for m in ms)
        w = "; ".join("" if not m["wsc"] else "all-zero head" if m["wsc"][conf["verify"]]["max_abs_wsc"] is None
                      else f"{m['wsc'][conf['verify']]['max_abs_wsc']:.2f} (eta {m['wsc'][conf['verify']]['within_class_eta']:.2f})"
                      for m in ms)
        lines.append(f"| {name} | {_ms([m['worst_group'] for m in ms])} | {per_run} | {_ms([m['mean'] for m in ms])} | "
                     + (f"{_ms([m.get('mean_plain') for m in ms])} | " if plain else "")
                     + f"{w} | {PUBLISHED.get(name, '') if dataset == 'waterbirds' else ''} |")
    return lines


def report(out: str) -> str:
    runs = load_runs(out)
    lines = ["# Mitigation on Waterbirds and BUS-BRA (rendered from `waterbirds_mid_runs.jsonl` by `experiments/waterbirds_mid.py`)", "",
             "ERM networks trained on Waterbirds' training split at 32 px (`--class-weights none`; group = bird x "
             f"place) and on BUS-BRA's biased design (strength {BUSBRA_STRENGTH:g}; group = malignant x scanner), last layers "
             "retrained on the validation rows and scored on the test rows. Worst-group "
             "accuracy: the minimum over the four groups; mean accuracy: per-group accuracies weighted by the training "
             "groups' shares (the convention of DFR's paper); plain mean: the share of all test rows right (DFR's "
             "script). Intervals per run: exact (Clopper-Pearson per group, Bonferroni) for the worst group, stratified "
             "bootstrap for the mean. Paired differences: per seed, the same network's heads; mean over seeds with "
             "its 95% t interval.", ""]
    cur, old = runs[runs.protocol == PROTOCOL], runs[runs.protocol != PROTOCOL]
    if not len(cur):
        lines += ["No protocol-2 runs recorded yet (the controls `class_balanced` and `random_band`, JTT as published, "
                  "the C grid 1e-3..1e2; ten seeds per setting: `experiments/waterbirds_mid.py`).", ""]
    for (dataset, backbone, epochs), g in cur.groupby(["dataset", "backbone", "epochs"], sort=False):
        conf = DATASETS[dataset]
        seeds = sorted(int(s) for s in g.seed)
        lines += [f"## {dataset}: {backbone}, {epochs} epochs, seeds {', '.join(map(str, seeds))}", ""]
        lines += _method_table(g, conf, dataset, plain=True)
        if "published_grid" in g:
            lines += ["", "On DFR's published C grid (0.01 to 1) instead: "
                      + "; ".join(f"{k} {_ms([r[k]['worst_group'] for r in g.published_grid])} % worst-group (C = 1.0, "
                                  f"the grid's largest, chosen in {sum(r[k]['C'] == 1.0 for r in g.published_grid)} of "
                                  f"{len(g)} runs)" for k in ("dfr", "mid")) + "."]
        lines += ["", "| paired difference (worst group) | seeds | mean, points | 95% t interval | per seed |", "|---|---|---|---|---|"]
        for label, v in pair_rows(g):
            ci = "n/a" if not v["ci"] else f"[{_pt(v['ci'][0])}, {_pt(v['ci'][1])}]"
            lines.append(f"| {label} | {v['n']} | {_pt(v['mean'])} | {ci} | {', '.join(_pt(x) for x in v['per_seed'])} |")
        jtt = [r["jtt"] for r in g.methods if "jtt" in r]
        if jtt:
            lines += ["", "JTT per run (identification penalty C, upweight, share of validation rows it gets wrong, "
                      "share of the weight on them): " + "; ".join(
                          f"{j.get('id_C')}, {j.get('upweight')}, {j.get('error_share', float('nan')):.2f}, "
                          f"{j.get('weight_on_errors', float('nan')):.2f}" + (" (degenerate)" if j.get("degenerate") else
                                                                             " (below the majority rate)" if j.get("below_majority") else "")
                          for j in jtt) + "."]
        lines += _band_lines(g, conf)
    if len(old):
        lines += ["## Earlier runs (protocol 1, issue 12: ERM, JTT upweighting ERM's own errors x20, MID, MID-oracle and "
                  "DFR on DFR's published C grid; no controls)", ""]
        for (dataset, backbone, epochs), g in old.groupby(["dataset", "backbone", "epochs"], sort=False):
            seeds = sorted(int(s) for s in g.seed)
            lines += [f"### {dataset}: {backbone}, {epochs} epochs, seeds {', '.join(map(str, seeds))}", ""]
            lines += _method_table(g, DATASETS[dataset], dataset, plain=False)
            lines += [""]
    return "\n".join(lines) + "\n"


def _band_lines(g: pd.DataFrame, conf: dict) -> list[str]:
    lines = ["", "Is the band enriched for the minority groups (odds ratio [exact 95%], Holm p; per run)?", ""]
    for _, r in g.iterrows():
        e = {x["value"]: x for x in r["band"]["enrichment"] if x["column"] == "group"}
        txt = "; ".join(f"{v}: share {e[v]['share_subset']:.2f} vs {e[v]['share_all']:.2f}, OR {e[v]['odds_ratio']:.1f} "
                        f"[{e[v]['ci_low']:.1f}, {e[v]['ci_high']:.1f}], p {e[v]['p_holm']:.2g}"
                        for v in (conf["minority"] or sorted(e)) if v in e)
        lines.append(f"- seed {r.seed}: band {r['band']['n']} rows, k = {r['k']}; {txt}")
    return lines + [""]


def build_parser():
    def arguments(p):
        p.add_argument("--dataset", default="waterbirds", choices=sorted(DATASETS))
        p.add_argument("--backbones", default="small_cnn,resnet18")
        p.add_argument("--seeds", default=",".join(map(str, range(10))))
        p.add_argument("--epochs", type=int, default=10,
                       help="10 on Waterbirds; the induced-shortcut runs used 20 on BUS-BRA")
        p.add_argument("--band", type=float, default=0.2)
        p.add_argument("--bootstrap", type=int, default=50)
        p.add_argument("--permutations", type=int, default=50)
        p.add_argument("--cache", default=os.path.expanduser("~/.cache/wsca_jax/waterbirds_mid"))
    return runner.parser(__doc__, arguments)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {"waterbirds_mid.md": lambda a: report(a.out)})


if __name__ == "__main__":
    main()
