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
import functools
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

from ..errors import WscaInputError, WscaWarning, require
from .data.tfds_builder import fingerprint
from ..io import atomic_write_text, check_out_dir, first_line
from ..metrics import classification_metrics
from ..progress import progress_bar
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

    from ..tasks import encode_categorical

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


class CheckpointError(WscaInputError):
    """A checkpoint that cannot be used; ``damaged``: its files are wrong (not a transient failure)."""

    def __init__(self, message: str, damaged: bool = True):
        super().__init__(message)
        self.damaged = damaged


_TRANSIENT = ("RESOURCE_EXHAUSTED", "Too many open files", "UNAVAILABLE", "DEADLINE_EXCEEDED", "Cannot allocate memory")


def restore_verified(mngr, step: int, target, digests: dict | None, where: str):
    """Restore checkpoint ``step`` and check it against the digest written at save time.

    Args:
      target: the payload's structure ``{params, opt_state, step}``.  digests: ``{str(epoch): hex}``
        from ``run.json`` (None for runs written before digests: not verified).  where: names the
        checkpoint in messages (e.g. ``"RUN/ckpt/best"``).
    Raises:
      WscaInputError: one line naming the checkpoint when it cannot be read or does not verify.
    """
    try:
        restored = mngr.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:             # damaged or missing files: tensorstore/Orbax errors of many kinds
        first = first_line(e, 200)
        transient = isinstance(e, MemoryError) or any(k in str(e) for k in _TRANSIENT)
        raise CheckpointError(f"{where} epoch {step}: checkpoint cannot be read ({type(e).__name__}: {first})",
                              damaged=not transient) from None
    want = None if digests is None else digests.get(str(step))
    if digests is not None and want is None:
        raise CheckpointError(f"{where} epoch {step}: no digest in run.json for this checkpoint (not written by "
                              "this run)", damaged=True)
    if want is not None and tree_digest(restored) != want:
        raise CheckpointError(f"{where} epoch {step}: the checkpoint's parameters do not match the digest written "
                              "at save time (damaged or replaced files)", damaged=True)
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
    ok = (isinstance(rec["config"], dict) and isinstance(rec["primary"], str) and isinstance(rec["history"], list)
          and isinstance(rec["tasks"], list) and rec["tasks"]
          and all(isinstance(t, dict) and isinstance(t.get("classes"), list) for t in rec["tasks"])
          and isinstance(rec["image_shape"], list) and all(isinstance(v, int) and v > 0 for v in rec["image_shape"]))
    require(ok, f"{what} {path}: not a wsca run record (config, primary, tasks, image_shape or history of the "
                "wrong type)")
    return rec


RUN_ENTRIES = ("run.json", "ckpt", "ckpt_damaged")


def _clear_run(run_dir: str) -> None:
    """``--overwrite``: remove the old run's record and checkpoints (only those); say what is kept."""
    for name in RUN_ENTRIES:
        p = os.path.join(run_dir, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.remove(p)
    kept = sorted(os.listdir(run_dir))
    if kept:
        warnings.warn(f"--overwrite {run_dir}: kept {len(kept)} other entries ({', '.join(kept[:3])}"
                      f"{' ...' if len(kept) > 3 else ''}); they belong to the replaced run", WscaWarning, stacklevel=3)


def _set_aside(run_dir: str, which: str, step: int) -> None:
    """Move a damaged checkpoint out of Orbax's folder into ``RUN/ckpt_damaged/<which>-<epoch>``."""
    src = os.path.join(run_dir, "ckpt", which, str(step))
    dst_dir = os.path.join(run_dir, "ckpt_damaged")
    os.makedirs(dst_dir, exist_ok=True)
    dst = os.path.join(dst_dir, f"{which}-{step}")
    if os.path.exists(dst):
        shutil.rmtree(dst)
    os.replace(src, dst)


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
                f"--resume: no checkpoint in {run_dir}/ckpt/latest (nothing to continue; start again with --overwrite)")
        return
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        require(overwrite, f"--out {run_dir}: already holds files (a run folder belongs to one training); "
                           "continue that run with --resume, replace it with --overwrite, or choose a new folder")
        require(not os.path.islink(run_dir), f"--overwrite {run_dir}: is a symbolic link; refusing to clear it")
        here, target = os.path.realpath(os.getcwd()), os.path.realpath(run_dir)
        require(not (here == target or here.startswith(target + os.sep)),
                f"--overwrite {run_dir}: is the current folder or contains it; refusing to clear it")
        try:
            read_run_json(run_dir, "--overwrite")
        except WscaInputError as e:
            raise WscaInputError(f"{e}; refusing to clear a folder that is not a wsca run") from None


def _first_best(history: list, primary: str) -> int | None:
    """The first epoch with the highest validation AUROC of the primary (the rule training uses)."""
    scored = [(h["val"].get(primary, {}).get("auroc"), h["epoch"]) for h in history]
    scored = [(a, e) for a, e in scored if a is not None]
    return None if not scored else min(e for a, e in scored if a == max(a for a, _ in scored))


def _fault(point: str, epoch: int) -> None:
    """Fault injection for the crash tests: ``WSCA_FAULT=point:epoch`` kills the process (SIGKILL) at
    that point of that epoch; ``point:epoch:raise`` raises :class:`InjectedFault` instead (in-process)."""
    spec = os.environ.get("WSCA_FAULT", "")
    if spec and spec.split(":")[:2] == [point, str(epoch)]:
        if spec.endswith(":raise"):
            raise InjectedFault(spec)
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


class InjectedFault(BaseException):
    """Raised by :func:`_fault` (a simulated crash; not an error of the user's)."""


def _resumed_best(latest, best, best_epoch, step, restored, target, record, primary, run_dir) -> dict | None:
    """After a resume, make ``record["best"]`` and ``ckpt/best`` agree (the first epoch with the
    highest validation AUROC among the epochs kept). A best checkpoint newer than the resumed epoch is
    set aside (it is trained again); a best epoch whose checkpoint is gone is restored from the kept
    latest epochs when one holds it, else its AUROC stays the bar later epochs must beat."""
    hist = {h["epoch"]: h for h in record["history"]}
    if best_epoch is not None and best_epoch not in hist:
        _set_aside(run_dir, "best", best_epoch)
        best.reload()
        best_epoch = None
    first = _first_best(record["history"], primary)
    if first is None:
        return None
    score = hist[first]["val"][primary]["auroc"]
    if best_epoch == first:
        return {"epoch": first, "val_auroc": score}
    source = restored if first == step else None
    if source is None and first in latest.all_steps():
        try:
            source = restore_verified(latest, first, target, record["digests"], f"{run_dir}/ckpt/latest")
        except CheckpointError:
            source = None
    if source is None:
        warnings.warn(f"{run_dir}: the best epoch {first}'s checkpoint is gone; a later epoch becomes the best "
                      f"checkpoint only if it beats validation AUROC {score:.4f}", WscaWarning, stacklevel=3)
        return {"epoch": first, "val_auroc": score, "checkpoint": None}
    if best_epoch is not None:
        _set_aside(run_dir, "best", best_epoch)
        best.reload()
    best.save(first, args=ocp.args.StandardSave(source))
    best.wait_until_finished()
    return {"epoch": first, "val_auroc": score}


def _settings_diff(old: dict, new: dict) -> str:
    """``"epochs 3 != 4, seed 0 != 1"``: the settings a resumed run would change."""
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)} != {new.get(k)}" for k in keys if old.get(k) != new.get(k))


def _resume_from(latest, best, run_dir: str, target, old: dict) -> tuple:
    """The newest latest checkpoint that verifies -> ``(restored, epoch, best_epoch)``; damaged newer
    epochs are moved to ``ckpt_damaged/`` with a warning (a transient read failure stops instead).
    ``best_epoch``: the best checkpoint's epoch if it verifies."""
    digests = old.get("digests")
    damaged = []
    for step in sorted(latest.all_steps(), reverse=True):
        try:
            restored = restore_verified(latest, step, target, digests, f"{run_dir}/ckpt/latest")
        except CheckpointError as e:
            if not e.damaged:                     # a transient failure (memory, files): stop, change nothing
                raise
            damaged.append((step, str(e)))
            continue
        for bad, why in damaged:                  # only now that a good epoch exists: set the bad ones aside
            warnings.warn(f"{why}; falling back to the previous checkpoint (moved to ckpt_damaged/)", WscaWarning,
                          stacklevel=3)
            _set_aside(run_dir, "latest", bad)
        best_epoch = best.latest_step()
        if best_epoch is not None:
            try:
                restore_verified(best, best_epoch, target, digests, f"{run_dir}/ckpt/best")
            except CheckpointError as e:
                if not e.damaged:
                    raise
                warnings.warn(f"{e}; the best checkpoint is chosen again (moved to ckpt_damaged/)", WscaWarning,
                              stacklevel=3)
                _set_aside(run_dir, "best", best_epoch)
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
    check_config(cfg)
    check_run_folder(run_dir, resume, overwrite)
    labels, specs = check_data(dataset, primary, tasks, cfg)
    head_classes = tuple(len(s.classes) for s in specs)
    tr = dataset.split == 0
    va = dataset.split == 1
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
              "best": None, "digests": {}, "split_seed": split_seed,
              "data_fingerprint": data_fingerprint or fingerprint(dataset)}
    start_epoch = 0
    if resume:
        old = read_run_json(run_dir, "--resume:")
        diff = _settings_diff(old["config"], json.loads(json.dumps(record["config"])))
        require(not diff, f"--resume: the run folder was made with other settings ({diff})")
        require(old["primary"] == primary and old["tasks"] == json.loads(json.dumps(record["tasks"])),
                f"--resume: the run folder was trained on {old['primary']!r} with other heads")
        was = old.get("data_fingerprint")
        require(was is None or was == record["data_fingerprint"],
                f"--resume: the data differ from those the run was trained on (content fingerprint "
                f"{record['data_fingerprint']} != {was}: another file, another split or another --split-seed)")
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
        record["best"] = _resumed_best(latest, best, best_epoch, step, restored, target, record, primary, run_dir)
    else:
        if os.path.isdir(run_dir) and os.listdir(run_dir):      # --overwrite (checked above)
            _clear_run(run_dir)
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
        _fault("run_json", epoch)
        latest.save(epoch, args=ocp.args.StandardSave(payload))
        latest.wait_until_finished()
        _fault("latest", epoch)
        if improved:
            best.save(epoch, args=ocp.args.StandardSave(payload))
            best.wait_until_finished()
        _fault("best", epoch)
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
