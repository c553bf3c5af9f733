import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import numpy as np
import pandas as pd
import pytest


def pytest_configure(config):
    """One JAX compilation cache per test session, shared by the xdist workers and the subprocesses the
    tests start (they inherit the environment): the many fits, trainings and CLI runs compile the same
    programs, and XLA's compile time dominated the suite. Fresh per session, removed at its end, so a
    run never depends on an earlier one; a cache the user set is left alone."""
    if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    config._wsca_jax_cache = tempfile.mkdtemp(prefix="wsca-test-jax-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=config._wsca_jax_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def pytest_unconfigure(config):
    if getattr(config, "_wsca_jax_cache", None):
        shutil.rmtree(config._wsca_jax_cache, ignore_errors=True)


def make_known_answer(n=800, d=24, seed=0, used=True, balanced=True):
    """Embeddings where 'site' is strongly encoded on axis 1, the primary label on axis 0.

    The primary head is e0 (unused: site never enters the decision) or e0 + e1 (used). With
    ``balanced`` the label x site cells have equal counts, so no chance confounding arises.
    """
    rng = np.random.default_rng(seed)
    if balanced:
        y = np.repeat([0, 1], n // 2)
        site = np.tile([0, 1], n // 2)
        perm = rng.permutation(n)
        y, site = y[perm], site[perm]
    else:
        y = rng.integers(0, 2, n)
        site = rng.integers(0, 2, n)
    z = rng.normal(size=(n, d))
    z[:, 0] += 2.0 * (2 * y - 1)
    z[:, 1] += 2.0 * (2 * site - 1)
    head = np.zeros(d)
    head[0] = 1.0
    if used:
        head[1] = 1.0
    meta = pd.DataFrame({"label": y, "site": site})
    return z, meta, head


@pytest.fixture
def known_answer():
    return make_known_answer


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """One quick `wsca demo` run on the bundled digits (shared by the demo and browser tests)."""
    from wsca_jax.validation.demo import run_demo
    out = tmp_path_factory.mktemp("demo") / "out"
    record = run_demo(str(out), dataset="digits", epochs=1, bootstrap=10, permutations=10, seed=0, progress=False)
    return out, record


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium; installed with apt-get when missing (root), else the test is skipped."""
    import shutil
    import subprocess

    def find():
        return shutil.which("chromium") or shutil.which("chromium-browser")

    path = find()
    if path is None and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=900)
        except (subprocess.TimeoutExpired, OSError):
            pass
        path = find()
    if path is None:
        pytest.skip("chromium is not installed and apt-get could not install it (needs root and the Debian mirror)")
    return path
