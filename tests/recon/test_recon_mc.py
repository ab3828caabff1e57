"""Reconstruction (her2sim.recon) of fast-mode Monte Carlo projections (her2sim.sim.transport).

Validation items of issue 5 that the analytic projections of ``test_recon_osem.py`` cannot cover:
projections with real scatter (orders 1-3+, energy windows) from the lead's simulator, a
projection geometry whose axis sits at the phantom grid's centre z, and the counts -> Bq/mL
calibration taken from a separately simulated point source in air with the same camera.

Small problems (8.84 mm voxels = 2 x the clinical 4.42 mm pixel, 32 views); the primary
component of the MC is deterministic (noise-free), so it serves as the scatter-free reference.
Numbers asserted come from outside the code: the true source activity / position / concentration
of the phantom, the NM670 planar sensitivity range 72-90 cps/MBq (validation_targets.md,
camera_nm670.md) and the comparison with the scatter-free (primary-only) reconstruction.

Measured with the fixtures of this module (the file runs in 25-45 s on 2 cores, plus a one-off ~45 s
when the MC tabulates its septal-penetration table into an empty cache):

* air calibration S = 77.38 cps/MBq from the recon vs 77.21 cps/MBq planar in the projections (77.01
  per MBq at scan start / mean decay 0.9974 over the 160 s scan).
* point in water (10 MBq, photopeak S/T 0.41), AC, air calibration, total / true: 0.998 from the
  primary component, 1.011 with the MC scatter as additive term, 1.222 with DEW, 1.592 without
  scatter correction; peak centroid within 0.34 mm (0.04 voxel) of the truth on every axis.
* uniform cylinder (5000 Bq/mL, S/T 0.22), central 60 % / truth: 1.003 (primary), 1.001 (MC scatter),
  1.035 (DEW), 1.421 (none). S from the cylinder's whole-image sum / S from the point in air: 0.998
  (MC scatter), 1.038 (DEW), 1.309 (none).
* IEC body (8:1, lung insert, PMMA walls): lung insert / background 0.186 (none), 0.168 (DEW), 0.197
  (primary only); insert / true background 0.264, 0.178, 0.196; RC_mean(37 mm) 0.900, 0.802, 0.765;
  background / truth 1.422, 1.061, 0.994.

(MC with the default septal-penetration tail of commit 7922dc0; the recon's Gaussian PSF does not
model that tail, which lowers RC_mean(37 mm) of the primary-only image by ~0.02.)

DEW (k = 0.5 x W_peak / W_scatter = 1.17 for 28.1 / 12 keV windows) under-estimates the photopeak
scatter of these MC projections: true photopeak scatter / scatter-window counts = 1.42 (point in
water) and 1.34 (cylinder), hence the residual +22 % / +3.5 %.
"""
from __future__ import annotations

import numpy as np
import pytest

from her2sim.analysis.pvc import measure_recovery_coefficients
from her2sim.core.containers import Projections
from her2sim.core.grid import Grid
from her2sim.phantoms import (iec_body_phantom, iec_sphere_centres_mm, point_source_phantom,
                              uniform_cylinder_phantom)
from her2sim.recon import (grid_for_geometry, mean_decay_factor, mu_map_from_ct, reconstruct,
                           sensitivity_cps_per_bq)
from her2sim.sim.camera import Camera, Protocol
from her2sim.sim.transport import MonteCarloSettings, simulate_projections

VS_MM = 8.84            # voxel = detector pixel (mm)
N_VIEWS = 32
T_VIEW_S = 10.0
DURATION_S = N_VIEWS / 2 * T_VIEW_S   # dual head: n/2 stops
POINT_MBQ = 10.0
SCATTER_COMPONENTS = ("scatter1", "scatter2", "scatter3plus")
RECON = dict(iterations=6, subsets=8, progress=False)


def _camera(matrix: int, radius_mm: float = 200.0) -> Camera:
    return Camera(protocol=Protocol(n_views=N_VIEWS, radius_mm=radius_mm, matrix=matrix, pixel_mm=VS_MM,
                                    time_per_view_s=T_VIEW_S))


def _true_scatter(projections: Projections, window: int = 0) -> np.ndarray:
    """Expected scatter counts (view, v, u) of one window from the MC components."""
    return sum(np.asarray(projections.components[k][window], np.float64) for k in SCATTER_COMPONENTS)


def _primary_only(projections: Projections) -> Projections:
    """Scatter-free projections: the deterministic primary component of every window."""
    return Projections(np.asarray(projections.components["primary"]), projections.windows, projections.geometry,
                       True, {}, None, dict(projections.meta))


def _recon_bq_per_ml(projections, mu, grid, camera, cps_per_bq, scatter="none"):
    return reconstruct(projections, mu, grid, camera, scatter=scatter, calibration_cps_per_bq=cps_per_bq,
                       decay_reference="scan_start", **RECON).array.astype(np.float64)


@pytest.fixture(scope="module")
def air_calibration():
    """S (counts/s per Bq) from the reconstruction of a 10 MBq point in air, 32^3 x 8.84 mm, and the MC's
    planar cps/MBq of the same projections."""
    g = Grid.centered((32, 32, 32), VS_MM)
    cam = _camera(32)
    ph = point_source_phantom(g, POINT_MBQ, (0.0, 0.0, 0.0), medium="air")
    res = simulate_projections(ph, cam, MonteCarloSettings(n_histories=2000, seed=4))
    img = reconstruct(res.projections, None, grid_for_geometry(res.projections.geometry), cam,
                      attenuation_correction=False, **RECON)
    s = sensitivity_cps_per_bq(img, POINT_MBQ * 1e6, T_VIEW_S, 0.0, DURATION_S)
    return s, res.summary()["photopeak"]["cps_per_mbq"]


def test_air_calibration_is_the_planar_sensitivity(air_calibration):
    """The recon of a point in air conserves counts: S = planar cps/MBq of the projections (which count the
    activity at scan start, so divide by the mean decay over the scan) within 1 %, inside the NM670 LEHR
    range 72-90 cps/MBq (validation_targets.md)."""
    s, planar_cps_per_mbq = air_calibration
    assert 72.0 <= s * 1e6 <= 90.0
    assert s * 1e6 == pytest.approx(planar_cps_per_mbq / mean_decay_factor(0.0, DURATION_S), rel=0.01)


# ----------------------------------------------------------------------------- 1. point source in water
@pytest.fixture(scope="module")
def point_in_water(air_calibration):
    """10 MBq point near the centre of the 22 x 16.6 cm water cylinder (SIMIND benchmark), on a grid whose
    centre is at z = +40 mm (not a voxel multiple), so the projection axis is off the world origin."""
    shape = (32, 32, 32)
    centre = np.array([40.0, 0.0, 0.0])
    g = Grid(shape, (VS_MM,) * 3, tuple(centre - 0.5 * (np.array(shape) - 1) * VS_MM))
    pos = (centre[0] + 2.9, -3.1, 2.3)     # off voxel centres and corners
    ph = point_source_phantom(g, POINT_MBQ, pos, medium="water", medium_center_mm=tuple(centre))
    cam = _camera(32)
    res = simulate_projections(ph, cam, MonteCarloSettings(n_histories=30_000, seed=3))
    p = res.projections
    rg = grid_for_geometry(p.geometry)
    mu = mu_map_from_ct(ph.ct_hu, g, rg)
    return p, rg, g, mu, cam, np.array(pos), air_calibration[0]


def test_point_geometry_axis_follows_the_phantom_grid(point_in_water):
    p, rg, g, *_ = point_in_water
    assert p.geometry.axis_z_mm == pytest.approx(40.0)
    assert np.allclose(rg.origin_mm, g.origin_mm) and rg.shape == g.shape


def _peak_centroid_mm(img: np.ndarray, grid: Grid, half: int = 2) -> np.ndarray:
    c = np.unravel_index(np.argmax(img), img.shape)
    sl = tuple(slice(max(i - half, 0), i + half + 1) for i in c)
    w = img[sl]
    mesh = np.broadcast_arrays(*grid.mesh_mm(np.float64))
    return np.array([(m[sl] * w).sum() / w.sum() for m in mesh])


@pytest.mark.parametrize("scatter", ["none", "dew"])
def test_point_in_water_centroid_is_sub_voxel(point_in_water, scatter):
    p, rg, _, mu, cam, pos, s = point_in_water
    img = _recon_bq_per_ml(p, mu, rg, cam, s, scatter)
    err = _peak_centroid_mm(img, rg) - pos
    assert np.all(np.abs(err) < 0.25 * VS_MM), err


def test_point_in_water_total_activity(point_in_water):
    """Total activity (sum of Bq/mL x voxel mL) after AC and the air calibration: within 5 % of 10 MBq when
    scatter is absent (primary component) or modelled exactly (MC scatter as the additive OSEM term).
    DEW removes most but not all of the scatter excess, which without correction is > 40 %."""
    p, rg, _, mu, cam, pos, s = point_in_water
    vml = rg.voxel_volume_ml
    true_bq = POINT_MBQ * 1e6
    prim = _recon_bq_per_ml(_primary_only(p), mu, rg, cam, s).sum() * vml / true_bq
    exact = _recon_bq_per_ml(p, mu, rg, cam, s, _true_scatter(p)).sum() * vml / true_bq
    dew = _recon_bq_per_ml(p, mu, rg, cam, s, "dew").sum() * vml / true_bq
    none = _recon_bq_per_ml(p, mu, rg, cam, s, "none").sum() * vml / true_bq
    assert prim == pytest.approx(1.0, abs=0.05)
    assert exact == pytest.approx(1.0, abs=0.05)
    assert none > 1.40
    assert 1.0 < dew < none
    assert dew - exact < 0.5 * (none - exact)


def _point_phantom_ct(g):
    centre = np.array([40.0, 0.0, 0.0])
    return point_source_phantom(g, POINT_MBQ, (centre[0] + 2.9, -3.1, 2.3), medium="water",
                                medium_center_mm=tuple(centre)).ct_hu


def test_mc_scatter_estimate_matches_the_true_scatter(point_in_water):
    """The Monte Carlo scatter of the DEW reconstruction, simulated through the CT and scaled to the measured
    photopeak, carries the true photopeak scatter total (MC components) within 5 %, pixel by pixel within 15 %
    where the scatter is above half its maximum; the same seed gives the same estimate."""
    from her2sim.recon.mc_scatter import monte_carlo_scatter

    p, rg, g, mu, cam, pos, s = point_in_water
    ct = _point_phantom_ct(g)
    first = _recon_bq_per_ml(p, mu, rg, cam, s, "dew")
    est = monte_carlo_scatter(p, first, rg, ct, g, cam, n_histories=30_000, seed=5)
    true = _true_scatter(p)
    assert est.sum() / true.sum() == pytest.approx(1.0, abs=0.05)
    hot = true > 0.5 * true.max()
    assert np.median(np.abs(est[hot] / true[hot] - 1.0)) < 0.15
    again = monte_carlo_scatter(p, first, rg, ct, g, cam, n_histories=30_000, seed=5)
    assert np.array_equal(est, again)


def test_mc_scatter_correction_recovers_total_activity(point_in_water):
    """OSEM with the Monte Carlo scatter estimate: total activity within 5 % of 10 MBq (DEW: > 1.15)."""
    from her2sim.recon import MonteCarloScatter, reconstruct

    p, rg, g, mu, cam, pos, s = point_in_water
    img, est = reconstruct(p, mu, rg, cam, scatter="mc", return_scatter=True,
                           mc_scatter=MonteCarloScatter(_point_phantom_ct(g), g, n_histories=30_000, seed=5, first="dew"),
                           calibration_cps_per_bq=s, decay_reference="scan_start", **RECON)
    assert est.shape == p.counts.shape[1:] and est.sum() > 0
    total = img.array.astype(np.float64).sum() * rg.voxel_volume_ml / (POINT_MBQ * 1e6)
    dew = _recon_bq_per_ml(p, mu, rg, cam, s, "dew").sum() * rg.voxel_volume_ml / (POINT_MBQ * 1e6)
    assert total == pytest.approx(1.0, abs=0.05)
    assert dew > 1.15
    assert img.meta["scatter"] == "mc" and img.meta["scatter_first"] == "dew"


def test_mc_scatter_settings_are_checked(point_in_water):
    from her2sim.core.errors import ConfigError, Her2simError
    from her2sim.recon import MonteCarloScatter, reconstruct

    p, rg, g, mu, cam, pos, s = point_in_water
    ct = _point_phantom_ct(g)
    with pytest.raises(ConfigError, match="needs mc_scatter"):
        reconstruct(p, mu, rg, cam, scatter="mc", **RECON)
    with pytest.raises(ConfigError, match="only with scatter = 'mc'"):
        reconstruct(p, mu, rg, cam, scatter="dew", mc_scatter=MonteCarloScatter(ct, g), **RECON)
    with pytest.raises(ConfigError, match="mc_scatter.first"):
        MonteCarloScatter(ct, g, first="mc")
    with pytest.raises(Her2simError, match="mc_scatter.updates"):
        MonteCarloScatter(ct, g, updates=9)
    assert MonteCarloScatter(ct, g).first_method(p) == ("dew" if "scatter" in [w.name for w in p.windows] else "none")


def test_mc_scatter_bad_input_names_the_field(point_in_water):
    from her2sim.core.errors import DataError, Her2simError
    from her2sim.recon.mc_scatter import monte_carlo_scatter

    p, rg, g, mu, cam, pos, s = point_in_water
    ct = _point_phantom_ct(g)
    with pytest.raises(DataError, match="window = 'nope'"):
        monte_carlo_scatter(p, np.ones(rg.shape), rg, ct, g, cam, window="nope")
    with pytest.raises(DataError, match="activity_bq_per_ml is zero everywhere inside the body"):
        monte_carlo_scatter(p, np.zeros(rg.shape), rg, ct, g, cam)
    with pytest.raises(Her2simError, match="n_histories"):
        monte_carlo_scatter(p, np.ones(rg.shape), rg, ct, g, cam, n_histories=10)
    with pytest.raises(DataError, match="activity_bq_per_ml"):
        monte_carlo_scatter(p, np.ones((3, 3, 3)), rg, ct, g, cam)


# ----------------------------------------------------------------------------- 2. uniform cylinder
@pytest.fixture(scope="module")
def cylinder(air_calibration):
    g = Grid.centered((32, 32, 32), VS_MM)
    conc = 5000.0
    ph = uniform_cylinder_phantom(g, 216.0, 186.0, conc)   # Jaszczak flangeless interior
    cam = _camera(32)
    res = simulate_projections(ph, cam, MonteCarloSettings(n_histories=25_000, seed=5))
    z, y, x = np.broadcast_arrays(*g.mesh_mm(np.float64))
    central = (np.hypot(x, y) <= 0.6 * 108.0) & (np.abs(z) <= 0.6 * 93.0)   # central 60 % of radius and length
    return res.projections, g, mu_map_from_ct(ph.ct_hu, g, g), cam, central, conc, air_calibration[0]


def test_cylinder_central_concentration(cylinder):
    """Central 60 %: within 2 % of 5000 Bq/mL with the exact scatter term, within 6 % with DEW, and > 20 %
    too high without scatter correction (scatter counts reconstructed as activity)."""
    p, g, mu, cam, central, conc, s = cylinder
    exact = _recon_bq_per_ml(p, mu, g, cam, s, _true_scatter(p))[central].mean() / conc
    dew = _recon_bq_per_ml(p, mu, g, cam, s, "dew")[central].mean() / conc
    none = _recon_bq_per_ml(p, mu, g, cam, s, "none")[central].mean() / conc
    prim = _recon_bq_per_ml(_primary_only(p), mu, g, cam, s)[central].mean() / conc
    assert prim == pytest.approx(1.0, abs=0.02)
    assert exact == pytest.approx(1.0, abs=0.02)
    assert dew == pytest.approx(1.0, abs=0.06)
    assert none > 1.20
    assert abs(dew - 1.0) < 0.25 * abs(none - 1.0)


def test_cylinder_calibration_matches_point_in_air(cylinder):
    """S from the whole-image sum of the cylinder reconstruction (known 5000 Bq/mL x volume, the clinical
    calibration): equal to the point-in-air S within 2 % when the scatter is modelled exactly, within 6 % with
    DEW (its residual scatter is absorbed into S), > 20 % high without scatter correction."""
    p, g, mu, cam, central, conc, s_air = cylinder
    act_bq = conc * float(_cylinder_fraction_sum(g)) * g.voxel_volume_ml
    ratio = {}
    for name, sc in (("exact", _true_scatter(p)), ("dew", "dew"), ("none", "none")):
        img = reconstruct(p, mu, g, cam, scatter=sc, **RECON)
        ratio[name] = sensitivity_cps_per_bq(img, act_bq, T_VIEW_S, 0.0, DURATION_S) / s_air
    assert ratio["exact"] == pytest.approx(1.0, abs=0.02)
    assert ratio["dew"] == pytest.approx(1.0, abs=0.06)
    assert ratio["none"] > 1.20


def _cylinder_fraction_sum(g: Grid) -> float:
    """Water volume of the 216 x 186 mm cylinder on ``g`` in voxels (partial-volume fractions)."""
    return float(uniform_cylinder_phantom(g, 216.0, 186.0, 1.0).activity_bq_per_ml[0].sum(dtype=np.float64))


# ----------------------------------------------------------------------------- 3. IEC body phantom
@pytest.fixture(scope="module")
def iec(air_calibration):
    g = Grid.centered((32, 40, 40), VS_MM)
    bg = 5000.0
    ratio = 8.0
    ph = iec_body_phantom(g, bg, ratio, walls=True, lung_insert=True, supersample=3)
    cam = _camera(40, radius_mm=220.0)
    res = simulate_projections(ph, cam, MonteCarloSettings(n_histories=25_000, seed=6))
    p = res.projections
    mu = mu_map_from_ct(ph.ct_hu, g, g)
    spheres = iec_sphere_centres_mm()
    z, y, x = np.broadcast_arrays(*g.mesh_mm(np.float64))
    zs = spheres[0]["centre_mm"][0]
    r = np.hypot(x, y)
    lung = (r <= 15.0) & (np.abs(z - zs) <= 40.0)        # 30 mm ROI inside the 42 mm insert (NEMA NU 2)
    far = np.ones(g.shape, bool)
    for sp in spheres:
        c = sp["centre_mm"]
        far &= np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) > sp["radius_mm"] + 20.0
    bkg = far & (r > 45.0) & (r < 110.0) & (np.abs(z - zs) <= 30.0) & (y < 60.0)
    big = spheres[3:]   # 22, 28, 37 mm: the smaller ones have no voxel >= half inside at 8.84 mm
    out = {}
    for name, proj, sc in (("none", p, "none"), ("dew", p, "dew"), ("primary", _primary_only(p), "none")):
        img = _recon_bq_per_ml(proj, mu, g, cam, air_calibration[0], sc)
        rc = measure_recovery_coefficients(img, g, [sp["centre_mm"] for sp in big], [sp["diameter_mm"] for sp in big],
                                           bg * ratio)
        out[name] = {"lung_over_bkg": img[lung].mean() / img[bkg].mean(), "lung_over_true": img[lung].mean() / bg,
                     "bkg_over_true": img[bkg].mean() / bg, "rc37": float(rc["rc_mean"][-1])}
    img = reconstruct(_primary_only(p), mu, g, cam, scatter="none", calibration_cps_per_bq=air_calibration[0],
                      decay_reference="scan_start", penetration=True, **RECON).array.astype(np.float64)
    rc = measure_recovery_coefficients(img, g, [sp["centre_mm"] for sp in big], [sp["diameter_mm"] for sp in big],
                                       bg * ratio)
    out["primary_pen"] = {"rc": [float(v) for v in rc["rc_mean"]], "bkg_over_true": img[bkg].mean() / bg}
    rc = measure_recovery_coefficients(_recon_bq_per_ml(_primary_only(p), mu, g, cam, air_calibration[0]), g,
                                       [sp["centre_mm"] for sp in big], [sp["diameter_mm"] for sp in big], bg * ratio)
    out["primary"]["rc"] = [float(v) for v in rc["rc_mean"]]
    return out


def test_iec_primary_only_background_is_calibrated(iec):
    """Scatter-free projections with AC (lung and PMMA in the mu map): background within 3 % of 5000 Bq/mL."""
    assert iec["primary"]["bkg_over_true"] == pytest.approx(1.0, abs=0.03)


def test_iec_dew_reduces_lung_residual(iec):
    """DEW lowers the lung-insert residual (insert / background) below no correction and brings the absolute
    insert value (/ true background) closer to the scatter-free reconstruction."""
    none, dew, prim = iec["none"], iec["dew"], iec["primary"]
    assert dew["lung_over_bkg"] < none["lung_over_bkg"]
    assert abs(dew["lung_over_true"] - prim["lung_over_true"]) < 0.5 * abs(none["lung_over_true"]
                                                                           - prim["lung_over_true"])
    assert none["bkg_over_true"] > 1.2 > dew["bkg_over_true"]


def test_iec_modelling_the_penetration_tail_recovers_the_counts_it_spreads(iec):
    """The Monte Carlo's response has a septal-penetration tail (6.4 % of photopeak counts, about twice the
    core width); modelling it in the recon (penetration=True) puts those counts back into the spheres: RC of
    the 22 / 28 / 37 mm spheres rises by 0.003-0.04 each (bounded by the tail's 6.4 %), background unchanged
    within 1 %."""
    base, pen = iec["primary"], iec["primary_pen"]
    gains = np.array(pen["rc"]) - np.array(base["rc"])
    assert np.all(gains > 0.003) and np.all(gains < 0.04), gains
    assert pen["bkg_over_true"] == pytest.approx(base["bkg_over_true"], rel=0.01)


def test_iec_dew_brings_37mm_rc_towards_scatter_free(iec):
    none, dew, prim = iec["none"], iec["dew"], iec["primary"]
    assert abs(dew["rc37"] - prim["rc37"]) < 0.5 * abs(none["rc37"] - prim["rc37"])
    assert none["rc37"] > prim["rc37"]
