"""Depth-dependent collimator-detector response (CDR) used by the projector.

The camera model (:meth:`her2sim.sim.camera.Camera.sigma_mm`, ``camera_nm670.md``) gives a
Gaussian sigma(d) = sqrt((a d + b)^2 + c^2) at distance d from the collimator face. The
projector blurs the running sum of planes incrementally (farthest plane first), so it needs,
per view and plane (nearest first), the *increment* of the variance between consecutive
planes; Gaussian variances add under convolution, so plane j ends up with sigma(d_j)^2.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.radionuclide import TC99M


def incremental_variances_px2(camera, plane_distance_mm: np.ndarray, pixel_mm: float,
                              energy_kev: float = TC99M.gamma_kev) -> np.ndarray:
    """Variance increments (pixel^2) of the CDR between consecutive planes.

    Parameters
    ----------
    camera : her2sim.sim.camera.Camera
        Provides ``sigma_mm(distance_mm, energy_kev)``.
    plane_distance_mm : numpy.ndarray
        (view, plane) distances from the collimator face (mm), nearest plane first, >= 0.
    pixel_mm : float
        Pixel size along the blurred axis (mm).
    energy_kev : float
        Photon energy (keV).

    Returns
    -------
    numpy.ndarray
        (view, plane): entry 0 is sigma(d_0)^2, entry j the (non-negative) difference
        sigma(d_j)^2 - sigma(d_{j-1})^2, all divided by ``pixel_mm**2``; the cumulative sum
        along the planes is sigma(d_j)^2 in pixel^2.
    """
    var = np.asarray(camera.sigma_mm(plane_distance_mm, energy_kev), dtype=np.float64) ** 2
    inc = np.empty_like(var)
    inc[..., 0] = var[..., 0]
    inc[..., 1:] = np.maximum(np.diff(var, axis=-1), 0.0)
    return np.ascontiguousarray(inc / float(pixel_mm) ** 2)
