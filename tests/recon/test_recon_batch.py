"""Batched projector / OSEM over realisations sharing one system matrix (issue 13)."""
import numpy as np
import pytest

from her2sim.core.errors import DataError
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.recon import SpectSystemMatrix, osem, osem_batch
from her2sim.sim.camera import Camera


def _setup(psf=True, att=True, penetration=None):
    g = Grid((8, 18, 16), (4.0, 4.0, 4.0), (-14.0, -30.0, -20.0))
    geo = ProjectionGeometry.dual_head(n_views=20, radius_mm=100.0, shape_vu=(12, 24), pixel_mm=(4.0, 4.0),
                                       axis_xy_mm=(3.0, -5.0), axis_z_mm=0.0)
    z, y, x = g.mesh_mm()
    body = (x ** 2 + (y + 10) ** 2 < 25.0 ** 2) & np.ones(g.shape, dtype=bool)
    mu = (0.15 * body) if att else None
    a = SpectSystemMatrix(g, geo, mu, psf=psf, support=body if att else None, penetration=penetration)
    return g, geo, a


@pytest.mark.parametrize("psf", [False, True])
@pytest.mark.parametrize("att", [False, True])
def test_batch_forward_backward_equal_the_single_operators(psf, att):
    """Every image of a batch gets exactly A x and A^T y of the one-image operators (1e-12 relative)."""
    g, geo, a = _setup(psf, att)
    rng = np.random.default_rng(5)
    xs = rng.random((3,) + g.shape)
    ys = rng.random((3,) + a.projection_shape)
    views = [1, 4, 9, 13, 18]
    fb = a.forward_batch(xs, views)
    bb = a.backward_batch(ys[:, views], views)
    for b in range(3):
        f1 = a.forward(xs[b], views)
        b1 = a.backward(ys[b, views], views)
        assert np.max(np.abs(fb[b] - f1)) <= 1e-12 * np.max(np.abs(f1))
        assert np.max(np.abs(bb[b] - b1)) <= 1e-12 * np.max(np.abs(b1))


def test_batch_dot_product_adjoint():
    """<A X, Y> = <X, A^T Y> summed over the batch (exact transpose, 1e-10 relative)."""
    g, geo, a = _setup()
    rng = np.random.default_rng(6)
    xs = rng.random((4,) + g.shape)
    ys = rng.random((4,) + a.projection_shape)
    lhs = float(np.vdot(a.forward_batch(xs), ys))
    rhs = float(np.vdot(xs, a.backward_batch(ys)))
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_osem_batch_matches_osem_per_realisation():
    """Batched OSEM of Poisson realisations with scatter equals one OSEM per realisation (1e-9 relative)."""
    g, geo, a = _setup()
    z, y, x = g.mesh_mm()
    truth = np.ones(g.shape) * np.where((x ** 2 + (y + 10) ** 2) < 20.0 ** 2, 5.0, 0.0) + np.where((x - 8) ** 2 + (y + 6) ** 2 < 36, 20.0, 0)
    ybar = a.forward(truth)
    scat = np.full(ybar.shape, 0.1 * ybar.mean())
    rng = np.random.default_rng(7)
    counts = rng.poisson(np.broadcast_to(ybar + scat, (3,) + ybar.shape)).astype(float)
    xb = osem_batch(a, counts, iterations=2, subsets=5, scatter=np.stack([scat] * 3), progress=False,
                    dtype=np.float64)
    xs = osem_batch(a, counts, iterations=2, subsets=5, scatter=np.stack([scat] * 3), progress=False)
    for b in range(3):
        x1 = osem(a, counts[b], iterations=2, subsets=5, scatter=scat, progress=False)
        assert np.max(np.abs(xb[b] - x1)) <= 1e-9 * np.max(x1)
        assert np.max(np.abs(xs[b] - x1)) <= 1e-4 * np.max(x1)  # single precision storage (default)
    assert not np.allclose(xb[0], xb[1])  # different data, different images


def test_osem_batch_rejects_bad_shapes():
    g, geo, a = _setup()
    with pytest.raises(DataError, match="B, view, v, u"):
        osem_batch(a, np.ones(a.projection_shape), progress=False)
    with pytest.raises(DataError, match="scatter has shape"):
        osem_batch(a, np.ones((2,) + a.projection_shape), scatter=np.ones((1,) + a.projection_shape), progress=False)
    with pytest.raises(DataError, match="negative"):
        osem_batch(a, -np.ones((1,) + a.projection_shape), progress=False)


def test_reconstruct_batch_equals_reconstruct_per_realisation_with_dew_and_butterworth():
    """The pipeline's batched path gives each realisation the image :func:`reconstruct` gives it alone
    (DEW scatter from its own scatter window, Butterworth post-filter, calibration), to float32 storage."""
    from her2sim.core.containers import Projections
    from her2sim.core.projection_geometry import EnergyWindow
    from her2sim.recon import reconstruct, reconstruct_batch
    g = Grid.centered((12, 40, 40), 5.0)
    geo = ProjectionGeometry.dual_head(n_views=40, radius_mm=200.0, shape_vu=(12, 40), pixel_mm=(5.0, 5.0))
    z, y, x = g.mesh_mm()
    cyl = np.broadcast_to((x ** 2 + y ** 2) <= 80.0 ** 2, g.shape).astype(float)
    hot = np.broadcast_to(((x - 30) ** 2 + y ** 2) <= 15.0 ** 2, g.shape).astype(float)
    mu = 0.15 * cyl
    a = SpectSystemMatrix(g, geo, mu, psf=True)
    prim = a.forward(1000.0 * cyl + 4000.0 * hot) * 77.5e-6 * 20.0 * g.voxel_volume_ml
    scat = np.full(prim.shape, 0.3 * prim.mean())
    wins = (EnergyWindow.centered("photopeak", 140.5, 0.20), EnergyWindow.centered("scatter", 120.0, 0.10))
    rng = np.random.default_rng(3)
    meta = {"time_per_view_s": 20.0, "scan_start_s": 3600.0}
    projs = [Projections(rng.poisson(np.stack([prim + scat, scat])).astype(np.float32), wins, geo, meta=meta)
             for _ in range(3)]
    kw = dict(iterations=2, subsets=4, psf=True, scatter="dew", calibration_cps_per_bq=77.5e-6,
              butterworth=(0.48, 10), progress=False)
    batch = reconstruct_batch(projs, mu, g, Camera(), **kw)
    for b in range(3):
        one = reconstruct(projs[b], mu, g, Camera(), **kw)
        assert batch[b].units == "Bq/mL" and batch[b].meta["butterworth"] == [0.48, 10]
        assert np.max(np.abs(batch[b].array - one.array)) <= 1e-3 * np.max(one.array)
    with pytest.raises(DataError, match="another geometry"):
        other = ProjectionGeometry.dual_head(n_views=40, radius_mm=210.0, shape_vu=(12, 40), pixel_mm=(5.0, 5.0))
        reconstruct_batch([projs[0], Projections(projs[1].counts, wins, other, meta=meta)], mu, g, Camera(), **kw)
    with pytest.raises(DataError, match="empty"):
        reconstruct_batch([], mu, g, Camera(), **kw)


def test_butterworth_on_the_support_slab_matches_the_full_grid_filter():
    """Filtering only the nonzero slab (plus 60 mm) agrees with filtering the whole grid to 0.5 % of the
    image maximum for the clinical 0.48 cycles/cm, order 10 filter, and is exactly 0 outside the slab."""
    from her2sim.recon.filters import butterworth_filter
    from her2sim.recon.osem import _butterworth_on_support
    g = Grid.centered((64, 32, 32), 4.42)
    rng = np.random.default_rng(0)
    img = np.zeros(g.shape)
    img[24:40] = rng.poisson(20.0, (16, 32, 32))
    full = butterworth_filter(img, g, 0.48, 10)
    slab = _butterworth_on_support(img, g, 0.48, 10)
    assert np.max(np.abs(full - slab)) <= 5e-3 * np.max(full)
    m = int(np.ceil(60.0 / 4.42))  # BUTTERWORTH_MARGIN_MM in slices
    assert not slab[: 24 - m].any() and not slab[40 + m:].any()


def test_batch_operators_with_the_penetration_tail_equal_the_single_ones():
    """recon.penetration: the tail's second projection pass is batched too (1e-12 relative)."""
    from her2sim.sim.penetration import PenetrationTable
    d_tab = np.array([0.0, 100.0, 200.0, 300.0, 400.0, 500.0])
    tab = PenetrationTable(d_tab, np.full(6, 0.064), 1.8 + 0.0457 * d_tab)
    g, geo, a = _setup(penetration=tab)
    rng = np.random.default_rng(9)
    xs = rng.random((2,) + g.shape)
    ys = rng.random((2,) + a.projection_shape)
    fb, bb = a.forward_batch(xs), a.backward_batch(ys)
    for b in range(2):
        f1, b1 = a.forward(xs[b]), a.backward(ys[b])
        assert np.max(np.abs(fb[b] - f1)) <= 1e-12 * np.max(np.abs(f1))
        assert np.max(np.abs(bb[b] - b1)) <= 1e-12 * np.max(np.abs(b1))


def test_osem_batch_takes_a_list_and_the_penetration_path_matches_osem():
    """Unstacked (list) data give the stacked result bit for bit; with the penetration tail (reduced and masked
    back projection instead of the per-thread parts) each data set still gets the :func:`osem` image."""
    from her2sim.sim.penetration import PenetrationTable
    g, geo, a = _setup()
    z, y, x = g.mesh_mm()
    truth = np.where((x ** 2 + (y + 10) ** 2) < 20.0 ** 2, 5.0, 0.0) * np.ones(g.shape)
    ybar = a.forward(truth)
    rng = np.random.default_rng(11)
    counts = rng.poisson(np.broadcast_to(ybar + 0.2, (2,) + ybar.shape)).astype(float)
    scat = np.full((2,) + ybar.shape, 0.2)
    stacked = osem_batch(a, counts, iterations=2, subsets=5, scatter=scat, progress=False)
    listed = osem_batch(a, list(counts.astype(np.float32)), iterations=2, subsets=5, scatter=list(scat), progress=False)
    assert np.array_equal(stacked, listed)
    d_tab = np.array([0.0, 100.0, 200.0, 300.0, 400.0, 500.0])
    g, geo, ap = _setup(penetration=PenetrationTable(d_tab, np.full(6, 0.064), 1.8 + 0.0457 * d_tab))
    xb = osem_batch(ap, counts, iterations=2, subsets=5, progress=False, dtype=np.float64)
    for b in range(2):
        x1 = osem(ap, counts[b], iterations=2, subsets=5, progress=False)
        assert np.max(np.abs(xb[b] - x1)) <= 1e-9 * np.max(x1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_butterworth_skipping_the_padding_is_bit_identical_to_rfftn(dtype):
    """The pruned transforms of :func:`butterworth_filter` give exactly rfftn/irfftn of the zero-padded image."""
    from scipy import fft as sfft

    from her2sim.recon.filters import _butterworth_transfer, butterworth_filter
    g = Grid.centered((13, 21, 30), 4.42)
    img = np.random.default_rng(1).random(g.shape).astype(dtype)
    shape = tuple(sfft.next_fast_len(2 * s, real=True) for s in img.shape)
    h = _butterworth_transfer(shape, g.spacing_mm, 0.48, 10, img.dtype.str)
    ref = sfft.irfftn(sfft.rfftn(img, shape, axes=(0, 1, 2)) * h, shape, axes=(0, 1, 2))[:13, :21, :30]
    out = butterworth_filter(img, g, 0.48, 10)
    assert out.dtype == img.dtype and np.array_equal(out, ref)
