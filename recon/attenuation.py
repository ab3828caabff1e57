"""Attenuation maps for SPECT reconstruction (1/cm at 140.5 keV on the SPECT grid)."""
from __future__ import annotations

import numpy as np

from her2sim.core.grid import Grid, resample
from her2sim.core.hu import hu_to_mu_per_cm
from her2sim.core.radionuclide import TC99M


#: attenuation maps of a study (``recon.mu_map``): ``ct`` (:func:`mu_map_from_ct`, the scanner's bilinear map)
#: or ``materials`` (:func:`mu_map_from_materials`, the phantom's own materials)
MU_MAP_SOURCES = ("ct", "materials")


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


def mu_map_from_materials(phantom, grid: Grid, energy_kev: float | None = None) -> np.ndarray:
    """mu (1/cm) of a phantom's materials x densities at ``energy_kev`` (99mTc line), resampled to ``grid``.

    The ideal attenuation map (what the Monte Carlo transports), to separate the error of the
    clinical HU -> mu conversion (:func:`mu_map_from_ct`) from the other errors of a study.

    Cross-sections are the Monte Carlo's own (xraydb, :func:`her2sim.sim.xsections.mass_attenuation_cm2_g`).
    """
    from her2sim.sim.xsections import mass_attenuation_cm2_g

    e = TC99M.gamma_kev if energy_kev is None else float(energy_kev)
    mu_rho = np.zeros(256)
    for i, name in enumerate(phantom.material_names):
        mu_rho[i] = mass_attenuation_cm2_g(name, e)
    rho = phantom.density_g_cm3.astype(np.float64)
    mu = mu_rho[phantom.material_ids.astype(np.intp)] * rho
    mu[rho < 0.01] = 0.0  # air (2e-4 1/cm) is zero, as in a clinical map, so the support stays the body
    return np.maximum(resample(mu, phantom.grid, grid, order=1, cval=0.0), 0.0)
