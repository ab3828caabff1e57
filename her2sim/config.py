"""Study files: TOML read with :mod:`tomllib`, validated on load into frozen dataclasses.

A study file has one table per section::

    [study]        name, seed, output_dir
    [phantom]      preset, shape, spacing_mm, weight_kg, height_cm, ct, lesions (free-form table or [[phantom.lesions]]),
                   anatomy, breast_volume_ml
    [cohort]       preset, n_patients, seed                       (optional: a virtual trial)
    [tracer]       injected_mbq, time_points_h
    [camera]       passed to :meth:`her2sim.sim.camera.Camera.from_dict` ([camera.protocol], [[camera.windows]], ...)
    [protocol]     optional shortcut for [camera.protocol]
    [calibration]  phantom, activity_mbq                          (counts -> Bq/mL calibration scan)
    [monte_carlo]  mode, photons | target_relative_noise, seed, threads, noise_realisations
    [recon]        iterations, subsets, psf, penetration, scatter, scatter_histories, attenuation, mu_map, post_filter_fwhm_mm,
                   butterworth_cutoff_cycles_per_cm, butterworth_order
    [analysis]     threshold, metrics, pvc_methods, psf_fwhm_mm, bootstrap, rose_k
    [output]       dicom, report, figures

Every problem raises a one-line :class:`~her2sim.core.errors.ConfigError` that starts
with the file name and names the key path, the offending value and the allowed
range; an unknown key or section gets a "did you mean" suggestion
(:func:`difflib.get_close_matches`). Cross-section contradictions (more OSEM subsets
than views, DEW scatter correction without a scatter window, attenuation
correction without a CT...) are errors too.

Defaults with a source: injected activity 458 MBq and imaging at 1 h and 2 h p.i.
(first-in-human 99mTc-NM-02 study and the seed trial, ``shared/reference/biodistribution.md``);
SUVmax threshold 1.5 (Zhao et al., Breast Cancer Res 26:40, 2024); 70 kg / 160 cm
patient (assumption stated in the same note).
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
import shutil
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

# the allowed names of a key are the library's own list, imported from the module that acts on them
from her2sim.analysis.lesion_table import VOI_METHODS  # analysis.voi
from her2sim.analysis.pvc import PVC_METHODS  # analysis.pvc_methods
from her2sim.analysis.pvc_regions import PVC_RESPONSES  # analysis.pvc_response
from her2sim.core.errors import ConfigError, check_int, check_range
from her2sim.core.grid import Grid
from her2sim.core.jsonio import canonical_json
from her2sim.core.limits import LIMITS, check_memory, estimate_peak_memory_bytes
from her2sim.phantoms.phantom_presets import PRESET_NAMES as PHANTOM_PRESETS  # phantom.preset
from her2sim.phantoms.breast_statistics import breast_volumes  # phantom.breast_volume_ml
from her2sim.phantoms.torso_v2 import ANATOMIES  # phantom.anatomy
from her2sim.recon import SCATTER_METHODS  # recon.scatter
from her2sim.recon.attenuation import MU_MAP_SOURCES  # recon.mu_map
from her2sim.recon.calibration import CALIBRATION_PHANTOMS  # calibration.phantom
from her2sim.report import REPORT_FORMATS  # output.report
from her2sim.sim.analog import MC_MODES  # monte_carlo.mode
from her2sim.sim.whole_body import SPEED_RANGE_CM_PER_MIN, WB_MATRICES  # whole_body.speed_cm_per_min / matrix

#: Per-lesion metrics the analysis can report (row columns of the quantify stage; the config's own list).
ANALYSIS_METRICS = ("suvmax", "suvmean", "suvpeak", "sul", "tbr", "recovery", "cnr")
SECTION_ORDER = ("study", "phantom", "cohort", "tracer", "camera", "calibration", "monte_carlo", "recon",
                 "analysis", "whole_body", "output")
REQUIRED_SECTIONS = ("study", "phantom")
_REQUIRED = object()
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


# ---------------------------------------------------------------------------- canonical JSON / hashing
def config_hash(section_dicts) -> str:
    """sha256 (hex) of the canonical JSON of ``section_dicts`` (a dict of sections, a section, or any JSON value)."""
    return hashlib.sha256(canonical_json(section_dicts).encode("ascii")).hexdigest()


# ---------------------------------------------------------------------------- value checkers
def _text(v) -> str:
    """Short, unambiguous text of a config value (floats keep their decimal point)."""
    if isinstance(v, float):
        r = repr(v)
        return r if len(r) <= 12 else f"{v:.6g}"
    return repr(v)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def v_int(lo=None, hi=None) -> Callable:
    def check(path, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{path} = {_text(v)} must be an integer in "
                              f"[{'-inf' if lo is None else lo}, {'+inf' if hi is None else hi}]")
        return check_int(path, v, lo, hi)
    return check


def v_float(lo=None, hi=None, lo_open=False, hi_open=False) -> Callable:
    def check(path, v):
        if not _is_number(v):
            lo_t = "-inf" if lo is None else _text(float(lo))
            hi_t = "+inf" if hi is None else _text(float(hi))
            raise ConfigError(f"{path} = {_text(v)} must be a number in {'(' if lo_open else '['}{lo_t}, "
                              f"{hi_t}{')' if hi_open or hi is None else ']'}")
        return check_range(path, v, lo, hi, lo_open=lo_open, hi_open=hi_open)
    return check


def v_bool(path, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{path} = {_text(v)} must be a boolean (true or false)")
    return v


def v_name(path, v):
    if not isinstance(v, str) or not _NAME_RE.match(v) or len(v) > 128:
        raise ConfigError(f"{path} = {_text(v)} must be a non-empty name of letters, digits, '_', '-', '.' "
                          f"(at most 128 characters)")
    return v


def v_path(path, v):
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{path} = {_text(v)} must be a non-empty path string")
    return v


def v_breast_volume(path, v):
    """A breast volume (mL per breast), a ``{left, right}`` table or a size class, checked by
    :func:`her2sim.phantoms.breast_statistics.breast_volumes`; returned as given (floats for numbers)."""
    breast_volumes(v, path)
    if isinstance(v, dict):
        return {k: float(v[k]) for k in ("left", "right")}
    return v if isinstance(v, str) else float(v)


def v_choice(choices) -> Callable:
    def check(path, v):
        if not isinstance(v, str) or v not in choices:
            hint = did_you_mean(v, choices) if isinstance(v, str) else ""
            raise ConfigError(f"{path} = {_text(v)} is not allowed; choose one of {list(choices)}{hint}")
        return v
    return check


def v_choice_list(choices, min_len=1) -> Callable:
    def check(path, v):
        if not isinstance(v, list) or len(v) < min_len:
            raise ConfigError(f"{path} = {_text(v)} must be a list of at least {min_len} of {list(choices)}")
        out = []
        for i, item in enumerate(v):
            out.append(v_choice(choices)(f"{path}[{i}]", item))
        if len(set(out)) != len(out):
            raise ConfigError(f"{path} = {v!r} lists an entry twice; entries must be unique")
        return tuple(out)
    return check


def v_time_points(path, v):
    if not isinstance(v, list) or not v:
        raise ConfigError(f"{path} = {_text(v)} must be a non-empty list of times in (0, 240] h")
    out = tuple(v_float(0.0, 240.0, lo_open=True)(f"{path}[{i}]", t) for i, t in enumerate(v))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ConfigError(f"{path} = {list(out)} must be strictly increasing (each time point once)")
    return out


def v_shape(path, v):
    lo, hi = LIMITS["phantom.shape"]
    if not isinstance(v, list) or len(v) != 3:
        raise ConfigError(f"{path} = {_text(v)} must be a list of 3 integers (z, y, x) in [{lo}, {hi}]")
    return tuple(v_int(lo, hi)(f"{path}[{i}]", s) for i, s in enumerate(v))


def v_spacing(path, v):
    lo, hi = LIMITS["phantom.spacing_mm"]
    if _is_number(v):
        s = check_range(path, v, lo, hi)
        return (s, s, s)
    if not isinstance(v, list) or len(v) != 3:
        raise ConfigError(f"{path} = {_text(v)} must be a number or a list of 3 numbers (z, y, x) in [{lo:g}, {hi:g}] mm")
    return tuple(v_float(lo, hi)(f"{path}[{i}]", s) for i, s in enumerate(v))


def v_table_or_tables(path, v):
    """A free-form table, or an array of tables (``[[phantom.lesions]]``, one per lesion)."""
    if isinstance(v, dict):
        return copy.deepcopy(v)
    if isinstance(v, list) and all(isinstance(item, dict) for item in v):
        return copy.deepcopy(v)
    raise ConfigError(f"{path} = {_text(v)} must be a table ([{path}]) or an array of tables ([[{path}]])")


def did_you_mean(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close and isinstance(word, str) and len(word) >= 3:  # "reconstruction" -> "recon", "radius" -> ...
        close = sorted(c for c in map(str, candidates) if len(c) >= 3 and (c.startswith(word) or word.startswith(c)))
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_key(path: str, key: str, allowed) -> ConfigError:
    full = f"{path}.{key}" if path else key
    what = "section" if not path else "key"
    return ConfigError(f"{full} is not a known {what}{did_you_mean(key, allowed)} (allowed: {sorted(allowed)})")


# ---------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class StudySection:
    """``[study]``: name, master seed and output folder.

    Attributes
    ----------
    name : str
        Study name (letters, digits, ``_-.``); required.
    seed : int
        Master seed; sections without their own seed derive theirs from it.
    output_dir : str
        Folder of the study's outputs (relative paths are relative to the working directory).
    """

    name: str = _REQUIRED  # type: ignore[assignment]
    seed: int = 0
    output_dir: str = "her2sim_out"


@dataclass(frozen=True)
class PhantomSection:
    """``[phantom]``: which digital object and on which voxel grid.

    Attributes
    ----------
    preset : str
        One of ``PHANTOM_PRESETS``.
    shape : tuple of int
        Grid (nz, ny, nx) voxels.
    spacing_mm : tuple of float
        Voxel size (dz, dy, dx) in mm.
    weight_kg, height_cm : float
        Patient body weight (kg) and height (cm), used for SUV.
    ct : bool
        Whether the study has a CT: attenuation correction, Monte Carlo scatter correction and the CT VOI
        need it, and the DICOM export writes its series. ``false`` is a SPECT-only study (the Monte Carlo
        still transports through the phantom's materials).
    lesions : dict or list of dict
        Free-form lesion options handed to the phantom builder unchanged: a table of
        options (e.g. IEC ``sphere_to_background``) or one table per lesion
        (``[[phantom.lesions]]``, the specs of :mod:`her2sim.phantoms.lesions`).
    anatomy : str
        Version of the torso anatomy, one of ``ANATOMIES`` (:mod:`her2sim.phantoms.torso_v2`): ``"v2"``, the
        default (implicit surfaces with sub-voxel edges, four-chamber heart, shoulder girdle, raised arms,
        breasts from published volume and glandular-fraction statistics; organ masses within 10 % of ICRP 89 and
        body outline within 1 SD of the anthropometric reference) or ``"v1"`` (the analytic MCAT-like torso the
        project's first figures were measured on, kept bit for bit); both build the head-to-thigh extent of
        ``[whole_body]``.
    breast_volume_ml : float, dict, str or None
        Breast volume of every patient of the study, overriding the patient's own (the demo patient's, or the
        cohort's draw): mL per breast, ``{left = mL, right = mL}``, or a size class ``"small"`` / ``"medium"``
        / ``"large"`` (:mod:`her2sim.phantoms.breast_statistics`: 250 / 564 / 1250 mL from MRI cohorts);
        50-2000 mL per breast. ``None`` (default) keeps the patient's own.
    """

    preset: str = "torso"
    shape: tuple = (64, 64, 64)
    spacing_mm: tuple = (8.84, 8.84, 8.84)
    weight_kg: float = 70.0
    height_cm: float = 160.0
    ct: bool = True
    lesions: dict | list = field(default_factory=dict)
    anatomy: str = "v2"
    breast_volume_ml: float | dict | str | None = None

    def grid(self) -> Grid:
        """The phantom's :class:`Grid`, centred on the world origin."""
        return Grid.centered(self.shape, self.spacing_mm)


@dataclass(frozen=True)
class CohortSection:
    """``[cohort]``: a virtual trial of ``n_patients`` drawn by the cohort model ``preset``."""

    preset: str = "seed-trial"
    n_patients: int = 30
    seed: int = 0


@dataclass(frozen=True)
class TracerSection:
    """``[tracer]``: injected activity (MBq) and imaging times after injection (h)."""

    injected_mbq: float = 458.0
    time_points_h: tuple = (1.0, 2.0)


@dataclass(frozen=True)
class CalibrationSection:
    """``[calibration]``: phantom scanned to turn reconstructed counts into Bq/mL.

    Attributes
    ----------
    phantom : str
        One of ``CALIBRATION_PHANTOMS`` (:mod:`her2sim.recon.calibration`): ``"iec"`` (also recovery
        coefficients), ``"cylinder"``, ``"point"`` (a point source in air at the centre) or ``"none"`` (no scan:
        the camera's analytic planar sensitivity).
    activity_mbq : float
        Activity in the calibration phantom (MBq).
    """

    phantom: str = "cylinder"
    activity_mbq: float = 200.0


@dataclass(frozen=True)
class MonteCarloSection:
    """``[monte_carlo]``: simulation mode and statistics.

    Attributes
    ----------
    mode : str
        One of ``MC_MODES`` (:func:`her2sim.sim.analog.simulate`): ``"fast"`` (forced detection / convolution)
        or ``"explicit"`` (analogue photon tracking through the camera heads; patients, calibration and the
        point-source resolution measurement alike).
    photons : int or None
        Photons simulated per projection set; exclusive with ``target_relative_noise``.
    target_relative_noise : float or None
        Stop when the relative MC standard error of the photopeak total falls below this.
    seed : int or None
        Seed of the MC streams (``None`` derives it from ``study.seed``).
    threads : int
        Numba threads (0 = all cores).
    noise_realisations : int
        Poisson realisations drawn from each expected projection set.
    """

    mode: str = "fast"
    photons: int | None = None
    target_relative_noise: float | None = None
    seed: int | None = None
    threads: int = 0
    noise_realisations: int = 1

    DEFAULT_PHOTONS = 10_000_000

    @property
    def effective_photons(self) -> int | None:
        """``photons``, or the default 1e7 when neither stopping rule is given, or None with a noise target."""
        if self.photons is not None:
            return self.photons
        return None if self.target_relative_noise is not None else self.DEFAULT_PHOTONS


@dataclass(frozen=True)
class ReconSection:
    """``[recon]``: OSEM settings and corrections.

    Attributes
    ----------
    iterations, subsets : int
        OSEM iterations and subsets (subsets <= number of views).
    psf : bool
        Model the distance-dependent collimator-detector response.
    penetration : bool
        Also model its septal-penetration tail (the camera's table from the explicit mode, as the Monte
        Carlo does; a second projection pass). Off by default, like a vendor Gaussian resolution recovery.
    scatter : str
        ``"none"``, ``"dew"`` (needs a window named ``scatter``), ``"tew"`` (needs ``tew_lower``/``tew_upper``)
        or ``"mc"``: Monte Carlo scatter correction (:mod:`her2sim.recon.mc_scatter`: a first DEW, or uncorrected
        when there is no ``scatter`` window, reconstruction is simulated through the CT; needs ``phantom.ct``).
    scatter_histories : int
        Histories of each Monte Carlo scatter estimate (``scatter = "mc"``).
    scatter_smooth_fwhm_mm : float
        Gaussian smoothing of the Monte Carlo scatter estimate (mm FWHM, 0 = none). With 1e5 histories
        and 40 mm a lesion's SUVmax on the demo patient varies by +/- 0.3 % between scatter seeds
        (+/- 8 % unsmoothed); see :func:`her2sim.recon.mc_scatter.monte_carlo_scatter` for the trade-off.
    attenuation : bool
        CT-based attenuation correction (needs ``phantom.ct``).
    mu_map : str
        ``"ct"``: the scanner's bilinear HU -> mu map (Bai 2003, GE CT540 at 120 kVp) applied to the
        phantom's CT, as a clinic would; ``"materials"``: the ideal map from the phantom's own materials
        and densities (isolates the attenuation-map error).
    post_filter_fwhm_mm : float
        Gaussian post-filter FWHM (mm), 0 = none.
    butterworth_cutoff_cycles_per_cm : float
        Cut-off of a 3-D Butterworth post-filter ``1 / sqrt(1 + (f / fc)^(2 n))`` (cycles/cm), 0 = none.
        The ``seed-trial`` preset uses the GE Xeleris/Evolution clinical setting (0.48 cycles/cm, order 10).
    butterworth_order : int
        Order (GE: "power") n of that filter.
    """

    iterations: int = 4
    subsets: int = 10
    psf: bool = True
    penetration: bool = False
    scatter: str = "dew"
    scatter_histories: int = 100_000
    scatter_smooth_fwhm_mm: float = 40.0
    attenuation: bool = True
    mu_map: str = "ct"
    post_filter_fwhm_mm: float = 0.0
    butterworth_cutoff_cycles_per_cm: float = 0.0
    butterworth_order: int = 10


@dataclass(frozen=True)
class AnalysisSection:
    """``[analysis]``: quantification and threshold evaluation.

    Attributes
    ----------
    threshold : float
        SUVmax threshold for HER2 positivity (1.5, Zhao et al. 2024).
    metrics : tuple of str
        Metrics from ``ANALYSIS_METRICS``.
    pvc_methods : tuple of str
        Partial-volume corrections from ``PVC_METHODS``.
    psf_fwhm_mm : float or None
        Reconstructed-image resolution for PVC (mm); ``None`` = estimate from the camera.
    bootstrap : int
        Bootstrap resamples for confidence intervals (0 = none).
    rose_k : float
        Rose criterion detectability threshold (k, usually 5).
    voi : str
        SUVmean VOI from ``VOI_METHODS``: ``lesion`` (the lesion's voxels on the recon grid), ``threshold``
        (a ``voi_threshold_fraction`` x local-maximum isocontour) or ``ct`` (the lesion segmented on CT).
    voi_margin_mm : float or None
        SUVmax/SUVpeak search margin around the lesion (mm), kept out of other organs and lesions;
        ``None`` = one voxel.
    voi_threshold_fraction : float
        Isocontour fraction of the ``threshold`` VOI (0.40-0.50).
    min_voi_voxels : float
        A lesion smaller than this many recon voxels is reported unmeasured (``below_n_voxels``).
    pvc_response : str
        What GTM, RBV and iterative Yang take as the reconstructed image's response, from ``PVC_RESPONSES``:
        ``reconstruction`` (default; the OSEM protocol itself applied to the region model,
        :mod:`her2sim.recon.response`) or ``gaussian`` (the point-source FWHM plus the post-filter; cheaper,
        but OSEM recovers cold lesions more slowly than a Gaussian predicts).
    """

    threshold: float = 1.5
    metrics: tuple = ("suvmax", "suvmean", "suvpeak")
    pvc_methods: tuple = ("none",)
    psf_fwhm_mm: float | None = None
    bootstrap: int = 1000
    rose_k: float = 5.0
    voi: str = "lesion"
    voi_margin_mm: float | None = None
    voi_threshold_fraction: float = 0.42
    min_voi_voxels: float = 1.0
    pvc_response: str = "reconstruction"


@dataclass(frozen=True)
class WholeBodySection:
    """``[whole_body]``: a planar anterior/posterior whole-body sweep of every patient at every time point, by the
    same Monte Carlo (:mod:`her2sim.sim.whole_body`), as the seed trial's whole-body scans (Supplementary Fig. S2).

    Attributes
    ----------
    enabled : bool
        Whether the study simulates the sweeps (``whole_body_<id>`` stages, ``patients/<id>/whole_body.h5``
        and ``results/figures/whole_body_<id>.png`` beside that patient's SPECT).
    speed_cm_per_min : float
        Continuous bed speed (cm/min; 1-60, clinical 10-15).
    matrix : tuple of int
        (rows along the bed, columns): ``[1024, 256]`` (2.21 mm pixels, the NM670 whole-body matrix) or
        ``[512, 128]`` (4.42 mm).
    histories : int
        Monte Carlo histories per sweep (the scatter estimate; primaries are computed by forced detection).
    spacing_mm : float
        Voxel size (mm) of the head-to-mid-thigh phantom the sweep images.
    """

    enabled: bool = False
    speed_cm_per_min: float = 12.0
    matrix: tuple = (1024, 256)
    histories: int = 400_000
    spacing_mm: float = 4.42


def v_wb_matrix(path, v):
    """A whole-body matrix [rows, columns], one of :data:`her2sim.sim.whole_body.WB_MATRICES`."""
    m = tuple(v) if isinstance(v, (list, tuple)) else None
    if m is None or m not in WB_MATRICES:
        raise ConfigError(f"{path} = {_text(v)} is not allowed; choose one of {[list(k) for k in WB_MATRICES]} "
                          f"(rows along the bed, columns)")
    return m


@dataclass(frozen=True)
class OutputSection:
    """``[output]``: DICOM export, report format and figures."""

    dicom: bool = False
    report: str = "html"
    figures: bool = True


_VALIDATORS: dict[type, dict[str, Callable]] = {
    StudySection: {"name": v_name, "seed": v_int(*LIMITS["seed"]), "output_dir": v_path},
    PhantomSection: {"preset": v_choice(PHANTOM_PRESETS), "shape": v_shape, "spacing_mm": v_spacing,
                     "weight_kg": v_float(20.0, 300.0), "height_cm": v_float(100.0, 230.0), "ct": v_bool,
                     "lesions": v_table_or_tables, "anatomy": v_choice(ANATOMIES),
                     "breast_volume_ml": v_breast_volume},
    CohortSection: {"preset": v_name, "n_patients": v_int(*LIMITS["cohort.n_patients"]), "seed": v_int(*LIMITS["seed"])},
    TracerSection: {"injected_mbq": v_float(1.0, 2000.0), "time_points_h": v_time_points},
    CalibrationSection: {"phantom": v_choice(CALIBRATION_PHANTOMS), "activity_mbq": v_float(0.1, 5000.0)},
    MonteCarloSection: {"mode": v_choice(MC_MODES), "photons": v_int(*LIMITS["monte_carlo.photons"]),
                        "target_relative_noise": v_float(0.0, 1.0, lo_open=True, hi_open=True),
                        "seed": v_int(*LIMITS["seed"]), "threads": v_int(*LIMITS["monte_carlo.threads"]),
                        "noise_realisations": v_int(*LIMITS["monte_carlo.noise_realisations"])},
    ReconSection: {"iterations": v_int(*LIMITS["recon.iterations"]), "subsets": v_int(*LIMITS["recon.subsets"]),
                   "psf": v_bool, "penetration": v_bool,
                   "scatter": v_choice(SCATTER_METHODS), "scatter_histories": v_int(*LIMITS["recon.scatter_histories"]),
                   "scatter_smooth_fwhm_mm": v_float(0.0, 500.0),
                   "attenuation": v_bool, "mu_map": v_choice(MU_MAP_SOURCES),
                   "post_filter_fwhm_mm": v_float(0.0, 100.0),
                   "butterworth_cutoff_cycles_per_cm": v_float(0.0, 100.0), "butterworth_order": v_int(1, 20)},
    AnalysisSection: {"threshold": v_float(0.0, 100.0, lo_open=True), "metrics": v_choice_list(ANALYSIS_METRICS),
                      "pvc_methods": v_choice_list(PVC_METHODS), "psf_fwhm_mm": v_float(0.0, 100.0, lo_open=True),
                      "bootstrap": v_int(0, 1_000_000), "rose_k": v_float(0.0, 100.0, lo_open=True),
                      "voi": v_choice(VOI_METHODS), "voi_margin_mm": v_float(0.0, 100.0),
                      "voi_threshold_fraction": v_float(0.40, 0.50), "min_voi_voxels": v_float(0.1, 1000.0),
                      "pvc_response": v_choice(PVC_RESPONSES)},
    WholeBodySection: {"enabled": v_bool, "speed_cm_per_min": v_float(*SPEED_RANGE_CM_PER_MIN),
                       "matrix": v_wb_matrix, "histories": v_int(10_000, 10**10), "spacing_mm": v_float(2.0, 10.0)},
    OutputSection: {"dicom": v_bool, "report": v_choice(REPORT_FORMATS), "figures": v_bool},
}


def build_section(cls, path: str, raw) -> Any:
    """Validate the table ``raw`` of section ``path`` into ``cls`` (defaults for absent keys)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} = {_text(raw)} must be a table ([{path}])")
    checks = _VALIDATORS[cls]
    for key in raw:
        if key not in checks:
            raise _unknown_key(path, key, checks)
    kw = {}
    for f in fields(cls):
        if f.name in raw:
            kw[f.name] = checks[f.name](f"{path}.{f.name}", raw[f.name])
        elif f.default is _REQUIRED:
            raise ConfigError(f"{path}.{f.name} is required but missing (add `{f.name} = ...` under [{path}])")
    return cls(**kw)


def key_validator(cls, key: str) -> Callable:
    """The checker of key ``key`` of section class ``cls``: ``check(path, value) -> value`` (ConfigError if bad)."""
    return _VALIDATORS[cls][key]


def _section_dict(obj) -> dict:
    """Plain TOML-ready dict of a section dataclass (``None`` values left out, tuples as lists)."""
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if v is None:
            continue
        out[f.name] = list(v) if isinstance(v, tuple) else copy.deepcopy(v)
    return out


# ---------------------------------------------------------------------------- camera
def camera_from_table(raw: dict, protocol_raw):
    """Build a :class:`~her2sim.sim.camera.Camera`; errors re-raised with ``camera.`` key paths."""
    from her2sim.sim.camera import Camera, Collimator, Detector, Protocol

    if not isinstance(raw, dict):
        raise ConfigError(f"camera = {_text(raw)} must be a table ([camera])")
    raw = dict(raw)
    if protocol_raw is not None:
        if "protocol" in raw:
            raise ConfigError("protocol: given both as [protocol] and [camera.protocol]; keep only one")
        raw["protocol"] = protocol_raw
    allowed = {"collimator": Collimator, "detector": Detector, "protocol": Protocol, "windows": None, "heads": None}
    for key, value in raw.items():
        if key not in allowed:
            raise _unknown_key("camera", key, allowed)
        klass = allowed[key]
        if klass is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"camera.{key} = {_text(value)} must be a table ([camera.{key}])")
        defaults = {f.name: f.default for f in fields(klass)}
        for k, v in value.items():
            if k not in defaults:
                raise _unknown_key(f"camera.{key}", k, defaults)
            d = defaults[k]
            ok = (isinstance(v, str) if isinstance(d, str)
                  else isinstance(v, int) and not isinstance(v, bool) if isinstance(d, int)
                  else _is_number(v))
            if not ok:
                kind = "a string" if isinstance(d, str) else "an integer" if isinstance(d, int) else "a number"
                raise ConfigError(f"camera.{key}.{k} = {_text(v)} must be {kind} (default {d!r})")
    if "windows" in raw:
        ws = raw["windows"]
        if not isinstance(ws, list) or not ws:
            raise ConfigError(f"camera.windows = {_text(ws)} must be a non-empty array of tables [[camera.windows]] "
                              f"with name, lower_kev, upper_kev")
        for i, w in enumerate(ws):
            if not isinstance(w, dict):
                raise ConfigError(f"camera.windows[{i}] = {_text(w)} must be a table (name, lower_kev, upper_kev)")
            for k in w:
                if k not in ("name", "lower_kev", "upper_kev"):
                    raise _unknown_key(f"camera.windows[{i}]", k, ("name", "lower_kev", "upper_kev"))
            for k in ("lower_kev", "upper_kev"):
                if k in w and not _is_number(w[k]):
                    raise ConfigError(f"camera.windows[{i}].{k} = {_text(w[k])} must be a number in [1, 1000] keV")
            if "name" in w and not isinstance(w["name"], str):
                raise ConfigError(f"camera.windows[{i}].name = {_text(w['name'])} must be a string")
    material = raw.get("collimator", {}).get("material")
    if material is not None:
        from her2sim.core.materials import MATERIAL_NAMES
        if material not in MATERIAL_NAMES:
            raise ConfigError(f"camera.collimator.material = {material!r} is not a known material"
                              f"{did_you_mean(material, MATERIAL_NAMES)} (allowed: {list(MATERIAL_NAMES)})")
    if "heads" in raw and (isinstance(raw["heads"], bool) or not isinstance(raw["heads"], int)):
        raise ConfigError(f"camera.heads = {_text(raw['heads'])} must be an integer in [1, 2]")
    try:
        return Camera.from_dict(raw)
    except ConfigError as exc:
        msg = str(exc)
        if not msg.startswith("camera"):
            msg = "camera." + msg
        raise ConfigError(msg) from None


# ---------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class StudyConfig:
    """A validated study file; every section is a frozen dataclass (``camera`` is a ``Camera``)."""

    study: StudySection
    phantom: PhantomSection
    tracer: TracerSection
    camera: Any
    calibration: CalibrationSection
    monte_carlo: MonteCarloSection
    recon: ReconSection
    analysis: AnalysisSection
    output: OutputSection
    cohort: CohortSection | None = None
    whole_body: WholeBodySection = field(default_factory=WholeBodySection)
    source: str = "<dict>"
    #: the study file this config was read from (``None`` for text / dicts); never overwritten by a run
    source_path: str | None = None

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "StudyConfig":
        """Validate a parsed study (the dict :func:`tomllib.loads` returns).

        Raises
        ------
        ConfigError
            One line, starting with ``source``, naming the key path, value and allowed range.
        """
        try:
            return cls._from_dict(data, source)
        except ConfigError as exc:
            msg = " ".join(str(exc).split("\n"))
            raise ConfigError(f"{source}: {msg}") from None

    @classmethod
    def _from_dict(cls, data: dict, source: str) -> "StudyConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"study file must hold TOML tables, got {type(data).__name__}")
        known = set(SECTION_ORDER) | {"protocol"}
        for key in data:
            if key not in known:
                raise _unknown_key("", key, known)
        for key in REQUIRED_SECTIONS:
            if key not in data:
                raise ConfigError(f"[{key}] section is required but missing (sections: {list(SECTION_ORDER)})")
        study = build_section(StudySection, "study", data["study"])
        phantom = build_section(PhantomSection, "phantom", data["phantom"])
        phantom.grid()  # Grid's own checks (shape/spacing)
        cohort = build_section(CohortSection, "cohort", data["cohort"]) if "cohort" in data else None
        tracer = build_section(TracerSection, "tracer", data.get("tracer", {}))
        camera = camera_from_table(data.get("camera", {}), data.get("protocol"))
        calibration = build_section(CalibrationSection, "calibration", data.get("calibration", {}))
        mc = build_section(MonteCarloSection, "monte_carlo", data.get("monte_carlo", {}))
        recon = build_section(ReconSection, "recon", data.get("recon", {}))
        analysis = build_section(AnalysisSection, "analysis", data.get("analysis", {}))
        output = build_section(OutputSection, "output", data.get("output", {}))
        whole_body = build_section(WholeBodySection, "whole_body", data.get("whole_body", {}))
        cfg = cls(study=study, phantom=phantom, tracer=tracer, camera=camera, calibration=calibration,
                  monte_carlo=mc, recon=recon, analysis=analysis, output=output, cohort=cohort,
                  whole_body=whole_body, source=source)
        cfg._check_contradictions()
        return cfg

    def _check_contradictions(self) -> None:
        n_views = self.camera.protocol.n_views
        names = [w.name for w in self.camera.windows]
        if self.recon.subsets > n_views:
            raise ConfigError(f"recon.subsets = {self.recon.subsets} exceeds the number of views "
                              f"camera.protocol.n_views = {n_views}; allowed range [1, {n_views}]")
        if "photopeak" not in names:
            raise ConfigError(f"camera.windows = {names} has no window named 'photopeak'; "
                              f"the reconstruction needs one")
        if self.recon.scatter == "dew" and "scatter" not in names:
            raise ConfigError(f"recon.scatter = 'dew' needs a window named 'scatter' in camera.windows "
                              f"(got {names}); add one or set recon.scatter = 'none'")
        if self.recon.scatter == "tew" and not {"tew_lower", "tew_upper"} <= set(names):
            raise ConfigError(f"recon.scatter = 'tew' needs windows 'tew_lower' and 'tew_upper' in camera.windows "
                              f"(got {names}); add them or choose 'dew'/'none'")
        if self.recon.penetration and not self.recon.psf:
            raise ConfigError("recon.penetration = true models the tail of the collimator response but "
                              "recon.psf = false; set recon.psf = true or recon.penetration = false")
        if self.recon.scatter == "mc" and not self.phantom.ct:
            raise ConfigError("recon.scatter = 'mc' simulates scatter through the CT but phantom.ct = false; "
                              "set phantom.ct = true or choose recon.scatter = 'dew'/'tew'/'none'")
        if self.analysis.voi == "ct" and not self.phantom.ct:
            raise ConfigError("analysis.voi = 'ct' segments lesions on the CT but phantom.ct = false; "
                              "set phantom.ct = true or choose analysis.voi = 'lesion'/'threshold'")
        if self.recon.attenuation and not self.phantom.ct:
            raise ConfigError("recon.attenuation = true needs a CT but phantom.ct = false; "
                              "set phantom.ct = true or recon.attenuation = false")
        if self.monte_carlo.photons is not None and self.monte_carlo.target_relative_noise is not None:
            raise ConfigError(f"monte_carlo.photons = {self.monte_carlo.photons} and "
                              f"monte_carlo.target_relative_noise = {self.monte_carlo.target_relative_noise:g} "
                              f"are exclusive stopping rules; give only one")
        if "rc" in self.analysis.pvc_methods and self.calibration.phantom != "iec":
            raise ConfigError(f"analysis.pvc_methods includes 'rc' (recovery coefficients) but "
                              f"calibration.phantom = {self.calibration.phantom!r}; recovery curves are measured "
                              f"on the spheres of calibration.phantom = 'iec'")
        if self.phantom.preset in ("iec", "cylinder", "point") and self.cohort is not None:
            raise ConfigError(f"[cohort] draws virtual patients but phantom.preset = {self.phantom.preset!r} is a "
                              f"test object; use phantom.preset = 'torso' or 'demo', or remove [cohort]")
        self._check_cohort()
        self._check_lesions()
        grid = self.phantom.grid()
        fov = self.camera.protocol.matrix * self.camera.protocol.pixel_mm
        width = max(grid.extent_mm[1], grid.extent_mm[2])
        if width > fov + 1e-6:
            raise ConfigError(f"phantom.shape x phantom.spacing_mm gives a transaxial extent of {width:.1f} mm, wider "
                              f"than the detector field of view camera.protocol.matrix x pixel_mm = {fov:.1f} mm "
                              f"(projections would be truncated); allowed extent <= {fov:.1f} mm")

    def _check_cohort(self) -> None:
        """A [cohort] names a known cohort preset and asks for at most as many patients as it holds."""
        if self.cohort is None:
            return
        from her2sim.phantoms.cohort import PRESETS as COHORT_PRESETS

        c = self.cohort
        if c.preset not in COHORT_PRESETS:
            raise ConfigError(f"cohort.preset = {c.preset!r} is not a cohort preset"
                              f"{did_you_mean(c.preset, COHORT_PRESETS)} (allowed: {sorted(COHORT_PRESETS)})")
        n_max = int(COHORT_PRESETS[c.preset]["n_patients"])
        if c.n_patients > n_max:
            raise ConfigError(f"cohort.n_patients = {c.n_patients} is outside the allowed range [1, {n_max}] "
                              f"(cohort.preset = {c.preset!r} holds {n_max} patients)")

    def _check_lesions(self) -> None:
        """Every lesion spec (or test-object option) of ``phantom.lesions`` checked before any work runs."""
        opts = self.phantom.lesions
        if self.phantom.preset in ("demo", "torso"):
            for i, spec in enumerate(self.lesion_specs()):
                try:
                    from her2sim.phantoms.lesions import validate_lesion_spec
                    validate_lesion_spec(spec, i)
                except ConfigError as exc:
                    raise ConfigError(f"phantom.{exc}") from None
            return
        if isinstance(opts, list):
            raise ConfigError(f"phantom.lesions: phantom.preset = {self.phantom.preset!r} is a test object; it takes "
                              f"a table of options ({sorted(TEST_OBJECT_OPTIONS[self.phantom.preset])}), not "
                              "[[phantom.lesions]] lesion specs")
        allowed = TEST_OBJECT_OPTIONS[self.phantom.preset]
        for k, v in opts.items():
            if k not in allowed:
                raise _unknown_key("phantom.lesions", k, allowed)
            allowed[k](f"phantom.lesions.{k}", v)

    def lesion_specs(self) -> list:
        """The lesion specs of ``phantom.lesions`` for the demo/torso presets (list form or table of lists)."""
        from her2sim.phantoms.phantom_presets import lesions_from_options

        if self.phantom.preset not in ("demo", "torso") or not self.phantom.lesions:
            return []
        if isinstance(self.phantom.lesions, list):
            return [dict(x) for x in self.phantom.lesions]
        return lesions_from_options(self.phantom.lesions)

    # ------------------------------------------------------------------ helpers
    @property
    def mc_seed(self) -> int:
        """Monte Carlo seed: ``monte_carlo.seed`` or derived from ``study.seed``."""
        if self.monte_carlo.seed is not None:
            return self.monte_carlo.seed
        return int(np.random.SeedSequence([self.study.seed, 1]).generate_state(1, np.uint64)[0] >> 1)

    def to_dict(self) -> dict:
        """Plain dict (TOML/JSON-ready, ``None`` values left out) that :meth:`from_dict` validates back."""
        out = {"study": _section_dict(self.study), "phantom": _section_dict(self.phantom)}
        if self.cohort is not None:
            out["cohort"] = _section_dict(self.cohort)
        out["tracer"] = _section_dict(self.tracer)
        out["camera"] = self.camera.to_dict()
        for name in ("calibration", "monte_carlo", "recon", "analysis", "whole_body", "output"):
            out[name] = _section_dict(getattr(self, name))
        return out

    def section_hashes(self) -> dict:
        """sha256 of each section's canonical JSON (keys as in :meth:`to_dict`)."""
        return {k: config_hash(v) for k, v in self.to_dict().items()}

    def hash(self) -> str:
        """sha256 of the whole study's canonical JSON."""
        return config_hash(self.to_dict())


def _v_position(path, v):
    if not isinstance(v, list) or len(v) != 3:
        raise ConfigError(f"{path} = {_text(v)} must be 3 numbers (z, y, x) in mm")
    return [v_float(-1e4, 1e4)(f"{path}[{i}]", x) for i, x in enumerate(v)]


#: ``phantom.lesions`` options of the test objects (see :mod:`her2sim.phantoms.phantom_presets`)
TEST_OBJECT_OPTIONS = {
    "iec": {"sphere_to_background": v_float(1.0, 100.0), "walls": v_bool, "lung_insert": v_bool},
    "cylinder": {"diameter_mm": v_float(1.0, 2000.0), "length_mm": v_float(1.0, 4000.0)},
    "point": {"position_mm": _v_position, "medium": v_choice(("air", "water"))},
}


def preflight(cfg: StudyConfig, workers: int = 1, available: int | None = None) -> dict:
    """Checks that depend on the machine or on the whole study, run before any work starts.

    Parameters
    ----------
    cfg : StudyConfig
    workers : int
        Worker processes that will run patients side by side.
    available : int or None
        Available RAM in bytes (``None``: ask the OS).

    Returns
    -------
    dict
        ``{"peak_memory_bytes": estimate per worker}``.

    Raises
    ------
    ConfigError
        The estimated peak memory exceeds the available RAM (message with both, in GiB), or a lesion
        placed explicitly (``location_mm``) lies outside the phantom grid.
    """
    try:
        return _preflight(cfg, workers, available)
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(cfg.source) else f"{cfg.source}: {msg}") from None


def _preflight(cfg: StudyConfig, workers: int, available: int | None) -> dict:
    lo, hi = LIMITS["workers"]
    check_int("workers", workers, lo, hi)
    p = cfg.camera.protocol
    est = estimate_peak_memory_bytes(cfg.phantom.shape, len(cfg.tracer.time_points_h), p.n_views, p.matrix,
                                     len(cfg.camera.windows))
    check_memory(f"phantom.shape = {list(cfg.phantom.shape)} with camera.protocol.matrix = {p.matrix} and "
                 f"n_views = {p.n_views}", est, available, workers)
    grid = cfg.phantom.grid()
    lo_mm = np.asarray(grid.origin_mm) - 0.5 * np.asarray(grid.spacing_mm)
    hi_mm = lo_mm + np.asarray(grid.extent_mm)
    for i, spec in enumerate(cfg.lesion_specs()):
        loc = spec.get("location_mm")
        if loc is None:
            continue
        if any(not (a <= x <= b) for x, a, b in zip(loc, lo_mm, hi_mm)):
            raise ConfigError(f"phantom.lesions[{i}].location_mm = {list(loc)} lies outside the phantom grid "
                              f"(z, y, x from {[round(float(v), 1) for v in lo_mm]} to "
                              f"{[round(float(v), 1) for v in hi_mm]} mm); the lesion would never be imaged")
    return {"peak_memory_bytes": est}


#: file name of the resolved study copy written into the study folder (every default filled in)
RESOLVED_NAME = "study.resolved.toml"


def resolved_study_path(study_dir) -> Path:
    """The resolved study copy of a study folder: ``study.resolved.toml``, or ``study.toml`` of older runs."""
    d = Path(study_dir)
    new = d / RESOLVED_NAME
    return new if new.is_file() or not (d / "study.toml").is_file() else d / "study.toml"


# ---------------------------------------------------------------------------- files
def _toml_error_line(text: str, exc: tomllib.TOMLDecodeError) -> str:
    m = re.search(r"line (\d+)", str(exc))
    if not m:
        return ""
    lines = text.splitlines()
    n = int(m.group(1))
    if not 1 <= n <= len(lines):
        return ""
    where = f" in line {n}: {lines[n - 1].strip()!r}"
    prev = next((i for i in range(n - 1, 0, -1) if lines[i - 1].strip()), None)
    if prev is not None:
        where += f" (after line {prev}: {lines[prev - 1].strip()!r})"
    return where


def loads_study(text: str, source: str = "<string>") -> StudyConfig:
    """Parse and validate study TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML{_toml_error_line(text, exc)} ({exc})") from None
    return StudyConfig.from_dict(data, source)


def load_study(path) -> StudyConfig:
    """Read and validate the TOML study file ``path``.

    Raises
    ------
    ConfigError
        Missing/unreadable file, invalid TOML, or an invalid/contradictory value (one line naming the key).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: study file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: study file cannot be read: {exc}") from None
    from dataclasses import replace
    return replace(loads_study(text, str(path)), source_path=str(path))


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """Split ``"section.key=value"`` into its key path and the TOML value (bare words are strings).

    >>> parse_assignment("recon.iterations=8")
    (['recon', 'iterations'], 8)
    """
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. recon.iterations=8)")
    key, raw = (part.strip() for part in text.split("=", 1))
    path = key.split(".")
    if len(path) < 2 or not all(path):
        raise ConfigError(f"override {text!r}: key {key!r} must be section.key (e.g. recon.iterations)")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as  recon.scatter=tew
    return path, value


def apply_overrides(data: dict, assignments) -> dict:
    """A deep copy of the study dict ``data`` with ``section.key=value`` assignments applied (not validated)."""
    out = json.loads(canonical_json(data))
    for text in assignments:
        path, value = parse_assignment(text)
        cur = out
        for part in path[:-1]:
            nxt = cur.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a table")
            cur = nxt
        cur[path[-1]] = value
    return out


def override_study(cfg: StudyConfig, assignments) -> StudyConfig:
    """Validate ``cfg`` with ``section.key=value`` assignments applied (e.g. from ``--set`` options)."""
    from dataclasses import replace
    out = StudyConfig.from_dict(apply_overrides(cfg.to_dict(), assignments),
                                f"{cfg.source} with overrides {list(assignments)}")
    return replace(out, source_path=cfg.source_path)


def save_study(cfg: StudyConfig, path) -> Path:
    """Write the resolved study (every default filled in) as TOML, atomically."""
    import tomli_w

    from her2sim.core.atomic import write_text_atomic

    text = f"# resolved her2sim study (sha256 {cfg.hash()})\n" + tomli_w.dumps(cfg.to_dict())
    return write_text_atomic(path, text)


def preset_dir() -> Path:
    """Folder of the bundled study presets."""
    return Path(str(resources.files("her2sim") / "presets"))


def list_presets() -> list[str]:
    """Names of the bundled presets (file stems)."""
    return sorted(p.stem for p in preset_dir().glob("*.toml"))


def preset_path(name: str) -> Path:
    """Path of the bundled preset ``name`` (``ConfigError`` with a suggestion if unknown)."""
    names = list_presets()
    if name not in names:
        raise ConfigError(f"preset = {name!r} is not a bundled preset{did_you_mean(name, names)} "
                          f"(available: {names})")
    return preset_dir() / f"{name}.toml"


def init_preset(name: str, dest_path, force: bool = False) -> Path:
    """Copy the bundled preset ``name`` to ``dest_path`` (a file, or a folder to hold ``<name>.toml``).

    Refuses to overwrite an existing file unless ``force=True``.
    """
    src = preset_path(name)
    dest = Path(dest_path)
    if dest.is_dir():
        dest = dest / f"{name}.toml"
    if dest.exists() and not force:
        raise ConfigError(f"{dest}: file already exists; pass force=True (--force) to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest


__all__ = ["StudyConfig", "StudySection", "PhantomSection", "CohortSection", "TracerSection",
           "CalibrationSection", "MonteCarloSection", "ReconSection", "AnalysisSection", "OutputSection",
           "load_study", "loads_study", "save_study", "override_study", "apply_overrides", "parse_assignment",
           "config_hash", "canonical_json", "init_preset", "list_presets",
           "preset_path", "preset_dir", "preflight", "resolved_study_path", "RESOLVED_NAME", "LIMITS",
           "PHANTOM_PRESETS", "PVC_METHODS", "ANALYSIS_METRICS", "SCATTER_METHODS"]
