"""Iterative Yang partial-volume correction (Erlandsson et al., Phys Med Biol 57:R119, 2012)."""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import check_int, check_range

from .psf import gaussian_blur
from .regions import check_regions, piecewise_image, regional_means, safe_ratio


def pvc_iterative_yang(image, labels, fwhm_mm, spacing_mm, *, n_iter: int = 30, tol: float = 1e-5,
                       ignore_labels=()) -> np.ndarray:
    """Iterative Yang (Erlandsson 2012): as RBV, but the regional means come from the current estimate.

    ``x_0 = image``; ``S_k`` = piecewise-constant image of the regional means of
    ``x_k``; ``x_{k+1} = image * S_k / blur(S_k)``. Stops after ``n_iter`` (1-500)
    iterations or when the relative change of the regional means is below ``tol``.

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
    n_iter : int
        Maximum number of iterations (1-500).
    tol : float
        Relative change of the regional means that stops the iteration ([0, 1]).
    ignore_labels : iterable of int
        Labels left out; their voxels become 0.

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units.
    """
    n = check_int("n_iter", n_iter, 1, 500)
    check_range("tol", tol, 0.0, 1.0)
    img, lab, ids = check_regions(image, labels, ignore_labels, method="iy")
    x = img.copy()
    prev = None
    for _ in range(n):
        means = regional_means(x, lab, ids)
        s = piecewise_image(lab, means)
        bs = gaussian_blur(s, fwhm_mm, spacing_mm)
        floor = 1e-9 * max(float(np.max(np.abs(s))), 1e-30)
        x = img * safe_ratio(s, bs, floor)
        vec = np.array([means[i] for i in ids])
        if prev is not None:
            change = np.max(np.abs(vec - prev)) / max(np.max(np.abs(vec)), 1e-30)
            if change < tol:
                break
        prev = vec
    return x
