"""Gaussian point-spread function: blur and point-source fit.

The system PSF is modelled as a Gaussian given by its FWHM in mm, isotropic or per
axis (z, y, x). Blurring uses :func:`scipy.ndimage.gaussian_filter` with
``sigma [voxels] = FWHM / 2.3548 / spacing`` and zero padding outside the image
(``mode='constant'``), so the blur is a symmetric linear operator (its own adjoint) -
the property the GTM, Richardson-Lucy and Van Cittert formulas rely on.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, optimize

from her2sim.core.errors import DataError, check_range, check_zyx
from her2sim.core.grid import Grid

#: FWHM = 2 sqrt(2 ln 2) sigma.
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def as_spacing_mm(grid_or_spacing) -> np.ndarray:
    """Voxel size (z, y, x) in mm of a :class:`Grid`, or a checked scalar / (z, y, x) spacing in mm."""
    if isinstance(grid_or_spacing, Grid):
        return np.asarray(grid_or_spacing.spacing_mm, dtype=float)
    return check_zyx("spacing_mm", grid_or_spacing, 0.0, 1000.0, lo_open=True)


def as_fwhm_mm(fwhm_mm) -> np.ndarray:
    """Checked PSF FWHM (z, y, x) in mm, from a scalar (isotropic) or three values; each in [0, 500] mm."""
    return check_zyx("fwhm_mm", fwhm_mm, 0.0, 500.0)


def sigma_voxels(fwhm_mm, grid_or_spacing) -> tuple:
    """Gaussian sigma in voxels (z, y, x): ``FWHM / 2.3548 / spacing``.

    Parameters
    ----------
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM.
    grid_or_spacing : Grid, float or (z, y, x) mm
        Voxel size.

    Returns
    -------
    tuple of float
        Sigma per axis (z, y, x) in voxels.
    """
    return tuple(as_fwhm_mm(fwhm_mm) / FWHM_PER_SIGMA / as_spacing_mm(grid_or_spacing))


def gaussian_blur(image, fwhm_mm, grid_or_spacing, *, truncate: float = 4.0) -> np.ndarray:
    """Blur ``image`` (z, y, x) with a Gaussian PSF of ``fwhm_mm`` (scalar or (z, y, x) mm).

    Parameters
    ----------
    image : array (z, y, x)
        Any units (Bq/mL, SUV, a mask).
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM.
    grid_or_spacing : Grid, float or (z, y, x) mm
        Voxel size.
    truncate : float
        Kernel half-width in sigmas.

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units; zero outside the image (``mode='constant'``).
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
    sp = as_spacing_mm(grid)
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
