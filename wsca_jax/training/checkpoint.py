"""Run folders and their checkpoints: Orbax managers (latest and best), the SHA-256 digest of every
saved checkpoint, verified restore, the checks of a run folder before training, and what a resume
recovers (the newest checkpoint that verifies, the best epoch, the record's history).

Layout of a run folder::

    RUN/run.json          config, task specs (names, class names), history, and the SHA-256 digest
                          of every saved checkpoint ("digests": {epoch: hex}), verified on every load
    RUN/ckpt/latest/<epoch>/   Orbax checkpoint of {params, opt_state, step} (the last two epochs)
    RUN/ckpt/best/<epoch>/     the first epoch with the best validation primary AUROC
    RUN/ckpt_damaged/          checkpoints that failed verification, set aside by a resume

A run folder belongs to one training: :func:`~wsca_jax.training.train.fit` refuses a folder that
already holds files unless it resumes that run (``resume=True``) or replaces it (``overwrite=True``,
only for a wsca run folder). Per epoch, ``run.json`` (with the new checkpoint's digest) is written
before the checkpoint, so every checkpoint on disk has a digest; a resume continues from the newest
checkpoint that verifies.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from ..errors import WscaInputError, WscaWarning, require
from ..io import atomic_write_text, check_out_dir, first_line, process_alive


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
                      f"{' ...' if len(kept) > 3 else ''}); they belong to the replaced run", WscaWarning, stacklevel=4)


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
                      f"checkpoint only if it beats validation AUROC {score:.4f}", WscaWarning, stacklevel=4)
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
                          stacklevel=4)
            _set_aside(run_dir, "latest", bad)
        best_epoch = best.latest_step()
        if best_epoch is not None:
            try:
                restore_verified(best, best_epoch, target, digests, f"{run_dir}/ckpt/best")
            except CheckpointError as e:
                if not e.damaged:
                    raise
                warnings.warn(f"{e}; the best checkpoint is chosen again (moved to ckpt_damaged/)", WscaWarning,
                              stacklevel=4)
                _set_aside(run_dir, "best", best_epoch)
                best_epoch = None
        latest.reload()
        best.reload()
        return restored, step, best_epoch
    raise WscaInputError(f"--resume: no checkpoint in {run_dir}/ckpt/latest verifies (newest: "
                         f"{damaged[0][1] if damaged else 'none'}); train again with --overwrite")




def _lock_path(run_dir: str) -> str:
    run_dir = os.path.abspath(run_dir)
    return os.path.join(os.path.dirname(run_dir), f".{os.path.basename(run_dir)}.wsca-lock")


@contextlib.contextmanager
def run_lock(run_dir: str):
    """One training per run folder at a time: a lock file beside the folder (``.<name>.wsca-lock``,
    holding the process id and host) taken before the folder is checked, released at the end. A lock
    whose process no longer runs on this host is taken over; one held elsewhere is one line naming
    the process and the host."""
    path = _lock_path(run_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                with open(path, encoding="utf-8") as f:
                    pid, _, host = f.read().strip().partition(" ")
            except OSError:
                continue                                        # released meanwhile: try again
            stale = host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
            require(stale, f"--out {run_dir}: another wsca train (process {pid} on {host or 'an unknown host'}) is "
                           f"writing this run; wait for it, or remove {path} if that process is gone")
            os.unlink(path)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(me)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def start_run(run_dir: str) -> tuple:
    """A new training in ``run_dir``: the old wsca run cleared (``--overwrite``, checked before), the
    folder made -> its ``(latest, best)`` managers."""
    if os.path.isdir(run_dir) and os.listdir(run_dir):      # --overwrite (checked by check_run_folder)
        _clear_run(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    return _ckpt_managers(run_dir)


def abandon_failed_write(run_dir: str, managers: list, fresh: bool, created: bool) -> str:
    """After a write failed for want of space: close the checkpoint managers, remove Orbax's
    unfinished checkpoints (``*.orbax-checkpoint-tmp*``), and remove a new run that has no finished
    epoch (the folder too, where this run made it). Returns what is left, for the one-line error."""
    for m in managers:
        try:
            m.close()
        except Exception:  # noqa: BLE001 -- a manager whose last save failed may fail to close
            pass
    for which in ("latest", "best"):
        d = os.path.join(run_dir, "ckpt", which)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if "orbax-checkpoint-tmp" in name:
                shutil.rmtree(os.path.join(d, name), ignore_errors=True)
    latest = os.path.join(run_dir, "ckpt", "latest")
    done = sorted(int(n) for n in (os.listdir(latest) if os.path.isdir(latest) else []) if n.isdigit())
    if done:
        return (f"the run folder keeps the checkpoints of epochs up to {done[-1]}: free space and continue "
                "with --resume")
    if fresh:                                  # this run's record and checkpoint folders (nothing else)
        for name in RUN_ENTRIES:
            p = os.path.join(run_dir, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                try:
                    os.remove(p)
                except OSError:
                    pass
        if created and os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)
    return "nothing written: free space and run again"


def resume_run(run_dir: str, state, record: dict, primary: str) -> tuple:
    """Continue the training in ``run_dir``: the settings, heads and data must be the run's; the
    newest latest checkpoint that verifies is restored into ``state``, and ``record`` takes the
    history, digests and best of the epochs the checkpoints hold.

    Returns:
      ``(state, start_epoch, latest, best)``.
    """
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
    return state, start_epoch, latest, best


def write_json(path: str, obj) -> None:
    """``run.json`` (or any record) written atomically, indented by one."""
    atomic_write_text(path, json.dumps(obj, indent=1))
