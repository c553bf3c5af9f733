"""Training: pure jit-compiled steps of (state, batch), optax AdamW with warmup + cosine, Orbax
checkpoints (latest and best) with exact resume, and the run's config stored beside the weights.

Layout of a run folder::

    RUN/run.json          config, task specs (names, class names), history, and the SHA-256 digest
                          of every saved checkpoint ("digests": {epoch: hex}), verified on every load
    RUN/ckpt/latest/<epoch>/   Orbax checkpoint of {params, opt_state, step} (the last two epochs)
    RUN/ckpt/best/<epoch>/     the first epoch with the best validation primary AUROC

A run folder belongs to one training: :func:`fit` refuses a folder that already holds files unless
it resumes that run (``resume=True``) or replaces it (``overwrite=True``, only for a wsca run folder).
Per epoch, ``run.json`` (with the new checkpoint's digest) is written before the checkpoint, so every
checkpoint on disk has a digest; a resume continues from the newest checkpoint that verifies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from .errors import WscaInputError, WscaWarning, require
from .io import atomic_write_text, check_out_dir
from .metrics import classification_metrics
from .progress import progress_bar
from .models import BACKBONES, SETTINGS, WscaModel, split_logits


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings (stored in ``run.json``)."""

    setting: str = "fine_tuned"
    backbone: str = "small_cnn"
    widths: tuple | None = None          # None: the backbone's default
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    augment: bool = True
    class_weights: bool = True
    task_weights: tuple | None = None    # one weight per head (primary first); None = equal
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A trained head: name, class names, and the integer labels' meaning."""

    name: str
    classes: tuple


def encode_labels(columns: dict, names: Sequence[str]) -> tuple[np.ndarray, list[TaskSpec]]:
    """Columns -> ``(N, T)`` int labels (-1 missing) and task specs.

    Classes are ordered exactly as :mod:`wsca_jax.tasks` orders them (numbers numerically), so
    an exported head's rows line up with the classes ``wsca analyze`` assigns.
    """
    import pandas as pd

    from .tasks import encode_categorical

    labels, specs = [], []
    for name in names:
        require(name in columns, f"task column {name!r} not in the dataset (columns: {', '.join(columns)})")
        lab, classes = encode_categorical(pd.Series(columns[name]))
        require(len(classes) >= 2, f"task column {name!r} has fewer than two classes")
        labels.append(lab.astype(np.int32))
        specs.append(TaskSpec(name, tuple(classes)))
    return np.stack(labels, 1), specs


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW with linear warmup then cosine decay over all steps."""
    total = max(2, cfg.epochs * steps_per_epoch)
    warm = min(max(1, int(cfg.warmup_epochs * steps_per_epoch)), total - 1)
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warm, total)
    return optax.adamw(schedule, weight_decay=cfg.weight_decay)


def _augment(rng, images):
    """Random horizontal flip and a shift of up to 2 pixels (per batch)."""
    k1, k2 = jax.random.split(rng)
    flip = jax.random.bernoulli(k1)
    images = jnp.where(flip, images[:, :, ::-1], images)
    shift = jax.random.randint(k2, (2,), -2, 3)
    return jnp.roll(images, (shift[0], shift[1]), axis=(1, 2))


def loss_fn(params, apply_fn, images, labels, class_w, head_classes, task_w=None):
    """Task-weighted mean over heads of the class-weighted CE over rows with a label.

    labels ``(B, T)`` int (-1 missing); class_w ``(T, K)``; task_w ``(T,)`` (default equal).
    """
    out = apply_fn({"params": params}, images)
    task_w = jnp.ones(len(head_classes)) if task_w is None else task_w
    total = 0.0
    for t, logits in enumerate(split_logits(out["logits"], head_classes)):
        y = labels[:, t]
        valid = (y >= 0).astype(jnp.float32)
        yc = jnp.maximum(y, 0)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yc)
        w = valid * class_w[t][yc]
        total = total + task_w[t] * jnp.sum(w * ce) / jnp.maximum(jnp.sum(w), 1e-6)
    return total / jnp.sum(task_w)


def make_train_step(head_classes: Sequence[int], augment: bool):
    """``train_step(state, images, labels, class_w, key) -> (state, loss)``: a pure, jit-compiled
    function of the state and the batch (augmentation keyed by ``fold_in(key, state.step)``)."""
    head_classes = tuple(head_classes)

    @jax.jit
    def train_step(state, images, labels, class_w, key, task_w=None):
        rng = jax.random.fold_in(key, state.step)
        if augment:
            images = _augment(rng, images)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, state.apply_fn, images, labels, class_w,
                                                  head_classes, task_w)
        return state.apply_gradients(grads=grads), loss

    return train_step


def _class_weights(labels: np.ndarray, head_classes: Sequence[int], enabled: bool) -> np.ndarray:
    K = max(head_classes)
    w = np.ones((len(head_classes), K), np.float32)
    if enabled:
        for t, c in enumerate(head_classes):
            counts = np.bincount(labels[:, t][labels[:, t] >= 0], minlength=c)[:c].astype(np.float32)
            w[t, :c] = counts.sum() / (c * np.maximum(counts, 1))
    return w


def predict_batches(model: WscaModel, params, images: np.ndarray, batch_size: int = 256, keys=("logits",)):
    """Run the model over ``images`` in batches; returns ``{key: (N, ...)}`` NumPy arrays."""
    fn = jax.jit(lambda p, x: {k: v for k, v in model.apply({"params": p}, x).items() if k in keys})
    outs = {k: [] for k in keys}
    for s in range(0, len(images), batch_size):
        o = fn(params, jnp.asarray(images[s:s + batch_size]))
        for k in keys:
            outs[k].append(np.asarray(o[k]))
    return {k: np.concatenate(v) for k, v in outs.items()}


def evaluate(model, params, images, labels, head_classes, specs) -> dict:
    """Per-head held-out metrics (accuracy, balanced accuracy, AUROC ...)."""
    logits = predict_batches(model, params, images)["logits"]
    out = {}
    for t, (lg, spec) in enumerate(zip(split_logits(logits, head_classes), specs)):
        y = labels[:, t]
        ok = y >= 0
        if ok.sum() == 0 or len(np.unique(y[ok])) < 2:
            continue
        p = np.asarray(jax.nn.softmax(lg[ok], axis=-1))
        out[spec.name] = classification_metrics(y[ok], p)
    return out


def _ckpt_managers(run_dir: str, read_only: bool = False):
    """``(latest, best)`` Orbax managers; latest keeps two epochs (a damaged one has a predecessor).
    ``read_only``: create no folder and clean up nothing (loading for ``embed``)."""
    def mngr(which, keep):
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                            cleanup_tmp_directories=not read_only)
        return ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "ckpt", which)), options=opts)
    return mngr("latest", 2), mngr("best", 1)


def tree_digest(tree) -> str:
    """SHA-256 over every leaf of a pytree: its path, dtype, shape and bytes, in flattening order."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        if a.dtype.kind in "iu":                 # a step counter may come back as another integer type
            a = a.astype(np.int64)
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _quiet_closed_loop_callbacks() -> None:
    """When an Orbax restore fails, reads still in flight call back into its closed asyncio loop and
    Python prints each "Event loop is closed" as an unraisable exception, and asyncio logs every
    failed read ("Task exception was never retrieved"): drop those (the failure is reported once)."""
    import logging
    import sys
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    previous = sys.unraisablehook
    if getattr(previous, "_wsca", False):
        return

    def hook(u):
        if isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value):
            return
        previous(u)
    hook._wsca = True
    sys.unraisablehook = hook


def restore_verified(mngr, step: int, target, digests: dict | None, where: str):
    """Restore checkpoint ``step`` and check it against the digest written at save time.

    Args:
      target: the payload's structure ``{params, opt_state, step}``.  digests: ``{str(epoch): hex}``
        from ``run.json`` (None for runs written before digests: not verified).  where: names the
        checkpoint in messages (e.g. ``"RUN/ckpt/best"``).
    Raises:
      WscaInputError: one line naming the checkpoint when it cannot be read or does not verify.
    """
    _quiet_closed_loop_callbacks()
    try:
        restored = mngr.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:             # damaged or missing files: tensorstore/Orbax errors of many kinds
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise WscaInputError(f"{where} epoch {step}: checkpoint cannot be read ({type(e).__name__}: {first})") from None
    want = None if digests is None else digests.get(str(step))
    if digests is not None and want is None:
        raise WscaInputError(f"{where} epoch {step}: no digest in run.json for this checkpoint (not written by "
                             "this run, or the run was interrupted while saving it)")
    if want is not None and tree_digest(restored) != want:
        raise WscaInputError(f"{where} epoch {step}: the checkpoint's parameters do not match the digest written "
                             "at save time (damaged files)")
    return restored


def read_run_json(run_dir: str, what: str = "--run") -> dict:
    """``run.json`` of a run folder, or one line saying why it cannot be used."""
    path = os.path.join(run_dir, "run.json")
    require(os.path.isfile(path), f"{what} {run_dir}: no run.json (not a wsca train output folder)")
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WscaInputError(f"{what} {path}: cannot be read as JSON ({type(e).__name__}: {e})") from None
    keys = ("config", "primary", "tasks", "image_shape", "history")
    missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
    require(not missing, f"{what} {path}: not a wsca run record (missing {', '.join(missing)})")
    return rec


def _is_run_folder(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, "run.json")) or os.path.isdir(os.path.join(run_dir, "ckpt"))


def check_run_folder(run_dir: str, resume: bool = False, overwrite: bool = False) -> None:
    """Before any work: ``run_dir`` can hold this training (one training per folder).

    New run: the folder is new or empty, or ``overwrite`` and it holds a wsca run (cleared later by
    :func:`fit`). Resume: it holds ``run.json`` and at least one latest checkpoint.
    """
    require(not (resume and overwrite), "--resume continues the run in --out and --overwrite replaces it; give one")
    check_out_dir(run_dir, "--out")
    if resume:
        read_run_json(run_dir, "--resume:")
        steps = os.path.join(run_dir, "ckpt", "latest")
        require(os.path.isdir(steps) and any(n.isdigit() for n in os.listdir(steps)),
                f"--resume: no checkpoint in {run_dir}/ckpt/latest (nothing to continue; train without --resume)")
        return
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        require(overwrite, f"--out {run_dir}: already holds files (a run folder belongs to one training); "
                           "continue that run with --resume, replace it with --overwrite, or choose a new folder")
        require(_is_run_folder(run_dir), f"--overwrite {run_dir}: holds files that are not a wsca run "
                                         "(no run.json or ckpt/); refusing to clear it")


def _first_best(history: list, primary: str) -> int | None:
    """The first epoch with the highest validation AUROC of the primary (the rule training uses)."""
    scored = [(h["val"].get(primary, {}).get("auroc"), h["epoch"]) for h in history]
    scored = [(a, e) for a, e in scored if a is not None]
    return None if not scored else min(e for a, e in scored if a == max(a for a, _ in scored))


def _settings_diff(old: dict, new: dict) -> str:
    """``"epochs 3 != 4, seed 0 != 1"``: the settings a resumed run would change."""
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)} != {new.get(k)}" for k in keys if old.get(k) != new.get(k))


def _resume_from(latest, best, run_dir: str, target, old: dict) -> tuple:
    """The newest latest checkpoint that verifies -> ``(restored, epoch, best_epoch)``; damaged newer
    epochs are deleted with a warning. ``best_epoch``: the best checkpoint's epoch if it verifies."""
    digests = old.get("digests")
    damaged = []
    for step in sorted(latest.all_steps(), reverse=True):
        try:
            restored = restore_verified(latest, step, target, digests, f"{run_dir}/ckpt/latest")
        except WscaInputError as e:
            damaged.append((step, str(e)))
            continue
        for bad, why in damaged:                  # only now that a good epoch exists: drop the bad ones
            warnings.warn(f"{why}; falling back to the previous checkpoint", WscaWarning, stacklevel=3)
            shutil.rmtree(os.path.join(run_dir, "ckpt", "latest", str(bad)), ignore_errors=True)
        best_epoch = best.latest_step()
        if best_epoch is not None:
            try:
                restore_verified(best, best_epoch, target, digests, f"{run_dir}/ckpt/best")
            except WscaInputError as e:
                warnings.warn(f"{e}; the best checkpoint is chosen again from the resumed epochs", WscaWarning,
                              stacklevel=3)
                shutil.rmtree(os.path.join(run_dir, "ckpt", "best", str(best_epoch)), ignore_errors=True)
                best_epoch = None
        latest.reload()
        best.reload()
        return restored, step, best_epoch
    raise WscaInputError(f"--resume: no checkpoint in {run_dir}/ckpt/latest verifies (newest: "
                         f"{damaged[0][1] if damaged else 'none'}); train again with --overwrite")


def check_config(cfg: TrainConfig) -> None:
    """One line for a setting that would train a meaningless model."""
    require(cfg.setting in SETTINGS, f"--setting must be one of {', '.join(SETTINGS)}, found {cfg.setting!r}")
    require(cfg.epochs >= 1, f"--epochs must be at least 1, found {cfg.epochs}")
    require(cfg.batch_size >= 1, f"--batch-size must be at least 1, found {cfg.batch_size}")
    require(cfg.backbone in BACKBONES, f"--backbone must be one of {', '.join(BACKBONES)}, found {cfg.backbone!r}")
    require(math.isfinite(cfg.learning_rate) and cfg.learning_rate > 0,
            f"--learning-rate must be a finite number > 0, found {cfg.learning_rate}")
    require(math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0,
            f"weight_decay must be a finite number >= 0, found {cfg.weight_decay}")
    require(math.isfinite(cfg.warmup_epochs) and cfg.warmup_epochs >= 0,
            f"warmup_epochs must be a finite number >= 0, found {cfg.warmup_epochs}")
    require(isinstance(cfg.seed, (int, np.integer)) and cfg.seed >= 0, f"--seed must be an integer >= 0, found {cfg.seed}")


def fit(dataset, primary: str, tasks: Sequence[str] = (), cfg: TrainConfig = TrainConfig(), run_dir: str = "run",
        resume: bool = False, progress: bool = True, max_epochs: int | None = None,
        dataset_source: str | None = None, overwrite: bool = False, split_seed: int | None = None) -> dict:
    """Train a model on ``dataset`` (an :class:`~wsca_jax.data.ImageDataset`) and checkpoint it.

    Args:
      primary: the primary column.  tasks: extra head columns (``multi_task``; ignored otherwise).
      cfg: :class:`TrainConfig`.  run_dir: run folder (new or empty; see :func:`check_run_folder`).
      resume: continue from the newest latest checkpoint that verifies.  overwrite: replace the wsca
      run already in ``run_dir``.
      max_epochs: stop after this many epochs in this call (to test interruption), else ``cfg.epochs``.
      dataset_source: how to load the dataset again (name or path), stored for ``wsca embed``.
      split_seed: the seed that drew the split (datasets without a ``split`` array), stored likewise.
    Returns:
      the run record (``run.json`` contents).
    """
    check_config(cfg)
    check_run_folder(run_dir, resume, overwrite)
    names = [primary] + ([t for t in tasks if t != primary] if cfg.setting == "multi_task" else [])
    labels, specs = encode_labels(dataset.columns, names)
    head_classes = tuple(len(s.classes) for s in specs)
    require(cfg.setting != "pooling" or head_classes[0] == 2, "--setting pooling needs a binary primary task")
    tr = dataset.split == 0
    va = dataset.split == 1
    require(tr.sum() >= cfg.batch_size, f"training split has {int(tr.sum())} images, fewer than --batch-size {cfg.batch_size}")
    x_tr, y_tr = dataset.images[tr], labels[tr]
    steps_per_epoch = len(x_tr) // cfg.batch_size
    model = WscaModel(head_classes=head_classes, setting=cfg.setting, backbone=cfg.backbone,
                      widths=None if cfg.widths is None else tuple(cfg.widths))
    key = jax.random.PRNGKey(cfg.seed)
    params = model.init(jax.random.fold_in(key, 0), jnp.asarray(x_tr[:1]))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(cfg, steps_per_epoch))
    class_w = jnp.asarray(_class_weights(y_tr, head_classes, cfg.class_weights))
    if cfg.task_weights is not None:
        require(len(cfg.task_weights) == len(head_classes),
                f"task_weights has {len(cfg.task_weights)} entries, expected {len(head_classes)} (primary first)")
    task_w = None if cfg.task_weights is None else jnp.asarray(cfg.task_weights, jnp.float32)
    train_step = make_train_step(head_classes, cfg.augment)

    record = {"config": dataclasses.asdict(cfg), "primary": primary, "tasks": [dataclasses.asdict(s) for s in specs],
              "dataset": dataset.name, "dataset_source": dataset_source or dataset.name, "image_shape": list(dataset.images.shape[1:]), "history": [],
              "best": None, "digests": {}, "split_seed": split_seed}
    start_epoch = 0
    if resume:
        old = read_run_json(run_dir, "--resume:")
        diff = _settings_diff(old["config"], json.loads(json.dumps(record["config"])))
        require(not diff, f"--resume: the run folder was made with other settings ({diff})")
        require(old["primary"] == primary and old["tasks"] == json.loads(json.dumps(record["tasks"])),
                f"--resume: the run folder was trained on {old['primary']!r} with other heads")
        latest, best = _ckpt_managers(run_dir)
        target = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
        restored, step, best_epoch = _resume_from(latest, best, run_dir, target, old)
        state = state.replace(params=restored["params"], opt_state=restored["opt_state"], step=restored["step"])
        start_epoch = step + 1
        # the checkpoints are the truth: history, digests and best for the epochs they hold
        record["history"] = [h for h in old["history"] if h["epoch"] < start_epoch]
        record["digests"] = {k: v for k, v in (old.get("digests") or {}).items() if int(k) < start_epoch}
        if old.get("digests") is None:             # a run written before digests: digest what it holds now
            record["digests"][str(step)] = tree_digest(restored)
            if best_epoch is not None:
                record["digests"][str(best_epoch)] = tree_digest(best.restore(best_epoch, args=ocp.args.StandardRestore(target)))
        hist = {h["epoch"]: h for h in record["history"]}
        if best_epoch is not None and best_epoch in hist:
            record["best"] = {"epoch": best_epoch, "val_auroc": hist[best_epoch]["val"][primary]["auroc"]}
        elif best_epoch is not None:               # a best epoch the resumed run will train again
            shutil.rmtree(os.path.join(run_dir, "ckpt", "best", str(best_epoch)), ignore_errors=True)
            best.reload()
        first = _first_best(record["history"], primary)
        if first is not None and first == step and (record["best"] or {}).get("epoch") != step:
            # killed between saving latest and best of this epoch: the resumed weights are that best
            best.save(step, args=ocp.args.StandardSave(restored))
            best.wait_until_finished()
            record["best"] = {"epoch": step, "val_auroc": hist[step]["val"][primary]["auroc"]}
    else:
        if os.path.isdir(run_dir) and os.listdir(run_dir):      # --overwrite (checked above)
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        latest, best = _ckpt_managers(run_dir)
    end_epoch = cfg.epochs if max_epochs is None else min(cfg.epochs, start_epoch + max_epochs)
    bar = progress_bar((end_epoch - start_epoch) * steps_per_epoch, "train", "steps", progress)
    t0 = time.time()
    seen = 0
    for epoch in range(start_epoch, end_epoch):
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(x_tr))
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            state, loss = train_step(state, jnp.asarray(x_tr[idx]), jnp.asarray(y_tr[idx]), class_w, key, task_w)
            losses.append(float(loss))
            seen += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
        val = evaluate(model, state.params, dataset.images[va], labels[va], head_classes, specs) if va.any() else {}
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "val": val}
        aurocs = {f"val_{k}_auroc": f"{m['auroc']:.3f}" for k, m in val.items() if m.get("auroc") is not None}
        bar.set_postfix(epoch=epoch + 1, loss=f"{entry['loss']:.3f}", **aurocs)
        bar.line(f"epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.3f}"
                 + "".join(f", {k} {v}" for k, v in aurocs.items()))
        record["history"].append(entry)
        payload = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
        record["digests"][str(epoch)] = tree_digest(payload)
        score = val.get(primary, {}).get("auroc")
        improved = score is not None and (record["best"] is None or score > record["best"]["val_auroc"])  # first max
        if improved:
            record["best"] = {"epoch": epoch, "val_auroc": score}
        _write_json(os.path.join(run_dir, "run.json"), record)   # the digest exists before the checkpoint does
        latest.save(epoch, args=ocp.args.StandardSave(payload))
        if improved:
            best.save(epoch, args=ocp.args.StandardSave(payload))
        latest.wait_until_finished()
        best.wait_until_finished()
    bar.close()
    elapsed = time.time() - t0
    record["throughput_images_per_s"] = seen / elapsed if elapsed > 0 else None
    te = dataset.split == 2
    if te.any() and end_epoch == cfg.epochs:
        latest.wait_until_finished()
        best.wait_until_finished()
        mngr = best if best.latest_step() is not None else latest
        target = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
        chosen = restore_verified(mngr, mngr.latest_step(), target, record["digests"],
                                  f"{run_dir}/ckpt/{'best' if mngr is best else 'latest'}")["params"]
        record["test"] = evaluate(model, chosen, dataset.images[te], labels[te], head_classes, specs)
        record["test_checkpoint"] = "best" if mngr is best else "latest"
    _write_json(os.path.join(run_dir, "run.json"), record)
    latest.close()
    best.close()
    return record


def _write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def load_run(run_dir: str, which: str = "best"):
    """Restore a run: ``(model, params, record)``; ``which`` is ``best`` or ``latest``.

    The checkpoint is verified against the digest in ``run.json`` (runs written before digests
    load unverified). A missing best checkpoint is an error, not a silent ``latest``.
    """
    require(which in ("best", "latest"), f"--checkpoint must be best or latest, found {which!r}")
    record = read_run_json(run_dir)
    c = record["config"]
    try:
        cfg = TrainConfig(**{**c, "widths": None if c["widths"] is None else tuple(c["widths"]),
                             "task_weights": None if c.get("task_weights") is None else tuple(c["task_weights"])})
        head_classes = tuple(len(t["classes"]) for t in record["tasks"])
        shape = (1, *record["image_shape"])
    except (TypeError, KeyError) as e:
        raise WscaInputError(f"--run {run_dir}/run.json: config not understood ({type(e).__name__}: {e})") from None
    folder = os.path.join(run_dir, "ckpt", which)
    require(os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder)),
            f"--run {run_dir}: no {which} checkpoint in {folder}"
            + (" (no epoch had a validation AUROC); use --checkpoint latest" if which == "best" else ""))
    model = WscaModel(head_classes=head_classes, setting=cfg.setting, backbone=cfg.backbone, widths=cfg.widths)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.uint8))["params"]
    latest, best = _ckpt_managers(run_dir, read_only=True)
    mngr = best if which == "best" else latest
    step = mngr.latest_step()
    require(step is not None, f"--run {run_dir}: no {which} checkpoint in {folder}")
    opt = make_optimizer(cfg, 1).init(params)
    try:
        restored = restore_verified(mngr, step, {"params": params, "opt_state": opt, "step": jnp.asarray(0)},
                                    record.get("digests"), f"--run {run_dir}: {which}")
    finally:
        latest.close()
        best.close()
    return model, restored["params"], record
