"""Recovery coefficients (RC): analytic sphere recoveries, measured RCs, the RC correction.

* :func:`analytic_rc_max`, :func:`analytic_rc_mean` - recovery of a uniform sphere blurred by an
  isotropic Gaussian (``validation_targets.md``).
* :func:`measure_recovery_coefficients`, :func:`fit_effective_fwhm_mm` - RCs of spheres in a
  reconstructed image and the effective FWHM they imply.
* :func:`pvc_recovery_coefficient` - divide a measured value by the RC of an object of that size,
  interpolated from an RC-vs-diameter curve (measured with spheres, or the analytic one).
* :func:`pvc_rc` - the same per labelled region of an image (the PVC method ``'rc'``).
"""
from __future__ import annotations

import numpy as np
from scipy import integrate, optimize, special

from her2sim.core.errors import ConfigError, DataError, check_range
from her2sim.core.grid import Grid

from ..voi import ellipsoid_mask, mask_to_bool, suv_max, suv_mean
from .psf import FWHM_PER_SIGMA, as_fwhm_mm, as_spacing_mm
from .regions import check_regions, regional_means


def analytic_rc_max(diameter_mm, fwhm_mm):
    """Centre value of a uniform sphere blurred by an isotropic Gaussian (recovery of the maximum).

    ``RC_max = erf(R / (sqrt2 s)) - sqrt(2/pi) (R/s) exp(-R^2 / (2 s^2))``
    (``validation_targets.md``), R = diameter/2, s = FWHM / 2.3548.
    """
    r = np.asarray(diameter_mm, dtype=float) / 2.0
    s = check_range("fwhm_mm", fwhm_mm, 0.0, 500.0, lo_open=True) / FWHM_PER_SIGMA
    out = special.erf(r / (np.sqrt(2.0) * s)) - np.sqrt(2.0 / np.pi) * (r / s) * np.exp(-r ** 2 / (2 * s ** 2))
    return float(out) if out.ndim == 0 else out


def blurred_sphere_profile(r_mm, radius_mm: float, sigma_mm: float):
    """Value at distance ``r_mm`` from the centre of a unit sphere blurred by an isotropic Gaussian."""
    r = np.asarray(r_mm, dtype=float)
    R, s = float(radius_mm), float(sigma_mm)
    a = (R - r) / (np.sqrt(2.0) * s)
    b = (R + r) / (np.sqrt(2.0) * s)
    term1 = 0.5 * (special.erf(a) + special.erf(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        term2 = s / (r * np.sqrt(2.0 * np.pi)) * (np.exp(-a ** 2) - np.exp(-b ** 2))
    centre = special.erf(R / (np.sqrt(2) * s)) - np.sqrt(2 / np.pi) * (R / s) * np.exp(-R ** 2 / (2 * s ** 2))
    return np.where(r > 1e-9 * max(s, 1e-12), term1 - term2, centre)


def analytic_rc_mean(diameter_mm, fwhm_mm):
    """Mean over the true sphere of a blurred uniform sphere (recovery of the mean).

    ``RC_mean = 3 / R^3 \\int_0^R f(r) r^2 dr`` with ``f`` the radial profile of
    :func:`blurred_sphere_profile`, integrated numerically (``validation_targets.md``).
    """
    s = check_range("fwhm_mm", fwhm_mm, 0.0, 500.0, lo_open=True) / FWHM_PER_SIGMA
    d = np.atleast_1d(np.asarray(diameter_mm, dtype=float))
    out = []
    for di in d:
        R = check_range("diameter_mm", di, 0.0, 1e4, lo_open=True) / 2.0
        val, _ = integrate.quad(lambda r: float(blurred_sphere_profile(r, R, s)) * r * r, 0.0, R, limit=200)
        out.append(3.0 * val / R ** 3)
    out = np.asarray(out)
    return float(out[0]) if np.ndim(diameter_mm) == 0 else out


def pvc_recovery_coefficient(measured, diameter_mm, rc_diameters_mm, rc_values, *, extrapolate: bool = False,
                             background=None):
    """Recovery-coefficient correction ``measured / RC(diameter)``, or its contrast form.

    With ``background`` (the surrounding concentration), the contrast is corrected instead:
    ``background + (measured - background) / RC``, which is how contrast recovery coefficients
    (measured on a phantom with background, e.g. IEC) are meant to be applied; it leaves a
    region at background unchanged and works for cold regions too.

    RC is linearly interpolated in diameter from the curve ``(rc_diameters_mm, rc_values)``
    (e.g. NEMA spheres 10-37 mm, or :func:`analytic_rc_mean`).

    Parameters
    ----------
    measured : float or array
        Measured value(s) (any unit).
    diameter_mm : float or array
        Object diameter(s) in mm (same shape as ``measured``).
    rc_diameters_mm, rc_values : 1-D arrays
        The RC curve; diameters strictly increasing, RC in (0, 2].
    extrapolate : bool
        False: a diameter outside the curve's range is a ConfigError. True: the
        end values are used (constant extrapolation).
    """
    d_curve = np.asarray(rc_diameters_mm, dtype=float)
    rc = np.asarray(rc_values, dtype=float)
    if d_curve.ndim != 1 or d_curve.shape != rc.shape or d_curve.size < 2:
        raise ConfigError("rc_diameters_mm and rc_values must be 1-D arrays of equal length >= 2")
    if np.any(np.diff(d_curve) <= 0):
        raise ConfigError(f"rc_diameters_mm = {d_curve.tolist()} must be strictly increasing")
    if np.any(~np.isfinite(rc)) or np.any(rc <= 0) or np.any(rc > 2):
        raise ConfigError(f"rc_values = {rc.tolist()} must lie in (0, 2]")
    d = np.asarray(diameter_mm, dtype=float)
    if not extrapolate and (np.any(d < d_curve[0]) or np.any(d > d_curve[-1])):
        raise ConfigError(f"diameter_mm = {np.round(d, 3).tolist()} is outside the RC curve range "
                          f"[{d_curve[0]:.6g}, {d_curve[-1]:.6g}] mm (pass extrapolate=True to clamp)")
    m = np.asarray(measured, dtype=float)
    r = np.interp(d, d_curve, rc)
    out = m / r if background is None else np.asarray(background, dtype=float) + (m - background) / r
    return float(out) if out.ndim == 0 else out


def equivalent_sphere_diameter_mm(mask, grid_or_spacing) -> float:
    """Diameter (mm) of the sphere with the same volume as ``mask`` (sum of weights)."""
    vol = float(np.sum(np.asarray(mask, dtype=np.float64))) * float(np.prod(as_spacing_mm(grid_or_spacing)))
    if vol <= 0:
        raise DataError("equivalent_sphere_diameter_mm: the mask is empty")
    return float((6.0 * vol / np.pi) ** (1.0 / 3.0))


def measure_recovery_coefficients(image, grid: Grid, centers_mm, diameters_mm, true_value: float, *,
                                  background_value: float = 0.0, supersample: int = 5) -> dict:
    """Recovery coefficients of spheres (e.g. NEMA IEC 10-37 mm) in a reconstructed image.

    ``RC_max = (max - bg) / (true - bg)`` over the voxels whose centre lies in the
    sphere, ``RC_mean = (mean - bg) / (true - bg)`` with the mean weighted by the
    sphere's partial-volume weights (so it is the mean over the true sphere, as in
    the RC_mean column of ``validation_targets.md``). With ``background_value = 0``
    these are the plain recoveries of the table; with the phantom background they are
    contrast recoveries (as Gnesin et al. 2016 report for 99mTc).

    Parameters
    ----------
    image : array (z, y, x)
    grid : Grid
    centers_mm : (n, 3) world (z, y, x) mm
    diameters_mm : (n,) mm (inner diameters)
    true_value : float
        True sphere concentration (image units).
    background_value : float
        True background concentration (image units).

    Returns
    -------
    dict
        ``diameter_mm``, ``rc_max``, ``rc_mean`` and ``rc_mean_voi`` (numpy arrays in input order);
        ``rc_mean_voi`` is the recovery of the plain mean over the voxels at least half inside the sphere,
        the definition of a lesion's SUVmean on its VOI (so the RC correction of SUVmean uses it).
    """
    img = np.asarray(image, dtype=np.float64)
    grid.check_array("image", img)
    c = np.asarray(centers_mm, dtype=float).reshape(-1, 3)
    d = np.atleast_1d(np.asarray(diameters_mm, dtype=float))
    if d.size != c.shape[0]:
        raise ConfigError(f"diameters_mm has {d.size} entries but centers_mm has {c.shape[0]}")
    t = check_range("true_value", true_value, None, None)
    b = check_range("background_value", background_value, None, None)
    if t == b:
        raise ConfigError(f"true_value = {t} equals background_value; recovery is undefined")
    rc_max, rc_mean, rc_voi = [], [], []
    for ci, di in zip(c, d):
        w = ellipsoid_mask(grid, ci, check_range("diameters_mm", di, 0.0, 1e4, lo_open=True) / 2.0, supersample)
        rc_max.append((suv_max(img, w) - b) / (t - b))
        rc_mean.append((suv_mean(img, w) - b) / (t - b))
        rc_voi.append((suv_mean(img, mask_to_bool(w)) - b) / (t - b))
    return {"diameter_mm": d, "rc_max": np.asarray(rc_max), "rc_mean": np.asarray(rc_mean),
            "rc_mean_voi": np.asarray(rc_voi)}


def fit_effective_fwhm_mm(diameters_mm, rc_mean, *, bounds_mm=(1.0, 60.0)) -> float:
    """Isotropic Gaussian FWHM (mm) whose :func:`analytic_rc_mean` best fits measured mean recoveries.

    The effective resolution of a reconstruction protocol as a clinic measures it for partial-volume
    correction: spheres of known size (IEC NEMA 10-37 mm) reconstructed with the protocol, their
    recovery of the mean compared with the blurred-sphere formula, least squares in RC.

    Parameters
    ----------
    diameters_mm, rc_mean : 1-D arrays
        Sphere diameters (mm) and measured (contrast) recoveries of the mean over the true sphere.
    bounds_mm : (float, float)
        Search interval for the FWHM (mm).
    """
    d = np.atleast_1d(np.asarray(diameters_mm, dtype=float))
    rc = np.atleast_1d(np.asarray(rc_mean, dtype=float))
    if d.size != rc.size or d.size < 2:
        raise ConfigError("fit_effective_fwhm_mm needs >= 2 (diameter, rc) pairs of equal length")
    if not np.all(np.isfinite(rc)):
        raise DataError(f"rc_mean = {rc.tolist()} must be finite")
    lo, hi = (check_range("bounds_mm", v, 0.0, 500.0, lo_open=True) for v in bounds_mm)
    res = optimize.minimize_scalar(lambda f: float(np.sum((analytic_rc_mean(d, f) - rc) ** 2)),
                                   bounds=(lo, hi), method="bounded", options={"xatol": 0.01})
    return float(res.x)


def pvc_rc(image, labels, fwhm_mm, spacing_mm, *, background_label: int | None = None, rc_diameters_mm=None,
           rc_values=None, extrapolate: bool = False, ignore_labels=()) -> np.ndarray:
    """Recovery-coefficient correction of each labelled region of an image.

    Each region other than ``background_label`` is taken as an object of the diameter of its
    volume-equivalent sphere (:func:`equivalent_sphere_diameter_mm`), and its voxels are divided
    by that diameter's RC: ``image / RC``, or with ``background_label`` the contrast form
    ``c_bg + (image - c_bg) / RC`` (as :func:`pvc_recovery_coefficient`), ``c_bg`` the mean of
    the image over the background region. The mean of a corrected region is then the RC
    correction of the region's observed mean.

    Parameters
    ----------
    image : array (z, y, x)
        Observed image (Bq/mL or SUV).
    labels : int array (z, y, x)
        Region label map.
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM of ``image``; without an RC curve the analytic :func:`analytic_rc_mean` at the
        geometric mean of the three FWHMs is used.
    spacing_mm : Grid, float or (z, y, x) mm
        Voxel size.
    background_label : int, optional
        Label of the background region (kept as observed; its mean is ``c_bg``). None: no background
        term, every region is divided by its RC.
    rc_diameters_mm, rc_values : 1-D arrays, optional
        A measured RC curve (diameters in mm, strictly increasing; RC in (0, 2]), given together.
    extrapolate : bool
        With a curve: clamp diameters outside its range (False: ConfigError).
    ignore_labels : iterable of int
        Labels kept as observed.

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units.
    """
    img, lab, ids = check_regions(image, labels, ignore_labels, method="rc")
    sp = as_spacing_mm(spacing_mm)
    if (rc_diameters_mm is None) != (rc_values is None):
        raise ConfigError("rc_diameters_mm and rc_values must be given together (an RC curve) or not at all")
    bg = None
    if background_label is not None:
        background_label = int(background_label)
        if background_label not in ids:
            raise ConfigError(f"background_label = {background_label} is not in the label map; labels {ids}")
        bg = regional_means(img, lab, [background_label])[background_label]
    f_eff = float(np.prod(as_fwhm_mm(fwhm_mm)) ** (1.0 / 3.0))
    out = img.copy()
    for k in ids:
        if k == background_label:
            continue
        mask = lab == k
        d = equivalent_sphere_diameter_mm(mask, sp)
        if rc_values is None:
            rc = analytic_rc_mean(d, f_eff)
            out[mask] = img[mask] / rc if bg is None else bg + (img[mask] - bg) / rc
        else:
            out[mask] = pvc_recovery_coefficient(img[mask], d, rc_diameters_mm, rc_values, extrapolate=extrapolate,
                                                 background=bg)
    return out
