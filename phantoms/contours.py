"""Body contour per view, for body-contour (non-circular) SPECT orbits.

Projection convention (:mod:`her2sim.core.projection_geometry`): at view angle ``theta`` the detector
face lies along the outward normal ``n(theta) = (x = sin theta, y = -cos theta)`` from the rotation axis
(0 deg = anterior, 90 deg = patient left). The body radius for a view is the largest distance, along
``n(theta)``, from the axis to any point of the body (any slice), i.e. the closest a detector face may
come to the axis without touching the patient.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.containers import Phantom
from her2sim.core.errors import ConfigError, check_range
from her2sim.core.materials import MATERIAL_IDS


def body_mask(phantom: Phantom, min_density_g_cm3: float = 0.1) -> np.ndarray:
    """Voxels that belong to the object: not air and denser than ``min_density_g_cm3`` (lung counts as body)."""
    check_range("min_density_g_cm3", min_density_g_cm3, 0.0, 10.0)
    return (phantom.material_ids != MATERIAL_IDS["air"]) & (phantom.density_g_cm3 > min_density_g_cm3)


def body_radius_mm(phantom: Phantom, angles_deg, axis_xy_mm=(0.0, 0.0), z_range_mm=None,
                   min_density_g_cm3: float = 0.1) -> np.ndarray:
    """Distance (mm) from the rotation axis to the body surface along the detector normal of each view.

    Parameters
    ----------
    phantom : Phantom
    angles_deg : array_like
        View angles theta (deg), convention of :mod:`her2sim.core.projection_geometry`.
    axis_xy_mm : sequence of 2 float
        World (x, y) of the rotation axis (mm).
    z_range_mm : (float, float), optional
        Only slices whose centre lies in [z_lo, z_hi] (mm) count (the detector's axial field of view).
    min_density_g_cm3 : float
        Voxels less dense than this are not body (air, bed foam).

    Returns
    -------
    numpy.ndarray
        One radius per angle (mm); the full voxel extent is included (voxel corners), so a detector
        at this radius clears every body voxel. 0 when the body is empty.
    """
    ang = np.deg2rad(np.atleast_1d(np.asarray(angles_deg, float)))
    if ang.ndim != 1:
        raise ConfigError(f"angles_deg must be 1-D, got shape {np.shape(angles_deg)}")
    g = phantom.grid
    m = body_mask(phantom, min_density_g_cm3)
    if z_range_mm is not None:
        zlo, zhi = (float(v) for v in z_range_mm)
        if not zhi >= zlo:
            raise ConfigError(f"z_range_mm = {z_range_mm} must be (low, high) with high >= low")
        zc = g.axis_mm(0)
        m = m[(zc >= zlo) & (zc <= zhi)]
    foot = m.any(axis=0) if m.shape[0] else np.zeros(g.shape[1:], bool)
    iy, ix = np.nonzero(foot)
    if iy.size == 0:
        return np.zeros(ang.shape)
    ys = g.axis_mm(1)[iy] - float(axis_xy_mm[1])
    xs = g.axis_mm(2)[ix] - float(axis_xy_mm[0])
    s, c = np.sin(ang), np.cos(ang)
    half = 0.5 * (g.spacing_mm[2] * np.abs(s) + g.spacing_mm[1] * np.abs(c))
    proj = xs[None, :] * s[:, None] - ys[None, :] * c[:, None]
    return proj.max(axis=1) + half
