"""PVC through the reconstruction's own response (recon.response + RegionModel.gtm_response), issue 12.

Oracle: the region values of a piecewise-constant phantom. The "measured" image is the OSEM protocol's
noise-free reconstruction of that phantom, so a GTM that models the reconstruction exactly must return the
phantom's values; a Gaussian model of the same resolution does not for a cold lesion in a hot organ.
"""
import numpy as np
import pytest

from her2sim.analysis.pvc_regions import RegionModel, lesion_slab_models
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.phantoms.shapes import sphere_fraction
from her2sim.recon import SpectSystemMatrix
from her2sim.recon.response import ReconstructionResponse, slab_support

LIVER, LESION = 6.0, 1.0   # SUV: a HER2-low metastasis at 1/6 of the liver, as the seed-trial cohort draws


@pytest.fixture(scope="module")
def liver_case():
    d = 4.42
    g = Grid((14, 40, 40), (d, d, d), (-6.5 * d, -19.5 * d, -19.5 * d))
    geo = ProjectionGeometry.dual_head(n_views=40, radius_mm=160.0, shape_vu=(14, 40), pixel_mm=(d, d),
                                       axis_z_mm=0.0)
    z, y, x = (np.broadcast_to(a, g.shape) for a in g.mesh_mm(np.float64))
    body = (x / 75.0) ** 2 + (y / 60.0) ** 2 < 1.0
    organs = np.where(body, np.where(x > 5.0, 14, 1), 0).astype(np.int32)      # liver | soft tissue | air
    f = sphere_fraction(g, (0.0, 0.0, 35.0), 10.0, 5)                           # 20 mm lesion in the liver
    model = RegionModel(organs, {1: f}, {1: f >= 0.5})
    values = {0: 0.0, 1: 0.8, 14: LIVER}
    c_true = np.array([values[o] for o in model.organs] + [LESION])
    system = SpectSystemMatrix(g, geo, 0.15 * body, psf=True, support=body)
    counts_per_suv = 40.0
    ybar = system.forward(model.synthesize(c_true) * counts_per_suv)
    scatter = np.full(ybar.shape, 0.3 * ybar.mean())
    resp = ReconstructionResponse(system, scatter, iterations=4, subsets=10, post_filter_fwhm_mm=6.0,
                                  counts_per_unit=counts_per_suv)
    measured = resp(model.synthesize(c_true))
    return g, model, resp, measured


def test_reconstruction_response_is_in_the_image_units(liver_case):
    """A large uniform organ reconstructs at its value: the response converts units both ways."""
    from scipy import ndimage
    g, model, resp, measured = liver_case
    liver = ndimage.binary_erosion(model.organ_labels == 14, iterations=3)
    far = ~ndimage.binary_dilation(model.lesion_vois[1], iterations=4)
    assert np.mean(measured[liver & far]) == pytest.approx(LIVER, rel=0.05)


def test_gtm_through_the_reconstruction_recovers_a_cold_liver_lesion(liver_case):
    g, model, resp, measured = liver_case
    raw = model.voi_means(measured)[-1]
    assert raw > 2.0 * LESION                      # the reconstruction fills the cold lesion with liver
    fit = model.gtm_response(measured, resp, 7.0, g.spacing_mm)
    assert model.lesion_value(fit.coeffs, 1) == pytest.approx(LESION, rel=0.05)
    assert fit.evaluations == 4                    # one batch of 3 model images, then one more
    x, c = model.rbv_response(measured, fit)
    assert model.lesion_value(c, 1) == pytest.approx(LESION, rel=0.10)


def test_reconstruction_response_refuses_images_of_another_shape(liver_case):
    g, model, resp, measured = liver_case
    with pytest.raises(DataError, match="model images have shape"):
        resp(np.zeros((2, 3, 4)))


def test_slab_models_merge_overlapping_lesions_and_keep_each_lesion_inside():
    g = Grid.centered((60, 8, 8), 4.0)
    organs = np.ones(g.shape, np.int32)
    vois = {}
    for lid, zc in ((1, 3), (2, 10), (3, 50)):
        v = np.zeros(g.shape, bool)
        v[zc:zc + 2, 3:5, 3:5] = True
        vois[lid] = v
    fr = {k: v.astype(float) for k, v in vois.items()}
    slabs = lesion_slab_models(organs, fr, vois, g.spacing_mm, margin_mm=20.0, rim_mm=8.0)
    assert [sorted(m.lesions) for _, m in slabs] == [[1, 2], [3]]
    for sl, m in slabs:
        for lid in m.lesions:
            assert m.lesion_vois[lid].sum() == vois[lid].sum()        # whole VOI in the valid part
    assert slabs[0][0] == slice(0, 17) and slabs[1][0] == slice(45, 57)     # clipped at the first slice


def test_slab_support_keeps_the_body_on_the_slab_only():
    g = Grid.centered((10, 6, 6), 4.0)
    mu = np.zeros(g.shape)
    mu[:, 1:5, 1:5] = 0.15
    s = slab_support(mu, g, slice(3, 6))
    assert s[3:6].sum() == 3 * 16 and s[:3].sum() == 0 and s[6:].sum() == 0


def test_pvc_response_is_checked_in_the_config():
    from her2sim.config import loads_study
    base = '[study]\nname = "x"\n[phantom]\npreset = "torso"\nshape = [16, 32, 32]\nspacing_mm = [8.84, 8.84, 8.84]\n'
    with pytest.raises(ConfigError, match="analysis.pvc_response"):
        loads_study(base + '[analysis]\npvc_response = "blur"\n')
    cfg = loads_study(base + '[analysis]\npvc_methods = ["gtm"]\npvc_response = "gaussian"\n')
    assert cfg.analysis.pvc_response == "gaussian"
