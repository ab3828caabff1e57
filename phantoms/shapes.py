"""Analytic solids rasterised onto a :class:`~her2sim.core.grid.Grid` with sub-voxel supersampling.

Every function returns the *fraction* (0-1, float32) of each voxel inside the solid.
With ``supersample = n`` each voxel is sampled on an ``n x n x n`` lattice of points at the
centres of its sub-cells, so a sphere's rasterised volume converges to 4/3 pi R^3 as n grows
(error of order (voxel / n) / R). ``supersample = 1`` samples voxel centres only (a binary mask).

All positions are world LPS mm in (z, y, x) order, as everywhere in her2sim.
Only the voxels inside the solid's bounding box are evaluated.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from her2sim.core.errors import ConfigError, check_int, check_range
from her2sim.core.grid import Grid

#: ``inside(z, y, x) -> bool array``: the solid as a predicate on world coordinates (mm, broadcastable arrays).
InsideFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _sub_offsets(n: int) -> np.ndarray:
    """Offsets (in voxel units, -0.5..0.5) of the centres of ``n`` equal sub-cells."""
    return (np.arange(n) + 0.5) / n - 0.5


def bbox_slices(grid: Grid, lo_mm, hi_mm) -> tuple | None:
    """Index slices (z, y, x) of the voxels whose extent touches the world box [lo_mm, hi_mm].

    Returns ``None`` when the box misses the grid.
    """
    lo_i = np.floor(grid.world_to_index(np.asarray(lo_mm, float)) + 0.5).astype(int)
    hi_i = np.ceil(grid.world_to_index(np.asarray(hi_mm, float)) - 0.5).astype(int)
    lo_i = np.maximum(lo_i, 0)
    hi_i = np.minimum(hi_i, np.asarray(grid.shape) - 1)
    if np.any(hi_i < lo_i):
        return None
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo_i, hi_i))


def solid_fraction(grid: Grid, inside: InsideFn, lo_mm, hi_mm, supersample: int = 1) -> np.ndarray:
    """Fraction of each voxel inside a solid given by a predicate and a bounding box.

    Parameters
    ----------
    grid : Grid
    inside : callable
        ``inside(z, y, x)`` on broadcastable world-coordinate arrays (mm) -> bool array.
    lo_mm, hi_mm : sequence of 3 float
        World bounding box (z, y, x) of the solid in mm; points outside are never inside.
    supersample : int
        Sub-samples per voxel edge (1-16).

    Returns
    -------
    numpy.ndarray
        float32 (z, y, x) fraction in [0, 1].
    """
    n = check_int("supersample", supersample, 1, 16)
    out = np.zeros(grid.shape, np.float32)
    sl = bbox_slices(grid, lo_mm, hi_mm)
    if sl is None:
        return out
    axes = [grid.axis_mm(a)[sl[a]] for a in range(3)]
    sp = grid.spacing_mm
    acc = np.zeros(tuple(len(a) for a in axes), np.float32)
    offs = _sub_offsets(n)
    for oz in offs:
        z = (axes[0] + oz * sp[0])[:, None, None]
        for oy in offs:
            y = (axes[1] + oy * sp[1])[None, :, None]
            for ox in offs:
                x = (axes[2] + ox * sp[2])[None, None, :]
                acc += np.broadcast_to(inside(z, y, x), acc.shape)
    out[sl] = acc / float(n ** 3)
    return out


def ellipsoid_fraction(grid: Grid, center_mm, radii_mm, rotation: np.ndarray | None = None,
                       supersample: int = 1) -> np.ndarray:
    """Voxel fraction inside an ellipsoid.

    Parameters
    ----------
    center_mm : sequence of 3 float
        Centre (z, y, x) in world mm.
    radii_mm : sequence of 3 float
        Semi-axes (z, y, x) in mm (> 0), along the rotated axes when ``rotation`` is given.
    rotation : (3, 3) array or None
        Rotation matrix whose *rows* are the ellipsoid's axes in world (z, y, x) components.
    """
    c = np.asarray(center_mm, float)
    r = np.asarray([check_range(f"radii_mm[{i}]", v, 0.0, 1e4, lo_open=True) for i, v in enumerate(radii_mm)])
    if rotation is None:
        def inside(z, y, x):
            return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1.0
        ext = r
    else:
        R = np.asarray(rotation, float)
        if R.shape != (3, 3):
            raise ConfigError(f"rotation must be a 3x3 matrix, got shape {R.shape}")

        def inside(z, y, x):
            d = (z - c[0], y - c[1], x - c[2])
            s = 0.0
            for k in range(3):
                u = R[k, 0] * d[0] + R[k, 1] * d[1] + R[k, 2] * d[2]
                s = s + (u / r[k]) ** 2
            return s <= 1.0
        ext = np.sqrt(((R * r[:, None]) ** 2).sum(axis=0))
    return solid_fraction(grid, inside, c - ext, c + ext, supersample)


def sphere_fraction(grid: Grid, center_mm, radius_mm: float, supersample: int = 1) -> np.ndarray:
    """Voxel fraction inside a sphere of ``radius_mm`` centred at ``center_mm`` (z, y, x)."""
    return ellipsoid_fraction(grid, center_mm, (radius_mm,) * 3, None, supersample)


def prism_fraction(grid: Grid, inside_xy: Callable[[np.ndarray, np.ndarray], np.ndarray], xy_lo_mm, xy_hi_mm,
                   z_lo_mm: float, z_hi_mm: float, supersample: int = 1) -> np.ndarray:
    """Voxel fraction inside a straight prism along z: a 2-D cross-section extruded over [z_lo, z_hi].

    The in-plane fraction is supersampled; the z overlap is computed exactly, so long
    bodies (phantom shells, cylinders) stay cheap on fine grids.

    Parameters
    ----------
    inside_xy : callable
        ``inside_xy(y, x) -> bool array`` for the cross-section (world mm).
    xy_lo_mm, xy_hi_mm : sequence of 2 float
        In-plane bounding box (y, x) in mm.
    z_lo_mm, z_hi_mm : float
        Axial extent in mm.
    """
    n = check_int("supersample", supersample, 1, 16)
    out = np.zeros(grid.shape, np.float32)
    if not z_hi_mm > z_lo_mm:
        raise ConfigError(f"prism z range: z_hi_mm = {z_hi_mm} must be greater than z_lo_mm = {z_lo_mm}")
    sl = bbox_slices(grid, (z_lo_mm, xy_lo_mm[0], xy_lo_mm[1]), (z_hi_mm, xy_hi_mm[0], xy_hi_mm[1]))
    if sl is None:
        return out
    ys = grid.axis_mm(1)[sl[1]]
    xs = grid.axis_mm(2)[sl[2]]
    acc = np.zeros((len(ys), len(xs)), np.float32)
    offs = _sub_offsets(n)
    for oy in offs:
        y = (ys + oy * grid.spacing_mm[1])[:, None]
        for ox in offs:
            x = (xs + ox * grid.spacing_mm[2])[None, :]
            acc += np.broadcast_to(inside_xy(y, x), acc.shape)
    acc /= float(n * n)
    zc = grid.axis_mm(0)[sl[0]]
    dz = grid.spacing_mm[0]
    zfrac = np.clip((np.minimum(zc + dz / 2, z_hi_mm) - np.maximum(zc - dz / 2, z_lo_mm)) / dz, 0.0, 1.0)
    out[sl] = zfrac[:, None, None].astype(np.float32) * acc[None]
    return out


def z_cylinder_fraction(grid: Grid, center_yx_mm, radii_yx_mm, z_lo_mm: float, z_hi_mm: float,
                        supersample: int = 1) -> np.ndarray:
    """Voxel fraction inside an elliptic cylinder parallel to z (semi-axes (ry, rx) in mm)."""
    cy, cx = (float(v) for v in center_yx_mm)
    ry, rx = (check_range(f"radii_yx_mm[{i}]", v, 0.0, 1e4, lo_open=True) for i, v in enumerate(radii_yx_mm))

    def inside_xy(y, x):
        return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0
    return prism_fraction(grid, inside_xy, (cy - ry, cx - rx), (cy + ry, cx + rx), z_lo_mm, z_hi_mm, supersample)


def box_fraction(grid: Grid, lo_mm, hi_mm, supersample: int = 1) -> np.ndarray:
    """Voxel fraction inside an axis-aligned box [lo_mm, hi_mm] (z, y, x)."""
    lo = np.asarray(lo_mm, float)
    hi = np.asarray(hi_mm, float)
    if np.any(hi <= lo):
        raise ConfigError(f"box: hi_mm = {list(hi)} must exceed lo_mm = {list(lo)} on every axis")

    def inside(z, y, x):
        return (z >= lo[0]) & (z <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (x >= lo[2]) & (x <= hi[2])
    return solid_fraction(grid, inside, lo, hi, supersample)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix (rows = rotated axes) from ``rng``."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
