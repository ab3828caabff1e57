"""Tests of SUV definitions, VOIs and VOI statistics (her2sim.analysis.suv / voi / heterogeneity)."""
import math

import numpy as np
import pytest
from scipy import stats

from her2sim.core.containers import Image
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.grid import Grid
from her2sim.analysis import suv, voi, heterogeneity


# ----------------------------------------------------------------------------- SUV
def test_suvbw_hand_computed_with_decay():
    # 10 kBq/mL, 458 MBq, 70 kg, scan 1 h after injection; T1/2 = 6.0067 h (physics.md)
    decay = 2.0 ** (-1.0 / 6.0067)
    assert decay == pytest.approx(0.891, abs=1e-3)  # validation_targets.md
    expected = 10000.0 / (458e6 * decay / 70000.0)
    got = suv.suv_from_concentration(10000.0, 458e6, 70.0, elapsed_s=3600.0)
    assert got == pytest.approx(expected, rel=1e-9)
    # already decay-corrected to injection: no decay of the dose
    got0 = suv.suv_from_concentration(10000.0, 458e6, 70.0, elapsed_s=3600.0, decay_reference="injection")
    assert got0 == pytest.approx(10000.0 * 70000.0 / 458e6, rel=1e-12)


def test_decay_factor_two_hours():
    assert suv.decay_corrected_activity_bq(1.0, 7200.0) == pytest.approx(0.794, abs=1e-3)


def test_lbm_janmahasatian_and_bsa_dubois():
    # female 70 kg, 160 cm: BMI 27.34375, LBM = 9270*70/(8780+244*BMI)
    assert suv.lean_body_mass_kg(70, 160, "F") == pytest.approx(648900 / (8780 + 244 * 27.34375), rel=1e-12)
    assert suv.lean_body_mass_kg(70, 160, "male") == pytest.approx(648900 / (6680 + 216 * 27.34375), rel=1e-12)
    # Du Bois: 70 kg, 170 cm -> 1.81 m^2 (classic nomogram value)
    assert suv.body_surface_area_m2(70, 170) == pytest.approx(1.81, abs=0.01)
    f_sul = suv.suv_scale_factor(400e6, 70, height_cm=160, sex="F", normalisation="lbm")
    assert f_sul == pytest.approx(suv.lean_body_mass_kg(70, 160, "F") * 1000 / 400e6)
    f_bsa = suv.suv_scale_factor(400e6, 70, height_cm=170, normalisation="bsa")
    assert f_bsa == pytest.approx(suv.body_surface_area_m2(70, 170) * 1e4 / 400e6)


def test_suv_errors_name_the_field():
    with pytest.raises(ConfigError, match="weight_kg"):
        suv.suv_scale_factor(400e6, None)
    with pytest.raises(ConfigError, match="height_cm"):
        suv.suv_scale_factor(400e6, 70, normalisation="lbm", sex="F")
    with pytest.raises(ConfigError, match="sex"):
        suv.suv_scale_factor(400e6, 70, normalisation="lbm", height_cm=160)
    with pytest.raises(ConfigError, match="injected_bq"):
        suv.suv_scale_factor(-1.0, 70)
    with pytest.raises(ConfigError, match="weight_kg"):
        suv.suv_scale_factor(400e6, 0.0)
    # a 0.5 L water phantom "weighs" 0.5 kg: allowed for SUVbw
    assert suv.suv_scale_factor(1e6, 0.5) == pytest.approx(500.0 / 1e6)
    g = Grid.centered((4, 4, 4), 4.0)
    with pytest.raises(DataError, match="units"):
        suv.suv_image(Image(np.ones(g.shape, np.float32), g, units="counts", meta={"injected_mbq": 400, "weight_kg": 70}))
    with pytest.raises(DataError, match="weight_kg"):
        suv.suv_image(Image(np.ones(g.shape, np.float32), g, meta={"injected_mbq": 400, "scan_start_s": 3600}))
    with pytest.raises(DataError, match="injected_mbq"):
        suv.suv_image(Image(np.ones(g.shape, np.float32), g, meta={"weight_kg": 70, "scan_start_s": 3600}))
    with pytest.raises(DataError, match="scan_start_s"):
        suv.suv_image(Image(np.ones(g.shape, np.float32), g, meta={"weight_kg": 70, "injected_mbq": 400}))


def test_suv_image_from_meta():
    g = Grid.centered((4, 4, 4), 4.0)
    img = Image(np.full(g.shape, 5000.0, np.float32), g,
                meta={"injected_mbq": 458.0, "weight_kg": 70.0, "scan_start_s": 7200.0})
    out = suv.suv_image(img)
    assert out.units == "SUV"
    expected = 5000.0 * 70000.0 / (458e6 * 2.0 ** (-2.0 / 6.0067))
    assert np.allclose(out.array, expected, rtol=1e-6)


# ----------------------------------------------------------------------------- VOIs
@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), (3.0, 2.0, 1.5)])
def test_sphere_mask_volume_matches_geometry(spacing):
    g = Grid.centered((30, 30, 30), spacing)
    m = voi.sphere_mask(g, (0.7, -1.3, 2.1), 17.0, supersample=8)
    assert voi.voi_volume_ml(m, g) == pytest.approx(4 / 3 * math.pi * 8.5 ** 3 / 1000, rel=0.01)


def test_ellipsoid_volume_and_outside_error():
    g = Grid.centered((30, 40, 40), (2.5, 2.0, 2.0))
    m = voi.ellipsoid_mask(g, (0, 3, -4), (10, 6, 14), supersample=8)
    assert voi.voi_volume_ml(m, g) == pytest.approx(4 / 3 * math.pi * 10 * 6 * 14 / 1000, rel=0.01)
    with pytest.raises(DataError, match="outside"):
        voi.sphere_mask(g, (500, 0, 0), 10)


def test_empty_voi_is_an_error():
    img = np.ones((5, 5, 5))
    with pytest.raises(DataError, match="empty"):
        voi.suv_mean(img, np.zeros((5, 5, 5), bool))
    with pytest.raises(DataError, match="shape"):
        voi.suv_max(img, np.ones((4, 5, 5), bool))
    with pytest.raises(DataError, match="label"):
        voi.label_mask(np.zeros((3, 3, 3), int), 7)


def test_suv_max_mean_tlu():
    img = np.zeros((6, 6, 6))
    m = np.zeros((6, 6, 6), bool)
    m[1:3, 1:3, 1:3] = True
    img[1:3, 1:3, 1:3] = np.arange(8).reshape(2, 2, 2)
    assert voi.suv_max(img, m) == 7.0
    assert voi.suv_mean(img, m) == pytest.approx(3.5)
    assert voi.total_lesion_uptake(img, m, 2.0) == pytest.approx(3.5 * 8 * 0.008)


def test_suv_peak_linear_ramp_equals_centre_value():
    # mean of a linear function over a symmetric sphere = value at its centre
    g = Grid.centered((21, 21, 21), (2.0, 2.5, 3.0))
    _, _, x = g.mesh_mm(np.float64)
    img = np.broadcast_to(10.0 + 0.1 * x, g.shape).copy()
    m = np.zeros(g.shape, bool)
    m[10, 10, 10] = True
    assert voi.suv_peak(img, g, m) == pytest.approx(10.0, rel=1e-9)
    # half-voxel shifts allowed: best centre is +0.5 voxel along x
    assert voi.suv_peak(img, g, m, subvoxel_steps=2) == pytest.approx(10.0 + 0.1 * 1.5, rel=1e-9)


def test_suv_peak_of_single_hot_voxel_is_activity_over_one_ml():
    g = Grid.centered((15, 15, 15), 2.0)
    img = np.zeros(g.shape)
    img[7, 7, 7] = 1000.0
    m = np.zeros(g.shape, bool)
    m[7, 7, 7] = True
    # 1000 x 0.008 mL spread over 1 mL
    assert voi.suv_peak(img, g, m) == pytest.approx(8.0, rel=0.01)
    assert voi.SUVPEAK_DIAMETER_MM == pytest.approx(12.41, abs=0.01)


def test_threshold_voi_percent_of_max_connected():
    img = np.zeros((10, 10, 10))
    img[2:5, 2:5, 2:5] = 10.0
    img[3, 3, 3] = 20.0
    img[7:9, 7:9, 7:9] = 15.0  # separate blob above 50 %
    search = np.ones(img.shape, bool)
    v = voi.threshold_voi(img, search, fraction_of_max=0.5)
    assert v.sum() == 27
    v2 = voi.threshold_voi(img, search, fraction_of_max=0.5, connected=False)
    assert v2.sum() == 27 + 8
    v3 = voi.threshold_voi(img, search, value=12.0, connected=False)
    assert v3.sum() == 1 + 8
    with pytest.raises(ConfigError):
        voi.threshold_voi(img, search)


def test_heterogeneity_against_scipy():
    rng = np.random.default_rng(3)
    img = rng.lognormal(0.0, 0.4, size=(8, 8, 8))
    m = np.zeros(img.shape, bool)
    m[1:7, 1:7, 1:7] = True
    v = img[m]
    assert heterogeneity.coefficient_of_variation(img, m) == pytest.approx(np.std(v) / np.mean(v), rel=1e-10)
    assert heterogeneity.skewness(img, m) == pytest.approx(stats.skew(v), rel=1e-10)
    assert heterogeneity.kurtosis(img, m) == pytest.approx(stats.kurtosis(v), rel=1e-10)
    assert heterogeneity.fraction_above(img, m, 1.5) == pytest.approx(np.mean(v >= 1.5))
    # hand case: values 1, 2, 3, 4 -> CV sqrt(1.25)/2.5, skew 0, excess kurtosis 1.64 - 3
    small = np.zeros((2, 2, 2))
    small.flat[:4] = [1, 2, 3, 4]
    sm = np.zeros((2, 2, 2), bool)
    sm.flat[:4] = True
    assert heterogeneity.coefficient_of_variation(small, sm) == pytest.approx(math.sqrt(1.25) / 2.5)
    assert heterogeneity.skewness(small, sm) == pytest.approx(0.0, abs=1e-12)
    assert heterogeneity.kurtosis(small, sm) == pytest.approx(-1.36)
    with pytest.raises(DataError, match="variance"):
        heterogeneity.skewness(np.ones((2, 2, 2)), np.ones((2, 2, 2), bool))


def test_measure_lesions_on_uniform_spheres():
    g = Grid.centered((24, 40, 40), (2.5, 2.0, 2.0))
    lab = np.zeros(g.shape, np.int16)
    lab[voi.sphere_mask(g, (0, 0, -20), 20.0) >= 0.5] = 1
    lab[voi.sphere_mask(g, (0, 0, 20), 14.0) >= 0.5] = 2
    img = np.where(lab == 1, 3.0, np.where(lab == 2, 2.0, 0.5))
    rows = voi.measure_lesions(img, g, lab, margin_mm=4.0)
    assert [r["lesion_id"] for r in rows] == [1, 2]
    assert rows[0]["suvmax"] == 3.0 and rows[0]["suvmean"] == 3.0 and rows[1]["suvmean"] == 2.0
    # 41 % of max isocontour of an unblurred sphere = the sphere itself
    assert rows[0]["volume_iso_ml"] == pytest.approx(rows[0]["volume_ml"])
    assert rows[0]["volume_ml"] == pytest.approx(4 / 3 * math.pi * 10 ** 3 / 1000, rel=0.05)
    # a 20 mm sphere holds the 12.4 mm peak sphere entirely: SUVpeak = 3
    assert rows[0]["suvpeak"] == pytest.approx(3.0, rel=1e-6)
    d = voi.dilate_mask_mm(lab == 2, g, 4.0)
    assert d.sum() > (lab == 2).sum()


def test_public_api_resolves():
    import her2sim.analysis as a
    for name in a.__all__:
        assert getattr(a, name) is not None


def test_analysis_never_imports_sim():
    from pathlib import Path
    import her2sim.analysis as a
    folder = Path(a.__file__).parent
    for f in folder.glob("*.py"):
        text = f.read_text()
        assert "her2sim.sim" not in text and "from her2sim import sim" not in text, f


def test_every_decay_reference_the_recon_writes_gives_the_same_suv():
    """One list (core.radionuclide.DECAY_REFERENCES): recon calibration, SUV and DICOM accept the same names,
    and the SUV of one counts image does not depend on which reference it was calibrated to."""
    from her2sim.core.containers import Image
    from her2sim.core.grid import Grid
    from her2sim.core.radionuclide import DECAY_REFERENCES
    from her2sim.dicom_io import DECAY_CORRECTION_CODES
    from her2sim.recon.calibration import calibrate_image

    assert set(DECAY_CORRECTION_CODES) == set(DECAY_REFERENCES)
    assert suv.DECAY_REFERENCES is DECAY_REFERENCES
    g = Grid.centered((4, 4, 4), (4.0, 4.0, 4.0))
    counts = Image(np.full(g.shape, 250.0, np.float32), g, "counts",
                   {"injected_mbq": 458.0, "weight_kg": 70.0, "height_cm": 160.0, "sex": "F"})
    start_s, dur_s = 2 * 3600.0, 1800.0
    vals = {}
    for ref in DECAY_REFERENCES:
        img = calibrate_image(counts, 8e-5, 20.0, start_s, dur_s, decay_reference=ref)
        vals[ref] = float(suv.suv_image(img).array.mean())
    assert vals["acquisition_mean"] == pytest.approx(vals["scan_start"], rel=1e-6)
    assert vals["injection"] == pytest.approx(vals["scan_start"], rel=1e-6)
    bad = Image(np.ones(g.shape, np.float32), g, "Bq/mL", {"injected_mbq": 458.0, "weight_kg": 70.0,
                                                           "decay_corrected_to": "acquisition_mean"})
    with pytest.raises(DataError, match="scan_start_s"):
        suv.suv_image(bad)
