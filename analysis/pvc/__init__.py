"""Partial-volume correction (PVC) of SPECT images in Bq/mL (or SUV), one module per method (as PETPVC).

Every method has one signature::

    method(image, labels, fwhm_mm, spacing_mm, **options) -> numpy.ndarray

``image`` and ``labels`` are (z, y, x) arrays (``labels`` an integer region map; the
voxel-wise deconvolutions ignore it and accept None), ``fwhm_mm`` the Gaussian PSF FWHM
of the image (scalar or (z, y, x) mm), ``spacing_mm`` the voxel size (a
:class:`~her2sim.core.grid.Grid`, scalar or (z, y, x) mm); the result is a float64 image
in the units of ``image``. :data:`METHODS` maps each name to its function and
:func:`apply_pvc` dispatches by name.

Methods (the set tested by PETPVC, Thomas et al., Phys Med Biol 61:7975, 2016):

==========  ========================  ================================================================
name        module                    method
==========  ========================  ================================================================
``none``    (here)                    no correction (a float64 copy)
``rc``      :mod:`.recovery`          each region divided by the recovery coefficient of its
                                      volume-equivalent sphere (contrast form with a background label)
``gtm``     :mod:`.gtm`               geometric transfer matrix, regional means (Rousset et al.,
                                      J Nucl Med 39:904, 1998), as a piecewise-constant image;
                                      :func:`gtm_regional_means` returns the means themselves
``rbv``     :mod:`.rbv`               region-based voxel-wise (Thomas et al., Eur J Nucl Med Mol
                                      Imaging 38:1104, 2011): ``image * S / blur(S)``, S from GTM
``iy``      :mod:`.iterative_yang`    iterative Yang (Erlandsson et al., Phys Med Biol 57:R119, 2012)
``mg``      :mod:`.muller_gartner`    two-compartment Muller-Gartner (J Cereb Blood Flow Metab
                                      12:571, 1992)
``rl``      :mod:`.richardson_lucy`   Richardson-Lucy deconvolution
``vc``      :mod:`.van_cittert`       Van Cittert deconvolution
==========  ========================  ================================================================

The deconvolutions amplify noise, so their iteration count is capped (<= 500) and they stop
early when the relative update falls below ``tol``. Helpers: :mod:`.psf` (Gaussian blur, point-source
fit), :mod:`.recovery` (analytic and measured recovery coefficients, the per-value RC correction
:func:`pvc_recovery_coefficient`), :mod:`.regions` (label-map checks, regional means).
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import check_choice

from .gtm import gtm_matrix, gtm_regional_means, pvc_gtm
from .iterative_yang import pvc_iterative_yang
from .muller_gartner import pvc_muller_gartner
from .psf import FWHM_PER_SIGMA, gaussian_blur, psf_from_point_source, sigma_voxels
from .rbv import pvc_rbv
from .recovery import (analytic_rc_max, analytic_rc_mean, blurred_sphere_profile, equivalent_sphere_diameter_mm,
                       fit_effective_fwhm_mm, measure_recovery_coefficients, pvc_rc, pvc_recovery_coefficient)
from .regions import regional_means
from .richardson_lucy import pvc_richardson_lucy
from .van_cittert import pvc_van_cittert


def pvc_none(image, labels, fwhm_mm, spacing_mm, **options) -> np.ndarray:
    """No correction: ``image`` as a float64 copy (z, y, x), image units; the other arguments are ignored."""
    return np.asarray(image, dtype=np.float64).copy()


#: PVC method name -> function ``(image, labels, fwhm_mm, spacing_mm, **options) -> ndarray``.
METHODS = {
    "none": pvc_none,
    "rc": pvc_rc,
    "gtm": pvc_gtm,
    "rbv": pvc_rbv,
    "iy": pvc_iterative_yang,
    "mg": pvc_muller_gartner,
    "rl": pvc_richardson_lucy,
    "vc": pvc_van_cittert,
}

#: Allowed PVC method names (the keys of :data:`METHODS`; ``analysis.pvc_methods`` in a study config).
PVC_METHODS = tuple(METHODS)


def apply_pvc(method: str, image, grid_or_spacing, fwhm_mm, *, labels=None, **options) -> np.ndarray:
    """Correct an image with one method by name (:data:`METHODS`) and return the corrected image.

    Parameters
    ----------
    method : str
        One of :data:`PVC_METHODS`; anything else is a one-line ConfigError listing them.
    image : array (z, y, x)
        Observed image (Bq/mL or SUV).
    grid_or_spacing : Grid, float or (z, y, x) mm
        Voxel size.
    fwhm_mm : float or (z, y, x) mm
        PSF FWHM of the reconstructed image.
    labels : int array (z, y, x), optional
        Region label map; required by rc, gtm, rbv, iy and mg (ConfigError without it).
    **options
        Passed to the method (``n_iter``, ``background_label``, ``alpha``...).

    Returns
    -------
    numpy.ndarray
        float64 (z, y, x), image units ('gtm': the piecewise-constant image of the GTM regional means).
    """
    check_choice("pvc method", method, METHODS)
    return METHODS[method](image, labels, fwhm_mm, grid_or_spacing, **options)


__all__ = ["FWHM_PER_SIGMA", "METHODS", "PVC_METHODS", "analytic_rc_max", "analytic_rc_mean", "apply_pvc",
           "blurred_sphere_profile", "equivalent_sphere_diameter_mm", "fit_effective_fwhm_mm", "gaussian_blur",
           "gtm_matrix", "gtm_regional_means", "measure_recovery_coefficients", "psf_from_point_source",
           "pvc_gtm", "pvc_iterative_yang", "pvc_muller_gartner", "pvc_none", "pvc_rbv", "pvc_rc",
           "pvc_recovery_coefficient", "pvc_richardson_lucy", "pvc_van_cittert", "regional_means",
           "sigma_voxels"]
