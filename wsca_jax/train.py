"""Training: pure jit-compiled steps of (state, batch), optax AdamW with warmup + cosine, Orbax
checkpoints (latest and best) with exact resume, and the run's config stored beside the weights.

Layout of a run folder::

    RUN/run.json          config, task specs (names, class names), history
    RUN/ckpt/latest/<epoch>/   Orbax checkpoint of {params, opt_state, step}
    RUN/ckpt/best/<epoch>/     the epoch with the best validation primary AUROC
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from .errors import WscaInputError, require
from .io import atomic_write_text
from .metrics import classification_metrics
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


def _ckpt_managers(run_dir: str):
    opts = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    return (ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "ckpt", "latest")), options=opts),
            ocp.CheckpointManager(os.path.abspath(os.path.join(run_dir, "ckpt", "best")), options=opts))


def fit(dataset, primary: str, tasks: Sequence[str] = (), cfg: TrainConfig = TrainConfig(), run_dir: str = "run",
        resume: bool = False, progress: bool = True, max_epochs: int | None = None,
        dataset_source: str | None = None) -> dict:
    """Train a model on ``dataset`` (an :class:`~wsca_jax.data.ImageDataset`) and checkpoint it.

    Args:
      primary: the primary column.  tasks: extra head columns (``multi_task``; ignored otherwise).
      cfg: :class:`TrainConfig`.  run_dir: run folder.  resume: continue from the latest checkpoint.
      max_epochs: stop after this many epochs in this call (to test interruption), else ``cfg.epochs``.
      dataset_source: how to load the dataset again (name or path), stored for ``wsca embed``.
    Returns:
      the run record (``run.json`` contents).
    """
    require(cfg.setting in SETTINGS, f"--setting must be one of {', '.join(SETTINGS)}, found {cfg.setting!r}")
    require(cfg.epochs >= 1, f"--epochs must be at least 1, found {cfg.epochs}")
    require(cfg.batch_size >= 1, f"--batch-size must be at least 1, found {cfg.batch_size}")
    require(cfg.backbone in BACKBONES, f"--backbone must be one of {', '.join(BACKBONES)}, found {cfg.backbone!r}")
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

    os.makedirs(run_dir, exist_ok=True)
    latest, best = _ckpt_managers(run_dir)
    record = {"config": dataclasses.asdict(cfg), "primary": primary, "tasks": [dataclasses.asdict(s) for s in specs],
              "dataset": dataset.name, "dataset_source": dataset_source or dataset.name, "image_shape": list(dataset.images.shape[1:]), "history": [],
              "best": None}
    start_epoch = 0
    if resume:
        step = latest.latest_step()
        require(step is not None, f"--resume: no checkpoint in {run_dir}/ckpt/latest")
        target = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
        restored = latest.restore(step, args=ocp.args.StandardRestore(target))
        state = state.replace(params=restored["params"], opt_state=restored["opt_state"], step=restored["step"])
        with open(os.path.join(run_dir, "run.json")) as f:
            old = json.load(f)
        require(old["config"] == json.loads(json.dumps(record["config"])),
                "--resume: the run folder was made with other settings")
        require(old["primary"] == primary and old["tasks"] == json.loads(json.dumps(record["tasks"])),
                f"--resume: the run folder was trained on {old['primary']!r} with other heads")
        start_epoch = step + 1
        # the checkpoint is the truth: drop history written for epochs it does not hold
        record["history"] = [h for h in old["history"] if h["epoch"] < start_epoch]
        scored = [(h["val"].get(primary, {}).get("auroc"), h["epoch"]) for h in record["history"]]
        scored = [x for x in scored if x[0] is not None]
        record["best"] = None if not scored else {"epoch": max(scored)[1], "val_auroc": max(scored)[0]}
    end_epoch = cfg.epochs if max_epochs is None else min(cfg.epochs, start_epoch + max_epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=(end_epoch - start_epoch) * steps_per_epoch, desc="train", unit="step")
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
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-20:]):.3f}")
        val = evaluate(model, state.params, dataset.images[va], labels[va], head_classes, specs) if va.any() else {}
        entry = {"epoch": epoch, "loss": float(np.mean(losses)), "val": val}
        if bar is not None and val:
            bar.set_postfix(epoch=epoch + 1, loss=f"{entry['loss']:.3f}",
                            **{f"val_{k}_auroc": f"{m['auroc']:.3f}" for k, m in val.items() if m.get("auroc") is not None})
        record["history"].append(entry)
        payload = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
        latest.save(epoch, args=ocp.args.StandardSave(payload))
        score = val.get(primary, {}).get("auroc")
        if score is not None and (record["best"] is None or score > record["best"]["val_auroc"]):
            best.save(epoch, args=ocp.args.StandardSave(payload))
            record["best"] = {"epoch": epoch, "val_auroc": score}
        latest.wait_until_finished()
        best.wait_until_finished()
        _write_json(os.path.join(run_dir, "run.json"), record)
    if bar is not None:
        bar.close()
    elapsed = time.time() - t0
    record["throughput_images_per_s"] = seen / elapsed if elapsed > 0 else None
    te = dataset.split == 2
    if te.any() and end_epoch == cfg.epochs:
        latest.wait_until_finished()
        best.wait_until_finished()
        mngr = best if best.latest_step() is not None else latest
        target = {"params": state.params, "opt_state": state.opt_state, "step": state.step}
        chosen = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(target))["params"]
        record["test"] = evaluate(model, chosen, dataset.images[te], labels[te], head_classes, specs)
        record["test_checkpoint"] = "best" if mngr is best else "latest"
    _write_json(os.path.join(run_dir, "run.json"), record)
    latest.close()
    best.close()
    return record


def _write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def load_run(run_dir: str, which: str = "best"):
    """Restore a run: ``(model, params, record)``; ``which`` is ``best`` or ``latest``."""
    path = os.path.join(run_dir, "run.json")
    require(os.path.isfile(path), f"--run {run_dir}: no run.json (not a wsca train output folder)")
    with open(path) as f:
        record = json.load(f)
    c = record["config"]
    cfg = TrainConfig(**{**c, "widths": None if c["widths"] is None else tuple(c["widths"]),
                         "task_weights": None if c.get("task_weights") is None else tuple(c["task_weights"])})
    head_classes = tuple(len(t["classes"]) for t in record["tasks"])
    model = WscaModel(head_classes=head_classes, setting=cfg.setting, backbone=cfg.backbone, widths=cfg.widths)
    shape = (1, *record["image_shape"])
    params = model.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.uint8))["params"]
    latest, best = _ckpt_managers(run_dir)
    mngr = best if which == "best" and best.latest_step() is not None else latest
    step = mngr.latest_step()
    if step is None:
        raise WscaInputError(f"--run {run_dir}: no checkpoint found")
    opt = make_optimizer(cfg, 1).init(params)
    restored = mngr.restore(step, args=ocp.args.StandardRestore({"params": params, "opt_state": opt,
                                                                  "step": jnp.asarray(0)}))
    latest.close()
    best.close()
    return model, restored["params"], record
