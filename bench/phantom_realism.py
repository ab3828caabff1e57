"""The digital patient against outside numbers: organ masses, body size, grid consistency, build time.

Builds the first patient the ``demo`` cohort draws (seed 2024) as the ICRP 89 reference female: her height,
weight and breast volume (163 cm, 60 kg, 250 mL per breast: organ sizes scale with height, so masses compare
like for like) and prints
(``--json``: one object):

* ``organ_mass_g`` and ``organ_mass_rel_err`` - mass (density x voxel volume over the organ's labels, 4.42 mm
  grid) of every modelled organ that ICRP Publication 89 tabulates for the reference adult female (liver 1400 g,
  kidneys 275, spleen 130, lungs 950, heart wall 250, thyroid 17, breasts 500 for both; ICRP 89, Ann ICRP 32,
  2002, table 2.8), as (mass - reference) / reference; ``organ_mass_within_10pct`` the organs that are.
  The organs of the whole-body extent (brain 1300 g, salivary glands 70 g, bladder content 200 g; see
  :mod:`her2sim.phantoms.whole_body`) are measured on the same patient built with ``extent = "whole_body"``
  (``organ_mass_source`` says which build each mass comes from); the salivary glands' reference includes the
  ~10 g of sublingual glands, which are not modelled;
* ``breast_volume_ml`` - each breast (adipose + glandular labels), against ICRP 89's 250 g per breast at
  ~1 g/mL (the reference this project cites today; breast-CT size classes are issue 17's to add);
* ``body_dims_mm`` - the body outline where Heinz et al. (J Stat Educ 11(2), 2003; 260 women) measure:
  ``chest_depth`` (AP in the midline at the nipple level), ``chest_diameter`` (lateral at the nipple level),
  ``chest_girth`` (perimeter just above the breasts), ``waist_girth`` (smallest perimeter over the liver and
  kidneys), each with ``phantom_mm``, ``reference_mm`` / ``reference_sd_mm`` (their fit for this patient's height
  and weight, :mod:`her2sim.phantoms.anthropometry`), ``rel_err`` and ``z``; the people were measured standing,
  the phantom lies supine (soft tissue spreads laterally a little);
* ``grid_consistency`` - the same patient built at 8.84 and 2.21 mm against 4.42 mm (same field of view):
  total activity ratio at 1 h and each organ's volume ratio (issue 17's targets: activity within 1 %, organs
  within 3 %);
* ``seconds_build_128`` - building the 128^3 x 4.42 mm patient (target <= 30 s), ``seconds_build_whole_body``
  (the whole-body patient at 4.42 mm), and ``seconds``.

``--anatomy v2`` measures the opt-in anatomy of :mod:`her2sim.phantoms.torso_v2` (patient-spec key ``anatomy``;
``v1``, the default, is the published cohort's anatomy and gives exactly the numbers above). For v2, which paints
sub-voxel boundary fractions, organ masses and the grid-consistency volumes are taken from the fractions
(``params.label_mass_g`` / ``label_volume_ml``: what the activity and attenuation maps hold); the label-count
volumes are reported as well (``organ_volume_ratio_labels``: a structure thinner than a voxel, the 1.45 mm skin,
is never a majority and has no label). v2 has no whole-body extent: its brain and salivary glands are measured on
a v2 build with the head at the grid centre (``organ_mass_source`` = ``head``), and the bladder is not modelled.
Every output has ``anatomy``.

Usage: ``python bench/phantom_realism.py [--json] [--no-fine] [--anatomy v1|v2]`` (``--no-fine`` skips the
2.21 mm build, 256^3 voxels, the slowest part).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from her2sim.core.grid import Grid
from her2sim.core.jsonio import print_json
from her2sim.phantoms import build_patient_phantom, generate_cohort
from her2sim.phantoms.anthropometry import female_body_dimensions_mm
from her2sim.phantoms.whole_body import whole_body_grid

#: ICRP Publication 89 (2002) reference adult female organ masses (g); breasts are both together
ICRP89_FEMALE_G = {"liver": 1400.0, "kidneys": 275.0, "spleen": 130.0, "lungs": 950.0, "heart_wall": 250.0,
                   "thyroid": 17.0, "breasts": 500.0}
#: organs of the whole-body extent: ICRP 89 reference female brain 1300 g and salivary glands 70 g; urinary
#: bladder content 200 g (the ICRP 110 reference female voxel phantom, built on ICRP 89)
ICRP89_FEMALE_WHOLE_BODY_G = {"brain": 1300.0, "salivary_glands": 70.0, "bladder_content": 200.0}
ORGAN_LABELS = {"kidneys": ("kidney_cortex", "kidney_medulla"), "breasts": ("breast_adipose", "breast_gland"),
                "bladder_content": ("bladder",)}
FOV_MM = 128 * 4.42


#: ICRP Publication 89 reference adult female: height (cm) and body mass (kg)
ICRP89_FEMALE_HEIGHT_CM, ICRP89_FEMALE_WEIGHT_KG = 163.0, 60.0
#: breast mound volume (mL, each) of the reference female: ICRP 89's 500 g for both at ~1 g/mL
ICRP89_BREAST_ML_EACH = 250.0


def _patient(anatomy: str = "v1"):
    """The demo cohort's first patient (seed 2024) as the ICRP 89 reference female: her height, weight and breast
    volume, so that organ masses compare with the reference masses like for like (organ sizes scale with height;
    the breast volume is a patient parameter, drawn by the cohort)."""
    p = dict(generate_cohort("demo", seed=2024)["patients"][0])
    p.update(height_cm=ICRP89_FEMALE_HEIGHT_CM, weight_kg=ICRP89_FEMALE_WEIGHT_KG, breast_volume_ml=ICRP89_BREAST_ML_EACH)
    if anatomy != "v1":
        p["anatomy"] = anatomy
    return p


def _build(spacing_mm: float, anatomy: str = "v1", **extra):
    n = int(round(FOV_MM / spacing_mm))
    grid = Grid.centered((n, n, n), spacing_mm)
    pat = _patient(anatomy)
    pat.update(extra)
    t0 = time.perf_counter()
    ph = build_patient_phantom(pat, grid, seed=2024)
    return ph, time.perf_counter() - t0


def _build_whole_body(spacing_mm: float = 4.42):
    pat = _patient()
    pat["extent"] = "whole_body"
    grid = whole_body_grid(spacing_mm, pat.get("height_cm", 160.0))
    t0 = time.perf_counter()
    ph = build_patient_phantom(pat, grid, seed=2024)
    return ph, time.perf_counter() - t0


def _ids(ph, names) -> list:
    return [k for k, v in ph.label_names.items() if v in names]


def _organ_mass_g(ph, organ: str) -> float | None:
    ids = _ids(ph, ORGAN_LABELS.get(organ, (organ,)))
    if not ids:
        return None
    m = np.isin(ph.labels, ids)
    return float(ph.density_g_cm3[m].astype(np.float64).sum() * ph.grid.voxel_volume_ml)


def _organ_mass_fractions_g(ph, organ: str) -> float | None:
    """v2: mass from the sub-voxel fractions (``meta.anatomy.label_mass_g``)."""
    masses = (ph.meta.get("anatomy") or {}).get("label_mass_g") or {}
    vals = [masses[n] for n in ORGAN_LABELS.get(organ, (organ,)) if n in masses]
    return float(sum(vals)) if vals else None


def _organ_volumes_ml(ph) -> dict:
    counts = np.bincount(ph.labels.ravel().astype(np.int64))
    return {ph.label_names[k]: float(c * ph.grid.voxel_volume_ml) for k, c in enumerate(counts)
            if c > 0 and k in ph.label_names and ph.label_names[k] not in ("background",)}


def _outline(mask_2d: np.ndarray, spacing_mm: float) -> dict:
    ys, xs = np.nonzero(mask_2d)
    if ys.size == 0:
        return {}
    m = np.pad(np.asarray(mask_2d, bool), 1)
    crossings = int((m[:, 1:] != m[:, :-1]).sum() + (m[1:, :] != m[:-1, :]).sum())
    return {"lateral_mm": float((xs.max() - xs.min() + 1) * spacing_mm),
            "ap_mm": float((ys.max() - ys.min() + 1) * spacing_mm),
            # Cauchy-Crofton with the two grid directions: perimeter ~ pi/4 x spacing x boundary crossings
            "circumference_mm": float(np.pi / 4.0 * spacing_mm * crossings)}


def _slice_z(ph, z_mm: float) -> int:
    return int(np.clip(np.rint((z_mm - ph.grid.axis_mm(0)[0]) / ph.grid.spacing_mm[0]), 0, ph.grid.shape[0] - 1))


def _midline_depth_mm(body_2d: np.ndarray, ph) -> float:
    """AP extent (mm) of the body in the column through the trunk axis (between the breasts)."""
    x = ph.grid.axis_mm(2)
    col = body_2d[:, int(np.argmin(np.abs(x - ph.grid.center_mm[2])))]
    ys = np.flatnonzero(col)
    return float((ys.max() - ys.min() + 1) * ph.grid.spacing_mm[1]) if ys.size else 0.0


def _body_dims(ph, weight_kg: float, height_cm: float) -> dict:
    """Body outline where Heinz et al. (2003) measure women, against their fit for this height and weight.

    ``chest_depth``: AP at the nipple level, in the midline (spine to sternum, breasts excluded);
    ``chest_diameter``: lateral extent at the nipple level; ``chest_girth``: outline perimeter of the first
    slice above the breast tissue; ``waist_girth``: the smallest outline perimeter between the liver dome and
    the lowest slice of the trunk's liver/kidneys (the narrowest part below the rib cage). Each has
    ``phantom_mm``, ``reference_mm`` (fitted mean), ``reference_sd_mm``, ``rel_err`` and ``z``
    ((phantom - reference) / sd).
    """
    body = ph.labels > 0
    names = {v: k for k, v in ph.label_names.items()}
    sp = ph.grid.spacing_mm[1]
    out = {}
    lm = (ph.meta.get("landmarks") or {}).get("breasts") or {}
    nipples = [side["nipple_mm"][0] for side in lm.values() if "nipple_mm" in side]
    breast_ids = _ids(ph, ORGAN_LABELS["breasts"])
    measured = {}
    if nipples and breast_ids:
        zn = _slice_z(ph, float(np.mean(nipples)))
        measured["chest_depth"] = _midline_depth_mm(body[zn], ph)
        measured["chest_diameter"] = _outline(body[zn], sp)["lateral_mm"]
        zb = np.flatnonzero(np.isin(ph.labels, breast_ids).any(axis=(1, 2)))
        z_above = int(zb.max()) + 1
        if z_above < ph.grid.shape[0]:
            measured["chest_girth"] = _outline(body[z_above], sp)["circumference_mm"]
        out["slices"] = {"nipple": zn, "above_breasts": z_above}
    z_abd = np.flatnonzero(np.isin(ph.labels, [names[n] for n in ("liver", "kidney_cortex") if n in names])
                           .any(axis=(1, 2)))
    if z_abd.size:
        perims = {int(z): _outline(body[z], sp).get("circumference_mm", np.inf) for z in z_abd if body[z].any()}
        z_w = min(perims, key=perims.get)
        measured["waist_girth"] = perims[z_w]
        out.setdefault("slices", {})["waist"] = z_w
    ref = female_body_dimensions_mm(height_cm, weight_kg)
    for name, value in measured.items():
        r = ref[name]
        out[name] = {"phantom_mm": round(value, 1), "reference_mm": r["mean_mm"], "reference_sd_mm": r["sd_mm"],
                     "rel_err": round(value / r["mean_mm"] - 1.0, 3),
                     "z": round((value - r["mean_mm"]) / r["sd_mm"], 2), "definition": r["definition"]}
    out["reference"] = ("Heinz et al., J Stat Educ 11(2), 2003 (260 women): OLS fit on height and weight, "
                        f"at {height_cm:g} cm, {weight_kg:g} kg")
    return out


def realism(fine: bool = True, anatomy: str = "v1") -> dict:
    if anatomy == "v2":
        return _realism_v2(fine)
    t0 = time.perf_counter()
    patient = _patient()
    ph, seconds_128 = _build(4.42)
    masses = {o: _organ_mass_g(ph, o) for o in ICRP89_FEMALE_G}
    wb, seconds_wb = _build_whole_body(4.42)
    masses.update({o: _organ_mass_g(wb, o) for o in ICRP89_FEMALE_WHOLE_BODY_G})
    reference = {**ICRP89_FEMALE_G, **ICRP89_FEMALE_WHOLE_BODY_G}
    rel = {o: (None if m is None else round(m / reference[o] - 1.0, 3)) for o, m in masses.items()}
    names = {v: k for k, v in ph.label_names.items()}
    breasts = {}
    x = ph.grid.mesh_mm(np.float32)[2]
    bm = np.isin(ph.labels, _ids(ph, ORGAN_LABELS["breasts"]))
    # LPS: +x is the patient's left
    for side, sel in (("right", np.broadcast_to(x < 0, ph.grid.shape)), ("left", np.broadcast_to(x >= 0, ph.grid.shape))):
        breasts[side] = float((bm & sel).sum() * ph.grid.voxel_volume_ml)
    ref = _organ_volumes_ml(ph)
    act = ph.total_activity_bq(0)
    consistency = {}
    for sp in ((8.84, 2.21) if fine else (8.84,)):
        other, _ = _build(sp)
        vols = _organ_volumes_ml(other)
        consistency[f"{sp:g}mm"] = {
            "total_activity_ratio": round(other.total_activity_bq(0) / act, 4),
            "organ_volume_ratio": {k: round(vols.get(k, 0.0) / v, 3) for k, v in sorted(ref.items()) if v > 5.0}}
    return {"anatomy": "v1", "organ_mass_g": {k: None if v is None else round(v, 1) for k, v in masses.items()},
            "organ_mass_rel_err": rel,
            "organ_mass_within_10pct": sorted(o for o, r in rel.items() if r is not None and abs(r) <= 0.10),
            "organ_reference": "ICRP Publication 89 (2002), reference adult female",
            "organ_reference_g": reference,
            "organ_mass_source": {o: ("whole_body" if o in ICRP89_FEMALE_WHOLE_BODY_G else "torso") for o in masses},
            "breast_volume_ml": {k: round(v, 1) for k, v in breasts.items()},
            "breast_reference_ml_each": ICRP89_BREAST_ML_EACH,
            "body_dims_mm": _body_dims(ph, patient["weight_kg"], patient["height_cm"]), "grid_consistency": consistency,
            "labels_modelled": sorted(names), "labels_modelled_whole_body": sorted(wb.label_names.values()),
            "seconds_build_128": round(seconds_128, 2), "seconds_build_whole_body": round(seconds_wb, 2),
            "seconds": round(time.perf_counter() - t0, 1)}


def _breast_volumes_ml(ph) -> dict:
    x = ph.grid.mesh_mm(np.float32)[2]
    bm = np.isin(ph.labels, _ids(ph, ORGAN_LABELS["breasts"]))
    out = {}
    for side, sel in (("right", np.broadcast_to(x < 0, ph.grid.shape)), ("left", np.broadcast_to(x >= 0, ph.grid.shape))):
        out[side] = round(float((bm & sel).sum() * ph.grid.voxel_volume_ml), 1)
    return out


def _breast_statistics_v2(spacing_mm: float = 8.84) -> dict:
    """Anatomy v2's breasts against the published statistics of :mod:`her2sim.phantoms.breast_statistics`: the
    mound volume (sub-voxel fractions, skin excluded) built for each size class and for an asymmetric pair, and
    the glandular fraction built for each BI-RADS class against the volumetric fractions of Yaffe et al. 2009."""
    from her2sim.phantoms.breast_statistics import (BIRADS_SHARE, BREAST_SIZE_CLASSES, YAFFE_2009,
                                                    glandular_fraction_by_density)
    from her2sim.phantoms.torso_v2 import torso_anatomy_v2

    g = Grid.centered((64, 64, 64), spacing_mm)
    patient = _patient("v2")

    def build(volume, density="B"):
        a = torso_anatomy_v2(g, patient["weight_kg"], patient["height_cm"], "supine", volume, density, -60.0, seed=1)
        lv = a.params["label_volume_ml"]
        return lv.get("breast_gland", 0.0) + lv.get("breast_adipose", 0.0), lv.get("breast_gland", 0.0)

    sizes = {}
    for name, v in BREAST_SIZE_CLASSES.items():
        total, _ = build(name)
        sizes[name] = {"requested_ml_each": v, "built_ml_both": round(total, 1),
                       "rel_err": round(total / (2.0 * v) - 1.0, 4)}
    total, _ = build({"left": 250.0, "right": 500.0})
    sizes["asymmetric_left250_right500"] = {"requested_ml_both": 750.0, "built_ml_both": round(total, 1),
                                            "rel_err": round(total / 750.0 - 1.0, 4)}
    target = glandular_fraction_by_density()
    built = {}
    for k in target:
        total, gland = build(300.0, k)
        built[k] = round(gland / total, 4)
    return {"breast_size_classes": sizes,
            "breast_volume_max_abs_rel_err": max(abs(r["rel_err"]) for r in sizes.values()),
            "glandular_fraction": {"built": built, "target": {k: round(v, 4) for k, v in target.items()},
                                   "max_abs_rel_err": round(max(abs(built[k] / target[k] - 1.0) for k in target), 4),
                                   "population_mean_built": round(sum(BIRADS_SHARE[k] * built[k] for k in built), 4),
                                   "population_mean_published": YAFFE_2009["mean"],
                                   "reference": "Yaffe et al., Med Phys 36:5437 (2009); BI-RADS 5th ed. shares"},
            "grid_spacing_mm": spacing_mm}


def _realism_v2(fine: bool = True) -> dict:
    """The same measurements on anatomy v2 (module docstring: masses and volumes from the fractions)."""
    t0 = time.perf_counter()
    patient = _patient("v2")
    ph, seconds_128 = _build(4.42, "v2")
    masses = {o: _organ_mass_fractions_g(ph, o) for o in ICRP89_FEMALE_G}
    masses_labels = {o: _organ_mass_g(ph, o) for o in ICRP89_FEMALE_G}
    h = patient["height_cm"] / 160.0
    head, seconds_head = _build(4.42, "v2", body_z_at_grid_center_mm=300.0 * h)
    for o in ICRP89_FEMALE_WHOLE_BODY_G:
        masses[o] = _organ_mass_fractions_g(head, o) if o != "bladder_content" else None
    reference = {**ICRP89_FEMALE_G, **ICRP89_FEMALE_WHOLE_BODY_G}
    rel = {o: (None if m is None else round(m / reference[o] - 1.0, 3)) for o, m in masses.items()}
    ref_frac = ph.meta["anatomy"]["label_volume_ml"]
    ref_lab = _organ_volumes_ml(ph)
    act = ph.total_activity_bq(0)
    consistency = {}
    for sp in ((8.84, 2.21) if fine else (8.84,)):
        other, _ = _build(sp, "v2")
        vf = other.meta["anatomy"]["label_volume_ml"]
        vl = _organ_volumes_ml(other)
        consistency[f"{sp:g}mm"] = {
            "total_activity_ratio": round(other.total_activity_bq(0) / act, 4),
            "organ_volume_ratio": {k: round(vf.get(k, 0.0) / v, 3) for k, v in sorted(ref_frac.items()) if v > 5.0},
            "organ_volume_ratio_labels": {k: round(vl.get(k, 0.0) / v, 3) for k, v in sorted(ref_lab.items())
                                          if v > 5.0}}
        worst = max(abs(r - 1.0) for r in consistency[f"{sp:g}mm"]["organ_volume_ratio"].values())
        consistency[f"{sp:g}mm"]["max_abs_organ_volume_rel_diff"] = round(worst, 4)
        del other
    return {"anatomy": "v2", "organ_mass_g": {k: None if v is None else round(v, 1) for k, v in masses.items()},
            "organ_mass_rel_err": rel,
            "organ_mass_within_10pct": sorted(o for o, r in rel.items() if r is not None and abs(r) <= 0.10),
            "organ_mass_method": "sub-voxel fractions (meta.anatomy.label_mass_g)",
            "organ_mass_g_from_labels": {k: None if v is None else round(v, 1) for k, v in masses_labels.items()},
            "organ_reference": "ICRP Publication 89 (2002), reference adult female",
            "organ_reference_g": reference,
            "organ_mass_source": {o: ("head" if o in ICRP89_FEMALE_WHOLE_BODY_G else "torso") for o in masses},
            "breast_volume_ml": _breast_volumes_ml(ph),
            "breast_volume_requested_ml_each": patient["breast_volume_ml"],
            "breast_reference_ml_each": ICRP89_BREAST_ML_EACH,
            "body_dims_mm": _body_dims(ph, patient["weight_kg"], patient["height_cm"]), "grid_consistency": consistency,
            "labels_modelled": sorted(v for v in ph.label_names.values() if v != "background"),
            "skin_volume_ml": round(ref_frac.get("skin", 0.0), 1),
            "breast_statistics": _breast_statistics_v2(),
            "seconds_build_128": round(seconds_128, 2), "seconds_build_head": round(seconds_head, 2),
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--no-fine", action="store_true", help="skip the 2.21 mm (256^3) build")
    ap.add_argument("--anatomy", choices=("v1", "v2"), default="v2",
                    help="patient anatomy (v2, the default: her2sim.phantoms.torso_v2; v1: the first, analytic torso)")
    args = ap.parse_args(argv)
    res = realism(fine=not args.no_fine, anatomy=args.anatomy)
    if args.json:
        print_json(res)
    else:
        for o, r in res["organ_mass_rel_err"].items():
            print(f"{o:12s} {res['organ_mass_g'][o]} g  rel err {r}")
        print("breasts (mL):", res["breast_volume_ml"], " build 128^3:", res["seconds_build_128"], "s")
        print("grid consistency:", res["grid_consistency"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
