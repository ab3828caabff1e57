"""Typed view of a stage's parameters.

A stage's parameters stay the JSON dict :func:`her2sim.pipeline.build_stages` gives it: that dict is hashed
into the stage key (:class:`her2sim.stages.Stage`), so its keys and values are what keep a study folder
resumable. A stage function turns it once, at entry, into a :class:`StepParams`: the sections are the study
file's own classes of :mod:`her2sim.config` (``ReconSection``, ``AnalysisSection``, ...), checked by the
config's own checkers with the config's defaults for keys a stage leaves out; the camera and the phantom grid
are built once. An unknown key or a value the config would refuse is a one-line ConfigError naming the stage
and the key path.

:meth:`StepParams.to_params` writes the dict back; for every stage of a study it returns the dict the stage
was given (tested in ``tests/study/test_step_params.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from her2sim.config import (AnalysisSection, CalibrationSection, MonteCarloSection, OutputSection, PhantomSection,
                            ReconSection, StudySection, TEST_OBJECT_OPTIONS, WholeBodySection, build_section,
                            camera_from_table, did_you_mean, key_validator, v_int)
from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.sim.camera import Camera

#: keys of a stage's ``monte_carlo`` table (``histories`` is the section's ``photons`` after its defaults)
MONTE_CARLO_KEYS = ("histories", "target_relative_noise", "calibration_histories", "noise_realisations",
                    "threads", "mode")
#: keys of a stage's ``calibration`` table (``ratio``: sphere-to-background of the IEC calibration phantom)
CALIBRATION_KEYS = ("phantom", "activity_mbq", "ratio")
#: keys of a stage's ``grid`` table (the phantom grid, centred on the world origin)
GRID_KEYS = ("shape", "spacing_mm")


@dataclass(frozen=True)
class StepParams:
    """One stage's parameters, typed. A key the stage does not carry is ``None`` (``figures`` and ``ct``:
    their section defaults, since the stage key leaves them out at those defaults).

    Attributes
    ----------
    version : int
        ``PIPELINE_VERSION`` of the pipeline that built the stage.
    seed : int or None
        The stage's seed: the study's Monte Carlo seed (calibration, simulate, recon) or the study seed
        (statistics).
    mc_seed : int or None
        The study's Monte Carlo seed as the statistics stage records it.
    camera : Camera or None
        The study's camera, built once.
    grid : Grid or None
        The phantom grid (z, y, x; mm spacing), centred on the world origin.
    monte_carlo : MonteCarloSection or None
        ``photons`` holds the stage's ``histories`` (per projection set; ``None`` with a
        ``target_relative_noise``); ``seed`` is unset (the stage's own ``seed`` is the Monte Carlo seed).
    calibration_histories : int or None
        Histories of the calibration scan and of each point source of the resolution measurement.
    recon : ReconSection or None
    analysis : AnalysisSection or None
    calibration : CalibrationSection or None
    calibration_ratio : float or None
        Sphere-to-background activity ratio of the IEC calibration phantom.
    patient : dict or None
        The patient's phantom spec (:func:`her2sim.pipeline.patient_specs`).
    patient_seed : int or None
        Seed of the patient's phantom (texture, lesion placement).
    index : int or None
        Position of the patient in the study (part of the Monte Carlo seeds).
    patient_id : str or None
    psf_fwhm_mm : float or None
        Fallback resolution for PVC (mm FWHM): the camera's system FWHM at the orbit radius minus 100 mm.
    figures : bool
        Whether the stage draws its figures (``output.figures``).
    patient_ids : tuple of str or None
        Every patient of the study (statistics).
    study_name : str or None
    config : dict or None
        The resolved study as a plain dict (recorded in the summary).
    report_format : str or None
        ``output.report`` (the report stage's ``format``).
    ct : bool
        Whether the study has a CT (``phantom.ct``; the DICOM stage writes its series).
    whole_body : WholeBodySection or None
        The whole-body sweep's protocol (the ``whole_body_<id>`` stages).
    """

    version: int
    seed: int | None = None
    mc_seed: int | None = None
    camera: Camera | None = None
    grid: Grid | None = None
    monte_carlo: MonteCarloSection | None = None
    calibration_histories: int | None = None
    recon: ReconSection | None = None
    analysis: AnalysisSection | None = None
    calibration: CalibrationSection | None = None
    calibration_ratio: float | None = None
    patient: dict | None = None
    patient_seed: int | None = None
    index: int | None = None
    patient_id: str | None = None
    psf_fwhm_mm: float | None = None
    figures: bool = OutputSection.figures
    patient_ids: tuple | None = None
    study_name: str | None = None
    config: dict | None = None
    report_format: str | None = None
    ct: bool = PhantomSection.ct
    whole_body: WholeBodySection | None = None

    @classmethod
    def from_params(cls, params: dict, stage: str = "stage") -> "StepParams":
        """The typed view of a stage's JSON parameters.

        Parameters
        ----------
        params : dict
            ``Stage.params`` (or ``StageTask.params``) as :func:`her2sim.pipeline.build_stages` made it.
        stage : str
            The stage's name, for messages.

        Raises
        ------
        ConfigError
            One line, ``"<stage> parameters: <key path> ..."``: an unknown key (with a suggestion), a missing
            ``version``, or a value the study file's checker refuses.
        """
        try:
            return cls(**_typed(params))
        except ConfigError as exc:
            raise ConfigError(f"{stage} parameters: {exc}") from None

    def to_params(self) -> dict:
        """The JSON parameters this view was made from (the keys a stage carries; ``figures`` and ``ct`` only
        when they differ from their defaults, ``monte_carlo.mode`` only when not ``"fast"``)."""
        out = {}
        for key, (attr, _, dump) in _KEYS.items():
            value = getattr(self, attr)
            if value is None or (attr in _OMITTED_AT_DEFAULT and value == _OMITTED_AT_DEFAULT[attr]):
                continue
            out[key] = dump(self)
        return out


# ------------------------------------------------------------------------------------------ tables
def _table(path: str, raw, allowed) -> dict:
    """``raw`` checked to be a table whose keys are all in ``allowed`` (``path`` "": the stage's parameters)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'the parameters'} = {raw!r} must be a table")
    for key in raw:
        if key not in allowed:
            what = f"{path}.{key} is not a known key" if path else f"{key} is not a known stage parameter"
            raise ConfigError(f"{what}{did_you_mean(key, allowed)} (allowed: {sorted(allowed)})")
    return raw


def _section(cls, path: str, raw: dict):
    """``cls`` built by the config's :func:`~her2sim.config.build_section`; a ``None`` value of a key whose
    default is ``None`` (``analysis.psf_fwhm_mm``, ...) means that default, as in the study file."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} = {raw!r} must be a table")
    none_default = {f.name for f in fields(cls) if f.default is None}
    return build_section(cls, path, {k: v for k, v in raw.items() if not (v is None and k in none_default)})


def _grid(raw) -> Grid:
    g = _table("grid", raw, GRID_KEYS)
    for key in GRID_KEYS:
        if key not in g:
            raise ConfigError(f"grid.{key} is required but missing")
    shape = key_validator(PhantomSection, "shape")("grid.shape", g["shape"])
    spacing = key_validator(PhantomSection, "spacing_mm")("grid.spacing_mm", g["spacing_mm"])
    return Grid.centered(shape, spacing)


def _monte_carlo(raw) -> dict:
    mc = dict(_table("monte_carlo", raw, MONTE_CARLO_KEYS))
    photons = key_validator(MonteCarloSection, "photons")
    if "calibration_histories" not in mc:
        raise ConfigError("monte_carlo.calibration_histories is required but missing")
    calibration_histories = photons("monte_carlo.calibration_histories", mc.pop("calibration_histories"))
    histories = mc.pop("histories", None)
    if histories is not None:
        mc["photons"] = photons("monte_carlo.histories", histories)
    return {"monte_carlo": _section(MonteCarloSection, "monte_carlo", mc),
            "calibration_histories": calibration_histories}


def _calibration(raw) -> dict:
    cal = dict(_table("calibration", raw, CALIBRATION_KEYS))
    if "ratio" not in cal:
        raise ConfigError("calibration.ratio is required but missing")
    ratio = TEST_OBJECT_OPTIONS["iec"]["sphere_to_background"]("calibration.ratio", cal.pop("ratio"))
    return {"calibration": _section(CalibrationSection, "calibration", cal), "calibration_ratio": ratio}


def _text(path: str, v) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{path} = {v!r} must be a non-empty string")
    return v


def _free_table(path: str, v) -> dict:
    if not isinstance(v, dict):
        raise ConfigError(f"{path} = {v!r} must be a table")
    return v


def _names(path: str, v) -> tuple:
    if not isinstance(v, list):
        raise ConfigError(f"{path} = {v!r} must be a list of names")
    return tuple(_text(f"{path}[{i}]", x) for i, x in enumerate(v))


def _values(section) -> dict:
    """A section's fields as JSON values (tuples as lists, ``None`` kept)."""
    return {f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v for f in fields(section)}


def _dump_monte_carlo(s: StepParams) -> dict:
    mc = s.monte_carlo
    out = {"histories": mc.photons, "target_relative_noise": mc.target_relative_noise,
           "calibration_histories": s.calibration_histories, "noise_realisations": mc.noise_realisations,
           "threads": mc.threads}
    if mc.mode != MonteCarloSection.mode:
        out["mode"] = mc.mode
    return out


def _scalar(key: str, check, attr: str | None = None) -> tuple:
    """An entry of :data:`_KEYS` for a key held as one attribute (``attr``, default the key's name): parsed by
    the checker ``check(path, value)``, written back as it is held."""
    attr = attr or key
    return key, (attr, lambda v: {attr: check(key, v)}, lambda s: getattr(s, attr))


#: stage key -> (attribute, parser(value) -> {attribute: value}, writer(StepParams) -> JSON value)
_KEYS = dict([
    _scalar("version", v_int(0, None)),
    _scalar("seed", key_validator(StudySection, "seed")),
    _scalar("mc_seed", key_validator(StudySection, "seed")),
    ("camera", ("camera", lambda v: {"camera": camera_from_table(v, None)}, lambda s: s.camera.to_dict())),
    ("grid", ("grid", lambda v: {"grid": _grid(v)},
              lambda s: {"shape": list(s.grid.shape), "spacing_mm": list(s.grid.spacing_mm)})),
    ("monte_carlo", ("monte_carlo", _monte_carlo, _dump_monte_carlo)),
    ("recon", ("recon", lambda v: {"recon": _section(ReconSection, "recon", v)}, lambda s: _values(s.recon))),
    ("analysis", ("analysis", lambda v: {"analysis": _section(AnalysisSection, "analysis", v)},
                  lambda s: _values(s.analysis))),
    ("calibration", ("calibration", _calibration,
                     lambda s: {**_values(s.calibration), "ratio": s.calibration_ratio})),
    _scalar("patient", _free_table),
    _scalar("patient_seed", key_validator(StudySection, "seed")),
    _scalar("index", v_int(0, None)),
    _scalar("patient_id", _text),
    _scalar("psf_fwhm_mm", key_validator(AnalysisSection, "psf_fwhm_mm")),
    _scalar("figures", key_validator(OutputSection, "figures")),
    ("patient_ids", ("patient_ids", lambda v: {"patient_ids": _names("patient_ids", v)},
                     lambda s: list(s.patient_ids))),
    _scalar("study_name", key_validator(StudySection, "name")),
    _scalar("config", _free_table),
    _scalar("format", key_validator(OutputSection, "report"), attr="report_format"),
    _scalar("ct", key_validator(PhantomSection, "ct")),
    ("whole_body", ("whole_body", lambda v: {"whole_body": _section(WholeBodySection, "whole_body", v)},
                    lambda s: _values(s.whole_body))),
])
#: attributes a stage key leaves out at their default (``build_stages``'s ``_non_default``)
_OMITTED_AT_DEFAULT = {"figures": OutputSection.figures, "ct": PhantomSection.ct}


def _typed(params) -> dict:
    """Keyword arguments of :class:`StepParams` from a stage's JSON parameters."""
    _table("", params, _KEYS)
    if "version" not in params:
        raise ConfigError("version is required but missing")
    out = {}
    for key, value in params.items():
        out.update(_KEYS[key][1](value))
    return out


__all__ = ["StepParams", "MONTE_CARLO_KEYS", "CALIBRATION_KEYS", "GRID_KEYS"]
