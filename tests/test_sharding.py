"""Probes sharded over devices and processes give the single-device results.

The sharded runs are fresh processes (the device count and the distributed runtime are fixed when
JAX starts), compared with `wsca analyze` on this process's one CPU device: on 8 forced host devices
(the replicate axis laid out on a mesh), and as 2 processes joined by JAX's distributed runtime (gloo collectives
on 127.0.0.1), each computing its share of the replicates, process 0 writing the outputs.
The fits are float32 and the devices multiply differently blocked matrices, so values agree to
rounding: cosines (at most 1 in size) within 1e-6, p-values and verdicts exactly.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("shard")
    rng = np.random.default_rng(0)
    n = 500
    meta = pd.DataFrame({"label": rng.integers(0, 2, n), "site": rng.integers(0, 3, n), "sex": rng.integers(0, 2, n)})
    z = (rng.normal(size=(n, 20)) + np.outer(meta["site"], np.eye(20)[0]) * 1.5
         + np.outer(meta["label"], np.eye(20)[1]) + np.outer(meta["label"], np.eye(20)[0]) * 0.5)
    np.save(d / "z.npy", z.astype(np.float32))
    meta.to_csv(d / "meta.csv", index=False)
    args = ["--embeddings", str(d / "z.npy"), "--metadata", str(d / "meta.csv"), "--primary", "label",
            "--categorical", "site,sex", "--bootstrap", "12", "--permutations", "12", "--pca-min", "8",
            "--no-figures", "--quiet"]
    from wsca_jax.cli import main                  # the reference in this (one-device) process: no new start-up
    import jax
    assert jax.device_count() == 1
    assert main(["analyze", *args, "--out", str(d / "single")]) == 0
    with open(d / "single" / "wsca.json") as f:
        single = json.load(f)
    return d, args, single


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _run(args, devices: int) -> dict:
    r = subprocess.run([sys.executable, "-m", "wsca_jax.cli", "analyze", *args], capture_output=True, text=True,
                       env=_env(devices), timeout=600)
    assert r.returncode == 0, r.stderr
    out = args[args.index("--out") + 1]
    with open(os.path.join(out, "wsca.json")) as f:
        return json.load(f)


def _same(a: dict, b: dict) -> None:
    assert a["tasks"].keys() == b["tasks"].keys()
    for t in a["tasks"]:
        x, y = a["tasks"][t], b["tasks"][t]
        for k in ("wsc", "ci_low", "ci_high", "wsc_corrected"):
            np.testing.assert_allclose(np.asarray(y[k], float), np.asarray(x[k], float), atol=1e-6, rtol=1e-6, err_msg=f"{t} {k}")
        for k in ("max_abs_wsc", "max_abs_wsc_corrected"):
            assert y["summary"][k] == pytest.approx(x["summary"][k], abs=1e-6), (t, k)
        assert y["summary"]["p_value"] == x["summary"]["p_value"] and y["summary"]["verdict"] == x["summary"]["verdict"]
    assert a["diagnostics"]["stage_fits"] == b["diagnostics"]["stage_fits"]


def test_eight_host_devices_give_the_one_device_result(inputs, tmp_path):
    d, args, single = inputs
    sharded = _run(args + ["--out", str(tmp_path / "eight")], devices=8)
    assert single["diagnostics"]["devices"]["devices"] == 1
    assert sharded["diagnostics"]["devices"] == {**single["diagnostics"]["devices"], "devices": 8}   # chunk 8 / 8
    _same(single, sharded)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_on_the_distributed_runtime_give_the_one_process_result(inputs, tmp_path):
    d, args, single = inputs
    out = tmp_path / "two"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "wsca_jax.cli", "analyze", *args, "--distributed",
                               "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                               "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(1)) for i in (1, 0)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    with open(out / "wsca.json") as f:
        two = json.load(f)
    assert two["diagnostics"]["devices"] == {**single["diagnostics"]["devices"], "devices": 2, "processes": 2}
    _same(single, two)
    assert sorted(os.listdir(out)) == sorted(os.listdir(d / "single"))   # written once, by process 0


def test_a_missing_process_is_one_line_naming_the_coordinator_and_the_missing_ids(inputs, tmp_path):
    """Processes 0 and 1 of 3 (process 2 never starts): both stop after --join-timeout with one
    line naming the coordinator and process 2, exit 2, nothing written (JAX's own runtime aborts
    natively at its deadline); a process without a coordinator says it could not reach it."""
    d, args, _ = inputs
    out, port = tmp_path / "three", _free_port()
    coord = f"127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "wsca_jax.cli", "analyze", *args, "--distributed",
                               "--coordinator", coord, "--num-processes", "3", "--process-id", str(i),
                               "--join-timeout", "5", "--out", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(1)) for i in (1, 0)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, err[-2000:]
        assert f"process 2 of 3 did not join the coordinator {coord} within 5 s (joined: 0, 1)" in lines[0]
    assert not out.exists()
    r = subprocess.run([sys.executable, "-m", "wsca_jax.cli", "analyze", *args, "--distributed", "--coordinator",
                        f"127.0.0.1:{_free_port()}", "--num-processes", "2", "--process-id", "1", "--join-timeout",
                        "2", "--out", str(out)], capture_output=True, text=True, env=_env(1), timeout=120)
    assert r.returncode == 2 and "process 1 could not reach the coordinator" in r.stderr and len(r.stderr.strip().splitlines()) == 1
