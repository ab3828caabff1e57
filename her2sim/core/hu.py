"""CT Hounsfield units -> linear attenuation coefficient at 140.5 keV.

Bilinear conversion mu = mu_w + a * HU with a different slope below and above
HU = 0 (Bai et al., IEEE TNS 50:1510, 2003). Coefficients for a GE CT540-class CT
(the NM/CT 670's CT class is an assumption) as tabulated in PyTomography's
``data/ct_table.csv`` (MIT), see ``../shared/reference/physics.md``.
"""
from __future__ import annotations

import numpy as np

from .errors import check_choice

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
