"""Where the exported NM and CT series put a point source, read by DICOM's own definitions.

The reader in this file is written from PS3.3, apart from ``her2sim.dicom_io`` (none of its
helpers is used):

* C.8.4.12 NM Tomo Acquisition: Start Angle is the detector position, 0 deg at the patient's
  back, increasing counter-clockwise seen from the patient's feet (from the back toward the
  patient's left side); Rotation Direction CW = decreasing angle; Angular Step > 0. The
  detector position direction is therefore ``(x, y) = (sin phi, cos phi)`` in LPS.
* C.8.4.8 Multi-frame / NM: frame k belongs to EnergyWindowVector[k], DetectorVector[k],
  AngularViewVector[k] (1-based).
* C.7.6.2.1.1 Image Position / Orientation: IPP is the centre of the first pixel, IOP the
  direction cosines of the first row and first column, PixelSpacing = (row spacing, column
  spacing); for the NM detector the orientation is that of the detector's first frame and it
  turns rigidly with the detector.
* Rotation axis (vendor practice, GE NM670 files as PyTomography reads them; the standard
  leaves it open for projections): the axis is the line ``x = IPP x``, ``y = -TableHeight``
  (RotationInformationSequence) when IPP y is 0; IPP z is the top row.

The projections of the point come from ``ProjectionGeometry.project_point`` (her2sim's
camera convention); the test then finds the point again in the DICOM frame of reference and
compares it with the LPS position it was put at, and with the same point in the exported
CT and NM reconstruction.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from her2sim.core.containers import Image, Projections
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry
from her2sim.dicom_io import DicomStudy, export_image, export_projections

POINT_LPS = np.array([55.0, -70.0, -10.0])  # x (patient left), y (posterior), z (superior), mm
WINDOWS = (EnergyWindow("photopeak", 126.45, 154.55),)


def _point_projections(geometry: ProjectionGeometry, point=POINT_LPS, total=20000.0) -> Projections:
    """Counts of a point source: each view's count split bilinearly over the four nearest pixels."""
    nv, nu = geometry.shape_vu
    dv, du = geometry.pixel_mm
    u, z, _ = geometry.project_point(*point)
    counts = np.zeros((1, geometry.n_views, nv, nu))
    for k in range(geometry.n_views):
        fu = u[k] / du + 0.5 * (nu - 1)
        fv = (z[k] - geometry.axis_z_mm) / dv + 0.5 * (nv - 1)
        iu, iv = int(np.floor(fu)), int(np.floor(fv))
        au, av = fu - iu, fv - iv
        for dv_i, wv in ((0, 1 - av), (1, av)):
            for du_i, wu in ((0, 1 - au), (1, au)):
                counts[0, k, iv + dv_i, iu + du_i] += total * wv * wu
    return Projections(np.round(counts).astype(np.float32), WINDOWS, geometry,
                       meta={"time_per_view_s": 10.0, "injected_mbq": 400.0, "scan_start_s": 3600.0})


def _position_direction(phi_deg: float) -> np.ndarray:
    """PS3.3 C.8.4.12: detector position for Start Angle ``phi`` (0 = back, toward the patient's left)."""
    r = np.deg2rad(phi_deg)
    return np.array([np.sin(r), np.cos(r)])


def _turn(v_xy: np.ndarray, alpha_deg: float) -> np.ndarray:
    """Rotate a transaxial vector with the detector by ``alpha`` in the Start Angle sense."""
    a = np.deg2rad(alpha_deg)
    return np.array([v_xy[0] * np.cos(a) + v_xy[1] * np.sin(a), -v_xy[0] * np.sin(a) + v_xy[1] * np.cos(a)])


def locate_in_projections(path: Path, reverse_direction: bool = False) -> np.ndarray:
    """LPS position (mm) of a point source from an NM TOMO file, by the definitions above.

    Each frame's count centroid gives a lateral offset ``s`` along the frame's row direction and
    a z; the transaxial position is the least-squares solution of ``s = (p - axis) . row``.
    ``reverse_direction`` reads CW as CC (a negative control: a mirrored reader).
    """
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)).astype(np.float64)
    rot = ds.RotationInformationSequence[0]
    sign = -1.0 if rot.RotationDirection == "CW" else 1.0
    if reverse_direction:
        sign = -sign
    step = float(rot.AngularStep)
    d_spacing_rows, d_spacing_cols = (float(v) for v in ds.PixelSpacing)
    first = ds.DetectorInformationSequence[0]
    ipp = np.array([float(v) for v in first.ImagePositionPatient])
    assert ipp[1] == 0.0, "this reader implements the y = 0 / TableHeight vendor convention"
    axis = np.array([ipp[0], -float(rot.TableHeight)])
    rows, cols = [], []
    for f in range(frames.shape[0]):
        det = ds.DetectorInformationSequence[int(ds.DetectorVector[f]) - 1]
        k = int(ds.AngularViewVector[f]) - 1
        start = float(det.StartAngle)
        iop = np.array([float(v) for v in det.ImageOrientationPatient])
        row_dir = _turn(iop[:2], sign * step * k)  # rigid with the detector
        # the first row is perpendicular to the detector normal: a sanity check of the file itself
        assert abs(float(row_dir @ _position_direction(start + sign * step * k))) < 1e-6
        col_z = iop[5]
        img = frames[f]
        total = img.sum()
        r_c = (img.sum(axis=1) @ np.arange(img.shape[0])) / total
        c_c = (img.sum(axis=0) @ np.arange(img.shape[1])) / total
        s = (c_c - 0.5 * (img.shape[1] - 1)) * d_spacing_cols
        z = float(ipp[2] + col_z * r_c * d_spacing_rows)
        rows.append((row_dir, s))
        cols.append(z)
    a = np.array([r for r, _ in rows])
    b = np.array([s for _, s in rows])
    xy = np.linalg.lstsq(a, b, rcond=None)[0] + axis
    return np.array([xy[0], xy[1], float(np.mean(cols))])


def locate_in_volume(datasets) -> np.ndarray:
    """LPS position (mm) of the brightest voxel of a CT series (one dataset per slice) or an NM
    RECON TOMO multi-frame dataset (frames stacked along row x column by SpacingBetweenSlices)."""
    best, where = -np.inf, None
    for ds in datasets:
        arr = ds.pixel_array.astype(np.float64)
        arr = arr.reshape((-1,) + arr.shape[-2:])
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        row, col = iop[:3], iop[3:]
        normal = np.cross(row, col)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        d_rows, d_cols = (float(v) for v in ds.PixelSpacing)
        gap = float(ds.get("SpacingBetweenSlices", 0.0) or 0.0)
        k, j, i = np.unravel_index(int(np.argmax(arr)), arr.shape)
        if arr[k, j, i] > best:
            best = arr[k, j, i]
            where = ipp + i * d_cols * row + j * d_rows * col + k * gap * normal
    return where


@pytest.fixture
def geometry():
    # unequal rows/columns and pixel sizes, axis off the origin, so any swap or sign error shows
    return ProjectionGeometry.dual_head(n_views=24, radius_mm=260.0, shape_vu=(40, 48), pixel_mm=(4.0, 4.42),
                                        axis_xy_mm=(12.0, -20.0), axis_z_mm=-35.0)


def test_point_source_is_found_at_its_lps_position_in_the_projections(tmp_path, geometry):
    path = export_projections(_point_projections(geometry), tmp_path)
    found = locate_in_projections(path)
    np.testing.assert_allclose(found, POINT_LPS, atol=0.05)
    # negative control: a reader that turns the wrong way finds it elsewhere (mirrored)
    assert np.linalg.norm(locate_in_projections(path, reverse_direction=True) - POINT_LPS) > 20.0


@pytest.mark.parametrize("start_deg", [37.0, 270.0])
def test_single_head_clockwise_and_counter_clockwise_orbits(tmp_path, start_deg):
    for step in (+15.0, -15.0):
        angles = (start_deg + step * np.arange(12)) % 360.0
        g = ProjectionGeometry(angles, np.full(12, 240.0), (40, 48), (4.0, 4.42), (-8.0, 5.0), 3.0)
        path = export_projections(_point_projections(g), tmp_path, filename=f"p{step:+.0f}.dcm")
        ds = pydicom.dcmread(path)
        assert ds.RotationInformationSequence[0].RotationDirection == ("CW" if step > 0 else "CC")
        np.testing.assert_allclose(locate_in_projections(path), POINT_LPS, atol=0.05)


def test_ct_recon_and_projections_share_one_frame_of_reference(tmp_path, geometry):
    study = DicomStudy.new(seed=11)
    # CT and NM recon grids with a voxel centred on the point (different spacings and origins)
    ct_grid = Grid((30, 50, 40), (3.0, 2.5, 2.0), tuple(POINT_LPS[::-1] - np.array([12, 31, 17]) * (3.0, 2.5, 2.0)))
    hu = np.full(ct_grid.shape, -1000.0, dtype=np.float32)
    hu[12, 31, 17] = 2000.0
    ct_files = export_image(Image(hu, ct_grid, "HU", {}), tmp_path / "ct", "CT", study=study)
    nm_grid = Grid((20, 30, 30), (4.0, 4.42, 4.42),
                   tuple(POINT_LPS[::-1] - np.array([7, 11, 19]) * (4.0, 4.42, 4.42)))
    act = np.zeros(nm_grid.shape, dtype=np.float32)
    act[7, 11, 19] = 5000.0
    nm_file = export_image(Image(act, nm_grid, "Bq/mL", {}), tmp_path / "nm", "NM", study=study)[0]
    proj_file = export_projections(_point_projections(geometry), tmp_path / "proj", study=study)

    ct_ds = [pydicom.dcmread(p) for p in ct_files]
    nm_ds = pydicom.dcmread(nm_file)
    proj_ds = pydicom.dcmread(proj_file)
    assert {d.FrameOfReferenceUID for d in ct_ds + [nm_ds, proj_ds]} == {study.frame_of_reference_uid}
    np.testing.assert_allclose(locate_in_volume(ct_ds), POINT_LPS, atol=1e-6)
    np.testing.assert_allclose(locate_in_volume([nm_ds]), POINT_LPS, atol=1e-6)
    np.testing.assert_allclose(locate_in_projections(proj_file), locate_in_volume(ct_ds), atol=0.05)
