"""Richardson-Lucy deconvolution as partial-volume correction (voxel-wise; needs no regions)."""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import DataError, check_int, check_range

from .psf import gaussian_blur
from .regions import safe_ratio


def pvc_richardson_lucy(image, labels, fwhm_mm, spacing_mm, *, n_iter: int = 10, tol: float = 0.0) -> np.ndarray:
    """Richardson-Lucy deconvolution ``x <- x * blur(image / blur(x))`` (the Gaussian is self-adjoint).

    Negative input values are clipped to 0 (RL needs non-negative data). It amplifies noise, so
    the iterations are capped at ``n_iter`` (1-500); it stops early when the relative L1 update < ``tol``.

    Parameters
    ----------
    image : array (z, y, x)
        Observed image (Bq/mL or SUV).
    labels : int array (z, y, x) or None
        Not used (voxel-wise method); accepted for the common PVC signature.
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM of ``image``.
    spacing_mm : Grid, float or (z, y, x) mm
        Voxel size.
    n_iter : int
        Maximum number of iterations (1-500).
    tol : float
        Relative L1 update that stops the iteration ([0, 1]; 0 runs all ``n_iter``).

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units.
    """
    n = check_int("n_iter", n_iter, 1, 500)
    check_range("tol", tol, 0.0, 1.0)
    img = np.clip(np.asarray(image, dtype=np.float64), 0.0, None)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    norm = gaussian_blur(np.ones_like(img), fwhm_mm, spacing_mm)  # sensitivity near edges
    floor = 1e-12 * max(float(img.max()), 1e-30)
    x = img.copy()
    for _ in range(n):
        bx = gaussian_blur(x, fwhm_mm, spacing_mm)
        corr = gaussian_blur(safe_ratio(img, bx, floor), fwhm_mm, spacing_mm)
        new = x * safe_ratio(corr, norm, 1e-12)
        change = np.abs(new - x).sum() / max(np.abs(x).sum(), 1e-30)
        x = new
        if change < tol:
            break
    return x
