"""Named phantom presets for study files (``[phantom] preset = ...``): demo, torso, iec, cylinder, point.

``[phantom.lesions]`` options are interpreted per preset:

* ``demo`` / ``torso``: either a list of lesion specs (``[[phantom.lesions]]``, see
  :mod:`her2sim.phantoms.lesions`) or one table whose list-valued keys give one lesion per entry
  (``ihc = ["3+", "0"]``, ``diameter_mm = [20, 20]``; scalars apply to every lesion;
  ``heterogeneity = true`` gives each lesion a log-normal texture with CV 0.3 and 4 mm correlation length).
  ``demo`` without lesion options has a 20 mm IHC 3+ primary in the left breast and a 20 mm IHC 0 primary
  in the right breast.
* ``iec``: ``sphere_to_background`` (default 8), ``walls`` (default true), ``lung_insert`` (default true).
* ``cylinder``: ``diameter_mm`` (216), ``length_mm`` (186).
* ``point``: ``position_mm`` (z, y, x; default the origin), ``medium`` (``air``/``water``).

For the test objects ``activity_mbq`` (total activity at t = 0) sets the concentrations.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.containers import Phantom
from her2sim.core.errors import ConfigError, check_choice, check_range
from her2sim.core.grid import Grid

from .calibration import iec_body_phantom, point_source_phantom, uniform_cylinder_phantom
from .clinical_grid import clinical_grid
from .patient import patient_phantom

PRESET_NAMES = ("demo", "torso", "iec", "cylinder", "point")
DEMO_LESIONS = [{"type": "primary", "side": "left", "clock": 2, "diameter_mm": 20.0, "ihc": "3+"},
                {"type": "primary", "side": "right", "clock": 10, "diameter_mm": 20.0, "ihc": "0"}]
LESION_TABLE_KEYS = ("type", "side", "clock", "distance_mm", "depth_mm", "location_mm", "site", "index",
                     "diameter_mm", "shape", "ihc", "fish", "suv_mean", "patient_factor", "treatment_factor",
                     "heterogeneity", "fdg_suv", "satellites")
DEFAULT_TEXTURE = {"cv": 0.3, "correlation_length_mm": 4.0}


def lesions_from_options(options) -> list:
    """Lesion specs from ``[phantom.lesions]``: a list of specs, or a table of per-lesion lists / scalars."""
    if options is None:
        return []
    if isinstance(options, (list, tuple)):
        return [dict(o) for o in options]
    if not isinstance(options, dict):
        raise ConfigError(f"phantom.lesions must be a table or a list of tables, got {type(options).__name__}")
    if not options:
        return []
    for k in options:
        if k not in LESION_TABLE_KEYS:
            raise ConfigError(f"phantom.lesions.{k} is not a lesion option; known: {list(LESION_TABLE_KEYS)}")
    lengths = {k: len(v) for k, v in options.items() if isinstance(v, list) and k != "location_mm"}
    if "location_mm" in options and options["location_mm"] and isinstance(options["location_mm"][0], list):
        lengths["location_mm"] = len(options["location_mm"])
    n = max(lengths.values(), default=1)
    for k, m in lengths.items():
        if m != n:
            raise ConfigError(f"phantom.lesions.{k} has {m} entries but other keys have {n}; give one per lesion")
    out = []
    for i in range(n):
        spec = {"type": "primary", "side": "left" if i % 2 == 0 else "right"}
        for k, v in options.items():
            spec[k] = v[i] if k in lengths else v
        if spec.get("heterogeneity") is True:
            spec["heterogeneity"] = dict(DEFAULT_TEXTURE)
        elif spec.get("heterogeneity") is False:
            spec["heterogeneity"] = {}
        out.append(spec)
    return out


def preset_phantom(preset: str, grid: Grid | None = None, *, weight_kg: float = 70.0, height_cm: float = 160.0,
                   injected_mbq: float = 458.0, time_points_h=(1.0, 2.0), lesions=None, seed: int = 0,
                   activity_mbq: float | None = None) -> Phantom:
    """Build the phantom a study file names.

    Parameters
    ----------
    preset : str
        One of :data:`PRESET_NAMES`.
    grid : Grid, optional
        Default 128^3 x 4.42 mm.
    weight_kg, height_cm, injected_mbq, time_points_h, seed
        Patient and tracer settings (torso / demo).
    lesions : dict or list, optional
        ``[phantom.lesions]`` options (module docstring).
    activity_mbq : float, optional
        Total activity at t = 0 (MBq) of a test object (iec / cylinder / point); default ``injected_mbq``.

    Returns
    -------
    Phantom
    """
    check_choice("phantom.preset", preset, PRESET_NAMES)
    grid = clinical_grid(grid)
    if preset in ("demo", "torso"):
        specs = lesions_from_options(lesions)
        if preset == "demo" and not specs:
            specs = [dict(s) for s in DEMO_LESIONS]
        spec = {"weight_kg": weight_kg, "height_cm": height_cm, "injected_mbq": injected_mbq,
                "time_points_h": tuple(time_points_h), "lesions": specs}
        ph = patient_phantom(grid, spec, seed)
        ph.meta["preset"] = preset
        return ph
    opts = dict(lesions or {}) if not isinstance(lesions, list) else {}
    total = check_range("activity_mbq", injected_mbq if activity_mbq is None else activity_mbq, 0.0, 1e6,
                        lo_open=True)
    tp = tuple(time_points_h)
    if preset == "iec":
        ratio = check_range("phantom.lesions.sphere_to_background", opts.get("sphere_to_background", 8.0), 1.0, 100.0)
        walls = bool(opts.get("walls", True))
        lung = bool(opts.get("lung_insert", True))
        probe = iec_body_phantom(grid, 1.0, ratio, walls=walls, lung_insert=lung, time_points_h=(0.0,))
        bg = total * 1e6 / max(probe.total_activity_bq(0), 1e-12)
        ph = iec_body_phantom(grid, bg, ratio, walls=walls, lung_insert=lung, time_points_h=tp)
    elif preset == "cylinder":
        d = check_range("phantom.lesions.diameter_mm", opts.get("diameter_mm", 216.0), 1.0, 2000.0)
        length = check_range("phantom.lesions.length_mm", opts.get("length_mm", 186.0), 1.0, 4000.0)
        conc = total * 1e6 / (np.pi * (d / 20.0) ** 2 * length / 10.0)
        ph = uniform_cylinder_phantom(grid, d, length, conc, time_points_h=tp)
    else:
        pos = opts.get("position_mm", (0.0, 0.0, 0.0))
        ph = point_source_phantom(grid, total, position_mm=pos, medium=opts.get("medium", "air"), time_points_h=tp)
    ph.meta["preset"] = preset
    return ph


__all__ = ["PRESET_NAMES", "preset_phantom", "lesions_from_options"]
