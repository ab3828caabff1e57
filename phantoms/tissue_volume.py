"""Layered painting of labels, materials, densities and CT numbers onto a grid.

A phantom is drawn like a painting: the body first, organs on top, lesions last.
:class:`TissueVolume` keeps the four co-registered maps a :class:`~her2sim.core.containers.Phantom`
needs (label, material id, density g/cm^3, CT HU) and a registry of label names.

Nominal CT numbers per tissue (HU at 120 kVp; typical clinical values, e.g. Schneider et al.,
Phys Med Biol 45:459, 2000; Hounsfield-scale tables in radiology texts):
fat -100, breast adipose -100, glandular 35, muscle 40, soft tissue 40, blood 40, liver 55,
spleen 45, kidney 30, lung -750, spongiosa 250, cortical bone 1000, skin 40, water 0, air -1000,
PMMA 120, glass (borosilicate) 1500. The bilinear HU -> mu map (:mod:`her2sim.core.hu`)
turns these into 140.5 keV attenuation.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_IDS, MATERIAL_NAMES, get_material

#: nominal CT number (HU, 120 kVp) per material name (see module docstring for sources).
NOMINAL_HU = {
    "air": -1000.0, "water": 0.0, "adipose": -100.0, "breast_adipose": -100.0, "breast_gland": 35.0,
    "breast": -30.0, "soft_tissue": 40.0, "muscle": 40.0, "lung": -750.0, "liver": 55.0, "kidney": 30.0,
    "spleen": 45.0, "blood": 40.0, "skin": 40.0, "red_marrow": 30.0, "spongiosa": 250.0,
    "cortical_bone": 1000.0, "pmma": 120.0, "glass": 1500.0, "aluminium": 2200.0,
}


class TissueVolume:
    """Co-registered label / material / density / HU maps being painted.

    Parameters
    ----------
    grid : Grid
    background_material : str
        Material of every voxel before painting (``"air"``).
    """

    def __init__(self, grid: Grid, background_material: str = "air"):
        self.grid = grid
        mat = get_material(background_material)
        self.labels = np.zeros(grid.shape, np.int16)
        self.material_ids = np.full(grid.shape, MATERIAL_IDS[mat.name], np.uint8)
        self.density_g_cm3 = np.full(grid.shape, mat.density_g_cm3, np.float32)
        self.ct_hu = np.full(grid.shape, NOMINAL_HU.get(mat.name, -1000.0), np.float32)
        self.label_names: dict[int, str] = {0: "background"}
        self._label_ids: dict[str, int] = {"background": 0}

    def label_id(self, name: str) -> int:
        """Integer id of a label name (registered on first use)."""
        if name not in self._label_ids:
            new = max(self.label_names) + 1
            if new > np.iinfo(np.int16).max:
                raise ConfigError(f"too many labels ({new}); at most {np.iinfo(np.int16).max}")
            self._label_ids[name] = new
            self.label_names[new] = name
        return self._label_ids[name]

    def paint(self, mask: np.ndarray, label: str, material: str, hu: float | None = None,
              density_g_cm3: float | None = None) -> np.ndarray:
        """Overwrite the voxels in ``mask`` with a tissue.

        Parameters
        ----------
        mask : numpy.ndarray
            bool (z, y, x), or a float fraction map (voxels with fraction >= 0.5 are painted).
        label : str
            Structure name (``"liver"``); registered in ``label_names``.
        material : str
            Name in :data:`her2sim.core.materials.MATERIAL_NAMES`.
        hu : float, optional
            CT number; default :data:`NOMINAL_HU` of the material.
        density_g_cm3 : float, optional
            Mass density; default the material's nominal density.

        Returns
        -------
        numpy.ndarray
            The boolean mask that was painted.
        """
        m = np.asarray(mask)
        if m.dtype != bool:
            m = m >= 0.5
        self.grid.check_array(f"mask of {label}", m)
        mat = get_material(material)
        self.labels[m] = self.label_id(label)
        self.material_ids[m] = MATERIAL_IDS[mat.name]
        self.density_g_cm3[m] = mat.density_g_cm3 if density_g_cm3 is None else density_g_cm3
        self.ct_hu[m] = NOMINAL_HU.get(mat.name, 0.0) if hu is None else hu
        return m

    def mask_of(self, *labels: str) -> np.ndarray:
        """Boolean mask of the union of the named labels (unknown names give an empty mask)."""
        ids = [self._label_ids[n] for n in labels if n in self._label_ids]
        return np.isin(self.labels, ids)

    def material_names(self) -> list:
        """The material catalogue in id order (for ``Phantom.material_names``)."""
        return list(MATERIAL_NAMES)
