"""[whole_body] in a study: the sweep stage, its file, its figure beside the SPECT, and what it refuses."""
import numpy as np
import pytest

from her2sim.config import load_study, loads_study, override_study
from her2sim.core.errors import ConfigError
from her2sim.pipeline import build_stages, run_study
from her2sim.steps.whole_body import read_whole_body
from her2sim.study_layout import StudyLayout

from test_pipeline import STUDY

SWEEP = ["whole_body.enabled=true", "whole_body.matrix=[512, 128]", "whole_body.histories=20000",
         "whole_body.spacing_mm=8.84"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("wb_study")
    cfg = override_study(load_study(STUDY), SWEEP)
    return out, run_study(cfg, out, progress=False), cfg


def test_sweep_file_figure_and_report(swept):
    out, summary, cfg = swept
    lay = StudyLayout(out)
    scans = read_whole_body(lay.whole_body("P001"))
    assert sorted(scans) == list(cfg.tracer.time_points_h)
    s = scans[1.0]
    assert s["anterior"].shape == s["posterior"].shape == (512, 128)
    assert s["pixel_mm"][0] == pytest.approx(4.42)
    # 12 cm/min past the 400 mm NM670 detector (camera_nm670.md: 540 x 400 mm useful crystal): 200 s per point
    assert s["dwell_s"] == pytest.approx(400.0 / (120.0 / 60.0))
    for view in ("anterior", "posterior"):
        n, lam = float(s[view].sum()), float(s[f"expected_{view}"].sum())
        assert abs(n - lam) < 5.0 * np.sqrt(lam)          # Poisson counts of the expectation
    assert (lay.figures_dir / "whole_body_P001.png").is_file()
    assert "whole_body_P001.png" in (out / "report.html").read_text()
    assert "whole_body" in summary["stage_seconds"]


def test_sweep_is_off_by_default_and_follows_the_recon():
    names = [s.name for s in build_stages(load_study(STUDY))]
    assert not any(n.startswith("whole_body_") for n in names)
    stages = {s.name: s for s in build_stages(override_study(load_study(STUDY), SWEEP))}
    assert stages["whole_body_P001"].inputs == ["recon_P001"]
    assert "whole_body_P001" in stages["report"].inputs


@pytest.mark.parametrize("assignment, field", [("whole_body.speed_cm_per_min=0", "whole_body.speed_cm_per_min"),
                                               ("whole_body.matrix=[256, 256]", "whole_body.matrix"),
                                               ("whole_body.enabeld=true", "whole_body.enabeld")])
def test_bad_sweep_settings_are_refused_naming_the_field(assignment, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        override_study(load_study(STUDY), [assignment])


def test_unknown_section_key_suggests_the_right_one():
    text = '[study]\nname = "x"\n[phantom]\npreset = "demo"\n[whole_body]\nspeed_cm_per_minute = 12\n'
    with pytest.raises(ConfigError, match="speed_cm_per_min"):
        loads_study(text)


def test_anatomy_v2_reaches_the_patient_and_its_whole_body_extent():
    stages = {s.name: s for s in build_stages(load_study(STUDY))}
    assert stages["phantom_P001"].params["patient"]["anatomy"] == "v2"           # the default
    v1 = {s.name: s for s in build_stages(override_study(load_study(STUDY), ["phantom.anatomy='v1'"]))}
    assert "anatomy" not in v1["phantom_P001"].params["patient"]     # v1: the stage keys v1 studies always had
    # anatomy v2 has its own head-to-thigh extent: the whole-body sweeps are built on it
    wb = {s.name: s for s in build_stages(override_study(load_study(STUDY), SWEEP + ["phantom.anatomy='v2'"]))}
    assert wb["whole_body_P001"].inputs == ["recon_P001"]
    assert wb["phantom_P001"].params["patient"]["anatomy"] == "v2"
