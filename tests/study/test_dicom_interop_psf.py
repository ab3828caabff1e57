"""The realised-response table ``bench/dicom_interop.py`` hands PyTomography (``--psf-table``).

her2sim's projector blurs incrementally (McCarthy & Miller 1991): planes are added farthest first and the
running sum is blurred by the variance *difference* of consecutive planes, so, because variances add under
convolution, a plane ends up blurred by exactly sigma(d)^2 when every plane has its own step
(``psf_variance_step_px2 = 0``). With the default 0.25 pixel^2 grouping a plane gets between 0 and 0.25
pixel^2 more. ``realised_psf_table`` measures the variance by point projections; these tests hold it to
that identity and that bound, on a small coarse-pixel grid like the demo's (8.84 mm).
"""
from __future__ import annotations

import numpy as np
import pytest

from bench_modules import load_bench

from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.recon import SpectSystemMatrix
from her2sim.sim.camera import Camera

PIXEL_MM = 8.84


@pytest.fixture(scope="module")
def interop():
    return load_bench("dicom_interop")


@pytest.fixture(scope="module")
def setup():
    grid = Grid.centered((4, 40, 40), PIXEL_MM)
    geo = ProjectionGeometry.dual_head(n_views=12, radius_mm=250.0, shape_vu=(4, 40), pixel_mm=(PIXEL_MM, PIXEL_MM))
    zz, yy, xx = np.meshgrid(*(grid.axis_mm(a) for a in range(3)), indexing="ij")
    support = (xx / 150.0) ** 2 + (yy / 110.0) ** 2 <= 1.0  # an elliptical body, 300 x 220 mm
    return grid, geo, support, Camera()


def _nominal_var_mm2(camera, distance_cm):
    return np.asarray(camera.sigma_mm(np.asarray(distance_cm) * 10.0, 140.5)) ** 2


def test_exact_steps_realise_the_camera_variance(interop, setup):
    grid, geo, support, cam = setup
    blurred = SpectSystemMatrix(grid, geo, None, cam, psf=True, support=support, psf_variance_step_px2=0.0)
    plain = SpectSystemMatrix(grid, geo, None, cam, psf=False, support=support)
    tab = interop.realised_psf_table(blurred, plain, support, n_points=24)
    d_cm, s_cm = np.asarray(tab["distance_cm"]), np.asarray(tab["sigma_cm"])
    assert d_cm.min() > 9.0 and d_cm.max() < 41.0  # the body's depths seen from 250 mm
    assert np.all(np.diff(d_cm) > 0)
    # variances add: the realised variance is sigma(d)^2 (bin means of a quadratic: within 1 %)
    assert (10.0 * s_cm) ** 2 == pytest.approx(_nominal_var_mm2(cam, d_cm), rel=0.01)


def test_shared_steps_add_at_most_the_step_variance(interop, setup):
    grid, geo, support, cam = setup
    blurred = SpectSystemMatrix(grid, geo, None, cam, psf=True, support=support)  # default 0.25 pixel^2
    plain = SpectSystemMatrix(grid, geo, None, cam, psf=False, support=support)
    tab = interop.realised_psf_table(blurred, plain, support, n_points=24)
    d_cm, s_cm = np.asarray(tab["distance_cm"]), np.asarray(tab["sigma_cm"])
    excess_px2 = ((10.0 * s_cm) ** 2 - _nominal_var_mm2(cam, d_cm)) / PIXEL_MM ** 2
    assert np.all(excess_px2 >= -0.01)
    assert np.all(excess_px2 <= 0.25 + 0.01)
    # on 8.84 mm pixels the grouping widens the response noticeably (why the peer needs the table)
    assert excess_px2.mean() > 0.05


def test_table_needs_points_inside_the_support(interop, setup):
    grid, geo, _, cam = setup
    one_voxel = np.zeros(grid.shape, bool)
    one_voxel[1, 20, 20] = True
    blurred = SpectSystemMatrix(grid, geo, None, cam, psf=True, support=one_voxel)
    plain = SpectSystemMatrix(grid, geo, None, cam, psf=False, support=one_voxel)
    with pytest.raises(ValueError, match="support has no voxel"):
        interop.realised_psf_table(blurred, plain, one_voxel)


@pytest.mark.parametrize("n", ["1", "21", "-3"])
def test_realisations_out_of_range_are_refused(interop, n, capsys):
    with pytest.raises(SystemExit) as exc:
        interop.main(["--realisations", n])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--realisations = {n}" in err and "2-20" in err
