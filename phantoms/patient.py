"""Assemble a virtual patient: torso anatomy + organ biodistribution + lesions -> :class:`Phantom`.

Patient specification (dict; defaults in brackets):
``weight_kg`` [70], ``height_cm`` [160], ``injected_mbq`` [458, the first-in-human mean],
``time_points_h`` [(1, 2)], ``breast_shape`` [supine], ``breast_volume_ml`` [300 mL per breast; or
``{"left": mL, "right": mL}``, or a size class ``small`` / ``medium`` / ``large``,
:mod:`her2sim.phantoms.breast_statistics`], ``breast_density`` [B; BI-RADS A-D],
``body_z_at_grid_center_mm`` [-60], ``ct_noise_hu`` [0], ``suv`` (organ SUV overrides),
``bio_ratio_per_h`` (per-organ SUV(2 h)/SUV(1 h) overrides; key ``tumour`` for lesions),
``ihc_suv`` (IHC -> SUV overrides), ``lesions`` (list of lesion specs, :mod:`her2sim.phantoms.lesions`),
``allow_overlap`` [False], ``anatomy`` [v1 here, the first analytic torso, fast; studies default to ``v2``, the
anatomy of :mod:`her2sim.phantoms.torso_v2`: sub-voxel edges, shoulder girdle, four-chamber heart, breasts from
published statistics; both extents],
``extent`` [torso; ``whole_body`` paints head to mid-thigh with pelvis, bladder and
thighs, :mod:`her2sim.phantoms.whole_body`, and then centres the body on the grid unless
``body_z_at_grid_center_mm`` is given], ``urine_fraction`` (whole body: {time_h: fraction of the injected
activity in the bladder}, default :data:`her2sim.phantoms.whole_body.URINE_FRACTION`), plus free-form cohort fields (``id``, ``group``...) kept in ``meta.config``.

Lesion activity is a partial-volume mixture: ``SUV = (1 - f) SUV_organ + f SUV_lesion`` with the lesion's
supersampled voxel fraction ``f`` (inflammation keeps ``SUV_organ``: no NM-02 uptake). The truth table
reports, per lesion and time point, the true mean / max / peak (1 mL sphere, PERCIST) SUV and Bq/mL over
the lesion's voxels (``lesion_ids == id``: fraction >= 0.5, or the single fullest voxel of a lesion
smaller than a voxel), computed from the final activity map (so
boundary voxels include the surrounding tissue), and ``suv_intrinsic_mean``: the fraction-weighted mean of
the lesion's own uptake (no partial-volume mixing with its surroundings).
"""
from __future__ import annotations

import numpy as np

from her2sim.core.containers import Phantom
from her2sim.core.errors import ConfigError, check_range
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_IDS, MATERIAL_NAMES, get_material

from . import biodistribution as bio
from .clinical_grid import clinical_grid
from .contours import body_radius_mm
from .lesions import (LESION_HU, LESION_MATERIAL, class_suv, lesion_statistics, peak_kernel, place_lesion,
                      validate_lesion_spec)
from . import whole_body as wbm
from .torso import torso_anatomy
from .torso_v2 import check_anatomy, torso_anatomy_v2

PATIENT_DEFAULTS = {"weight_kg": 70.0, "height_cm": 160.0, "injected_mbq": 458.0, "time_points_h": (1.0, 2.0),
                    "breast_shape": "supine", "breast_volume_ml": 300.0, "breast_density": "B",
                    "body_z_at_grid_center_mm": -60.0, "ct_noise_hu": 0.0, "allow_overlap": False}
#: FDG SUVmax range of tumours in the seed trial (Zhao 2024): 2.3-45.7; inflammation FDG-avid (assumed SUV 6).
FDG_TUMOUR_RANGE = (2.3, 45.7)
FDG_INFLAMMATION_SUV = 6.0
CONTOUR_ANGLES_DEG = tuple(float(a) for a in range(0, 360, 3))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def patient_phantom(grid: Grid | None = None, spec: dict | None = None, seed: int = 0) -> Phantom:
    """Build one virtual patient.

    Parameters
    ----------
    grid : Grid, optional
        Voxel grid (default: the clinical 128^3 x 4.42 mm grid; any grid works).
    spec : dict
        Patient specification (module docstring).
    seed : int
        Seeds the glandular texture, lesion shapes and heterogeneity fields, CT noise and FDG draws.

    Returns
    -------
    Phantom
        Activity (Bq/mL) per time point, CT, labels, materials, density, lesion ids and truth table.
    """
    grid = clinical_grid(grid)
    s = dict(PATIENT_DEFAULTS)
    s.update(spec or {})
    rng = np.random.default_rng(seed)
    tp = tuple(check_range(f"time_points_h[{i}]", t, 0.0, 100.0) for i, t in enumerate(s["time_points_h"]))
    if not tp:
        raise ConfigError("time_points_h must contain at least one time (h)")
    injected = check_range("injected_mbq", s["injected_mbq"], 0.0, 1e5, lo_open=True)
    extent = wbm.check_extent(s.get("extent", "torso"))
    if extent == "whole_body" and "body_z_at_grid_center_mm" not in (spec or {}):
        s["body_z_at_grid_center_mm"] = wbm.whole_body_centre_mm(check_range("height_cm", s["height_cm"], 120.0, 210.0))
    anatomy = check_anatomy(s.get("anatomy", "v1"))
    build = torso_anatomy_v2 if anatomy == "v2" else torso_anatomy
    anat = build(grid, s["weight_kg"], s["height_cm"], s["breast_shape"], s["breast_volume_ml"],
                 s["breast_density"], s["body_z_at_grid_center_mm"], seed=int(rng.integers(2 ** 31)),
                 ct_noise_hu=0.0, extent=extent)
    w = anat.params["weight_kg"]
    tv = anat.volume
    suv = bio.organ_suv_maps(tv.labels, tv.label_names, tp, s.get("suv"), s.get("bio_ratio_per_h"))
    if anat.pv_organs:
        _partial_volume_organs(anat, suv, tp, s, w)
    if anat.fractions is not None:
        _mix_boundary_fractions(anat, suv, tp, s)
        if "bladder" in anat.params["label_volume_ml"]:
            _v2_bladder(anat, suv, tp, s, w)
    ratios = bio.merged_table(bio.DEFAULT_BIO_RATIO_PER_H, s.get("bio_ratio_per_h"), "bio_ratio_per_h")
    body_before = tv.labels > 0

    specs = [validate_lesion_spec(ls, i) for i, ls in enumerate(s.get("lesions") or [])]
    lesion_ids = np.zeros(grid.shape, np.int16)
    total_frac = np.zeros(grid.shape, np.float32)
    owner = np.zeros(grid.shape, np.int16)
    placed = []
    for i, ls in enumerate(specs, start=1):
        pl = place_lesion(anat, ls, i, rng)
        f = pl.fraction
        vol_in_grid = float(f.sum(dtype=np.float64))
        if vol_in_grid > 0:
            in_body = float(f[body_before].sum(dtype=np.float64))
            if in_body < 0.9 * vol_in_grid:
                raise ConfigError(f"lesions[{i - 1}].location_mm = {[round(v, 1) for v in pl.centre_mm]}: only "
                                  f"{100 * in_body / vol_in_grid:.0f} % of the lesion lies inside the body "
                                  "(>= 90 % required)")
            clash = (f > 0) & (total_frac + f > 1.0 + 1e-3)
            if clash.any() and not s["allow_overlap"]:
                other = int(np.bincount(owner[clash]).argmax())
                raise ConfigError(f"lesions[{i - 1}] overlaps lesions[{other - 1}]; move or shrink one of them "
                                  "or set allow_overlap = true")
            total_frac = np.minimum(total_frac + f, 1.0)
            owner[f >= 0.5] = i
        placed.append(pl)

    # mix activity (SUV), CT, density, materials and labels; keep each lesion's own share (partial-volume truth)
    lesion_fraction = np.zeros(grid.shape, np.float32)
    lesion_owner = np.zeros(grid.shape, np.int16)
    lesion_own_suv = np.zeros((len(tp),) + grid.shape, np.float32)
    for pl in placed:
        f = pl.fraction
        if not np.any(f > 0):
            continue
        ls = pl.spec
        if ls["type"] != "inflammation":
            base = class_suv(ls, s.get("ihc_suv"))
            for k, t in enumerate(tp):
                lesion_suv = base * pl.uptake_factor * bio.time_factor(ratios.get("tumour", 1.0), t)
                suv[k] = (1.0 - f) * suv[k] + f * lesion_suv
                lesion_own_suv[k] = (1.0 - f) * lesion_own_suv[k] + f * lesion_suv
        mine = f > lesion_fraction
        lesion_owner[mine] = pl.id
        lesion_fraction[:] = np.minimum(np.maximum(lesion_fraction, f) if s["allow_overlap"] else lesion_fraction + f,
                                        1.0)
        mat = get_material(LESION_MATERIAL[ls["type"]])
        tv.ct_hu[:] = (1.0 - f) * tv.ct_hu + f * np.float32(LESION_HU[ls["type"]])
        tv.density_g_cm3[:] = (1.0 - f) * tv.density_g_cm3 + f * np.float32(mat.density_g_cm3)
        m = f >= 0.5
        if not m.any():          # lesion smaller than a voxel: mark its fullest voxel
            m = np.zeros(grid.shape, bool)
            m[np.unravel_index(int(np.argmax(f)), grid.shape)] = True
        tv.labels[m] = tv.label_id("inflammation" if ls["type"] == "inflammation" else "lesion")
        tv.material_ids[m] = MATERIAL_IDS[mat.name]
        lesion_ids[m] = pl.id

    noise = check_range("ct_noise_hu", s["ct_noise_hu"], 0.0, 500.0)
    if noise > 0:
        tv.ct_hu += rng.normal(0.0, noise, grid.shape).astype(np.float32) * (tv.labels > 0)
    activity = bio.suv_frames_to_activity(suv, tp, injected, w)

    # truth table
    kern = peak_kernel(grid)
    vox = grid.voxel_volume_ml
    truth = []
    for pl in placed:
        ls = pl.spec
        m = lesion_ids == pl.id
        row = {"id": pl.id, "type": ls["type"], "side": ls.get("side"), "site": ls.get("site"),
               "clock": ls.get("clock"), "location_mm": list(pl.centre_mm), "diameter_mm": ls["diameter_mm"],
               "shape": ls["shape"], "volume_ml": float(pl.fraction.sum(dtype=np.float64) * vox),
               "nominal_volume_ml": float(4.0 / 3.0 * np.pi * pl.radius_mm ** 3 / 1000.0),
               "n_voxels": int(m.sum()), "in_fov": bool(grid.contains_world(np.asarray(pl.centre_mm))),
               "ihc": ls["ihc"], "fish": ls["fish"], "her2_positive": bool(ls["her2_positive"]),
               "class_suv": class_suv(ls, s.get("ihc_suv")), "patient_factor": ls["patient_factor"],
               "treatment_factor": ls["treatment_factor"], "heterogeneity": ls["heterogeneity"],
               "shape_params": pl.extra, "time_points_h": list(tp)}
        if ls.get("fdg_suv") is not None:
            row["fdg_suv"] = ls["fdg_suv"]
        elif ls["type"] == "inflammation":
            row["fdg_suv"] = FDG_INFLAMMATION_SUV
        else:
            lo, hi = np.log(FDG_TUMOUR_RANGE[0]), np.log(FDG_TUMOUR_RANGE[1])
            row["fdg_suv"] = float(np.exp(rng.uniform(lo, hi)))
        for key in ("mean", "max", "peak"):
            row[f"suv_{key}"] = []
            row[f"bq_per_ml_{key}"] = []
        f = pl.fraction
        fsum = float(f.sum(dtype=np.float64))
        row["suv_intrinsic_mean"] = []
        for k, t in enumerate(tp):
            if ls["type"] == "inflammation" or fsum == 0:
                row["suv_intrinsic_mean"].append(None)
            else:
                u = class_suv(ls, s.get("ihc_suv")) * pl.uptake_factor * bio.time_factor(ratios.get("tumour", 1.0), t)
                row["suv_intrinsic_mean"].append(float((f * u).sum(dtype=np.float64) / fsum))
            st = lesion_statistics(suv[k], m, kern)
            scale = float(bio.suv_to_bq_per_ml(1.0, injected, w, t))
            for key in ("mean", "max", "peak"):
                row[f"suv_{key}"].append(st[key])
                row[f"bq_per_ml_{key}"].append(None if st[key] is None else st[key] * scale)
        truth.append(_jsonable(row))

    config = _jsonable({k: v for k, v in s.items()})
    meta = {"phantom_type": "female_whole_body" if extent == "whole_body" else "female_torso", "weight_kg": w, "height_cm": anat.params["height_cm"],
            "injected_mbq": injected, "seed": int(seed), "config": config, "anatomy": _jsonable(anat.params),
            "landmarks": _jsonable(anat.landmarks)}
    ph = Phantom(grid=grid, activity_bq_per_ml=activity, time_points_h=tp, ct_hu=tv.ct_hu, labels=tv.labels,
                 material_ids=tv.material_ids, density_g_cm3=tv.density_g_cm3, label_names=tv.label_names,
                 material_names=list(MATERIAL_NAMES), truth=truth, lesion_ids=lesion_ids, meta=meta,
                 lesion_fraction=lesion_fraction, lesion_owner=lesion_owner, lesion_own_suv=lesion_own_suv)
    axis = [float(grid.center_mm[2]), float(grid.center_mm[1])]
    ph.meta["contour"] = {"axis_xy_mm": axis, "angles_deg": list(CONTOUR_ANGLES_DEG),
                          "body_radius_mm": [float(v) for v in body_radius_mm(ph, CONTOUR_ANGLES_DEG, axis)]}
    return ph


def _partial_volume_organs(anat, suv: np.ndarray, tp, s: dict, weight_kg: float) -> None:
    """Whole-body organs drawn with partial-volume fractions: organ SUV per time point, boundary mixing.

    The bladder content takes :func:`her2sim.phantoms.whole_body.bladder_suv` from the excreted fraction, the
    patient's weight and the bladder volume (sum of its fractions), unless ``suv.bladder`` is given. In every
    voxel of an organ's box with fraction ``0 < f < 1`` whose final label is the organ or the tissue it was
    painted over, the SUV becomes ``f SUV_organ + (1 - f) SUV_under`` (:mod:`her2sim.phantoms.fraction_mix`).
    """
    tv = anat.volume
    tab = bio.merged_table(bio.DEFAULT_SUV, s.get("suv"), "suv")
    rat = bio.merged_table(bio.DEFAULT_BIO_RATIO_PER_H, s.get("bio_ratio_per_h"), "bio_ratio_per_h")
    urine = _urine_table(s)
    user_bladder = "bladder" in (s.get("suv") or {})
    vox = tv.grid.voxel_volume_ml
    for org in anat.pv_organs:
        name, sl, f, under = org["label"], org["slices"], org["fraction"], org["under"]
        lid = tv.label_id(name)
        if name == "bladder" and not user_bladder:
            vol = float(f.sum(dtype=np.float64) * vox)
            organ = [wbm.bladder_suv(t, weight_kg, vol, urine) for t in tp]
        else:
            organ = [tab[name] * bio.time_factor(rat.get(name, 1.0), t) for t in tp]
        under_suv = bio.organ_suv_maps(under, tv.label_names, tp, s.get("suv"), s.get("bio_ratio_per_h"))
        final = tv.labels[sl]
        mine = final == lid
        mix = ((f > 0) & (f < 1)) & (mine | (final == under))
        for k in range(len(tp)):
            box = suv[k][sl]
            box[mine] = organ[k]
            box[mix] = f[mix] * organ[k] + (1.0 - f[mix]) * under_suv[k][mix]


def _urine_table(s: dict) -> dict | None:
    """The patient spec's ``urine_fraction`` table {time_h: fraction of the injected activity in the bladder}
    checked (None: :data:`her2sim.phantoms.whole_body.URINE_FRACTION`)."""
    urine = s.get("urine_fraction")
    if urine is not None:
        if not isinstance(urine, dict) or not urine:
            raise ConfigError(f"urine_fraction = {urine!r:.60} must be a table {{time_h: fraction of the injected "
                              "activity in the bladder, 0-1}}")
        urine = {check_range(f"urine_fraction key {k!r} (time_h)", k, 0.0, 100.0): v for k, v in urine.items()}
    return urine


def _v2_bladder(anat, suv: np.ndarray, tp, s: dict, weight_kg: float) -> None:
    """Anatomy v2, whole-body extent: the bladder content takes :func:`her2sim.phantoms.whole_body.bladder_suv`.

    The SUV is ``f(t) W / V`` (f the excreted fraction of the injected activity, ``urine_fraction`` or
    :data:`~her2sim.phantoms.whole_body.URINE_FRACTION`; W the weight in kg; V the bladder's analytic volume in
    mL, ``label_volume_ml``), as v1 does, unless ``suv.bladder`` is given. The table value that
    :func:`_mix_boundary_fractions` and the label map used is replaced in the bladder's interior voxels and, in
    proportion to the bladder's fraction, in its boundary voxels, so the bladder holds ``f(t)`` of the injected
    activity (decay-corrected) whatever the grid.
    """
    if "bladder" in (s.get("suv") or {}):
        return
    tv = anat.volume
    urine = _urine_table(s)
    vol = anat.params["label_volume_ml"]["bladder"]
    lid = tv.label_id("bladder")
    fr = anat.fractions
    sel = fr["label"] == lid
    bvox, bfrac = fr["voxel"][sel], fr["fraction"][sel].astype(np.float64)
    is_b = np.zeros(tv.labels.size, bool)
    is_b[fr["voxel"]] = True
    interior = (tv.labels.ravel() == lid) & ~is_b
    names = dict(tv.label_names)
    for k, t in enumerate(tp):
        table = bio.organ_suv_maps(np.array([[[lid]]], np.int16), names, (t,), s.get("suv"),
                                   s.get("bio_ratio_per_h"))[0, 0, 0, 0]
        delta = wbm.bladder_suv(t, weight_kg, vol, urine) - float(table)
        flat = suv[k].ravel()
        flat[interior] += np.float32(delta)
        np.add.at(flat, bvox, (bfrac * delta).astype(np.float32))


def _mix_boundary_fractions(anat, suv: np.ndarray, tp, s: dict) -> None:
    """Anatomy v2: every boundary voxel's SUV is ``sum_s f_s SUV_s`` over its tissues (air: 0).

    ``anat.fractions`` holds the sub-voxel composition (:mod:`her2sim.phantoms.torso_v2`), so each tissue's
    activity is its SUV times its analytic volume, whatever the grid.
    """
    fr = anat.fractions
    tv = anat.volume
    if fr["voxel"].size == 0:
        return
    uv, inv = np.unique(fr["voxel"], return_inverse=True)
    lut_labels = np.arange(max(tv.label_names) + 1, dtype=np.int16)
    names = {k: v for k, v in tv.label_names.items()}
    for k, t in enumerate(tp):
        lut = bio.organ_suv_maps(lut_labels[None, None, :], names, (t,), s.get("suv"), s.get("bio_ratio_per_h"))[0, 0, 0]
        vals = np.bincount(inv, weights=fr["fraction"].astype(np.float64) * lut[fr["label"]].astype(np.float64))
        suv[k].ravel()[uv] = vals.astype(np.float32)


def torso_phantom(grid: Grid | None = None, weight_kg: float = 70.0, height_cm: float = 160.0, injected_mbq: float = 458.0,
                  time_points_h=(1.0, 2.0), seed: int = 0, **options) -> Phantom:
    """Lesion-free female torso with the default NM-02 biodistribution (see :func:`patient_phantom`)."""
    spec = dict(options)
    spec.update({"weight_kg": weight_kg, "height_cm": height_cm, "injected_mbq": injected_mbq,
                 "time_points_h": tuple(time_points_h), "lesions": spec.get("lesions", [])})
    return patient_phantom(grid, spec, seed)
