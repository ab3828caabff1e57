"""The default voxel grid of her2sim phantoms: the clinical NM/CT 670 SPECT matrix.

128 x 128 x 128 voxels of 4.42 mm (the NM670 99mTc protocol's 128 matrix and pixel size,
``../shared/reference/camera_nm670.md``), centred on the world origin (566 mm cube).
"""
from __future__ import annotations

from her2sim.core.grid import Grid

CLINICAL_SHAPE = (128, 128, 128)
CLINICAL_SPACING_MM = 4.42


def clinical_grid(grid: Grid | None = None) -> Grid:
    """``grid`` itself, or the default 128^3 x 4.42 mm grid when ``grid`` is None."""
    return grid if grid is not None else Grid.centered(CLINICAL_SHAPE, CLINICAL_SPACING_MM)
