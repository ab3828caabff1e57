"""Adult female torso from analytic shapes (ellipsoids, elliptic cylinders, boxes); no downloaded atlas.

Coordinates
-----------
Organs are placed in *body coordinates* (mm): x -> patient left, y -> posterior, z -> superior, with
``z_body = 0`` at the level of the breast centres (nipples) and ``x = y = 0`` on the trunk axis. The
body axis coincides with the grid centre in x/y; ``body_z_at_grid_center_mm`` chooses which body level
sits at the grid centre (default -60 mm: a 566 mm axial FOV then spans neck/thyroid to kidneys).
Longitudinal positions and organ sizes scale with ``h = height_cm / 160``; the subcutaneous fat layer
scales with BMI, so the body outline follows weight and height. Arms are assumed raised out of the FOV
(SPECT/CT of the chest), legs and pelvis are not modelled.

Reference organ sizes (ICRP Publication 89, 2002, adult reference female, Table 2.8; masses g):
liver 1400, kidneys 275 (both), spleen 130, lungs 950 (with blood), heart wall 250 (+ heart blood
about 370), thyroid 17, breasts 500 (both, glandular + adipose), stomach wall 140, brain 1300.
The shapes below are sized to give volumes near these masses / density (checked, loosely, by the tests).

CT numbers: :data:`her2sim.phantoms.tissue_volume.NOMINAL_HU` (fat -100, muscle 40, lung -750,
spongiosa 250, cortical bone 1000; ribs and sternum are a cortical/marrow mixture at 700 HU and
1.5 g/cm^3, an assumption for bones thinner than the voxel). Breast tissue densities: VICTRE
(adipose 0.92, glandular 1.035, skin 1.09 g/cm^3; biodistribution.md). Glandular fraction per BI-RADS
density category (A-D = <25 %, 25-50 %, 51-75 %, >75 %; the mid-points 0.125 / 0.375 / 0.625 / 0.875
are used, an assumption) is reached by thresholding a seeded Gaussian random field with a
retro-areolar bias.

Structures (labels): fat (subcutaneous), muscle (thoracic / abdominal wall, neck), soft_tissue (mediastinum and
abdominal cavity), skin (outermost in-plane voxel layer), lungs, airway, heart_wall, heart_blood, aorta,
vena_cava, liver, spleen, stomach, kidney_cortex, kidney_medulla, intestine (bowel loops: half of the
intestinal region, drawn from a seeded random field) and mesentery (the fatty rest), spine_cortical,
spine_marrow (vertebral spongiosa), spinal_canal, ribs (12 pairs, true / false / floating), sternum,
breast_adipose, breast_gland, thyroid and salivary_glands (when the FOV reaches the neck), brain and skull
(when it reaches the head). Not modelled: arms, pelvis, legs, bladder, scapulae, clavicles, pancreas.
``extent="whole_body"`` adds head to mid-thigh (bony pelvis, bladder, thighs, a realistic head and glands):
:mod:`her2sim.phantoms.whole_body`; the default ``extent="torso"`` paints exactly what it always did.
An opt-in second anatomy (sub-voxel edges, shoulder girdle with raised arms, four-chamber heart, swept vessels)
is :mod:`her2sim.phantoms.torso_v2` (patient-spec key ``anatomy = "v2"``); this module is ``anatomy = "v1"``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from her2sim.core.errors import ConfigError, check_choice, check_range
from her2sim.core.grid import Grid

from .breast_statistics import breast_volumes
from .clinical_grid import clinical_grid
from .heterogeneity import gaussian_random_field
from .tissue_volume import TissueVolume
from . import whole_body as wbm

#: BI-RADS breast density category -> glandular volume fraction (mid-points of the BI-RADS quartiles; assumption).
GLANDULAR_FRACTION = {"A": 0.125, "B": 0.375, "C": 0.625, "D": 0.875}
#: breast shape options -> semi-axis ratios (x lateral, y protrusion, z cranio-caudal) of the breast ellipsoid.
BREAST_SHAPES = {"supine": (1.25, 0.75, 1.0), "pendant": (0.9, 1.4, 0.9), "prone": (0.9, 1.4, 0.9)}
#: fraction of the intestinal region occupied by bowel loops (the rest is mesenteric fat; assumption).
INTESTINE_LOOP_FRACTION = 0.5
#: reference patient (biodistribution.md defaults; assumption)
REFERENCE_WEIGHT_KG = 70.0
REFERENCE_HEIGHT_CM = 160.0


@dataclass
class TorsoAnatomy:
    """A painted torso plus the landmarks lesion placement needs.

    Attributes
    ----------
    volume : TissueVolume
        Labels, materials, density and HU.
    landmarks : dict
        World-coordinate (z, y, x mm) anchors: ``breasts`` (per side: centre, radii, nipple), ``axilla``,
        ``mediastinum``, ``spine`` (axis y/x and vertebral z list), ``liver``, ``brain``, ``lungs``.
    params : dict
        Patient parameters used (weight_kg, height_cm, bmi, fat_mm, ...).
    body_inside : callable
        ``body_inside(z, y, x)`` world mm -> bool, the analytic body outline (for lesion checks).
    pv_organs : list of dict
        Organs drawn with partial-volume fractions (whole-body extent only; empty for the torso): ``label``,
        ``slices`` (index box), ``fraction`` (float32 in the box) and ``under`` (the labels in the box before
        the organ was painted), for :func:`her2sim.phantoms.patient.patient_phantom` to mix boundary activity.
    chest_wall_inside : callable
        ``chest_wall_inside(z, y, x)`` world mm -> bool: the chest wall, i.e. the muscle layer over the rib cage
        and everything deep of it (ribs, lungs, mediastinum), whose front is the pectoral surface the breasts sit
        on. Lesion placement keeps breast primaries out of it unless the spec asks for chest-wall invasion
        (:func:`her2sim.phantoms.lesions.place_lesion`).
    fractions : dict or None
        Anatomy v2 only (:mod:`her2sim.phantoms.torso_v2`): the tissue composition of every boundary voxel,
        ``voxel`` (flat indices, int64), ``label`` (label ids) and ``fraction`` (float32; air is the rest).
    """

    volume: TissueVolume
    landmarks: dict
    params: dict
    body_inside: object = field(repr=False, default=None)
    chest_wall_inside: object = field(repr=False, default=None)
    pv_organs: list = field(repr=False, default_factory=list)
    fractions: dict | None = field(repr=False, default=None)


class _Frame:
    """Body -> world mapping and open-mesh coordinates in body mm."""

    def __init__(self, grid: Grid, body_z_at_center: float):
        self.grid = grid
        self.dz = grid.center_mm[0] - body_z_at_center
        self.cy = grid.center_mm[1]
        self.cx = grid.center_mm[2]
        z, y, x = grid.mesh_mm(np.float32)
        self.z = z - np.float32(self.dz)
        self.y = y - np.float32(self.cy)
        self.x = x - np.float32(self.cx)

    def world(self, zb, yb, xb) -> tuple:
        return (float(zb + self.dz), float(yb + self.cy), float(xb + self.cx))

    def ellipsoid(self, c, r) -> np.ndarray:
        """Bool mask of an ellipsoid centre c (z, y, x body mm), radii r (z, y, x mm)."""
        return (((self.z - c[0]) / r[0]) ** 2 + ((self.y - c[1]) / r[1]) ** 2
                + ((self.x - c[2]) / r[2]) ** 2) <= 1.0

    def zcyl(self, cy, cx, ry, rx, zlo, zhi) -> np.ndarray:
        return ((((self.y - cy) / ry) ** 2 + ((self.x - cx) / rx) ** 2) <= 1.0) & (self.z >= zlo) & (self.z <= zhi)

    def box(self, lo, hi) -> np.ndarray:
        return ((self.z >= lo[0]) & (self.z <= hi[0]) & (self.y >= lo[1]) & (self.y <= hi[1])
                & (self.x >= lo[2]) & (self.x <= hi[2]))


def _check_patient(weight_kg, height_cm):
    w = check_range("weight_kg", weight_kg, 30.0, 200.0)
    h = check_range("height_cm", height_cm, 120.0, 210.0)
    bmi = w / (h / 100.0) ** 2
    check_range("bmi (from weight_kg and height_cm)", bmi, 14.0, 50.0)
    return w, h, bmi


def breast_volume_param(volumes: dict):
    """The ``breast_volume_ml`` a phantom's metadata records: one number when both breasts are equal (as before
    per-breast volumes existed), else ``{"right", "left"}``."""
    return volumes["right"] if volumes["right"] == volumes["left"] else dict(volumes)


def check_torso_options(grid, weight_kg, height_cm, breast_shape, breast_volume_ml, breast_density,
                        body_z_at_grid_center_mm, ct_noise_hu, gland_correlation_mm) -> tuple:
    """The options every torso anatomy version takes, checked (ConfigError naming the field and its range).

    Returns
    -------
    tuple
        ``(grid, (weight_kg, height_cm, bmi), breast_volume_ml, ct_noise_hu, gland_correlation_mm)``; ``grid``
        is the default clinical grid when ``None`` was given; ``breast_volume_ml`` is ``{"right", "left"}`` in mL
        (:func:`her2sim.phantoms.breast_statistics.breast_volumes`: a number, a per-breast table or a size class).
    """
    grid = clinical_grid(grid)
    patient = _check_patient(weight_kg, height_cm)
    check_choice("breast_shape", breast_shape, BREAST_SHAPES)
    bvol = breast_volumes(breast_volume_ml)
    check_choice("breast_density", breast_density, GLANDULAR_FRACTION)
    check_range("body_z_at_grid_center_mm", body_z_at_grid_center_mm, -1000.0, 1000.0)
    noise = check_range("ct_noise_hu", ct_noise_hu, 0.0, 500.0)
    gcorr = check_range("gland_correlation_mm", gland_correlation_mm, 1.0, 50.0)
    return grid, patient, bvol, noise, gcorr


def torso_anatomy(grid: Grid | None = None, weight_kg: float = REFERENCE_WEIGHT_KG, height_cm: float = REFERENCE_HEIGHT_CM,
                  breast_shape: str = "supine", breast_volume_ml: float = 300.0, breast_density: str = "B",
                  body_z_at_grid_center_mm: float = -60.0, seed: int = 0, ct_noise_hu: float = 0.0,
                  gland_correlation_mm: float = 6.0, extent: str = "torso") -> TorsoAnatomy:
    """Paint the female torso (no activity, no lesions).

    Parameters
    ----------
    grid : Grid, optional
        Any grid (default 128^3 x 4.42 mm); structures outside it are simply not painted.
    weight_kg, height_cm : float
        Patient size (30-200 kg, 120-210 cm, BMI 14-50).
    breast_shape : str
        ``"supine"`` (flattened, spread laterally) or ``"pendant"`` / ``"prone"`` (hanging, protruding).
    breast_volume_ml : float
        Volume of each breast mound in front of the pectoral muscle (50-2000 mL; ICRP 89: 500 g for both).
    breast_density : str
        BI-RADS category ``A``-``D`` (glandular fraction, see module docstring).
    body_z_at_grid_center_mm : float
        Body level (mm, 0 = breast centres) placed at the grid centre.
    seed : int
        Seed of the glandular texture and of the CT noise.
    ct_noise_hu : float
        Standard deviation of white Gaussian CT noise added to ``ct_hu`` (HU, >= 0).
    gland_correlation_mm : float
        Correlation length of the glandular texture (mm).
    extent : str
        ``"torso"`` (default, the chest/abdomen torso) or ``"whole_body"`` (head to mid-thigh, pelvis, bladder,
        thighs: :mod:`her2sim.phantoms.whole_body`). The torso is painted exactly as before in both modes except
        where the whole-body anatomy replaces it (head, lower spine, hips).

    Returns
    -------
    TorsoAnatomy
    """
    grid, (w, hcm, bmi), bvol, noise, gcorr = check_torso_options(
        grid, weight_kg, height_cm, breast_shape, breast_volume_ml, breast_density, body_z_at_grid_center_mm,
        ct_noise_hu, gland_correlation_mm)
    wb = wbm.check_extent(extent) == "whole_body"
    pv_organs: list = []
    rng = np.random.default_rng(seed)
    h = hcm / REFERENCE_HEIGHT_CM
    fr = _Frame(grid, body_z_at_grid_center_mm)
    tv = TissueVolume(grid, "air")
    Z, Y, X = fr.z, fr.y, fr.x

    # ------------------------------------------------------------------ body outline
    fat_mm = float(np.clip(6.0 + 1.6 * (bmi - 18.0), 4.0, 60.0))  # subcutaneous fat thickness (assumption)
    muscle_mm = 12.0
    trunk_lo, trunk_hi = -430.0 * h, 170.0 * h
    spine_ref = trunk_lo                       # phase origin of the vertebrae (same in both extents)
    if wb:
        trunk_lo = wbm.HIP_BOTTOM_MM * h       # hips continue the trunk to the gluteal fold
    neck_hi = 300.0 * h
    zax = Z[:, 0, 0]
    # cavity (inside ribs / abdominal wall) semi-axes per slice: chest above -120h, abdomen below -180h
    t = np.clip((zax - (-180.0 * h)) / (60.0 * h), 0.0, 1.0)          # 1 = chest, 0 = abdomen
    cav_ax = (125.0 + 10.0 * t) * h
    cav_ay = (90.0 - 5.0 * t) * h
    abd_fat = fat_mm * (1.25 - 0.25 * t)
    wall_ax = cav_ax + muscle_mm
    wall_ay = cav_ay + muscle_mm
    body_ax = wall_ax + abd_fat
    body_ay = wall_ay + abd_fat
    in_trunk_z = (zax >= trunk_lo) & (zax <= trunk_hi)

    def ell2d(ax, ay):
        return (Y / ay[:, None, None]) ** 2 + (X / ax[:, None, None]) ** 2 <= 1.0

    trunk = ell2d(body_ax, body_ay) & in_trunk_z[:, None, None]
    wall = ell2d(wall_ax, wall_ay) & in_trunk_z[:, None, None]
    cavity = ell2d(cav_ax, cav_ay) & in_trunk_z[:, None, None]
    neck_r = (55.0 * h + 0.4 * fat_mm, 58.0 * h + 0.4 * fat_mm)
    neck = fr.zcyl(5.0 * h, 0.0, neck_r[0], neck_r[1], trunk_hi, neck_hi)
    head_c, head_r = (390.0 * h, -5.0 * h, 0.0), (105.0 * h, 100.0 * h, 78.0 * h)
    if wb:
        brain_c = tuple(v * h for v in wbm.BRAIN_C)
        cran_r = tuple(v * h + wbm.SKULL_MM for v in wbm.BRAIN_R)
        face = fr.ellipsoid(tuple(v * h for v in wbm.FACE_C), tuple(v * h for v in wbm.FACE_R))
        head = fr.ellipsoid(brain_c, cran_r) | face
    else:
        head = fr.ellipsoid(head_c, head_r)

    # breasts: half-ellipsoids on the pectoral muscle (anterior muscle surface)
    kx, ky, kz = BREAST_SHAPES[breast_shape]
    wall_ax0 = (125.0 + 10.0) * h + muscle_mm
    wall_ay0 = (90.0 - 5.0) * h + muscle_mm
    breasts = {}
    breast_mask = np.zeros(grid.shape, bool)
    for side, sx in (("right", -1.0), ("left", 1.0)):
        r0 = (3.0 * bvol[side] * 1000.0 / (2.0 * np.pi * kx * ky * kz)) ** (1.0 / 3.0)
        b_r = (kz * r0, ky * r0, kx * r0)
        xc = sx * (90.0 * h + 0.15 * r0)
        ym = -wall_ay0 * np.sqrt(max(1.0 - (xc / wall_ax0) ** 2, 0.05))
        c = (0.0, ym, xc)
        m = fr.ellipsoid(c, b_r) & (Y <= ym + 0.2 * b_r[1]) & ~wall
        breast_mask |= m
        breasts[side] = {"centre_mm": fr.world(*c), "radii_mm": [float(v) for v in b_r],
                         "nipple_mm": fr.world(0.0, ym - b_r[1], xc), "chest_wall_y_mm": float(ym + fr.cy)}
    body = trunk | neck | head | breast_mask
    if wb:
        thighs, thigh_muscle = wbm.thigh_masks(fr, h, fat_mm, trunk_lo + 30.0 * h)
        body |= thighs
    tv.paint(body, "fat", "adipose")
    if wb:
        tv.paint(thigh_muscle & ~trunk, "muscle", "muscle")
    tv.paint(wall & ~cavity, "muscle", "muscle")
    neck_muscle = fr.zcyl(5.0 * h, 0.0, neck_r[0] - 0.4 * fat_mm - 6.0, neck_r[1] - 0.4 * fat_mm - 6.0,
                          trunk_hi, neck_hi)
    tv.paint(neck_muscle, "muscle", "muscle")
    tv.paint(cavity, "soft_tissue", "soft_tissue")

    # ------------------------------------------------------------------ head and neck
    def paint_pv(fraction, label, material, hu=None):
        """Paint a partial-volume organ (voxels with fraction >= 0.5) and record it for activity mixing."""
        nz_idx = np.nonzero(fraction > 0)
        if nz_idx[0].size == 0:
            return
        sl = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz_idx)
        pv_organs.append({"label": label, "slices": sl, "fraction": fraction[sl].copy(),
                          "under": tv.labels[sl].copy()})
        tv.paint(fraction, label, material, hu=hu)

    if wb:
        brain_r = tuple(v * h for v in wbm.BRAIN_R)
        tv.paint(fr.ellipsoid(tuple(v * h for v in wbm.FACE_C), tuple(v * h for v in wbm.FACE_R)),
                 "muscle", "muscle")
        tv.paint(fr.ellipsoid(brain_c, cran_r), "skull", "cortical_bone")
        paint_pv(wbm.pv_fraction(grid, fr, wbm.BRAIN_C, wbm.BRAIN_R, h), "brain", "soft_tissue", hu=35.0)
        head_c = brain_c
    else:
        skull = head & ~fr.ellipsoid(head_c, tuple(r - 6.0 for r in head_r))
        brain_r = tuple(r - 6.0 for r in head_r)
        tv.paint(head & ~skull, "brain", "soft_tissue", hu=35.0)
        tv.paint(skull, "skull", "cortical_bone")
    tv.paint(fr.zcyl(-12.0 * h, 0.0, 9.0 * h, 9.0 * h, 60.0 * h, 320.0 * h) & body, "airway", "air")
    if wb:
        thy = np.zeros(grid.shape, np.float32)
        for sx in (-1.0, 1.0):
            c = (wbm.THYROID_C[0], wbm.THYROID_C[1], sx * wbm.THYROID_C[2])
            thy += wbm.pv_fraction(grid, fr, c, wbm.THYROID_R, h)
        thy += wbm.pv_fraction(grid, fr, wbm.ISTHMUS_C, wbm.ISTHMUS_R, h)
        paint_pv(np.minimum(thy, 1.0), "thyroid", "soft_tissue", hu=100.0)
        sal = np.zeros(grid.shape, np.float32)
        for sx in (-1.0, 1.0):
            for c0, r in ((wbm.PAROTID_C, wbm.PAROTID_R), (wbm.SUBMANDIBULAR_C, wbm.SUBMANDIBULAR_R)):
                sal += wbm.pv_fraction(grid, fr, (c0[0], c0[1], sx * c0[2]), r, h)
        paint_pv(np.minimum(sal, 1.0), "salivary_glands", "soft_tissue")
    else:
        thyroid = (fr.ellipsoid((200.0 * h, -18.0 * h, 17.0 * h), (22.0 * h, 9.0 * h, 9.0 * h))
                   | fr.ellipsoid((200.0 * h, -18.0 * h, -17.0 * h), (22.0 * h, 9.0 * h, 9.0 * h)))
        tv.paint(thyroid & body, "thyroid", "soft_tissue", hu=100.0)  # iodine-rich thyroid ~100 HU
        saliv = np.zeros(grid.shape, bool)
        for sx in (-1.0, 1.0):
            saliv |= fr.ellipsoid((320.0 * h, 5.0 * h, sx * 48.0 * h), (25.0 * h, 18.0 * h, 11.0 * h))
            saliv |= fr.ellipsoid((275.0 * h, -28.0 * h, sx * 33.0 * h), (10.0 * h, 12.0 * h, 14.0 * h))
        tv.paint(saliv & body, "salivary_glands", "soft_tissue")

    # ------------------------------------------------------------------ thorax
    liver_c, liver_r = (-140.0 * h, 0.0, -55.0 * h), (57.0 * h, 66.0 * h, 95.0 * h)
    liver = fr.ellipsoid(liver_c, liver_r) & (X <= 55.0 * h) & cavity
    diaphragm = fr.ellipsoid((liver_c[0] + 10.0 * h, 0.0, 0.0), (65.0 * h, 120.0 * h, 150.0 * h))
    lungs = np.zeros(grid.shape, bool)
    lung_c = {"right": (25.0 * h, 10.0 * h, -72.0 * h), "left": (25.0 * h, 10.0 * h, 75.0 * h)}
    lung_r = {"right": (125.0 * h, 72.0 * h, 50.0 * h), "left": (120.0 * h, 70.0 * h, 46.0 * h)}
    for s in ("right", "left"):
        lungs |= fr.ellipsoid(lung_c[s], lung_r[s])
    lungs &= cavity & ~diaphragm
    tv.paint(lungs, "lungs", "lung")
    airway_chest = fr.zcyl(-12.0 * h, 0.0, 8.0 * h, 8.0 * h, 60.0 * h, trunk_hi) & cavity
    tv.paint(airway_chest, "airway", "air")
    heart_c, heart_r = (-40.0 * h, -25.0 * h, 22.0 * h), (55.0 * h, 45.0 * h, 60.0 * h)
    heart = fr.ellipsoid(heart_c, heart_r) & cavity
    tv.paint(heart, "heart_wall", "muscle")
    tv.paint(fr.ellipsoid(heart_c, (42.0 * h, 32.0 * h, 46.0 * h)) & heart, "heart_blood", "blood")
    aorta = (fr.zcyl(35.0 * h, 18.0 * h, 11.0 * h, 11.0 * h, -330.0 * h, 45.0 * h)       # descending
             | fr.zcyl(-20.0 * h, 8.0 * h, 13.0 * h, 13.0 * h, -10.0 * h, 45.0 * h)       # ascending
             | fr.ellipsoid((50.0 * h, 8.0 * h, 13.0 * h), (12.0 * h, 30.0 * h, 12.0 * h)))  # arch
    tv.paint(aorta & cavity, "aorta", "blood")
    vc = (fr.zcyl(10.0 * h, -25.0 * h, 10.0 * h, 10.0 * h, -330.0 * h, -60.0 * h)      # inferior vena cava
          | fr.zcyl(-15.0 * h, -28.0 * h, 9.0 * h, 9.0 * h, -10.0 * h, 110.0 * h))     # superior vena cava
    tv.paint(vc & cavity & ~heart, "vena_cava", "blood")

    # ------------------------------------------------------------------ abdomen
    tv.paint(liver, "liver", "liver")
    stomach = fr.ellipsoid((-165.0 * h, -15.0 * h, 55.0 * h), (55.0 * h, 35.0 * h, 40.0 * h)) & cavity & ~liver
    tv.paint(stomach, "stomach", "soft_tissue", hu=30.0)
    spleen = fr.ellipsoid((-150.0 * h, 42.0 * h, 88.0 * h), (40.0 * h, 36.0 * h, 24.0 * h)) & cavity
    tv.paint(spleen, "spleen", "spleen")
    kid_c = {"right": (-235.0 * h, 50.0 * h, -55.0 * h), "left": (-220.0 * h, 50.0 * h, 57.0 * h)}
    kid_r = (52.0 * h, 22.0 * h, 27.0 * h)
    for s in ("right", "left"):
        k_out = fr.ellipsoid(kid_c[s], kid_r) & cavity
        tv.paint(k_out, "kidney_cortex", "kidney")
        tv.paint(fr.ellipsoid(kid_c[s], tuple(0.6 * r for r in kid_r)) & k_out, "kidney_medulla", "kidney")
    intestine = (fr.ellipsoid((-350.0 * h, -15.0 * h, 0.0), (95.0 * h, 70.0 * h, 115.0 * h)) & cavity
                 & (Y <= 35.0 * h) & ~tv.mask_of("liver", "kidney_cortex", "kidney_medulla", "spleen", "stomach"))
    tv.paint(intestine, "mesentery", "adipose", hu=-80.0)

    # ------------------------------------------------------------------ skeleton
    spine_y = 58.0 * h
    period = 28.0 * h
    disc = 5.0 * h
    phase = np.mod(Z - spine_ref, period)
    in_vert = phase >= disc
    cerv = Z > trunk_hi
    vb_ry = np.where(cerv, 11.0 * h, 16.0 * h)
    vb_rx = np.where(cerv, 14.0 * h, 20.0 * h)
    vy = np.where(cerv, 20.0 * h, spine_y)
    in_spine_z = (Z >= trunk_lo) & (Z <= neck_hi)
    if wb:   # lumbar spine down to the sacrum, cervical spine up to the skull base
        in_spine_z = (Z >= wbm.SPINE_BOTTOM_MM * h) & (Z <= 350.0 * h)
    vb = ((((Y - vy) / vb_ry) ** 2 + (X / vb_rx) ** 2) <= 1.0) & in_spine_z & in_vert
    vb_in = ((((Y - vy) / (vb_ry - 2.5)) ** 2 + (X / (vb_rx - 2.5)) ** 2) <= 1.0) & vb
    arch_c = vy + vb_ry + 12.0 * h
    arch = ((((Y - arch_c) / (13.0 * h)) ** 2 + (X / (15.0 * h)) ** 2) <= 1.0) & in_spine_z & in_vert
    canal = ((((Y - arch_c) / (7.0 * h)) ** 2 + (X / (7.0 * h)) ** 2) <= 1.0) & in_spine_z
    spinous = (np.abs(X) <= 4.0 * h) & (Y >= arch_c) & (Y <= arch_c + 28.0 * h) & in_spine_z & in_vert
    tv.paint((arch | spinous) & body & ~canal, "spine_cortical", "cortical_bone")
    tv.paint(vb & body, "spine_cortical", "cortical_bone")
    tv.paint(vb_in & body, "spine_marrow", "spongiosa")
    tv.paint(canal & in_spine_z & body, "spinal_canal", "soft_tissue", hu=20.0)
    rib_band = (ell2d(cav_ax + 9.0, cav_ay + 9.0) & ~ell2d(cav_ax, cav_ay))
    ribs = np.zeros(grid.shape, bool)
    for k in range(12):
        zk = 150.0 * h - k * 24.0 * h
        zc = zk - 0.35 * (cav_ay[:, None, None] - Y)
        m = rib_band & (np.abs(Z - zc) <= 4.5 * h)
        if k < 7:
            m &= np.abs(X) >= 30.0 * h           # costal cartilage and sternum anteriorly
        elif k < 10:
            m &= Y >= -40.0 * h                   # false ribs end antero-laterally
        else:
            m &= Y >= 0.0                         # floating ribs
        ribs |= m
    tv.paint(ribs & in_trunk_z[:, None, None], "ribs", "cortical_bone", hu=700.0, density_g_cm3=1.5)
    sternum = (fr.box((-40.0 * h, -1e4, -15.0 * h), (140.0 * h, 1e4, 15.0 * h))
               & (Y <= -cav_ay[:, None, None] + 2.0) & (Y >= -cav_ay[:, None, None] - 10.0))
    tv.paint(sternum, "sternum", "spongiosa", hu=400.0)
    if wb:
        pelvis = wbm.paint_pelvis_and_thighs(tv, fr, h, fat_mm, body)
        bladder = wbm.pv_fraction(grid, fr, wbm.BLADDER_C, wbm.BLADDER_R, h)
        bladder *= (cavity & ~pelvis["bones"])
        paint_pv(bladder, "bladder", "water", hu=5.0)
        intestine &= ~(pelvis["bones"] | (bladder > 0))

    # ------------------------------------------------------------------ breast tissue
    gfrac = GLANDULAR_FRACTION[breast_density]
    sl = np.nonzero(breast_mask)
    if sl[0].size:
        lo = [int(a.min()) for a in sl]
        hi = [int(a.max()) + 1 for a in sl]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grf = gaussian_random_field(tuple(b - a for a, b in zip(lo, hi)), grid.spacing_mm, gcorr, rng)
        bm = breast_mask[box]
        tex = np.full(bm.shape, -np.inf)
        for side in ("right", "left"):
            c, b_r = breasts[side]["centre_mm"], breasts[side]["radii_mm"]
            zz, yy, xx = (grid.axis_mm(a)[box[a]] for a in range(3))
            rho = np.sqrt(((zz[:, None, None] - c[0]) / b_r[0]) ** 2 + ((yy[None, :, None] - c[1]) / b_r[1]) ** 2
                          + ((xx[None, None, :] - c[2]) / b_r[2]) ** 2)
            near = (np.sign(xx[None, None, :] - fr.cx) == np.sign(c[2] - fr.cx)) & bm
            tex = np.where(near, grf - 1.5 * rho, tex)
        vals = tex[bm]
        thr = np.quantile(vals, 1.0 - gfrac)
        gland = np.zeros(grid.shape, bool)
        gland[box] = bm & (tex >= thr)
        tv.paint(breast_mask, "breast_adipose", "breast_adipose")
        tv.paint(gland, "breast_gland", "breast_gland")

    # ------------------------------------------------------------------ bowel loops
    # the intestine region is a mix of bowel loops (wall + contents, tracer uptake) and mesenteric fat:
    # a thresholded random field (correlation 8 mm) puts INTESTINE_LOOP_FRACTION of it in loops.
    sl = np.nonzero(intestine)
    if sl[0].size:
        lo = [int(a.min()) for a in sl]
        hi = [int(a.max()) + 1 for a in sl]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        tex = gaussian_random_field(tuple(b - a for a, b in zip(lo, hi)), grid.spacing_mm, 8.0, rng)
        im = intestine[box]
        thr = np.quantile(tex[im], 1.0 - INTESTINE_LOOP_FRACTION)
        loops = np.zeros(grid.shape, bool)
        loops[box] = im & (tex >= thr)
        tv.paint(loops, "intestine", "soft_tissue", hu=25.0)

    # ------------------------------------------------------------------ skin (outermost in-plane voxel layer)
    inside = tv.labels > 0
    cross = np.zeros((3, 3, 3), bool)
    cross[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    skin = inside & ~ndimage.binary_erosion(inside, structure=cross, border_value=0)
    airway_ids = tv.mask_of("airway")
    tv.paint(skin & ~airway_ids, "skin", "skin")

    if noise > 0:
        tv.ct_hu += rng.normal(0.0, noise, grid.shape).astype(np.float32) * (tv.labels > 0)

    # ------------------------------------------------------------------ landmarks
    def trunk_at(zb):
        tt = float(np.clip((zb + 180.0 * h) / (60.0 * h), 0.0, 1.0))
        return (125.0 + 10.0 * tt) * h, (90.0 - 5.0 * tt) * h

    ax_c, ay_c = trunk_at(80.0 * h)
    landmarks = {
        "breasts": breasts,
        "axilla": {"right": fr.world(80.0 * h, 0.0, -(ax_c + muscle_mm + 0.6 * fat_mm)),
                   "left": fr.world(80.0 * h, 0.0, ax_c + muscle_mm + 0.6 * fat_mm)},
        "mediastinum": [fr.world(40.0 * h, -5.0 * h, 0.0), fr.world(10.0 * h, -40.0 * h, -20.0 * h),
                        fr.world(60.0 * h, -20.0 * h, 20.0 * h)],
        "spine": {"y_mm": float(spine_y + fr.cy), "x_mm": float(fr.cx), "body_radii_yx_mm": [16.0 * h, 20.0 * h],
                  "vertebra_z_mm": [fr.world(spine_ref + disc + (k + 0.5) * period - 0.5 * disc, 0, 0)[0]
                                    for k in range(int((trunk_hi - spine_ref) / period))]},
        "liver": {"centre_mm": fr.world(*liver_c), "radii_mm": list(liver_r)},
        "brain": {"centre_mm": fr.world(*head_c), "radii_mm": list(brain_r)},
        "lungs": {s: {"centre_mm": fr.world(*lung_c[s]), "radii_mm": list(lung_r[s])} for s in lung_c},
        "trunk_z_mm": [fr.world(trunk_lo, 0, 0)[0], fr.world(trunk_hi, 0, 0)[0]],
    }
    params = {"weight_kg": w, "height_cm": hcm, "bmi": float(bmi), "height_scale": float(h), "fat_mm": fat_mm,
              "breast_shape": breast_shape, "breast_volume_ml": breast_volume_param(bvol),
              "breast_density": breast_density,
              "glandular_fraction": gfrac, "body_z_at_grid_center_mm": float(body_z_at_grid_center_mm),
              "ct_noise_hu": noise, "seed": seed}
    if wb:
        params["extent"] = "whole_body"
        landmarks["bladder"] = {"centre_mm": fr.world(*(v * h for v in wbm.BLADDER_C)),
                                "radii_mm": [v * h for v in wbm.BLADDER_R]}

    def trunk_in(zw, yw, xw, with_fat: bool):
        """Body coordinates of world points and whether they lie in the trunk's wall ellipse (the painted
        ``wall``), or with ``with_fat`` in the trunk outline (``trunk``), by the painting's formulas."""
        zb = np.asarray(zw, float) - fr.dz
        yb = np.asarray(yw, float) - fr.cy
        xb = np.asarray(xw, float) - fr.cx
        tt = np.clip((zb + 180.0 * h) / (60.0 * h), 0.0, 1.0)
        ax = (125.0 + 10.0 * tt) * h + muscle_mm
        ay = (90.0 - 5.0 * tt) * h + muscle_mm
        if with_fat:
            ax = ax + fat_mm * (1.25 - 0.25 * tt)
            ay = ay + fat_mm * (1.25 - 0.25 * tt)
        inside = ((yb / ay) ** 2 + (xb / ax) ** 2 <= 1.0) & (zb >= trunk_lo) & (zb <= trunk_hi)
        return zb, yb, xb, inside

    def body_inside(zw, yw, xw):
        """Analytic body outline (world mm)."""
        zb, yb, xb, tr = trunk_in(zw, yw, xw, True)
        nk = (((yb - 5.0 * h) / neck_r[0]) ** 2 + (xb / neck_r[1]) ** 2 <= 1.0) & (zb >= trunk_hi) & (zb <= neck_hi)
        if wb:
            hd = ((((zb - brain_c[0]) / cran_r[0]) ** 2 + ((yb - brain_c[1]) / cran_r[1]) ** 2
                   + (xb / cran_r[2]) ** 2) <= 1.0)
            fc, fr_ = tuple(v * h for v in wbm.FACE_C), tuple(v * h for v in wbm.FACE_R)
            hd |= ((zb - fc[0]) / fr_[0]) ** 2 + ((yb - fc[1]) / fr_[1]) ** 2 + (xb / fr_[2]) ** 2 <= 1.0
        else:
            hd = ((zb - head_c[0]) / head_r[0]) ** 2 + ((yb - head_c[1]) / head_r[1]) ** 2 + (xb / head_r[2]) ** 2 <= 1.0
        br = np.zeros(np.broadcast_shapes(np.shape(zb), np.shape(yb), np.shape(xb)), bool)
        for side in breasts.values():
            c, b_r = side["centre_mm"], side["radii_mm"]
            br |= (((zw - c[0]) / b_r[0]) ** 2 + ((yw - c[1]) / b_r[1]) ** 2 + ((xw - c[2]) / b_r[2]) ** 2 <= 1.0)
        out = tr | nk | hd | br
        if wb:
            zz = np.broadcast_to(np.asarray(zw, np.float64) - fr.dz, out.shape)

            class _P:  # body-coordinate points for the thigh masks
                z, y, x = zz, np.broadcast_to(yb, out.shape), np.broadcast_to(xb, out.shape)
            out = out | wbm.thigh_masks(_P, h, fat_mm, trunk_lo + 30.0 * h)[0]
        return out

    def chest_wall_inside(zw, yw, xw):
        """The painted chest/abdominal wall and all deep of it (``wall`` above; world mm)."""
        return trunk_in(zw, yw, xw, False)[3]

    return TorsoAnatomy(volume=tv, landmarks=landmarks, params=params, body_inside=body_inside,
                        chest_wall_inside=chest_wall_inside, pv_organs=pv_organs)


def check_in_body(anatomy: TorsoAnatomy, field_name: str, point_mm) -> None:
    """Raise :class:`ConfigError` naming ``field_name`` when a world point (z, y, x mm) is outside the body."""
    p = [float(v) for v in point_mm]
    if not bool(anatomy.body_inside(p[0], p[1], p[2])):
        raise ConfigError(f"{field_name} = {[round(v, 1) for v in p]} mm lies outside the patient body outline")
