"""Analytic camera model against published figures (camera_nm670.md)."""
import subprocess
import sys
import json

import pytest

from her2sim.core.errors import ConfigError
from her2sim.sim.camera import Camera, Collimator, Detector


def test_anger_efficiency_lehr():
    # Anger/Keller, K = 0.26: 1.0e-4 (+/- 5 %)
    assert Collimator().geometric_efficiency() == pytest.approx(1.0e-4, rel=0.05)


def test_geometric_resolution_at_100mm():
    # R_g = D (L_e + z)/L_e = 5.9 mm at 100 mm
    assert float(Collimator().geometric_fwhm_mm(100.0)) == pytest.approx(5.9, abs=0.1)


def test_system_fwhm_at_100mm_in_vendor_range_and_linear():
    cam = Camera()
    assert 7.1 <= float(cam.system_fwhm_mm(100.0)) <= 7.4
    f = [float(cam.system_fwhm_mm(z)) for z in (100, 150, 200, 250)]
    d = [b - a for a, b in zip(f, f[1:])]
    assert max(d) / min(d) < 1.1  # nearly linear growth at clinical distances


def test_sensitivity_in_published_range():
    cam = Camera()
    assert 72.0 <= cam.sensitivity_cps_per_mbq() <= 90.0
    assert 7.6e-5 <= cam.sensitivity_per_photon() <= 9.0e-5


def test_energy_resolution_scales_inverse_sqrt():
    det = Detector(energy_resolution=0.095)
    assert float(det.energy_fwhm_kev(140.5)) / 140.5 == pytest.approx(0.095)
    assert float(det.energy_fwhm_kev(70.25)) / 70.25 == pytest.approx(0.095 * 2 ** 0.5)


def test_septal_penetration_single_septum():
    # t L / (2 D + t) = 2.19 mm of lead -> 0.28 % transmission (camera_nm670.md)
    c = Collimator()
    assert c.min_septal_path_mm() == pytest.approx(2.19, abs=0.01)
    assert c.septal_transmission() == pytest.approx(0.0028, abs=0.0002)


@pytest.mark.parametrize("override,field", [
    ({"collimator": {"hole_mm": -1.0}}, "collimator.hole_mm"),
    ({"protocol": {"n_views": 0}}, "protocol.n_views"),
    ({"detector": {"energy_resolution": 0.0}}, "detector.energy_resolution"),
    ({"windows": [{"name": "a", "lower_kev": 150, "upper_kev": 140}]}, "upper_kev"),
    ({"windows": [{"name": "a", "lower_kev": 120, "upper_kev": 150},
                  {"name": "b", "lower_kev": 140, "upper_kev": 160}]}, "overlaps"),
    ({"windows": [{"name": "a", "lower_kev": 5, "upper_kev": 20}]}, "tabulated energy range"),
    ({"collimator": {"holes_mm": 1.0}}, "camera.collimator.holes_mm"),
])
def test_bad_camera_values_raise_named_error(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        Camera.from_dict(override)


def test_camera_cli_json_keys(tmp_path):
    cfg = tmp_path / "cam.toml"
    cfg.write_text("[detector]\nintrinsic_fwhm_mm = 3.4\n")
    out = subprocess.run([sys.executable, "-m", "her2sim.cli", "camera", "--json", "--config", str(cfg)],
                         capture_output=True, text=True, check=True).stdout
    rep = json.loads(out)
    for key in ("geometric_efficiency", "sensitivity_cps_per_mbq", "system_fwhm_mm", "septal_penetration_fraction"):
        assert key in rep
    assert set(rep["system_fwhm_mm"]) == {"0", "50", "100", "150", "200"}
    assert rep["detector"]["intrinsic_fwhm_mm"] == 3.4


def test_materials_cli_json():
    out = subprocess.run([sys.executable, "-m", "her2sim.cli", "materials", "--energy-kev", "140.5", "--json"],
                         capture_output=True, text=True, check=True).stdout
    rep = json.loads(out)
    assert rep["energy_kev"] == 140.5
    for name in ("water", "air", "adipose", "breast_gland", "soft_tissue", "muscle", "lung", "cortical_bone",
                 "nai", "lead"):
        m = rep["materials"][name]
        assert m["mu_per_cm"] == pytest.approx(m["mu_rho_cm2_g"] * m["density_g_cm3"])
    assert rep["materials"]["water"]["mu_rho_cm2_g"] == pytest.approx(0.1537, rel=0.01)
