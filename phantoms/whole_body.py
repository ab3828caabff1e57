"""Whole-body extent of the female patient: head to mid-thigh (issue 17, part 3).

:func:`her2sim.phantoms.torso.torso_anatomy` paints the chest/abdomen torso by default (``extent="torso"``, anatomy v1
unchanged bit for bit; :mod:`her2sim.phantoms.torso_v2` builds the same extents for v2). ``extent="whole_body"`` paints, *in addition
and instead of the torso's oversized head*, the anatomy a planar whole-body scan of the seed trial sees
(Zhao et al., Breast Cancer Res 26:40, 2024, Supplementary Fig. S2: liver, kidneys, spleen, bowel, glands,
renal excretion into the bladder):

* **head**: brain (ellipsoid), cranium (7 mm shell), face (soft tissue), parotid and submandibular salivary
  glands, thyroid (two lobes + isthmus); the cervical spine continues to the skull base;
* **pelvis**: hips (the trunk continued to the gluteal fold), iliac wings (bowl-shaped shells), sacrum,
  pubic/ischial ring, each a cortical shell around a red-marrow (spongiosa) core, and the urinary bladder;
  the lumbar spine stops at the sacrum;
* **thighs** to mid-thigh: fat over muscle, femoral heads, necks and shafts (cortical bone around a
  marrow cavity).

Arms are not modelled (the torso model assumes them raised out of the SPECT field; a clinical whole-body scan has
them at the sides, adding arm activity lateral to the trunk, not inside it).

Landmarks (body coordinates, mm at the 160 cm reference, scaled by ``h = height / 160 cm`` like the torso):
vertex +482, skull base ~+355, chin ~+290, shoulders +170 (torso), breasts 0, pubic symphysis -420,
gluteal fold -470, mid-thigh -630. The torso's own abdomen (kidneys at -230, intestine down to -445) fixes the
pelvis below it; the vertex-to-mid-thigh span, 1112 mm, is 0.70 of the 1600 mm stature (anthropometric
mid-thigh ~0.37 x stature above the floor, vertex 1.0: 0.63 x stature; the torso's long abdomen makes the
difference).

Organ sizes are set so that volume x density meets the ICRP Publication 89 (2002) reference adult female
(Ann ICRP 32, table 2.8): brain 1300 g, thyroid 17 g, salivary glands 70 g (parotid + submandibular are
modelled, 2 x 20 g + 2 x 10 g; the ~10 g of sublingual glands are not), urinary bladder content 200 mL (the
content of the ICRP 110 reference female voxel phantom, which is built on ICRP 89). ``bench/phantom_realism.py``
checks them.

The glands, brain and bladder are drawn with partial-volume fractions (supersampled solids,
:mod:`her2sim.phantoms.shapes`): the label takes voxels whose fraction is >= 0.5 and
:func:`her2sim.phantoms.patient.patient_phantom` mixes the activity of boundary voxels as
``f SUV_organ + (1 - f) SUV_surrounding`` (the rule of :mod:`her2sim.phantoms.fraction_mix`), so an organ's
activity does not depend on where the grid cuts it.
"""
from __future__ import annotations

import math

import numpy as np

from her2sim.core.errors import check_choice, check_range
from her2sim.core.grid import Grid

from .shapes import ellipsoid_fraction

#: allowed values of the ``extent`` option of the patient phantom (``torso`` is the default)
EXTENTS = ("torso", "whole_body")
#: body-coordinate (mm, 160 cm reference) top of the skull and bottom of the modelled thighs
VERTEX_MM = 482.0
MID_THIGH_MM = -630.0
#: bottom of the trunk (gluteal fold) in whole-body mode; the torso's trunk ends at -430 mm
HIP_BOTTOM_MM = -470.0
#: bottom of the lumbar spine in whole-body mode (it stops at the sacrum; mm, 160 cm reference)
SPINE_BOTTOM_MM = -335.0
#: supersampling of the partial-volume organs (sub-samples per voxel edge)
PV_SUPERSAMPLE = 3

#: brain semi-axes (z, y, x) mm: 4/3 pi 60 x 80 x 63 = 1267 mL x 1.03 g/mL = 1300 g (ICRP 89 female brain 1300 g)
BRAIN_C, BRAIN_R = (415.0, 5.0, 0.0), (60.0, 80.0, 63.0)
SKULL_MM = 7.0
FACE_C, FACE_R = (345.0, -15.0, 0.0), (60.0, 70.0, 58.0)
#: parotid (each 4/3 pi 25 x 19 x 10 = 19.9 mL) and submandibular (each 4/3 pi 12 x 14 x 14 = 9.9 mL) glands
PAROTID_C, PAROTID_R = (350.0, 0.0, 42.0), (25.0, 19.0, 10.0)
SUBMANDIBULAR_C, SUBMANDIBULAR_R = (300.0, -25.0, 30.0), (12.0, 14.0, 14.0)
#: thyroid lobes (each 4/3 pi 22 x 10 x 9 = 8.3 mL) and isthmus; 1.05 g/mL x 16.6 mL + isthmus ~ 17 g
THYROID_C, THYROID_R = (200.0, -18.0, 17.0), (22.0, 10.0, 9.0)
ISTHMUS_C, ISTHMUS_R = (195.0, -26.0, 0.0), (6.0, 4.0, 10.0)
#: bladder content 4/3 pi 33 x 35 x 41 = 198 mL (200 mL reference content, see module docstring)
BLADDER_C, BLADDER_R = (-385.0, -30.0, 0.0), (33.0, 35.0, 41.0)

#: cumulative urinary excretion of 99mTc-NM-02 (fraction of the injected activity in the bladder, no voiding)
#: at 1 h and 2 h p.i. -- an **assumption**: the first-in-human study and the seed trial report renal
#: clearance (kidneys hottest, bladder visible on the whole-body images, Supplementary Fig. S2) but no
#: excreted fraction; nanobodies are filtered and mostly reabsorbed by the proximal tubules (high kidney
#: cortex retention, biodistribution.md: kidney cortex SUV 40), so a minority of the activity reaches the
#: urine. 10 % at 1 h and 18 % at 2 h are chosen in that spirit and are configurable
#: (``urine_fraction`` of the patient spec).
URINE_FRACTION = {1.0: 0.10, 2.0: 0.18}


def check_extent(extent: str) -> str:
    """``extent`` must be one of :data:`EXTENTS` (ConfigError naming the field and the choices)."""
    return check_choice("extent", extent, EXTENTS)


def whole_body_centre_mm(height_cm: float = 160.0) -> float:
    """Body level (mm, 0 = breast centres) midway between the vertex and mid-thigh for ``height_cm``."""
    h = float(height_cm) / 160.0
    return 0.5 * (VERTEX_MM + MID_THIGH_MM) * h


def whole_body_grid(spacing_mm: float = 4.42, height_cm: float = 160.0, width_mm: float = 420.0,
                    margin_mm: float = 20.0) -> Grid:
    """A grid that holds the whole-body patient (vertex to mid-thigh + ``margin_mm`` at each end).

    Parameters
    ----------
    spacing_mm : float
        Isotropic voxel size (mm, 1-20).
    height_cm : float
        Patient height (120-210 cm); the axial extent scales with it.
    width_mm : float
        Transaxial (x and y) field of the grid in mm (300-1000; 420 mm holds hips, thighs and breasts of the
        reference patient, 358 x 256 mm).
    margin_mm : float
        Air above the vertex and below the thigh cut (mm, 0-200).

    Returns
    -------
    Grid
        Centred on the world origin; pass ``body_z_at_grid_center_mm = whole_body_centre_mm(height_cm)``
        (the patient phantom does so by default in whole-body mode).
    """
    sp = check_range("spacing_mm", spacing_mm, 1.0, 20.0)
    hcm = check_range("height_cm", height_cm, 120.0, 210.0)
    wid = check_range("width_mm", width_mm, 300.0, 1000.0)
    mar = check_range("margin_mm", margin_mm, 0.0, 200.0)
    length = (VERTEX_MM - MID_THIGH_MM) * hcm / 160.0 + 2.0 * mar
    nz = int(math.ceil(length / sp))
    nxy = int(math.ceil(wid / sp))
    return Grid.centered((nz, nxy, nxy), sp)


def urine_fraction_at(time_h: float, table: dict | None = None) -> float:
    """Fraction of the injected activity in the bladder at ``time_h`` (h p.i.), from :data:`URINE_FRACTION`.

    Linear interpolation between the tabulated times, linear from 0 at injection to the first entry, and held
    at the last entry beyond it (no voiding modelled).
    """
    tab = dict(URINE_FRACTION if table is None else table)
    ts = sorted(float(k) for k in tab)
    fs = [check_range(f"urine_fraction.{k:g}", tab[k], 0.0, 1.0) for k in ts]
    t = check_range("time_h", time_h, 0.0, 1000.0)
    return float(np.interp(t, [0.0] + ts, [0.0] + fs))


def bladder_suv(time_h: float, weight_kg: float, bladder_ml: float, table: dict | None = None) -> float:
    """SUV of the bladder content: ``f(t) W / V`` (SUVbw with 1 g/mL; f = fraction of injected activity).

    ``C = f A_inj / V`` and ``SUV = C / (A_inj / W)``, both decay-corrected, so the physical decay cancels.
    """
    w = check_range("weight_kg", weight_kg, 1.0, 500.0)
    v = check_range("bladder_ml", bladder_ml, 1.0, 5000.0)
    return urine_fraction_at(time_h, table) * w * 1000.0 / v


def pv_fraction(grid: Grid, fr, centre_body, radii, h: float) -> np.ndarray:
    """Supersampled fraction of an ellipsoid given in body coordinates (centre and radii scaled by ``h``)."""
    c = fr.world(centre_body[0] * h, centre_body[1] * h, centre_body[2] * h)
    return ellipsoid_fraction(grid, c, tuple(r * h for r in radii), supersample=PV_SUPERSAMPLE)


def capsule(fr, p0, p1, r) -> np.ndarray:
    """Bool mask of the points within ``r`` mm of the segment p0-p1 (body (z, y, x) mm)."""
    p0 = np.asarray(p0, float)
    d = np.asarray(p1, float) - p0
    L2 = float(d @ d)
    rel = (fr.z - np.float32(p0[0]), fr.y - np.float32(p0[1]), fr.x - np.float32(p0[2]))
    t = np.clip((rel[0] * d[0] + rel[1] * d[1] + rel[2] * d[2]) / L2, 0.0, 1.0)
    q = [rel[i] - t * np.float32(d[i]) for i in range(3)]
    return q[0] ** 2 + q[1] ** 2 + q[2] ** 2 <= r * r


def shell(fr, c, r, thickness) -> tuple:
    """(outer, inner) bool masks of an ellipsoid and the one ``thickness`` mm smaller on every axis."""
    outer = fr.ellipsoid(c, r)
    inner = fr.ellipsoid(c, tuple(max(v - thickness, 0.5) for v in r))
    return outer, inner


def thigh_axes(Z, h: float, fat_mm: float, z_top: float) -> tuple:
    """Cross-section of each thigh at body levels ``Z`` (mm): ``(in_z, cx, cy, ax, ay, fat)``.

    Reference female thigh: circumference ~550 mm below the gluteal fold and ~480 mm at mid-thigh (semi-axes
    ~85 / 75 mm), centres 90 -> 80 mm from the midline (``cx``, mm; ``+-cx`` for the left / right thigh) and
    10 -> 5 mm posterior (``cy``); ``ax``, ``ay`` are the outer semi-axes (mm) and ``fat`` the subcutaneous fat
    thickness (mm), 1.5 x the trunk's layer (assumption: gynoid fat distribution). ``in_z`` is True between
    ``z_top`` and mid-thigh (:data:`MID_THIGH_MM` x ``h``). Shared by anatomy v1 (voxel masks) and v2 (implicit
    surfaces).
    """
    z0, z1 = z_top, MID_THIGH_MM * h
    t = np.clip((Z - z0) / (z1 - z0), 0.0, 1.0)               # 0 at the top, 1 at mid-thigh
    inz = (Z <= z0) & (Z >= z1)
    cx = (90.0 - 10.0 * t) * h
    cy = (10.0 - 5.0 * t) * h
    ax = (80.0 - 8.0 * t) * h + 0.5 * fat_mm
    ay = (85.0 - 10.0 * t) * h + 0.5 * fat_mm
    return inz, cx, cy, ax, ay, 1.5 * fat_mm


def thigh_masks(fr, h: float, fat_mm: float, z_top: float) -> tuple:
    """(thighs, thigh_muscle) bool masks: elliptic cross-sections tapering from the hip to mid-thigh
    (:func:`thigh_axes`)."""
    Z, Y, X = fr.z, fr.y, fr.x
    inz, cx, cy, ax, ay, fat = thigh_axes(Z, h, fat_mm, z_top)
    thighs = np.zeros(np.broadcast_shapes(Z.shape, Y.shape, X.shape), bool)
    muscle = np.zeros_like(thighs)
    for s in (-1.0, 1.0):
        thighs |= ((((Y - cy) / ay) ** 2 + ((X - s * cx) / ax) ** 2) <= 1.0) & inz
        muscle |= ((((Y - cy) / (ay - fat)) ** 2 + ((X - s * cx) / (ax - fat)) ** 2) <= 1.0) & inz
    return thighs, muscle


def pelvic_bone_parts(fr, h: float) -> list:
    """Bony pelvis and femurs as ``(mask, label, material)`` in painting order (later parts paint over earlier):
    :func:`pelvis_parts` then :func:`femur_parts`.

    Iliac wings (bowl-shaped shells, 8 mm cortex around a spongiosa core), sacrum (wedge between the wings),
    pubic / ischial ring (elliptic annulus open posteriorly, z -462 to -412 mm at 160 cm), and per femur the head
    (sphere, 22 mm), neck (capsule to the greater trochanter), trochanter and shaft (capsule to 60 mm below
    mid-thigh). Labels: ``pelvis_cortical`` / ``femur_cortical`` (cortical bone), ``pelvis_marrow`` (spongiosa:
    red marrow of the pelvis and of the proximal femur, adult), ``femur_marrow`` (the shaft's cavity: yellow
    marrow, soft-tissue density). Masks are not clipped to the body outline. ``fr`` gives body coordinates
    ``z, y, x`` (mm, broadcastable arrays) and ``ellipsoid(centre, radii)``; lengths scale with ``h``.
    Shared by anatomy v1 (:func:`paint_pelvis_and_thighs`) and v2 (:mod:`her2sim.phantoms.torso_v2`).
    """
    return pelvis_parts(fr, h) + femur_parts(fr, h)


def pelvis_parts(fr, h: float) -> list:
    """Iliac wings, sacrum and pubic / ischial ring, ``(mask, label, material)`` (see :func:`pelvic_bone_parts`)."""
    Z, Y, X = fr.z, fr.y, fr.x
    parts = []
    # iliac wings: bowl-shaped shells, lateral-posterior parts of two ellipsoids
    for s in (-1.0, 1.0):
        c, r = (-320.0 * h, 15.0 * h, s * 62.0 * h), (62.0 * h, 48.0 * h, 72.0 * h)
        outer, inner = shell(fr, c, r, 8.0)
        wing = outer & ~inner & (s * X >= 38.0 * h) & (Y >= -35.0 * h) & (Z >= -395.0 * h)
        core = shell(fr, c, r, 6.0)[1] & ~shell(fr, c, r, 2.0)[1] & wing
        parts += [(wing, "pelvis_cortical", "cortical_bone"), (core, "pelvis_marrow", "spongiosa")]
    # sacrum (wedge between the wings)
    sc, sr = (-360.0 * h, 55.0 * h, 0.0), (55.0 * h, 17.0 * h, 42.0 * h)
    outer, inner = shell(fr, sc, sr, 3.0)
    parts += [(outer, "pelvis_cortical", "cortical_bone"), (inner, "pelvis_marrow", "spongiosa")]
    # pubic / ischial ring: elliptic annulus, open posteriorly
    slab = (Z >= -462.0 * h) & (Z <= -412.0 * h)
    ring_out = ((Y + 5.0 * h) / (72.0 * h)) ** 2 + (X / (76.0 * h)) ** 2 <= 1.0
    ring_in = ((Y + 5.0 * h) / (72.0 * h - 10.0)) ** 2 + (X / (76.0 * h - 10.0)) ** 2 <= 1.0
    ring_mid_o = ((Y + 5.0 * h) / (72.0 * h - 2.5)) ** 2 + (X / (76.0 * h - 2.5)) ** 2 <= 1.0
    ring_mid_i = ((Y + 5.0 * h) / (72.0 * h - 7.5)) ** 2 + (X / (76.0 * h - 7.5)) ** 2 <= 1.0
    ring = slab & ring_out & ~ring_in & (Y <= 35.0 * h)
    parts += [(ring, "pelvis_cortical", "cortical_bone"),
              (ring & ring_mid_o & ~ring_mid_i & (Z >= -459.0 * h) & (Z <= -415.0 * h), "pelvis_marrow", "spongiosa")]
    return parts


def femur_parts(fr, h: float) -> list:
    """Proximal femurs and shafts, ``(mask, label, material)`` per side (see :func:`pelvic_bone_parts`)."""
    parts = []
    # femurs: head (sphere), neck (capsule to the greater trochanter), shaft (capsule to below mid-thigh)
    for s in (-1.0, 1.0):
        head_c = (-410.0 * h, 10.0 * h, s * 88.0 * h)
        troch = (-428.0 * h, 15.0 * h, s * 118.0 * h)
        knee = (MID_THIGH_MM * h - 60.0, 5.0 * h, s * 82.0 * h)
        head = fr.ellipsoid(head_c, (22.0 * h,) * 3)
        neck = capsule(fr, head_c, troch, 14.0 * h)
        tro = fr.ellipsoid(troch, (18.0 * h,) * 3)
        shaft = capsule(fr, troch, knee, 13.0 * h)
        spong = (fr.ellipsoid(head_c, (19.0 * h,) * 3) | capsule(fr, head_c, troch, 11.0 * h)
                 | fr.ellipsoid(troch, (15.0 * h,) * 3))
        cavity = capsule(fr, troch, knee, 7.5 * h) & ~spong
        parts += [(head | neck | tro | shaft, "femur_cortical", "cortical_bone"),
                  (spong, "pelvis_marrow", "spongiosa"),          # proximal femur: red marrow (adult)
                  (cavity, "femur_marrow", "red_marrow")]         # shaft cavity: yellow marrow, soft-tissue density
    return parts


def paint_pelvis_and_thighs(tv, fr, h: float, fat_mm: float, body) -> dict:
    """Bony pelvis and femurs (whole-body mode, :func:`pelvic_bone_parts` clipped to ``body``); returns the masks
    the caller needs: ``bones`` (all pelvic and femoral cortical-bone voxels) for the caller to keep out of the
    bowel loops.
    """
    bones = np.zeros(tv.grid.shape, bool)
    for mask, label, material in pelvic_bone_parts(fr, h):
        m = mask & body
        tv.paint(m, label, material)
        if material == "cortical_bone":
            bones |= m
    return {"bones": bones}
