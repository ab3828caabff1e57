"""Partial-volume correction (PVC) of SPECT images in Bq/mL (or SUV).

The system point-spread function (PSF) is modelled as a Gaussian given by its
FWHM in mm, isotropic or per axis (z, y, x). Blurring uses
:func:`scipy.ndimage.gaussian_filter` with ``sigma [voxels] = FWHM / 2.3548 / spacing``
and zero padding outside the image (``mode='constant'``), so the blur is a
symmetric linear operator (its own adjoint) - the property the GTM,
Richardson-Lucy and Van Cittert formulas rely on.

Methods (the set tested by PETPVC, Thomas et al., Phys Med Biol 61:7975, 2016):

* :func:`pvc_recovery_coefficient` - divide a measured value by the recovery
  coefficient of an object of that size, interpolated from an RC-vs-diameter curve
  (measured with spheres, or :func:`analytic_rc_mean` / :func:`analytic_rc_max`).
* :func:`pvc_gtm` - geometric transfer matrix, regional means (Rousset et al.,
  J Nucl Med 39:904, 1998).
* :func:`pvc_rbv` - region-based voxel-wise correction (Thomas et al., Eur J Nucl
  Med Mol Imaging 38:1104, 2011): GTM means -> piecewise-constant image S ->
  ``image * S / blur(S)``.
* :func:`pvc_iterative_yang` - iterative Yang (Erlandsson et al., Phys Med Biol
  57:R119, 2012): as RBV but the regional means come from the current estimate.
* :func:`pvc_muller_gartner` - two-compartment Muller-Gartner (J Cereb Blood Flow
  Metab 12:571, 1992): subtract the blurred background compartment, divide by the
  blurred target mask.
* :func:`pvc_richardson_lucy`, :func:`pvc_van_cittert` - image deconvolution; they
  amplify noise, so the iteration count is capped (<= 500) and stops early when the
  relative update falls below ``tol``.

Region inputs are integer label maps (z, y, x); each distinct label is a region
(label 0 included unless listed in ``ignore_labels``), so the background must be
part of the label map for GTM/RBV/IY to be exact.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize, special
from scipy import integrate

from her2sim.core.errors import ConfigError, DataError, check_int, check_range, check_zyx
from her2sim.core.grid import Grid

#: FWHM = 2 sqrt(2 ln 2) sigma.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


# ----------------------------------------------------------------------------- PSF
def _spacing(grid_or_spacing) -> np.ndarray:
    if isinstance(grid_or_spacing, Grid):
        return np.asarray(grid_or_spacing.spacing_mm, dtype=float)
    return check_zyx("spacing_mm", grid_or_spacing, 0.0, 1000.0, lo_open=True)


def _fwhm(fwhm_mm) -> np.ndarray:
    return check_zyx("fwhm_mm", fwhm_mm, 0.0, 500.0)


def sigma_voxels(fwhm_mm, grid_or_spacing) -> tuple:
    """Gaussian sigma in voxels (z, y, x): ``FWHM / 2.3548 / spacing``."""
    return tuple(_fwhm(fwhm_mm) / FWHM_PER_SIGMA / _spacing(grid_or_spacing))


def gaussian_blur(image, fwhm_mm, grid_or_spacing, *, truncate: float = 4.0) -> np.ndarray:
    """Blur ``image`` (z, y, x) with a Gaussian PSF of ``fwhm_mm`` (scalar or (z, y, x) mm).

    Zero outside the image (``mode='constant'``); float64 result.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    return ndimage.gaussian_filter(img, sigma_voxels(fwhm_mm, grid_or_spacing), mode="constant", cval=0.0,
                                   truncate=truncate)


def _gauss3d(coords, amp, cz, cy, cx, sz, sy, sx, bg):
    z, y, x = coords
    return (amp * np.exp(-0.5 * (((z - cz) / sz) ** 2 + ((y - cy) / sy) ** 2 + ((x - cx) / sx) ** 2)) + bg).ravel()


def psf_from_point_source(image, grid, *, half_width_mm: float = 25.0) -> dict:
    """Fit a 3-D Gaussian (plus constant background) to a reconstructed point source.

    Parameters
    ----------
    image : array (z, y, x)
        Image of a single point (or small) source; the hottest voxel seeds the fit.
    grid : Grid or spacing (mm)
        Voxel size; with a Grid the centre is also reported in world mm.
    half_width_mm : float
        Half-size of the cube around the hottest voxel used in the fit (mm).

    Returns
    -------
    dict
        ``fwhm_mm`` (z, y, x), ``center_mm`` (world z, y, x, or index*spacing
        without a Grid), ``amplitude`` and ``background`` (image units).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    if not np.all(np.isfinite(img)) or img.max() <= 0:
        raise DataError("point-source image must be finite with a positive maximum")
    sp = _spacing(grid)
    hw = check_range("half_width_mm", half_width_mm, 0.0, 1000.0, lo_open=True)
    peak = np.unravel_index(int(np.argmax(img)), img.shape)
    half = np.maximum(np.ceil(hw / sp).astype(int), 2)
    sl = tuple(slice(max(p - h, 0), min(p + h + 1, n)) for p, h, n in zip(peak, half, img.shape))
    sub = img[sl]
    z, y, x = np.meshgrid(*[np.arange(s.start, s.stop) * d for s, d in zip(sl, sp)], indexing="ij")
    pz, py, px = (p * d for p, d in zip(peak, sp))
    s0 = 2.0 * sp
    p0 = [sub.max() - np.median(sub), pz, py, px, s0[0], s0[1], s0[2], float(np.median(sub))]
    try:
        popt, _ = optimize.curve_fit(_gauss3d, (z, y, x), sub.ravel(), p0=p0, maxfev=5000)
    except RuntimeError as exc:  # no convergence
        raise DataError(f"psf_from_point_source: the Gaussian fit did not converge ({exc})") from None
    fwhm = np.abs(popt[4:7]) * FWHM_PER_SIGMA
    centre = np.asarray(popt[1:4])
    if isinstance(grid, Grid):
        centre = centre + np.asarray(grid.origin_mm)
    return {"fwhm_mm": tuple(float(f) for f in fwhm), "center_mm": tuple(float(c) for c in centre),
            "amplitude": float(popt[0]), "background": float(popt[7])}


# ----------------------------------------------------------------------------- analytic recovery
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
    vol = float(np.sum(np.asarray(mask, dtype=np.float64))) * float(np.prod(_spacing(grid_or_spacing)))
    if vol <= 0:
        raise DataError("equivalent_sphere_diameter_mm: the mask is empty")
    return float((6.0 * vol / np.pi) ** (1.0 / 3.0))


# ----------------------------------------------------------------------------- region-based
def _regions(image, labels, ignore_labels=()) -> tuple[np.ndarray, np.ndarray, list]:
    img = np.asarray(image, dtype=np.float64)
    lab = np.asarray(labels)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    if lab.shape != img.shape:
        raise DataError(f"labels shape {lab.shape} does not match image shape {img.shape} (z, y, x)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"labels must be an integer label map, got dtype {lab.dtype}")
    if not np.all(np.isfinite(img)):
        raise DataError("image contains NaN or infinite values")
    ids = [int(v) for v in np.unique(lab) if int(v) not in set(ignore_labels)]
    if len(ids) == 0:
        raise DataError("labels contain no region after removing ignore_labels")
    return img, lab, ids


def _region_index(lab: np.ndarray, ids) -> np.ndarray:
    """Flat index 0..n-1 of each voxel's region in ``ids`` (n for voxels of other labels)."""
    ids_arr = np.asarray(ids)
    order = np.argsort(ids_arr)
    sorted_ids = ids_arr[order]
    flat = lab.ravel()
    pos = np.clip(np.searchsorted(sorted_ids, flat), 0, len(ids_arr) - 1)
    hit = sorted_ids[pos] == flat
    out = np.full(flat.shape, len(ids_arr), dtype=np.int64)
    out[hit] = order[pos[hit]]
    return out


def gtm_matrix(labels, fwhm_mm, grid_or_spacing, ids=None) -> tuple[np.ndarray, list]:
    """Geometric transfer matrix ``W[i, j]`` = mean over region i of the blurred mask of region j.

    Returns
    -------
    (numpy.ndarray, list of int)
        W (n_regions x n_regions) and the region labels in its order.
    """
    lab = np.asarray(labels)
    if ids is None:
        ids = [int(v) for v in np.unique(lab)]
    n = len(ids)
    index = _region_index(lab, ids)
    sizes = np.bincount(index, minlength=n + 1)[:n].astype(float)
    if np.any(sizes == 0):
        raise DataError(f"region(s) {[i for i, c in zip(ids, sizes) if c == 0]} are empty")
    W = np.zeros((n, n))
    for j, lj in enumerate(ids):
        rsf = gaussian_blur((lab == lj).astype(np.float64), fwhm_mm, grid_or_spacing)
        W[:, j] = np.bincount(index, weights=rsf.ravel(), minlength=n + 1)[:n] / sizes
    return W, list(ids)


def pvc_gtm(image, labels, fwhm_mm, grid_or_spacing, *, ignore_labels=()) -> dict:
    """GTM partial-volume corrected regional means (Rousset 1998).

    Solves ``W t = m`` with ``m`` the observed regional means and ``W`` from
    :func:`gtm_matrix`. Regions in ``ignore_labels`` are excluded from both the
    observed means and the model (their spill-in is then not corrected).

    Returns
    -------
    dict
        label -> corrected mean (image units).
    """
    img, lab, ids = _regions(image, labels, ignore_labels)
    W, ids = gtm_matrix(lab, fwhm_mm, grid_or_spacing, ids)
    means = regional_means(img, lab, ids)
    obs = np.array([means[i] for i in ids])
    cond = np.linalg.cond(W)
    if not np.isfinite(cond) or cond > 1e12:
        raise DataError(f"GTM matrix is singular (condition number {cond:.3g}); regions too small for the PSF")
    t = np.linalg.solve(W, obs)
    return {i: float(v) for i, v in zip(ids, t)}


def regional_means(image, labels, ids=None) -> dict:
    """Plain mean of ``image`` in each labelled region: label -> mean."""
    img = np.asarray(image, dtype=np.float64)
    lab = np.asarray(labels)
    if lab.shape != img.shape:
        raise DataError(f"labels shape {lab.shape} does not match image shape {img.shape} (z, y, x)")
    if ids is None:
        ids = [int(v) for v in np.unique(lab)]
    n = len(ids)
    index = _region_index(lab, ids)
    sizes = np.bincount(index, minlength=n + 1)[:n]
    if np.any(sizes == 0):
        raise DataError(f"region label(s) {[i for i, c in zip(ids, sizes) if c == 0]} are empty")
    sums = np.bincount(index, weights=img.ravel(), minlength=n + 1)[:n]
    return {int(i): float(v) for i, v in zip(ids, sums / sizes)}


def _piecewise(lab, means: dict) -> np.ndarray:
    ids = list(means)
    lut = np.r_[np.array([means[i] for i in ids], dtype=np.float64), 0.0]
    return lut[_region_index(lab, ids)].reshape(lab.shape)


def _ratio(num, den, floor: float) -> np.ndarray:
    out = np.zeros_like(num)
    ok = np.abs(den) > floor
    out[ok] = num[ok] / den[ok]
    return out


def pvc_rbv(image, labels, fwhm_mm, grid_or_spacing, *, ignore_labels=()) -> np.ndarray:
    """Region-based voxel-wise correction (Thomas 2011): ``image * S / blur(S)``, S from GTM means.

    Voxels in ``ignore_labels`` get S = 0 and hence a corrected value of 0.
    Returns float64 (z, y, x).
    """
    img, lab, ids = _regions(image, labels, ignore_labels)
    means = pvc_gtm(img, lab, fwhm_mm, grid_or_spacing, ignore_labels=ignore_labels)
    s = _piecewise(lab, means)
    bs = gaussian_blur(s, fwhm_mm, grid_or_spacing)
    floor = 1e-9 * max(float(np.max(np.abs(s))), 1e-30)
    return img * _ratio(s, bs, floor)


def pvc_iterative_yang(image, labels, fwhm_mm, grid_or_spacing, *, n_iter: int = 30, tol: float = 1e-5,
                       ignore_labels=()) -> np.ndarray:
    """Iterative Yang (Erlandsson 2012).

    ``x_0 = image``; ``S_k`` = piecewise-constant image of the regional means of
    ``x_k``; ``x_{k+1} = image * S_k / blur(S_k)``. Stops after ``n_iter`` (1-500)
    iterations or when the relative change of the regional means is below ``tol``.
    """
    n = check_int("n_iter", n_iter, 1, 500)
    check_range("tol", tol, 0.0, 1.0)
    img, lab, ids = _regions(image, labels, ignore_labels)
    x = img.copy()
    prev = None
    for _ in range(n):
        means = regional_means(x, lab, ids)
        s = _piecewise(lab, means)
        bs = gaussian_blur(s, fwhm_mm, grid_or_spacing)
        floor = 1e-9 * max(float(np.max(np.abs(s))), 1e-30)
        x = img * _ratio(s, bs, floor)
        vec = np.array([means[i] for i in ids])
        if prev is not None:
            change = np.max(np.abs(vec - prev)) / max(np.max(np.abs(vec)), 1e-30)
            if change < tol:
                break
        prev = vec
    return x


def pvc_muller_gartner(image, labels, fwhm_mm, grid_or_spacing, *, background_label: int,
                       background_value: float | None = None, min_rsf: float = 0.05,
                       core_rsf: float = 0.99) -> np.ndarray:
    """Two-compartment Muller-Gartner correction (1992).

    Target = every region except ``background_label`` (assumed homogeneous, as in
    MG's grey matter); background (MG's white matter) has value ``c_bg``::

        corrected = (image - c_bg * blur(mask_bg)) / blur(mask_target)   in the target

    where ``blur(mask_target) >= min_rsf``; voxels below are set to 0 and the
    background keeps its observed value.

    Parameters
    ----------
    background_label : int
        Label of the background compartment.
    background_value : float, optional
        c_bg. By default the mean of the image over the background core, the voxels
        with ``blur(mask_bg) >= core_rsf`` (unaffected by spill-in).
    min_rsf, core_rsf : float
        Thresholds in (0, 1].
    """
    img, lab, ids = _regions(image, labels)
    check_range("min_rsf", min_rsf, 0.0, 1.0, lo_open=True)
    check_range("core_rsf", core_rsf, 0.0, 1.0, lo_open=True)
    if int(background_label) not in ids:
        raise ConfigError(f"background_label = {background_label} is not in the label map; labels {ids}")
    bg = lab == int(background_label)
    target = ~bg
    if not np.any(target):
        raise DataError("Muller-Gartner needs at least one target region besides the background")
    rsf_bg = gaussian_blur(bg.astype(np.float64), fwhm_mm, grid_or_spacing)
    if background_value is None:
        core = bg & (rsf_bg >= core_rsf)
        if not np.any(core):
            raise DataError(f"background core (blur(mask) >= core_rsf = {core_rsf}) is empty; "
                            "pass background_value or lower core_rsf")
        c_bg = float(img[core].mean())
    else:
        c_bg = check_range("background_value", background_value, None, None)
    rsf_t = gaussian_blur(target.astype(np.float64), fwhm_mm, grid_or_spacing)
    out = img.copy()
    ok = target & (rsf_t >= min_rsf)
    out[target] = 0.0
    out[ok] = (img[ok] - c_bg * rsf_bg[ok]) / rsf_t[ok]
    return out


# ----------------------------------------------------------------------------- deconvolution
def pvc_richardson_lucy(image, fwhm_mm, grid_or_spacing, *, n_iter: int = 10, tol: float = 0.0) -> np.ndarray:
    """Richardson-Lucy deconvolution ``x <- x * blur(image / blur(x))`` (the Gaussian is self-adjoint).

    Negative input values are clipped to 0 (RL needs non-negative data). Iterations
    capped at ``n_iter`` (1-500); stops early when the relative L1 update < ``tol``.
    """
    n = check_int("n_iter", n_iter, 1, 500)
    check_range("tol", tol, 0.0, 1.0)
    img = np.clip(np.asarray(image, dtype=np.float64), 0.0, None)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    norm = gaussian_blur(np.ones_like(img), fwhm_mm, grid_or_spacing)  # sensitivity near edges
    floor = 1e-12 * max(float(img.max()), 1e-30)
    x = img.copy()
    for _ in range(n):
        bx = gaussian_blur(x, fwhm_mm, grid_or_spacing)
        corr = gaussian_blur(_ratio(img, bx, floor), fwhm_mm, grid_or_spacing)
        new = x * _ratio(corr, norm, 1e-12)
        change = np.abs(new - x).sum() / max(np.abs(x).sum(), 1e-30)
        x = new
        if change < tol:
            break
    return x


def pvc_van_cittert(image, fwhm_mm, grid_or_spacing, *, n_iter: int = 10, alpha: float = 1.5,
                    tol: float = 0.0) -> np.ndarray:
    """Van Cittert deconvolution ``x <- x + alpha (image - blur(x))``.

    Converges for 0 < alpha < 2 with a Gaussian PSF (its eigenvalues lie in (0, 1]).
    Iterations capped at ``n_iter`` (1-500); early stop when relative L1 update < ``tol``.
    """
    n = check_int("n_iter", n_iter, 1, 500)
    a = check_range("alpha", alpha, 0.0, 2.0, lo_open=True, hi_open=True)
    check_range("tol", tol, 0.0, 1.0)
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    x = img.copy()
    for _ in range(n):
        step = a * (img - gaussian_blur(x, fwhm_mm, grid_or_spacing))
        x = x + step
        if np.abs(step).sum() / max(np.abs(x).sum(), 1e-30) < tol:
            break
    return x


# ----------------------------------------------------------------------------- dispatch + RC measurement
PVC_METHODS = ("none", "rc", "gtm", "rbv", "iy", "mg", "rl", "vc")


def apply_pvc(method: str, image, grid_or_spacing, fwhm_mm, *, labels=None, **options) -> np.ndarray:
    """Correct an image with one method by name and return a corrected image (float64, z, y, x).

    Parameters
    ----------
    method : {'none', 'gtm', 'rbv', 'iy', 'mg', 'rl', 'vc'}
        'gtm' returns the piecewise-constant image of the GTM regional means;
        'rc' is a per-object correction of measured values - use
        :func:`pvc_recovery_coefficient` instead (ConfigError here).
    image : array (z, y, x)
    grid_or_spacing : Grid or spacing (mm)
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM of the reconstructed image.
    labels : int array (z, y, x)
        Region label map; required by gtm, rbv, iy and mg.
    **options
        Passed to the method (``n_iter``, ``background_label``, ``alpha``...).
    """
    if method not in PVC_METHODS:
        raise ConfigError(f"pvc method = {method!r} is not allowed; choose one of {list(PVC_METHODS)}")
    if method == "none":
        return np.asarray(image, dtype=np.float64).copy()
    if method == "rc":
        raise ConfigError("pvc method = 'rc' corrects measured values, not images; use pvc_recovery_coefficient")
    if method in ("gtm", "rbv", "iy", "mg") and labels is None:
        raise ConfigError(f"pvc method = {method!r} needs a region label map (labels)")
    if method == "gtm":
        means = pvc_gtm(image, labels, fwhm_mm, grid_or_spacing, **options)
        return _piecewise(np.asarray(labels), means)
    if method == "rbv":
        return pvc_rbv(image, labels, fwhm_mm, grid_or_spacing, **options)
    if method == "iy":
        return pvc_iterative_yang(image, labels, fwhm_mm, grid_or_spacing, **options)
    if method == "mg":
        if "background_label" not in options:
            raise ConfigError("pvc method = 'mg' needs background_label (label of the background compartment)")
        return pvc_muller_gartner(image, labels, fwhm_mm, grid_or_spacing, **options)
    if method == "rl":
        return pvc_richardson_lucy(image, fwhm_mm, grid_or_spacing, **options)
    return pvc_van_cittert(image, fwhm_mm, grid_or_spacing, **options)


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
    from ..voi import ellipsoid_mask, mask_to_bool, suv_max, suv_mean

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
    from scipy import optimize

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
