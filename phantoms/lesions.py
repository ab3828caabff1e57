"""Lesions: breast primaries, metastases and chest inflammation, with HER2-driven 99mTc-NM-02 uptake.

HER2 status (ASCO/CAP rule used by the seed trial, Zhao et al., Breast Cancer Res 26:40, 2024):
positive for IHC 3+, or IHC 2+ with FISH amplification; negative otherwise (IHC 2+ needs a FISH result).

Uptake (``../shared/reference/biodistribution.md``, model defaults, configurable): mean SUV by IHC
0 / 1+ / 2+ / 3+ = 0.8 / 1.2 / 2.0 / 3.5 (:data:`DEFAULT_IHC_SUV`), times a per-lesion log-normal
``patient_factor`` (cohort draws it with CV about 35 %), times a ``treatment_factor`` (treated lesions
fall toward the IHC 0-1+ level), times the intratumoral pattern (:mod:`her2sim.phantoms.heterogeneity`:
log-normal random field, necrotic core, rim, HER2-positive sub-clones). Chest inflammation is visible on
CT but takes no NM-02 uptake (it keeps the local background; seed trial) and is FDG-hot.

Lesion specification (dict; every field is checked and a bad value raises ConfigError naming
``lesions[i].<field>``):

``type``            ``primary`` | ``lymph_node`` | ``bone`` | ``liver`` | ``brain`` | ``inflammation``
``side``            ``left`` | ``right`` (primary, axillary node)
``clock``           1-12 clock position on the breast seen from the front (12 superior, 3 = patient left)
``distance_mm``     distance of the lesion centre from the nipple in the clock plane (default 0.45 x breast radius)
``depth_mm``        depth below the anterior skin along the antero-posterior axis (default 0.5 x breast protrusion)
``location_mm``     explicit world centre (z, y, x) in mm, overriding the anatomical placement
``invades_chest_wall`` primaries only: ``true`` lets the lesion reach into the chest wall (T4a); default ``false``
``fit``             primaries only: ``refuse`` (default) refuses a lesion that crosses the chest wall or the skin,
                    naming the depth range that fits; ``shift`` moves it along the antero-posterior axis by the
                    least distance that fits (cohorts draw depths this way; the truth holds the final centre)
``site``            for nodes ``axillary`` | ``mediastinal``; inflammation ``lung`` | ``mediastinal``
``index``           which vertebra / mediastinal station / liver position (int)
``diameter_mm``     5-50 mm (primaries), 5-60 mm (others)
``shape``           ``sphere`` | ``ellipsoid`` | ``lobulated`` | ``spiculated``
``ihc``             ``0`` | ``1+`` | ``2+`` | ``3+``;  ``fish``: ``amplified`` | ``not_amplified`` | None
``suv_mean``        explicit class SUV (> 0) instead of the IHC table
``patient_factor``  multiplicative log-normal factor (> 0, default 1)
``treatment_factor`` multiplicative therapy effect (0-1.5, default 1)
``heterogeneity``   ``{"cv", "correlation_length_mm", "necrosis": {"radius_fraction", "residual_uptake"},
                    "rim": {"centre_fraction", "exponent"}, "subclones": {"n_clusters", "cluster_radius_mm",
                    "uptake_ratio"}}``
``satellites``      multifocal lesion: ``{"n", "diameter_mm", "gap_mm", "uptake_ratio"}`` satellite foci sharing the
                    lesion's id (one primary, as the seed trial counts it), ``gap_mm`` outside the main focus, their
                    uptake scaled by ``uptake_ratio`` (default 1; != 1 gives inconsistent uptake among foci)
``fdg_suv``         FDG SUVmax of the lesion for the optional FDG map (default drawn 2.3-45.7 for tumours)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from her2sim.core.errors import ConfigError, check_choice, check_int, check_range
from her2sim.core.grid import Grid

from . import heterogeneity as het
from .shapes import bbox_slices, random_rotation, solid_fraction, sphere_fraction
from .torso import TorsoAnatomy

#: mean SUV by IHC score (biodistribution.md default table).
DEFAULT_IHC_SUV = {"0": 0.8, "1+": 1.2, "2+": 2.0, "3+": 3.5}
IHC_SCORES = ("0", "1+", "2+", "3+")
FISH_RESULTS = ("amplified", "not_amplified", None)
LESION_TYPES = ("primary", "lymph_node", "bone", "liver", "brain", "inflammation")
LESION_SHAPES = ("sphere", "ellipsoid", "lobulated", "spiculated")
#: CT number (HU) per lesion type: soft-tissue tumour, hypodense liver metastasis, sclerotic bone metastasis,
#: consolidation / lymphadenitis (typical clinical CT values; assumptions).
LESION_HU = {"primary": 45.0, "lymph_node": 40.0, "bone": 600.0, "liver": 35.0, "brain": 40.0, "inflammation": 25.0}
LESION_MATERIAL = {"primary": "soft_tissue", "lymph_node": "soft_tissue", "bone": "spongiosa", "liver": "soft_tissue",
                   "brain": "soft_tissue", "inflammation": "soft_tissue"}
#: SUVpeak sphere: 1 cm^3, diameter 12.4 mm (PERCIST 1.0, Wahl et al., J Nucl Med 50:122S, 2009).
PEAK_SPHERE_ML = 1.0


def her2_positive(ihc: str, fish) -> bool:
    """HER2 status: IHC 3+, or IHC 2+ with FISH amplification."""
    check_choice("ihc", ihc, IHC_SCORES)
    check_choice("fish", fish, FISH_RESULTS)
    return ihc == "3+" or (ihc == "2+" and fish == "amplified")


@dataclass
class PlacedLesion:
    """A lesion rasterised on the grid (fraction map restricted to its bounding box)."""

    spec: dict
    id: int
    centre_mm: tuple
    radius_mm: float
    fraction: np.ndarray      # full-grid float32 fraction
    uptake_factor: np.ndarray  # full-grid float32 intratumoral multiplier (1 outside)
    extra: dict


def _norm_ihc(v, field):
    s = str(v).strip() if v is not None else None
    if s in ("1", "2", "3"):
        s = s + "+"
    if s not in IHC_SCORES:
        raise ConfigError(f"{field} = {v!r} is not an IHC score; choose one of {list(IHC_SCORES)}")
    return s


#: every key a lesion spec may hold (``her2_positive`` is filled in by :func:`validate_lesion_spec`)
LESION_KEYS = ("type", "side", "clock", "distance_mm", "depth_mm", "location_mm", "site", "index", "diameter_mm",
               "shape", "axis_ratios", "n_lobes", "n_spicules", "ihc", "fish", "suv_mean", "patient_factor",
               "treatment_factor", "heterogeneity", "satellites", "fdg_suv", "her2_positive", "invades_chest_wall",
               "fit")
#: how a breast primary that crosses the chest wall or the skin is handled (``fit`` key)
FIT_MODES = ("refuse", "shift")
#: largest antero-posterior move (mm) ``fit = "shift"`` and the refusal message's depth search consider
FIT_SEARCH_MM = 80.0
SATELLITE_KEYS = ("n", "diameter_mm", "gap_mm", "uptake_ratio")
HETEROGENEITY_KEYS = ("cv", "correlation_length_mm", "necrosis", "rim", "subclones")
NECROSIS_KEYS = ("radius_fraction", "residual_uptake")
RIM_KEYS = ("centre_fraction", "exponent")
SUBCLONE_KEYS = ("n_clusters", "cluster_radius_mm", "uptake_ratio")
SITES = ("axillary", "mediastinal", "lung")


def _refuse_unknown(field: str, table: dict, allowed) -> None:
    """ConfigError for the first key of ``table`` not in ``allowed``, with a did-you-mean suggestion."""
    import difflib

    for k in table:
        if k not in allowed:
            close = (difflib.get_close_matches(str(k), list(allowed), n=1, cutoff=0.6)
                     or sorted(a for a in allowed if a.startswith(str(k)) or str(k).startswith(a)))
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{field}.{k} is not a known lesion key{hint} (allowed: {sorted(allowed)})")


def _num(field: str, v, lo=None, hi=None, *, lo_open=False) -> float:
    """A finite number (int or float, not a string or boolean) in the range; see :func:`check_range`."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        lo_t = "-inf" if lo is None else f"{lo:g}"
        hi_t = "+inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{field} = {v!r} must be a number in {'(' if lo_open else '['}{lo_t}, {hi_t}]")
    return check_range(field, v, lo, hi, lo_open=lo_open)


def _table(field: str, v, allowed) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{field} = {v!r} must be a table with keys {list(allowed)}")
    _refuse_unknown(field, v, allowed)
    return dict(v)


def validate_lesion_spec(spec: dict, i: int) -> dict:
    """Check one lesion spec and fill defaults; errors name ``lesions[i].<field>``.

    Unknown keys are refused with a did-you-mean suggestion (``diamter_mm`` -> ``diameter_mm``), numbers
    must be numbers (``diameter_mm = "20"`` is refused), finite (NaN/inf refused) and in range.
    """
    f = f"lesions[{i}]"
    if not isinstance(spec, dict):
        raise ConfigError(f"{f} must be a table/dict, got {type(spec).__name__}")
    _refuse_unknown(f, spec, LESION_KEYS)
    s = dict(spec)
    s["type"] = check_choice(f"{f}.type", s.get("type", "primary"), LESION_TYPES)
    s["shape"] = check_choice(f"{f}.shape", s.get("shape", "sphere"), LESION_SHAPES)
    dmax = 50.0 if s["type"] == "primary" else 60.0
    d = s.get("diameter_mm", 20.0)
    s["diameter_mm"] = _num(f"{f}.diameter_mm", d, 5.0, dmax)
    if s["type"] != "inflammation":
        ihc = s.get("ihc", "0")
        if isinstance(ihc, (bool, float)) or not isinstance(ihc, (str, int)):
            raise ConfigError(f"{f}.ihc = {ihc!r} is not an IHC score; choose one of {list(IHC_SCORES)}")
        s["ihc"] = _norm_ihc(ihc, f"{f}.ihc")
        s["fish"] = check_choice(f"{f}.fish", s.get("fish"), FISH_RESULTS)
        if s["ihc"] == "2+" and s["fish"] is None:
            raise ConfigError(f"{f}.fish = None: IHC 2+ needs a FISH result ('amplified' or 'not_amplified')")
        s["her2_positive"] = her2_positive(s["ihc"], s["fish"])
    else:
        s["ihc"], s["fish"], s["her2_positive"] = None, None, False
    if s.get("suv_mean") is not None:
        s["suv_mean"] = _num(f"{f}.suv_mean", s["suv_mean"], 0.0, 1000.0, lo_open=True)
    s["patient_factor"] = _num(f"{f}.patient_factor", s.get("patient_factor", 1.0), 0.0, 20.0, lo_open=True)
    s["treatment_factor"] = _num(f"{f}.treatment_factor", s.get("treatment_factor", 1.0), 0.0, 1.5, lo_open=True)
    if s.get("side") is not None:
        s["side"] = check_choice(f"{f}.side", s["side"], ("left", "right"))
    if s.get("site") is not None:
        s["site"] = check_choice(f"{f}.site", s["site"], SITES)
    if s.get("clock") is not None:
        s["clock"] = _num(f"{f}.clock", s["clock"], 0.0, 12.0)
    for k, default in (("invades_chest_wall", False), ("fit", "refuse")):
        if k in s and s["type"] != "primary":
            raise ConfigError(f"{f}.{k} applies to breast primaries only (this lesion is type {s['type']!r})")
    if s["type"] == "primary":
        inv = s.get("invades_chest_wall", False)
        if not isinstance(inv, (bool, np.bool_)):
            raise ConfigError(f"{f}.invades_chest_wall = {inv!r} must be true or false")
        s["invades_chest_wall"] = bool(inv)
        s["fit"] = check_choice(f"{f}.fit", s.get("fit", "refuse"), FIT_MODES)
    for k in ("distance_mm", "depth_mm"):
        if s.get(k) is not None:
            s[k] = _num(f"{f}.{k}", s[k], 0.0, 300.0)
    if s.get("location_mm") is not None:
        loc = s["location_mm"]
        if not isinstance(loc, (list, tuple)) or len(loc) != 3:
            raise ConfigError(f"{f}.location_mm = {loc!r} must have 3 entries (z, y, x) in mm")
        s["location_mm"] = [_num(f"{f}.location_mm[{k}]", v, -1e4, 1e4) for k, v in enumerate(loc)]
    if s.get("axis_ratios") is not None:
        ar = s["axis_ratios"]
        if not isinstance(ar, (list, tuple)) or len(ar) != 3:
            raise ConfigError(f"{f}.axis_ratios = {ar!r} must be 3 positive numbers")
        s["axis_ratios"] = [_num(f"{f}.axis_ratios[{k}]", v, 0.0, 10.0, lo_open=True) for k, v in enumerate(ar)]
    for k, hi in (("n_lobes", 20), ("n_spicules", 50)):
        if s.get(k) is not None:
            s[k] = check_int(f"{f}.{k}", s[k], 1, hi)
    if s.get("index") is not None:
        s["index"] = check_int(f"{f}.index", s["index"], 0, 1000)
    if s.get("satellites"):
        sat = _table(f"{f}.satellites", s["satellites"], SATELLITE_KEYS)
        sat["n"] = check_int(f"{f}.satellites.n", sat.get("n", 2), 1, 10)
        sat["diameter_mm"] = _num(f"{f}.satellites.diameter_mm", sat.get("diameter_mm", 8.0), 3.0, 30.0)
        sat["gap_mm"] = _num(f"{f}.satellites.gap_mm", sat.get("gap_mm", 6.0), 0.0, 100.0)
        sat["uptake_ratio"] = _num(f"{f}.satellites.uptake_ratio", sat.get("uptake_ratio", 1.0), 0.0, 20.0,
                                   lo_open=True)
        s["satellites"] = sat
    h = s.get("heterogeneity") or {}
    h = _table(f"{f}.heterogeneity", h, HETEROGENEITY_KEYS) if h else {}
    if h:
        hf = f"{f}.heterogeneity"
        h["cv"] = _num(f"{hf}.cv", h.get("cv", 0.0), 0.0, 3.0)
        h["correlation_length_mm"] = _num(f"{hf}.correlation_length_mm", h.get("correlation_length_mm", 4.0),
                                          0.5, 100.0)
        if h.get("necrosis"):
            n = _table(f"{hf}.necrosis", h["necrosis"], NECROSIS_KEYS)
            n["radius_fraction"] = _num(f"{hf}.necrosis.radius_fraction", n.get("radius_fraction", 0.3), 0.0, 0.9)
            n["residual_uptake"] = _num(f"{hf}.necrosis.residual_uptake", n.get("residual_uptake", 0.1), 0.0, 1.0)
            h["necrosis"] = n
        if h.get("rim"):
            r = _table(f"{hf}.rim", h["rim"], RIM_KEYS)
            r["centre_fraction"] = _num(f"{hf}.rim.centre_fraction", r.get("centre_fraction", 0.3), 0.0, 1.0)
            r["exponent"] = _num(f"{hf}.rim.exponent", r.get("exponent", 2.0), 0.1, 10.0)
            h["rim"] = r
        if h.get("subclones"):
            c = _table(f"{hf}.subclones", h["subclones"], SUBCLONE_KEYS)
            c["n_clusters"] = check_int(f"{hf}.subclones.n_clusters", c.get("n_clusters", 2), 0, 50)
            c["cluster_radius_mm"] = _num(f"{hf}.subclones.cluster_radius_mm", c.get("cluster_radius_mm", 4.0),
                                          0.5, 50.0)
            c["uptake_ratio"] = _num(f"{hf}.subclones.uptake_ratio", c.get("uptake_ratio", 2.5), 0.0, 100.0,
                                     lo_open=True)
            h["subclones"] = c
    s["heterogeneity"] = h
    if s.get("fdg_suv") is not None:
        s["fdg_suv"] = _num(f"{f}.fdg_suv", s["fdg_suv"], 0.0, 100.0, lo_open=True)
    return s


def class_suv(spec: dict, ihc_suv: dict | None = None) -> float:
    """Mean tumour SUV (reference time) before intratumoral patterns: table[IHC] x patient x treatment."""
    if spec["type"] == "inflammation":
        return 0.0
    tab = dict(DEFAULT_IHC_SUV)
    if ihc_suv:
        for k, v in ihc_suv.items():
            tab[_norm_ihc(k, "ihc_suv key")] = check_range(f"ihc_suv.{k}", v, 0.0, 1000.0, lo_open=True)
    base = spec["suv_mean"] if spec.get("suv_mean") is not None else tab[spec["ihc"]]
    return float(base * spec["patient_factor"] * spec["treatment_factor"])


# ---------------------------------------------------------------------------------------------- placement
def _breast_location(anatomy: TorsoAnatomy, s: dict, f: str) -> tuple:
    z, y_surface, x, depth = _breast_surface_point(anatomy, s, f)
    return (z, y_surface + depth, x)


def _breast_surface_point(anatomy: TorsoAnatomy, s: dict, f: str) -> tuple:
    """(z, y, x) mm of the anterior breast surface at the spec's clock/distance_mm, and the depth (mm) below it
    (``depth_mm``, or half the protrusion there by default)."""
    side = s.get("side") or "left"
    b = anatomy.landmarks["breasts"][side]
    c, r = b["centre_mm"], b["radii_mm"]
    clock = s.get("clock", 10.0 if side == "right" else 2.0)
    ang = np.deg2rad(30.0 * clock)
    dist = s.get("distance_mm")
    if dist is None:
        dist = 0.45 * min(r[0], r[2])
    dx, dz = dist * np.sin(ang), dist * np.cos(ang)
    q = 1.0 - (dx / r[2]) ** 2 - (dz / r[0]) ** 2
    if q <= 0.02:
        raise ConfigError(f"{f}.distance_mm = {dist:.1f} mm at clock {clock:g} lies outside the {side} breast "
                          f"(breast semi-axes x {r[2]:.0f} mm, z {r[0]:.0f} mm)")
    y_surface = c[1] - r[1] * np.sqrt(q)
    depth = s.get("depth_mm")
    if depth is None:
        depth = 0.5 * (c[1] - y_surface)
    return (c[0] + dz, float(y_surface), c[2] + dx, float(depth))


def _pull_inside(anatomy: TorsoAnatomy, point, margin_mm: float) -> tuple:
    """Move ``point`` towards the body axis (in x) until a ball of ``margin_mm`` around it is inside the body."""
    z, y, x = (float(v) for v in point)
    g = anatomy.volume.grid
    cx = g.center_mm[2]
    for _ in range(200):
        probes = [(z, y, x), (z + margin_mm, y, x), (z - margin_mm, y, x), (z, y + margin_mm, x),
                  (z, y - margin_mm, x), (z, y, x + margin_mm), (z, y, x - margin_mm)]
        if all(bool(anatomy.body_inside(*q)) for q in probes):
            break
        x -= np.sign(x - cx) * 1.0
    return (z, y, x)


def _anatomic_location(anatomy: TorsoAnatomy, s: dict, f: str, rng: np.random.Generator) -> tuple:
    lm = anatomy.landmarks
    t = s["type"]
    idx = s.get("index", 0) or 0
    if s.get("location_mm") is not None:
        return tuple(s["location_mm"])
    if t == "primary":
        return _breast_location(anatomy, s, f)
    if t == "lymph_node" or (t == "inflammation" and s.get("site", "lung") == "mediastinal"):
        site = s.get("site", "axillary" if t == "lymph_node" else "mediastinal")
        check_choice(f"{f}.site", site, ("axillary", "mediastinal"))
        if site == "axillary":
            p = lm["axilla"][s.get("side") or "left"]
            return _pull_inside(anatomy, (p[0] - 22.0 * idx, p[1] + 12.0 * idx, p[2]), s["diameter_mm"] / 2.0 + 3.0)
        st = lm["mediastinum"]
        return tuple(st[idx % len(st)])
    if t == "inflammation":
        check_choice(f"{f}.site", s.get("site", "lung"), ("lung", "mediastinal"))
        lung = lm["lungs"][s.get("side") or ("right" if idx % 2 == 0 else "left")]
        c, r = lung["centre_mm"], lung["radii_mm"]
        u = rng.uniform(-0.35, 0.35, 3)
        return (c[0] + u[0] * r[0] + 0.2 * r[0], c[1] + u[1] * r[1], c[2] + u[2] * r[2])
    if t == "bone":
        sp = lm["spine"]
        zs = sp["vertebra_z_mm"]
        g = anatomy.volume.grid
        zlo, zhi = g.lower_corner_mm[0], g.lower_corner_mm[0] + g.extent_mm[0]
        inside = [z for z in zs if zlo + 15 < z < zhi - 15] or zs
        return (inside[(len(inside) // 2 + 2 * idx) % len(inside)], sp["y_mm"], sp["x_mm"])
    if t == "liver":
        c, r = lm["liver"]["centre_mm"], lm["liver"]["radii_mm"]
        offs = [(0.1, -0.2, -0.3), (-0.2, 0.2, -0.1), (0.25, 0.0, 0.1)]
        o = offs[idx % len(offs)]
        return (c[0] + o[0] * r[0], c[1] + o[1] * r[1], c[2] + o[2] * r[2])
    if t == "brain":
        c, r = lm["brain"]["centre_mm"], lm["brain"]["radii_mm"]
        o = [(0.3, 0.2, 0.35), (0.0, -0.3, -0.4)][idx % 2]
        return (c[0] + o[0] * r[0], c[1] + o[1] * r[1], c[2] + o[2] * r[2])
    raise ConfigError(f"{f}.type = {t!r} has no placement rule")


def _shape_predicate(s: dict, centre, R: float, rng: np.random.Generator):
    """Predicate inside(z, y, x), bounding half-extent (mm) and normalised-radius function for a lesion."""
    c = np.asarray(centre, float)
    kind = s["shape"]
    if kind == "sphere":
        def inside(z, y, x):
            return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= R * R

        def rho(z, y, x):
            return np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / R
        return inside, R, rho, {}
    if kind == "ellipsoid":
        ratios = np.asarray(s.get("axis_ratios", (1.3, 1.0, 0.77)), float)
        if ratios.shape != (3,) or np.any(ratios <= 0):
            raise ConfigError(f"axis_ratios = {list(ratios)} must be 3 positive numbers")
        ratios = ratios / np.prod(ratios) ** (1.0 / 3.0)     # same volume as the sphere of this diameter
        radii = R * ratios
        rot = random_rotation(rng)

        def rho(z, y, x):
            d = (z - c[0], y - c[1], x - c[2])
            acc = 0.0
            for k in range(3):
                u = rot[k, 0] * d[0] + rot[k, 1] * d[1] + rot[k, 2] * d[2]
                acc = acc + (u / radii[k]) ** 2
            return np.sqrt(acc)

        def inside(z, y, x):
            return rho(z, y, x) <= 1.0
        return inside, float(radii.max()), rho, {"radii_mm": [float(v) for v in radii]}
    if kind == "lobulated":
        n_lobes = int(s.get("n_lobes", rng.integers(4, 8)))
        dirs = rng.normal(size=(n_lobes, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        rc, rl, dl = 0.75 * R, 0.5 * R, 0.45 * R
        lobes = c + dirs * dl

        def inside(z, y, x):
            m = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= rc * rc
            for p in lobes:
                m = m | ((z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2 <= rl * rl)
            return m

        def rho(z, y, x):
            return np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / (dl + rl)
        return inside, dl + rl, rho, {"n_lobes": n_lobes}
    # spiculated: core sphere + tapering spicules (cones) radiating outwards
    n_sp = int(s.get("n_spicules", rng.integers(6, 12)))
    dirs = rng.normal(size=(n_sp, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rc, t0, t1, w0 = 0.8 * R, 0.6 * R, 1.8 * R, max(0.15 * R, 1.0)

    def inside(z, y, x):
        dz, dy, dx = z - c[0], y - c[1], x - c[2]
        m = dz * dz + dy * dy + dx * dx <= rc * rc
        for v in dirs:
            t = dz * v[0] + dy * v[1] + dx * v[2]
            p2 = (dz - t * v[0]) ** 2 + (dy - t * v[1]) ** 2 + (dx - t * v[2]) ** 2
            w = w0 * (t1 - t) / (t1 - t0)
            m = m | ((t >= t0) & (t <= t1) & (p2 <= w * w))
        return m

    def rho(z, y, x):
        return np.minimum(np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) / rc, 1.0)
    return inside, t1, rho, {"n_spicules": n_sp}


def _shifted(fn, move):
    """``fn`` (a function of world z, y, x) translated by ``move`` = (dz, dy, dx) mm."""
    dz, dy, dx = (float(v) for v in move)

    def moved(z, y, x):
        return fn(z - dz, y - dy, x - dx)
    return moved


def _lesion_points(inside, c, ext: float) -> np.ndarray:
    """World points (n, 3) mm sampling the lesion's solid on a lattice of pitch ``ext / 8`` (>= 0.5 mm)."""
    step = max(ext / 8.0, 0.5)
    ax = np.arange(-ext, ext + 0.5 * step, step)
    Z, Y, X = np.meshgrid(ax + c[0], ax + c[1], ax + c[2], indexing="ij")
    m = inside(Z, Y, X)
    pts = np.stack([Z[m], Y[m], X[m]], axis=1)
    return pts if len(pts) else np.asarray([c], float)


def _breast_fit(anatomy: TorsoAnatomy, spec: dict, f: str, inside, c, ext: float) -> tuple:
    """Move (dz, dy, dx) mm that keeps a breast primary inside the body and out of the chest wall (zeros when it
    fits where it was placed), and the fraction of the lesion's sampled solid left in the chest wall (0 unless no
    position fits, below).

    The lesion's solid (satellites and spicules included) is sampled by :func:`_lesion_points`; every point must
    lie inside ``anatomy.body_inside`` and, unless ``invades_chest_wall``, outside ``anatomy.chest_wall_inside``.
    ``fit = "refuse"`` raises ConfigError naming the depth range that fits (or the diameter when none does).
    ``fit = "shift"`` returns the smallest antero-posterior move that fits; when none does, the lesion is also
    moved towards the nipple axis (1 mm steps, the least distance first), where the breast is deepest; when
    nothing fits (a lesion thicker than the breast there), it gets the position with the least overlap with the
    chest wall among all those searched (every depth, at its clock position and on the way to the nipple axis),
    and that overlap is returned (the truth records it; never silently).
    """
    pts = _lesion_points(inside, c, ext)
    wall = None if spec.get("invades_chest_wall") else getattr(anatomy, "chest_wall_inside", None)
    cand = np.arange(-FIT_SEARCH_MM, FIT_SEARCH_MM + 0.25, 0.5)

    def placements(lateral, dys):
        """Per move: every point in the body (bool) and the fraction of points in the chest wall."""
        dys = np.atleast_1d(np.asarray(dys, float))
        z = np.broadcast_to(pts[:, 0] + lateral[0], (len(dys), len(pts)))
        y = pts[None, :, 1] + dys[:, None]
        x = np.broadcast_to(pts[:, 2] + lateral[1], (len(dys), len(pts)))
        in_body = np.asarray(anatomy.body_inside(z, y, x), bool).all(axis=1)
        in_wall = np.zeros(len(dys)) if wall is None else np.asarray(wall(z, y, x), bool).mean(axis=1)
        return in_body, in_wall

    def nearest(fits_mask):
        fits = cand[fits_mask]
        return float(fits[np.argmin(np.abs(fits))])

    none = np.zeros(2)
    in_body0, in_wall0 = placements(none, 0.0)
    if in_body0[0] and in_wall0[0] == 0.0:
        return np.zeros(3), 0.0
    in_body, in_wall = placements(none, cand)
    good = in_body & (in_wall == 0.0)
    if spec.get("fit") == "shift":
        if good.any():
            return np.array([0.0, nearest(good), 0.0]), 0.0
        axis = anatomy.landmarks["breasts"][spec.get("side") or "left"]["centre_mm"]
        off = np.array([axis[0] - c[0], axis[2] - c[2]])
        dist = float(np.hypot(*off))
        least = []  # per lateral position: (overlap, move length, move) of its least-overlap depth under the skin

        def keep_least(lateral, b, w):
            if wall is not None and b.any():
                k = int(np.argmin(np.where(b, w, np.inf)))
                move = np.array([lateral[0], float(cand[k]), lateral[1]])
                least.append((float(w[k]), float(np.linalg.norm(move)), move))

        keep_least(none, in_body, in_wall)
        for step in np.arange(1.0, dist + 0.5, 1.0):
            lateral = off * min(step / dist, 1.0)
            b2, w2 = placements(lateral, cand)
            if (b2 & (w2 == 0.0)).any():
                return np.array([lateral[0], nearest(b2 & (w2 == 0.0)), lateral[1]]), 0.0
            keep_least(lateral, b2, w2)
        # no position fits (a lesion thicker than the breast there): of all positions searched (depths at the
        # placed clock position and on the way to the nipple axis, where the breast is deepest) the least
        # overlap with the chest wall that keeps it under the skin, then the least move; recorded in the truth
        # (``shape_params.chest_wall_overlap``)
        if least:
            overlap, _, move = min(least, key=lambda t: (t[0], t[1]))
            return move, overlap
    what = "reaches into the chest wall" if in_wall0[0] > 0.0 else "reaches out through the skin"
    desc = f"{f} ({spec['shape']}, diameter_mm = {spec['diameter_mm']:g})"
    if not good.any():
        raise ConfigError(f"{desc} {what} at every depth: it does not fit in the {spec.get('side') or 'left'} "
                          "breast there; choose a smaller diameter_mm, another clock/distance_mm, or set "
                          "invades_chest_wall = true")
    fits = cand[good]
    if spec.get("location_mm") is not None:
        y0 = float(c[1])
        raise ConfigError(f"{desc} {what}: location_mm[1] = {y0:.1f} mm; the lesion fits for location_mm[1] in "
                          f"[{y0 + fits.min():.1f}, {y0 + fits.max():.1f}] mm (or set invades_chest_wall = true, "
                          "or fit = 'shift')")
    name = "depth_mm" if spec.get("depth_mm") is not None else "depth_mm (default, half the protrusion)"
    d0 = _breast_surface_point(anatomy, spec, f)[3]
    raise ConfigError(f"{desc} {what}: {name} = {d0:.1f} mm; at this clock/distance_mm it fits for depth_mm in "
                      f"[{max(d0 + fits.min(), 0.0):.1f}, {d0 + fits.max():.1f}] mm (or set invades_chest_wall = "
                      "true, or fit = 'shift')")


def place_lesion(anatomy: TorsoAnatomy, spec: dict, lesion_id: int, rng: np.random.Generator,
                 supersample: int = 3) -> PlacedLesion:
    """Rasterise one validated lesion spec (fraction map + intratumoral multiplier) on the anatomy grid."""
    f = f"lesions[{lesion_id - 1}]"
    g: Grid = anatomy.volume.grid
    centre = _anatomic_location(anatomy, spec, f, rng)
    R = spec["diameter_mm"] / 2.0
    if not bool(anatomy.body_inside(*centre)):
        raise ConfigError(f"{f}.location_mm = {[round(v, 1) for v in centre]} mm lies outside the patient body "
                          "outline; move the lesion (clock/distance_mm/depth_mm/location_mm)")
    inside, ext, rho_fn, extra = _shape_predicate(spec, centre, R, rng)
    c = np.asarray(centre)
    sat = spec.get("satellites")
    if sat:
        # multifocal lesion: satellite foci (same id and uptake class) around the main focus
        dirs = rng.normal(size=(sat["n"], 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        rs = sat["diameter_mm"] / 2.0
        dist = ext + sat["gap_mm"] + rs
        foci = c + dirs * dist
        core = inside

        def inside(z, y, x, core=core, foci=foci, rs=rs):
            m = core(z, y, x)
            for p in foci:
                m = m | ((z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2 <= rs * rs)
            return m
        ext = dist + rs
        extra["satellite_centres_mm"] = [[float(v) for v in p] for p in foci]
    if spec["type"] == "primary":
        move, overlap = _breast_fit(anatomy, spec, f, inside, c, ext)
        if overlap > 0.0:
            extra["chest_wall_overlap"] = overlap
        if np.any(move != 0.0):
            inside, rho_fn = _shifted(inside, move), _shifted(rho_fn, move)
            c = c + move
            centre = tuple(float(v) for v in c)
            if "satellite_centres_mm" in extra:
                extra["satellite_centres_mm"] = [[float(a + b) for a, b in zip(p, move)]
                                                 for p in extra["satellite_centres_mm"]]
            extra["fit_shift_mm"] = [float(v) for v in move]
    frac = solid_fraction(g, inside, c - ext, c + ext, supersample)
    factor = np.ones(g.shape, np.float32)
    h = spec["heterogeneity"]
    idx = np.nonzero(frac > 0)
    if idx[0].size and h:
        lo = [int(a.min()) for a in idx]
        hi = [int(a.max()) + 1 for a in idx]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        zz, yy, xx = (g.axis_mm(a)[box[a]] for a in range(3))
        Z, Y, X = zz[:, None, None], yy[None, :, None], xx[None, None, :]
        local = np.ones(tuple(b - a for a, b in zip(lo, hi)), np.float32)
        if h.get("cv", 0.0) > 0:
            local *= het.lognormal_field(local.shape, g.spacing_mm, h["cv"], h["correlation_length_mm"], rng)
        rho = rho_fn(Z, Y, X)
        if h.get("necrosis"):
            n = h["necrosis"]
            local *= het.necrotic_core_factor(rho, n["radius_fraction"], n["residual_uptake"])
        if h.get("rim"):
            local *= het.rim_factor(rho, h["rim"]["centre_fraction"], h["rim"]["exponent"])
        if h.get("subclones"):
            sc = h["subclones"]
            fac, centres = het.subclone_factor(Z, Y, X, centre, R, sc["n_clusters"], sc["cluster_radius_mm"],
                                               sc["uptake_ratio"], rng)
            local *= fac
            extra["subclone_centres_mm"] = centres
        factor[box] = local
    if sat and sat["uptake_ratio"] != 1.0:
        rs = sat["diameter_mm"] / 2.0
        for p in extra["satellite_centres_mm"]:
            sl = bbox_slices(g, np.asarray(p) - rs, np.asarray(p) + rs)
            if sl is None:
                continue
            zz, yy, xx = (g.axis_mm(a)[sl[a]] for a in range(3))
            d2 = (zz[:, None, None] - p[0]) ** 2 + (yy[None, :, None] - p[1]) ** 2 + (xx[None, None, :] - p[2]) ** 2
            sub = factor[sl]
            sub[d2 <= (rs + 0.5 * max(g.spacing_mm)) ** 2] *= np.float32(sat["uptake_ratio"])
    return PlacedLesion(spec=spec, id=lesion_id, centre_mm=tuple(float(v) for v in centre), radius_mm=R,
                        fraction=frac, uptake_factor=factor, extra=extra)


def peak_kernel(grid: Grid, volume_ml: float = PEAK_SPHERE_ML) -> np.ndarray:
    """Normalised spherical averaging kernel of ``volume_ml`` (partial-volume weights, 4x supersampled)."""
    r = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    half = [int(np.ceil(r / d)) for d in grid.spacing_mm]
    kg = Grid(tuple(2 * n + 1 for n in half), grid.spacing_mm, tuple(-n * d for n, d in zip(half, grid.spacing_mm)))
    k = sphere_fraction(kg, (0.0, 0.0, 0.0), r, 4).astype(np.float64)
    return k / k.sum()


def lesion_statistics(value_map: np.ndarray, mask: np.ndarray, kernel: np.ndarray) -> dict:
    """Mean, max and peak (max of the kernel-averaged map over mask voxels) of ``value_map`` in ``mask``."""
    if not mask.any():
        return {"mean": None, "max": None, "peak": None}
    idx = np.nonzero(mask)
    pad = [s // 2 for s in kernel.shape]
    lo = [max(int(a.min()) - p, 0) for a, p in zip(idx, pad)]
    hi = [min(int(a.max()) + p + 1, n) for a, p, n in zip(idx, pad, value_map.shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sm = ndimage.convolve(value_map[box].astype(np.float64), kernel, mode="nearest")
    return {"mean": float(value_map[mask].mean(dtype=np.float64)), "max": float(value_map[mask].max()),
            "peak": float(sm[mask[box]].max())}
