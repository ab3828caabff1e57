"""Region-based voxel-wise (RBV) partial-volume correction (Thomas et al., Eur J Nucl Med Mol Imaging 38:1104, 2011)."""
from __future__ import annotations

import numpy as np

from .gtm import gtm_regional_means
from .psf import gaussian_blur
from .regions import check_regions, piecewise_image, safe_ratio


def pvc_rbv(image, labels, fwhm_mm, spacing_mm, *, ignore_labels=()) -> np.ndarray:
    """Region-based voxel-wise correction (Thomas 2011): ``image * S / blur(S)``, S from GTM means.

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
        Labels left out of the GTM; their voxels get S = 0 and hence a corrected value of 0.

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units.
    """
    img, lab, ids = check_regions(image, labels, ignore_labels, method="rbv")
    means = gtm_regional_means(img, lab, fwhm_mm, spacing_mm, ignore_labels=ignore_labels)
    s = piecewise_image(lab, means)
    bs = gaussian_blur(s, fwhm_mm, spacing_mm)
    floor = 1e-9 * max(float(np.max(np.abs(s))), 1e-30)
    return img * safe_ratio(s, bs, floor)
