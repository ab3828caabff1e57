"""Lesion table: measured uptake joined with the phantom's truth rows.

Produces the rows that :func:`her2sim.analysis.threshold.write_lesion_csv` writes
and ``python -m her2sim.analysis.threshold`` reads (``patient_id, lesion_id,
her2_positive, ihc, suvmax, suvmean, suvpeak, true_suv`` plus size and type).
The truth rows are plain dicts (``Phantom.truth``); the keys used are ``id``,
``type``, ``ihc``, ``her2_positive``, ``diameter_mm``, ``volume_ml``, ``in_fov`` and,
for the true SUV, ``suv_mean`` (one value per time point) - no phantom code is imported.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import DataError, check_int

from .voi import measure_lesions


def lesion_rows(suv_array, grid_or_spacing, lesion_ids_map, truth: list, patient_id, *, time_index: int = 0,
                margin_mm: float = 0.0, iso_fraction: float = 0.41, exclude_types=("inflammation",)) -> list:
    """Measure every lesion of ``truth`` in an SUV image and return one table row per lesion.

    Parameters
    ----------
    suv_array : array (z, y, x)
        SUV image (use :func:`her2sim.analysis.suv.suv_image` on a Bq/mL reconstruction).
    grid_or_spacing : Grid or spacing (mm)
    lesion_ids_map : int array (z, y, x)
        Lesion label map on the image grid (0 = no lesion), e.g. the phantom's
        ``lesion_ids`` resampled with nearest neighbour.
    truth : list of dict
        Phantom truth rows.
    patient_id : str or int
    time_index : int
        Which time point of the truth's per-time lists is the true SUV.
    margin_mm, iso_fraction : float
        See :func:`her2sim.analysis.voi.measure_lesions`.
    exclude_types : tuple of str
        Truth ``type`` values left out (inflammation has no HER2 status).

    Returns
    -------
    list of dict
        ``patient_id, lesion_id, her2_positive, ihc, suvmax, suvmean, suvpeak,
        suvmean_iso, true_suv, diameter_mm, volume_ml, type``. Lesions outside the
        field of view or absent from ``lesion_ids_map`` are skipped.
    """
    ti = check_int("time_index", time_index, 0, 1000)
    lab = np.asarray(lesion_ids_map)
    present = set(int(v) for v in np.unique(lab) if v != 0)
    rows = []
    for t in truth:
        for key in ("id", "her2_positive", "ihc"):
            if key not in t:
                raise DataError(f"truth row {t.get('id', '?')} lacks the key {key!r}")
        if t.get("type") in exclude_types or not t.get("in_fov", True) or int(t["id"]) not in present:
            continue
        if t["ihc"] is None:
            raise DataError(f"truth row {t['id']}: ihc is None; exclude its type ({t.get('type')!r}) or fix the truth")
        m = measure_lesions(suv_array, grid_or_spacing, lab, lesion_ids=[int(t["id"])], margin_mm=margin_mm,
                            iso_fraction=iso_fraction)[0]
        rows.append({"patient_id": patient_id, "lesion_id": int(t["id"]), "her2_positive": bool(t["her2_positive"]),
                     "ihc": ihc_score(t["ihc"]), "suvmax": m["suvmax"], "suvmean": m["suvmean"],
                     "suvpeak": m["suvpeak"], "suvmean_iso": m["suvmean_iso"],
                     "true_suv": _at_time(t.get("suv_mean"), ti), "true_suvmax": _at_time(t.get("suv_max"), ti),
                     "true_suvpeak": _at_time(t.get("suv_peak"), ti),
                     "true_suv_intrinsic": _at_time(t.get("suv_intrinsic_mean"), ti),
                     "diameter_mm": t.get("diameter_mm"), "volume_ml": t.get("volume_ml"), "type": t.get("type")})
    return rows


def ihc_score(ihc) -> int:
    """IHC score as an integer 0-3 from ``0``/``1+``/``2+``/``3+`` (strings or numbers)."""
    text = str(ihc).strip().rstrip("+")
    try:
        v = int(float(text))
    except ValueError:
        raise DataError(f"ihc = {ihc!r} is not one of 0, 1+, 2+, 3+") from None
    if not 0 <= v <= 3:
        raise DataError(f"ihc = {ihc!r} is not one of 0, 1+, 2+, 3+")
    return v


def _at_time(values, ti: int):
    """The value of a per-time-point truth list at index ``ti`` (scalars pass through)."""
    if isinstance(values, (list, tuple)):
        return float(values[ti]) if len(values) > ti and values[ti] is not None else None
    if isinstance(values, (int, float)):
        return float(values)
    return None
