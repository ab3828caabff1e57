"""Energy-window scatter estimates used as the additive term of the OSEM model.

* DEW (dual energy window, Jaszczak et al., J Nucl Med 25:893, 1984): scatter in the
  photopeak = k x counts in a lower scatter window, k = 0.5, scaled here by the ratio of
  the window widths (photopeak / scatter window) as in the clinical NM670 protocol with a
  120 keV +/- 5 % scatter window (``camera_nm670.md``).
* TEW (triple energy window, Ogawa et al., IEEE TMI 10:408, 1991): trapezoid under the
  photopeak from two narrow adjacent windows,
  ``S = (C_low / W_low + C_up / W_up) x W_peak / 2``.

Both return an estimate (view, v, u) in photopeak counts that OSEM adds to ``A x``
(it is not subtracted from the data, which would break the Poisson model).
"""
from __future__ import annotations

import numpy as np

from her2sim.core.containers import Projections
from her2sim.core.errors import check_range

from .filters import FWHM_PER_SIGMA

#: Jaszczak 1984 DEW multiplier.
DEW_K = 0.5


def _smooth(est: np.ndarray, pixel_mm, fwhm_mm: float | None) -> np.ndarray:
    if fwhm_mm is None or fwhm_mm == 0:
        return est
    from scipy import ndimage
    f = check_range("scatter.smooth_fwhm_mm", fwhm_mm, 0.0, 200.0)
    sig = (0.0, f / FWHM_PER_SIGMA / pixel_mm[0], f / FWHM_PER_SIGMA / pixel_mm[1])
    return np.maximum(ndimage.gaussian_filter(est, sig, mode="nearest"), 0.0)


def dew_scatter(projections: Projections, k: float = DEW_K, photopeak: str = "photopeak",
                scatter_window: str = "scatter", smooth_fwhm_mm: float | None = None) -> np.ndarray:
    """DEW estimate of the photopeak scatter (view, v, u), counts.

    Parameters
    ----------
    projections : Projections
        Must contain windows named ``photopeak`` and ``scatter_window``.
    k : float
        Jaszczak multiplier (0.5).
    smooth_fwhm_mm : float or None
        Optional 2-D Gaussian smoothing of the estimate (mm FWHM) to reduce its noise.

    Returns
    -------
    numpy.ndarray
        ``k x C_scatter x W_photopeak / W_scatter``.
    """
    k = check_range("dew.k", k, 0.0, 10.0)
    ip = projections.window_index(photopeak)
    isc = projections.window_index(scatter_window)
    wp = projections.windows[ip].width_kev
    ws = projections.windows[isc].width_kev
    est = k * np.asarray(projections.counts[isc], dtype=np.float64) * (wp / ws)
    return _smooth(est, projections.geometry.pixel_mm, smooth_fwhm_mm)


def tew_scatter(projections: Projections, photopeak: str = "photopeak", lower: str = "tew_lower",
                upper: str = "tew_upper", smooth_fwhm_mm: float | None = None) -> np.ndarray:
    """TEW estimate of the photopeak scatter (view, v, u), counts (Ogawa 1991).

    ``S = (C_lower / W_lower + C_upper / W_upper) x W_photopeak / 2``; window widths in keV.
    """
    ip = projections.window_index(photopeak)
    il = projections.window_index(lower)
    iu = projections.window_index(upper)
    w = projections.windows
    c = projections.counts
    est = (np.asarray(c[il], np.float64) / w[il].width_kev
           + np.asarray(c[iu], np.float64) / w[iu].width_kev) * w[ip].width_kev / 2.0
    return _smooth(est, projections.geometry.pixel_mm, smooth_fwhm_mm)
