"""Van Cittert deconvolution as partial-volume correction (voxel-wise; needs no regions)."""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import DataError, check_int, check_range

from .psf import gaussian_blur


def pvc_van_cittert(image, labels, fwhm_mm, spacing_mm, *, n_iter: int = 10, alpha: float = 1.5,
                    tol: float = 0.0) -> np.ndarray:
    """Van Cittert deconvolution ``x <- x + alpha (image - blur(x))``.

    Converges for 0 < alpha < 2 with a Gaussian PSF (its eigenvalues lie in (0, 1]). It amplifies
    noise, so the iterations are capped at ``n_iter`` (1-500); early stop when the relative L1
    update < ``tol``.

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
    alpha : float
        Step size in (0, 2).
    tol : float
        Relative L1 update that stops the iteration ([0, 1]; 0 runs all ``n_iter``).

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units.
    """
    n = check_int("n_iter", n_iter, 1, 500)
    a = check_range("alpha", alpha, 0.0, 2.0, lo_open=True, hi_open=True)
    check_range("tol", tol, 0.0, 1.0)
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    x = img.copy()
    for _ in range(n):
        step = a * (img - gaussian_blur(x, fwhm_mm, spacing_mm))
        x = x + step
        if np.abs(step).sum() / max(np.abs(x).sum(), 1e-30) < tol:
            break
    return x
