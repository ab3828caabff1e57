"""Planar whole-body sweep: counts of a point in air against the camera's analytic sensitivity, geometry, seeds,
bad input."""
import math

import numpy as np
import pytest

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.core.radionuclide import TC99M
from her2sim.phantoms import point_source_phantom
from her2sim.sim.camera import Camera
from her2sim.sim.transport import MonteCarloSettings
from her2sim.sim.whole_body import WB_MATRICES, WholeBodyProtocol, geometric_mean, simulate_whole_body
from her2sim.sim.xsections import mass_attenuation_cm2_g

MC = MonteCarloSettings(n_histories=64, seed=1)
POS = (2.21, -20.0, 22.1)          # z, y, x (mm): anterior of the axis, toward the patient's left


@pytest.fixture(scope="module")
def point():
    return point_source_phantom(Grid.centered((20, 20, 20), 4.42), activity_mbq=10.0, position_mm=POS)


@pytest.mark.parametrize("speed", [8.0, 15.0])
def test_point_in_air_counts_equal_activity_x_sensitivity_x_dwell(point, speed):
    prot = WholeBodyProtocol(speed_cm_per_min=speed, matrix=(512, 128))
    scan = simulate_whole_body(point, 0, prot, settings=MC, noise_seed=5)
    # every point is under the 400 mm detector for L / s
    assert scan.dwell_s == pytest.approx(400.0 / (speed * 10.0 / 60.0))
    lam = TC99M.decay_constant_per_s
    t_enter = (scan.scan_range_z_mm[1] - POS[0]) / prot.speed_mm_per_s     # head-first bed motion
    seconds = (1.0 - math.exp(-lam * scan.dwell_s)) / lam * math.exp(-lam * t_enter)
    # Anger/Keller geometric efficiency x 0.862 photopeak efficiency x 0.8906 photons/decay (77.5 cps/MBq)
    expect = 10.0 * Camera().sensitivity_cps_per_mbq() * seconds
    for img in (scan.expected_anterior, scan.expected_posterior):
        assert float(img.sum()) == pytest.approx(expect, rel=0.02)
    for img in (scan.anterior, scan.posterior):      # Poisson totals within 5 sigma
        assert abs(int(img.sum()) - expect) < 5 * math.sqrt(expect)
    # sweep = (scan range + detector length) / speed
    rng_mm = scan.scan_range_z_mm[1] - scan.scan_range_z_mm[0]
    assert scan.seconds == pytest.approx((rng_mm + 400.0) / prot.speed_mm_per_s)


def test_point_lands_on_its_row_and_columns_and_posterior_is_mirrored(point):
    prot = WholeBodyProtocol(speed_cm_per_min=12.0, matrix=(1024, 256))
    scan = simulate_whole_body(point, 0, prot, settings=MC, noise_seed=1)
    assert scan.matrix == (1024, 256) and scan.pixel_mm == (2.21, 2.21) == (WB_MATRICES[(1024, 256)],) * 2
    a, p = scan.expected_anterior, scan.expected_posterior
    # centroid of each view: row at z = 2.21 mm, anterior column at u = +x, posterior at u = -x
    rows = np.arange(a.shape[0])
    cols = np.arange(a.shape[1])
    for img, u_sign in ((a, 1.0), (p, -1.0)):
        zc = np.interp((img.sum(axis=1) * rows).sum() / img.sum(), rows, scan.v_z_mm)
        uc = np.interp((img.sum(axis=0) * cols).sum() / img.sum(), cols, scan.u_mm)
        assert zc == pytest.approx(POS[0], abs=0.3)
        assert uc == pytest.approx(u_sign * POS[2], abs=0.3)
    gm = geometric_mean(a, p)
    assert np.unravel_index(np.argmax(gm), gm.shape) == np.unravel_index(np.argmax(a), a.shape)
    # body contour: each face 20 mm (clearance) beyond the outer corner of the active voxels toward it; the point at
    # y = -20 mm is split between the voxels centred at y = -24.31 and -19.89 mm (4.42 mm voxels)
    assert scan.radii_mm[0] == pytest.approx(24.31 + 2.21 + 20.0, abs=0.01)
    assert scan.radii_mm[1] == pytest.approx(-19.89 + 2.21 + 20.0, abs=0.01)
    # equal distances: equal resolution, equal peaks (within the 1 % of the voxel's trilinear split)
    assert a.max() == pytest.approx(p.max(), rel=0.03)


def test_conjugate_view_geometric_mean_is_independent_of_depth():
    # a point in a 220 mm water cylinder (axis along z): A P = (S dwell)^2 exp(-mu T) with T = 220 mm whatever the
    # depth (conjugate-view counting, e.g. Sorenson & Phelps); the primary GM must match it at two depths
    mu = mass_attenuation_cm2_g("water", 140.5) / 10.0          # 1/mm (water 1 g/cm3)
    prot = WholeBodyProtocol(speed_cm_per_min=15.0, matrix=(512, 128))
    lam = TC99M.decay_constant_per_s
    gms = []
    for y in (-66.3, 39.78):                                   # voxel centres: no trilinear split along y
        ph = point_source_phantom(Grid.centered((12, 56, 56), 4.42), activity_mbq=10.0, position_mm=(0.0, y, 0.0),
                                  medium="water", medium_length_mm=40.0)
        scan = simulate_whole_body(ph, 0, prot, settings=MC, noise_seed=1)
        a, p = float(scan.primary_anterior.sum()), float(scan.primary_posterior.sum())
        gms.append(math.sqrt(a * p))
        # the anterior/posterior ratio follows the depths: exp(-mu (d_ant - d_post)), d_ant - d_post = 2 y (the
        # anterior surface is at y = -110 mm)
        assert a / p == pytest.approx(math.exp(-mu * 2.0 * y), rel=0.02)
        t_enter = (scan.scan_range_z_mm[1] - 0.0) / prot.speed_mm_per_s
        seconds = (1.0 - math.exp(-lam * scan.dwell_s)) / lam * math.exp(-lam * t_enter)
        expect = 10.0 * Camera().sensitivity_cps_per_mbq() * seconds * math.exp(-mu * 220.0 / 2.0)
        assert gms[-1] == pytest.approx(expect, rel=0.03)
        # scatter adds counts: total > primary in both views
        assert scan.expected_anterior.sum() > a and scan.expected_posterior.sum() > p
    assert gms[0] == pytest.approx(gms[1], rel=0.01)


def test_noise_seed_reproducible(point):
    prot = WholeBodyProtocol(matrix=(512, 128))
    s1 = simulate_whole_body(point, 0, prot, settings=MC, noise_seed=7)
    s2 = simulate_whole_body(point, 0, prot, settings=MC, noise_seed=7)
    s3 = simulate_whole_body(point, 0, prot, settings=MC, noise_seed=8)
    assert np.array_equal(s1.anterior, s2.anterior) and np.array_equal(s1.posterior, s2.posterior)
    assert not np.array_equal(s1.anterior, s3.anterior)
    assert s1.anterior.dtype == np.int32 and s1.anterior.min() >= 0


def test_bad_protocol_refused_naming_field_and_range(point):
    with pytest.raises(ConfigError, match=r"whole_body\.speed_cm_per_min = 0 is outside the allowed range \[1, 60\]"):
        WholeBodyProtocol(speed_cm_per_min=0)
    with pytest.raises(ConfigError, match=r"whole_body\.speed_cm_per_min = -5 is outside the allowed range"):
        WholeBodyProtocol(speed_cm_per_min=-5)
    with pytest.raises(ConfigError, match=r"whole_body\.speed_mm_per_s = 0 is outside the allowed range"):
        WholeBodyProtocol.from_mm_per_s(0.0)
    assert WholeBodyProtocol.from_mm_per_s(2.5).speed_cm_per_min == pytest.approx(15.0)
    with pytest.raises(ConfigError, match=r"whole_body\.matrix = \(256, 256\) is not allowed; choose one of "
                                          r"\[\[1024, 256\], \[512, 128\]\]"):
        WholeBodyProtocol(matrix=(256, 256))
    with pytest.raises(ConfigError, match="noise_seed"):
        simulate_whole_body(point, 0, WholeBodyProtocol(matrix=(512, 128)), settings=MC, noise_seed=-1)
    with pytest.raises(ConfigError, match="frame = 3"):
        simulate_whole_body(point, 3, settings=MC)
    tall = point_source_phantom(Grid.centered((600, 8, 8), 4.42), activity_mbq=1.0)   # 2652 mm > 1024 x 2.21 mm
    with pytest.raises(ConfigError, match="whole_body.matrix has 1024"):
        simulate_whole_body(tall, 0, WholeBodyProtocol(), settings=MC)
    with pytest.raises(ConfigError, match="geometric_mean"):
        geometric_mean(np.zeros((4, 4)), np.zeros((4, 5)))
