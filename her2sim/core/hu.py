"""CT Hounsfield units -> linear attenuation coefficient at 140.5 keV.

Bilinear conversion mu = mu_w + a * HU with a different slope below and above
HU = 0 (Bai et al., IEEE TNS 50:1510, 2003). Coefficients for a GE CT540-class CT
(the NM/CT 670's CT class is an assumption) as tabulated in PyTomography's
``data/ct_table.csv`` (MIT), see ``../shared/reference/physics.md``.
"""
from __future__ import annotations

import numpy as np

from .errors import DataError, check_choice

#: mu of water at 140.5 keV in 1/cm used by the bilinear map (Bai 2003 / PyTomography table).
MU_WATER_140_PER_CM = 0.1538

#: slopes (1/cm per HU) below and at/above 0 HU for a GE Optima CT540-class scanner by kVp.
GE_CT540_SLOPES = {
    80: (1.694e-4, 7.98e-5),
    100: (1.694e-4, 9.59e-5),
    120: (1.658e-4, 1.039e-4),
    140: (1.655e-4, 1.130e-4),
}


def hu_to_mu_per_cm(hu, kvp: int = 120) -> np.ndarray:
    """Linear attenuation coefficient at 140.5 keV (1/cm) from CT numbers.

    Parameters
    ----------
    hu : array_like
        CT numbers in HU.
    kvp : int
        CT tube voltage (80, 100, 120 or 140 kVp).

    Returns
    -------
    numpy.ndarray
        mu in 1/cm, clipped at >= 0, float32.
    """
    check_choice("ct.kvp", kvp, GE_CT540_SLOPES)
    a_neg, a_pos = GE_CT540_SLOPES[kvp]
    h = np.asarray(hu, dtype=np.float32)
    mu = MU_WATER_140_PER_CM + np.where(h < 0, a_neg, a_pos) * h
    return np.clip(mu, 0.0, None).astype(np.float32)


#: HU segmentation for Monte Carlo materials (upper bound of each class, HU), after the tissue
#: classes of Schneider et al., Phys Med Biol 45:459 (2000), simplified to the her2sim catalogue
HU_CLASSES = ((-950.0, "air"), (-200.0, "lung"), (-30.0, "adipose"), (150.0, "soft_tissue"),
              (float("inf"), "cortical_bone"))


def hu_to_material_density(hu):
    """Material ids and mass densities for the Monte Carlo from CT numbers.

    Segmentation into air / lung / adipose / soft tissue / bone (:data:`HU_CLASSES`) with
    density scaling inside each class: rho = 1 + HU/1000 g/cm^3 below 150 HU (air-water
    mixing line; lung at -750 HU -> 0.25 g/cm^3, water 1.0), and for bone a line from
    1.10 g/cm^3 at 150 HU to 1.92 g/cm^3 (ICRU-44 cortical bone) at 1500 HU. Air keeps 0.001205.

    Parameters
    ----------
    hu : array_like
        CT numbers (HU).

    Returns
    -------
    (numpy.ndarray of uint8, numpy.ndarray of float32)
        Material ids (:data:`her2sim.core.materials.MATERIAL_IDS`) and densities in g/cm^3.
    """
    from .materials import MATERIAL_IDS

    h = np.asarray(hu, dtype=np.float32)
    if not np.all(np.isfinite(h)):
        raise DataError("ct_hu contains NaN or infinite values; every voxel needs a finite CT number")
    ids = np.zeros(h.shape, np.uint8)
    lower = -np.inf
    for upper, name in HU_CLASSES:
        ids[(h >= lower) & (h < upper)] = MATERIAL_IDS[name]
        lower = upper
    rho = np.clip(1.0 + h / 1000.0, 0.001205, None)
    bone = h >= 150.0
    rho[bone] = 1.10 + (h[bone] - 150.0) * (0.82 / 1350.0)
    rho[ids == MATERIAL_IDS["air"]] = 0.001205
    return ids, rho.astype(np.float32)
