"""Shortcut induction (the WSC paper's validation, METHOD.md 1.6), as pure index-set functions.

* :func:`balanced_indices` -- equal counts in every class x confounder cell.
* :func:`biased_indices` -- each class's majority from one confounder value, by discarding rows,
  with ``strength`` from 0 (balanced) to 1 (fully confounded).
* :func:`confounded_indices` -- a fixed-size design for dose-response: same class sizes at every
  strength, only the class-confounder association changes.
* :func:`artefact_indices` + :func:`stamp_artefact` -- for data without metadata: an
  acquisition-like signature stamped on a controlled fraction of each class, recorded as a column.
"""

from __future__ import annotations

import numpy as np

from ...errors import require


def _cells(labels, confounder):
    labels = np.asarray(labels)
    confounder = np.asarray(confounder)
    classes = np.unique(labels)
    values = np.unique(confounder)
    return classes, values, {(c, v): np.flatnonzero((labels == c) & (confounder == v)) for c in classes for v in values}


def balanced_indices(labels, confounder, per_cell: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices with the same count in every (class, confounder) cell.

    Args:
      labels, confounder: ``(N,)``.  per_cell: rows per cell (default: the smallest cell).
    Returns:
      sorted indices, ``per_cell * n_classes * n_values`` of them.
    """
    rng = np.random.default_rng(seed)
    classes, values, cells = _cells(labels, confounder)
    smallest = min(len(v) for v in cells.values())
    per_cell = smallest if per_cell is None else per_cell
    require(0 < per_cell <= smallest, f"per_cell must be in 1..{smallest} (the smallest cell), found {per_cell}")
    return np.sort(np.concatenate([rng.choice(ix, per_cell, replace=False) for ix in cells.values()]))


def biased_indices(labels, confounder, strength: float, majority: dict | None = None, per_cell: int | None = None,
                   majority_count: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices where each class's majority comes from one confounder value.

    Starting from the balanced design (``per_cell`` rows in every cell), each class keeps
    ``majority_count`` rows (default ``per_cell``) from its majority value and
    ``round(per_cell * (1 - strength))`` from every other value: strength 0 is the balanced set,
    1 keeps only the majority cells (class and confounder fully confounded).

    Args:
      majority: ``{class: confounder value}``; default: the i-th class gets the i-th value
        (cycling), so different classes lean on different values.
    """
    require(0.0 <= strength <= 1.0, f"strength must be in [0, 1], found {strength}")
    rng = np.random.default_rng(seed)
    classes, values, cells = _cells(labels, confounder)
    smallest = min(len(v) for v in cells.values())
    per_cell = smallest if per_cell is None else per_cell
    require(0 < per_cell <= smallest, f"per_cell must be in 1..{smallest} (the smallest cell), found {per_cell}")
    if majority is None:
        majority = {c: values[i % len(values)] for i, c in enumerate(classes)}
    minority_count = int(round(per_cell * (1.0 - strength)))
    out = []
    for c in classes:
        for v in values:
            ix = cells[(c, v)]
            if v == majority[c]:
                m = per_cell if majority_count is None else majority_count
                require(m <= len(ix), f"majority_count {m} exceeds the {len(ix)} rows of cell ({c}, {v})")
            else:
                m = minority_count
            out.append(rng.choice(ix, m, replace=False))
    return np.sort(np.concatenate(out))


def _round_row(x: np.ndarray) -> np.ndarray:
    """Round a row of expected counts to integers with the same (integer) total: largest remainders."""
    counts = np.floor(x + 1e-9).astype(int)
    rest = int(round(x.sum())) - counts.sum()
    counts[np.argsort(-(x - counts), kind="stable")[:rest]] += 1
    return counts


def design_table_fixed_marginals(n_per_class: dict, majority: dict, base: dict, strength: float) -> dict:
    """Counts ``{class: (V,) per confounder value}`` with both margins fixed at every strength.

    Class sizes are ``n_per_class``; the confounder's totals are ``base`` shares of all rows. Strength
    0 is the independent table; strength 1 the most associated table with the same margins (each
    class takes as many rows of its majority value as the value's total allows, the rest in
    proportion to what is left); in between, the convex combination (margins are linear, so they
    stay fixed; rounding moves a column total by at most the number of classes).
    """
    values, classes = list(base), list(n_per_class)
    n = np.array([n_per_class[c] for c in classes], float)
    col = np.array([base[v] for v in values]) * n.sum()
    indep = np.outer(n, col / n.sum())
    assoc, left = np.zeros_like(indep), col.copy()
    for i, c in enumerate(classes):
        j = values.index(majority[c]) if c in majority else None
        if j is not None:
            assoc[i, j] = min(n[i], left[j])
            left[j] -= assoc[i, j]
    for i in range(len(classes)):
        need = n[i] - assoc[i].sum()
        take = need * left / left.sum() if left.sum() > 0 else np.zeros_like(left)
        assoc[i] += take
        left = left - take
    mix = (1.0 - strength) * indep + strength * assoc
    return {c: _round_row(mix[i]) for i, c in enumerate(classes)}


def confounded_indices(labels, confounder, strength: float, majority: dict, base: dict, n_per_class: dict,
                       seed: int = 0, fixed_marginals: bool = False) -> np.ndarray:
    """A fixed-size design whose class-confounder association grows with ``strength``.

    Class ``c`` keeps ``n_per_class[c]`` rows; their confounder mix is
    ``(1 - strength) * base + strength * onehot(majority[c])``. Strength 0: the same mix in every
    class (confounder independent of the class); 1: each class from its majority value only. The
    class sizes and the total stay the same at every strength, so a dose-response compares designs
    of equal size (only the association changes), unlike :func:`biased_indices`. With
    ``fixed_marginals`` the confounder's own totals stay fixed too (``base`` shares of all rows,
    :func:`design_table_fixed_marginals`): a rare value does not vanish as the strength grows.

    Args:
      labels, confounder: ``(N,)``.  majority: ``{class: confounder value}``.
      base: ``{confounder value: share}`` (sums to 1).  n_per_class: ``{class: rows}``.
    Returns:
      sorted indices.
    """
    require(0.0 <= strength <= 1.0, f"strength must be in [0, 1], found {strength}")
    total = sum(base.values())
    require(abs(total - 1.0) < 1e-6, f"base shares must sum to 1, found {total:.4f}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    confounder = np.asarray(confounder)
    values = list(base)
    table = (design_table_fixed_marginals(n_per_class, majority, base, strength) if fixed_marginals
             else {c: _round_row(np.array([(1.0 - strength) * base[v] + strength * (v == majority[c]) for v in values])
                                 * n_c) for c, n_c in n_per_class.items()})
    out = []
    for c, counts in table.items():
        for v, m in zip(values, counts):
            ix = np.flatnonzero((labels == c) & (confounder == v))
            require(m <= len(ix), f"class {c} needs {m} rows with confounder {v!r} at strength {strength:g}, "
                                  f"found {len(ix)}; lower n_per_class or change base")
            out.append(rng.choice(ix, m, replace=False))
    return np.sort(np.concatenate(out))


def artefact_indices(labels, fractions: dict, seed: int = 0) -> np.ndarray:
    """Indices to stamp: a ``fractions[c]`` share of each class c (classes not named: none).

    Returns:
      ``(N,)`` bool mask.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c, f in fractions.items():
        require(0.0 <= f <= 1.0, f"artefact fraction for class {c} must be in [0, 1], found {f}")
        ix = np.flatnonzero(labels == c)
        mask[rng.choice(ix, int(round(f * len(ix))), replace=False)] = True
    return mask


ARTEFACT_KINDS = ("text_band", "intensity", "noise", "corner_stamp", "blur")


def stamp_artefact(images: np.ndarray, mask: np.ndarray, kind: str = "text_band", seed: int = 0) -> np.ndarray:
    """Stamp an acquisition-like signature on ``images[mask]`` (a copy is returned).

    Kinds:
      ``text_band``: a bright band with dark 'characters' along the top rows (vendor text / UI);
      ``intensity``: a vertical gain curve (a different time-gain compensation);
      ``noise``: a fixed speckle texture (another transducer's noise);
      ``corner_stamp``: a bright square with a fixed dark glyph in the top-left corner (a site logo
      or ruler mark);
      ``blur``: a horizontal box blur over 5 columns (another transducer's lateral resolution).

    Args:
      images: ``(N, H, W, C)`` uint8.  mask: ``(N,)`` bool.
    """
    require(kind in ARTEFACT_KINDS, f"artefact kind must be one of {', '.join(ARTEFACT_KINDS)}, found {kind!r}")
    out = np.array(images, copy=True)
    n, h, w, c = out.shape
    sel = out[mask].astype(np.float32)
    rng = np.random.default_rng(seed)
    if kind == "text_band":
        band = max(2, h // 10)
        pattern = (rng.random((band, w)) < 0.35).astype(np.float32)          # fixed 'glyphs'
        sel[:, :band] = 230.0 - 200.0 * pattern[None, :, :, None]
    elif kind == "intensity":
        gain = np.linspace(1.35, 0.65, h, dtype=np.float32)[None, :, None, None]
        sel = sel * gain
    elif kind == "noise":
        texture = rng.normal(0.0, 25.0, (h, w, 1)).astype(np.float32)
        sel = sel + texture[None]
    elif kind == "corner_stamp":
        side = max(3, h // 5)
        glyph = (rng.random((side, side)) < 0.35).astype(np.float32)
        sel[:, :side, :side] = 240.0 - 200.0 * glyph[None, :, :, None]
    else:                                                   # blur: mean over 5 columns, edges padded
        padded = np.pad(sel, ((0, 0), (0, 0), (2, 2), (0, 0)), mode="edge")
        sel = sum(padded[:, :, i:i + w] for i in range(5)) / 5.0
    out[mask] = np.clip(sel, 0, 255).astype(np.uint8)
    return out
