"""Photon interaction cross-sections per material, tabulated from xraydb.

xraydb 4.5 serves the Elam/Ravel/Sieber tables, which match NIST XCOM to about
4 digits at 100-150 keV (``../shared/reference/physics.md``). For a compound the
mass attenuation coefficient is the mass-fraction-weighted sum of the elements'
(Bragg additivity). Tables are on a uniform energy grid (keV) and are looked up by
log-log interpolation between neighbouring nodes, in Numba (:func:`mu_lookup`).

The Rayleigh form factor ``F(q)`` of a compound (independent-atom approximation,
``F^2 = sum_i n_i F_i^2`` with ``n_i`` atoms of element ``i`` per unit mass) comes from
``xraydb.f0`` and is used for coherent angular sampling.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xraydb
from numba import njit

from her2sim.core.errors import PhysicsError, check_range
from her2sim.core.materials import MATERIAL_NAMES, get_material

#: tabulation range, keV (windows and emission energies must lie inside)
E_MIN_KEV = 10.0
E_MAX_KEV = 250.0
E_STEP_KEV = 0.25

#: interaction channels (column order of the tables)
PHOTO, INCOH, COH = 0, 1, 2
_KIND = {PHOTO: "photo", INCOH: "incoh", COH: "coh"}

#: momentum-transfer grid for the Rayleigh form factor, x = sin(theta/2)/lambda in 1/Angstrom
Q_MAX = 12.0
N_Q = 601

#: keV -> 1/Angstrom for x = sin(theta/2)/lambda:  1/lambda[1/A] = E[keV] / 12.398
HC_KEV_A = 12.398419843320026


def energy_grid_kev() -> np.ndarray:
    """Uniform tabulation grid in keV."""
    n = int(round((E_MAX_KEV - E_MIN_KEV) / E_STEP_KEV)) + 1
    return E_MIN_KEV + E_STEP_KEV * np.arange(n)


@lru_cache(maxsize=None)
def mass_attenuation_cm2_g(material: str, energy_kev: float, kind: str = "total") -> float:
    """mu/rho (cm^2/g) of a catalogue material at one energy (xraydb Elam tables).

    Parameters
    ----------
    material : str
        Name from :mod:`her2sim.core.materials`.
    energy_kev : float
        Photon energy in keV (within 1-1000 keV).
    kind : {"total", "photo", "incoh", "coh"}
    """
    check_range("energy_kev", energy_kev, 1.0, 1000.0, error=PhysicsError)
    if kind not in ("total", "photo", "incoh", "coh"):
        raise PhysicsError(f"kind = {kind!r} is not one of ['total', 'photo', 'incoh', 'coh']")
    mat = get_material(material)
    e_ev = float(energy_kev) * 1000.0
    return float(sum(w * float(xraydb.mu_elam(el, e_ev, kind=kind)) for el, w in mat.mass_fractions))


def linear_attenuation_per_cm(material: str, energy_kev: float, density_g_cm3: float | None = None,
                              kind: str = "total") -> float:
    """mu (1/cm) of a material at its nominal (or the given) density."""
    rho = get_material(material).density_g_cm3 if density_g_cm3 is None else density_g_cm3
    return mass_attenuation_cm2_g(material, energy_kev, kind) * rho


@dataclass(frozen=True)
class CrossSectionTable:
    """Mass-attenuation tables for a list of materials, ready for Numba kernels.

    Attributes
    ----------
    names : tuple of str
        Material names; row ``m`` of every table belongs to ``names[m]``.
    energies_kev : numpy.ndarray
        Uniform grid (n_e,) in keV.
    log_mu_rho : numpy.ndarray
        ln(mu/rho [cm^2/g]) per (material, channel, energy), channels PHOTO, INCOH, COH.
    ff_q : numpy.ndarray
        Momentum transfer grid x (n_q,) in 1/Angstrom.
    ff_cdf : numpy.ndarray
        Per material, the cumulative integral of F(x)^2 d(x^2) on ``ff_q`` normalised to
        its value at ``Q_MAX`` (material, n_q): used to sample Rayleigh angles.
    ff2_total : numpy.ndarray
        Unnormalised integral of F^2 d(x^2) up to each grid x (material, n_q).
    ff2 : numpy.ndarray
        F(x)^2 per unit mass (material, n_q), the Rayleigh angular weight.
    rayleigh_norm : numpy.ndarray
        N(E) = integral over 4 pi of (1 + cos^2)/2 F^2(x) dOmega per (material, energy), so that
        (1 + cos^2)/2 F^2 / N is the Rayleigh angular pdf per steradian.
    """

    names: tuple
    energies_kev: np.ndarray
    log_mu_rho: np.ndarray
    ff_q: np.ndarray
    ff_cdf: np.ndarray
    ff2_total: np.ndarray
    ff2: np.ndarray
    rayleigh_norm: np.ndarray

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise PhysicsError(f"material = {name!r} is not in this cross-section table {list(self.names)}") from None

    def mu_rho(self, material: str, energy_kev, channel: int | None = None) -> np.ndarray:
        """mu/rho (cm^2/g) from the table (total when ``channel`` is None) by log-log interpolation."""
        e = np.atleast_1d(np.asarray(energy_kev, dtype=np.float64))
        if np.any(e < E_MIN_KEV) or np.any(e > E_MAX_KEV):
            check_range("energy_kev", float(e.min() if e.min() < E_MIN_KEV else e.max()), E_MIN_KEV, E_MAX_KEV,
                        error=PhysicsError)
        m = self.index(material)
        chans = (PHOTO, INCOH, COH) if channel is None else (channel,)
        out = np.zeros_like(e)
        for c in chans:
            out += np.array([mu_lookup(self.log_mu_rho, self.energies_kev[0], E_STEP_KEV, m, c, x) for x in e])
        return out


@lru_cache(maxsize=4)
def build_table(names: tuple = MATERIAL_NAMES) -> CrossSectionTable:
    """Tabulate photo/incoherent/coherent mu/rho and Rayleigh form factors for ``names``."""
    e = energy_grid_kev()
    e_ev = e * 1000.0
    q = np.linspace(0.0, Q_MAX, N_Q)
    log_mu = np.zeros((len(names), 3, e.size))
    cdf = np.zeros((len(names), N_Q))
    tot = np.zeros((len(names), N_Q))
    ff2 = np.zeros((len(names), N_Q))
    rnorm = np.zeros((len(names), e.size))
    for m, name in enumerate(names):
        mat = get_material(name)
        for c, kind in _KIND.items():
            mu = np.zeros_like(e_ev)
            for el, w in mat.mass_fractions:
                mu += w * np.asarray(xraydb.mu_elam(el, e_ev, kind=kind), dtype=float)
            log_mu[m, c] = np.log(np.maximum(mu, 1e-30))
        f2 = np.zeros_like(q)
        for el, w in mat.mass_fractions:
            f2 += w / xraydb.atomic_mass(el) * np.asarray(xraydb.f0(el, q), dtype=float) ** 2
        # integral of F^2 d(x^2) = integral of F^2 2x dx (trapezoid, cumulative)
        integrand = f2 * 2.0 * q
        c_int = np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1]) * np.diff(q))])
        tot[m] = c_int
        cdf[m] = c_int / c_int[-1]
        ff2[m] = f2
        # N(E) = 2 pi int_{-1}^{1} (1 + c^2)/2 F^2(x(c)) dc with x = x_max sqrt((1 - c)/2), integrated in
        # x (dc = -4 x dx / x_max^2) on a fine grid so the sharp forward peak is resolved
        xmax = e / HC_KEV_A
        t = np.linspace(0.0, 1.0, 2001)
        xs = xmax[:, None] * t[None, :]
        cs = 1.0 - 2.0 * t[None, :] ** 2
        integrand = 0.5 * (1.0 + cs ** 2) * np.interp(xs, q, f2, right=0.0) * 4.0 * xs / xmax[:, None] ** 2
        rnorm[m] = 2.0 * np.pi * np.trapezoid(integrand, xs, axis=1)
    return CrossSectionTable(tuple(names), e, log_mu, q, cdf, tot, ff2, rnorm)


@njit(cache=True)
def mu_lookup(log_mu_rho, e0_kev, de_kev, m, channel, energy_kev):
    """mu/rho (cm^2/g) of material ``m`` and ``channel`` at ``energy_kev`` (log-log interpolation)."""
    f = (energy_kev - e0_kev) / de_kev
    n = log_mu_rho.shape[2]
    i = int(f)
    if i < 0:
        i = 0
    if i > n - 2:
        i = n - 2
    e_lo = e0_kev + i * de_kev
    e_hi = e_lo + de_kev
    t = (np.log(energy_kev) - np.log(e_lo)) / (np.log(e_hi) - np.log(e_lo))
    return np.exp(log_mu_rho[m, channel, i] * (1.0 - t) + log_mu_rho[m, channel, i + 1] * t)
