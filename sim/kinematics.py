"""Compton kinematics (Klein & Nishina, Z Phys 52:853, 1929).

E' = E / (1 + (E / m_e c^2)(1 - cos theta)), m_e c^2 = 510.999 keV.
"""
from __future__ import annotations

import numpy as np
from numba import njit

ELECTRON_REST_KEV = 510.99895


@njit(cache=True)
def _compton_energy(e_kev, cos_theta):
    return e_kev / (1.0 + (e_kev / ELECTRON_REST_KEV) * (1.0 - cos_theta))


def compton_energy_kev(energy_kev, theta_rad):
    """Energy (keV) of a photon of ``energy_kev`` Compton-scattered through ``theta_rad``."""
    return energy_kev / (1.0 + (np.asarray(energy_kev) / ELECTRON_REST_KEV) * (1.0 - np.cos(theta_rad)))


def klein_nishina_dsigma_domega(energy_kev, cos_theta):
    """Klein-Nishina differential cross-section per electron, in units of r_e^2 / 2 (per sr)."""
    k = np.asarray(energy_kev) / ELECTRON_REST_KEV
    ratio = 1.0 / (1.0 + k * (1.0 - cos_theta))
    return ratio ** 2 * (ratio + 1.0 / ratio - (1.0 - cos_theta ** 2))
