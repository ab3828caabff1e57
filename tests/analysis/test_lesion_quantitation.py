"""Lesion quantitation end to end: conservative resampling, lesion truth on the recon grid, VOIs that keep
out of neighbouring organs, PVC with organ regions. Oracles are analytic: uniform volumes, exact totals,
known region values blurred by a known Gaussian, the blurred-sphere recovery formula."""
import numpy as np
import pytest

from her2sim.analysis.lesion_table import lesion_rows
from her2sim.analysis.lesion_truth import (host_labels, lesions_on_grid, margin_allowed, search_region)
from her2sim.analysis.pvc import analytic_rc_mean, fit_effective_fwhm_mm, gaussian_blur
from her2sim.analysis.pvc_regions import RegionModel
from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid, resample
from her2sim.phantoms.shapes import sphere_fraction


# ----------------------------------------------------------------------------- resampling
@pytest.mark.parametrize("src_shape,src_mm,dst_shape,dst_mm", [
    ((16, 20, 20), 8.84, (32, 40, 40), 4.42),     # up
    ((32, 40, 40), 4.42, (16, 20, 20), 8.84),     # down (volume-weighted)
    ((15, 21, 19), 4.0, (20, 28, 25), 3.0),       # up, non-integer ratio
    ((20, 28, 25), 3.0, (12, 17, 15), 5.0),       # down, non-integer ratio
])
def test_uniform_volume_stays_uniform_to_the_edge(src_shape, src_mm, dst_shape, dst_mm):
    src, dst = Grid.centered(src_shape, src_mm), Grid.centered(dst_shape, dst_mm)
    out = resample(np.full(src.shape, 7.0, np.float32), src, dst, order=1)
    assert out.min() == pytest.approx(7.0, rel=1e-6) and out.max() == pytest.approx(7.0, rel=1e-6)
    lab = resample(np.full(src.shape, 3, np.int16), src, dst, order=0)
    assert lab.dtype == np.int16 and np.all(lab == 3)


@pytest.mark.parametrize("factor", [2, 3])
def test_coarsening_conserves_total_activity(factor):
    rng = np.random.default_rng(4)
    src = Grid.centered((24, 30, 30), 2.0)
    dst = Grid.centered((24 // factor, 30 // factor, 30 // factor), 2.0 * factor)
    act = rng.gamma(2.0, 1.0, src.shape).astype(np.float32)
    out = resample(act, src, dst, order=1)
    total_src = act.sum(dtype=np.float64) * src.voxel_volume_ml
    assert out.sum(dtype=np.float64) * dst.voxel_volume_ml == pytest.approx(total_src, rel=5e-3)


def test_refining_conserves_total_activity_of_smooth_volume():
    src = Grid.centered((16, 16, 16), 8.0)
    dst = Grid.centered((32, 32, 32), 4.0)
    z, y, x = src.mesh_mm(np.float64)
    act = 10.0 + 0.05 * x + 0.02 * z + 0.0 * y
    out = resample(act, src, dst, order=1)
    assert out.sum() * dst.voxel_volume_ml == pytest.approx(act.sum() * src.voxel_volume_ml, rel=5e-3)


def test_lesion_in_the_first_slice_survives_both_ways():
    fine = Grid.centered((16, 20, 20), 4.42)
    coarse = Grid.centered((8, 10, 10), 8.84)
    act = np.zeros(fine.shape, np.float32)
    act[0, 9:11, 9:11] = 100.0           # a lesion in the outermost slice of the fine grid
    lab = (act > 0).astype(np.int16)
    down = resample(act, fine, coarse, order=1)
    assert down.sum() * coarse.voxel_volume_ml == pytest.approx(act.sum() * fine.voxel_volume_ml, rel=1e-6)
    les = lesions_on_grid(coarse, fine, (act > 0).astype(np.float32), lab, act[None] / 100.0,
                          [{"id": 1, "type": "primary", "in_fov": True}], min_voxels=0.1)[1]
    assert les.voi[0].any() and les.reason is None       # the lesion keeps a VOI in the first slice
    block = np.zeros(fine.shape, np.int16)
    block[:5] = 2                                          # 5 fine slices = 2.5 coarse slices
    kept = int((resample(block, fine, coarse, order=0) == 2).sum(axis=(1, 2)).astype(bool).sum())
    assert abs(kept - 2.5) <= 1.0                          # label volume within one voxel layer
    act_c = np.zeros(coarse.shape, np.float32)
    act_c[0, 4:6, 4:6] = 50.0
    up = resample(act_c, coarse, fine, order=1)
    assert up[0].max() == pytest.approx(50.0)   # the outer half-voxel keeps the edge value, not 0


def test_outside_the_source_extent_is_cval():
    src = Grid.centered((4, 4, 4), 10.0)
    dst = Grid((4, 4, 4), (10.0, 10.0, 10.0), (100.0, 0.0, 0.0))
    assert np.all(resample(np.ones(src.shape), src, dst, order=1, cval=-5.0) == -5.0)


# ----------------------------------------------------------------------------- lesion truth on a grid
def _sphere_phantom(grid, centre, diameter, uptake, host_value=6.0):
    """(fraction, owner, own_suv (1 frame), labels, label_names, suv) of one sphere in a 'liver' block."""
    f = sphere_fraction(grid, centre, diameter / 2.0, 5).astype(np.float32)
    owner = np.where(f > 0, 1, 0).astype(np.int16)
    own = (f * uptake)[None].astype(np.float32)
    names = {0: "background", 1: "fat", 14: "liver", 28: "lesion"}
    z, y, x = grid.mesh_mm(np.float64)
    labels = np.where(np.broadcast_to(x, grid.shape) > 0, 14, 1).astype(np.int16)
    suv = np.where(labels == 14, host_value, 0.3) * (1 - f) + own[0]
    labels[f >= 0.5] = 28
    return f, owner, own, labels, names, suv


def test_lesion_truth_on_a_coarser_grid_keeps_volume_and_own_uptake():
    fine = Grid.centered((40, 40, 40), 2.0)
    coarse = Grid.centered((20, 20, 20), 4.0)
    f, owner, own, *_ = _sphere_phantom(fine, (0.0, 0.0, 0.0), 24.0, 2.0)
    truth = [{"id": 1, "type": "liver", "in_fov": True}]
    les = lesions_on_grid(coarse, fine, f, owner, own, truth)[1]
    nominal_ml = 4.0 / 3.0 * np.pi * 12.0 ** 3 / 1000.0
    assert les.reason is None
    assert les.volume_ml == pytest.approx(nominal_ml, rel=0.02)
    mean_pv, max_pv = les.true_pv(0)
    assert max_pv == pytest.approx(2.0, rel=1e-4)        # interior voxels hold only the lesion
    assert 1.5 < mean_pv < 2.0                            # edge voxels of the VOI are part lesion
    assert les.own_suv[0].sum() * coarse.voxel_volume_ml == pytest.approx(2.0 * nominal_ml, rel=0.02)


def test_unmeasured_reasons():
    g = Grid.centered((20, 20, 20), 4.0)
    f, owner, own, *_ = _sphere_phantom(g, (0.0, 0.0, 0.0), 4.0, 2.0)   # 0.03 mL: below one 0.064 mL voxel
    truth = [{"id": 1, "type": "primary", "in_fov": True}, {"id": 2, "type": "brain", "in_fov": False},
             {"id": 3, "type": "inflammation", "in_fov": True}]
    out = lesions_on_grid(g, g, f, owner, own, truth)
    assert out[1].reason == "below_n_voxels" and out[2].reason == "outside_phantom" and 3 not in out
    far = Grid((10, 10, 10), (4.0, 4.0, 4.0), (500.0, 0.0, 0.0))
    big = _sphere_phantom(g, (0.0, 0.0, 0.0), 20.0, 2.0)
    assert lesions_on_grid(far, g, *big[:3], truth[:1])[1].reason == "outside_camera_fov"
    with pytest.raises(ConfigError, match="min_voxels"):
        lesions_on_grid(g, g, f, owner, own, truth, min_voxels=0.0)


def test_liver_metastasis_suvmax_does_not_read_the_liver():
    """A cold lesion (uptake 1) in liver (SUV 6): the margin may not enter the liver, so SUVmax is the lesion's."""
    g = Grid.centered((24, 24, 24), 4.0)
    f, owner, own, labels, names, suv = _sphere_phantom(g, (0.0, 0.0, 24.0), 20.0, 1.0)
    truth = [{"id": 1, "type": "liver", "in_fov": True, "her2_positive": False, "ihc": "1+",
              "suv_intrinsic_mean": [1.0], "diameter_mm": 20.0}]
    les = lesions_on_grid(g, g, f, owner, own, truth)
    host = host_labels(labels, names)
    assert not np.any(host == 28) and host[f >= 0.5].max() == 14
    allowed = margin_allowed(host, names)
    row = lesion_rows(suv, g, les, truth, "P1", margin_mm=4.0, allowed=allowed)[0]
    # SUVmax comes from the lesion's own VOI (its edge voxels are at least half lesion), not from the liver
    assert row["measured"] and row["suvmax"] == pytest.approx(float(suv[les[1].voi].max()))
    assert row["suvmax"] < 0.5 * (1.0 + 6.0)
    row_open = lesion_rows(suv, g, les, truth, "P1", margin_mm=4.0)[0]
    assert row_open["suvmax"] > 5.0                        # a margin that may enter the liver reads the liver
    assert row["true_suvmax_pv"] == pytest.approx(1.0, rel=1e-3)
    search = search_region(les[1].voi, g.spacing_mm, 4.0, allowed)
    assert not np.any(search & (host == 14) & ~les[1].voi)


def test_every_truth_lesion_has_a_row_and_bad_voi_is_refused():
    g = Grid.centered((20, 20, 20), 4.0)
    f, owner, own, labels, names, suv = _sphere_phantom(g, (0.0, 0.0, -20.0), 16.0, 3.0)
    truth = [{"id": 1, "type": "primary", "in_fov": True, "her2_positive": True, "ihc": "3+",
              "suv_intrinsic_mean": [3.0], "diameter_mm": 16.0},
             {"id": 2, "type": "brain", "in_fov": False, "her2_positive": True, "ihc": "3+",
              "suv_intrinsic_mean": [None], "diameter_mm": 15.0}]
    les = lesions_on_grid(g, g, f, owner, own, truth)
    rows = lesion_rows(suv, g, les, truth, "P1", voi="threshold", margin_mm=4.0)
    assert [r["measured"] for r in rows] == [True, False]
    assert rows[1]["unmeasured_reason"] == "outside_phantom" and rows[1]["suvmax"] is None
    assert rows[0]["voi"] == "threshold"
    with pytest.raises(ConfigError, match="analysis.voi"):
        lesion_rows(suv, g, les, truth, "P1", voi="sphere")
    with pytest.raises(ConfigError, match="ct_hu"):
        lesion_rows(suv, g, les, truth, "P1", voi="ct")


# ----------------------------------------------------------------------------- PVC with anatomy
def _regions_case(fwhm):
    g = Grid.centered((32, 32, 32), 4.0)
    z, y, x = (np.broadcast_to(a, g.shape) for a in g.mesh_mm(np.float64))
    organs = np.where(x > 10, 14, np.where(x < -30, 21, 1)).astype(np.int32)   # liver | fat | marrow
    organs[(np.abs(z) > 50) & (organs == 1)] = 0                               # air at the ends
    values = {0: 0.0, 1: 0.3, 14: 6.0, 21: 2.5}
    f1 = sphere_fraction(g, (0.0, 0.0, 26.0), 9.0, 5)           # liver metastasis, 18 mm, uptake 1.2
    f2 = sphere_fraction(g, (0.0, 0.0, -10.0), 8.0, 5)          # lesion in fat, 16 mm, uptake 3.0
    truth_img = sum(np.where(organs == k, v, 0.0) for k, v in values.items()) * (1 - f1 - f2) + 1.2 * f1 + 3.0 * f2
    img = gaussian_blur(truth_img, fwhm, g)
    model = RegionModel(organs, {1: f1, 2: f2}, {1: f1 >= 0.5, 2: f2 >= 0.5})
    return g, img, model


def test_gtm_with_organ_regions_recovers_the_true_values():
    g, img, model = _regions_case(10.0)
    c = model.gtm(img, 10.0, g.spacing_mm)
    assert model.lesion_value(c, 1) == pytest.approx(1.2, rel=1e-6)
    assert model.lesion_value(c, 2) == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("method", ["rbv", "iterative_yang"])
def test_voxelwise_methods_with_organ_regions_recover_the_lesions(method):
    g, img, model = _regions_case(10.0)
    uncorrected = model.fit(img)
    x, c = getattr(model, method)(img, 10.0, g.spacing_mm)
    for lid, true in ((1, 1.2), (2, 3.0)):
        err = abs(model.lesion_value(c, lid) - true)
        assert err < 0.02 * true + 0.02
        assert err < abs(model.lesion_value(uncorrected, lid) - true)


def test_lumped_background_gtm_is_what_fails_for_a_liver_metastasis():
    """The old two-region model (lesion vs everything else) overestimates a cold liver lesion; organs fix it."""
    g, img, model = _regions_case(10.0)
    lumped = RegionModel(np.where(model.organ_labels > 0, 1, 0).astype(np.int32), model.lesion_fractions,
                         model.lesion_vois)
    c_l = lumped.gtm(img, 10.0, g.spacing_mm)
    assert lumped.lesion_value(c_l, 1) > 1.2 * 1.5


def test_effective_fwhm_fit_recovers_a_known_resolution():
    d = np.array([10.0, 13.0, 17.0, 22.0, 28.0, 37.0])
    assert fit_effective_fwhm_mm(d, analytic_rc_mean(d, 11.5)) == pytest.approx(11.5, abs=0.05)


def test_gtm_with_the_protocol_psf_callable_recovers_the_true_values():
    """PVC's point response = Gaussian recon resolution then the clinical Butterworth filter (steps.quantify.pvc_psf)."""
    from her2sim.config import ReconSection
    from her2sim.steps.quantify import pvc_psf
    g, _, model = _regions_case(8.0)
    psf = pvc_psf(ReconSection(butterworth_cutoff_cycles_per_cm=0.48, butterworth_order=10), 7.0, g)
    truth = model.synthesize(np.r_[[{0: 0.0, 1: 0.3, 14: 6.0, 21: 2.5}[o] for o in model.organs], 1.2, 3.0])
    img = psf(truth)
    c = model.gtm(img, psf, g.spacing_mm)
    assert model.lesion_value(c, 1) == pytest.approx(1.2, rel=1e-6)
    assert model.lesion_value(c, 2) == pytest.approx(3.0, rel=1e-6)
    # the same image corrected with a Gaussian of the filtered point source's FWHM over-corrects
    wrong = model.gtm(img, 14.0, g.spacing_mm)
    assert model.lesion_value(wrong, 2) > 3.0 * 1.05


def test_lesion_box_models_agree_with_the_whole_image_model():
    from her2sim.analysis.pvc_regions import lesion_box_models
    g, img, model = _regions_case(8.0)
    boxes = lesion_box_models(model.organ_labels, model.lesion_fractions, model.lesion_vois, g.spacing_mm,
                              margin_mm=40.0, rim_mm=16.0)
    for lid, true in ((1, 1.2), (2, 3.0)):
        box, sub = boxes[lid]
        assert all((s.stop - s.start) < n for s, n in zip(box, g.shape)) or lid == 1
        c = sub.gtm(img[box], 8.0, g.spacing_mm)
        assert sub.lesion_value(c, lid) == pytest.approx(true, rel=0.01)


def test_ct_voi_finds_a_visible_lesion_and_reports_an_invisible_one():
    """Bone metastasis (600 HU) in marrow (250 HU) is segmented on CT; a primary of 45 HU in gland of 40 HU is not."""
    g = Grid.centered((20, 20, 20), 4.0)
    f, owner, own, labels, names, suv = _sphere_phantom(g, (0.0, 0.0, -20.0), 16.0, 3.0)
    truth = [{"id": 1, "type": "bone", "in_fov": True, "her2_positive": True, "ihc": "3+",
              "suv_intrinsic_mean": [3.0], "diameter_mm": 16.0}]
    les = lesions_on_grid(g, g, f, owner, own, truth)
    ct_bone = 250.0 * (1 - f) + 600.0 * f
    row = lesion_rows(suv, g, les, truth, "P1", voi="ct", ct_hu=ct_bone, margin_mm=4.0)[0]
    assert row["measured"] and row["voi"] == "ct"
    assert abs(row["voi_voxels"] - int(les[1].voi.sum())) <= 0.2 * les[1].voi.sum()
    ct_gland = 40.0 * (1 - f) + 45.0 * f
    row = lesion_rows(suv, g, les, truth, "P1", voi="ct", ct_hu=ct_gland, margin_mm=4.0)[0]
    assert not row["measured"] and row["unmeasured_reason"] == "not_visible_on_ct" and row["suvmax"] is None


def test_background_ring_and_reading_of_a_lesion_row():
    """The ring is body voxels 10-25 mm from the VOI outside every lesion; the reading uses its mean and SD."""
    from her2sim.analysis.lesion_table import add_reading, background_ring
    g = Grid.centered((20, 40, 40), 2.5)
    z, y, x = (np.broadcast_to(a, g.shape) for a in g.mesh_mm(np.float64))
    voi = x ** 2 + y ** 2 + z ** 2 <= 5.0 ** 2
    other = (x - 30.0) ** 2 + y ** 2 + z ** 2 <= 8.0 ** 2
    ring = background_ring(voi, np.ones(g.shape, bool), other | voi, g.spacing_mm)
    d = np.sqrt(x ** 2 + y ** 2 + z ** 2)[ring]
    assert d.min() > 5.0 + 10.0 - 2.5 * 1.8 and d.max() < 5.0 + 25.0 + 2.5 * 1.8 and not np.any(ring & other)
    suv = np.where(ring, 1.0, 0.0) + np.where(ring & (x > 0), 0.2, 0.0)
    row = add_reading({"suvmean": 3.0, "suvmax": 4.0, "true_suv_intrinsic": 2.0}, suv, ring, rose_k=5.0,
                      lbm_kg=49.0, weight_kg=70.0)
    bg = suv[ring]
    assert row["background_suv"] == pytest.approx(bg.mean()) and row["lbr"] == pytest.approx(3.0 / bg.mean())
    assert row["recovery"] == pytest.approx(1.5) and row["sul"] == pytest.approx(4.0 * 0.7)
    with pytest.raises(ConfigError, match="outer_mm"):
        background_ring(voi, voi, voi, g.spacing_mm, inner_mm=10.0, outer_mm=5.0)
