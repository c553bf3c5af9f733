"""Simulations with a known truth, for calibration tests and studies.

:func:`multitask_networks` trains many small multi-task networks at once (one ``vmap`` over
networks, one ``jit``): each sees its own draw of a synthetic dataset in which the primary label and a
categorical attribute are encoded in the inputs, and learns a non-negative embedding with a
primary head and an attribute head trained jointly -- the paper's multi-task setting in miniature.
``dependence = 0`` makes the label independent of the attribute (the primary head has no reason to
use it: the null for fixed-head WSC); ``dependence > 0`` lets the label depend on the attribute
(the head should use it).

:func:`calibration_data` draws embeddings of a :class:`CalibrationDesign` whose population WSC is
fixed by the design (computed by running the same pipeline on a very large draw): the generator of
the calibration study of estimates, intervals and tests. ``CalibrationDesign(covariance=...)`` takes the
latent's covariance from real embeddings (:func:`real_covariance`: the within-cell covariance of a cached
``.npz`` of embeddings) or from a given matrix, with the attribute and the head planted on its eigen-axes.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd


class MultitaskSim(NamedTuple):
    """Arrays of ``M`` simulated networks.

    Attributes:
      embeddings: ``(M, N, E)`` non-negative training-set embeddings.
      labels: ``(M, N)`` primary labels in {0, 1}.  attribute: ``(M, N)`` in {0 .. A-1}.
      head_primary: ``(M, 2, E)``.  head_attribute: ``(M, A, E)``.
      accuracy: ``(M, 2)`` training accuracy of the two heads.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    attribute: np.ndarray
    head_primary: np.ndarray
    head_attribute: np.ndarray
    accuracy: np.ndarray


def _data(key, n: int, d_in: int, n_attr: int, dependence: float):
    """One synthetic dataset: ``x (N, d_in)``, label ``(N,)``, attribute ``(N,)``."""
    k_a, k_y, k_m, k_e = jax.random.split(key, 4)
    attr = jax.random.randint(k_a, (n,), 0, n_attr)
    # the label: a coin, or (dependence > 0) tilted towards attribute value 0
    logit = dependence * 3.0 * jnp.where(attr == 0, 1.0, -1.0)
    y = (jax.random.uniform(k_y, (n,)) < jax.nn.sigmoid(logit)).astype(jnp.int32)
    latent = jnp.concatenate([(2.0 * y - 1.0)[:, None], jax.nn.one_hot(attr, n_attr) * 1.5], axis=1)
    mix = jax.random.normal(k_m, (1 + n_attr, d_in)) / jnp.sqrt(1.0 + n_attr)
    x = latent @ mix + 0.7 * jax.random.normal(k_e, (n, d_in))
    return x, y, attr


def _init(key, d_in: int, hidden: int, width: int, n_attr: int):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    he = lambda k, a, b: jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a)  # noqa: E731
    return {"w1": he(k1, d_in, hidden), "b1": jnp.zeros(hidden), "w2": he(k2, hidden, width), "b2": jnp.zeros(width),
            "hy": he(k3, width, 2) * 0.1, "by": jnp.zeros(2), "ha": he(k4, width, n_attr) * 0.1, "ba": jnp.zeros(n_attr)}


def _embed(params, x):
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    return jax.nn.relu(h @ params["w2"] + params["b2"])


def _loss(params, x, y, attr, attr_weight):
    z = _embed(params, x)
    ce_y = optax.softmax_cross_entropy_with_integer_labels(z @ params["hy"] + params["by"], y).mean()
    ce_a = optax.softmax_cross_entropy_with_integer_labels(z @ params["ha"] + params["ba"], attr).mean()
    return ce_y + attr_weight * ce_a


def _train_one(key, n, d_in, hidden, width, n_attr, dependence, attr_weight, steps, lr, permute):
    k_data, k_init, k_perm = jax.random.split(key, 3)
    x, y, attr = _data(k_data, n, d_in, n_attr, dependence)
    attr = jnp.where(permute, jax.random.permutation(k_perm, attr), attr)
    params = _init(k_init, d_in, hidden, width, n_attr)
    opt = optax.adamw(lr, weight_decay=1e-4)
    state = opt.init(params)

    def step(carry, _):
        params, state = carry
        grads = jax.grad(_loss)(params, x, y, attr, attr_weight)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, state), None, length=steps)
    z = _embed(params, x)
    acc = jnp.stack([jnp.mean(jnp.argmax(z @ params["hy"] + params["by"], 1) == y),
                     jnp.mean(jnp.argmax(z @ params["ha"] + params["ba"], 1) == attr)])
    return z, y, attr, params["hy"].T, params["ha"].T, acc


def multitask_networks(seed: int, n_networks: int, n: int = 400, *, d_in: int = 24, hidden: int = 64,
                       width: int = 32, n_attr: int = 3, dependence: float = 0.0, attr_weight: float = 0.5,
                       steps: int = 300, lr: float = 1e-2, permute_attribute: bool = False) -> MultitaskSim:
    """Train ``n_networks`` two-head networks, each on its own synthetic draw (see module doc).

    Args:
      seed: master seed.  n_networks: M.  n: rows per dataset.  d_in, hidden, width: input, hidden and
      embedding sizes.  n_attr: attribute classes.  dependence: 0 = label independent of the
      attribute; > 0 = label tilted by it.  attr_weight: weight of the attribute head's loss.
      steps, lr: full-batch AdamW steps and learning rate.
      permute_attribute: train the attribute head on permuted attribute labels (a *null network*:
        whatever its head aligns with, it is not the attribute); ``attribute`` returns them permuted.
    Returns:
      :class:`MultitaskSim` as NumPy arrays.
    """
    keys = jax.random.split(jax.random.PRNGKey(seed), n_networks)
    train = jax.jit(jax.vmap(lambda k: _train_one(k, n, d_in, hidden, width, n_attr, dependence, attr_weight,
                                                   steps, lr, permute_attribute)))
    out = [np.asarray(a) for a in train(keys)]
    return MultitaskSim(out[0], out[1].astype(int), out[2].astype(int), out[3], out[4], out[5])


# ---------------------------------------------------------------------------------------------
# Embeddings with a known population WSC (for calibration of estimates, intervals and tests)


class CalibrationDesign(NamedTuple):
    """A synthetic embedding whose population WSC is fixed by the design.

    Attributes:
      d: embedding width.  n_classes: levels of the attribute (2-6).
      shift: distance of each attribute class mean from the centre, in latent SD units along its
        axes (how strongly the attribute is encoded; 0 = not at all).
      use: weight of the attribute direction in the primary head and in the label (0 = unused).
      group_size: rows per group (patient); the attribute and a random offset are shared in a group.
      sd_first, sd_last: the latent SDs run linearly from the first to the last axis (anisotropy).
      confound: direct effect of attribute class 0 on the label logit, outside the head (a confounded
        design whose head does not use the attribute when ``use = 0``).
      covariance: ``None`` (the diagonal latent above), or the latent's covariance: a ``(D, D)``
        array, or the path of an ``.npz`` of real embeddings (:func:`real_covariance`). The latent is
        then ``N(0, s Sigma)`` with ``s`` making the largest eigenvalue ``sd_first ** 2``; ``d`` and
        ``sd_last`` are not used (the width is ``D``); the axes below are the eigenvectors of ``Sigma``
        (descending eigenvalues) in place of the coordinate axes, and ``shift`` is in units of the SD
        of each attribute axis (``sqrt`` of its eigenvalue), since real spectra fall by orders of
        magnitude. As in the diagonal design, the head's axis (eigen-axis 0) is orthogonal to the
        attribute's axes (5 .. 5 + C - 2), in the Euclidean and in the ``Sigma^-1`` metric (the
        attribute's discriminant directions lie in the same eigen-axes), so ``use = 0`` has a
        population WSC of 0. WSC is rotation-invariant, so what the real covariance brings is its
        spectrum (its anisotropy and effective dimension).
    """

    d: int = 96
    n_classes: int = 3
    shift: float = 1.2
    use: float = 0.8
    group_size: int = 1
    sd_first: float = 2.0
    sd_last: float = 0.3
    confound: float = 0.0
    covariance: object = None


def _simplex_coords(design: CalibrationDesign) -> np.ndarray:
    """``(C, C-1)`` a centred simplex, each vertex at distance ``shift`` from the centre."""
    C = design.n_classes
    simplex = np.eye(C) - 1.0 / C                                     # rows: centred vertices in R^C
    basis = np.linalg.svd(simplex, full_matrices=False)[2][: C - 1]   # (C-1, C) orthonormal
    coords = simplex @ basis.T                                        # (C, C-1)
    return coords * (design.shift / np.linalg.norm(coords, axis=1, keepdims=True))   # as before: same bits


def _attribute_means(design: CalibrationDesign) -> np.ndarray:
    """``(C, d)`` class means: a centred simplex on latent axes 5 .. 5 + C - 2, scaled to ``shift``
    (with a ``covariance``: on its eigen-axes 5 .., in units of their SDs, :func:`_latent`)."""
    if design.covariance is not None:
        lam, U = _latent(design.covariance, design.sd_first)
        C = design.n_classes
        return (_simplex_coords(design) * np.sqrt(lam[5:5 + C - 1])) @ U[:, 5:5 + C - 1].T
    C = design.n_classes
    means = np.zeros((C, design.d))
    means[:, 5:5 + C - 1] = _simplex_coords(design)
    return means


def calibration_head(design: CalibrationDesign) -> np.ndarray:
    """``(d,)`` the primary head: axis 0 (with a ``covariance``: its leading eigenvector) plus ``use``
    times the unit direction of attribute class 0."""
    m = _attribute_means(design)[0]
    if design.covariance is not None:
        head = _latent(design.covariance, design.sd_first)[1][:, 0].copy()
    else:
        head = np.zeros(design.d)
        head[0] = 1.0
    if design.shift > 0:
        head += design.use * m / np.linalg.norm(m)
    return head


# ---- a latent covariance from real embeddings


def real_covariance(path: str, rows: int | None = None) -> np.ndarray:
    """``(D, D)`` the within-cell covariance of real embeddings cached as ``.npz``.

    The file (as ``experiments/use_zoo.py`` caches a network's embeddings) holds ``embeddings (N, D)``,
    ``label (N,)`` and ``artefact (N,)``; its first half are the validation rows (``rows``: how many
    to use instead). The mean of each label x artefact cell is subtracted, so neither the label nor
    the artefact moves the covariance. Raises ``FileNotFoundError`` with one line when the file is
    absent (such caches are outside the repository).
    """
    path = os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"real embeddings for the covariance not found: {path} "
                                "(experiments/use_zoo.py caches them; they are not in the repository)")
    with np.load(path) as f:
        n = len(f["label"]) // 2 if rows is None else int(rows)
        x = np.asarray(f["embeddings"][:n], np.float64)
        y, a = np.asarray(f["label"][:n]), np.asarray(f["artefact"][:n]).astype(str)
    resid = x.copy()
    for yy in np.unique(y):
        for aa in np.unique(a):
            cell = (y == yy) & (a == aa)
            resid[cell] -= x[cell].mean(0)
    return np.cov(resid.T)


@functools.lru_cache(maxsize=4)
def _file_latent(path: str, sd_first: float):
    return _eigen(real_covariance(path), sd_first)


def _eigen(cov, sd_first: float):
    """Eigenvalues (descending, scaled so the largest is ``sd_first ** 2``, negatives clipped to 0) and
    eigenvectors (columns; each with its largest-magnitude entry positive, so the draw is reproducible)."""
    cov = np.asarray(cov, np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or not np.allclose(cov, cov.T, atol=1e-8 * np.abs(cov).max()):
        raise ValueError(f"the covariance must be a symmetric (D, D) matrix, found shape {cov.shape}")
    lam, U = np.linalg.eigh((cov + cov.T) / 2)
    lam, U = np.clip(lam[::-1], 0.0, None), U[:, ::-1]
    if lam[0] <= 0:
        raise ValueError("the covariance has no positive eigenvalue")
    U = U * np.where(U[np.argmax(np.abs(U), axis=0), np.arange(U.shape[1])] < 0, -1.0, 1.0)
    return lam * (sd_first ** 2 / lam[0]), U


def _latent(covariance, sd_first: float):
    """``(eigenvalues (D,), eigenvectors (D, D))`` of a design's latent covariance."""
    if isinstance(covariance, (str, os.PathLike)):
        return _file_latent(os.path.expanduser(str(covariance)), float(sd_first))
    return _eigen(covariance, sd_first)


def calibration_covariance(design: CalibrationDesign) -> np.ndarray:
    """``(d, d)`` the covariance of a design's latent noise (one row, no group offset)."""
    if design.covariance is None:
        return np.diag(np.linspace(design.sd_first, design.sd_last, design.d) ** 2)
    lam, U = _latent(design.covariance, design.sd_first)
    return (U * lam) @ U.T


def calibration_data(design: CalibrationDesign, n: int, seed: int):
    """One draw of ``n`` rows: ``(embeddings (n, d), metadata, head (d,))``.

    Rows come in groups of ``group_size`` sharing the attribute and a random offset (a patient).
    The latent is Gaussian with SDs from ``sd_first`` to ``sd_last``; the attribute moves the class
    mean along its own axes (:func:`_attribute_means`); the primary label is
    ``1[head . z + confound (1[attr = 0] - 1/C) + noise > 0]`` with the head of
    :func:`calibration_head`, so with ``use = 0`` the head is orthogonal to the attribute's
    directions (population WSC of the head 0), and with ``confound = 0`` too the label is
    independent of the attribute. With a ``covariance`` the latent is ``N(0, s Sigma)`` and the axes
    are its eigenvectors (:class:`CalibrationDesign`). Metadata columns: ``label``, ``attr``, ``group``.
    """
    rng = np.random.default_rng(seed)
    g = max(1, int(design.group_size))
    n_groups = -(-n // g)
    group = np.repeat(np.arange(n_groups), g)[:n]
    attr = rng.integers(0, design.n_classes, n_groups)[group]
    if design.covariance is None:
        sd = np.linspace(design.sd_first, design.sd_last, design.d)
        z = rng.normal(size=(n, design.d)) * sd
        if g > 1:
            z += 0.5 * rng.normal(size=(n_groups, design.d))[group] * sd
    else:
        lam, U = _latent(design.covariance, design.sd_first)
        if len(lam) < 5 + design.n_classes - 1:
            raise ValueError(f"the covariance has {len(lam)} axes; the design needs at least {5 + design.n_classes - 1}")
        sd = np.sqrt(lam)
        z = rng.normal(size=(n, len(lam))) * sd
        if g > 1:
            z += 0.5 * rng.normal(size=(n_groups, len(lam)))[group] * sd
        z = z @ U.T
    z += _attribute_means(design)[attr]
    head = calibration_head(design)
    logit = z @ head + design.confound * ((attr == 0) - 1.0 / design.n_classes)
    label = (logit + rng.normal(size=n) > 0).astype(int)
    return z, pd.DataFrame({"label": label, "attr": attr, "group": group}), head
