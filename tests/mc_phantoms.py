"""Tiny analytic phantoms shared by the Monte Carlo tests (water cylinder, slab, point in air)."""
import numpy as np

from her2sim.core.containers import Phantom
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_IDS, MATERIAL_NAMES


def water_phantom(grid: Grid, water_mask: np.ndarray, activity: np.ndarray) -> Phantom:
    mat = np.where(water_mask, MATERIAL_IDS["water"], MATERIAL_IDS["air"]).astype(np.uint8)
    rho = np.where(water_mask, 1.0, 0.0).astype(np.float32)
    return Phantom(grid, activity.astype(np.float32), (0.0,), np.where(water_mask, 0.0, -1000.0).astype(np.float32),
                   water_mask.astype(np.int16), mat, rho, material_names=list(MATERIAL_NAMES))


def point_in_cylinder(diameter_mm=220.0, length_mm=166.0, spacing=4.42, shape=(48, 64, 64), mbq=1.0,
                      filled=True) -> Phantom:
    g = Grid.centered(shape, spacing)
    z, y, x = g.mesh_mm(np.float64)
    cyl = (np.hypot(x, y) <= diameter_mm / 2) & (np.abs(z) <= length_mm / 2)
    if not filled:
        cyl = np.zeros_like(cyl)
    act = np.zeros(g.shape)
    c = tuple(s // 2 for s in shape)
    act[c] = mbq * 1e6 / g.voxel_volume_ml
    return water_phantom(g, cyl, act)
