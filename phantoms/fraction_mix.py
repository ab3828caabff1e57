"""Compose a phantom from mutually exclusive partial-volume fractions.

Calibration phantoms have thin walls (1 mm glass sphere shells) and small spheres that a
4 mm voxel cannot resolve. Each compartment is given as a voxel fraction; the compartments of
one voxel must add up to at most 1 (the rest is the background medium). Density and CT number
are fraction-weighted means (what a real CT and a real attenuation path see), activity
concentration is the fraction-weighted mean (activity conservation), and the label and material
ids take the compartment with the largest fraction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from her2sim.core.errors import DataError
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_IDS, get_material

from .tissue_volume import NOMINAL_HU


@dataclass
class Compartment:
    """One compartment: voxel fraction, structure label, material and activity concentration (Bq/mL)."""

    fraction: np.ndarray
    label: str
    material: str
    concentration_bq_per_ml: float = 0.0
    hu: float | None = None


def mix_compartments(grid: Grid, compartments: list, background_material: str = "air",
                     tolerance: float = 1e-3):
    """Fraction-weighted density / HU / activity and majority label / material.

    Parameters
    ----------
    grid : Grid
    compartments : list of Compartment
        Exclusive compartments; their fractions must sum to <= 1 per voxel (within ``tolerance``).
    background_material : str
        Fills ``1 - sum(fractions)`` (no activity).

    Returns
    -------
    dict
        ``activity`` (Bq/mL), ``density_g_cm3``, ``ct_hu``, ``labels`` (int16), ``material_ids`` (uint8),
        ``label_names`` ({id: name}).
    """
    bg = get_material(background_material)
    total = np.zeros(grid.shape, np.float32)
    activity = np.zeros(grid.shape, np.float64)
    density = np.zeros(grid.shape, np.float64)
    hu = np.zeros(grid.shape, np.float64)
    best = np.zeros(grid.shape, np.float32)
    labels = np.zeros(grid.shape, np.int16)
    mats = np.full(grid.shape, MATERIAL_IDS[bg.name], np.uint8)
    label_names = {0: "background"}
    label_ids: dict[str, int] = {"background": 0}
    for comp in compartments:
        f = np.clip(np.asarray(comp.fraction, np.float32), 0.0, 1.0)
        grid.check_array(f"fraction of {comp.label}", f)
        mat = get_material(comp.material)
        if comp.label not in label_ids:
            label_ids[comp.label] = len(label_ids)
            label_names[label_ids[comp.label]] = comp.label
        total += f
        activity += f * comp.concentration_bq_per_ml
        density += f * mat.density_g_cm3
        hu += f * (NOMINAL_HU.get(mat.name, 0.0) if comp.hu is None else comp.hu)
        take = f > best
        best[take] = f[take]
        labels[take] = label_ids[comp.label]
        mats[take] = MATERIAL_IDS[mat.name]
    if np.any(total > 1.0 + tolerance):
        raise DataError(f"compartment fractions sum to {float(total.max()):.4f} > 1 in some voxel; "
                        "compartments must not overlap")
    rest = np.clip(1.0 - total, 0.0, 1.0)
    density += rest * bg.density_g_cm3
    hu += rest * NOMINAL_HU.get(bg.name, -1000.0)
    # majority: background wins where it is the largest part
    bgwin = rest > best
    labels[bgwin] = 0
    mats[bgwin] = MATERIAL_IDS[bg.name]
    return {"activity": activity.astype(np.float32), "density_g_cm3": density.astype(np.float32),
            "ct_hu": hu.astype(np.float32), "labels": labels, "material_ids": mats, "label_names": label_names}
