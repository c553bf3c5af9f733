import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

import numpy as np
import pandas as pd
import pytest


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
