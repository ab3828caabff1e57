"""Plain-dict summary of a phantom for ``--json`` output and quick checks."""
from __future__ import annotations

import numpy as np

from her2sim.core.containers import Phantom


def phantom_summary(phantom: Phantom) -> dict:
    """Organ volumes (mL) and masses (g), total activity (MBq) per time point and the lesion table.

    Returns
    -------
    dict
        ``phantom_type``, ``grid`` (shape, spacing_mm, origin_mm), ``time_points_h``,
        ``total_activity_mbq`` (list, one per time point), ``organs`` ({name: {"volume_ml", "mass_g",
        "mean_bq_per_ml" (list per time point)}}), ``lesions`` (list of truth rows, reduced to the main
        fields), ``patient`` (weight_kg, height_cm, injected_mbq, seed).
    """
    g = phantom.grid
    vox = g.voxel_volume_ml
    counts = np.bincount(phantom.labels.ravel().astype(np.int64), minlength=max(phantom.label_names, default=0) + 1)
    mass = np.bincount(phantom.labels.ravel().astype(np.int64), weights=phantom.density_g_cm3.ravel().astype(np.float64),
                       minlength=counts.size)
    organs = {}
    for i, name in sorted(phantom.label_names.items()):
        if i == 0 or i >= counts.size or counts[i] == 0:
            continue
        act = [float(np.bincount(phantom.labels.ravel().astype(np.int64), weights=frame.ravel().astype(np.float64),
                                 minlength=counts.size)[i] / counts[i]) for frame in phantom.activity_bq_per_ml]
        organs[name] = {"volume_ml": float(counts[i] * vox), "mass_g": float(mass[i] * vox),
                        "mean_bq_per_ml": act}
    keys = ("id", "type", "side", "location_mm", "diameter_mm", "volume_ml", "ihc", "fish", "her2_positive",
            "in_fov", "suv_mean", "suv_max", "suv_peak", "suv_intrinsic_mean", "concentration_bq_per_ml")
    lesions = [{k: row[k] for k in keys if k in row} for row in phantom.truth]
    m = phantom.meta
    return {"phantom_type": m.get("phantom_type"),
            "grid": {"shape": list(g.shape), "spacing_mm": list(g.spacing_mm), "origin_mm": list(g.origin_mm)},
            "time_points_h": list(phantom.time_points_h),
            "total_activity_mbq": [phantom.total_activity_bq(k) / 1e6 for k in range(len(phantom.time_points_h))],
            "organs": organs, "lesions": lesions,
            "patient": {k: m.get(k) for k in ("patient_id", "weight_kg", "height_cm", "injected_mbq", "seed")}}
