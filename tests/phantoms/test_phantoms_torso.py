"""Female torso anatomy: organ sizes against ICRP 89, tissue HU/densities, body contour.

ICRP Publication 89 (2002), reference adult female, organ masses (g): liver 1400, kidneys 275,
spleen 130, lungs 950 (with blood), heart wall 250, thyroid 17, breasts 500 (both). The analytic shapes
are not an atlas, so the ranges are loose (0.6-1.5 x reference).
"""
import numpy as np
import pytest

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.phantoms import body_radius_mm, torso_anatomy, torso_phantom, uniform_cylinder_phantom

ICRP89_FEMALE_G = {"liver": 1400.0, "kidneys": 275.0, "spleen": 130.0, "lungs": 950.0, "heart_wall": 250.0,
                   "thyroid": 17.0, "breasts": 500.0}
GROUPS = {"kidneys": ("kidney_cortex", "kidney_medulla"), "breasts": ("breast_adipose", "breast_gland")}


@pytest.fixture(scope="module")
def anatomy():
    return torso_anatomy(Grid.centered((128, 128, 128), 4.42), breast_density="C", seed=5)


def _mass_g(tv, names):
    m = tv.mask_of(*names)
    return float(tv.density_g_cm3[m].sum(dtype=np.float64) * tv.grid.voxel_volume_ml)


@pytest.mark.parametrize("organ", sorted(ICRP89_FEMALE_G))
def test_organ_masses_plausible_for_adult_woman(anatomy, organ):
    mass = _mass_g(anatomy.volume, GROUPS.get(organ, (organ,)))
    assert 0.6 * ICRP89_FEMALE_G[organ] <= mass <= 1.5 * ICRP89_FEMALE_G[organ], (organ, mass)


def test_tissue_ct_numbers_and_densities(anatomy):
    tv = anatomy.volume

    def med(arr, name):
        return float(np.median(arr[tv.mask_of(name)]))
    assert med(tv.ct_hu, "fat") == pytest.approx(-100.0)
    assert med(tv.ct_hu, "muscle") == pytest.approx(40.0)
    assert med(tv.ct_hu, "lungs") == pytest.approx(-750.0)
    assert med(tv.ct_hu, "spine_cortical") >= 700.0
    assert med(tv.density_g_cm3, "lungs") == pytest.approx(0.26)
    assert med(tv.density_g_cm3, "breast_gland") == pytest.approx(1.035)      # VICTRE glandular density
    assert med(tv.density_g_cm3, "breast_adipose") == pytest.approx(0.92)     # VICTRE adipose density
    assert med(tv.density_g_cm3, "skin") == pytest.approx(1.09)


def test_glandular_fraction_follows_density_category(anatomy):
    tv = anatomy.volume
    g = tv.mask_of("breast_gland").sum()
    a = tv.mask_of("breast_adipose").sum()
    assert g / (g + a) == pytest.approx(0.625, abs=0.04)     # BI-RADS C mid-point


def test_body_within_250mm_orbit_and_scales_with_weight():
    g = Grid.centered((40, 128, 128), 4.42)
    angles = np.arange(0, 360, 6)
    r70 = body_radius_mm(torso_phantom(g, time_points_h=(1.0,)), angles)
    r95 = body_radius_mm(torso_phantom(g, weight_kg=95.0, time_points_h=(1.0,)), angles)
    assert r70.max() < 250.0
    assert np.all(r95 >= r70 - 1e-6) and r95.mean() > r70.mean() + 5.0
    # lateral (90 deg, patient left) wider than antero-posterior (180 deg, posterior)
    assert r70[15] > r70[30]


def test_body_radius_of_cylinder_is_analytic():
    g = Grid.centered((8, 64, 64), 4.0)
    p = uniform_cylinder_phantom(g, diameter_mm=200.0, length_mm=20.0)
    r = body_radius_mm(p, [0.0, 45.0, 90.0, 200.0])
    assert np.all(r >= 100.0 - 1.0) and np.all(r <= 100.0 + 4.0 * np.sqrt(2))


def test_anatomy_is_deterministic_and_seeded():
    g = Grid.centered((24, 48, 48), 8.0)
    a = torso_anatomy(g, seed=3, ct_noise_hu=10.0)
    b = torso_anatomy(g, seed=3, ct_noise_hu=10.0)
    c = torso_anatomy(g, seed=4, ct_noise_hu=10.0)
    assert np.array_equal(a.volume.labels, b.volume.labels)
    assert np.array_equal(a.volume.ct_hu, b.volume.ct_hu)
    assert not np.array_equal(a.volume.ct_hu, c.volume.ct_hu)


def test_torso_bad_inputs():
    g = Grid.centered((8, 16, 16), 10.0)
    with pytest.raises(ConfigError, match="weight_kg"):
        torso_anatomy(g, weight_kg=-70.0)
    with pytest.raises(ConfigError, match="breast_density"):
        torso_anatomy(g, breast_density="E")
    with pytest.raises(ConfigError, match="breast_shape"):
        torso_anatomy(g, breast_shape="cone")


def test_body_radius_follows_projection_convention():
    # n(theta) = (x = sin t, y = -cos t): 0 deg anterior (-y), 90 deg patient left (+x)
    g = Grid.centered((4, 80, 80), 2.0)
    left = uniform_cylinder_phantom(g, diameter_mm=40.0, length_mm=8.0, center_mm=(0.0, 0.0, 50.0))
    r = body_radius_mm(left, [90.0, 270.0, 0.0])
    assert r[0] == pytest.approx(70.0, abs=1.5)       # 50 + 20 mm towards +x
    assert r[1] == pytest.approx(-30.0, abs=1.5)      # far side: the object does not reach the axis
    assert r[2] == pytest.approx(20.0, abs=1.5)
    front = uniform_cylinder_phantom(g, diameter_mm=40.0, length_mm=8.0, center_mm=(0.0, -50.0, 0.0))
    assert body_radius_mm(front, [0.0])[0] == pytest.approx(70.0, abs=1.5)
