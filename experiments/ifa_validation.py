"""Validation of integrated feature analysis (issue 11; METHOD.md section 2) on trained networks.

* Known answers on every trained network: CAM-logit Pearson r on the GAP + linear head (>= 0.999:
  the summed CAM is the logit up to the bias), Grad-CAM equal to CAM at the last layer (``ReLU(CAM) /
  (h w)``), the decomposition at 100% of the channels reproducing the model's AUROC.
* Known location: PneumoniaMNIST with a stamped artefact (a text band along the top rows, issue 4's
  design) at bias strengths 0 / 0.5 / 0.9, several seeds, fine-tuned. The stamp leans on class 1
  (pneumonia). Per network: the share of class-1 CAM mass inside the stamp on stamped test images
  (common scale), the share of the decision's importance on the channels that carry the artefact
  (with its permutation p against random channel sets), and max |WSC| (primary head x artefact probe)
  with its permutation p on the training embeddings. Do "where" (IFA) and "whether" (WSC) agree?
* BUS-BRA malignancy, the full (natural) design: smallest sufficient channel fraction, consistency r
  (unscaled, common scale, per-image scale), the scanner channels' share of the decision; its CAMs on
  the common scale are ``results/ifa_busbra_cams.png`` (git-ignored: it shows dataset images).

One JSON line per network in ``results/ifa_runs.jsonl`` (a rerun skips networks already there);
``results/ifa.md`` is rendered from it.

    .venv/bin/python experiments/ifa_validation.py                 # everything (about 20 min, 2 cores)
    .venv/bin/python experiments/ifa_validation.py --report-only
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
from wsca_jax.ifa import (IfaConfig, apply_scale, common_scale, ifa_arrays, ifa_for_run, region_mass, resize_maps,
                          split_at)
from wsca_jax.training.data import load_dataset
from wsca_jax.training.embed import embed
from wsca_jax.training.train import TrainConfig, fit, load_run
from wsca_jax.validation.experiment import EXPERIMENT_WIDTHS, artefact_spec, condition_dataset, restrict_busbra

RUNS = "ifa_runs.jsonl"
STRENGTHS = (0.0, 0.5, 0.9)


def _stamp_region(image_shape) -> tuple:
    """The text band of ``stamp_artefact``: the top ``max(2, H // 10)`` rows, every column."""
    H, W = image_shape[:2]
    return 0, max(2, H // 10), 0, W


def known_answers(run_dir: str, images: np.ndarray, rec: dict) -> dict:
    """Grad-CAM against CAM at the last layer, and the checks already in the IFA record."""
    model, params, run = load_run(run_dir, "best")
    n_cls = len(run["tasks"][0]["classes"])
    split = split_at(model, params, "backbone", columns=(0, n_cls))
    x = images[:128]
    cam = ifa_arrays(split, x, None, "cam")
    grad = ifa_arrays(split, x, None, "gradcam")
    hw = cam["cam"].shape[1] * cam["cam"].shape[2]
    ref = np.maximum(cam["cam"], 0) / hw
    err = float(np.max(np.abs(grad["cam"] - ref)) / max(1e-30, np.max(np.abs(ref))))
    full = [r for r in rec["decomposition"] if r["fraction"] == 1.0]
    return {"cam_logit_r": rec["consistency"]["unscaled"]["pearson_r"], "gradcam_vs_cam_rel_err": err,
            "map_shape": list(cam["cam"].shape[1:]),
            "auroc_full_model": rec["full_model"]["auroc"],
            "auroc_at_fraction_1": {r["mode"]: r["auroc"] for r in full}}


def layer_masses(run_dir: str, images: np.ndarray, stamped: np.ndarray, region: tuple, layers) -> dict:
    """Stamp mass of class-1 maps at other layers: ``{layer: {method: {stamped, unstamped, map_shape}}}``.

    Grad-CAM and gradient x activation of the predicted class at each named backbone submodule
    (``backbone``: the last maps), on the common scale of that layer and method, resized to the image;
    the share of positive mass inside the stamp for images predicted class 1, stamped and unstamped."""
    model, params, run = load_run(run_dir, "best")
    n_cls = len(run["tasks"][0]["classes"])
    out = {}
    for layer in layers:
        split = split_at(model, params, layer, columns=(0, n_cls))
        out[layer] = {}
        for method in ("gradcam", "gradxact"):
            r = ifa_arrays(split, images, None, method)
            low, high = common_scale(r["cam_max"], r["cam_min"])
            scaled = resize_maps(apply_scale(r["cam"], low, high), images.shape[1:3])
            t = r["target"]
            ms = region_mass(scaled[stamped], region, t[stamped])
            mu = region_mass(scaled[~stamped], region, t[~stamped])
            out[layer][method] = {"stamped": ms.get(1, {}).get("mass_in_region"),
                                  "unstamped": mu.get(1, {}).get("mass_in_region"),
                                  "map_shape": list(r["cam"].shape[1:])}
    return out


def analyse_network(run_dir: str, ds, spec_conf: str, primary: str, region: tuple | None, seed: int,
                    permutations: int, cam_figure: str | None = None, layers=()) -> dict:
    """IFA on the test split, WSC on the training embeddings, for one trained network (and its CAM
    figure on the common vs the per-image scale to ``cam_figure``)."""
    config = IfaConfig().replace(tasks=[spec_conf], region=region, seed=seed)
    rec, arrays, images = ifa_for_run(run_dir, ds, "test", "best", config=config)
    if cam_figure:
        from wsca_jax.report import ifa_figures
        with open(cam_figure, "wb") as f:
            f.write(ifa_figures(rec, arrays, images)["ifa_cams.png"])
    out = {"ifa": {k: rec[k] for k in ("accuracy", "smallest_sufficient_fraction", "consistency", "channels")},
           "confounder": {k: v for k, v in rec["confounders"][spec_conf].items() if k != "contribution"},
           "known": known_answers(run_dir, images, rec),
           "decomposition": rec["decomposition"]}
    if region is not None:
        sub = ds.select_split("test")
        stamped = (np.asarray(sub.columns[spec_conf]) == "stamped")[arrays["rows"]]   # the rows analysed
        scaled = resize_maps(arrays["cams_common"], images.shape[1:3])
        t = arrays["target"]
        out["mass_stamped"] = {str(c): v["mass_in_region"] for c, v in region_mass(scaled[stamped], region, t[stamped]).items()}
        out["mass_unstamped"] = {str(c): v["mass_in_region"] for c, v in
                                 region_mass(scaled[~stamped], region, t[~stamped]).items()}
        out["area_share"] = (region[1] - region[0]) * (region[3] - region[2]) / float(np.prod(images.shape[1:3]))
        if layers:
            out["layers"] = layer_masses(run_dir, images, stamped, region, layers)
    arr = embed(run_dir, ds, "train")
    meta = pd.DataFrame({primary: arr[primary], spec_conf: arr[spec_conf], "group": arr["group"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # bootstrap=0: the study was run when the API's bootstrap default was 0 (it reports no interval)
        config = wsca.AnalysisConfig().replace(tasks=[spec_conf], categorical=[spec_conf], group_column="group",
                                               bootstrap=0, permutations=permutations, seed=seed)
        r = wsca.analyze(arr["embeddings"], meta, primary, arr[f"head_{primary}"], config=config)
    s = r.tasks[spec_conf].summary
    out["wsc"] = {"max_abs_wsc": s["max_abs_wsc"], "p_value": s["p_value"], "null_q95": s.get("null_q95")}
    return out


def run(args) -> None:
    path = os.path.join(args.out, args.records)
    done = runner.done_keys(path, ("dataset", "strength", "seed"))
    jobs = [("pneumoniamnist", s, seed) for seed in args.seeds for s in args.strengths]
    if args.busbra:
        jobs.append(("busbra", None, 0))
    cache = {}
    for dataset, strength, seed in jobs:
        if (dataset, strength, seed) in done:
            continue
        if dataset not in cache:
            ds = load_dataset(dataset, args.data_dir)
            if dataset == "busbra":
                cache[dataset] = restrict_busbra(ds)
            else:
                tr = np.flatnonzero(ds.split == 0)
                keep = np.random.default_rng(0).choice(tr, min(args.train_rows, len(tr)), replace=False)
                cache[dataset] = ds.subset(np.sort(np.concatenate([keep, np.flatnonzero(ds.split != 0)])))
        ds = cache[dataset]
        if dataset == "busbra":
            cd, primary, conf, region = ds, "malignant", "device", None
        else:
            spec = artefact_spec(dataset)
            cd, primary, conf = condition_dataset(ds, spec, strength, seed), spec.primary, spec.confounder
            region = _stamp_region(cd.images.shape[1:])
        tmp = tempfile.mkdtemp(prefix="wsca-ifa-")
        t0 = time.time()
        try:
            cfg = TrainConfig(epochs=args.epochs, batch_size=32, widths=EXPERIMENT_WIDTHS, setting="fine_tuned", seed=seed)
            record = fit(cd, primary, (), cfg, run_dir=tmp)
            row = {"dataset": dataset, "strength": strength, "seed": seed, "wsca_version": wsca.__version__,
                   "epochs": args.epochs, "primary_auroc": record.get("test", {}).get(primary, {}).get("auroc"),
                   **analyse_network(tmp, cd, conf, primary, region, seed, args.permutations,
                                     os.path.join(args.out, "ifa_busbra_cams.png") if dataset == "busbra" else None,
                                     layers=args.layers)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row["seconds"] = round(time.time() - t0, 1)
        runner.append_record(path, row, default=float)
        print(f"{dataset} strength {strength} seed {seed}: {row['seconds']} s", flush=True)


# ---------------------------------------------------------------------------------------------
# Report


def _f(x, nd=3):
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}f}"


def load(out: str) -> pd.DataFrame:
    return runner.records_frame(os.path.join(out, RUNS))


def dose_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per PneumoniaMNIST network: stamp mass (class 1, stamped test images), artefact channels' decision
    share and p, max |WSC| and p."""
    rows = []
    for _, r in runs[runs.dataset == "pneumoniamnist"].iterrows():
        rows.append({"strength": r.strength, "seed": r.seed, "primary_auroc": r.primary_auroc,
                     "mass_1": r.mass_stamped.get("1"), "mass_0": r.mass_stamped.get("0"),
                     "mass_1_unstamped": r.mass_unstamped.get("1"), "area": r.area_share,
                     "share": r.confounder["decision_share"], "share_random": r.confounder["random_share_mean"],
                     "share_p": r.confounder["p_value"], "n_channels": len(r.confounder["channels"]),
                     "wsc": r.wsc["max_abs_wsc"], "wsc_p": r.wsc["p_value"],
                     "contrast": r.mass_stamped.get("1") - r.mass_unstamped.get("1")})
    cols = ["strength", "seed", "primary_auroc", "mass_1", "mass_0", "mass_1_unstamped", "area", "share",
            "share_random", "share_p", "n_channels", "wsc", "wsc_p", "contrast"]
    return pd.DataFrame(rows, columns=cols).sort_values(["strength", "seed"])


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr
    return float(spearmanr(a, b).statistic)


def report(out: str) -> str:
    runs = load(out)
    dose = dose_table(runs)
    lines = ["# Integrated feature analysis: validation (rendered from `ifa_runs.jsonl` by "
             "`experiments/ifa_validation.py`)", "",
             "Every network: a small CNN (widths " + str(EXPERIMENT_WIDTHS) + f", {int(runs.epochs.iloc[0])} epochs, "
             "fine-tuned), IFA with CAM on the test split (target: the predicted class; profiles over correctly "
             "classified images; 20 random channel masks per fraction), WSC of the primary head against the "
             "confounder probe on the training embeddings (permutation p, groups kept).", "",
             "## Known answers", "",
             "| network | CAM-logit r (per class) | Grad-CAM vs ReLU(CAM) / hw (max error / max value) | AUROC: model | "
             "AUROC at 100% (importance / difference / random) |", "|---|---|---|---|---|"]
    for _, r in runs.iterrows():
        k = r.known
        name = f"{r.dataset} {'' if r.strength is None or pd.isna(r.strength) else f's={r.strength:g} '}seed {r.seed}"
        at1 = " / ".join(_f(k["auroc_at_fraction_1"].get(m), 4) for m in ("importance", "difference", "random"))
        lines.append(f"| {name} | {', '.join(_f(v, 5) for v in k['cam_logit_r'].values())} | "
                     f"{k['gradcam_vs_cam_rel_err']:.1e} | {_f(k['auroc_full_model'], 4)} | {at1} |")
    if len(dose):
        g = dose.groupby("strength")
        lines += ["", "## Known location: a stamped artefact on PneumoniaMNIST", "",
                  "The stamp (top rows) is on half of each class at strength 0 and on the pneumonia class (1) "
                  "more often as the strength grows (training rows only; test rows stamped on half of each "
                  "class). Stamp mass: the share of positive class-1 CAM mass (common scale, resized to the "
                  f"image) inside the stamp, on stamped test images (the stamp covers {_f(dose.area.iloc[0], 3)} of "
                  "the image). Decision share: the part of the decision's channel importance on the channels "
                  "that carry the artefact (a probe on the pooled maps), against random channel sets of the "
                  "same size (p). max |WSC|: primary head x artefact probe.", "",
                  "| strength | seed | primary AUROC | stamp mass, class 1 (unstamped images) | decision share "
                  "(random sets, p) | artefact channels | max \\|WSC\\| (p) |", "|---|---|---|---|---|---|---|"]
        for _, x in dose.iterrows():
            lines.append(f"| {x.strength:g} | {int(x.seed)} | {_f(x.primary_auroc)} | {_f(x.mass_1)} ({_f(x.mass_1_unstamped)}) | "
                         f"{_f(x.share)} ({_f(x.share_random)}, {_f(x.share_p)}) | {int(x.n_channels)} | "
                         f"{_f(x.wsc)} ({_f(x.wsc_p)}) |")
        lines += ["", "Mean over seeds (contrast: stamp mass on stamped minus unstamped images of class 1, the same "
                  "network's own baseline; a column added after a first look at the results):", "",
                  "| strength | networks | stamp mass, class 1 | contrast | decision share | "
                  "max \\|WSC\\| | WSC p <= 0.05 | share p <= 0.05 |", "|---|---|---|---|---|---|---|---|"]
        for s, x in g:
            lines.append(f"| {s:g} | {len(x)} | {_f(x.mass_1.mean())} ± {_f(x.mass_1.std())} | "
                         f"{_f(x.contrast.mean())} ± {_f(x.contrast.std())} | "
                         f"{_f(x.share.mean())} ± {_f(x.share.std())} | {_f(x.wsc.mean())} ± {_f(x.wsc.std())} | "
                         f"{int((x.wsc_p <= 0.05).sum())} of {len(x)} | {int((x.share_p <= 0.05).sum())} of {len(x)} |")
        m = g[["mass_1", "contrast", "share", "wsc"]].mean()
        rises = {k: bool(np.all(np.diff(m[k].to_numpy()) > 0)) for k in ("mass_1", "contrast", "share", "wsc")}
        lines += ["", "Across networks (Spearman rank correlation, n = " + str(len(dose)) + "): stamp mass vs max |WSC| "
                  f"{_f(_spearman(dose.mass_1, dose.wsc), 2)}; decision share vs max |WSC| "
                  f"{_f(_spearman(dose.share, dose.wsc), 2)}; stamp mass vs decision share "
                  f"{_f(_spearman(dose.mass_1, dose.share), 2)}; strength vs stamp mass "
                  f"{_f(_spearman(dose.strength, dose.mass_1), 2)}, vs decision share "
                  f"{_f(_spearman(dose.strength, dose.share), 2)}, vs max |WSC| {_f(_spearman(dose.strength, dose.wsc), 2)}, "
                  f"vs the contrast {_f(_spearman(dose.strength, dose.contrast), 2)}; the contrast vs max |WSC| "
                  f"{_f(_spearman(dose.contrast, dose.wsc), 2)}.",
                  ""]
        if len(m) > 1:
            lines += ["Mean over seeds rising with every step of strength: stamp mass "
                      + ("yes" if rises["mass_1"] else "no") + ", contrast " + ("yes" if rises["contrast"] else "no")
                      + ", decision share " + ("yes" if rises["share"] else "no")
                      + ", max |WSC| " + ("yes" if rises["wsc"] else "no") + "."]
    bb = runs[runs.dataset == "busbra"]
    if len(bb):
        r = bb.iloc[0]
        cons = r.ifa["consistency"]
        lines += ["", "## BUS-BRA malignancy (the full design)", "",
                  f"Primary AUROC {_f(r.primary_auroc)}; {r.ifa['channels']} channels; smallest channel fraction "
                  "within 0.01 AUROC of the full model: "
                  + ", ".join(f"{k} {v:g}" if v is not None else f"{k} none" for k, v in r.ifa["smallest_sufficient_fraction"].items())
                  + " (random: the median AUROC of the random masks; AUROC does not depend on the masked logit's "
                  "scale or offset, the accuracy does). Consistency "
                  "(Pearson r between the summed map and the logit, per class): "
                  + "; ".join(f"{k}: {', '.join(_f(v) for v in d['pearson_r'].values())}" for k, d in cons.items())
                  + f". Scanner channels: {len(r.confounder['channels'])}, decision share {_f(r.confounder['decision_share'])} "
                  f"(random sets {_f(r.confounder['random_share_mean'])}, p {_f(r.confounder['p_value'])}); max |WSC| "
                  f"{_f(r.wsc['max_abs_wsc'])} (p {_f(r.wsc['p_value'])}). CAMs on the common vs the per-image scale: "
                  "`ifa_busbra_cams.png`, written beside this file by the script and not committed (it shows "
                  "dataset images).", "", "| mode | fraction | channels | AUROC (random: median [min, max]) | accuracy | "
                  "CAM similarity |", "|---|---|---|---|---|---|"]
        for d in r.decomposition:
            band = f" [{_f(d['auroc_low'])}, {_f(d['auroc_high'])}]" if "auroc_low" in d else ""
            lines.append(f"| {d['mode']} | {d['fraction']:g} | {d['channels']} | {_f(d['auroc'])}{band} | "
                         f"{_f(d['accuracy'])} | {_f(d.get('cam_similarity'))} |")
    lines += ["", f"Run time: {runs.seconds.sum() / 60:.0f} minutes for {len(runs)} networks (training, IFA and WSC; "
                  "2 CPU cores)."]
    lines += layers_section(out)
    return "\n".join(lines) + "\n"


LAYERS_RECORDS = "ifa_layers_runs.jsonl"


def layer_table(out: str) -> pd.DataFrame:
    """One row per network x layer x method of the supplementary run (``--layers``)."""
    rows = []
    for r in runner.read_records(os.path.join(out, LAYERS_RECORDS), missing_ok=True):
        for layer, d in r.get("layers", {}).items():
            for method, v in d.items():
                rows.append({"strength": r["strength"], "seed": r["seed"], "layer": layer, "method": method,
                             "shape": "x".join(map(str, v["map_shape"])), "stamped": v["stamped"],
                             "unstamped": v["unstamped"], "auroc": r["primary_auroc"], "wsc": r["wsc"]["max_abs_wsc"],
                             "wsc_p": r["wsc"]["p_value"], "share": r["confounder"]["decision_share"],
                             "share_p": r["confounder"]["p_value"]})
    t = pd.DataFrame(rows)
    if len(t):
        t["contrast"] = t.stamped - t.unstamped
    return t


def layers_section(out: str) -> list[str]:
    t = layer_table(out)
    if not len(t):
        return []
    nets = t.drop_duplicates(["strength", "seed"])
    lines = ["", "## Localisation at earlier layers (supplementary run, `" + LAYERS_RECORDS + "`)", "",
             "The last maps of these networks are 3x3 for a 28x28 image, coarser than the 2-row stamp. The same "
             "design trained again (strengths " + ", ".join(f"{s:g}" for s in sorted(nets.strength.unique()))
             + f"; {len(nets)} networks; strength 1: every pneumonia training image stamped, no normal one) and "
             "localised with Grad-CAM and gradient x activation at two earlier backbone layers as well as the last: "
             "the share of positive class-1 map mass inside the stamp (common scale of that layer and method, "
             "resized to the image) on stamped test images, and the contrast with the same network's unstamped "
             "class-1 images (the contrast was chosen after the first run's results; labelled so).", "",
             "| layer (map) | method | " + " | ".join(f"s={s:g}: stamp mass / contrast" for s in sorted(nets.strength.unique()))
             + " | Spearman with strength (mass, contrast) |", "|---|---|" + "---|" * (nets.strength.nunique() + 1)]
    for (layer, method), g in t.groupby(["layer", "method"], sort=False):
        m = g.groupby("strength")[["stamped", "contrast"]].mean()
        cells = " | ".join(f"{_f(m.stamped[s])} / {_f(m.contrast[s])}" for s in m.index)
        lines.append(f"| {layer} ({g['shape'].iloc[0]}) | {method} | {cells} | "
                     f"{_f(_spearman(g.strength, g.stamped), 2)}, {_f(_spearman(g.strength, g.contrast), 2)} |")
    rising = [f"{layer} {method}" for (layer, method), g in t.groupby(["layer", "method"], sort=False)
              if np.all(np.diff(g.groupby("strength").stamped.mean().to_numpy()) > 0)]
    best = max(((layer, method, _spearman(g.strength, g.stamped)) for (layer, method), g in
                t.groupby(["layer", "method"], sort=False)), key=lambda v: v[2])
    lines += ["", "Stamp mass (mean over seeds) rising with every step of strength: "
              + (", ".join(rising) if rising else "none") + f"; the strongest rank correlation with strength over "
              f"the {len(nets)} networks: {best[0]} {best[1]} ({best[2]:.2f}). At the last layer Grad-CAM and gradient "
              "x activation give the same maps on the common scale (the gradient is the head's weights / hw there)."]
    n = nets.groupby("strength")
    main = load(out)
    same = [(r.strength, r.seed) for _, r in nets.iterrows() if ((main.dataset == "pneumoniamnist")
            & (main.strength == r.strength) & (main.seed == r.seed) & (main.primary_auroc == r.auroc)).any()]
    if same:
        lines += ["", f"{len(same)} of these networks reproduce a network of the main table exactly (same strength "
                  "and seed, identical test AUROC: training is deterministic), so the rows at those strengths are the "
                  "same networks seen at more layers."]
    lines += ["", "The same networks (mean over seeds): primary test AUROC "
              + " / ".join(f"{x.auroc.mean():.3f}" for _, x in n) + "; max |WSC| "
              + " / ".join(f"{x.wsc.mean():.3f}" for _, x in n) + " (p <= 0.05 in "
              + ", ".join(f"{int((x.wsc_p <= 0.05).sum())}/{len(x)}" for _, x in n) + "); artefact channels' "
              "decision share at the last layer " + " / ".join(f"{x.share.mean():.3f}" for _, x in n)
              + " (p <= 0.05 in " + ", ".join(f"{int((x.share_p <= 0.05).sum())}/{len(x)}" for _, x in n) + ")."]
    return lines


def prose_namespace(out: str) -> dict:
    """Values for ``templates/readme_ifa.md``, from the records only."""
    from prose import namespace
    runs = load(out)
    dose = dose_table(runs)
    g = dose.groupby("strength")
    ms = lambda col: " / ".join(f"{x[col].mean():.3f}" for _, x in g)  # noqa: E731
    known = list(runs.known)
    full_ok = all(all(abs(v - k["auroc_full_model"]) < 1e-6 for v in k["auroc_at_fraction_1"].values()) for k in known)
    bb = runs[runs.dataset == "busbra"]
    ns = dict(n_networks=len(runs), min_r=min(min(v for v in k["cam_logit_r"].values() if v is not None) for k in known),
              max_gradcam_err=max(k["gradcam_vs_cam_rel_err"] for k in known), full_ok=full_ok,
              n_seeds=int(g.size().min()) if len(dose) else 0, strengths=" / ".join(f"{s:g}" for s, _ in g),
              mass_line=ms("mass_1"), share_line=ms("share"), wsc_line=ms("wsc"),
              wsc_sig=f"{int((dose.wsc_p <= 0.05).sum())} of {len(dose)}",
              rho_mass_wsc=_spearman(dose.mass_1, dose.wsc), rho_share_wsc=_spearman(dose.share, dose.wsc),
              contrast_line=ms("contrast"), auc_line=ms("primary_auroc"), area=f"{dose.area.iloc[0]:.3f}" if len(dose) else "n/a",
              rho_contrast=_spearman(dose.strength, dose.contrast), rho_contrast_wsc=_spearman(dose.contrast, dose.wsc),
              trend={k: ("rising with every step" if len(g) > 1 and np.all(np.diff(g[k].mean().to_numpy()) > 0)
                         else "not rising with every step") for k in ("mass_1", "contrast", "share", "wsc")},
              busbra_ssf="n/a", busbra_share="n/a", layers=_layers_namespace(out))
    if len(bb):
        r = bb.iloc[0]
        ns["busbra_ssf"] = ", ".join(f"{v:g} ({k})" if v is not None else f"none ({k})"
                                     for k, v in r.ifa["smallest_sufficient_fraction"].items())
        c = r.confounder
        ns["busbra_share"] = (f"{c['decision_share']:.3f} (random channel sets {c['random_share_mean']:.3f}, "
                              f"p {c['p_value']:.3f})")
    return namespace(**ns)


def _layers_namespace(out: str) -> dict | None:
    """The finest layer's gradient x activation dose response and strength 1's WSC, for the README."""
    t = layer_table(out)
    if not len(t):
        return None
    g = t[t.method == "gradxact"]
    layer = min(g.layer.unique(), key=lambda name: -int(g[g.layer == name]["shape"].iloc[0].split("x")[0]))
    g = g[g.layer == layer]
    m = g.groupby("strength").stamped.mean()
    top = g[g.strength == g.strength.max()]
    return {"n": int(len(g)), "strengths": " / ".join(f"{s:g}" for s in m.index), "layer": layer,
            "shape": g["shape"].iloc[0], "mass": " / ".join(f"{v:.3f}" for v in m), "rho": _spearman(g.strength, g.stamped),
            "wsc1": float(top.wsc.mean()), "wsc1_sig": f"{int((top.wsc_p <= 0.05).sum())} of {len(top)}",
            "share1": float(top.share.mean()), "share1_sig": f"{int((top.share_p <= 0.05).sum())} of {len(top)}"}


def build_parser():
    def arguments(p):
        p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
        p.add_argument("--strengths", type=lambda s: [float(v) for v in s.split(",")], default=list(STRENGTHS))
        p.add_argument("--epochs", type=int, default=20)
        p.add_argument("--train-rows", type=int, default=1200)
        p.add_argument("--permutations", type=int, default=200)
        p.add_argument("--no-busbra", dest="busbra", action="store_false")
        p.add_argument("--layers", type=lambda s: [v for v in s.split(",") if v], default=[],
                       help="also localise with Grad-CAM and gradient x activation at these backbone submodules "
                            "(e.g. conv0b,conv1b,backbone)")
        p.add_argument("--records", default=RUNS, help="the JSON-lines file the runs go to")
    return runner.parser(__doc__, arguments)


def main(argv=None) -> None:
    runner.run_study(build_parser().parse_args(argv), run, {"ifa.md": lambda a: report(a.out)})


if __name__ == "__main__":
    main()
