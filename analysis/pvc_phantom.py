"""Piecewise-constant validation phantom for partial-volume correction.

Follows the PETPVC test design (Thomas et al., Phys Med Biol 61:7975, 2016;
``shared/reference/validation_targets.md``): ellipsoids and a cylinder on an
asymmetric grid with anisotropic voxels, with the region label map (background
and outside included) so the true regional means are known exactly.

Region labels and default values (arbitrary units, e.g. kBq/mL):

====== ================================ =======
label  object                           value
====== ================================ =======
0      outside the body (air)           0
1      elliptic cylinder body (along z) 1.0
2      large ellipsoid (hot)            4.0
3      small ellipsoid (very hot)       8.0
4      ellipsoid (cold)                 0.25
5      ellipsoid (warm, touches 2)      2.5
====== ================================ =======
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import check_range
from her2sim.core.grid import Grid

#: Default grid: asymmetric shape and anisotropic voxels (z, y, x).
DEFAULT_SHAPE = (28, 44, 52)
DEFAULT_SPACING_MM = (2.5, 2.0, 1.75)

REGION_VALUES = {0: 0.0, 1: 1.0, 2: 4.0, 3: 8.0, 4: 0.25, 5: 2.5}


def pvc_validation_phantom(shape=DEFAULT_SHAPE, spacing_mm=DEFAULT_SPACING_MM, values: dict | None = None):
    """Build the phantom.

    Parameters
    ----------
    shape : (nz, ny, nx)
    spacing_mm : (dz, dy, dx) in mm
    values : dict, optional
        label -> value overriding :data:`REGION_VALUES`.

    Returns
    -------
    (truth, labels, grid)
        truth float64 (z, y, x); labels int16 (z, y, x); the Grid (centred).
    """
    grid = Grid.centered(shape, spacing_mm)
    vals = dict(REGION_VALUES)
    if values:
        vals.update({int(k): check_range(f"values[{k}]", v, None, None) for k, v in values.items()})
    z, y, x = grid.mesh_mm(np.float64)
    ext = np.asarray(grid.extent_mm)
    labels = np.zeros(grid.shape, dtype=np.int16)

    def ellipsoid(c, a):
        return ((z - c[0]) / a[0]) ** 2 + ((y - c[1]) / a[1]) ** 2 + ((x - c[2]) / a[2]) ** 2 <= 1.0

    # body: elliptic cylinder along z, leaves 2 slices of air at each end and air in the corners
    body = (((y / (0.42 * ext[1])) ** 2 + (x / (0.44 * ext[2])) ** 2) <= 1.0) & (np.abs(z) <= 0.5 * ext[0] - 2 * grid.spacing_mm[0])
    labels[np.broadcast_to(body, grid.shape)] = 1
    labels[np.broadcast_to(ellipsoid((2.0, -8.0, -14.0), (12.0, 9.0, 11.0)), grid.shape)] = 2
    labels[np.broadcast_to(ellipsoid((-6.0, 12.0, 16.0), (5.0, 4.5, 6.0)), grid.shape)] = 3
    labels[np.broadcast_to(ellipsoid((8.0, 14.0, -6.0), (7.0, 6.0, 8.0)), grid.shape)] = 4
    labels[np.broadcast_to(ellipsoid((2.0, -8.0, 4.0), (8.0, 7.0, 8.0)) & (labels == 1), grid.shape)] = 5
    truth = np.zeros(grid.shape, dtype=np.float64)
    for k, v in vals.items():
        truth[labels == k] = v
    return truth, labels, grid
