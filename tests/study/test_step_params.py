"""The typed view of a stage's parameters (issue 16): every stage's JSON parameters round-trip through
:class:`her2sim.steps.params.StepParams` unchanged (they are the stage keys of existing study folders), the
sections are the study file's own classes, and an unknown or invalid key is a one-line ConfigError naming it."""
import copy
import json
from pathlib import Path

import pytest

from her2sim import config as C
from her2sim import pipeline
from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.sim.camera import Camera
from her2sim.steps.params import StepParams

TINY = Path(__file__).parents[1] / "data" / "tiny_study.toml"


def _stages(*overrides):
    cfg = C.load_study(TINY)
    return pipeline.build_stages(C.override_study(cfg, list(overrides)) if overrides else cfg)


@pytest.mark.parametrize("overrides", [(), ("recon.scatter=mc", "monte_carlo.mode=explicit", "analysis.psf_fwhm_mm=9.0",
                                            "output.figures=false", "output.dicom=true", "phantom.ct=true",
                                            "monte_carlo.noise_realisations=2")])
def test_every_stage_round_trips_through_its_typed_view(overrides):
    for stage in _stages(*overrides):
        step = StepParams.from_params(stage.params, stage.name)
        assert step.to_params() == stage.params, stage.name
        # as the stage reads them back from JSON (lists, not tuples), too
        as_json = json.loads(json.dumps(stage.params))
        assert StepParams.from_params(as_json, stage.name).to_params() == as_json


def test_typed_view_holds_the_config_sections_with_the_study_values():
    cfg = C.override_study(C.load_study(TINY), ["recon.iterations=3", "analysis.voi_margin_mm=5.0"])
    stages = {s.name: s for s in pipeline.build_stages(cfg)}
    recon = StepParams.from_params(stages["recon_P001"].params, "recon_P001")
    assert recon.recon == cfg.recon and isinstance(recon.recon, C.ReconSection)
    assert isinstance(recon.camera, Camera) and recon.camera.to_dict() == cfg.camera.to_dict()
    assert recon.grid == Grid.centered(cfg.phantom.shape, cfg.phantom.spacing_mm)
    assert recon.monte_carlo.noise_realisations == cfg.monte_carlo.noise_realisations
    assert recon.monte_carlo.photons == cfg.monte_carlo.effective_photons
    assert recon.patient_id == "P001" and recon.seed == cfg.mc_seed
    quantify = StepParams.from_params(stages["quantify_P001"].params, "quantify_P001")
    assert quantify.analysis == cfg.analysis     # None-valued keys (psf_fwhm_mm) are the section's default
    cal = StepParams.from_params(stages["calibration"].params, "calibration")
    assert cal.calibration == cfg.calibration and cal.calibration_ratio == 4.0
    assert cal.calibration_histories == stages["calibration"].params["monte_carlo"]["calibration_histories"]
    report = StepParams.from_params(stages["report"].params, "report")
    assert report.report_format == cfg.output.report and report.figures is True


@pytest.mark.parametrize("edit, named", [
    (lambda p: p["recon"].update(iteratons=3), r"recon_P001 parameters: recon\.iteratons is not a known key; "
                                               r"did you mean 'iterations'\?"),
    (lambda p: p.update(recno={}), r"recon_P001 parameters: recno is not a known stage parameter; "
                                   r"did you mean 'recon'\?"),
    (lambda p: p["recon"].update(iterations=0), r"recon_P001 parameters: recon\.iterations = 0 is outside"),
    (lambda p: p["recon"].update(scatter="magic"), r"recon\.scatter = 'magic' is not allowed; choose one of"),
    (lambda p: p["monte_carlo"].update(histories=-5), r"monte_carlo\.histories = -5 is outside"),
    (lambda p: p["monte_carlo"].update(photons=5), r"monte_carlo\.photons is not a known key"),
    (lambda p: p["grid"].update(shape=[4, 4]), r"grid\.shape = \[4, 4\] must be a list of 3 integers"),
    (lambda p: p["camera"]["protocol"].update(n_view=3), r"camera\.protocol\.n_view is not a known key"),
    (lambda p: p.pop("version"), r"version is required but missing"),
])
def test_unknown_or_invalid_stage_parameter_is_one_line_naming_it(edit, named):
    params = copy.deepcopy(next(s for s in _stages() if s.name == "recon_P001").params)
    edit(params)
    with pytest.raises(ConfigError, match=named) as exc:
        StepParams.from_params(params, "recon_P001")
    assert "\n" not in str(exc.value)


def test_calibration_and_analysis_tables_are_checked_too():
    stages = {s.name: s for s in _stages()}
    cal = copy.deepcopy(stages["calibration"].params)
    cal["calibration"]["phantom"] = "disk"
    with pytest.raises(ConfigError, match=r"calibration\.phantom = 'disk' is not allowed"):
        StepParams.from_params(cal, "calibration")
    quant = copy.deepcopy(stages["quantify_P001"].params)
    quant["analysis"]["voi_threshold_fraction"] = 0.9
    with pytest.raises(ConfigError, match=r"analysis\.voi_threshold_fraction = 0\.9 is outside"):
        StepParams.from_params(quant, "quantify_P001")
