"""Issue 27 (no silent wrong result, round 2): inputs that gave a confident wrong answer are refused
in one line (the CLI cases are rows of tests/test_bad_input.py's table), or give the right answer."""

import os

import numpy as np
import pytest

import wsca_jax as wsca
from wsca_jax.cli import main
from wsca_jax.errors import WscaInputError


def _run_npz(path, seed, head=True, n=160, d=6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    site = rng.integers(0, 2, n)
    z = rng.normal(size=(n, d))
    z[:, 0] += 2 * y
    z[:, 1] += 2 * site
    arrays = dict(embeddings=z.astype(np.float32), label=y, site=site)
    if head:
        arrays["head_label"] = np.eye(d)[:2] * [[-1], [1]]
    np.savez(path, **arrays)


QUICK = ["--primary", "label", "--bootstrap", "0", "--permutations", "0", "--pca-min", "4", "--quiet", "--no-figures"]


def test_runs_whose_names_collide_get_distinct_folders(tmp_path, capsys):
    for sub, name, seed in (("d1", "a", 0), ("d3", "a_2", 1), ("d2", "a", 2)):
        os.makedirs(tmp_path / sub)
        _run_npz(tmp_path / sub / f"{name}.npz", seed)
    out = tmp_path / "out"
    assert main(["analyze", "--runs", *(str(tmp_path / p) for p in ("d1/a.npz", "d3/a_2.npz", "d2/a.npz")), *QUICK,
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "a_2", "a_3"]


def test_permuting_within_a_column_that_determines_a_task_is_refused(known_answer):
    z, meta, head = known_answer(n=200, d=8, seed=4)
    meta = meta.assign(copy=meta["site"].map({0: "x", 1: "y"}))
    cfg = wsca.AnalysisConfig().replace(bootstrap=0, permutations=20, pca_min=8, tasks=["site"])
    with pytest.raises(WscaInputError, match="--permute-within 'copy': it determines task 'site'"):
        wsca.analyze(z, meta, "label", head, config=cfg.replace(permute_within="copy"))
    with pytest.raises(WscaInputError, match="--permute-within 'site': it determines task 'site'"):
        wsca.analyze(z, meta, "label", head, config=cfg.replace(permute_within="site"))
    ok = wsca.analyze(z, meta, "label", head, config=cfg.replace(permute_within="label"))   # the usual: fine
    assert ok.tasks["site"].summary["p_value"] is not None


@pytest.mark.parametrize("values", [[5.0, 0.2], [-3.0], [0.1, 7.0]])
def test_seed_null_values_outside_zero_one_are_refused(values, known_answer):
    z, meta, head = known_answer(n=200, d=8, seed=5)
    site_head = np.eye(8)[[1]]
    with pytest.raises(WscaInputError, match="is not a max \\|WSC\\|; expected values in \\[0, 1\\]"):
        wsca.analyze(z, meta, "label", head, task_heads={"site": site_head}, head_null={"site": values},
                     config=wsca.AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8))


def test_outputs_get_the_users_umask_not_a_private_mode(tmp_path, capsys):
    """Temporary names are private; outputs are renamed with the mode the user's umask gives any new
    file (0644 / 0755 under umask 022), so colleagues on a shared folder can read them."""
    import stat
    _run_npz(tmp_path / "a.npz", 0)
    old = os.umask(0o022)
    try:
        assert main(["analyze", "--embeddings", str(tmp_path / "a.npz"), *QUICK, "--out", str(tmp_path / "r")]) == 0
        from wsca_jax.training.embed import save_embeddings
        save_embeddings(str(tmp_path / "e.npz"), {"embeddings": np.zeros((2, 2))})
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "r") == 0o755
    assert mode(tmp_path / "r" / "wsca.json") == 0o644 and mode(tmp_path / "r" / "report.html") == 0o644
    assert mode(tmp_path / "e.npz") == 0o644


def test_one_training_per_run_folder_at_a_time(tmp_path):
    """A second `wsca train` into a folder being trained is one line naming the process holding it
    (two trainings raced, and the loser reported an unreadable checkpoint); a lock left by a process
    that no longer runs is taken over; the lock is gone when training ends."""
    import socket
    import subprocess
    import sys
    from wsca_jax.training.checkpoint import _lock_path, run_lock
    run = str(tmp_path / "run")
    with run_lock(run):
        with pytest.raises(WscaInputError, match=rf"another wsca train \(process {os.getpid()} on "):
            with run_lock(run):
                pass
    assert not os.path.exists(_lock_path(run))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(_lock_path(run), "w") as f:
        f.write(f"{gone.stdout.strip()} {socket.gethostname()}")
    with run_lock(run):                                   # stale: its process has ended
        assert open(_lock_path(run)).read().startswith(str(os.getpid()))


def test_records_have_no_nan_or_infinity_and_files_are_named_by_their_option(tmp_path):
    """mid.json and ifa.json are strict JSON (non-finite values as None, like wsca.json); an
    unreadable MID split names its own option."""
    import json
    from wsca_jax.io import json_ready, load_embeddings
    rec = json_ready({"a": float("inf"), "b": [np.float32(np.nan), 1.5], "c": np.arange(2), "d": {"e": -np.inf}})
    assert rec == {"a": None, "b": [None, 1.5], "c": [0, 1], "d": {"e": None}}
    json.dumps(rec, allow_nan=False)
    with pytest.raises(WscaInputError, match=r"^--val: file not found: "):
        load_embeddings(str(tmp_path / "none.npz"), "--val")
