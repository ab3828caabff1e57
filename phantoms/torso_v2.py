"""Female torso, anatomy version 2: implicit surfaces, sub-voxel edges, a shoulder girdle and a four-chamber heart.

Opt-in (patient-spec key ``anatomy = "v2"``; the default ``"v1"`` is :func:`her2sim.phantoms.torso.torso_anatomy`,
unchanged bit for bit). Returns the same :class:`~her2sim.phantoms.torso.TorsoAnatomy` (volume, landmarks,
params, body_inside) plus ``fractions``, the sub-voxel composition of every boundary voxel, which
:func:`her2sim.phantoms.patient.patient_phantom` uses to conserve activity.

Coordinates
-----------
As in v1: *body coordinates* in mm, x -> patient left, y -> posterior, z -> superior (LPS), ``z = 0`` at the
nipple level and ``x = y = 0`` on the trunk axis, which sits on the grid centre in x/y;
``body_z_at_grid_center_mm`` chooses the body level at the grid centre. Every length below is given for the
160 cm reference and multiplied by ``h = height_cm / 160`` (skeleton and organs scale with height, as in v1);
the subcutaneous fat thickness follows the body-mass index with v1's rule ``fat = 6 + 1.6 (BMI - 18)`` mm
(4-60 mm; 1.25 x that over the abdomen), an assumption that reproduces the weight slope of the Heinz et al. fit
(about 1.2 mm of chest diameter per kg, :mod:`her2sim.phantoms.anthropometry`); above the reference BMI the
layer grows faster over the abdomen and the shoulder girdle (:data:`ABDOMEN_FAT_EXTRA`), so waist and chest girths
follow the fit's weight slopes too (tested at 150 cm / 45 kg, 163 / 60 and 160 / 95: every dimension within 1 SD).

Method (sub-voxel edges)
------------------------
Every structure is an implicit solid ``inside(z, y, x)`` (body mm) and the structures are painted in order
(later ones on top), exactly like v1 but on points instead of voxels:

1. the label of every voxel centre is computed;
2. a voxel is a *boundary voxel* when its 3 x 3 x 3 neighbourhood holds more than one structure, when it lies
   within half a voxel diagonal of a thin structure (ribs, sternum, scapulae, clavicles, cardiac blood pools:
   they cannot hide between voxel centres) or next to air (the skin);
3. each boundary voxel is supersampled on an ``n^3`` lattice of sub-points (``n = ceil(spacing / 1.2 mm)``,
   at least 2), evaluating only the structures of its neighbourhood (with their nested families: heart,
   spine, kidney, pelvic bones) plus the body / muscle / cavity layers;
   the share of sub-points per structure is its voxel *fraction*;
4. density and CT number are fraction-weighted means (air fills the rest), the label and the material are the
   majority's (air included: a boundary voxel mostly outside the body is background), and the fractions are
   kept (``TorsoAnatomy.fractions``) so the patient phantom mixes activity as ``sum_s f_s SUV_s``.

So a structure's volume (and its activity) is the same on every grid to the supersampling accuracy, including
the 1.45 mm skin (Huang et al., Med Phys 38:1590, 2011, breast-CT skin thickness 1.45 +/- 0.30 mm; used for
the whole body, an assumption) that no clinical voxel can hold: at 4.42 mm the skin is never a majority, so it
carries no label, but it is there in density and activity. ``params["label_volume_ml"]`` and
``params["label_mass_g"]`` give each label's volume and mass from the fractions.

Anatomy (sizes at 160 cm; sources and assumptions)
--------------------------------------------------
* **Body outline**: a trunk whose cross-section is an ellipse with different anterior and posterior
  semi-axes, tabulated against z (:data:`TRUNK_PROFILE`), a pectoral bulge, the shoulder girdle widening the
  trunk above the breasts (scapulae, pectoral and latissimus folds, deltoids) and, smoothly joined to it (a
  polynomial smooth minimum of approximate signed distances, radius :data:`FOLD_MM`), the breasts, the neck,
  the head (v1's whole-body head: brain 1300 g) and the arms. The profile is set so that the reference female
  (163 cm, 60 kg) meets the Heinz et al. (2003) anthropometric fit: chest depth 177, chest diameter 261, chest
  girth 861 (a girth just above the breasts, which in women passes the axillae) and waist girth 700 mm.
* **Arms**: raised *beside the head* (shoulders abducted, upper arms alongside the head, the SPECT/CT position
  for chest imaging): each arm is a fat-over-muscle capsule (radius 40 mm + 0.7 x fat) from the shoulder joint
  upward, with the humerus (head, radius 22 mm, in the glenoid; shaft radius 11 mm) inside.
* **Shoulder girdle**: clavicles (S-shaped swept tubes, radius 7 mm, sternoclavicular joint to acromion, raised
  with the arms), scapulae (curved 6 mm plates over the postero-lateral ribs, assumption: the blade is 2-4 mm
  and its borders and spine thicker; with raised arms they rotate so the inferior angle moves laterally),
  pectoral muscles (the anterior chest-wall muscle between the sternal border and the anterior axillary fold,
  10 mm over the ribs) and the axillary fat pads (ellipsoids lateral to the rib cage between the pectoral and
  the latissimus folds; the ``axilla`` landmarks are their centres).
* **Rib cage and lungs**: the thoracic cavity is an elliptic cross-section tabulated against z that narrows to
  the apex; 12 pairs of ribs are 8 x 11 mm bands that follow its surface, descending by 0.35 mm per mm towards
  the front (true ribs end at the costal cartilages 28 mm from the midline, false ribs antero-laterally,
  floating ribs at mid-axilla). The lungs fill the cavity above the diaphragm (two domes, the right one
  higher), 1 mm inside the ribs (pleura), outside the mediastinum, so they take the shape
  of the rib cage.
* **Heart**: an ellipsoid oriented along the cardiac long axis (base right-posterior-superior to apex
  left-anterior-inferior) holding four blood pools, LV, RV, LA and RA (labels ``heart_lv``, ``heart_rv``,
  ``heart_la``, ``heart_ra``, blood); the rest is the myocardium (``heart_wall``), sized for ICRP 89's 250 g.
* **Great vessels**: aorta (root, ascending aorta, arch, descending thoracic and abdominal aorta) and vena
  cava (superior and inferior) as curved swept tubes (Catmull-Rom centrelines, radius 14 -> 9 mm aorta, 9 mm
  SVC, 11 mm IVC; adult female typical diameters, assumption); trachea and main bronchi likewise.
* **Abdomen**: liver under the right dome (sized for 1400 g), stomach, spleen (130 g), kidneys (cortex and
  medulla, 275 g both), bowel region (loops / mesentery by a seeded random field, as v1); spine with vertebral
  bodies (cortical shell, spongiosa), arches, spinous processes and the canal, and the paravertebral muscles.
* **Breasts**: v1's parameters (volume per breast, BI-RADS density A-D, shape ``supine`` / ``pendant`` /
  ``prone`` semi-axis ratios), an ellipsoid centred on the pectoral surface, the mound in front of the muscle;
  its size is solved so that the mound (skin excluded) has the requested volume, and its lateral side is kept
  inside the chest outline. It joins the chest with a smooth fold (radius :data:`FOLD_MM`) under the skin.
  Landmarks: ``ellipsoid_radii_mm`` is that ellipsoid, ``radii_mm`` the same with its lateral semi-axis shrunk
  until its front part lies in the painted (laterally rounded) breast, which is what lesion placement offsets
  and measures depth with, so primaries at any clock position stay in the breast.

Reference masses (ICRP Publication 89, 2002, adult female, table 2.8, g): liver 1400, kidneys 275, spleen 130,
lungs 950 (with blood; lung tissue at 0.26 g/cm^3 is 3.65 L), heart wall 250, thyroid 17, breasts 500 (both),
brain 1300; the organ sizes below are set for them at the ICRP reference height 163 cm (``h = 1.019``) and
checked by ``tests/phantoms/test_torso_v2.py`` and ``bench/phantom_realism.py --anatomy v2``.

Not modelled: forearms and hands (the arms end above the head), oesophagus, pancreas, costal cartilage (soft
tissue); pelvis, thighs and bladder only with ``extent="whole_body"``, which adds, as implicit structures with
v1's shapes and constants (:mod:`her2sim.phantoms.whole_body`: :func:`~her2sim.phantoms.whole_body.thigh_axes`,
:func:`~her2sim.phantoms.whole_body.pelvis_parts`, :func:`~her2sim.phantoms.whole_body.femur_parts`,
``BLADDER_C`` / ``BLADDER_R``), the hips (the trunk continued to the gluteal fold, -470 mm, joined to the thighs
by a 20 mm smooth union), the thighs to mid-thigh (-630 mm; fat over muscle), the bony pelvis and femurs
(a family of nested thin structures) and the bladder content (its activity from the excreted fraction,
:func:`her2sim.phantoms.patient.patient_phantom`). The raised arms reach above the vertex, out of
:func:`~her2sim.phantoms.whole_body.whole_body_grid`'s field.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from her2sim.core.errors import check_choice
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_IDS, get_material

from . import whole_body as wbm
from .heterogeneity import gaussian_random_field
from .tissue_volume import NOMINAL_HU, TissueVolume
from .breast_statistics import glandular_fraction_by_density
from .torso import (BREAST_SHAPES, INTESTINE_LOOP_FRACTION, REFERENCE_HEIGHT_CM,
                    REFERENCE_WEIGHT_KG, TorsoAnatomy, breast_volume_param, check_torso_options)

#: anatomy versions of the patient phantom (studies default to ``v2``; the library's ``patient_phantom`` keeps
#: ``v1``, the fast analytic torso, when a spec names none)
ANATOMIES = ("v1", "v2")
#: volumetric glandular fraction per BI-RADS class (Yaffe et al. 2009 and the BI-RADS 5th-edition shares, see
#: :mod:`her2sim.phantoms.breast_statistics`): A 5.5 %, B 11.3 %, C 22.1 %, D 45.0 %
GLANDULAR_FRACTION_V2 = glandular_fraction_by_density()
#: skin thickness (mm): Huang et al., Med Phys 38:1590 (2011), breast CT, 1.45 +/- 0.30 mm (used everywhere)
SKIN_MM = 1.45
#: radius (mm) of the smooth folds where breasts, arms and neck join the trunk (assumption)
FOLD_MM = 12.0
#: target sub-sample spacing (mm) of boundary voxels
SUBSAMPLE_MM = 1.2

#: trunk profile against body z (mm, 160 cm reference): thoracic / abdominal cavity (inside the ribs and the
#: abdominal wall: half-width, anterior and posterior semi-axes) and the muscle envelope under the
#: subcutaneous fat (same), before the shoulder girdle and the pectoral bulge are added. Chosen so the
#: reference female meets the Heinz et al. (2003) fit (module docstring); cavity narrowing to the lung apices.
TRUNK_PROFILE = {
    "z":      (-430., -300., -250., -180., -120., -40., 0., 40., 80., 120., 150., 175.),
    "cav_x":  (112., 98., 96., 106., 112., 110., 106., 100., 93., 82., 66., 48.),
    "cav_a":  (66., 66., 66., 66., 66., 66., 64., 60., 55., 48., 42., 36.),
    "cav_p":  (60., 62., 62., 62., 62., 59., 57., 55., 52., 47., 40., 34.),
    "mus_x":  (126., 112., 110., 120., 124., 122., 118., 111., 102., 88., 71., 59.),
    "mus_a":  (80., 80., 80., 80., 80., 78., 76., 72., 68., 62., 56., 50.),
    "mus_p":  (76., 76., 76., 76., 76., 76., 76., 74., 71., 68., 64., 60.),
}
#: shoulder girdle: widening of the muscle envelope above the breasts (mm; scapulae, axillary folds, deltoids)
GIRDLE_PROFILE = {"z": (15., 55., 120., 150., 175.), "x": (0., 46., 72., 70., 40.), "a": (0., 8., 12., 10., 0.),
                  "p": (0., 12., 22., 20., 5.)}
#: fat thickness (mm) of the ICRP 89 reference female (163 cm, 60 kg, BMI 22.6) by v1's rule: the patient the
#: outline is calibrated on
FAT_REF_MM = 6.0 + 1.6 * (60.0 / 1.63 ** 2 - 18.0)
#: extra growth of the fat layer per mm of fat above the reference, over the abdomen and the shoulder girdle
#: (assumption: calibrated so that waist and chest girths follow the Heinz et al. weight slopes, 7.7 and
#: 5.9 mm/kg, where v1's uniform layer gives about 4.7 and 3.8 mm/kg; abdominal fat grows faster than the chest's)
ABDOMEN_FAT_EXTRA, GIRDLE_FAT_EXTRA = 0.8, 0.56
#: pectoral bulge (mm) over the anterior chest wall
PECTORAL_MM = 10.0
#: vertebral-body centre y (mm) against z
SPINE_PROFILE = {"z": (-430., -250., -120., 0., 120., 175., 330.), "y": (22., 18., 22., 22., 20., 15., 15.)}
TRUNK_LO, TRUNK_HI, NECK_HI = -430.0, 175.0, 320.0

# centrelines (z, y, x mm at 160 cm) and radii of the swept tubes
AORTA = (((-25., -15., 10.), 14.), ((0., -20., 8.), 14.), ((35., -18., 5.), 13.), ((55., -8., 4.), 12.),
         ((62., 5., 9.), 12.), ((56., 16., 18.), 11.), ((40., 18., 26.), 11.), ((0., 15., 28.), 11.),
         ((-100., 6., 24.), 10.5), ((-180., -4., 15.), 10.), ((-250., -10., 8.), 9.), ((-340., -10., 6.), 9.))
SVC = (((135., -24., -22.), 9.), ((60., -26., -24.), 9.), ((0., -24., -25.), 9.5), ((-15., -22., -24.), 10.))
IVC = (((-75., -5., -22.), 11.), ((-150., 5., -24.), 11.), ((-250., -6., -22.), 10.), ((-340., -8., -20.), 10.))
TRACHEA = (((330., -24., 0.), 8.), ((200., -16., 0.), 8.), ((110., -6., 0.), 8.), ((45., 2., 0.), 8.))
BRONCHI = {s: (((45., 2., 0.), 5.5), ((32., 6., s * 25.), 5.5), ((20., 10., s * 48.), 5.0)) for s in (-1.0, 1.0)}
CLAVICLE = (((118., -52., 20.), 7.), ((128., -58., 68.), 7.), ((150., -38., 110.), 7.), ((165., 2., 132.), 7.))
#: thyroid semi-axes relative to the whole-body extent's (sized there for 17 g at 160 cm incl. the isthmus they
#: give 18.6 g); 0.957 gives 17 g at the ICRP reference height 163 cm
THYROID_SCALE = 0.957
#: brain and cranium semi-axes relative to the whole-body extent's (1300 g at 160 cm): 1300 g at 163 cm
BRAIN_SCALE = (160.0 / 163.0)
#: heart: centre (z, y, x), long-axis direction towards the apex, outer semi-axes (u along the axis, v, w)
HEART_C = (-45.0, -24.0, 18.0)
HEART_AXIS = (-0.50, -0.55, 0.67)
HEART_R = (60.5, 44.0, 45.0)
#: blood pools in the heart frame (u apex-ward, v anterior, w towards the patient's left): centre, semi-axes.
#: About 280 mL of blood at 163 cm (ICRP 89: some 350 mL of blood in the heart chambers; ellipsoids inside an
#: ellipsoid hold less), leaving the 250 g myocardium; walls ~6-10 mm (LV), ~3-5 mm (RV), 1-3 mm (atria).
HEART_CHAMBERS = {"heart_lv": ((8., -8., 12.), (46., 25., 25.)), "heart_rv": ((2., 24., -10.), (44., 16., 26.)),
                  "heart_la": ((-38., -16., 10.), (22., 16., 24.)), "heart_ra": ((-30., 8., -22.), (24., 18., 17.))}


# ---------------------------------------------------------------------------------------------- helpers
def check_anatomy(anatomy) -> str:
    """``anatomy`` must be one of :data:`ANATOMIES` (ConfigError naming the field and the choices)."""
    return check_choice("anatomy", anatomy, ANATOMIES)


def _smin(a, b, k):
    """Polynomial smooth minimum (union of signed distances with a fillet of radius ~k)."""
    hh = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * hh - k * hh * (1.0 - hh)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


def _ell2_sdf(x, y, ax, ay):
    """Approximate signed distance (mm) to the ellipse (x/ax)^2 + (y/ay)^2 = 1 (first order, g / |grad g|)."""
    u, v = x / ax, y / ay
    g = u * u + v * v - 1.0
    grad = 2.0 * np.sqrt((u / ax) ** 2 + (v / ay) ** 2) + 1e-6
    return g / grad


def _ell3_sdf(z, y, x, c, r):
    u, v, w = (z - c[0]) / r[0], (y - c[1]) / r[1], (x - c[2]) / r[2]
    g = u * u + v * v + w * w - 1.0
    grad = 2.0 * np.sqrt((u / r[0]) ** 2 + (v / r[1]) ** 2 + (w / r[2]) ** 2) + 1e-6
    return g / grad


def _ell3(z, y, x, c, r, pad=0.0):
    return (((z - c[0]) / (r[0] + pad)) ** 2 + ((y - c[1]) / (r[1] + pad)) ** 2
            + ((x - c[2]) / (r[2] + pad)) ** 2) <= 1.0


def _catmull_rom(points, radii, per_segment: int = 6):
    """Densify a centreline (Catmull-Rom spline through the control points) with linearly varying radius."""
    p = np.asarray(points, float)
    r = np.asarray(radii, float)
    pp = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out, rad = [], []
    for i in range(len(p) - 1):
        p0, p1, p2, p3 = pp[i], pp[i + 1], pp[i + 2], pp[i + 3]
        for t in np.linspace(0.0, 1.0, per_segment, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
            rad.append(r[i] + (r[i + 1] - r[i]) * t)
    out.append(p[-1])
    rad.append(r[-1])
    return np.asarray(out), np.asarray(rad)


class _Tube:
    """Swept tube: union of capsules along a densified centreline (body mm), radius varying along it."""

    def __init__(self, spec, h: float, extra=0.0):
        pts = [tuple(v * h for v in p) for p, _ in spec]
        rad = [r * h + extra for _, r in spec]
        self.p, self.r = _catmull_rom(pts, rad)
        lo = self.p.min(axis=0) - self.r.max()
        hi = self.p.max(axis=0) + self.r.max()
        self.bbox = (tuple(lo), tuple(hi))

    def sdf(self, z, y, x):
        best = None
        for i in range(len(self.p) - 1):
            a, b = self.p[i], self.p[i + 1]
            d = b - a
            L2 = float(d @ d) or 1e-9
            rz, ry, rx = z - a[0], y - a[1], x - a[2]
            t = np.clip((rz * d[0] + ry * d[1] + rx * d[2]) / L2, 0.0, 1.0)
            dist = np.sqrt((rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2)
            s = dist - (self.r[i] + (self.r[i + 1] - self.r[i]) * t)
            best = s if best is None else np.minimum(best, s)
        return best

    def inside(self, z, y, x, pad=0.0):
        return self.sdf(z, y, x) <= pad


class _Structure:
    __slots__ = ("name", "label", "fn", "lo", "hi", "thin")

    def __init__(self, name, label, fn, lo, hi, thin=False):
        self.name, self.label, self.fn, self.lo, self.hi, self.thin = name, label, fn, lo, hi, thin


#: label -> (material, HU or None for the material's nominal HU, density g/cm^3 or None for the material's)
LABEL_TISSUE = {
    "fat": ("adipose", None, None), "muscle": ("muscle", None, None), "pectoralis": ("muscle", None, None),
    "axillary_fat": ("adipose", None, None), "soft_tissue": ("soft_tissue", None, None),
    "lungs": ("lung", None, None), "airway": ("air", None, None), "heart_wall": ("muscle", None, None),
    "heart_lv": ("blood", None, None), "heart_rv": ("blood", None, None), "heart_la": ("blood", None, None),
    "heart_ra": ("blood", None, None), "aorta": ("blood", None, None), "vena_cava": ("blood", None, None),
    "liver": ("liver", None, None), "stomach": ("soft_tissue", 30.0, None), "spleen": ("spleen", None, None),
    "kidney_cortex": ("kidney", None, None), "kidney_medulla": ("kidney", None, None),
    "intestine": ("soft_tissue", 25.0, None), "mesentery": ("adipose", -80.0, None),
    "spine_cortical": ("cortical_bone", None, None), "spine_marrow": ("spongiosa", None, None),
    "spinal_canal": ("soft_tissue", 20.0, None),
    # ribs, clavicles, scapulae, humeri: cortical / marrow mixture as v1's ribs (assumption)
    "ribs": ("cortical_bone", 700.0, 1.5), "clavicle": ("cortical_bone", 700.0, 1.5),
    "scapula": ("cortical_bone", 700.0, 1.5), "humerus": ("cortical_bone", 700.0, 1.5),
    "sternum": ("spongiosa", 400.0, None), "thyroid": ("soft_tissue", 100.0, None),
    "salivary_glands": ("soft_tissue", None, None), "brain": ("soft_tissue", 35.0, None),
    "skull": ("cortical_bone", None, None), "breast_adipose": ("breast_adipose", None, None),
    "breast_gland": ("breast_gland", None, None), "skin": ("skin", None, None),
    # whole-body extent: bony pelvis and femurs, bladder content (v1's tissues, :mod:`her2sim.phantoms.whole_body`)
    "pelvis_cortical": ("cortical_bone", None, None), "pelvis_marrow": ("spongiosa", None, None),
    "femur_cortical": ("cortical_bone", None, None), "femur_marrow": ("red_marrow", None, None),
    "bladder": ("water", 5.0, None),
}
#: geometric structures split into two labels by a thresholded random field (label, other label, share of label)
_TEXTURED = {"breast": ("breast_gland", "breast_adipose"), "bowel": ("intestine", "mesentery")}


def _tissue(label):
    mat, hu, rho = LABEL_TISSUE[label]
    m = get_material(mat)
    return (MATERIAL_IDS[m.name], float(NOMINAL_HU.get(m.name, 0.0) if hu is None else hu),
            float(m.density_g_cm3 if rho is None else rho))


# ---------------------------------------------------------------------------------------------- the body
class _Body:
    """All structures of the v2 torso in body coordinates (mm), for one patient."""

    def __init__(self, h: float, fat_mm: float, breast_shape: str, breast_volume_ml: float,
                 whole_body: bool = False):
        self.h, self.fat = h, fat_mm
        self.wb = bool(whole_body)
        # bottom of the trunk: the torso's -430 mm, or the gluteal fold in the whole-body extent (hips)
        self.trunk_lo = (wbm.HIP_BOTTOM_MM if self.wb else TRUNK_LO) * h
        self.thigh_top = self.trunk_lo + 30.0 * h                     # v1's thigh top (overlaps the hips)
        P = TRUNK_PROFILE
        self.pz = np.asarray(P["z"]) * h
        self.prof = {k: np.asarray(v) * h for k, v in P.items() if k != "z"}
        self.gz = np.asarray(GIRDLE_PROFILE["z"]) * h
        self.gir = {k: np.asarray(v) * h for k, v in GIRDLE_PROFILE.items() if k != "z"}
        self.sz = np.asarray(SPINE_PROFILE["z"]) * h
        self.sy = np.asarray(SPINE_PROFILE["y"]) * h
        self.arm_r = 40.0 * h + 0.7 * fat_mm
        self.arm_fat = 0.7 * fat_mm
        self.shoulder = {s: (140.0 * h, 12.0 * h, s * 126.0 * h) for s in (-1.0, 1.0)}
        self.hand = {s: (560.0 * h, 25.0 * h, s * 135.0 * h) for s in (-1.0, 1.0)}
        self.elbow = {s: (430.0 * h, 22.0 * h, s * 133.0 * h) for s in (-1.0, 1.0)}
        self.neck_r = (55.0 * h + 0.4 * fat_mm, 58.0 * h + 0.4 * fat_mm)       # (y, x), v1
        self.brain_c = tuple(v * h for v in wbm.BRAIN_C)
        self.brain_r = tuple(v * h * BRAIN_SCALE for v in wbm.BRAIN_R)
        self.cran_r = tuple(v + wbm.SKULL_MM for v in self.brain_r)
        self.face_c = tuple(v * h for v in wbm.FACE_C)
        self.face_r = tuple(v * h for v in wbm.FACE_R)
        self.aorta = _Tube(AORTA, h)
        self.svc = _Tube(SVC, h)
        self.ivc = _Tube(IVC, h)
        self.trachea = _Tube(TRACHEA, h)
        self.bronchi = [_Tube(BRONCHI[s], h) for s in (-1.0, 1.0)]
        self.clav = {s: _Tube(tuple(((p[0], p[1], s * p[2]), r) for p, r in CLAVICLE), h) for s in (-1.0, 1.0)}
        u = np.asarray(HEART_AXIS, float)
        u /= np.linalg.norm(u)
        a = np.array([0.0, -1.0, 0.0])                     # anterior
        v = a - (a @ u) * u
        v /= np.linalg.norm(v)
        w = np.cross(u, v)
        if w[2] < 0:                                       # w towards the patient's left (+x)
            w = -w
        self.heart_frame = (u, v, w)
        self.heart_c = np.asarray(HEART_C) * h
        self.breasts = {}
        self._setup_breasts(breast_shape, breast_volume_ml)

    # ------------------------------------------------------------------ profiles
    def _p(self, key, z):
        return np.interp(z, self.pz, self.prof[key]).astype(np.float32)

    def _g(self, key, z):
        return np.interp(z, self.gz, self.gir[key]).astype(np.float32)

    def fat_at(self, z):
        """Subcutaneous fat thickness (mm) at body level z: v1's rule (1.25 x over the abdomen) plus, above the
        reference BMI, the extra growth over the abdomen and the shoulder girdle (:data:`ABDOMEN_FAT_EXTRA`)."""
        h = self.h
        t = np.clip((z - (-180.0 * h)) / (60.0 * h), 0.0, 1.0)               # 1 chest, 0 abdomen
        girdle = np.clip((z - 15.0 * h) / (40.0 * h), 0.0, 1.0)
        t2 = np.clip((z - (-120.0 * h)) / (80.0 * h), 0.0, 1.0)              # the extra reaches the lower ribs
        excess = max(self.fat - FAT_REF_MM, 0.0)
        return self.fat * (1.25 - 0.25 * t) + excess * (ABDOMEN_FAT_EXTRA * (1.0 - t2) + GIRDLE_FAT_EXTRA * girdle)

    def _pect(self, z, x, mx):
        h = self.h
        wz = np.clip((z + 60.0 * h) / (30.0 * h), 0.0, 1.0) * np.clip((150.0 * h - z) / (40.0 * h), 0.0, 1.0)
        ax = np.abs(x)
        wx = np.clip((ax - 12.0 * h) / (18.0 * h), 0.0, 1.0) * np.clip((mx - ax) / (0.2 * mx), 0.0, 1.0)
        return PECTORAL_MM * h * wz * wx

    def muscle_axes(self, z, x):
        mx = self._p("mus_x", z) + self._g("x", z)
        ma = self._p("mus_a", z) + self._g("a", z)
        mp = self._p("mus_p", z) + self._g("p", z)
        return mx, ma + self._pect(z, x, mx), mp

    def trunk_sdf(self, z, y, x, extra=0.0):
        """Signed distance of the trunk outline grown by ``extra`` mm over the muscle envelope."""
        mx, ma, mp = self.muscle_axes(z, x)
        ay = np.where(y < 0, ma, mp)
        d = _ell2_sdf(x, y, mx + extra, ay + extra)
        d = np.maximum(d, self.trunk_lo - z)
        return _smax(d, z - TRUNK_HI * self.h, 25.0 * self.h)

    def thigh_sdf(self, z, y, x, inset=0.0):
        """Signed distance (mm, first order) of the two thighs (:func:`her2sim.phantoms.whole_body.thigh_axes`,
        top at the gluteal fold + 30 mm, bottom at mid-thigh); ``inset`` shrinks both semi-axes (mm), e.g. by
        the thigh's fat layer for the muscle."""
        inz, cx, cy, ax, ay, fat = wbm.thigh_axes(z, self.h, self.fat, self.thigh_top)
        d = None
        for s in (-1.0, 1.0):
            ds = _ell2_sdf(x - s * cx, y - cy, ax - inset, ay - inset)
            d = ds if d is None else np.minimum(d, ds)
        return np.maximum(d, np.maximum(z - self.thigh_top, wbm.MID_THIGH_MM * self.h - z))

    def cavity_in(self, z, y, x, grow=0.0):
        cx, ca, cp = self._p("cav_x", z), self._p("cav_a", z), self._p("cav_p", z)
        ay = np.where(y < 0, ca, cp) + grow
        return ((x / (cx + grow)) ** 2 + (y / ay) ** 2 <= 1.0) & (z >= TRUNK_LO * self.h) & (z <= TRUNK_HI * self.h)

    def _arm_sdf(self, z, y, x, side, r):
        a, b = np.asarray(self.shoulder[side]), np.asarray(self.hand[side])
        d = b - a
        L2 = float(d @ d)
        rz, ry, rx = z - a[0], y - a[1], x - a[2]
        t = np.clip((rz * d[0] + ry * d[1] + rx * d[2]) / L2, 0.0, 1.0)
        return np.sqrt((rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2) - r

    def _neck_sdf(self, z, y, x):
        d = _ell2_sdf(x, y - 5.0 * self.h, self.neck_r[1], self.neck_r[0])
        return np.maximum(d, np.maximum(130.0 * self.h - z, z - NECK_HI * self.h))

    def _head_sdf(self, z, y, x):
        return np.minimum(_ell3_sdf(z, y, x, self.brain_c, self.cran_r), _ell3_sdf(z, y, x, self.face_c, self.face_r))

    def _breast_sdf(self, z, y, x, b, grow=0.0):
        c, r = b["c"], b["r"]
        d = _ell3_sdf(z, y, x, c, tuple(v + grow for v in r))
        # the breast stays within the chest's width: a rounded (elliptic) antero-lateral limit, not a flat cut
        return np.maximum(d, _ell2_sdf(x, y, b["x_limit"], b["y_limit"]))

    def body_sdf(self, z, y, x):
        fat = self.fat_at(z)
        d = self.trunk_sdf(z, y, x, fat)
        if self.wb:                                                   # hips flow into the thighs
            d = _smin(d, self.thigh_sdf(z, y, x), 20.0 * self.h)
        for b in self.breasts.values():
            d = _smin(d, self._breast_sdf(z, y, x, b), FOLD_MM)
        d = _smin(d, self._neck_sdf(z, y, x), 15.0 * self.h)
        for s in (-1.0, 1.0):
            d = _smin(d, self._arm_sdf(z, y, x, s, self.arm_r), 20.0 * self.h)
        return np.minimum(d, self._head_sdf(z, y, x))

    # ------------------------------------------------------------------ breasts
    def _setup_breasts(self, shape, volumes_ml):
        """Solve each breast's ellipsoid size so that its mound (skin excluded) holds the requested volume
        (``volumes_ml``: ``{"right", "left"}`` mL; equal volumes are solved once, on the left side)."""
        kx, ky, kz = BREAST_SHAPES[shape]
        solved = {}
        for s, name in ((1.0, "left"), (-1.0, "right")):
            vol_ml = volumes_ml[name]
            if vol_ml not in solved:
                solved[vol_ml] = self._solve_breast_r0(kx, ky, kz, vol_ml, s)
            self.breasts[name] = self._breast_geometry(solved[vol_ml], kx, ky, kz, self.h, s)
        self.breasts = {k: self.breasts[k] for k in ("right", "left")}

    def _solve_breast_r0(self, kx, ky, kz, vol_ml, side):
        h = self.h
        r0 = (3.0 * vol_ml * 1000.0 / (2.0 * np.pi * kx * ky * kz)) ** (1.0 / 3.0)
        # quasi-random sample of the unit box (fixed: the solve is deterministic)
        n = 60000
        idx = np.arange(1, n + 1)
        u = np.stack([np.modf(idx * a)[0] for a in (0.8191725134, 0.6710436067, 0.5497004779)], axis=1) * 2.0 - 1.0
        for _ in range(10):
            b = self._breast_geometry(r0, kx, ky, kz, h, side)
            r = np.asarray(b["r"])
            c = np.asarray(b["c"])
            pts = c + u * r                                     # box around the ellipsoid
            inside = self.breast_in(pts[:, 0], pts[:, 1], pts[:, 2], b) & (self.skin_depth(pts[:, 0], pts[:, 1],
                                                                                             pts[:, 2], [b]) < -SKIN_MM)
            v = float(inside.mean()) * float(np.prod(2.0 * r)) / 1000.0
            if v <= 0:
                break
            ratio = vol_ml / v
            r0 *= ratio ** (1.0 / 3.0)
            if abs(ratio - 1.0) < 0.002:
                break
        return r0

    def _breast_geometry(self, r0, kx, ky, kz, h, side=1.0):
        r = (kz * r0, ky * r0, kx * r0)
        xc = side * (76.0 * h + 0.15 * r0)
        mx, ma, _ = self.muscle_axes(np.float32(0.0), np.float32(xc))
        mx, ma = float(mx), float(ma)
        ym = -ma * math.sqrt(max(1.0 - (xc / mx) ** 2, 0.05))
        x_limit = mx + self.fat - 3.0
        # anterior semi-axis of the limit: 10 mm in front of the nipple plane out to 0.3 of the breast's lateral
        # radius beyond its centre line, so only the far lateral side is rounded (lesion placement uses the
        # breast ellipsoid's surface)
        xr = min(abs(xc) + 0.3 * r[2], 0.95 * x_limit)
        y_limit = (-ym + r[1] + 10.0) / math.sqrt(max(1.0 - (xr / x_limit) ** 2, 0.1))
        return {"c": (0.0, ym, xc), "r": r, "ym": ym, "x_limit": x_limit, "y_limit": y_limit, "side": side}

    def inscribed_breast_radii(self, b) -> tuple:
        """Radii (z, y, x) of the breast ellipsoid with its lateral semi-axis shrunk until its front part lies in
        the painted breast (skin excluded): the ``radii_mm`` landmark lesion placement works with.

        The painted breast is the ellipsoid cut by the chest's lateral limit and the midline; lesion placement
        (:func:`her2sim.phantoms.lesions._breast_location`) offsets lesions by fractions of these radii from the
        centre and measures their depth from this ellipsoid's front surface, so a lesion placed with them
        stays inside the breast. The protrusion and the cranio-caudal semi-axes are unchanged.
        """
        c, r = np.asarray(b["c"], float), np.asarray(b["r"], float)
        th = np.linspace(0.0, np.pi, 25)[1:-1]                 # front half: angle from the nipple axis
        ph = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
        T, P = np.meshgrid(th * 0.5, ph, indexing="ij")        # polar angle 0..pi/2 from the -y (anterior) axis
        uy = -np.cos(T)
        uz = np.sin(T) * np.cos(P)
        ux = np.sin(T) * np.sin(P)
        keep = uy <= -0.4                                        # the front part (lesions sit there by default)
        uy, uz, ux = uy[keep], uz[keep], ux[keep]

        def fits(rx):
            m = SKIN_MM + 1.0                                    # under the skin, 1 mm margin
            z = c[0] + (r[0] - m) * uz
            y = c[1] + (r[1] - m) * uy
            x = c[2] + (rx - m) * ux
            ok = self.breast_in(z, y, x, b) & (self.skin_depth(z, y, x, [b]) < -SKIN_MM)
            return bool(ok.all())

        lo, hi = 0.2 * r[2], r[2]
        if fits(hi):
            return tuple(float(v) for v in r)
        for _ in range(20):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return (float(r[0]), float(r[1]), float(lo))

    def in_muscle_envelope(self, z, y, x):
        """Inside the trunk's muscle envelope (pectorals over the rib cage and everything deep of it), any z."""
        mx, ma, mp = self.muscle_axes(z, x)
        return (x / mx) ** 2 + (y / np.where(y < 0, ma, mp)) ** 2 <= 1.0

    def breast_in(self, z, y, x, b):
        return ((self._breast_sdf(z, y, x, b) <= 0.0) & ~self.in_muscle_envelope(z, y, x)
                & (y <= b["ym"] + 0.2 * b["r"][1]) & (np.sign(x) == b["side"]))

    def skin_depth(self, z, y, x, breasts=None):
        """Signed distance to the body surface (used for the skin and the breast-volume solve)."""
        if breasts is None:
            return self.body_sdf(z, y, x)
        fat = self.fat_at(z)
        d = self.trunk_sdf(z, y, x, fat)
        for b in breasts:
            d = _smin(d, self._breast_sdf(z, y, x, b), FOLD_MM)
        return d

    # ------------------------------------------------------------------ heart
    def heart_local(self, z, y, x):
        u, v, w = self.heart_frame
        dz, dy, dx = z - self.heart_c[0], y - self.heart_c[1], x - self.heart_c[2]
        return (dz * u[0] + dy * u[1] + dx * u[2], dz * v[0] + dy * v[1] + dx * v[2],
                dz * w[0] + dy * w[1] + dx * w[2])

    def heart_in(self, z, y, x, c=(0.0, 0.0, 0.0), r=HEART_R, pad=0.0):
        a, b, cc = self.heart_local(z, y, x)
        h = self.h
        return (((a - c[0] * h) / (r[0] * h + pad)) ** 2 + ((b - c[1] * h) / (r[1] * h + pad)) ** 2
                + ((cc - c[2] * h) / (r[2] * h + pad)) ** 2) <= 1.0

    # ------------------------------------------------------------------ diaphragm
    def below_diaphragm(self, z, y, x, grow=0.0):
        h = self.h
        return (_ell3(z, y, x, (-220.0 * h, 10.0 * h, -45.0 * h), (120.0 * h, 105.0 * h, 80.0 * h), grow)
                | _ell3(z, y, x, (-230.0 * h, 10.0 * h, 50.0 * h), (115.0 * h, 105.0 * h, 80.0 * h), grow))

    # ------------------------------------------------------------------ spine
    def spine_geom(self, z):
        h = self.h
        vy = np.interp(z, self.sz, self.sy).astype(np.float32)
        lumbar = z < -200.0 * h
        cerv = z > TRUNK_HI * h
        ry = np.where(cerv, 10.0 * h, np.where(lumbar, 17.0 * h, 15.0 * h))
        rx = np.where(cerv, 13.0 * h, np.where(lumbar, 23.0 * h, 19.0 * h))
        canal = vy + ry + 9.0 * h
        return vy, ry, rx, canal

    def in_vertebra_level(self, z):
        period, disc = 28.0 * self.h, 5.0 * self.h
        return np.mod(z - TRUNK_LO * self.h, period) >= disc

    # ------------------------------------------------------------------ ribs / scapula
    def ribs_in(self, z, y, x, pad=0.0):
        h = self.h
        cx, ca, cp = self._p("cav_x", z), self._p("cav_a", z), self._p("cav_p", z)
        ay = np.where(y < 0, ca, cp)
        r_in = ((x / (cx + 1.0 - pad)) ** 2 + (y / (ay + 1.0 - pad)) ** 2)
        r_out = ((x / (cx + 9.0 + pad)) ** 2 + (y / (ay + 9.0 + pad)) ** 2)
        band = (r_in > 1.0) & (r_out <= 1.0)
        out = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), bool)
        ax = np.abs(x)
        for k in range(12):
            zk = (150.0 - k * 24.0) * h
            zc = zk - 0.35 * (cp - y)
            m = band & (np.abs(z - zc) <= 5.5 * h + pad) & (ax >= 20.0 * h - pad)
            if k < 7:
                m &= ax >= 28.0 * h - pad
            elif k < 10:
                m &= y >= -40.0 * h - pad
            else:
                m &= y >= -pad
            out |= m
        return out & (z >= -260.0 * h - pad) & (z <= 165.0 * h + pad)

    def scapula_in(self, z, y, x, pad=0.0):
        h = self.h
        cx, cp = self._p("cav_x", z), self._p("cav_p", z)
        r_in = (x / (cx + 14.0 - pad)) ** 2 + (y / (cp + 14.0 - pad)) ** 2
        r_out = (x / (cx + 20.0 + pad)) ** 2 + (y / (cp + 20.0 + pad)) ** 2
        phi = np.degrees(np.arctan2(np.abs(x), np.maximum(y, 1e-3)))      # 0 = posterior midline, 90 = lateral
        t = np.clip((z - (-10.0 * h)) / (120.0 * h), 0.0, 1.0)              # 0 at the inferior angle, 1 at the top
        lo, hi = 58.0 - 30.0 * t, 62.0 + 23.0 * t
        padd = np.degrees(pad / 100.0)
        blade = ((r_in > 1.0) & (r_out <= 1.0) & (phi >= lo - padd) & (phi <= hi + padd) & (y > 0)
                 & (z >= -10.0 * h - pad) & (z <= 140.0 * h + pad))
        glen = np.zeros_like(blade)
        for s in (-1.0, 1.0):
            glen |= _ell3(z, y, x, (138.0 * h, 22.0 * h, s * 100.0 * h), (16.0 * h, 12.0 * h, 14.0 * h), pad)
        return blade | glen

    # ------------------------------------------------------------------ pelvis and femurs (whole body)
    def _add_pelvic_bones(self, add):
        """Bony pelvis and femurs of the whole-body extent: v1's shapes
        (:func:`her2sim.phantoms.whole_body.pelvis_parts`, :func:`~her2sim.phantoms.whole_body.femur_parts`)
        as implicit structures, clipped to the outline of the hips and thighs. The cortical shells are ``thin`` (a shell thinner
        than a voxel is still found: every voxel of their box is supersampled) and the bones form one family of
        nested structures (:func:`_rasterise`)."""
        h = self.h
        body = self

        class _Pts:                                                   # body-coordinate points for the shapes
            def __init__(self, z, y, x):
                self.z, self.y, self.x = z, y, x

            def ellipsoid(self, c, r):
                return _ell3(self.z, self.y, self.x, c, r)

        def make(parts_fn, labels):
            def fn(z, y, x, p=0.0):
                if p > 0.0:                                           # thin marks: the whole box
                    return np.ones(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), bool)
                sel = [m for m, lab, _ in parts_fn(_Pts(z, y, x), h) if lab in labels]
                m = functools.reduce(np.logical_or, sel)
                # inside the hips or the thighs (the rest of the outline is far from these bones)
                d = np.minimum(body.trunk_sdf(z, y, x, body.fat_at(z)), body.thigh_sdf(z, y, x))
                return m & (d <= 0.0)
            return fn

        pelvis_box = ((-470.0 * h, -80.0 * h, -145.0 * h), (-255.0 * h, 75.0 * h, 145.0 * h))
        femur_box = ((wbm.MID_THIGH_MM * h - 5.0, -25.0 * h, -145.0 * h), (-385.0 * h, 40.0 * h, 145.0 * h))
        add("pelvis_cortical", "pelvis_cortical", make(wbm.pelvis_parts, ("pelvis_cortical",)), *pelvis_box,
            thin=True)
        add("pelvis_marrow", "pelvis_marrow", make(wbm.pelvis_parts, ("pelvis_marrow",)), *pelvis_box)
        add("femur_cortical", "femur_cortical", make(wbm.femur_parts, ("femur_cortical",)), *femur_box, thin=True)
        add("femur_spongiosa", "pelvis_marrow", make(wbm.femur_parts, ("pelvis_marrow",)), *femur_box)
        add("femur_marrow", "femur_marrow", make(wbm.femur_parts, ("femur_marrow",)), *femur_box)

    # ------------------------------------------------------------------ structures
    def structures(self):
        h, S = self.h, []
        T = (TRUNK_LO * h - 5, TRUNK_HI * h + 5)
        W = 400.0
        big = ((-1e4, -W, -W), (1e4, W, W))

        def add(name, label, fn, lo=big[0], hi=big[1], thin=False):
            S.append(_Structure(name, label, fn, lo, hi, thin))

        add("body", "fat", lambda z, y, x, p=0.0: self.body_sdf(z, y, x) <= p)
        add("trunk_muscle", "muscle", lambda z, y, x, p=0.0: self.trunk_sdf(z, y, x) <= p,
            (min(T[0], self.trunk_lo - 5), -W, -W), (T[1] + 30, W, W))
        if self.wb:
            thigh_fat = 1.5 * self.fat
            add("thigh_muscle", "muscle", lambda z, y, x, p=0.0: self.thigh_sdf(z, y, x, thigh_fat) <= 0.0,
                (wbm.MID_THIGH_MM * h - 5, -W, -W), (self.thigh_top + 5, W, W))
        nr = (self.neck_r[0] - 0.4 * self.fat - 6.0, self.neck_r[1] - 0.4 * self.fat - 6.0)
        add("neck_muscle", "muscle",
            lambda z, y, x, p=0.0: (((y - 5.0 * h) / nr[0]) ** 2 + (x / nr[1]) ** 2 <= 1.0)
            & (z >= TRUNK_HI * h - 20.0) & (z <= NECK_HI * h), (TRUNK_HI * h - 20, -100, -100), (NECK_HI * h, 100, 100))
        add("arm_muscle", "muscle", lambda z, y, x, p=0.0: (
            (self._arm_sdf(z, y, x, -1.0, self.arm_r - self.arm_fat) <= 0)
            | (self._arm_sdf(z, y, x, 1.0, self.arm_r - self.arm_fat) <= 0)), (100.0 * h, -W, -W), (1e4, W, W))

        def pect(z, y, x, p=0.0):
            mx, ma, mp = self.muscle_axes(z, x)
            in_mus = (x / mx) ** 2 + (y / np.where(y < 0, ma, mp)) ** 2 <= 1.0
            wz = (z >= -55.0 * h) & (z <= 145.0 * h)
            return in_mus & wz & (y < -0.25 * ma) & (np.abs(x) >= 14.0 * h) & ~self.cavity_in(z, y, x, 9.0)
        add("pectoralis", "pectoralis", pect, (-60.0 * h, -W, -W), (150.0 * h, 0.0, W))
        # axillary fat pad: from the lateral rib cage to the armpit's subcutaneous fat, between the pectoral
        # (anterior) and the scapula / latissimus (posterior) folds
        self.axilla_c = {s: (70.0 * h, 5.0 * h, s * float(np.interp(70.0 * h, self.pz, self.prof["cav_x"]) + 50.0 * h))
                         for s in (-1.0, 1.0)}
        ax_r = (42.0 * h, 28.0 * h, 40.0 * h)

        def axfat(z, y, x, p=0.0):
            m = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), bool)
            for s in (-1.0, 1.0):
                m |= _ell3(z, y, x, self.axilla_c[s], ax_r)
            return m & (self.trunk_sdf(z, y, x, self.fat) <= 0) & ~self.cavity_in(z, y, x, 10.0)
        add("axillary_fat", "axillary_fat", axfat, (20.0 * h, -40.0 * h, -W), (120.0 * h, 40.0 * h, W))
        add("cavity", "soft_tissue", lambda z, y, x, p=0.0: self.cavity_in(z, y, x), (T[0], -W, -W), (T[1], W, W))

        def erector(z, y, x, p=0.0):
            vy, ry, rx, canal = self.spine_geom(z)
            return ((np.abs(x) <= 42.0 * h) & (y >= vy + ry + 2.0) & (self.trunk_sdf(z, y, x) <= 0)
                    & (z <= TRUNK_HI * h))
        add("erector", "muscle", erector, (T[0], 0.0, -60.0), (T[1], W, 60.0))

        def bowel(z, y, x, p=0.0):
            return (_ell3(z, y, x, (-355.0 * h, -12.0 * h, 0.0), (100.0 * h, 62.0 * h, 92.0 * h))
                    & self.cavity_in(z, y, x) & (y <= 30.0 * h))
        add("bowel", "bowel", bowel, (-460.0 * h, -W, -W), (-250.0 * h, W, W))

        def lungs(z, y, x, p=0.0):
            # mediastinum: 28 mm wide at the heart (the heart itself is painted over the lungs), 46 mm above the
            # carina (trachea, superior vena cava, great vessels and the paratracheal nodes)
            t = np.clip((z - 30.0 * h) / (20.0 * h), 0.0, 1.0)
            half = (14.0 + 9.0 * t) * h
            xm = (3.0 - 5.0 * t) * h
            return (self.cavity_in(z, y, x, -1.0) & ~self.below_diaphragm(z, y, x) & (np.abs(x - xm) >= half))
        add("lungs", "lungs", lungs, (-200.0 * h, -W, -W), (T[1], W, W))
        add("stomach", "stomach", lambda z, y, x, p=0.0: _ell3(z, y, x, (-150.0 * h, -5.0 * h, 50.0 * h),
                                                                (50.0 * h, 32.0 * h, 38.0 * h)) & self.cavity_in(z, y, x),
            (-205.0 * h, -40.0 * h, 0.0), (-95.0 * h, 30.0 * h, 95.0 * h))
        add("spleen", "spleen", lambda z, y, x, p=0.0: _ell3(z, y, x, (-140.0 * h, 36.0 * h, 70.0 * h),
                                                              (40.0 * h, 33.0 * h, 21.0 * h)),
            (-185.0 * h, 0.0, 45.0 * h), (-95.0 * h, 75.0 * h, 95.0 * h))
        self.liver_c, self.liver_r = (-158.0 * h, 0.0, -40.0 * h), (79.0 * h, 72.0 * h, 106.0 * h)

        def liver(z, y, x, p=0.0):
            return (_ell3(z, y, x, self.liver_c, self.liver_r) & self.below_diaphragm(z, y, x, -3.0)
                    & (x <= 45.0 * h) & self.cavity_in(z, y, x))
        add("liver", "liver", liver, (-230.0 * h, -W, -W), (-50.0 * h, W, 50.0 * h))
        kid_c = {-1.0: (-235.0 * h, 30.0 * h, -58.0 * h), 1.0: (-222.0 * h, 30.0 * h, 60.0 * h)}
        kid_r = (52.0 * h, 22.0 * h, 27.0 * h)
        for lab, f in (("kidney_cortex", 1.0), ("kidney_medulla", 0.6)):
            add(lab, lab, lambda z, y, x, p=0.0, f=f: (_ell3(z, y, x, kid_c[-1.0], tuple(f * r for r in kid_r))
                                                       | _ell3(z, y, x, kid_c[1.0], tuple(f * r for r in kid_r))),
                (-290.0 * h, 0.0, -90.0 * h), (-165.0 * h, 55.0 * h, 90.0 * h))
        if self.wb:
            bc, br = tuple(v * h for v in wbm.BLADDER_C), tuple(v * h for v in wbm.BLADDER_R)
            add("bladder", "bladder", lambda z, y, x, p=0.0: _ell3(z, y, x, bc, br),
                tuple(c - r - 1 for c, r in zip(bc, br)), tuple(c + r + 1 for c, r in zip(bc, br)))
        add("heart", "heart_wall", lambda z, y, x, p=0.0: self.heart_in(z, y, x), (-120.0 * h, -75.0 * h, -60.0 * h),
            (30.0 * h, 40.0 * h, 90.0 * h))
        for name, (c, r) in HEART_CHAMBERS.items():
            # thin: partly covered by the great vessels, a chamber may show less than a voxel's thickness
            add(name, name, lambda z, y, x, p=0.0, c=c, r=r: self.heart_in(z, y, x, c, r, p),
                (-120.0 * h, -75.0 * h, -60.0 * h), (30.0 * h, 40.0 * h, 90.0 * h), thin=True)
        for name, tubes in (("aorta", [self.aorta]), ("vena_cava", [self.svc, self.ivc]),
                            ("airway", [self.trachea] + self.bronchi)):
            lo = tuple(min(t.bbox[0][i] for t in tubes) for i in range(3))
            hi = tuple(max(t.bbox[1][i] for t in tubes) for i in range(3))
            add(name, name, lambda z, y, x, p=0.0, tubes=tubes: np.logical_or.reduce(
                [t.inside(z, y, x) for t in tubes]), lo, hi)

        # face, cranium and brain first: the glands are painted on them (as in the whole-body extent)
        add("face", "muscle", lambda z, y, x, p=0.0: _ell3(z, y, x, self.face_c, self.face_r),
            (280.0 * h, -90.0 * h, -60.0 * h), (410.0 * h, 60.0 * h, 60.0 * h))

        add("skull", "skull", lambda z, y, x, p=0.0: _ell3(z, y, x, self.brain_c, self.cran_r),
            (340.0 * h, -90.0 * h, -75.0 * h), (490.0 * h, 95.0 * h, 75.0 * h))
        add("brain", "brain", lambda z, y, x, p=0.0: _ell3(z, y, x, self.brain_c, self.brain_r),
            (340.0 * h, -90.0 * h, -75.0 * h), (490.0 * h, 95.0 * h, 75.0 * h))

        def thyroid(z, y, x, p=0.0):
            k = THYROID_SCALE * h
            m = _ell3(z, y, x, tuple(v * h for v in wbm.ISTHMUS_C), tuple(v * k for v in wbm.ISTHMUS_R))
            for s in (-1.0, 1.0):
                c = (wbm.THYROID_C[0] * h, wbm.THYROID_C[1] * h, s * wbm.THYROID_C[2] * h)
                m |= _ell3(z, y, x, c, tuple(v * k for v in wbm.THYROID_R))
            return m
        add("thyroid", "thyroid", thyroid, (170.0 * h, -40.0 * h, -30.0 * h), (230.0 * h, 0.0, 30.0 * h))

        def saliv(z, y, x, p=0.0):
            m = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), bool)
            for s in (-1.0, 1.0):
                for c0, r in ((wbm.PAROTID_C, wbm.PAROTID_R), (wbm.SUBMANDIBULAR_C, wbm.SUBMANDIBULAR_R)):
                    m |= _ell3(z, y, x, (c0[0] * h, c0[1] * h, s * c0[2] * h), tuple(v * h for v in r))
            return m
        add("salivary_glands", "salivary_glands", saliv, (280.0 * h, -45.0 * h, -60.0 * h), (380.0 * h, 25.0 * h, 60.0 * h))
        # the lumbar spine stops at the sacrum in the whole-body extent (as v1's)
        SPZ = ((wbm.SPINE_BOTTOM_MM * h) if self.wb else T[0], NECK_HI * h)

        def spine_cort(z, y, x, p=0.0):
            vy, ry, rx, canal = self.spine_geom(z)
            lev = self.in_vertebra_level(z)
            vb = ((y - vy) / ry) ** 2 + (x / rx) ** 2 <= 1.0
            arch = ((y - canal - 2.0 * h) / (12.0 * h)) ** 2 + (x / (15.0 * h)) ** 2 <= 1.0
            spin = (np.abs(x) <= 4.0 * h) & (y >= canal) & (y <= canal + 24.0 * h)
            return (vb | arch | spin) & lev & (z >= SPZ[0]) & (z <= SPZ[1])
        add("spine_cortical", "spine_cortical", spine_cort, (SPZ[0], -20.0, -45.0), (SPZ[1], 110.0, 45.0))

        def spine_marrow(z, y, x, p=0.0):
            vy, ry, rx, canal = self.spine_geom(z)
            return ((((y - vy) / (ry - 2.5)) ** 2 + (x / (rx - 2.5)) ** 2 <= 1.0) & self.in_vertebra_level(z)
                    & (z >= SPZ[0]) & (z <= SPZ[1]))
        add("spine_marrow", "spine_marrow", spine_marrow, (SPZ[0], -20.0, -45.0), (SPZ[1], 110.0, 45.0))

        def canal(z, y, x, p=0.0):
            vy, ry, rx, cy = self.spine_geom(z)
            return (((y - cy) / (7.5 * h)) ** 2 + (x / (7.5 * h)) ** 2 <= 1.0) & (z >= SPZ[0]) & (z <= SPZ[1])
        add("spinal_canal", "spinal_canal", canal, (SPZ[0], -20.0, -45.0), (SPZ[1], 110.0, 45.0))
        if self.wb:
            self._add_pelvic_bones(add)
        add("ribs", "ribs", self.ribs_in, (-270.0 * h, -W, -W), (175.0 * h, W, W), thin=True)

        def sternum(z, y, x, p=0.0):
            ca = self._p("cav_a", z)
            half = np.where(z > 60.0 * h, 24.0 * h, 14.0 * h)
            return ((np.abs(x) <= half + p) & (y <= -ca + 1.0 + p) & (y >= -ca - 11.0 - p)
                    & (z >= -80.0 * h - p) & (z <= 112.0 * h + p))
        add("sternum", "sternum", sternum, (-85.0 * h, -W, -30.0 * h), (115.0 * h, 0.0, 30.0 * h), thin=True)
        clo = tuple(min(t.bbox[0][i] for t in self.clav.values()) for i in range(3))
        chi = tuple(max(t.bbox[1][i] for t in self.clav.values()) for i in range(3))
        add("clavicle", "clavicle", lambda z, y, x, p=0.0: self.clav[-1.0].inside(z, y, x, p)
            | self.clav[1.0].inside(z, y, x, p), clo, chi, thin=True)
        add("scapula", "scapula", self.scapula_in, (-20.0 * h, 0.0, -W), (160.0 * h, W, W), thin=True)

        def humerus(z, y, x, p=0.0):
            m = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), bool)
            for s in (-1.0, 1.0):
                a, e = np.asarray(self.shoulder[s]), np.asarray(self.elbow[s])
                m |= _ell3(z, y, x, a, (22.0 * h,) * 3, p)
                d = e - a
                rz, ry, rx = z - a[0], y - a[1], x - a[2]
                t = np.clip((rz * d[0] + ry * d[1] + rx * d[2]) / float(d @ d), 0.0, 1.0)
                m |= (rz - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rx - t * d[2]) ** 2 <= (11.0 * h + p) ** 2
            return m
        add("humerus", "humerus", humerus, (110.0 * h, -30.0 * h, -W), (1e4, 60.0 * h, W))

        def breast(z, y, x, p=0.0):
            m = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), bool)
            for b in self.breasts.values():
                m |= self.breast_in(z, y, x, b)
            return m
        rb = max(max(b["r"]) for b in self.breasts.values())
        add("breast", "breast", breast, (-rb - 5, -W, -W), (rb + 5, 0.0, W))

        def skin(z, y, x, p=0.0):
            d = self.body_sdf(z, y, x)
            return (d <= 0.0) & (d > -SKIN_MM)
        add("skin", "skin", skin)
        return S


# ---------------------------------------------------------------------------------------------- rasteriser
def _bits(lab):
    return np.left_shift(np.uint64(1), lab.astype(np.uint64))


def _neighbourhood_or(a):
    out = a.copy()
    for ax in range(3):
        b = out.copy()
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        b[tuple(lo)] |= out[tuple(hi)]
        b[tuple(hi)] |= out[tuple(lo)]
        out = b
    return out


def _rasterise(grid: Grid, dz: float, cy: float, cx: float, S, supersample: int):
    """Centre labels, boundary voxels and their per-structure fractions (see module docstring)."""
    nz, ny, nx = grid.shape
    zb = (grid.axis_mm(0) - dz).astype(np.float32)
    yb = (grid.axis_mm(1) - cy).astype(np.float32)
    xb = (grid.axis_mm(2) - cx).astype(np.float32)
    sp = np.asarray(grid.spacing_mm, np.float32)
    lab = np.zeros(grid.shape, np.int8)
    thin_marks = []
    halfdiag = 0.5 * float(np.sqrt((sp.astype(float) ** 2).sum()))

    def block(s, margin):
        ilo = [int(np.searchsorted(a, lo - margin, "left")) for a, lo in zip((zb, yb, xb), s.lo)]
        ihi = [int(np.searchsorted(a, hi + margin, "right")) for a, hi in zip((zb, yb, xb), s.hi)]
        if any(b <= a for a, b in zip(ilo, ihi)):
            return None
        return tuple(slice(a, b) for a, b in zip(ilo, ihi))

    for i, s in enumerate(S, start=1):
        sl = block(s, halfdiag if s.thin else 0.0)
        if sl is None:
            continue
        Z, Y, X = zb[sl[0]][:, None, None], yb[sl[1]][None, :, None], xb[sl[2]][None, None, :]
        m = np.broadcast_to(s.fn(Z, Y, X, 0.0), tuple(a.stop - a.start for a in sl))
        sub = lab[sl]
        sub[m] = i
        if s.thin:
            mp = np.broadcast_to(s.fn(Z, Y, X, halfdiag), m.shape)
            thin_marks.append((i, sl, mp))
    bits = _bits(lab)
    cand = _neighbourhood_or(bits)
    for i, sl, mp in thin_marks:
        c = cand[sl]
        c[mp] |= np.uint64(1) << np.uint64(i)
    skin_i = [i for i, s in enumerate(S, 1) if s.name == "skin"][0]
    near_air = (cand & np.uint64(1)) != 0
    cand[near_air & ((lab > 0) | (cand != bits))] |= np.uint64(1) << np.uint64(skin_i)
    # families of nested structures: a voxel near one of them may hold any of them below the voxel size
    for fam in (("heart", "heart_lv", "heart_rv", "heart_la", "heart_ra"),
                ("spine_cortical", "spine_marrow", "spinal_canal"), ("kidney_cortex", "kidney_medulla"),
                ("pelvis_cortical", "pelvis_marrow", "femur_cortical", "femur_spongiosa", "femur_marrow")):
        fb = np.uint64(0)
        for i, s in enumerate(S, 1):
            if s.name in fam:
                fb |= np.uint64(1) << np.uint64(i)
        if fb:
            hit = (cand & fb) != 0
            cand[hit] |= fb
    boundary = np.flatnonzero(cand != bits)
    base = np.uint64(0)
    for i, s in enumerate(S, 1):
        if s.name in ("body", "trunk_muscle", "cavity"):
            base |= np.uint64(1) << np.uint64(i)
    # supersample the boundary voxels
    n = supersample
    o = ((np.arange(n) + 0.5) / n - 0.5).astype(np.float32)
    oz, oy, ox = np.meshgrid(o * sp[0], o * sp[1], o * sp[2], indexing="ij")
    offs = np.stack([oz.ravel(), oy.ravel(), ox.ravel()], axis=1)
    n3 = offs.shape[0]
    nS = len(S) + 1
    out_v, out_s, out_f = [], [], []
    chunk = max(1, 3_000_000 // n3)
    cflat = cand.ravel()
    for start in range(0, boundary.size, chunk):
        vid = boundary[start:start + chunk]
        iz, iy, ix = np.unravel_index(vid, grid.shape)
        ctr = np.stack([zb[iz], yb[iy], xb[ix]], axis=1)
        cb = cflat[vid] | base
        sublab = np.zeros((vid.size, n3), np.int8)
        for i, s in enumerate(S, start=1):
            bit = np.uint64(1) << np.uint64(i)
            sel = np.flatnonzero((cb & bit) != 0)
            if sel.size == 0:
                continue
            c = ctr[sel]
            inb = np.all((c + 0.5 * sp >= np.asarray(s.lo, np.float32)) & (c - 0.5 * sp <= np.asarray(s.hi, np.float32)),
                         axis=1)
            sel = sel[inb]
            if sel.size == 0:
                continue
            P = ctr[sel][:, None, :] + offs[None, :, :]
            m = np.asarray(s.fn(P[..., 0], P[..., 1], P[..., 2], 0.0), bool)
            cur = sublab[sel]
            cur[m] = i
            sublab[sel] = cur
        keyc = (np.arange(vid.size, dtype=np.int64)[:, None] * nS + sublab.astype(np.int64)).ravel()
        counts = np.bincount(keyc, minlength=vid.size * nS).reshape(vid.size, nS)
        nzv, nzs = np.nonzero(counts)
        out_v.append(vid[nzv])
        out_s.append(nzs.astype(np.int16))
        out_f.append((counts[nzv, nzs] / float(n3)).astype(np.float32))
    cat = (lambda lst, dt: np.concatenate(lst) if lst else np.zeros(0, dt))
    return lab, boundary, cat(out_v, np.int64), cat(out_s, np.int16), cat(out_f, np.float32)


def _weighted_threshold(values, weights, share):
    """Threshold t such that the weights of ``values >= t`` sum to ``share`` of the total."""
    order = np.argsort(values)[::-1]
    cw = np.cumsum(weights[order], dtype=np.float64)
    k = int(np.searchsorted(cw, share * cw[-1]))
    return float(values[order[min(k, order.size - 1)]])


# ---------------------------------------------------------------------------------------------- public
def torso_anatomy_v2(grid: Grid | None = None, weight_kg: float = REFERENCE_WEIGHT_KG,
                     height_cm: float = REFERENCE_HEIGHT_CM, breast_shape: str = "supine",
                     breast_volume_ml: float = 300.0, breast_density: str = "B", body_z_at_grid_center_mm: float = -60.0,
                     seed: int = 0, ct_noise_hu: float = 0.0, gland_correlation_mm: float = 6.0,
                     extent: str = "torso") -> TorsoAnatomy:
    """Paint the v2 female torso (no activity, no lesions); same parameters as v1's ``torso_anatomy``.

    Parameters
    ----------
    grid : Grid, optional
        Any grid (default 128^3 x 4.42 mm).
    weight_kg, height_cm : float
        Patient size (30-200 kg, 120-210 cm, BMI 14-50).
    breast_shape, breast_volume_ml, breast_density : str, float, str
        As v1 (``supine`` / ``pendant`` / ``prone``; mL per breast mound, skin excluded; BI-RADS A-D).
    body_z_at_grid_center_mm : float
        Body level (mm, 0 = nipple level) at the grid centre.
    seed : int
        Seed of the glandular and bowel textures and of the CT noise.
    ct_noise_hu : float
        Standard deviation of white Gaussian CT noise (HU).
    gland_correlation_mm : float
        Correlation length of the glandular texture (mm).
    extent : str
        ``"torso"`` (default) or ``"whole_body"``: head to mid-thigh, adding the hips (the trunk continued to the
        gluteal fold, flowing into the thighs), thighs (fat over muscle), bony pelvis (iliac wings, sacrum,
        pubic / ischial ring: cortical shells around red marrow), femurs (red-marrow heads and necks, shafts with
        a marrow cavity) and the urinary bladder content, with v1's shapes and constants
        (:mod:`her2sim.phantoms.whole_body`); the torso extent is painted exactly as before.

    Returns
    -------
    TorsoAnatomy
        With ``fractions``: ``voxel`` (flat indices), ``label`` (label ids) and ``fraction`` (float32) of every
        tissue in every boundary voxel (air is the rest).
    """
    grid, (w, hcm, bmi), bvol, noise, gcorr = check_torso_options(
        grid, weight_kg, height_cm, breast_shape, breast_volume_ml, breast_density, body_z_at_grid_center_mm,
        ct_noise_hu, gland_correlation_mm)
    wb = wbm.check_extent(extent) == "whole_body"
    rng = np.random.default_rng(seed)
    h = hcm / REFERENCE_HEIGHT_CM
    fat_mm = float(np.clip(6.0 + 1.6 * (bmi - 18.0), 4.0, 60.0))      # v1's rule (assumption)
    body = _Body(h, fat_mm, breast_shape, bvol, whole_body=wb)
    S = body.structures()
    dz = grid.center_mm[0] - body_z_at_grid_center_mm
    cy, cx = grid.center_mm[1], grid.center_mm[2]
    n = max(2, int(math.ceil(max(grid.spacing_mm) / SUBSAMPLE_MM)))
    lab, boundary, bv, bs, bf = _rasterise(grid, dz, cy, cx, S, n)

    # ---------------------------------------------------------------- labels of structures; textures
    tv = TissueVolume(grid, "air")
    for s in S:
        if s.label in _TEXTURED:
            for l2 in _TEXTURED[s.label]:
                tv.label_id(l2)
        else:
            tv.label_id(s.label)
    s_label = np.zeros(len(S) + 1, np.int16)
    for i, s in enumerate(S, 1):
        s_label[i] = tv.label_id(_TEXTURED[s.label][1] if s.label in _TEXTURED else s.label)
    vox_label = s_label[lab.astype(np.int64)]                       # interior voxels
    pair_label = s_label[bs.astype(np.int64)]                       # boundary (voxel, structure) pairs
    is_b = np.zeros(grid.shape, bool)
    is_b.ravel()[boundary] = True
    for i, s in enumerate(S, 1):
        if s.label not in _TEXTURED:
            continue
        first, second = _TEXTURED[s.label]
        share = GLANDULAR_FRACTION_V2[breast_density] if s.label == "breast" else INTESTINE_LOOP_FRACTION
        corr = gcorr if s.label == "breast" else 8.0
        frac = np.zeros(grid.shape, np.float32)
        frac[(lab == i) & ~is_b] = 1.0
        sel = bs == i
        frac.ravel()[bv[sel]] += bf[sel]
        nzi = np.nonzero(frac > 0)
        if nzi[0].size == 0:
            continue
        lo = [int(a.min()) for a in nzi]
        hi = [int(a.max()) + 1 for a in nzi]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        tex = gaussian_random_field(tuple(b - a for a, b in zip(lo, hi)), grid.spacing_mm, corr, rng)
        if s.label == "breast":
            zz, yy, xx = ((grid.axis_mm(a)[box[a]] - (dz, cy, cx)[a]) for a in range(3))
            for b in body.breasts.values():
                c, r = b["c"], b["r"]
                rho = np.sqrt(((zz[:, None, None] - c[0]) / r[0]) ** 2 + ((yy[None, :, None] - c[1]) / r[1]) ** 2
                              + ((xx[None, None, :] - c[2]) / r[2]) ** 2)
                near = np.broadcast_to(np.sign(xx)[None, None, :] == b["side"], tex.shape)
                tex = np.where(near, tex - 1.5 * rho, tex)
        fb = frac[box]
        m = fb > 0
        thr = _weighted_threshold(tex[m], fb[m].astype(np.float64), share)
        first_map = np.zeros(grid.shape, bool)
        first_map[box] = m & (tex >= thr)
        vox_label[(lab == i) & first_map] = tv.label_id(first)
        pair_label[sel & first_map.ravel()[bv]] = tv.label_id(first)

    # ---------------------------------------------------------------- merge pairs per (voxel, label)
    nl = max(tv.label_names) + 1
    key = bv * nl + pair_label.astype(np.int64)
    ukey, inv = np.unique(key, return_inverse=True)
    f = np.bincount(inv, weights=bf.astype(np.float64)).astype(np.float32)
    fv = ukey // nl
    fl = (ukey % nl).astype(np.int16)
    # per-label tissue tables
    mat_lut = np.zeros(nl, np.uint8)
    hu_lut = np.zeros(nl, np.float64)
    rho_lut = np.zeros(nl, np.float64)
    air = get_material("air")
    mat_lut[0], hu_lut[0], rho_lut[0] = MATERIAL_IDS["air"], NOMINAL_HU["air"], air.density_g_cm3
    for lid, name in tv.label_names.items():
        if lid == 0:
            continue
        mat_lut[lid], hu_lut[lid], rho_lut[lid] = _tissue(name)
    tv.labels[:] = vox_label
    tv.material_ids[:] = mat_lut[vox_label]
    tv.density_g_cm3[:] = rho_lut[vox_label]
    tv.ct_hu[:] = hu_lut[vox_label]
    # boundary voxels: fraction-weighted density / HU, majority label and material (air fills the rest)
    uv, vinv = np.unique(fv, return_inverse=True)
    fsum = np.bincount(vinv, weights=f.astype(np.float64))
    fair = np.clip(1.0 - fsum, 0.0, 1.0)
    rho = np.bincount(vinv, weights=f * rho_lut[fl]) + fair * rho_lut[0]
    hu = np.bincount(vinv, weights=f * hu_lut[fl]) + fair * hu_lut[0]
    order = np.lexsort((f, vinv))                                   # by voxel, then fraction
    last = np.r_[vinv[order][1:] != vinv[order][:-1], True]
    top = order[last]
    maj_lab = np.where(f[top] >= fair, fl[top], 0).astype(np.int16)
    tv.labels.ravel()[uv] = maj_lab
    tv.material_ids.ravel()[uv] = mat_lut[maj_lab]
    tv.density_g_cm3.ravel()[uv] = rho.astype(np.float32)
    tv.ct_hu.ravel()[uv] = hu.astype(np.float32)
    # voxels flagged as boundary that are all air keep the air values (nothing to do)
    if noise > 0:
        tv.ct_hu += rng.normal(0.0, noise, grid.shape).astype(np.float32) * (tv.labels > 0)

    # ---------------------------------------------------------------- volumes and masses from fractions
    vox_ml = grid.voxel_volume_ml
    interior = vox_label[~is_b]
    vol = np.bincount(interior.astype(np.int64), minlength=nl).astype(np.float64)
    vol += np.bincount(fl.astype(np.int64), weights=f.astype(np.float64), minlength=nl)
    label_volume = {tv.label_names[k]: float(vol[k] * vox_ml) for k in range(1, nl) if vol[k] > 0}
    label_mass = {tv.label_names[k]: float(vol[k] * vox_ml * rho_lut[k]) for k in range(1, nl) if vol[k] > 0}

    # ---------------------------------------------------------------- landmarks
    def world(zb_, yb_, xb_):
        return (float(zb_ + dz), float(yb_ + cy), float(xb_ + cx))

    breasts = {}
    for side, b in body.breasts.items():
        c, r = b["c"], b["r"]
        r_in = body.inscribed_breast_radii(b)
        breasts[side] = {"centre_mm": world(*c), "radii_mm": [float(v) for v in r_in],
                         "ellipsoid_radii_mm": [float(v) for v in r],
                         "nipple_mm": world(0.0, c[1] - r[1], c[2]), "chest_wall_y_mm": float(b["ym"] + cy)}
    vy0 = float(np.interp(0.0, body.sz, body.sy))
    period, disc = 28.0 * h, 5.0 * h
    spine_ref = TRUNK_LO * h
    landmarks = {
        "breasts": breasts,
        "axilla": {"right": world(*body.axilla_c[-1.0]), "left": world(*body.axilla_c[1.0])},
        "mediastinum": [world(22.0 * h, 14.0 * h, 0.0), world(75.0 * h, -6.0 * h, -14.0 * h),
                        world(32.0 * h, -4.0 * h, 12.0 * h)],
        "spine": {"y_mm": vy0 + cy, "x_mm": float(cx), "body_radii_yx_mm": [15.0 * h, 19.0 * h],
                  "vertebra_z_mm": [world(spine_ref + disc + (k + 0.5) * period - 0.5 * disc, 0, 0)[0]
                                    for k in range(int((TRUNK_HI * h - spine_ref) / period))]},
        "liver": {"centre_mm": world(-140.0 * h, 0.0, -50.0 * h), "radii_mm": [55.0 * h, 55.0 * h, 75.0 * h]},
        "brain": {"centre_mm": world(*body.brain_c), "radii_mm": list(body.brain_r)},
        "lungs": {"right": {"centre_mm": world(30.0 * h, 5.0 * h, -62.0 * h), "radii_mm": [80.0 * h, 45.0 * h, 30.0 * h]},
                  "left": {"centre_mm": world(30.0 * h, 5.0 * h, 64.0 * h), "radii_mm": [80.0 * h, 45.0 * h, 28.0 * h]}},
        "trunk_z_mm": [world(TRUNK_LO * h, 0, 0)[0], world(TRUNK_HI * h, 0, 0)[0]],
        "arms": "raised beside the head",
    }
    if wb:
        landmarks["bladder"] = {"centre_mm": world(*(v * h for v in wbm.BLADDER_C)),
                                "radii_mm": [v * h for v in wbm.BLADDER_R]}
        landmarks["trunk_z_mm"][0] = world(body.trunk_lo, 0, 0)[0]
    params = {"weight_kg": w, "height_cm": hcm, "bmi": float(bmi), "height_scale": float(h), "fat_mm": fat_mm,
              "breast_shape": breast_shape, "breast_volume_ml": breast_volume_param(bvol),
              "breast_density": breast_density, "glandular_fraction": GLANDULAR_FRACTION_V2[breast_density],
              "body_z_at_grid_center_mm": float(body_z_at_grid_center_mm), "ct_noise_hu": noise, "seed": seed,
              "anatomy": "v2", "skin_mm": SKIN_MM, "supersample": n, "n_boundary_voxels": int(boundary.size),
              "label_volume_ml": label_volume, "label_mass_g": label_mass}
    if wb:
        params["extent"] = "whole_body"

    def body_inside(zw, yw, xw):
        """Analytic body outline (world mm), the implicit surface the phantom is painted from."""
        zb_ = np.asarray(zw, np.float64) - dz
        yb_ = np.asarray(yw, np.float64) - cy
        xb_ = np.asarray(xw, np.float64) - cx
        return body.body_sdf(zb_, yb_, xb_) <= 0.0

    def chest_wall_inside(zw, yw, xw):
        """The trunk's muscle envelope and all deep of it over the trunk's height (world mm); the breasts lie in
        front of it (:meth:`_Body.breast_in` excludes the same envelope)."""
        zb_ = np.asarray(zw, np.float64) - dz
        inside = body.in_muscle_envelope(zb_, np.asarray(yw, np.float64) - cy, np.asarray(xw, np.float64) - cx)
        return inside & (zb_ >= body.trunk_lo) & (zb_ <= TRUNK_HI * h)

    anat = TorsoAnatomy(volume=tv, landmarks=landmarks, params=params, body_inside=body_inside,
                        chest_wall_inside=chest_wall_inside)
    anat.fractions = {"voxel": fv, "label": fl, "fraction": f}
    return anat
