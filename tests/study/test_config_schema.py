"""Every key of the study schema is read or refused (issue 16: config and library agree).

The schema is walked from the config's own tables (``config._VALIDATORS`` and the camera dataclasses), so a
key added later without an entry here fails the walk. For each key a changed, valid value must change what
the study runs: the resolved stage arguments of :func:`her2sim.pipeline.run_study` (each stage's name,
inputs, parameters, function and outputs, and the study folder; the ``config`` copy the statistics stage
records for the summary is left out, since it changes with any key) captured where the stages would start.
Every allowed value of a choice key must be read the same way (a distinct set of stage arguments) or refused
with a one-line ConfigError naming the key. The three keys that were validated and then ignored
(``monte_carlo.mode``, ``calibration.phantom``, ``output.figures``) are also checked by what they produce.
"""
import copy
import json
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from her2sim import config as C
from her2sim import pipeline
from her2sim.config import StudyConfig
from her2sim.core.errors import ConfigError
from her2sim.core.jsonio import canonical_json
from her2sim.sim.camera import Collimator, Detector, Protocol
from her2sim.steps import calibration as calibration_step
from her2sim.steps.scan import simulate_expected

TINY = Path(__file__).parents[1] / "data" / "tiny_study.toml"
BASE = tomllib.loads(TINY.read_text())

#: a changed, valid value for every key of the sections (the tiny study is the base)
ALTERNATIVES = {
    "study": {"name": "other", "seed": 4, "output_dir": "elsewhere"},
    "phantom": {"preset": "torso", "shape": [22, 48, 48], "spacing_mm": 8.5, "weight_kg": 80.0, "height_cm": 170.0,
                "ct": False, "lesions": [{"type": "primary", "side": "left", "ihc": "1+", "diameter_mm": 20.0}],
                "anatomy": "v1", "breast_volume_ml": {"left": 250.0, "right": 400.0}},
    "cohort": {"preset": "demo", "n_patients": 2, "seed": 5},
    "tracer": {"injected_mbq": 400.0, "time_points_h": [1.0, 2.0]},
    "calibration": {"phantom": "cylinder", "activity_mbq": 50.0},
    "monte_carlo": {"mode": "explicit", "photons": 6000, "target_relative_noise": 0.05, "seed": 9, "threads": 1,
                    "noise_realisations": 2},
    "recon": {"iterations": 3, "subsets": 4, "psf": False, "penetration": True, "scatter": "none",
              "scatter_histories": 20_000, "scatter_smooth_fwhm_mm": 20.0, "attenuation": False, "mu_map": "materials",
              "post_filter_fwhm_mm": 8.0, "butterworth_cutoff_cycles_per_cm": 0.48, "butterworth_order": 5},
    "analysis": {"threshold": 2.0, "metrics": ["suvmax"], "pvc_methods": ["none", "rbv"], "psf_fwhm_mm": 9.0,
                 "bootstrap": 10, "rose_k": 4.0, "voi": "threshold", "voi_margin_mm": 5.0,
                 "voi_threshold_fraction": 0.45, "min_voi_voxels": 2.0, "pvc_response": "gaussian"},
    "whole_body": {"enabled": True, "speed_cm_per_min": 10.0, "matrix": [512, 128], "histories": 20_000,
                   "spacing_mm": 8.84},
    "output": {"dicom": True, "report": "markdown", "figures": False},
}
#: keys whose alternative needs other keys set (a contradiction otherwise, refused by the config)
NEEDS = {
    ("recon", "penetration"): {"recon": {"psf": True}},
    # a study without CT: no AC (refused otherwise); what reads the key then is the DICOM export (no CT series)
    ("phantom", "ct"): {"recon": {"attenuation": False}, "output": {"dicom": True}},
    ("monte_carlo", "target_relative_noise"): {"monte_carlo": {"photons": None}},
    ("recon", "scatter_histories"): {"recon": {"scatter": "mc"}},
    ("recon", "scatter_smooth_fwhm_mm"): {"recon": {"scatter": "mc"}},
    ("phantom", "preset"): {"phantom": {"lesions": None}},
    # the sweep's settings act on the whole_body_<id> stages, which exist when the sweep is enabled
    **{("whole_body", k): {"whole_body": {"enabled": True}}
       for k in ("speed_cm_per_min", "matrix", "histories", "spacing_mm")},
}
#: keys whose changed value acts by being refused on the base (the message names what is missing)
REFUSED_ON_BASE = {("phantom", "preset"): "phantom.lesions"}  # demo brings its patient's lesions, torso none
#: the optional [cohort] section: its keys are walked on the base with a cohort
COHORT = {"preset": "seed-trial", "n_patients": 1, "seed": 0}
#: camera values that are not "number x 1.05" or "integer + 2"
CAMERA_STRINGS = {("collimator", "name"): "other LEHR", ("collimator", "material"): "aluminium",
                  ("protocol", "orbit"): "contour"}


class _Stop(Exception):
    pass


@pytest.fixture
def observe(tmp_path, monkeypatch):
    """``observe(data)`` -> ("read", canonical stage arguments) or ("refused", message)."""
    monkeypatch.chdir(tmp_path)

    def fake_run_stages(stages, sd, executor=None, progress=True):
        seen = {"study_dir": str(Path(sd).resolve()), "stages": {
            s.name: {"inputs": list(s.inputs), "params": {k: v for k, v in s.params.items() if k != "config"},
                     "func": s.func.__name__, "outputs": [str(o) for o in s.outputs]} for s in stages}}
        raise _Stop(canonical_json(seen))

    monkeypatch.setattr(pipeline, "run_stages", fake_run_stages)

    def run(data):
        try:
            cfg = StudyConfig.from_dict(copy.deepcopy(data), "study.toml")
            pipeline.run_study(cfg, progress=False)
        except ConfigError as exc:
            msg = str(exc)
            assert "\n" not in msg
            return "refused", msg
        except _Stop as stop:
            return "read", str(stop)
        raise AssertionError("run_study returned without starting its stages")
    return run


def _with(data, section, values):
    out = copy.deepcopy(data)
    sec = out.setdefault(section, {})
    for k, v in values.items():
        if v is None:
            sec.pop(k, None)
        else:
            sec[k] = v
    return out


def _schema_keys():
    for cls, checks in C._VALIDATORS.items():
        section = next(name for name, c in _SECTION_CLASSES.items() if c is cls)
        for key in checks:
            yield section, key


_SECTION_CLASSES = {"study": C.StudySection, "phantom": C.PhantomSection, "cohort": C.CohortSection,
                    "tracer": C.TracerSection, "calibration": C.CalibrationSection,
                    "monte_carlo": C.MonteCarloSection, "recon": C.ReconSection, "analysis": C.AnalysisSection,
                    "whole_body": C.WholeBodySection, "output": C.OutputSection}


def _base_for(section, key):
    data = copy.deepcopy(BASE)
    if section == "cohort":
        data["cohort"] = dict(COHORT)
        data["phantom"] = dict(data["phantom"], preset="torso")
        data["phantom"].pop("lesions")
    for sec, values in NEEDS.get((section, key), {}).items():
        data = _with(data, sec, values)
    return data


def test_every_section_key_has_a_changed_value_here():
    """The walk covers the whole schema: a new key must get an alternative value above."""
    assert set(_SECTION_CLASSES.values()) == set(C._VALIDATORS)
    missing = [f"{s}.{k}" for s, k in _schema_keys() if k not in ALTERNATIVES.get(s, {})]
    assert not missing, f"keys without a changed value in ALTERNATIVES: {missing}"
    assert {f.name for f in fields(C.OutputSection)} == set(C._VALIDATORS[C.OutputSection])


@pytest.mark.parametrize("section,key", list(_schema_keys()), ids=lambda x: str(x))
def test_changing_a_key_changes_what_the_study_runs(observe, section, key):
    base = _base_for(section, key)
    status, before = observe(base)
    assert status == "read", before
    status, after = observe(_with(base, section, {key: ALTERNATIVES[section][key]}))
    if (section, key) in REFUSED_ON_BASE:
        assert status == "refused" and REFUSED_ON_BASE[(section, key)] in after, after
        return
    assert status == "read", f"{section}.{key} = {ALTERNATIVES[section][key]!r} refused: {after}"
    assert after != before, f"{section}.{key} is validated but changing it changes no stage argument"


_CHOICES = {("phantom", "preset"): C.PHANTOM_PRESETS, ("calibration", "phantom"): C.CALIBRATION_PHANTOMS,
            ("monte_carlo", "mode"): C.MC_MODES, ("recon", "scatter"): C.SCATTER_METHODS,
            ("recon", "mu_map"): C.MU_MAP_SOURCES, ("analysis", "voi"): C.VOI_METHODS,
            ("output", "report"): C.REPORT_FORMATS}
#: allowed values that are the same study on the base, and why
SAME = {("phantom", "preset"): {frozenset({"demo", "torso"}):
                                "with phantom.lesions given demo and torso are one patient; they differ in the "
                                "default lesions (test_torso_without_lesions_is_refused_demo_has_its_own)"}}


@pytest.mark.parametrize("section,key", list(_CHOICES), ids=lambda x: str(x))
def test_every_allowed_value_of_a_choice_key_is_read_or_refused(observe, section, key):
    """Each allowed name runs a study of its own, or is refused naming the key (never silently another)."""
    base = _base_for(section, key)
    seen = {}
    for value in _CHOICES[(section, key)]:
        status, out = observe(_with(base, section, {key: value}))
        if status == "refused":
            assert f"{section}." in out or key in out, out
            continue
        seen.setdefault(out, set()).add(value)
    for values in seen.values():
        if len(values) > 1:
            assert frozenset(values) in SAME.get((section, key), {}), \
                f"{section}.{key} values {sorted(values)} are validated but run the same study"


def test_library_lists_are_the_configs():
    """config.py imports each allowed-name list from the module that acts on the names."""
    from her2sim.analysis import lesion_table, pvc
    from her2sim.phantoms import phantom_presets
    from her2sim import recon, report
    from her2sim.recon import attenuation, calibration
    from her2sim.sim import analog
    assert C.PVC_METHODS is pvc.PVC_METHODS
    assert C.SCATTER_METHODS is recon.SCATTER_METHODS
    assert C.PHANTOM_PRESETS is phantom_presets.PRESET_NAMES
    assert C.MU_MAP_SOURCES is attenuation.MU_MAP_SOURCES
    assert C.CALIBRATION_PHANTOMS is calibration.CALIBRATION_PHANTOMS
    assert C.MC_MODES is analog.MC_MODES
    assert C.REPORT_FORMATS is report.REPORT_FORMATS
    assert C.VOI_METHODS is lesion_table.VOI_METHODS


def test_torso_without_lesions_is_refused_demo_has_its_own(observe):
    data = copy.deepcopy(BASE)
    data["phantom"].pop("lesions")
    assert observe(data)[0] == "read"
    status, msg = observe(_with(data, "phantom", {"preset": "torso"}))
    assert status == "refused" and "phantom.lesions" in msg and "'demo'" in msg


def _camera_keys():
    for part, cls in (("collimator", Collimator), ("detector", Detector), ("protocol", Protocol)):
        for f in fields(cls):
            yield part, f.name, f.default
    yield None, "heads", 2


@pytest.mark.parametrize("part,key,default", list(_camera_keys()), ids=lambda x: str(x))
def test_changing_a_camera_key_changes_what_the_study_runs_or_is_refused(observe, part, key, default):
    base = copy.deepcopy(BASE)
    cam = base.setdefault("camera", {})
    current = cam.get(part, {}).get(key, default) if part else cam.get(key, default)
    if isinstance(current, str):
        new = CAMERA_STRINGS[(part, key)]
    elif isinstance(current, int):
        new = current - 1 if key == "heads" else current + 2
    else:
        new = round(current * 1.05 + (0.5 if current == 0 else 0.0), 6)
    _, before = observe(base)
    changed = copy.deepcopy(base)
    if part:
        changed["camera"].setdefault(part, {})[key] = new
    else:
        changed["camera"][key] = new
    status, after = observe(changed)
    if status == "refused":
        assert (part or "") in after and key in after, after
    else:
        assert after != before, f"camera.{part}.{key} is accepted but changes no stage argument"


# ---------------------------------------------------------------------------- the keys that were ignored
def _tiny_phantom():
    from her2sim.phantoms import point_source_phantom
    from her2sim.core.grid import Grid
    return point_source_phantom(Grid.centered((8, 16, 16), (8.84, 8.84, 8.84)), 10.0, medium="water",
                                medium_diameter_mm=100.0, medium_length_mm=60.0)


def test_monte_carlo_mode_explicit_runs_the_explicit_mode():
    from her2sim.sim.camera import Camera
    from her2sim.sim.transport import MonteCarloSettings
    cam = Camera.from_dict({"protocol": {"n_views": 2, "matrix": 16, "pixel_mm": 8.84, "radius_mm": 200.0}})
    ph = _tiny_phantom()
    # a 63-bit seed as the pipeline derives them (the explicit mode's per-view seeds once overflowed)
    st = MonteCarloSettings(n_histories=20_000, seed=2 ** 62 + 3, n_chunks=8, batches=2)
    fast = simulate_expected(ph, cam, C.MonteCarloSection(), st)
    explicit = simulate_expected(ph, cam, C.MonteCarloSection(mode="explicit"), st)
    assert fast.projections.meta["mode"] == "fast" and explicit.projections.meta["mode"] == "explicit"
    # analog photons through the lead lattice (the explicit mode's components); the estimates themselves are
    # compared in tests/sim/test_mc_explicit_vs_fast.py
    assert "penetration" in explicit.projections.components and "penetration" not in fast.stats
    assert explicit.stats["n_escapes"] > 0 and "seconds_detection" in explicit.stats
    with pytest.raises(ConfigError, match=r"monte_carlo\.mode = 'analog' is not allowed"):
        simulate_expected(ph, cam, C.MonteCarloSection(mode="analog"), st)


def test_calibration_point_and_none_are_honoured(tmp_path, monkeypatch):
    """'point' scans a point source (not a cylinder); 'none' scans nothing and uses the analytic sensitivity."""
    from her2sim.core.containers import Phantom
    from her2sim.sim.camera import Camera
    from her2sim.stages import StageTask

    monkeypatch.setattr(calibration_step, "point_source_fwhm_mm", lambda step, grid, cam: None)  # not tested here
    cfg = C.loads_study(TINY.read_text(), "tiny")
    stage = next(s for s in pipeline.build_stages(C.override_study(cfg, ["calibration.phantom=point"]))
                 if s.name == "calibration")
    assert stage.params["calibration"]["phantom"] == "point"
    params = json.loads(json.dumps(stage.params))
    params["monte_carlo"]["calibration_histories"] = 10_000
    for kind in ("point", "none"):
        out = tmp_path / kind / "calibration" / "calibration.json"
        params["calibration"]["phantom"] = kind
        calibration_step.stage_calibration(StageTask(stage="calibration", params=params, outputs=(out,), inputs={},
                                                     study_dir=tmp_path / kind))
        cal = json.loads(out.read_text())
        assert cal["phantom"] == kind and cal["cps_per_bq"] > 0
        if kind == "point":
            ph = Phantom.load(out.parent / "phantom.h5")
            assert ph.meta["phantom_type"] == "point_source"
            assert ph.total_activity_bq(0) == pytest.approx(100e6, rel=1e-5)
        else:
            assert not (out.parent / "phantom.h5").exists()
            assert cal["cps_per_bq"] == pytest.approx(Camera.from_dict(params["camera"]).sensitivity_cps_per_mbq() / 1e6)


def test_calibration_phantom_outside_the_list_is_one_line_naming_it():
    with pytest.raises(ConfigError, match=r"calibration\.phantom = 'disk' is not allowed; choose one of "
                                          r"\['iec', 'cylinder', 'point', 'none'\]"):
        C.loads_study(TINY.read_text().replace('phantom = "iec"', 'phantom = "disk"'), "tiny")


def test_figures_false_writes_no_figure(tmp_path):
    """output.figures = false: the tiny study (with calibration.phantom = 'none') writes no image at all,
    and the summary lists none; the same study with figures writes them (test_pipeline.py)."""
    cfg = C.override_study(C.loads_study(TINY.read_text(), "tiny"),
                           ["output.figures=false", "calibration.phantom=none"])
    summary = pipeline.run_study(cfg, tmp_path / "study", progress=False)
    assert summary["figures"] == []
    written = [p for p in (tmp_path / "study").rglob("*") if p.suffix.lower() in (".png", ".svg", ".jpg", ".pdf")]
    assert written == []
    cal = json.loads((tmp_path / "study" / "calibration" / "calibration.json").read_text())
    assert cal["phantom"] == "none"
    assert (tmp_path / "study" / "report.html").exists()


def test_figures_off_stops_every_figure_writer(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from her2sim.core.atomic import figures_off, savefig_atomic
    fig = plt.figure()
    with figures_off():
        savefig_atomic(fig, tmp_path / "a.png")
    savefig_atomic(fig, tmp_path / "b.png")
    plt.close(fig)
    assert not (tmp_path / "a.png").exists() and (tmp_path / "b.png").exists()
