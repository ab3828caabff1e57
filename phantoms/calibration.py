"""Calibration and test objects: NEMA IEC body phantom, uniform cylinder, point and line sources.

NEMA IEC body phantom geometry (NEMA NU 2; as modelled in OpenGATE ``contrib/phantoms/nemaiec``;
``../shared/reference/validation_targets.md``):

* six fillable spheres of inner diameter 10, 13, 17, 22, 28, 37 mm (nominal 0.52, 1.15, 2.57, 5.58,
  11.49, 26.52 mL) with 1 mm glass walls, centres on a circle of 114.5 mm diameter, 60 deg apart,
  in one transverse plane 70 mm below the inner surface of the lid (superior end);
* a lung insert of 50 mm outer / 42 mm inner diameter along the phantom axis (the centre of the ring),
  filled with lung-equivalent material (ICRU-44 lung at 0.26 g/cm^3) and no activity;
* a D-shaped body: interior = anterior half-cylinder of radius 147 mm plus a posterior block 77 mm deep
  with 77 mm rounded corners (294 mm x 224 mm), 3 mm PMMA walls (outer 300 mm wide x 230 mm AP);
  180 mm interior length, 17 mm PMMA end plates (214 mm outer length). The ring centre is the centre
  of the half-cylinder, 35 mm anterior of the body's mid-depth.

Sphere ``k`` (k = 0..5 for 10..37 mm) sits at angle ``phi_k = k * 60 deg`` measured in the transverse
plane from patient left (+x) towards anterior (-y): ``x = R cos phi``, ``y = -R sin phi``.
With ``walls=False`` the PMMA shell, sphere glass and lung-insert wall are left out (the lung insert then
fills its whole 50 mm outer diameter), useful for idealised recovery tests.

Volumes are computed with sub-voxel supersampling (:mod:`her2sim.phantoms.shapes`), and activity,
density and HU are partial-volume mixtures (:mod:`her2sim.phantoms.fraction_mix`), so the total activity
equals concentration x nominal volume to within the supersampling error.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.containers import Phantom
from her2sim.core.errors import ConfigError, check_choice, check_int, check_range
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_NAMES
from her2sim.core.radionuclide import TC99M

from .clinical_grid import clinical_grid
from .fraction_mix import Compartment, mix_compartments
from .shapes import prism_fraction, sphere_fraction, z_cylinder_fraction

#: IEC sphere inner diameters (mm), smallest first.
IEC_SPHERE_DIAMETERS_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
#: nominal IEC sphere volumes (mL) as tabulated by NEMA NU 2 (validation_targets.md).
IEC_SPHERE_VOLUMES_ML = (0.52, 1.15, 2.57, 5.58, 11.49, 26.52)
IEC_RING_DIAMETER_MM = 114.5
IEC_SPHERE_WALL_MM = 1.0
IEC_LUNG_OUTER_DIAMETER_MM = 50.0
IEC_LUNG_INNER_DIAMETER_MM = 42.0
IEC_ARC_RADIUS_MM = 147.0          # interior anterior half-cylinder
IEC_CORNER_RADIUS_MM = 77.0        # interior posterior rounded corners / block depth
IEC_SHELL_MM = 3.0                 # PMMA side walls
IEC_INTERIOR_LENGTH_MM = 180.0
IEC_OUTER_LENGTH_MM = 214.0
IEC_SPHERE_BELOW_LID_MM = 70.0


def _time_points(time_points_h) -> tuple:
    tp = tuple(float(check_range(f"time_points_h[{i}]", t, 0.0, 1000.0)) for i, t in enumerate(time_points_h))
    if not tp:
        raise ConfigError("time_points_h must contain at least one time (h)")
    return tp


def _decay_frames(activity: np.ndarray, time_points_h: tuple) -> np.ndarray:
    """Stack activity (Bq/mL at t = 0) decayed to each time point (h) with the Tc-99m half-life."""
    return np.stack([activity * np.float32(TC99M.decay_factor(t * 3600.0)) for t in time_points_h])


def iec_sphere_centres_mm(center_mm=(0.0, 0.0, 0.0)) -> list:
    """Positions and sizes of the six IEC spheres.

    Parameters
    ----------
    center_mm : sequence of 3 float
        World (z, y, x) position (mm) of the phantom centre: the lung-insert axis in x/y and the middle
        of the interior length in z (the value passed to :func:`iec_body_phantom`).

    Returns
    -------
    list of dict
        Smallest first: ``{"index", "diameter_mm", "radius_mm", "centre_mm" (z, y, x), "nominal_volume_ml",
        "angle_deg"}``.
    """
    cz, cy, cx = (float(v) for v in center_mm)
    ring_r = IEC_RING_DIAMETER_MM / 2.0
    z = cz + IEC_INTERIOR_LENGTH_MM / 2.0 - IEC_SPHERE_BELOW_LID_MM
    out = []
    for k, (d, v) in enumerate(zip(IEC_SPHERE_DIAMETERS_MM, IEC_SPHERE_VOLUMES_ML)):
        phi = np.deg2rad(60.0 * k)
        out.append({"index": k, "diameter_mm": d, "radius_mm": d / 2.0,
                    "centre_mm": (z, cy - ring_r * float(np.sin(phi)), cx + ring_r * float(np.cos(phi))),
                    "nominal_volume_ml": v, "angle_deg": 60.0 * k})
    return out


def _d_shape(cy: float, cx: float, grow_mm: float):
    """Cross-section predicate of the IEC D shape grown by ``grow_mm`` (0 = interior)."""
    ra = IEC_ARC_RADIUS_MM + grow_mm
    rc = IEC_CORNER_RADIUS_MM + grow_mm
    xc = IEC_ARC_RADIUS_MM - IEC_CORNER_RADIUS_MM  # corner-circle centres at x = +/- 70 mm, y = 0

    def inside(y, x):
        dy = y - cy
        dx = np.abs(x - cx)
        ant = (dy <= 0) & (dx ** 2 + dy ** 2 <= ra ** 2)
        post = (dy > 0) & (dy <= rc) & ((dx <= xc) | ((dx - xc) ** 2 + dy ** 2 <= rc ** 2))
        return ant | post
    lo = (cy - ra, cx - ra)
    hi = (cy + rc, cx + ra)
    return inside, lo, hi


def iec_body_phantom(grid: Grid | None = None, background_bq_per_ml: float = 5000.0, sphere_to_background: float = 8.0,
                     walls: bool = True, lung_insert: bool = True, center_mm=(0.0, 0.0, 0.0),
                     supersample: int = 6, time_points_h=(0.0,), sphere_bq_per_ml=None) -> Phantom:
    """NEMA IEC body phantom (see module docstring for the geometry).

    Parameters
    ----------
    grid : Grid, optional
        Default: 128^3 x 4.42 mm (:func:`her2sim.phantoms.clinical_grid.clinical_grid`).
    background_bq_per_ml : float
        Background (water) concentration at t = 0 in Bq/mL (> 0).
    sphere_to_background : float
        Sphere:background concentration ratio (4 and 8 are the NEMA choices; 1-100 allowed).
    walls : bool
        Include PMMA shell, 1 mm glass sphere walls and the lung-insert wall.
    lung_insert : bool
        Include the central lung insert.
    center_mm : sequence of 3 float
        World (z, y, x) of the ring axis / interior mid-length (mm).
    supersample : int
        Sub-samples per voxel edge for partial-volume fractions (6 gives < 2 % volume error for the
        10 mm sphere on a 2-4 mm grid).
    time_points_h : sequence of float
        Frames; the activity decays with the Tc-99m half-life from t = 0.
    sphere_bq_per_ml : sequence of 6 float, optional
        Per-sphere concentrations (Bq/mL) overriding ``sphere_to_background``.

    Returns
    -------
    Phantom
        ``truth`` has one row per sphere (id 1-6, nominal and rasterised volume, concentration);
        ``lesion_ids`` marks sphere interiors (fraction >= 0.5).
    """
    grid = clinical_grid(grid)
    bg = check_range("background_bq_per_ml", background_bq_per_ml, 0.0, 1e9, lo_open=True)
    ratio = check_range("sphere_to_background", sphere_to_background, 1.0, 100.0)
    n = check_int("supersample", supersample, 1, 16)
    tp = _time_points(time_points_h)
    if sphere_bq_per_ml is None:
        sphere_conc = [bg * ratio] * 6
    else:
        if len(sphere_bq_per_ml) != 6:
            raise ConfigError(f"sphere_bq_per_ml has {len(sphere_bq_per_ml)} entries; it needs 6 (10..37 mm)")
        sphere_conc = [check_range(f"sphere_bq_per_ml[{i}]", c, 0.0, 1e10) for i, c in enumerate(sphere_bq_per_ml)]
    cz, cy, cx = (float(v) for v in center_mm)
    zlo_i, zhi_i = cz - IEC_INTERIOR_LENGTH_MM / 2, cz + IEC_INTERIOR_LENGTH_MM / 2
    ins, lo, hi = _d_shape(cy, cx, 0.0)
    f_int = prism_fraction(grid, ins, lo, hi, zlo_i, zhi_i, n)
    comps = []
    if walls:
        end = (IEC_OUTER_LENGTH_MM - IEC_INTERIOR_LENGTH_MM) / 2
        ins_o, lo_o, hi_o = _d_shape(cy, cx, IEC_SHELL_MM)
        f_out = prism_fraction(grid, ins_o, lo_o, hi_o, zlo_i - end, zhi_i + end, n)
        comps.append(Compartment(np.clip(f_out - f_int, 0, 1), "pmma_shell", "pmma"))
    water = f_int.copy()
    if lung_insert:
        r_out = IEC_LUNG_OUTER_DIAMETER_MM / 2
        f_lo = z_cylinder_fraction(grid, (cy, cx), (r_out, r_out), zlo_i, zhi_i, n)
        water -= f_lo
        if walls:
            r_in = IEC_LUNG_INNER_DIAMETER_MM / 2
            f_li = z_cylinder_fraction(grid, (cy, cx), (r_in, r_in), zlo_i, zhi_i, n)
            comps.append(Compartment(np.clip(f_lo - f_li, 0, 1), "lung_insert_wall", "pmma"))
            comps.append(Compartment(f_li, "lung_insert", "lung"))
        else:
            comps.append(Compartment(f_lo, "lung_insert", "lung"))
    spheres = iec_sphere_centres_mm(center_mm)
    sphere_fracs = []
    for s, conc in zip(spheres, sphere_conc):
        f_in = sphere_fraction(grid, s["centre_mm"], s["radius_mm"], n)
        sphere_fracs.append(f_in)
        if walls:
            f_o = sphere_fraction(grid, s["centre_mm"], s["radius_mm"] + IEC_SPHERE_WALL_MM, n)
            comps.append(Compartment(np.clip(f_o - f_in, 0, 1), f"sphere_wall_{s['diameter_mm']:g}mm", "glass"))
            water -= f_o
        else:
            water -= f_in
        comps.append(Compartment(f_in, f"sphere_{s['diameter_mm']:g}mm", "water", conc))
    comps.append(Compartment(np.clip(water, 0, 1), "background_water", "water", bg))
    mixed = mix_compartments(grid, comps, "air")
    lesion_ids = np.zeros(grid.shape, np.int16)
    truth = []
    vox = grid.voxel_volume_ml
    for i, (s, f, conc) in enumerate(zip(spheres, sphere_fracs, sphere_conc), start=1):
        lesion_ids[f >= 0.5] = i
        truth.append({"id": i, "type": "iec_sphere", "diameter_mm": s["diameter_mm"],
                      "location_mm": list(s["centre_mm"]), "nominal_volume_ml": s["nominal_volume_ml"],
                      "volume_ml": float(f.sum(dtype=np.float64) * vox),
                      "concentration_bq_per_ml": [float(conc * TC99M.decay_factor(t * 3600.0)) for t in tp],
                      "background_bq_per_ml": [float(bg * TC99M.decay_factor(t * 3600.0)) for t in tp],
                      "sphere_to_background": float(conc / bg)})
    activity = _decay_frames(mixed["activity"], tp)
    total_mbq = float(mixed["activity"].sum(dtype=np.float64) * vox / 1e6)
    water_kg = float((f_int.sum(dtype=np.float64) * vox) / 1000.0)
    meta = {"phantom_type": "nema_iec_body", "weight_kg": water_kg, "height_cm": None,
            "injected_mbq": total_mbq, "seed": None,
            "config": {"background_bq_per_ml": bg, "sphere_to_background": ratio, "walls": bool(walls),
                       "lung_insert": bool(lung_insert), "center_mm": [cz, cy, cx], "supersample": n,
                       "time_points_h": list(tp)},
            "contour": {"shape": "iec_d", "axis_xy_mm": [cx, cy],
                        "half_width_mm": IEC_ARC_RADIUS_MM + (IEC_SHELL_MM if walls else 0.0)}}
    return Phantom(grid=grid, activity_bq_per_ml=activity, time_points_h=tp, ct_hu=mixed["ct_hu"],
                   labels=mixed["labels"], material_ids=mixed["material_ids"], density_g_cm3=mixed["density_g_cm3"],
                   label_names=mixed["label_names"], material_names=list(MATERIAL_NAMES), truth=truth,
                   lesion_ids=lesion_ids, meta=meta)


def uniform_cylinder_phantom(grid: Grid | None = None, diameter_mm: float = 216.0, length_mm: float = 186.0,
                             concentration_bq_per_ml: float = 5000.0, wall_mm: float = 0.0,
                             center_mm=(0.0, 0.0, 0.0), supersample: int = 4, time_points_h=(0.0,)) -> Phantom:
    """Uniform water cylinder along z (calibration / sensitivity phantom).

    Defaults follow the Jaszczak flangeless cylinder (216 mm inner diameter, 186 mm inner length).

    Parameters
    ----------
    diameter_mm, length_mm : float
        Inner diameter and length of the water (mm, > 0).
    concentration_bq_per_ml : float
        Uniform concentration at t = 0 (Bq/mL, >= 0).
    wall_mm : float
        PMMA wall thickness around and at both ends (mm, >= 0).
    """
    grid = clinical_grid(grid)
    d = check_range("diameter_mm", diameter_mm, 0.0, 2000.0, lo_open=True)
    length = check_range("length_mm", length_mm, 0.0, 4000.0, lo_open=True)
    c = check_range("concentration_bq_per_ml", concentration_bq_per_ml, 0.0, 1e10)
    w = check_range("wall_mm", wall_mm, 0.0, 100.0)
    n = check_int("supersample", supersample, 1, 16)
    tp = _time_points(time_points_h)
    cz, cy, cx = (float(v) for v in center_mm)
    r = d / 2
    f_w = z_cylinder_fraction(grid, (cy, cx), (r, r), cz - length / 2, cz + length / 2, n)
    comps = [Compartment(f_w, "water", "water", c)]
    if w > 0:
        f_o = z_cylinder_fraction(grid, (cy, cx), (r + w, r + w), cz - length / 2 - w, cz + length / 2 + w, n)
        comps.insert(0, Compartment(np.clip(f_o - f_w, 0, 1), "pmma_wall", "pmma"))
    mixed = mix_compartments(grid, comps, "air")
    vox = grid.voxel_volume_ml
    volume_ml = float(f_w.sum(dtype=np.float64) * vox)
    truth = [{"id": 1, "type": "uniform_cylinder", "location_mm": [cz, cy, cx], "volume_ml": volume_ml,
              "nominal_volume_ml": float(np.pi * r ** 2 * length / 1000.0),
              "concentration_bq_per_ml": [float(c * TC99M.decay_factor(t * 3600.0)) for t in tp]}]
    lesion_ids = (f_w >= 0.5).astype(np.int16)
    meta = {"phantom_type": "uniform_cylinder", "weight_kg": volume_ml / 1000.0, "height_cm": None,
            "injected_mbq": c * volume_ml / 1e6, "seed": None,
            "config": {"diameter_mm": d, "length_mm": length, "concentration_bq_per_ml": c, "wall_mm": w,
                       "center_mm": [cz, cy, cx], "supersample": n, "time_points_h": list(tp)},
            "contour": {"shape": "circle", "axis_xy_mm": [cx, cy], "radius_mm": r + w}}
    return Phantom(grid=grid, activity_bq_per_ml=_decay_frames(mixed["activity"], tp), time_points_h=tp,
                   ct_hu=mixed["ct_hu"], labels=mixed["labels"], material_ids=mixed["material_ids"],
                   density_g_cm3=mixed["density_g_cm3"], label_names=mixed["label_names"],
                   material_names=list(MATERIAL_NAMES), truth=truth, lesion_ids=lesion_ids, meta=meta)


def _linear_weights(grid: Grid, pos_mm, axes) -> list:
    """Per-axis (index, weight) pairs of linear interpolation at ``pos_mm`` for the listed axes."""
    out = []
    idx = grid.world_to_index(np.asarray(pos_mm, float))
    for a in axes:
        f = float(idx[a])
        i0 = int(np.floor(f))
        t = f - i0
        pairs = [(i0, 1.0 - t), (i0 + 1, t)]
        pairs = [(i, w) for i, w in pairs if w > 1e-9]
        for i, _ in pairs:
            if i < 0 or i >= grid.shape[a]:
                raise ConfigError(f"source position_mm = {list(pos_mm)} lies outside the grid along axis {a} "
                                  f"(index {f:.2f} of 0..{grid.shape[a] - 1})")
        out.append(pairs)
    return out


def _medium(grid: Grid, medium: str, medium_diameter_mm: float, center_yx, z_lo, z_hi, n):
    check_choice("medium", medium, ("air", "water"))
    comps = []
    if medium == "water":
        dm = check_range("medium_diameter_mm", medium_diameter_mm, 0.0, 2000.0, lo_open=True)
        f = z_cylinder_fraction(grid, center_yx, (dm / 2, dm / 2), z_lo, z_hi, n)
        comps.append(Compartment(f, "water", "water", 0.0))
    return mix_compartments(grid, comps, "air")


def point_source_phantom(grid: Grid | None = None, activity_mbq: float = 10.0, position_mm=(0.0, 0.0, 0.0), medium: str = "air",
                         medium_diameter_mm: float = 220.0, medium_length_mm: float = 166.0,
                         medium_center_mm=(0.0, 0.0, 0.0), time_points_h=(0.0,)) -> Phantom:
    """Point source (activity in MBq at t = 0) in air or in a water cylinder.

    The activity is spread over the 8 voxels around ``position_mm`` with trilinear weights (exact total
    activity and centroid). ``medium="water"`` adds a water cylinder (default 220 mm x 166 mm, the SIMIND
    scatter benchmark of ``physics.md``).
    """
    grid = clinical_grid(grid)
    a = check_range("activity_mbq", activity_mbq, 0.0, 1e6, lo_open=True)
    tp = _time_points(time_points_h)
    mz, my, mx = (float(v) for v in medium_center_mm)
    ml = check_range("medium_length_mm", medium_length_mm, 0.0, 4000.0, lo_open=True)
    mixed = _medium(grid, medium, medium_diameter_mm, (my, mx), mz - ml / 2, mz + ml / 2, 4)
    act = np.zeros(grid.shape, np.float64)
    w = _linear_weights(grid, position_mm, (0, 1, 2))
    for iz, wz in w[0]:
        for iy, wy in w[1]:
            for ix, wx in w[2]:
                act[iz, iy, ix] += wz * wy * wx
    act *= a * 1e6 / grid.voxel_volume_ml
    lesion_ids = (act > 0).astype(np.int16)
    truth = [{"id": 1, "type": "point_source", "location_mm": [float(v) for v in position_mm],
              "activity_mbq": [float(a * TC99M.decay_factor(t * 3600.0)) for t in tp], "medium": medium}]
    meta = {"phantom_type": "point_source", "weight_kg": None, "height_cm": None, "injected_mbq": a, "seed": None,
            "config": {"activity_mbq": a, "position_mm": [float(v) for v in position_mm], "medium": medium,
                       "medium_diameter_mm": float(medium_diameter_mm), "medium_length_mm": ml,
                       "time_points_h": list(tp)},
            "contour": {"shape": "circle", "axis_xy_mm": [mx, my],
                        "radius_mm": float(medium_diameter_mm) / 2 if medium == "water" else 0.0}}
    return Phantom(grid=grid, activity_bq_per_ml=_decay_frames(act.astype(np.float32), tp), time_points_h=tp,
                   ct_hu=mixed["ct_hu"], labels=mixed["labels"], material_ids=mixed["material_ids"],
                   density_g_cm3=mixed["density_g_cm3"], label_names=mixed["label_names"],
                   material_names=list(MATERIAL_NAMES), truth=truth, lesion_ids=lesion_ids, meta=meta)


def line_source_phantom(grid: Grid | None = None, activity_mbq_per_cm: float = 1.0, position_yx_mm=(0.0, 0.0),
                        length_mm: float | None = None, z_center_mm: float = 0.0, medium: str = "air",
                        medium_diameter_mm: float = 200.0, time_points_h=(0.0,)) -> Phantom:
    """Line source parallel to z (MBq per cm at t = 0) in air or in a water cylinder.

    The line's in-plane position is shared by the 4 neighbouring voxel columns with bilinear weights;
    along z it covers ``length_mm`` (default: the whole grid) with exact end-voxel fractions.
    """
    grid = clinical_grid(grid)
    lam = check_range("activity_mbq_per_cm", activity_mbq_per_cm, 0.0, 1e6, lo_open=True)
    tp = _time_points(time_points_h)
    zmin = grid.lower_corner_mm[0]
    zmax = zmin + grid.extent_mm[0]
    if length_mm is None:
        z_lo, z_hi = zmin, zmax
    else:
        L = check_range("length_mm", length_mm, 0.0, 1e4, lo_open=True)
        z_lo, z_hi = z_center_mm - L / 2, z_center_mm + L / 2
    py, px = (float(v) for v in position_yx_mm)
    mixed = _medium(grid, medium, medium_diameter_mm, (py, px), min(z_lo, zmin), max(z_hi, zmax), 4)
    w = _linear_weights(grid, (grid.center_mm[0], py, px), (1, 2))
    zc = grid.axis_mm(0)
    dz = grid.spacing_mm[0]
    zfrac = np.clip((np.minimum(zc + dz / 2, z_hi) - np.maximum(zc - dz / 2, z_lo)) / dz, 0.0, 1.0)
    act = np.zeros(grid.shape, np.float64)
    for iy, wy in w[0]:
        for ix, wx in w[1]:
            act[:, iy, ix] += zfrac * wy * wx
    # per voxel: activity = lambda [Bq/mm] * dz [mm] * weight / voxel volume [mL]
    act *= lam * 1e6 / 10.0 * dz / grid.voxel_volume_ml
    length_in = float(zfrac.sum() * dz)
    truth = [{"id": 1, "type": "line_source", "location_mm": [float(0.5 * (z_lo + z_hi)), py, px], "length_mm": length_in,
              "activity_mbq_per_cm": [float(lam * TC99M.decay_factor(t * 3600.0)) for t in tp], "medium": medium}]
    meta = {"phantom_type": "line_source", "weight_kg": None, "height_cm": None,
            "injected_mbq": lam * length_in / 10.0, "seed": None,
            "config": {"activity_mbq_per_cm": lam, "position_yx_mm": [py, px], "length_mm": length_in,
                       "medium": medium, "medium_diameter_mm": float(medium_diameter_mm), "time_points_h": list(tp)},
            "contour": {"shape": "circle", "axis_xy_mm": [px, py],
                        "radius_mm": float(medium_diameter_mm) / 2 if medium == "water" else 0.0}}
    return Phantom(grid=grid, activity_bq_per_ml=_decay_frames(act.astype(np.float32), tp), time_points_h=tp,
                   ct_hu=mixed["ct_hu"], labels=mixed["labels"], material_ids=mixed["material_ids"],
                   density_g_cm3=mixed["density_g_cm3"], label_names=mixed["label_names"],
                   material_names=list(MATERIAL_NAMES), truth=truth, lesion_ids=(act > 0).astype(np.int16), meta=meta)
