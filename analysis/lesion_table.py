"""Lesion table: measured uptake joined with the phantom's truth rows.

Produces the rows that :func:`her2sim.analysis.threshold.write_lesion_csv` writes
and ``python -m her2sim.analysis.threshold`` reads: every lesion of the truth has a row, measured or
with the reason it is not (:data:`her2sim.analysis.lesion_truth.UNMEASURED_REASONS`).
The truth rows are plain dicts (``Phantom.truth``); the keys used are ``id``,
``type``, ``ihc``, ``her2_positive``, ``diameter_mm``, ``volume_ml`` and
``suv_intrinsic_mean`` (one value per time point) - no phantom code is imported.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import ConfigError, DataError, check_int, check_range


#: VOI methods for SUVmax / SUVmean (``analysis.voi``)
VOI_METHODS = ("lesion", "threshold", "ct")


def lesion_rows(suv_array, grid, lesions: dict, truth: list, patient_id, *, time_index: int = 0,
                voi: str = "lesion", margin_mm: float = 0.0, allowed=None, ct_hu=None,
                threshold_fraction: float = 0.42, iso_fraction: float = 0.41,
                exclude_types=("inflammation",)) -> list:
    """One table row per lesion of ``truth``: measured uptake, the three truths, or why it is unmeasured.

    Parameters
    ----------
    suv_array : array (z, y, x)
        SUV image (use :func:`her2sim.analysis.suv.suv_image` on a Bq/mL reconstruction).
    grid : Grid
        Its geometry.
    lesions : dict of int -> LesionOnGrid
        The truth's lesions on this grid (:func:`her2sim.analysis.lesion_truth.lesions_on_grid`).
    truth : list of dict
        Phantom truth rows (``id``, ``her2_positive``, ``ihc``, ``suv_intrinsic_mean``, ...).
    patient_id : str or int
    time_index : int
        Which time point of the per-time truth lists applies.
    voi : {'lesion', 'threshold', 'ct'}
        SUVmean VOI: ``lesion`` - the lesion's voxels on the image grid; ``threshold`` - the connected
        ``threshold_fraction`` x local-maximum isocontour in the search region (a clinician's 40-50 %
        VOI); ``ct`` - the lesion as segmented on the CT (:func:`her2sim.analysis.lesion_truth.ct_voi`).
        SUVmax and SUVpeak are always searched in the search region.
    margin_mm : float
        The search region is the lesion VOI grown by ``margin_mm`` into ``allowed`` voxels only
        (:func:`her2sim.analysis.lesion_truth.search_region`): never into another organ or lesion.
    allowed : bool array (z, y, x), optional
        Voxels a margin may enter (default: everywhere except other lesions).
    ct_hu : array (z, y, x), optional
        CT on the image grid (HU), required for ``voi='ct'``.
    threshold_fraction : float
        Isocontour fraction for ``voi='threshold'`` (0.40-0.50).
    iso_fraction : float
        Fraction of the ``suvmean_iso`` column (41 %, always reported).
    exclude_types : tuple of str
        Truth ``type`` values left out (inflammation has no HER2 status).

    Returns
    -------
    list of dict
        ``patient_id, lesion_id, her2_positive, ihc, suvmax, suvmean, suvpeak, suvmean_iso, voi, measured,
        unmeasured_reason, true_suv_intrinsic, true_suvmean_pv, true_suvmax_pv, diameter_mm, volume_ml,
        type``. An unmeasured lesion has ``measured = False``, its reason, and no measured values.
    """
    from .lesion_truth import ct_voi, search_region
    from .voi import suv_max, suv_mean, suv_peak, threshold_voi, voi_volume_ml

    ti = check_int("time_index", time_index, 0, 1000)
    if voi not in VOI_METHODS:
        raise ConfigError(f"analysis.voi = {voi!r} is not one of {list(VOI_METHODS)}")
    check_range("threshold_fraction", threshold_fraction, 0.40, 0.50)
    if voi == "ct" and ct_hu is None:
        raise ConfigError("analysis.voi = 'ct' needs the CT on the image grid (ct_hu)")
    img = np.asarray(suv_array)
    grid.check_array("SUV image", img)
    sp = grid.spacing_mm
    all_vois = {lid: L.voi for lid, L in lesions.items() if L.voi is not None}
    rows = []
    for t in truth:
        for key in ("id", "her2_positive", "ihc"):
            if key not in t:
                raise DataError(f"truth row {t.get('id', '?')} lacks the key {key!r}")
        if t.get("type") in exclude_types:
            continue
        if t["ihc"] is None:
            raise DataError(f"truth row {t['id']}: ihc is None; exclude its type ({t.get('type')!r}) or fix the truth")
        lid = int(t["id"])
        L = lesions.get(lid)
        if L is None:
            raise DataError(f"lesion {lid} of the truth is missing from the lesions on the grid")
        row = {"patient_id": patient_id, "lesion_id": lid, "her2_positive": bool(t["her2_positive"]),
               "ihc": ihc_score(t["ihc"]), "suvmax": None, "suvmean": None, "suvpeak": None, "suvmean_iso": None,
               "voi": voi, "measured": False, "unmeasured_reason": L.reason,
               "true_suv_intrinsic": _at_time(t.get("suv_intrinsic_mean"), ti), "true_suvmean_pv": None,
               "true_suvmax_pv": None, "voi_voxels": 0, "diameter_mm": t.get("diameter_mm"),
               "volume_ml": t.get("volume_ml"), "type": t.get("type")}
        if L.reason is None:
            others = np.zeros(img.shape, bool)
            for j, v in all_vois.items():
                if j != lid:
                    others |= v
            ok = ~others if allowed is None else (np.asarray(allowed, bool) & ~others)
            search = search_region(L.voi, sp, margin_mm, ok)
            if voi == "lesion":
                vm = L.voi
            elif voi == "threshold":
                vm = threshold_voi(img, search, fraction_of_max=threshold_fraction)
            else:
                vm = ct_voi(ct_hu, L.voi, search_region(L.voi, sp, max(margin_mm, 2.0 * max(sp)), ok))
                if vm is None:
                    row["unmeasured_reason"] = "not_visible_on_ct"
            if row["unmeasured_reason"] is None:
                iso = threshold_voi(img, search, fraction_of_max=iso_fraction)
                mean_pv, max_pv = L.true_pv(ti)
                row.update({"suvmax": suv_max(img, search), "suvmean": suv_mean(img, vm),
                            "suvpeak": suv_peak(img, grid, search), "suvmean_iso": suv_mean(img, iso),
                            "measured": True, "true_suvmean_pv": mean_pv, "true_suvmax_pv": max_pv,
                            "voi_voxels": int(np.count_nonzero(vm)), "voi_volume_ml": voi_volume_ml(vm, grid)})
        rows.append(row)
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


def background_ring(voi, body, other_lesions, spacing_mm, *, inner_mm: float = 10.0,
                    outer_mm: float = 25.0) -> np.ndarray:
    """Background VOI of a lesion: body voxels ``inner_mm``-``outer_mm`` around its VOI, no lesion voxels.

    Parameters
    ----------
    voi, body, other_lesions : bool arrays (z, y, x)
        The lesion VOI, the body, and every lesion's VOI (excluded from the ring).
    spacing_mm : sequence of float
        Voxel size (z, y, x); the ring is grown in whole voxels of the transaxial size.
    """
    check_range("inner_mm", inner_mm, 0.0, 200.0)
    check_range("outer_mm", outer_mm, inner_mm, 400.0)
    from scipy import ndimage
    r1 = max(1, int(round(inner_mm / float(spacing_mm[1]))))
    r2 = max(r1 + 1, int(round(outer_mm / float(spacing_mm[1]))))
    v = np.asarray(voi, bool)
    ring = ndimage.binary_dilation(v, iterations=r2) & ~ndimage.binary_dilation(v, iterations=r1)
    return ring & np.asarray(body, bool) & ~np.asarray(other_lesions, bool)


def add_reading(row: dict, suv_array, ring, *, rose_k: float, lbm_kg: float, weight_kg: float) -> dict:
    """Complete a measured lesion row with what a reader derives from it (in place; returns ``row``).

    * ``background_suv``, ``lbr`` / ``tbr`` (SUVmean over the ring mean), ``cnr`` and ``visual_positive``
      (Rose criterion, :func:`her2sim.analysis.threshold.visual_read`) when the ring holds >= 3 voxels;
    * ``recovery`` = SUVmean / ``true_suv_intrinsic``;
    * ``sul`` = SUVmax x lean body mass / weight (SUL, Wahl et al. PERCIST, J Nucl Med 50:122S, 2009).
    """
    from .threshold import visual_read
    ring = np.asarray(ring, bool)
    if ring.sum() >= 3:
        bg = np.asarray(suv_array)[ring]
        vr = visual_read(row["suvmean"], float(bg.mean()), float(bg.std(ddof=1)), k=rose_k)
        row.update({"background_suv": float(bg.mean()), "lbr": float(vr["ratio"]), "cnr": float(vr["cnr"]),
                    "visual_positive": bool(vr["positive"]), "tbr": float(vr["ratio"])})
    if row.get("true_suv_intrinsic"):
        row["recovery"] = row["suvmean"] / row["true_suv_intrinsic"]
    row["sul"] = row["suvmax"] * float(lbm_kg) / float(weight_kg)
    return row
