"""Geometric transfer matrix (GTM) partial-volume correction (Rousset et al., J Nucl Med 39:904, 1998)."""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import DataError

from .psf import gaussian_blur
from .regions import check_regions, piecewise_image, region_index, regional_means


def gtm_matrix(labels, fwhm_mm, grid_or_spacing, ids=None) -> tuple[np.ndarray, list]:
    """Geometric transfer matrix ``W[i, j]`` = mean over region i of the blurred mask of region j.

    Parameters
    ----------
    labels : int array (z, y, x)
        Region label map.
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM.
    grid_or_spacing : Grid, float or (z, y, x) mm
        Voxel size.
    ids : list of int, optional
        Regions in matrix order (default: every label present).

    Returns
    -------
    (numpy.ndarray, list of int)
        W (n_regions x n_regions, dimensionless) and the region labels in its order.
    """
    lab = np.asarray(labels)
    if ids is None:
        ids = [int(v) for v in np.unique(lab)]
    n = len(ids)
    index = region_index(lab, ids)
    sizes = np.bincount(index, minlength=n + 1)[:n].astype(float)
    if np.any(sizes == 0):
        raise DataError(f"region(s) {[i for i, c in zip(ids, sizes) if c == 0]} are empty")
    W = np.zeros((n, n))
    for j, lj in enumerate(ids):
        rsf = gaussian_blur((lab == lj).astype(np.float64), fwhm_mm, grid_or_spacing)
        W[:, j] = np.bincount(index, weights=rsf.ravel(), minlength=n + 1)[:n] / sizes
    return W, list(ids)


def gtm_regional_means(image, labels, fwhm_mm, spacing_mm, *, ignore_labels=()) -> dict:
    """GTM partial-volume corrected regional means (Rousset 1998).

    Solves ``W t = m`` with ``m`` the observed regional means and ``W`` from
    :func:`gtm_matrix`. Regions in ``ignore_labels`` are excluded from both the
    observed means and the model (their spill-in is then not corrected).

    Parameters
    ----------
    image : array (z, y, x)
        Observed image (Bq/mL or SUV).
    labels : int array (z, y, x)
        Region label map covering the whole object (background included).
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM of ``image``.
    spacing_mm : Grid, float or (z, y, x) mm
        Voxel size.
    ignore_labels : iterable of int
        Labels left out of the model.

    Returns
    -------
    dict
        label -> corrected mean (image units).
    """
    img, lab, ids = check_regions(image, labels, ignore_labels, method="gtm")
    W, ids = gtm_matrix(lab, fwhm_mm, spacing_mm, ids)
    means = regional_means(img, lab, ids)
    obs = np.array([means[i] for i in ids])
    cond = np.linalg.cond(W)
    if not np.isfinite(cond) or cond > 1e12:
        raise DataError(f"GTM matrix is singular (condition number {cond:.3g}); regions too small for the PSF")
    t = np.linalg.solve(W, obs)
    return {i: float(v) for i, v in zip(ids, t)}


def pvc_gtm(image, labels, fwhm_mm, spacing_mm, *, ignore_labels=()) -> np.ndarray:
    """GTM correction as an image: each region holds its corrected mean (:func:`gtm_regional_means`).

    Parameters
    ----------
    image, labels, fwhm_mm, spacing_mm, ignore_labels
        As :func:`gtm_regional_means`.

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), piecewise constant (image units); voxels in ``ignore_labels`` are 0.
    """
    means = gtm_regional_means(image, labels, fwhm_mm, spacing_mm, ignore_labels=ignore_labels)
    return piecewise_image(np.asarray(labels), means)
