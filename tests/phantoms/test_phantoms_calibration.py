"""Calibration objects: NEMA IEC body phantom, cylinder, point and line sources.

Reference numbers come from outside the code: NEMA NU 2 sphere volumes (validation_targets.md),
analytic volumes of spheres / cylinders / the IEC D-shaped cross-section, and the Tc-99m decay
factor 0.8910 at 1 h (physics.md).
"""
import numpy as np
import pytest

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.phantoms import (iec_body_phantom, iec_sphere_centres_mm, line_source_phantom, point_source_phantom,
                              uniform_cylinder_phantom)

NEMA_VOLUMES_ML = (0.52, 1.15, 2.57, 5.58, 11.49, 26.52)


@pytest.fixture(scope="module")
def iec4():
    return iec_body_phantom(Grid.centered((64, 96, 96), 4.0), background_bq_per_ml=1000.0, sphere_to_background=8.0)


@pytest.mark.parametrize("spacing,shape", [(4.0, (64, 96, 96)), (2.0, (110, 160, 160))])
def test_iec_sphere_volumes_within_2_percent_of_nema(spacing, shape):
    g = Grid.centered(shape, spacing)
    p = iec_body_phantom(g, 1000.0, 4.0, walls=False)
    for row, nominal in zip(p.truth, NEMA_VOLUMES_ML):
        assert row["volume_ml"] == pytest.approx(nominal, rel=0.02)
        # and against the exact sphere volume 4/3 pi r^3
        r_cm = row["diameter_mm"] / 20.0
        assert row["volume_ml"] == pytest.approx(4.0 / 3.0 * np.pi * r_cm ** 3, rel=0.01)


def test_iec_sphere_centres_geometry():
    s = iec_sphere_centres_mm((5.0, -3.0, 2.0))
    assert [r["diameter_mm"] for r in s] == [10.0, 13.0, 17.0, 22.0, 28.0, 37.0]
    pts = np.array([r["centre_mm"] for r in s])
    radial = np.hypot(pts[:, 1] + 3.0, pts[:, 2] - 2.0)
    assert np.allclose(radial, 114.5 / 2)                       # 114.5 mm diameter ring
    ang = np.degrees(np.arctan2(-(pts[:, 1] + 3.0), pts[:, 2] - 2.0)) % 360
    assert np.allclose(np.diff(ang), 60.0)                     # 60 deg apart
    assert np.allclose(pts[:, 0], 5.0 + 90.0 - 70.0)            # 70 mm below the lid (180 mm interior)


def test_iec_total_activity_matches_analytic_geometry(iec4):
    # interior D shape: half disc r=147 + 140 x 77 block + two quarter discs r=77, length 180 mm
    area_mm2 = 0.5 * np.pi * 147.0 ** 2 + 140.0 * 77.0 + 0.5 * np.pi * 77.0 ** 2
    v_int = area_mm2 * 180.0 / 1000.0
    v_lung = np.pi * 25.0 ** 2 * 180.0 / 1000.0
    r_in = np.array([10, 13, 17, 22, 28, 37]) / 2.0
    v_in = 4 / 3 * np.pi * r_in ** 3 / 1000.0
    v_out = 4 / 3 * np.pi * (r_in + 1.0) ** 3 / 1000.0
    expected_bq = 1000.0 * (v_int - v_lung - v_out.sum()) + 8000.0 * v_in.sum()
    assert iec4.total_activity_bq(0) == pytest.approx(expected_bq, rel=0.003)


def test_iec_materials_and_labels(iec4):
    names = set(iec4.label_names.values())
    assert {"pmma_shell", "lung_insert", "background_water", "sphere_37mm"} <= names
    lung_id = [k for k, v in iec4.label_names.items() if v == "lung_insert"][0]
    lung = iec4.labels == lung_id
    assert np.median(iec4.density_g_cm3[lung]) == pytest.approx(0.26, abs=0.01)   # ICRU-44 inflated lung
    assert np.all(iec4.activity_bq_per_ml[0][lung] < 200.0)          # cold insert (edge voxels mix)
    assert iec4.lesion_ids.max() == 6
    # outer dimensions 300 mm wide, 230 mm AP (with 3 mm PMMA walls)
    body = iec4.density_g_cm3 > 0.5
    xs = np.nonzero(body.any(axis=(0, 1)))[0]
    ys = np.nonzero(body.any(axis=(0, 2)))[0]
    assert (xs.max() - xs.min() + 1) * 4.0 == pytest.approx(300.0, abs=8.0)
    assert (ys.max() - ys.min() + 1) * 4.0 == pytest.approx(230.0, abs=8.0)


def test_iec_decay_between_frames():
    p = iec_body_phantom(Grid.centered((48, 72, 72), 5.0), 1000.0, 4.0, supersample=2, time_points_h=(0.0, 1.0))
    assert p.total_activity_bq(1) / p.total_activity_bq(0) == pytest.approx(0.8910, abs=5e-4)


def test_cylinder_volume_and_concentration():
    g = Grid.centered((56, 64, 64), 4.0)
    p = uniform_cylinder_phantom(g, diameter_mm=200.0, length_mm=180.0, concentration_bq_per_ml=2000.0)
    v = np.pi * 10.0 ** 2 * 18.0
    assert p.truth[0]["volume_ml"] == pytest.approx(v, rel=0.005)
    assert p.total_activity_bq(0) == pytest.approx(2000.0 * v, rel=0.005)
    assert p.activity_bq_per_ml[0, 28, 32, 32] == pytest.approx(2000.0)


def test_point_source_conserves_activity_and_centroid():
    g = Grid.centered((32, 32, 32), 4.0)
    pos = (3.3, -5.1, 10.7)
    p = point_source_phantom(g, activity_mbq=12.0, position_mm=pos, medium="water", medium_diameter_mm=100.0)
    a = p.activity_bq_per_ml[0]
    assert p.total_activity_bq(0) == pytest.approx(12.0e6, rel=1e-6)
    z, y, x = g.mesh_mm(np.float64)
    cen = [float((a * c).sum() / a.sum()) for c in (z, y, x)]
    assert np.allclose(cen, pos, atol=1e-3)
    assert p.density_g_cm3[16, 16, 16] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="position_mm"):
        point_source_phantom(g, 1.0, position_mm=(0.0, 0.0, 500.0))


def test_line_source_activity_per_length():
    g = Grid.centered((20, 32, 32), 5.0)
    p = line_source_phantom(g, activity_mbq_per_cm=2.0, position_yx_mm=(1.0, -2.0))
    assert p.total_activity_bq(0) == pytest.approx(2.0e6 * 10.0, rel=1e-6)   # 100 mm of line = 10 cm
    assert p.density_g_cm3.max() < 0.01                                         # in air


def test_calibration_bad_inputs():
    g = Grid.centered((16, 16, 16), 8.0)
    with pytest.raises(ConfigError, match="background_bq_per_ml"):
        iec_body_phantom(g, background_bq_per_ml=-1.0)
    with pytest.raises(ConfigError, match="sphere_to_background"):
        iec_body_phantom(g, sphere_to_background=0.5)
    with pytest.raises(ConfigError, match="diameter_mm"):
        uniform_cylinder_phantom(g, diameter_mm=-5.0)
    with pytest.raises(ConfigError, match="medium"):
        point_source_phantom(g, medium="lead")
