"""Energy response of the NaI detector used by the fast (forced-detection) mode.

The full-energy efficiency of a photon of energy E reaching the head is modelled as

    eps(E) = T_Al(E) (1 - exp(-mu_NaI(E) t)) f_fe,

the Al-cover transmission times the crystal interaction probability times the
fraction ``f_fe`` of interacting photons that deposit their full energy. ``f_fe`` is
fixed from the camera's ``photopeak_efficiency`` (0.862 in a 20 % window at 140.5 keV,
OpenTOPAS-SPECT validation of a GE 9.5 mm NaI head, ``camera_nm670.md``) after
removing the 20 % window's Gaussian acceptance, and is taken as constant over
90-155 keV (an assumption: photoelectric dominance grows slowly as E falls).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from .camera import Camera
from .xsections import linear_attenuation_per_cm, mass_attenuation_cm2_g


def interaction_probability(camera: Camera, energy_kev) -> np.ndarray:
    """Al-cover transmission x NaI interaction probability at normal incidence."""
    e = np.atleast_1d(np.asarray(energy_kev, dtype=float))
    det = camera.detector
    mu_al = np.array([linear_attenuation_per_cm("aluminium", x) for x in e]) / 10.0
    mu_nai = np.array([mass_attenuation_cm2_g("nai", x) for x in e]) * 3.667 / 10.0
    return np.exp(-mu_al * det.cover_mm) * (1.0 - np.exp(-mu_nai * det.crystal_mm))


def full_energy_fraction(camera: Camera) -> float:
    """Fraction of interacting 140.5 keV photons depositing their full energy (from photopeak_efficiency)."""
    e = 140.5
    sig = float(camera.detector.energy_fwhm_kev(e)) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    acc20 = math.erf(0.1 * e / (math.sqrt(2.0) * sig))
    f = camera.detector.photopeak_efficiency / acc20 / float(interaction_probability(camera, e)[0])
    return min(f, 1.0)


def full_energy_efficiency(camera: Camera, energy_kev) -> np.ndarray:
    """Full-energy detection efficiency eps(E) for photons reaching the head (see module doc)."""
    e = np.asarray(energy_kev, dtype=float)
    flat = e.ravel()
    # the interaction probability varies smoothly: evaluate on a coarse grid and interpolate
    grid = np.linspace(max(flat.min(), 10.0), max(flat.max(), 10.5), 200)
    p = interaction_probability(camera, grid) * full_energy_fraction(camera)
    return np.interp(flat, grid, p).reshape(e.shape)


def window_acceptance(camera: Camera, lower_kev: float, upper_kev: float, energy_kev) -> np.ndarray:
    """Probability that a full-energy deposit at ``energy_kev`` is blurred into [lower, upper) keV."""
    e = np.asarray(energy_kev, dtype=float)
    s = camera.detector.energy_fwhm_kev(e) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return 0.5 * (erf((upper_kev - e) / (math.sqrt(2) * s)) - erf((lower_kev - e) / (math.sqrt(2) * s)))
