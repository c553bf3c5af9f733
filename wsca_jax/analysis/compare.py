"""WSC of probe fits against the primary head: the comparison every stage projects its fits through."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..wsc import prepare_head_jit, wsc_by_k_jit, wsc_jit, wsc_reweighted_basis_jit
from .prepare import Prepared


class Comparison:
    """WSC of replicate fits against the primary head (rows refitted when the primary is probed)."""

    def __init__(self, prep: Prepared, point, centered: bool):
        self.prep, self.centered = prep, centered
        T = prep.T
        if prep.p_rows is not None:
            self.rows = prep.p_rows
        else:
            self.rows = point.coef[0, T, : prep.taskset.primary.n_classes]
        self.mask = np.ones(self.rows.shape[0], bool)

    def probes(self, fit, refit_primary: bool = True) -> np.ndarray:
        """``(R, T, Ca, K)`` for the probe rows of ``fit``."""
        prep, T, Ca = self.prep, self.prep.T, self.rows.shape[0]
        if prep.p_rows is None and refit_primary:
            prim = fit.coef[:, T, :Ca]
        else:
            prim = np.broadcast_to(self.rows, (fit.coef.shape[0],) + self.rows.shape)
        return np.array(wsc_jit(prim, self.mask, fit.coef[:, :T], prep.cmask[:T], k=prep.k, centered=self.centered))

    def compared_rows(self, fit) -> tuple[np.ndarray, np.ndarray]:
        """The rows as the cosines see them (projected on k axes, centred):
        primary ``(R, Ca, k)`` (the fixed head broadcast when not probed) and tasks ``(R, T, K, k)``."""
        prep, T, Ca = self.prep, self.prep.T, self.rows.shape[0]
        R = fit.coef.shape[0]
        prim = fit.coef[:, T, :Ca] if prep.p_rows is None else np.broadcast_to(self.rows, (R,) + self.rows.shape)
        a = prepare_head_jit(jnp.asarray(prim), self.mask, k=prep.k, centered=self.centered)
        b = prepare_head_jit(jnp.asarray(fit.coef[:, :T]), prep.cmask[:T], k=prep.k, centered=self.centered)
        return np.asarray(a), np.asarray(b)

    def by_k(self, fit, ks, refit_primary: bool = True) -> np.ndarray:
        """``(R, n_k, T, Ca, K)`` WSC of the probe rows of ``fit`` at every projection size in ``ks``;
        the fixed heads' tasks take the head-to-head values."""
        prep, T, Ca = self.prep, self.prep.T, self.rows.shape[0]
        R = fit.coef.shape[0]
        prim = fit.coef[:, T, :Ca] if (prep.p_rows is None and refit_primary) else np.broadcast_to(
            self.rows, (R,) + self.rows.shape)
        out = np.array(wsc_by_k_jit(prim, self.mask, fit.coef[:, :T], prep.cmask[:T], np.asarray(ks),
                                    centered=self.centered))
        if prep.fixed:
            out[:, :, prep.fixed] = np.asarray(wsc_by_k_jit(self.rows[None], self.mask, prep.f_rows[None], prep.f_mask,
                                                            np.asarray(ks), centered=self.centered))
        return out

    def fixed_heads(self) -> np.ndarray:
        """``(F, Ca, K)`` head-to-head WSC of the jointly trained heads."""
        p = self.prep
        return np.asarray(wsc_jit(self.rows, self.mask, p.f_rows, p.f_mask, k=p.k, centered=self.centered))

    def fixed_resampled(self, weights) -> np.ndarray:
        """``(R, F, Ca, K)``: the fixed heads with the PCA projection refitted on reweighted rows."""
        p = self.prep
        return np.asarray(wsc_reweighted_basis_jit(p.basis.x, jnp.asarray(weights, jnp.float32), self.rows,
                                                   self.mask, p.f_rows, p.f_mask, k=p.k, centered=self.centered))

