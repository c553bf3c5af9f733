"""``wsca demo``: the induced-shortcut validation in one command, with an HTML report.

Balanced vs biased training designs (:mod:`wsca_jax.validation.experiment`), each trained fine-tuned and
multi-task, one seed; WSC primary x confounder with bootstrap intervals and permutation p-values.
BUS-BRA (malignancy x scanner) when it is found, otherwise scikit-learn's bundled digits with a
stamped artefact (odd vs even digits x artefact), which needs no download.
"""

from __future__ import annotations

import json
import os
import time

from ..analysis.config import AnalysisConfig
from ..errors import require

RESAMPLING = AnalysisConfig().resampling      # the demo's bootstrap and permutation counts: the API's defaults
BIASED_STRENGTH = 0.9          # each class 90% + 10% x (base share) from its majority scanner (94.5% on BUS-BRA)
CONDITIONS = {"balanced": 0.0, "biased": BIASED_STRENGTH}
SETTINGS = ("fine_tuned", "multi_task")
DEFAULT_EPOCHS = {"busbra": 20, "digits": 12}
# a planted signature whose use is measured by intervention: a corner stamp on the balanced design,
# stamped on half of each class (association 0: encoded, useless to the decision) or on 90% of the
# positive and 10% of the negative class (association 0.8: it varies within classes, so the
# observational statistics can see it); fine-tuned only
PLANTED = {"unused": 0.0, "used": 0.8}
PLANTED_KIND, PLANTED_COLUMN = "corner_stamp", "planted"
CONTROL_INSET = 3                # the control stamp's rows: out of reach of training's 2-pixel wrap-around
PLANTED_SEED = 1000              # offset of the planted stamp's rows from the design's own draws


def demo_data(dataset: str = "auto", data_dir: str | None = None):
    """``(dataset, spec, note)`` for the demo: BUS-BRA when available, else digits with an artefact."""
    from ..training.data.sources import data_dir as resolve, load_busbra_npz, load_digits_dataset
    from .experiment import artefact_spec, busbra_spec, restrict_busbra

    require(dataset in ("auto", "busbra", "digits"), f"--dataset must be auto, busbra or digits, found {dataset!r}")
    path = os.path.join(resolve(data_dir), "busbra_64.npz")
    if dataset == "busbra" or (dataset == "auto" and os.path.isfile(path)):
        require(os.path.isfile(path), f"BUS-BRA: {path} not found; set WSCA_DATA_DIR or --data-dir")
        return restrict_busbra(load_busbra_npz(path)), busbra_spec(), f"BUS-BRA from {path}"
    note = ("BUS-BRA not found (no busbra_64.npz in --data-dir, $WSCA_DATA_DIR or ../shared/data): "
            "using scikit-learn's bundled digits (odd vs even) with a stamped artefact as the confounder")
    return load_digits_dataset(), artefact_spec("digits"), note


def _m(metrics: dict) -> dict:
    """The summary.json record of one condition (the contract keys first)."""
    keys = ("max_abs_wsc", "ci", "p_value", "primary_auroc", "confounder_probe_auroc", "p_value_conditional",
            "null_q95", "null_q95_conditional", "random_q95", "probe_max_abs_wsc", "source", "n_train",
            "test", "p_value_mcse", "ci_method", "ci_fallback", "decision_use", "statistics")
    out = {k: metrics.get(k) for k in keys}
    out["converged"] = (metrics.get("fit") or {}).get("converged")
    return out


def run_demo(out: str, dataset: str = "auto", data_dir: str | None = None, epochs: int | None = None,
             bootstrap: int = RESAMPLING.bootstrap, permutations: int = RESAMPLING.permutations, seed: int = 0,
             progress: bool = True) -> dict:
    """Run the demo and write ``out/summary.json``, ``out/report.html`` and one folder per condition.

    Returns:
      the summary: ``{"dataset", "conditions": {cond: {setting: M}}, ...}`` with M holding
      ``max_abs_wsc, ci, p_value, primary_auroc, confounder_probe_auroc`` (and more).
    """
    from .experiment import EXPERIMENT_WIDTHS, MT_TASK_WEIGHTS, condition_dataset, design_table, run_condition, verdict
    from ..report import atomic_folder, fill_folder, render_demo_html
    from ..training.config import TrainConfig

    require(not os.path.exists(out) or os.path.isdir(out), f"--out {out}: exists and is not a folder")
    analysis = AnalysisConfig().replace(bootstrap=bootstrap, permutations=permutations)   # checked before any work
    ds, spec, note = demo_data(dataset, data_dir)
    say = print if progress else (lambda *a, **k: None)            # progress; results print either way
    print(f"wsca demo: {note}")
    epochs = epochs or DEFAULT_EPOCHS.get(spec.dataset, 20)
    cfg = TrainConfig(epochs=epochs, batch_size=32, seed=seed, task_weights=MT_TASK_WEIGHTS,
                      widths=EXPERIMENT_WIDTHS if spec.dataset == "busbra" else None)
    t0 = time.time()
    results, summary, designs = {}, {}, {}
    for cond, strength in CONDITIONS.items():
        cd = condition_dataset(ds, spec, strength, seed)
        designs[cond] = design_table(cd, spec)
        for setting in SETTINGS:
            say(f"[{time.time() - t0:5.0f} s] {cond} / {setting}: training {int((cd.split == 0).sum())} images, "
                f"{epochs} epochs, then WSC with {bootstrap} bootstrap and {permutations} permutation refits")
            r = run_condition(cd, spec, setting, seed, train_cfg=cfg, config=analysis, progress=progress)
            results[(cond, setting)] = r
            summary.setdefault(cond, {})[setting] = _m(r["metrics"])
            if permutations:
                print(f"{cond} / {setting}: {verdict(r['metrics'])}; primary test AUROC "
                      f"{r['metrics']['primary_auroc']:.3f}")
            du = r["metrics"].get("decision_use")
            if du:
                print(f"{cond} / {setting}: decision use -- {du['verdict']}: {du['reason']}")
    planted, planted_results = run_planted(ds, spec, cfg, analysis, seed, say, t0)
    record = {"dataset": spec.dataset, "conditions": summary, "planted": planted,
              "settings": {"primary": spec.primary, "confounder": spec.confounder, "strengths": CONDITIONS,
                           "epochs": epochs, "bootstrap": bootstrap, "permutations": permutations, "seed": seed,
                           "null": f"labels permuted freely (p_value); p_value_conditional permutes within "
                                   f"{spec.primary} classes (alignment beyond the class-confounder association)"},
              "note": note, "seconds": round(time.time() - t0, 1)}

    def fill(tmp: str) -> None:
        folders = {f"{c}_{s}": r["result"] for (c, s), r in results.items()}
        folders.update({f"planted_{name}_fine_tuned": r for name, r in planted_results.items()})
        for name, result in folders.items():
            sub = os.path.join(tmp, name)
            os.makedirs(sub)
            fill_folder(result, sub)
        with open(os.path.join(tmp, "summary.json"), "w") as f:
            json.dump(record, f, indent=2, allow_nan=False)
        with open(os.path.join(tmp, "report.html"), "w") as f:
            f.write(render_demo_html(record, {k: v["result"] for k, v in results.items()}, designs, spec.confounder))

    atomic_folder(out, fill)
    print(f"wrote {out}/report.html and {out}/summary.json ({time.time() - t0:.0f} s)")
    return record


def run_planted(ds, spec, cfg, analysis, seed: int, say, t0: float) -> tuple[dict, dict]:
    """The planted-signature conditions (:data:`PLANTED`) on the balanced design, fine-tuned: each
    network's decision-use verdict for the stamp and its use measured by intervention on the clean
    test images (:func:`~wsca_jax.validation.intervention.intervention`, against a control stamp in
    the bottom-left corner). Returns ``(summary["planted"], {name: WscaResult})``."""
    import shutil
    import tempfile

    import numpy as np

    from .experiment import artefact_spec, condition_dataset, run_condition
    from .intervention import intervention
    # the balanced design (the digits' artefact design: the clean images, no second artefact)
    base = ds if spec.kind == "artefact" else condition_dataset(ds, spec, 0.0, seed)
    pspec = artefact_spec(spec.dataset, primary=spec.primary, kind=PLANTED_KIND, column=PLANTED_COLUMN)
    test = base.split == 2
    y = np.asarray(base.columns[spec.primary])[test].astype(int)
    out, results = {}, {}
    for name, assoc in PLANTED.items():
        say(f"[{time.time() - t0:5.0f} s] planted {PLANTED_KIND}, association {assoc:g} / fine_tuned: training, "
            "then the decision-use statistics and the intervention")
        cd = condition_dataset(base, pspec, assoc, seed + PLANTED_SEED)
        tmp = tempfile.mkdtemp(prefix="wsca-planted-")
        try:
            r = run_condition(cd, pspec, "fine_tuned", seed, train_cfg=cfg, config=analysis, conditional=False,
                              workdir=tmp, counterfactual=planted_counterfactuals(base, cd))
            truth = intervention(tmp, base.images[test], y, PLANTED_KIND, CONTROL_INSET)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        results[name] = r["result"]
        out[name] = {"association": assoc, **_m(r["metrics"]), "intervention": truth}
        du, a, c = out[name].get("decision_use") or {}, truth["artefact"], truth["control"]
        sh = (out[name].get("statistics") or {}).get("within_class_shift") or {}
        print(f"planted {PLANTED_KIND} ({name}, association {assoc:g}): test images stamped, the decision moves "
              f"{a['effect']:.2f} SD (control stamp {c['effect']:.2f} SD); observational within_class_shift "
              f"{_num(sh.get('estimate'))} [{', '.join(map(_num, sh.get('ci') or []))}]; decision use by the counterfactual -- "
              f"{du.get('verdict', 'not computed')}: {du.get('reason', '')}")
    return {"kind": PLANTED_KIND, "column": PLANTED_COLUMN, "setting": "fine_tuned", "conditions": out}, results


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def planted_counterfactuals(base, cd):
    """``(cf, control)`` copies of ``cd`` (``base`` with the planted stamp on some rows): every row's
    stamp toggled (stamped rows shown clean, clean rows stamped), and the control stamp (the other
    corner, :data:`CONTROL_INSET` rows up, never seen with the label) added to every row: each
    changes every row by one stamp, though removing a stamp and adding one need not move a decision
    alike."""
    import numpy as np

    from ..training.data import ImageDataset
    from ..training.data.shortcuts import stamp_artefact
    from .intervention import STAMP_SEED, control_images
    stamped = np.asarray(cd.columns[PLANTED_COLUMN]) == "stamped"
    on = stamp_artefact(base.images, np.ones(len(base), bool), PLANTED_KIND, seed=STAMP_SEED)
    toggled = np.where(stamped[:, None, None, None], base.images, on)
    return tuple(ImageDataset(cd.name, im, cd.columns, cd.split, cd.group)
                 for im in (toggled, control_images(cd.images, PLANTED_KIND, CONTROL_INSET)))


def comparison_rows(record: dict) -> list[dict]:
    """Flat rows (condition, setting, metrics) of a demo summary."""
    return [{"condition": c, "setting": s, **m} for c, by in record["conditions"].items() for s, m in by.items()]


__all__ = ["run_demo", "demo_data", "comparison_rows", "CONDITIONS", "BIASED_STRENGTH"]
