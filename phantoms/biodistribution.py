"""99mTc-NM-02 organ uptake (SUV) and its conversion to activity concentration at each time point.

Default SUVmean values at the reference time (1 h p.i.) are the model defaults of
``../shared/reference/biodistribution.md``, shaped by the first-in-human study (uptake mainly kidneys and
liver; mild spleen, intestines, thyroid/glands; background elsewhere) and the seed trial (Zhao et al.,
Breast Cancer Res 26:40, 2024): kidney cortex 40, liver 6, spleen 3, intestine 2, thyroid / salivary
glands 2, blood pool 1.0, red marrow 1.0, lung 0.4, muscle 0.3, breast fat / gland 0.2 / 0.4.
Values for compartments the note does not list are **assumptions** and are marked so in
:data:`DEFAULT_SUV_NOTES`. Chest inflammation has no NM-02 uptake (it keeps the local background; seed
trial), handled by :mod:`her2sim.phantoms.lesions`.

Time dependence (**assumption**, configurable): ``SUV(t) = SUV_ref * r ** ((t - t_ref) / 1 h)`` with the
per-compartment biological ratio ``r = SUV(2 h) / SUV(1 h)`` of :data:`DEFAULT_BIO_RATIO_PER_H` (blood
pool falling as the nanobody clears, kidney rising; tumour-to-blood of the sister tracer 99mTc-NM-01
rises from 1.79 at 1 h to 2.22 at 2 h, Xing et al., J Nucl Med 60:1213, 2019).

Whole-body extent (:mod:`her2sim.phantoms.whole_body`): the pelvic red marrow takes the note's red-marrow SUV
(1.0, ``pelvis_marrow``, also the proximal femur); cortical bone of pelvis and femur 0.3 like the spine's
(assumption); the femoral shaft's yellow (fatty) marrow 0.3 (assumption). The bladder content is not an uptake
but renal excretion: its SUV is ``f(t) W / V`` with the excreted fraction ``f`` of
:data:`her2sim.phantoms.whole_body.URINE_FRACTION` (an assumption, 10 % at 1 h and 18 % at 2 h), the patient's
weight ``W`` and the painted bladder volume ``V`` (:func:`her2sim.phantoms.whole_body.bladder_suv`, applied by
the patient phantom); the table's ``bladder`` entry (35.4 at 1 h, ratio 1.8) is that value for the 70 kg
reference patient and the 198 mL bladder, used only for a label map built outside the patient phantom.

Anatomy v2 (:mod:`her2sim.phantoms.torso_v2`): the four cardiac blood pools (``heart_lv``, ``heart_rv``,
``heart_la``, ``heart_ra``) take the note's blood-pool SUV (1.0, ratio 0.80 like ``heart_blood``); pectoral muscle
and axillary fat take the muscle and fat values, clavicles, scapulae and humeri the ribs' (assumptions).

Concentration: ``C [Bq/mL] = SUV * A_inj [Bq] * D(t) / W [g]`` with 1 g/mL (QIBA SUVbw) and the physical
decay ``D(t)`` of :data:`her2sim.core.radionuclide.TC99M` (0.891 at 1 h, 0.794 at 2 h).
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import ConfigError, check_range
from her2sim.core.radionuclide import TC99M

#: default SUVmean per torso label at the reference time (1 h p.i.).
DEFAULT_SUV = {
    "kidney_cortex": 40.0, "kidney_medulla": 10.0, "liver": 6.0, "spleen": 3.0, "intestine": 2.0,
    "thyroid": 2.0, "salivary_glands": 2.0, "heart_blood": 1.0, "aorta": 1.0, "vena_cava": 1.0,
    "heart_wall": 0.6, "spine_marrow": 1.0, "sternum": 1.0, "ribs": 0.5, "spine_cortical": 0.3, "skull": 0.3,
    "lungs": 0.4, "muscle": 0.3, "breast_adipose": 0.2, "breast_gland": 0.4, "fat": 0.2, "skin": 0.3,
    "soft_tissue": 0.4, "stomach": 0.5, "brain": 0.05, "spinal_canal": 0.1, "mesentery": 0.2,
    # whole-body extent (her2sim.phantoms.whole_body): bony pelvis, femurs, bladder content
    "pelvis_marrow": 1.0, "pelvis_cortical": 0.3, "femur_cortical": 0.3, "femur_marrow": 0.3,
    "bladder": 35.4,
    # anatomy v2 (her2sim.phantoms.torso_v2): cardiac blood pools as the blood pool, shoulder-girdle muscle,
    # fat and bones as muscle, fat and the ribs (assumptions)
    "heart_lv": 1.0, "heart_rv": 1.0, "heart_la": 1.0, "heart_ra": 1.0, "pectoralis": 0.3, "axillary_fat": 0.2,
    "clavicle": 0.5, "scapula": 0.5, "humerus": 0.5,
}
#: provenance of each default (``note`` = biodistribution.md table; ``assumption`` = not in the note).
DEFAULT_SUV_NOTES = {k: ("note" if k in ("kidney_cortex", "liver", "spleen", "intestine", "thyroid", "salivary_glands",
                                         "heart_blood", "aorta", "vena_cava", "spine_marrow", "lungs", "muscle",
                                         "breast_adipose", "breast_gland", "pelvis_marrow", "heart_lv", "heart_rv",
                                         "heart_la", "heart_ra") else "assumption")
                     for k in DEFAULT_SUV}
#: SUV(2 h) / SUV(1 h) per compartment (assumptions, see module docstring); ``tumour`` applies to lesions.
DEFAULT_BIO_RATIO_PER_H = {
    "kidney_cortex": 1.15, "kidney_medulla": 1.15, "liver": 1.0, "spleen": 0.95, "intestine": 1.10,
    "thyroid": 1.0, "salivary_glands": 1.0, "heart_blood": 0.80, "aorta": 0.80, "vena_cava": 0.80,
    "heart_wall": 0.85, "spine_marrow": 0.95, "sternum": 0.95, "ribs": 0.95, "spine_cortical": 0.95, "skull": 0.95,
    "lungs": 0.85, "muscle": 0.90, "breast_adipose": 0.90, "breast_gland": 0.90, "fat": 0.90, "skin": 0.90,
    "soft_tissue": 0.85, "stomach": 1.0, "brain": 0.85, "spinal_canal": 0.85, "mesentery": 0.90, "tumour": 1.05,
    "pelvis_marrow": 0.95, "pelvis_cortical": 0.95, "femur_cortical": 0.95, "femur_marrow": 0.90, "bladder": 1.8,
    "heart_lv": 0.80, "heart_rv": 0.80, "heart_la": 0.80, "heart_ra": 0.80, "pectoralis": 0.90, "axillary_fat": 0.90,
    "clavicle": 0.95, "scapula": 0.95, "humerus": 0.95,
}
#: labels that never take up tracer (air spaces, background).
NO_UPTAKE_LABELS = ("background", "airway")
#: FDG SUVmean at 1 h per label (typical clinical PET values; assumptions for the optional FDG map).
DEFAULT_FDG_SUV = {
    "brain": 7.0, "heart_wall": 3.0, "heart_blood": 1.8, "aorta": 1.8, "vena_cava": 1.8, "liver": 2.3,
    "spleen": 1.9, "kidney_cortex": 3.0, "kidney_medulla": 3.0, "intestine": 1.5, "stomach": 1.5,
    "muscle": 0.7, "fat": 0.3, "breast_adipose": 0.3, "breast_gland": 1.0, "lungs": 0.5, "spine_marrow": 1.8,
    "sternum": 1.5, "ribs": 0.8, "spine_cortical": 0.5, "skull": 0.5, "thyroid": 1.5, "salivary_glands": 1.8,
    "skin": 0.8, "soft_tissue": 1.0, "spinal_canal": 1.0, "mesentery": 0.4,
    "pelvis_marrow": 1.8, "pelvis_cortical": 0.5, "femur_cortical": 0.5, "femur_marrow": 0.8, "bladder": 10.0,
    "heart_lv": 1.8, "heart_rv": 1.8, "heart_la": 1.8, "heart_ra": 1.8, "pectoralis": 0.7, "axillary_fat": 0.3,
    "clavicle": 0.8, "scapula": 0.8, "humerus": 0.8,
}
REFERENCE_TIME_H = 1.0


def validate_suv_table(table: dict, name: str = "suv") -> dict:
    """Check that every SUV in ``table`` is a finite number > 0; return a float copy."""
    out = {}
    for k, v in dict(table).items():
        out[str(k)] = check_range(f"{name}.{k}", v, 0.0, 1000.0, lo_open=True)
    return out


def merged_table(defaults: dict, override: dict | None, name: str) -> dict:
    """Defaults updated with user overrides (both validated)."""
    tab = dict(defaults)
    if override:
        tab.update(validate_suv_table(override, name))
    return validate_suv_table(tab, name)


def suv_to_bq_per_ml(suv, injected_mbq: float, weight_kg: float, time_h: float) -> np.ndarray:
    """Activity concentration (Bq/mL) of an SUV at ``time_h`` after injection (physical decay included).

    ``C = SUV * injected_Bq * decay(t) / weight_g`` (1 g/mL tissue).
    """
    a = check_range("injected_mbq", injected_mbq, 0.0, 1e5, lo_open=True)
    w = check_range("weight_kg", weight_kg, 1.0, 500.0)
    t = check_range("time_h", time_h, 0.0, 1000.0)
    scale = a * 1e6 * TC99M.decay_factor(t * 3600.0) / (w * 1000.0)
    return np.asarray(suv, np.float64) * scale


def bq_per_ml_to_suv(conc, injected_mbq: float, weight_kg: float, time_h: float) -> np.ndarray:
    """Inverse of :func:`suv_to_bq_per_ml` (decay-corrected to injection)."""
    return np.asarray(conc, np.float64) / suv_to_bq_per_ml(1.0, injected_mbq, weight_kg, time_h)


def time_factor(ratio_per_h: float, time_h: float, reference_time_h: float = REFERENCE_TIME_H) -> float:
    """Biological factor ``r ** ((t - t_ref) / 1 h)`` relative to the reference time."""
    r = check_range("bio_ratio_per_h", ratio_per_h, 0.0, 100.0, lo_open=True)
    return float(r ** ((float(time_h) - reference_time_h)))


def organ_suv_maps(labels: np.ndarray, label_names: dict, time_points_h, suv: dict | None = None,
                   bio_ratio_per_h: dict | None = None, reference_time_h: float = REFERENCE_TIME_H) -> np.ndarray:
    """SUV (T, z, y, x) of the organ compartments at each time point, from a label map.

    Parameters
    ----------
    labels : numpy.ndarray
        int label map (z, y, x).
    label_names : dict
        id -> name. Every name except :data:`NO_UPTAKE_LABELS` needs an SUV (default table + ``suv``).
    time_points_h : sequence of float
        Times after injection (h).
    suv : dict, optional
        Overrides of :data:`DEFAULT_SUV` (values > 0).
    bio_ratio_per_h : dict, optional
        Overrides of :data:`DEFAULT_BIO_RATIO_PER_H` (values > 0); labels without a ratio use 1.

    Returns
    -------
    numpy.ndarray
        float32 SUV per time point (decay-corrected: SUV is independent of physical decay).
    """
    tab = merged_table(DEFAULT_SUV, suv, "suv")
    rat = merged_table(DEFAULT_BIO_RATIO_PER_H, bio_ratio_per_h, "bio_ratio_per_h")
    lut_ids = np.asarray(sorted(label_names), int)
    if lut_ids.size and lut_ids.min() < 0:
        raise ConfigError(f"label ids must be >= 0, got {int(lut_ids.min())}")
    size = int(max(lut_ids.max() if lut_ids.size else 0, labels.max(initial=0))) + 1
    frames = []
    for t in time_points_h:
        lut = np.zeros(size, np.float32)
        for i in lut_ids:
            name = label_names[int(i)]
            if name in NO_UPTAKE_LABELS:
                continue
            if name not in tab:
                raise ConfigError(f"suv.{name} is missing: label {name!r} has no SUV; give a value > 0 in the "
                                  f"suv table (known: {sorted(tab)})")
            lut[i] = tab[name] * time_factor(rat.get(name, 1.0), t, reference_time_h)
        frames.append(lut[labels])
    return np.stack(frames).astype(np.float32)


def suv_frames_to_activity(suv_frames: np.ndarray, time_points_h, injected_mbq: float, weight_kg: float) -> np.ndarray:
    """Convert SUV frames (T, z, y, x) to Bq/mL frames with physical decay."""
    return np.stack([suv_to_bq_per_ml(f, injected_mbq, weight_kg, t).astype(np.float32)
                     for f, t in zip(suv_frames, time_points_h)])


def fdg_suv_map(labels: np.ndarray, label_names: dict, lesion_ids: np.ndarray | None = None,
                truth: list | None = None, fdg_suv: dict | None = None) -> np.ndarray:
    """Optional 18F-FDG SUV map at 1 h (for FDG-vs-NM-02 comparisons).

    Organs take :data:`DEFAULT_FDG_SUV` (overridable); each lesion voxel takes its truth row's
    ``fdg_suv`` (tumours FDG-avid with SUVmax 2.3-45.7 in the seed trial; inflammation FDG-hot).
    """
    tab = merged_table(DEFAULT_FDG_SUV, fdg_suv, "fdg_suv")
    out = np.zeros(labels.shape, np.float32)
    for i, name in label_names.items():
        if name in NO_UPTAKE_LABELS:
            continue
        out[labels == i] = tab.get(name, 1.0)
    if lesion_ids is not None and truth:
        for row in truth:
            if row.get("fdg_suv") is not None:
                out[lesion_ids == int(row["id"])] = float(row["fdg_suv"])
    return out
