"""Validation of OSEM, scatter, calibration and filters (her2sim.recon) on small analytic phantoms.

Projections are made with the recon projector itself (noise-free) or, for the point source,
analytically from the geometry convention and the camera PSF model, so that the
reconstruction is checked against numbers from outside the code.
"""
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import erf

from her2sim.core.containers import Projections
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry
from her2sim.recon import (SpectSystemMatrix, butterworth_filter, calibrate_image, dew_scatter, gaussian_filter_fwhm,
                           make_subsets, mean_decay_factor, osem, reconstruct, sensitivity_cps_per_bq, subset_order,
                           tew_scatter)
from her2sim.sim.camera import Camera

PEAK = EnergyWindow.centered("photopeak", 140.5, 0.20)
S_CPS_PER_BQ = 77.5e-6  # ~ NM670 LEHR planar sensitivity, camera_nm670.md (77 cps/MBq)
T_VIEW_S = 20.0
MU_WATER = 0.15  # 1/cm


# ----------------------------------------------------------------------------- helpers
def _cylinder_setup():
    g = Grid.centered((12, 48, 48), 5.0)
    geo = ProjectionGeometry.dual_head(n_views=60, radius_mm=200.0, shape_vu=(12, 48), pixel_mm=(5.0, 5.0))
    z, y, x = g.mesh_mm()
    cyl = np.broadcast_to((x ** 2 + y ** 2) <= 100.0 ** 2, g.shape).astype(float)  # 20 cm water cylinder
    return g, geo, cyl, MU_WATER * cyl


@pytest.fixture(scope="module")
def cylinder():
    g, geo, cyl, mu = _cylinder_setup()
    conc = 1000.0  # Bq/mL
    a = SpectSystemMatrix(g, geo, mu, psf=True)
    counts = a.forward(cyl * conc) * S_CPS_PER_BQ * T_VIEW_S * g.voxel_volume_ml
    proj = Projections(counts[None], (PEAK,), geo, meta={"time_per_view_s": T_VIEW_S, "scan_start_s": 3600.0})
    return g, geo, cyl, mu, conc, proj


def _central(g, frac_radius_mm=60.0):
    z, y, x = g.mesh_mm()
    return np.broadcast_to((x ** 2 + y ** 2) <= frac_radius_mm ** 2, g.shape) & (np.arange(g.shape[0]) >= 3)[:, None,
                                                                                   None] & (
        np.arange(g.shape[0]) < g.shape[0] - 3)[:, None, None]


def blurred_sphere_profile(r, radius, sigma):
    """Uniform sphere (value 1) convolved with an isotropic Gaussian, at distance r from its centre (closed form)."""
    r = np.maximum(np.asarray(r, float), 1e-9)
    a = (radius - r) / (math.sqrt(2) * sigma)
    b = (radius + r) / (math.sqrt(2) * sigma)
    return (0.5 * (erf(a) + erf(b))
            - sigma / (r * math.sqrt(2 * math.pi)) * (np.exp(-a ** 2) - np.exp(-b ** 2)))


def rc_mean_oracle(diameter_mm, fwhm_mm):
    """Mean of the blurred profile over the true sphere (numerical radial integral)."""
    radius = diameter_mm / 2
    r = np.linspace(0, radius, 4001)
    f = blurred_sphere_profile(r, radius, fwhm_mm / 2.3548)
    return float(np.trapezoid(f * 4 * np.pi * r ** 2, r) / (4 / 3 * np.pi * radius ** 3))


# ----------------------------------------------------------------------------- oracle
def test_rc_oracle_matches_validation_table():
    """RC_max / RC_mean from validation_targets.md (FWHM 10 and 15 mm)."""
    table = {10.0: {10: (0.29, 0.22), 17: (0.74, 0.45), 37: (1.00, 0.73)},
             15.0: {10: (0.11, 0.09), 22: (0.61, 0.38), 37: (0.96, 0.60)}}
    for fwhm, rows in table.items():
        for d, (rc_max, rc_mean) in rows.items():
            s = fwhm / 2.3548
            closed = (erf(d / 2 / (math.sqrt(2) * s)) - math.sqrt(2 / math.pi) * (d / 2 / s)
                      * math.exp(-(d / 2) ** 2 / (2 * s * s)))
            assert float(blurred_sphere_profile(0.0, d / 2, s)) == pytest.approx(closed, abs=1e-6)
            assert closed == pytest.approx(rc_max, abs=0.01)
            assert rc_mean_oracle(d, fwhm) == pytest.approx(rc_mean, abs=0.01)


# ----------------------------------------------------------------------------- quantitative accuracy
def test_uniform_cylinder_with_ac_is_calibrated_within_3_percent(cylinder):
    g, geo, cyl, mu, conc, proj = cylinder
    img = reconstruct(proj, mu, g, iterations=10, subsets=6, psf=True, calibration_cps_per_bq=S_CPS_PER_BQ,
                      decay_reference="acquisition_mean", progress=False)
    assert img.units == "Bq/mL"
    c = img.array[_central(g)]
    assert c.mean() == pytest.approx(conc, rel=0.03)
    assert np.all(np.abs(c / conc - 1.0) < 0.05)


def test_cylinder_calibration_recovers_sensitivity(cylinder):
    """S = sum(x) / (t A) from an uncalibrated cylinder reconstruction with known activity, then Bq/mL."""
    g, geo, cyl, mu, conc, proj = cylinder
    counts_img = reconstruct(proj, mu, g, iterations=6, subsets=6, psf=True, progress=False)
    assert counts_img.units == "counts"
    activity_bq = conc * float(cyl.sum()) * g.voxel_volume_ml
    s_est = sensitivity_cps_per_bq(counts_img, activity_bq, T_VIEW_S)
    assert s_est == pytest.approx(S_CPS_PER_BQ, rel=0.03)
    cal = calibrate_image(counts_img, s_est, T_VIEW_S, decay_reference="acquisition_mean")
    assert cal.units == "Bq/mL"
    assert cal.array[_central(g)].mean() == pytest.approx(conc, rel=0.03)


def test_decay_correction_to_injection(cylinder):
    """Scan 1 h after injection: Bq/mL at injection = mean during scan / decay (0.891 at 1 h, validation table)."""
    g, geo, cyl, mu, conc, proj = cylinder
    assert mean_decay_factor(3600.0, 0.0) == pytest.approx(0.891, abs=0.001)
    kw = dict(iterations=2, subsets=6, psf=False, calibration_cps_per_bq=S_CPS_PER_BQ, progress=False)
    mean_img = reconstruct(proj, mu, g, decay_reference="acquisition_mean", **kw)
    inj_img = reconstruct(proj, mu, g, decay_reference="injection", **kw)
    dur = geo.n_views / 2 * T_VIEW_S
    ratio = inj_img.array[_central(g)].mean() / mean_img.array[_central(g)].mean()
    lam = math.log(2) / (6.0067 * 3600)
    expected = lam * dur / (math.exp(-lam * 3600) * (1 - math.exp(-lam * dur)))
    assert ratio == pytest.approx(expected, rel=1e-5)
    assert inj_img.meta["decay_corrected_to"] == "injection"
    assert inj_img.meta["dead_time"] == "neglected"


def test_without_ac_the_centre_dips(cylinder):
    """Uncorrected centre ~ exp(-mu R) = exp(-0.15 x 10) = 0.22 of the truth (Chang), well below the rim."""
    g, geo, cyl, mu, conc, proj = cylinder
    img = reconstruct(proj, None, g, iterations=10, subsets=6, psf=True, attenuation_correction=False,
                      calibration_cps_per_bq=S_CPS_PER_BQ, decay_reference="acquisition_mean", progress=False)
    z, y, x = g.mesh_mm()
    r = np.sqrt(x ** 2 + y ** 2)[0]
    centre = img.array[3:9][:, r <= 10].mean() / conc
    rim = img.array[3:9][:, (r > 80) & (r < 95)].mean() / conc
    assert centre == pytest.approx(math.exp(-MU_WATER * 10.0), abs=0.05)
    assert centre < 0.6 * rim


def test_sphere_recovery_matches_gaussian_oracle():
    """IEC-like spheres 4:1 in water, pre-blurred to a known FWHM F = 10 mm (the achieved resolution):
    OSEM with AC + PSF recovers RC_mean of the Gaussian-blur oracle within +/-0.05, monotonic in size."""
    vs = 3.0
    g = Grid.centered((14, 64, 64), vs)
    geo = ProjectionGeometry.dual_head(n_views=40, radius_mm=150.0, shape_vu=(14, 64), pixel_mm=(vs, vs))
    z, y, x = g.mesh_mm()
    diameters = [37, 28, 22, 17, 13, 10]
    ring = 57.25  # NEMA IEC: centres on a 114.5 mm circle
    centres = [(0.0, ring * math.sin(math.radians(60 * i)), ring * math.cos(math.radians(60 * i))) for i in range(6)]
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    spheres = np.zeros(g.shape)
    for c, d in zip(centres, diameters):
        for a in sub:
            for b in sub:
                for e in sub:
                    spheres += ((z + a * vs - c[0]) ** 2 + (y + b * vs - c[1]) ** 2
                                + (x + e * vs - c[2]) ** 2) <= (d / 2) ** 2
    spheres /= sub.size ** 3
    body = np.broadcast_to((x ** 2 + y ** 2) <= 90.0 ** 2, g.shape).astype(float)
    fwhm = 10.0
    truth = ndimage.gaussian_filter(body + 3.0 * spheres, fwhm / 2.3548 / vs, mode="nearest")
    a = SpectSystemMatrix(g, geo, MU_WATER * body, psf=True)
    counts = a.forward(truth) * 100.0
    rec = osem(a, counts, iterations=20, subsets=5, progress=False)
    bkg = rec[:, ((x ** 2 + y ** 2) <= 20.0 ** 2)[0]].mean()
    rcs, oracle = [], []
    for c, d in zip(centres, diameters):
        rr = np.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
        m = rr <= d / 2
        rcs.append((rec[m].mean() / bkg - 1.0) / 3.0)
        oracle.append(float(blurred_sphere_profile(rr[m], d / 2, fwhm / 2.3548).mean()))
    assert bkg / 100.0 == pytest.approx(1.0, rel=0.03)
    assert all(r1 > r2 for r1, r2 in zip(rcs, rcs[1:]))
    assert np.all(np.abs(np.array(rcs) - np.array(oracle)) <= 0.05), (rcs, oracle)
    # the voxel-centre oracle agrees with the continuous one of the table for the big spheres
    assert oracle[0] == pytest.approx(rc_mean_oracle(37, fwhm), abs=0.02)


def _analytic_point_projections(geo, point_xyz, camera, total_per_view=1.0):
    """Pixel-integrated Gaussian blobs at u = (p - axis).t, z, with sigma(d) of the camera (no attenuation)."""
    u, zc, d = geo.project_point(*point_xyz)
    sig = camera.sigma_mm(d)
    nv, nu = geo.shape_vu
    dv, du = geo.pixel_mm
    ue = (np.arange(nu + 1) - nu / 2) * du
    ve = geo.axis_z_mm + (np.arange(nv + 1) - nv / 2) * dv
    out = np.zeros((geo.n_views, nv, nu))
    for k in range(geo.n_views):
        cu = np.diff(0.5 * erf((ue - u[k]) / (math.sqrt(2) * sig[k])))
        cv = np.diff(0.5 * erf((ve - zc[k]) / (math.sqrt(2) * sig[k])))
        out[k] = total_per_view * np.outer(cv, cu)
    return out


@pytest.mark.parametrize("p_xyz", [(30.0, -18.0, 6.0), (-21.3, 33.1, -4.9)])
def test_point_source_reconstructed_at_the_right_position(p_xyz):
    """Projections computed analytically from the geometry convention: OSEM peak centroid within 0.3 voxel
    (on a voxel centre and between voxels)."""
    vs = 4.0
    g = Grid.centered((12, 40, 40), vs)
    geo = ProjectionGeometry.dual_head(n_views=40, radius_mm=160.0, shape_vu=(12, 40), pixel_mm=(vs, vs))
    cam = Camera()
    counts = _analytic_point_projections(geo, p_xyz, cam, 1000.0)
    a = SpectSystemMatrix(g, geo, None, psf=True, camera=cam)
    rec = osem(a, counts, iterations=10, subsets=5, progress=False)
    iz, iy, ix = np.unravel_index(np.argmax(rec), rec.shape)
    blk = rec[iz - 1:iz + 2, iy - 1:iy + 2, ix - 1:ix + 2]
    zz, yy, xx = np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij")
    cen_idx = np.array([iz + (blk * zz).sum() / blk.sum(), iy + (blk * yy).sum() / blk.sum(),
                        ix + (blk * xx).sum() / blk.sum()])
    cen_world = g.index_to_world(cen_idx)
    truth = np.array([p_xyz[2], p_xyz[1], p_xyz[0]])
    assert np.all(np.abs(cen_world - truth) < 0.3 * vs), (cen_world, truth)
    # calibration from the point-source reconstruction: S = sum(x) / (t A)
    from her2sim.core.containers import Image
    s_est = sensitivity_cps_per_bq(Image(rec.astype(np.float32), g, "counts"), activity_bq=1000.0 / (
        S_CPS_PER_BQ * T_VIEW_S), time_per_view_s=T_VIEW_S)
    assert s_est == pytest.approx(S_CPS_PER_BQ, rel=0.03)


def test_mlem_preserves_total_counts():
    """Shepp & Vardi 1982: after an MLEM iteration sum_i sens_i x_i = sum_j y_j (no additive term)."""
    g, geo, cyl, mu = _cylinder_setup()
    a = SpectSystemMatrix(g, geo, mu, psf=False)
    rng = np.random.default_rng(3)
    y = rng.poisson(a.forward(cyl) * 5.0).astype(float)
    x = osem(a, y, iterations=1, subsets=1, progress=False)
    assert float((a.sensitivity() * x).sum()) == pytest.approx(float(y.sum()), rel=1e-9)


def test_additive_scatter_term_is_modelled(cylinder):
    """Data = A x + s with a known s: passing s recovers x; ignoring it overestimates."""
    g, geo, cyl, mu, conc, proj = cylinder
    prim = proj.counts[0]
    s = np.full(prim.shape, 0.3 * prim.mean())
    noisy = Projections((prim + s)[None], (PEAK,), geo, meta=proj.meta)
    kw = dict(iterations=8, subsets=6, psf=True, calibration_cps_per_bq=S_CPS_PER_BQ,
              decay_reference="acquisition_mean", progress=False)
    with_s = reconstruct(noisy, mu, g, scatter=s, **kw).array[_central(g)].mean()
    without = reconstruct(noisy, mu, g, scatter="none", **kw).array[_central(g)].mean()
    assert with_s == pytest.approx(conc, rel=0.03)
    assert without > 1.1 * conc


def test_reconstruct_with_dew_window(cylinder):
    """A scatter window holding s / (0.5 x 28.1 / 12) counts gives back the activity with scatter='dew'."""
    g, geo, cyl, mu, conc, proj = cylinder
    sc_win = EnergyWindow.centered("scatter", 120.0, 0.10)
    prim = proj.counts[0]
    s = 0.25 * ndimage.gaussian_filter(prim, (0, 3, 3))  # smooth scatter-like term
    k_eff = 0.5 * PEAK.width_kev / sc_win.width_kev
    both = Projections(np.stack([prim + s, s / k_eff]), (PEAK, sc_win), geo, meta=proj.meta)
    img = reconstruct(both, mu, g, iterations=8, subsets=6, psf=True, scatter="dew",
                      calibration_cps_per_bq=S_CPS_PER_BQ, decay_reference="acquisition_mean", progress=False)
    assert img.array[_central(g)].mean() == pytest.approx(conc, rel=0.03)
    assert img.meta["scatter"] == "dew"


def test_masked_pixels_are_ignored(cylinder):
    """Corrupted detector columns excluded by pixel_mask do not bias the image; unmasked they do."""
    g, geo, cyl, mu, conc, proj = cylinder
    bad = proj.counts[0].copy()
    bad[:, :, 20:23] *= 5.0  # a hot stripe of columns in every view
    mask = np.ones(bad.shape, bool)
    mask[:, :, 20:23] = False
    p = Projections(bad[None], (PEAK,), geo, meta=proj.meta)
    kw = dict(iterations=8, subsets=6, psf=True, calibration_cps_per_bq=S_CPS_PER_BQ,
              decay_reference="acquisition_mean", progress=False)
    masked = reconstruct(p, mu, g, pixel_mask=mask, **kw).array[_central(g)].mean()
    unmasked = reconstruct(p, mu, g, **kw).array[_central(g)].mean()
    assert masked == pytest.approx(conc, rel=0.03)
    assert unmasked > 1.1 * conc


# ----------------------------------------------------------------------------- scatter estimates
def _window_projections(windows, values):
    geo = ProjectionGeometry.dual_head(n_views=4, radius_mm=200.0, shape_vu=(2, 3), pixel_mm=(4.0, 4.0))
    counts = np.stack([np.full((4, 2, 3), v, float) for v in values])
    return Projections(counts, windows, geo)


def test_dew_estimate_jaszczak():
    """k = 0.5 x C(114-126 keV) x 28.1 keV / 12 keV (Jaszczak 1984, widths of the NM670 protocol)."""
    ws = (EnergyWindow.centered("photopeak", 140.5, 0.20), EnergyWindow.centered("scatter", 120.0, 0.10))
    p = _window_projections(ws, (100.0, 12.0))
    est = dew_scatter(p)
    assert est.shape == (4, 2, 3)
    assert np.allclose(est, 0.5 * 12.0 * 28.1 / 12.0)


def test_tew_estimate_ogawa():
    """(C_l / W_l + C_u / W_u) W_p / 2 with 3 keV side windows (Ogawa 1991)."""
    pk = EnergyWindow.centered("photopeak", 140.5, 0.20)
    ws = (EnergyWindow("tew_lower", pk.lower_kev - 3, pk.lower_kev), pk,
          EnergyWindow("tew_upper", pk.upper_kev, pk.upper_kev + 3))
    p = _window_projections(ws, (6.0, 100.0, 0.0))
    assert np.allclose(tew_scatter(p), (6.0 / 3.0 + 0.0) * 28.1 / 2.0)
    with pytest.raises(DataError, match="tew_upper"):
        tew_scatter(_window_projections(ws[:2], (6.0, 100.0)))


# ----------------------------------------------------------------------------- subsets and filters
def test_subsets_cover_views_once_with_separated_order():
    order = subset_order(10)
    assert sorted(order) == list(range(10))
    assert order[:2] == [0, 5]  # second subset opposite the first in subset-angle space
    groups = make_subsets(np.arange(120) * 3.0, 10)
    allv = np.concatenate(groups)
    assert sorted(allv.tolist()) == list(range(120))
    assert all(len(gr) == 12 for gr in groups)


def test_gaussian_post_filter_fwhm_and_butterworth_cutoff():
    g = Grid.centered((31, 31, 31), 2.0)
    img = np.zeros(g.shape)
    img[15, 15, 15] = 1.0
    out = gaussian_filter_fwhm(img, g, 8.0)
    prof = out[15, 15, :]
    xs = (np.arange(31) - 15) * 2.0
    fwhm = 2.3548 * math.sqrt(float((out.sum(axis=(0, 1)) * xs ** 2).sum() / out.sum()))
    assert fwhm == pytest.approx(8.0, rel=0.02)
    assert prof.sum() > 0
    # Butterworth: a cosine at the cut-off frequency keeps 1/sqrt(2) of its amplitude
    g2 = Grid.centered((24, 24, 96), 2.0)
    fc = 0.5  # cycles/cm -> period 20 mm = 10 voxels
    xx = g2.axis_mm(2)
    wave = np.broadcast_to(np.cos(2 * np.pi * fc / 10.0 * xx), g2.shape)
    filt = butterworth_filter(wave + 0.0, g2, fc, order=5)
    # zero padding attenuates the z/y directions (only 4 voxels): compare with the filtered constant
    const = butterworth_filter(np.ones(g2.shape), g2, fc, order=5)
    mid = slice(28, 68)
    amp = np.abs(filt[12, 12, mid]).max() / const[12, 12, mid].mean()
    assert amp == pytest.approx(1 / math.sqrt(2), rel=0.05)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors(cylinder):
    g, geo, cyl, mu, conc, proj = cylinder
    a = SpectSystemMatrix(g, geo, None, psf=False)
    y = proj.counts[0]
    with pytest.raises(ConfigError, match="subsets"):
        osem(a, y, 1, 0, progress=False)
    with pytest.raises(ConfigError, match="subsets"):
        osem(a, y, 1, geo.n_views + 1, progress=False)
    with pytest.raises(ConfigError, match="iterations"):
        osem(a, y, 0, 2, progress=False)
    bad = y.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        osem(a, bad, 1, 2, progress=False)
    bad[0, 0, 0] = -1.0
    with pytest.raises(DataError, match="negative"):
        osem(a, bad, 1, 2, progress=False)
    with pytest.raises(DataError, match="counts"):
        Projections((y - 1.0)[None], (PEAK,), geo)
    with pytest.raises(DataError, match="scatter"):
        osem(a, y, 1, 2, scatter=np.zeros((2, 2, 2)), progress=False)
    with pytest.raises(ConfigError, match="mu_map_per_cm"):
        reconstruct(proj, None, g, progress=False)
    with pytest.raises(ConfigError, match="scatter"):
        reconstruct(proj, mu, g, scatter="bogus", progress=False)
    with pytest.raises(DataError, match="scatter"):
        reconstruct(proj, mu, g, iterations=1, subsets=2, scatter="dew", progress=False)  # no scatter window
    no_time = Projections(proj.counts, proj.windows, geo, meta={})
    with pytest.raises(DataError, match="time_per_view_s"):
        reconstruct(no_time, mu, g, iterations=1, subsets=2, psf=False, calibration_cps_per_bq=S_CPS_PER_BQ,
                    progress=False)
    wrong = Grid.centered((12, 48, 48), 4.0)
    with pytest.raises(DataError, match="pixel_mm"):
        reconstruct(proj, None, wrong, attenuation_correction=False, progress=False)
    with pytest.raises(DataError, match="units"):
        calibrate_image(reconstruct(proj, mu, g, iterations=1, subsets=2, psf=False,
                                    calibration_cps_per_bq=S_CPS_PER_BQ, decay_reference="acquisition_mean",
                                    progress=False), S_CPS_PER_BQ, T_VIEW_S)


def test_mu_map_from_ct_water_and_air():
    """0 HU -> mu/rho water 0.1537 cm^2/g x 1 g/cm^3 at 140.5 keV (NIST, 1 %); -1000 HU -> ~0; resampled to SPECT grid."""
    from her2sim.recon import mu_map_from_ct
    ct_grid = Grid.centered((20, 40, 40), 2.0)
    spect_grid = Grid.centered((8, 16, 16), 4.42)
    z, y, x = ct_grid.mesh_mm()
    hu = np.where(np.broadcast_to(x < 0, ct_grid.shape), 0.0, -1000.0)
    mu = mu_map_from_ct(hu, ct_grid, spect_grid)
    assert mu.shape == spect_grid.shape
    assert mu[4, 8, 2] == pytest.approx(0.1537, rel=0.01)
    assert mu[4, 8, 13] == pytest.approx(0.0, abs=0.002)


def test_osem_callback_sees_every_subset_update_and_the_final_image():
    """``callback(iteration, subset, image)`` runs after each of iterations x subsets updates; its last image is
    the result (as PyTomography's per-iteration callbacks)."""
    from her2sim.core.errors import ConfigError
    g = Grid((4, 12, 12), (4.0, 4.0, 4.0), (-6.0, -22.0, -22.0))
    geo = ProjectionGeometry.dual_head(n_views=8, radius_mm=100.0, shape_vu=(4, 12), pixel_mm=(4.0, 4.0))
    a = SpectSystemMatrix(g, geo, None, psf=False)
    y = a.forward(np.ones(g.shape)) * 10.0
    seen = []
    x = osem(a, y, iterations=3, subsets=4, progress=False,
             callback=lambda it, k, img: seen.append((it, k, float(img.sum()), img.copy())))
    assert [(it, k) for it, k, _, _ in seen] == [(it, k) for it in range(3) for k in range(4)]
    assert np.array_equal(seen[-1][3], x)
    with pytest.raises(ConfigError, match="callback"):
        osem(a, y, iterations=1, subsets=1, callback=3)
