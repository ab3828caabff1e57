"""Validation of the explicit camera Monte Carlo against numbers from outside the code.

Targets (``../shared/reference/validation_targets.md``, ``camera_nm670.md``):

* sensitivity of one head to a 99mTc point source at 10 cm in air, 20 % window:
  7.6e-5 to 9.0e-5 counts per emitted photon, 72-90 cps/MBq (vendor about 72 cps/MBq; SIMIND
  NM670 7.6-8.5e-5, Sawant et al. J Nucl Med Technol 53:30, 2025; OpenTOPAS-SPECT 9.0e-5);
* system FWHM 7.1-7.4 mm at 10 cm (vendor 7.4 mm, OpenTOPAS-SPECT 7.2 mm), growing linearly with
  distance, within 5 % of the analytic ``Camera.system_fwhm_mm``;
* energy FWHM of the photopeak equal to the configured 9.5 % at 140.5 keV (2 %);
* photopeak efficiency of 9.5 mm NaI at 140.5 keV, normal incidence, 20 % window: 0.862
  (OpenTOPAS-SPECT validation);
* septal penetration: our definition (path crossed any lead, including photons that scattered in the
  lead) is expected in 2-6 % of the photopeak counts; collimator scatter alone about 1.2 %
  (SIMIND split for 0.2 mm-septa LE collimators, camera_nm670.md).

Point sources are simulated by emitting into the cone ``tan(theta) <= max_tan`` around the detector
normal, weighted by the cone's solid-angle fraction (1 - cos theta_max) / 2; for the sensitivity a
second stratum covers the rest of the hemisphere (collimator scatter from steep directions, about
0.6 % of the counts). The PSF/FWHM runs use the cone only (steep directions add a flat, faint
background that does not move the half maximum).
"""
from __future__ import annotations

import math
import time

import numpy as np
from scipy.optimize import curve_fit

from her2sim.core.errors import DataError, check_int
from her2sim.core.radionuclide import TC99M

from .camera import FWHM_PER_SIGMA, Camera
from .explicit_camera import DEFAULT_MAX_TAN, run_head_kernel, spectrum_edges_kev, tabulate_response

#: 99mTc gamma energy (keV), ICRP-107 (physics.md)
TC99M_GAMMA_KEV = 140.511
#: distances (mm) of the resolution-vs-distance check
FWHM_DISTANCES_MM = (0.0, 50.0, 100.0, 150.0, 200.0)
#: emission cone (tan theta) of the PSF runs: twice the 0.05 of the widest geometric ray (2D/sqrt(3)/L)
PSF_MAX_TAN = 0.1


def point_source_sensitivity(camera: Camera, distance_mm: float = 100.0, n_photons: int = 2_000_000, seed: int = 0,
                             max_tan: float = DEFAULT_MAX_TAN, outer_photons: int | None = None) -> dict:
    """Photopeak-window counts per emitted photon for an on-axis point source in air.

    ``n_photons`` are emitted into the cone ``tan(theta) <= max_tan`` and ``outer_photons``
    (default: as many) into the rest of the hemisphere facing the head, each stratum weighted by
    its solid-angle fraction (stratified sampling over all directions that can reach the head).

    Returns
    -------
    dict
        ``sensitivity_per_photon`` and its ``sensitivity_std`` (MC standard error),
        ``sensitivity_cps_per_mbq`` (x 0.8906 photons/decay x 1e6), ``geometric_sensitivity_per_photon``
        (photopeak counts whose path crossed no lead), ``penetration_fraction`` (photopeak counts whose
        path crossed any lead / all photopeak counts), ``collimator_scatter_fraction`` (counts that
        interacted in the lead), ``septal_penetration_fraction`` (crossed lead without interacting),
        ``cone_fraction``, ``n_photons``, ``outer_photons``; ``spectrum_kev_edges`` and
        ``spectrum_per_photon`` (blurred deposited-energy spectrum, numpy arrays).
    """
    n_out = n_photons if outer_photons is None else outer_photons
    r = tabulate_response(camera, [distance_mm], n_photons, seed, matrix=5, pixel_mm=100.0, max_tan=max_tan,
                          measure_fwhm=False, outer_photons=n_out)
    s = float(r.sensitivity_per_photon[0])
    return {"sensitivity_per_photon": s,
            "sensitivity_std": float(r.sensitivity_std[0]),
            "sensitivity_cps_per_mbq": s * TC99M.gamma_yield * 1e6,
            "geometric_sensitivity_per_photon": float(r.geometric_sensitivity_per_photon[0]),
            "penetration_fraction": float(r.penetration_fraction[0]),
            "collimator_scatter_fraction": float(r.collimator_scatter_fraction[0]),
            "septal_penetration_fraction": float(r.penetration_fraction[0] - r.collimator_scatter_fraction[0]),
            "cone_fraction": r.cone_fraction,
            "n_photons": int(n_photons), "outer_photons": int(n_out),
            "spectrum_kev_edges": r.spectrum_kev_edges, "spectrum_per_photon": r.spectrum[0]}


def fwhm_vs_distance(camera: Camera, distances_mm=FWHM_DISTANCES_MM, n_photons: int = 4_000_000, seed: int = 0,
                     pixel_mm: float = 0.5, matrix: int = 201, max_tan: float = PSF_MAX_TAN,
                     collimator_scatter: bool = True) -> dict:
    """System FWHM (mm) of the photopeak PSF at each distance, with the analytic model and a linear fit.

    The FWHM is measured on the line-spread profiles of the PSF on a fine grid (see
    :func:`her2sim.sim.explicit_camera.psf_fwhm_mm`). The emission cone is narrower than for the
    sensitivity (``PSF_MAX_TAN``): rays with tan(theta) > 0.1 cross at least one septum and only
    feed the faint penetration tails, not the PSF core. ``collimator_scatter=False`` uses straight
    rays weighted by the lead transmission (faster, lower variance, no collimator scatter).

    Returns
    -------
    dict
        ``distances_mm``, ``fwhm_mm`` (Monte Carlo), ``analytic_fwhm_mm`` (``Camera.system_fwhm_mm``),
        ``geometric_fwhm_mm`` (MC FWHM with the intrinsic FWHM removed in quadrature),
        ``slope``/``intercept`` of a straight-line fit of the geometric FWHM vs distance and
        ``linear_max_residual_mm`` (largest deviation from that line).
    """
    d = np.asarray(distances_mm, dtype=float)
    r = tabulate_response(camera, d, n_photons, seed, pixel_mm=pixel_mm, matrix=matrix, max_tan=max_tan,
                          collimator_scatter=collimator_scatter)
    ri = float(camera.detector.intrinsic_fwhm_at(TC99M_GAMMA_KEV))
    geo = np.sqrt(np.maximum(r.fwhm_mm ** 2 - ri ** 2, 0.0))
    if d.size >= 2:
        slope, intercept = np.polyfit(d, geo, 1)
        resid = float(np.max(np.abs(geo - (slope * d + intercept))))
    else:
        slope, intercept, resid = float("nan"), float("nan"), float("nan")
    return {"distances_mm": d.tolist(), "fwhm_mm": r.fwhm_mm.tolist(),
            "analytic_fwhm_mm": np.asarray(camera.system_fwhm_mm(d), dtype=float).tolist(),
            "geometric_fwhm_mm": geo.tolist(), "slope": float(slope), "intercept": float(intercept),
            "linear_max_residual_mm": resid, "penetration_fraction": r.penetration_fraction.tolist()}


def _gauss(x, a, mu, s):
    return a * np.exp(-0.5 * ((x - mu) / s) ** 2)


def fit_photopeak(edges_kev, spectrum, peak_kev: float = TC99M_GAMMA_KEV) -> tuple:
    """Gaussian fit of the photopeak of a spectrum: (centre keV, FWHM keV).

    A first fit over peak -15 % .. +15 % seeds a second fit over centre +/- 2 sigma (which keeps the
    I K-escape peak and the Compton continuum out).
    """
    e = 0.5 * (np.asarray(edges_kev)[1:] + np.asarray(edges_kev)[:-1])
    y = np.asarray(spectrum, dtype=float)
    if e.size != y.size:
        raise DataError(f"spectrum has {y.size} bins but edges describe {e.size}")
    lo, hi = 0.85 * peak_kev, 1.15 * peak_kev
    mu, s = peak_kev, 0.04 * peak_kev
    for _ in range(2):
        m = (e >= lo) & (e <= hi)
        if m.sum() < 5 or y[m].max() <= 0:
            raise DataError(f"no photopeak counts between {lo:.1f} and {hi:.1f} keV")
        (a, mu, s), _ = curve_fit(_gauss, e[m], y[m], p0=[y[m].max(), mu, s])
        s = abs(s)
        lo, hi = mu - 2.0 * s, mu + 2.0 * s
    return float(mu), float(FWHM_PER_SIGMA * s)


def photopeak_efficiency(camera: Camera, n_photons: int = 200_000, seed: int = 0,
                         energy_kev: float = TC99M_GAMMA_KEV) -> dict:
    """Intrinsic efficiency: photons hitting the crystal face at normal incidence scored in window 0.

    The slab transport starts at the NaI front face (no collimator, no cover) with a pencil beam at
    the detector centre; the backscatter slab is present.

    Returns
    -------
    dict
        ``photopeak_efficiency`` (fraction in the photopeak window) and its ``efficiency_std``,
        ``energy_fwhm_kev`` / ``energy_fwhm_percent`` and ``peak_kev`` from a Gaussian fit of the
        blurred spectrum, ``configured_fwhm_percent``, ``escape_peak_fraction`` (deposits within
        2 keV of E - 28.6 keV before blur).
    """
    n = check_int("n_photons", n_photons, 100, 10 ** 9)
    z = np.zeros(n)
    raw = run_head_kernel(camera, z, z, z, z, np.ones(n), np.full(n, float(energy_kev)), seed,
                          use_collimator=False, start_at_crystal=True)
    w = camera.windows[0]
    eb = raw["e_blur_kev"]
    scored = raw["weight"] > 0
    hit = scored & (eb >= w.lower_kev) & (eb < w.upper_kev)
    eff = float(hit.mean())
    edges = spectrum_edges_kev()
    spec = np.histogram(eb[scored], bins=edges)[0].astype(float)
    peak, fwhm = fit_photopeak(edges, spec, energy_kev)
    esc = float(np.mean(scored & (np.abs(raw["e_dep_kev"] - (energy_kev - 28.6)) < 2.0)))
    return {"photopeak_efficiency": eff, "efficiency_std": math.sqrt(eff * (1 - eff) / n),
            "energy_fwhm_kev": fwhm, "energy_fwhm_percent": 100.0 * fwhm / peak, "peak_kev": peak,
            "configured_fwhm_percent": 100.0 * float(camera.detector.energy_fwhm_kev(peak)) / peak,
            "escape_peak_fraction": esc, "n_photons": n}


def validation_figures(camera: Camera | None = None, seed: int = 0, quick: bool = False) -> dict:
    """All camera validation figures as a JSON-ready dict (called by ``bench/mc_validation.py``).

    Keys: ``sensitivity_cps_per_mbq``, ``sensitivity_per_photon``, ``geometric_sensitivity_per_photon``,
    ``fwhm_mm`` (keyed "0", "50", "100", "150", "200"), ``penetration_fraction``,
    ``photopeak_efficiency``, ``energy_fwhm_percent``; plus the analytic FWHM, MC standard errors and
    ``seconds``. ``quick`` uses about 8x fewer photons.
    """
    camera = Camera() if camera is None else camera
    t0 = time.perf_counter()
    scale = 8 if quick else 1
    ss = np.random.SeedSequence(seed).spawn(3)
    seeds = [int(s.generate_state(1, dtype=np.uint32)[0]) for s in ss]
    sens = point_source_sensitivity(camera, 100.0, 8_000_000 // scale, seeds[0])
    fw = fwhm_vs_distance(camera, FWHM_DISTANCES_MM, 8_000_000 // scale, seeds[1])
    pk = photopeak_efficiency(camera, 400_000 // scale, seeds[2])
    return {"sensitivity_cps_per_mbq": sens["sensitivity_cps_per_mbq"],
            "sensitivity_per_photon": sens["sensitivity_per_photon"],
            "sensitivity_std_per_photon": sens["sensitivity_std"],
            "geometric_sensitivity_per_photon": sens["geometric_sensitivity_per_photon"],
            "fwhm_mm": {str(int(d)): f for d, f in zip(fw["distances_mm"], fw["fwhm_mm"])},
            "analytic_fwhm_mm": {str(int(d)): f for d, f in zip(fw["distances_mm"], fw["analytic_fwhm_mm"])},
            "fwhm_linear_max_residual_mm": fw["linear_max_residual_mm"],
            "penetration_fraction": sens["penetration_fraction"],
            "collimator_scatter_fraction": sens["collimator_scatter_fraction"],
            "septal_penetration_fraction": sens["septal_penetration_fraction"],
            "photopeak_efficiency": pk["photopeak_efficiency"],
            "energy_fwhm_percent": pk["energy_fwhm_percent"],
            "configured_energy_fwhm_percent": pk["configured_fwhm_percent"],
            "escape_peak_fraction": pk["escape_peak_fraction"],
            "seconds": time.perf_counter() - t0}
