"""Training: pure jit-compiled steps of (state, batch), optax AdamW with warmup + cosine, held-out
evaluation, and :func:`fit`, the training loop, as named steps (set up, start or resume, train the
epochs, test). Run folders and checkpoints (Orbax, digests, verified restore, resume) are in
:mod:`wsca_jax.training.checkpoint`; the settings in :mod:`wsca_jax.training.config`. Every name
callers import from here (``TrainConfig``, ``read_run_json``, ``check_run_folder``, ``InjectedFault``
...) still is.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from ..checks import check_columns
from ..errors import WscaInputError, out_of_space, require
from ..metrics import classification_metrics
from ..progress import progress_bar
from .checkpoint import (RUN_ENTRIES, CheckpointError, InjectedFault, _ckpt_managers, _fault, abandon_failed_write,
                         check_run_folder,
                         read_run_json, restore_verified, resume_run, run_lock, start_run, tree_digest, write_json)
from .config import TrainConfig
from .data.tfds_builder import fingerprint
from .models import WscaModel, split_logits


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

    from ..tasks import encode_categorical

    labels, specs = [], []
    for name in names:
        check_columns([name], columns, "task column", "in the dataset")
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


@functools.partial(jax.jit, static_argnames=("model", "keys"))
def _apply_keys(params, x, model, keys):
    out = model.apply({"params": params}, x)
    return {k: out[k] for k in keys}


def predict_batches(model: WscaModel, params, images: np.ndarray, batch_size: int = 256, keys=("logits",)):
    """Run the model over ``images`` (N, H, W, C) in batches; returns ``{key: (N, ...)}`` NumPy arrays.

    One compiled program per (model, batch shape): every batch, the last one zero-padded, has
    ``min(batch_size, N)`` rows, and the program is cached across calls (``evaluate`` runs every
    epoch)."""
    n = len(images)
    b = max(1, min(batch_size, n))
    keys = tuple(keys)
    outs = {k: [] for k in keys}
    for s in range(0, n, b):
        chunk = np.asarray(images[s:s + b])
        m = len(chunk)
        if m < b:
            chunk = np.concatenate([chunk, np.zeros((b - m, *chunk.shape[1:]), chunk.dtype)])
        o = _apply_keys(params, jnp.asarray(chunk), model=model, keys=keys)
        for k in keys:
            outs[k].append(np.asarray(o[k])[:m])
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



def check_data(dataset, primary: str, tasks: Sequence[str], cfg: TrainConfig) -> tuple:
    """The data can train this model: columns, classes, training rows -> ``encode_labels``'s output."""
    names = [primary] + ([t for t in tasks if t != primary] if cfg.setting == "multi_task" else [])
    labels, specs = encode_labels(dataset.columns, names)
    require(cfg.setting != "pooling" or len(specs[0].classes) == 2, "--setting pooling needs a binary primary task")
    n_train = int((dataset.split == 0).sum())
    require(n_train >= cfg.batch_size, f"training split has {n_train} images, fewer than --batch-size {cfg.batch_size}")
    return labels, specs


def fit(dataset, primary: str, tasks: Sequence[str] = (), cfg: TrainConfig = TrainConfig(), run_dir: str = "run",
        resume: bool = False, progress: bool = True, max_epochs: int | None = None,
        dataset_source: str | None = None, overwrite: bool = False, split_seed: int | None = None,
        data_fingerprint: str | None = None) -> dict:
    """Train a model on ``dataset`` (an :class:`~wsca_jax.training.data.ImageDataset`) and checkpoint it.

    Args:
      primary: the primary column.  tasks: extra head columns (``multi_task``; ignored otherwise).
      cfg: :class:`TrainConfig`.  run_dir: run folder (new or empty; see :func:`check_run_folder`).
      resume: continue from the newest latest checkpoint that verifies.  overwrite: replace the wsca
      run already in ``run_dir``.
      max_epochs: stop after this many epochs in this call (to test interruption), else ``cfg.epochs``.
      dataset_source: how to load the dataset again (name or path), stored for ``wsca embed``.
      split_seed: the seed that drew the split (datasets without a ``split`` array), stored likewise.
      data_fingerprint: the content hash of the data as read from the source (``wsca train`` passes
        it; default: the hash of ``dataset``); a resume must see the same.
    Returns:
      the run record (``run.json`` contents).
    """
    require(isinstance(cfg, TrainConfig), f"cfg: expected a TrainConfig, found {type(cfg).__name__}")
    with run_lock(run_dir):                 # one training per folder: a second process is refused
        return _fit(dataset, primary, tasks, cfg, run_dir, resume, overwrite, progress, dataset_source,
                    max_epochs, split_seed, data_fingerprint)


def _fit(dataset, primary, tasks, cfg, run_dir, resume, overwrite, progress, dataset_source, max_epochs,
         split_seed, data_fingerprint) -> dict:
    """:func:`fit` once the run folder is locked."""
    check_run_folder(run_dir, resume, overwrite)
    existed = os.path.isdir(run_dir)
    labels, specs = check_data(dataset, primary, tasks, cfg)
    t, state = _trainer(dataset, labels, specs, cfg)
    managers = []
    try:
        return _train_run(t, state, dataset, primary, cfg, run_dir, resume, progress, dataset_source, max_epochs,
                          split_seed, data_fingerprint, managers)
    except BaseException as e:
        why = out_of_space(e)
        if why is None:
            raise
        left = abandon_failed_write(run_dir, managers, fresh=not resume, created=not existed)
        raise WscaInputError(f"cannot write the run folder {run_dir}: {why} (the disk, the quota or the file-size "
                             f"limit is full); {left}") from None


def _train_run(t, state, dataset, primary, cfg, run_dir, resume, progress, dataset_source, max_epochs, split_seed,
               data_fingerprint, managers: list) -> dict:
    """:func:`fit`'s training once the data are checked: start or resume, the epochs, the test, the
    record. ``managers`` receives the checkpoint managers (closed by the caller after a failure)."""
    specs = t.specs
    record = {"config": cfg.to_dict(), "primary": primary, "tasks": [dataclasses.asdict(s) for s in specs],
              "dataset": dataset.name, "dataset_source": dataset_source or dataset.name,
              "image_shape": list(dataset.images.shape[1:]), "history": [], "best": None, "digests": {},
              "split_seed": split_seed, "data_fingerprint": data_fingerprint or fingerprint(dataset)}
    if resume:
        state, start_epoch, latest, best = resume_run(run_dir, state, record, primary)
    else:
        (latest, best), start_epoch = start_run(run_dir), 0
    managers += [latest, best]
    end_epoch = cfg.epochs if max_epochs is None else min(cfg.epochs, start_epoch + max_epochs)
    state, seen, elapsed = _train_epochs(t, state, dataset, record, run_dir, (latest, best),
                                         range(start_epoch, end_epoch), progress)
    if seen:
        record["throughput_images_per_s"] = seen / elapsed if elapsed > 0 else None
    elif resume:                         # a finished run resumed: nothing trained now, keep the measured rate
        record["throughput_images_per_s"] = read_run_json(run_dir).get("throughput_images_per_s")
    if (dataset.split == 2).any() and end_epoch == cfg.epochs:
        _test(t, state, dataset, record, run_dir, latest, best)
    write_json(os.path.join(run_dir, "run.json"), record)
    latest.close()
    best.close()
    return record


class _Trainer(NamedTuple):
    """What every epoch of :func:`fit` uses: settings, model, compiled step and training arrays."""

    cfg: TrainConfig
    primary: str                     # the first head's task
    model: WscaModel
    head_classes: tuple
    specs: list
    labels: np.ndarray               # (N, T) every row's labels (-1 missing)
    x_tr: np.ndarray                 # (N_train, H, W, C) training images
    y_tr: np.ndarray                 # (N_train, T)
    steps_per_epoch: int
    class_w: jax.Array               # (T, K)
    task_w: jax.Array | None         # (T,) or None: equal
    key: jax.Array
    train_step: Callable


def _trainer(dataset, labels: np.ndarray, specs: list, cfg: TrainConfig) -> tuple[_Trainer, train_state.TrainState]:
    """The model initialised from ``cfg.seed``, its optimizer state and compiled step, the class and
    task weights: ``(trainer, state)``."""
    head_classes = tuple(len(s.classes) for s in specs)
    tr = dataset.split == 0
    x_tr, y_tr = dataset.images[tr], labels[tr]
    steps_per_epoch = len(x_tr) // cfg.batch_size
    model = WscaModel(head_classes=head_classes, setting=cfg.setting, backbone=cfg.backbone,
                      widths=None if cfg.widths is None else tuple(cfg.widths))
    key = jax.random.PRNGKey(cfg.seed)
    params = model.init(jax.random.fold_in(key, 0), jnp.asarray(x_tr[:1]))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=make_optimizer(cfg, steps_per_epoch))
    class_w = jnp.asarray(_class_weights(y_tr, head_classes, cfg.class_weights == "balanced"))
    if cfg.task_weights is not None:
        require(len(cfg.task_weights) == len(head_classes),
                f"task_weights has {len(cfg.task_weights)} entries, expected {len(head_classes)} (primary first)")
    task_w = None if cfg.task_weights is None else jnp.asarray(cfg.task_weights, jnp.float32)
    train_step = make_train_step(head_classes, cfg.augment)
    return _Trainer(cfg, specs[0].name, model, head_classes, specs, labels, x_tr, y_tr, steps_per_epoch,
                    class_w, task_w, key, train_step), state


def _train_epochs(t: _Trainer, state, dataset, record: dict, run_dir: str, managers: tuple, epochs: range,
                  progress: bool) -> tuple:
    """Train ``epochs``; after each, validate and checkpoint -> ``(state, images seen, seconds)``."""
    bar = progress_bar(len(epochs) * t.steps_per_epoch, "train", "steps", progress)
    t0 = time.time()
    seen = 0
    for epoch in epochs:
        state, losses, n = _epoch_steps(t, state, epoch, bar)
        seen += n
        entry = _validate(t, state, dataset, epoch, losses, bar)
        _save_epoch(state, entry, record, t.primary, run_dir, *managers)
    bar.close()
    return state, seen, time.time() - t0


def _epoch_steps(t: _Trainer, state, epoch: int, bar) -> tuple:
    """One pass over the training rows in the epoch's order -> ``(state, losses, images seen)``."""
    cfg = t.cfg
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(t.x_tr))
    losses, seen = [], 0
    for s in range(t.steps_per_epoch):
        idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        state, loss = t.train_step(state, jnp.asarray(t.x_tr[idx]), jnp.asarray(t.y_tr[idx]), t.class_w, t.key,
                                   t.task_w)
        losses.append(float(loss))
        seen += len(idx)
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
    return state, losses, seen


def _validate(t: _Trainer, state, dataset, epoch: int, losses: list, bar) -> dict:
    """The epoch's history entry: mean loss and the validation metrics of every head."""
    va = dataset.split == 1
    val = evaluate(t.model, state.params, dataset.images[va], t.labels[va], t.head_classes, t.specs) if va.any() else {}
    entry = {"epoch": epoch, "loss": float(np.mean(losses)), "val": val}
    aurocs = {f"val_{k}_auroc": f"{m['auroc']:.3f}" for k, m in val.items() if m.get("auroc") is not None}
    bar.set_postfix(epoch=epoch + 1, loss=f"{entry['loss']:.3f}", **aurocs)
    bar.line(f"epoch {epoch + 1}/{t.cfg.epochs}: loss {entry['loss']:.3f}"
             + "".join(f", {k} {v}" for k, v in aurocs.items()))
    return entry


def _save_epoch(state, entry: dict, record: dict, primary: str, run_dir: str, latest, best) -> None:
    """Record the epoch (history, digest, best) in ``run.json``, then checkpoint it: latest, and best
    when the primary's validation AUROC is the first maximum so far."""
    epoch, val = entry["epoch"], entry["val"]
    record["history"].append(entry)
    payload = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
    record["digests"][str(epoch)] = tree_digest(payload)
    score = val.get(primary, {}).get("auroc")
    improved = score is not None and (record["best"] is None or score > record["best"]["val_auroc"])  # first max
    if improved:
        record["best"] = {"epoch": epoch, "val_auroc": score}
    write_json(os.path.join(run_dir, "run.json"), record)   # the digest exists before the checkpoint does
    _fault("run_json", epoch)
    latest.save(epoch, args=ocp.args.StandardSave(payload))
    latest.wait_until_finished()
    _fault("latest", epoch)
    if improved:
        best.save(epoch, args=ocp.args.StandardSave(payload))
        best.wait_until_finished()
    _fault("best", epoch)


def _test(t: _Trainer, state, dataset, record: dict, run_dir: str, latest, best) -> None:
    """Test metrics of the best checkpoint (latest when no epoch had a validation AUROC), verified."""
    te = dataset.split == 2
    latest.wait_until_finished()
    best.wait_until_finished()
    mngr = best if best.latest_step() is not None else latest
    target = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
    chosen = restore_verified(mngr, mngr.latest_step(), target, record["digests"],
                              f"{run_dir}/ckpt/{'best' if mngr is best else 'latest'}")["params"]
    record["test"] = evaluate(t.model, chosen, dataset.images[te], t.labels[te], t.head_classes, t.specs)
    record["test_checkpoint"] = "best" if mngr is best else "latest"


def load_run(run_dir: str, which: str = "best"):
    """Restore a run: ``(model, params, record)``; ``which`` is ``best`` or ``latest``.

    The checkpoint is verified against the digest in ``run.json`` (runs written before digests
    load unverified). A missing best checkpoint is an error, not a silent ``latest``.
    """
    require(which in ("best", "latest"), f"--checkpoint must be best or latest, found {which!r}")
    record = read_run_json(run_dir)
    c = record["config"]
    try:
        cfg = TrainConfig.from_dict(c)           # lists from JSON frozen as tuples
        head_classes = tuple(len(t["classes"]) for t in record["tasks"])
        shape = (1, *record["image_shape"])
    except (TypeError, KeyError, WscaInputError) as e:
        raise WscaInputError(f"--run {run_dir}/run.json: config not understood ({type(e).__name__}: {e})") from None
    folder = os.path.join(run_dir, "ckpt", which)
    named = (record.get("best") or {}).get("epoch") if which == "best" else (
        record["history"][-1]["epoch"] if record["history"] else None)
    if not (os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))):
        why = (" (no epoch had a validation AUROC); use --checkpoint latest" if which == "best" and named is None
               else f" (run.json names epoch {named}: an interrupted or damaged run; continue it with "
                    "wsca train --resume, or use the other --checkpoint)")
        raise WscaInputError(f"--run {run_dir}: no {which} checkpoint in {folder}{why}")
    model = WscaModel(head_classes=head_classes, setting=cfg.setting, backbone=cfg.backbone, widths=cfg.widths)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.uint8))["params"]
    latest, best = _ckpt_managers(run_dir, read_only=True)
    mngr = best if which == "best" else latest
    step = mngr.latest_step()
    require(step is not None, f"--run {run_dir}: no {which} checkpoint in {folder}")
    if named is not None and step != named:
        latest.close()
        best.close()
        raise WscaInputError(f"--run {run_dir}: run.json names {which} epoch {named} but {folder} holds epoch {step} "
                             "(an interrupted run: continue it with wsca train --resume)")
    opt = make_optimizer(cfg, 1).init(params)
    try:
        restored = restore_verified(mngr, step, {"params": params, "opt_state": opt, "step": jnp.asarray(0)},
                                    record.get("digests"), f"--run {run_dir}: {which}")
    finally:
        latest.close()
        best.close()
    return model, restored["params"], record


__all__ = ["TrainConfig", "TaskSpec", "encode_labels", "make_optimizer", "loss_fn", "make_train_step", "predict_batches",
           "evaluate", "check_data", "fit", "load_run", "read_run_json", "check_run_folder", "restore_verified",
           "tree_digest", "CheckpointError", "InjectedFault", "RUN_ENTRIES"]
