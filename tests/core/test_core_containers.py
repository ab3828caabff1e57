"""Core data model: grid transforms, HDF5 round trips, clear errors on bad files."""
import h5py
import numpy as np
import pytest

from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.grid import Grid, resample
from her2sim.core.materials import MATERIAL_IDS, MATERIAL_NAMES
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry, check_windows


def _phantom(seed=0):
    rng = np.random.default_rng(seed)
    g = Grid((6, 7, 8), (4.0, 3.0, 2.0), (10.0, -5.0, 3.5))
    act = rng.random((2,) + g.shape).astype(np.float32) * 1e4
    return Phantom(grid=g, activity_bq_per_ml=act, time_points_h=(1.0, 2.0),
                   ct_hu=rng.normal(0, 50, g.shape).astype(np.float32),
                   labels=rng.integers(0, 5, g.shape).astype(np.int16),
                   material_ids=np.full(g.shape, MATERIAL_IDS["water"], np.uint8),
                   density_g_cm3=np.ones(g.shape, np.float32), label_names={0: "air", 1: "body"},
                   material_names=list(MATERIAL_NAMES),
                   truth=[{"id": 1, "ihc": "3+", "volume_ml": 1.5, "her2_positive": True}],
                   lesion_ids=np.zeros(g.shape, np.int16), meta={"weight_kg": 70.0, "seed": 3})


def _projections():
    geo = ProjectionGeometry.dual_head(4, 200.0, (5, 6), (4.0, 4.0))
    ws = (EnergyWindow.centered("photopeak", 140.5, 0.2), EnergyWindow.centered("scatter", 120.0, 0.1))
    rng = np.random.default_rng(1)
    c = rng.random((2, 4, 5, 6)).astype(np.float32)
    return Projections(c, ws, geo, True, {"primary": 0.7 * c, "scatter1": 0.3 * c}, c * 0.01,
                       {"time_per_view_s": 20.0, "seed": 5})


def test_grid_world_index_roundtrip_and_centre():
    g = Grid((4, 5, 6), (2.0, 3.0, 4.0), (1.0, 2.0, 3.0))
    idx = np.array([[1.5, 2.0, 0.25], [0, 0, 0]])
    assert np.allclose(g.world_to_index(g.index_to_world(idx)), idx)
    assert np.allclose(g.index_to_world([0, 0, 0]), [1.0, 2.0, 3.0])
    c = Grid.centered((4, 5, 6), 2.0)
    assert np.allclose(c.center_mm, 0.0)
    assert c.voxel_volume_ml == pytest.approx(0.008)


def test_resample_linear_ramp_is_exact():
    src = Grid.centered((8, 8, 8), 4.0)
    dst = Grid.centered((16, 16, 16), 2.0)
    z, y, x = src.mesh_mm(np.float64)
    ramp = (x + 0 * y + 0 * z).astype(np.float64)
    out = resample(ramp, src, dst, order=1)
    _, _, xd = dst.mesh_mm(np.float64)
    inner = (slice(2, -2),) * 3
    assert np.allclose(out[inner], np.broadcast_to(xd, dst.shape)[inner], atol=1e-9)


def test_bad_grid_values_name_the_field():
    with pytest.raises(ConfigError, match=r"grid.spacing_mm\[1\]"):
        Grid((4, 4, 4), (1.0, -1.0, 1.0))
    with pytest.raises(ConfigError, match=r"grid.shape\[0\]"):
        Grid((0, 4, 4), (1.0, 1.0, 1.0))


def test_phantom_roundtrip_exact(tmp_path):
    ph = _phantom()
    ph.save(tmp_path / "p.h5")
    back = Phantom.load(tmp_path / "p.h5")
    assert back.grid == ph.grid
    for name in ("activity_bq_per_ml", "ct_hu", "labels", "material_ids", "density_g_cm3", "lesion_ids"):
        a, b = getattr(ph, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert back.truth == ph.truth and back.meta == ph.meta and back.time_points_h == (1.0, 2.0)
    assert back.label_names == ph.label_names


def test_projections_roundtrip_exact(tmp_path):
    p = _projections()
    p.save(tmp_path / "proj.h5")
    q = Projections.load(tmp_path / "proj.h5")
    assert np.array_equal(p.counts, q.counts) and np.array_equal(p.variance, q.variance)
    assert set(q.components) == {"primary", "scatter1"}
    assert np.array_equal(q.components["primary"], p.components["primary"])
    assert q.windows == p.windows
    assert np.array_equal(q.geometry.angles_deg, p.geometry.angles_deg)
    assert q.geometry.pixel_mm == p.geometry.pixel_mm and q.meta == p.meta


def test_image_roundtrip_exact(tmp_path):
    g = Grid.centered((3, 4, 5), 4.42)
    img = Image(np.arange(60, dtype=np.float32).reshape(g.shape), g, "Bq/mL", {"injected_mbq": 458.0})
    img.save(tmp_path / "i.h5")
    back = Image.load(tmp_path / "i.h5")
    assert np.array_equal(back.array, img.array) and back.units == "Bq/mL" and back.grid == g


def test_truncated_file_gives_clear_error(tmp_path):
    path = _phantom().save(tmp_path / "p.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="p.h5"):
        Phantom.load(path)


def test_missing_attribute_and_wrong_schema(tmp_path):
    path = _projections().save(tmp_path / "proj.h5")
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(DataError, match="schema_version 99"):
        Projections.load(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 1
        del f.attrs["meta_json"]
    with pytest.raises(DataError, match="meta_json"):
        Projections.load(path)


def test_wrong_kind_and_missing_file(tmp_path):
    path = _projections().save(tmp_path / "proj.h5")
    with pytest.raises(DataError, match="expected a Image"):
        Image.load(path)
    with pytest.raises(DataError, match="does not exist"):
        Image.load(tmp_path / "nothing.h5")


def test_failed_write_leaves_previous_file_intact(tmp_path):
    g = Grid.centered((2, 2, 2), 1.0)
    good = Image(np.ones(g.shape, np.float32), g)
    path = good.save(tmp_path / "i.h5")
    bad = Image(np.ones(g.shape, np.float32), g, meta={"x": object()})
    with pytest.raises(TypeError):
        bad.save(path)
    assert np.array_equal(Image.load(path).array, good.array)
    assert [p.name for p in tmp_path.iterdir()] == ["i.h5"]


def test_projection_shape_and_negative_counts_rejected():
    p = _projections()
    with pytest.raises(DataError, match="does not match geometry"):
        Projections(p.counts[:, :3], p.windows, p.geometry)
    with pytest.raises(DataError, match=">= 0"):
        Projections(-p.counts, p.windows, p.geometry)


def test_windows_validation():
    with pytest.raises(ConfigError, match="upper_kev"):
        EnergyWindow("x", 150.0, 140.0)
    with pytest.raises(ConfigError, match="overlaps"):
        check_windows([EnergyWindow("a", 120, 150), EnergyWindow("b", 140, 160)])
    with pytest.raises(ConfigError, match="n_views"):
        ProjectionGeometry.dual_head(0)


def test_projection_geometry_convention():
    geo = ProjectionGeometry.dual_head(4, 200.0)
    # view 0 at 0 deg: head anterior (-y); a point at y=-50 mm is 150 mm from the face
    u, z, d = geo.project_point(10.0, -50.0, 7.0)
    assert d[0] == pytest.approx(150.0) and u[0] == pytest.approx(10.0)
    # 90 deg: head on patient's left (+x)
    assert d[1] == pytest.approx(190.0) and u[1] == pytest.approx(-50.0)
    assert list(geo.heads) == [0, 0, 1, 1]
