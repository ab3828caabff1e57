"""Two-compartment Muller-Gartner partial-volume correction (J Cereb Blood Flow Metab 12:571, 1992)."""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import ConfigError, DataError, check_range

from .psf import gaussian_blur
from .regions import check_regions


def pvc_muller_gartner(image, labels, fwhm_mm, spacing_mm, *, background_label: int | None = None,
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
    image : array (z, y, x)
        Observed image (Bq/mL or SUV).
    labels : int array (z, y, x)
        Region label map.
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM of ``image``.
    spacing_mm : Grid, float or (z, y, x) mm
        Voxel size.
    background_label : int
        Label of the background compartment (required).
    background_value : float, optional
        c_bg (image units). By default the mean of the image over the background core, the voxels
        with ``blur(mask_bg) >= core_rsf`` (unaffected by spill-in).
    min_rsf, core_rsf : float
        Thresholds in (0, 1] (dimensionless regional spread function values).

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units.
    """
    if background_label is None:
        raise ConfigError("pvc method = 'mg' needs background_label (label of the background compartment)")
    img, lab, ids = check_regions(image, labels, method="mg")
    check_range("min_rsf", min_rsf, 0.0, 1.0, lo_open=True)
    check_range("core_rsf", core_rsf, 0.0, 1.0, lo_open=True)
    if int(background_label) not in ids:
        raise ConfigError(f"background_label = {background_label} is not in the label map; labels {ids}")
    bg = lab == int(background_label)
    target = ~bg
    if not np.any(target):
        raise DataError("Muller-Gartner needs at least one target region besides the background")
    rsf_bg = gaussian_blur(bg.astype(np.float64), fwhm_mm, spacing_mm)
    if background_value is None:
        core = bg & (rsf_bg >= core_rsf)
        if not np.any(core):
            raise DataError(f"background core (blur(mask) >= core_rsf = {core_rsf}) is empty; "
                            "pass background_value or lower core_rsf")
        c_bg = float(img[core].mean())
    else:
        c_bg = check_range("background_value", background_value, None, None)
    rsf_t = gaussian_blur(target.astype(np.float64), fwhm_mm, spacing_mm)
    out = img.copy()
    ok = target & (rsf_t >= min_rsf)
    out[target] = 0.0
    out[ok] = (img[ok] - c_bg * rsf_bg[ok]) / rsf_t[ok]
    return out
