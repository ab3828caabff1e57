"""Attenuation maps for SPECT reconstruction (1/cm at 140.5 keV on the SPECT grid)."""
from __future__ import annotations

import numpy as np

from her2sim.core.grid import Grid, resample
from her2sim.core.hu import hu_to_mu_per_cm


def mu_map_from_ct(ct_hu: np.ndarray, ct_grid: Grid, spect_grid: Grid, kvp: int = 120) -> np.ndarray:
    """CT (HU) -> linear attenuation coefficient at 140.5 keV (1/cm) on ``spect_grid``.

    The CT is converted with the bilinear map of :func:`her2sim.core.hu.hu_to_mu_per_cm`
    and then resampled trilinearly; points outside the CT are air (0 1/cm). Converting
    before resampling keeps the bone/soft-tissue slope change exact at CT resolution.
    """
    ct_grid.check_array("ct_hu", ct_hu)
    mu = hu_to_mu_per_cm(np.asarray(ct_hu, dtype=np.float64), kvp=kvp)
    out = resample(mu, ct_grid, spect_grid, order=1, cval=0.0)
    return np.maximum(out, 0.0)
