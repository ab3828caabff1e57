"""Typed acquisition metadata (issue #16 part 2): Acquisition and Corrections on Projections and Image.

Round trips through HDF5 (schema 2, and migration of schema-1 files from the old meta keys) and DICOM,
one-line errors naming the field, CorrectedImage from Image.corrections, SUV from the typed fields.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pydicom
import pytest

from her2sim.analysis.suv import suv_image
from her2sim.core.acquisition import Acquisition, Corrections
from her2sim.core.containers import Image, Projections
from her2sim.core.errors import DataError
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry
from her2sim.dicom_io import export_image, export_projections, import_image, import_projections

ACQ = Acquisition(injected_mbq=458.0, injection_time="2024-03-05T09:15:00", scan_start_s=7200.0,
                  time_per_view_s=20.0, weight_kg=62.5, height_cm=158.0, sex="female")
COR = Corrections(attenuation=True, scatter="dew", decay_reference="injection", psf=True, penetration=True)


def _grid():
    return Grid((4, 6, 6), (4.0, 4.0, 4.0), (-6.0, -10.0, -10.0))


def _projections(acq=ACQ, cor=None):
    geo = ProjectionGeometry.dual_head(4, 200.0, (4, 6), (4.0, 4.0))
    ws = (EnergyWindow.centered("photopeak", 140.5, 0.2), EnergyWindow.centered("scatter", 120.0, 0.1))
    c = np.random.default_rng(1).poisson(20.0, (2, 4, 4, 6)).astype(np.float32)
    return Projections(c, ws, geo, False, meta={"seed": 5}, acquisition=acq, corrections=cor)


def _image(acq=ACQ, cor=COR, units="Bq/mL"):
    a = np.random.default_rng(2).random(_grid().shape).astype(np.float32) * 1e4
    return Image(a, _grid(), units, {"algorithm": "OSEM"}, acquisition=acq, corrections=cor)


def test_sex_is_stored_as_the_dicom_letter_and_dicts_round_trip():
    assert ACQ.sex == "F"
    assert Acquisition.from_dict(ACQ.to_dict()) == ACQ
    assert Corrections.from_dict(COR.to_dict()) == COR
    assert Acquisition.from_dict({}) == Acquisition()  # every field may be unknown
    assert Corrections() == Corrections(False, "none", "acquisition_mean", False, False)


@pytest.mark.parametrize("cls, kwargs, message", [
    (Acquisition, {"injected_mbq": -5.0}, r"^Acquisition\.injected_mbq = -5 is outside the allowed range \(0, 1e\+06\]$"),
    (Acquisition, {"weight_kg": float("nan")}, r"^Acquisition\.weight_kg = nan is outside the allowed range"),
    (Acquisition, {"height_cm": 500}, r"^Acquisition\.height_cm = 500 is outside the allowed range \[30, 260\]$"),
    (Acquisition, {"scan_start_s": "soon"}, r"^Acquisition\.scan_start_s = 'soon' is not a number"),
    (Acquisition, {"time_per_view_s": 0.0}, r"^Acquisition\.time_per_view_s = 0 is outside the allowed range \(0, 3600\]$"),
    (Acquisition, {"sex": "X"}, r"^Acquisition\.sex = 'X' is not allowed; choose one of \['F', 'M', 'O'\]"),
    (Acquisition, {"injection_time": "yesterday"}, r"^Acquisition\.injection_time = 'yesterday' is not an ISO 8601"),
    (Corrections, {"attenuation": "yes"}, r"^Corrections\.attenuation = 'yes' must be true or false$"),
    (Corrections, {"scatter": "magic"}, r"^Corrections\.scatter = 'magic' is not allowed; choose one of .*'array'\]$"),
    (Corrections, {"decay_reference": "midnight"}, r"^Corrections\.decay_reference = 'midnight' is not allowed"),
    (Corrections, {"penetration": True}, r"^Corrections\.penetration = True needs psf = True"),
])
def test_bad_values_give_one_line_errors_naming_the_field(cls, kwargs, message):
    with pytest.raises(DataError, match=message) as info:
        cls(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_keys_are_refused():
    with pytest.raises(DataError, match=r"unknown key\(s\) \['weight'\]"):
        Acquisition.from_dict({"weight": 70})
    with pytest.raises(DataError, match="Image.acquisition must be a her2sim Acquisition"):
        Image(np.zeros(_grid().shape, np.float32), _grid(), acquisition={"weight_kg": 70})


def test_hdf5_round_trip_of_both_objects(tmp_path):
    p = _projections(cor=Corrections(attenuation=False, scatter="tew"))
    back = Projections.load(p.save(tmp_path / "p.h5"))
    assert back.acquisition == ACQ and back.corrections == p.corrections
    img = Image.load(_image().save(tmp_path / "i.h5"))
    assert img.acquisition == ACQ and img.corrections == COR
    none = Image.load(_image(acq=None, cor=None).save(tmp_path / "n.h5"))
    assert none.acquisition is None and none.corrections is None


def _rewrite(path, version, edit):
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta_json"])
        edit(meta)
        f.attrs["meta_json"] = json.dumps(meta)
        f.attrs["schema_version"] = version


def test_schema_1_files_are_migrated_from_the_old_meta_keys(tmp_path):
    old_meta = {"injected_mbq": 458.0, "weight_kg": 62.5, "scan_start_s": 7200.0, "time_per_view_s": 20.0,
                "attenuation_correction": True, "scatter": "dew", "psf": True, "penetration": False,
                "decay_corrected_to": "scan_start", "algorithm": "OSEM"}

    def to_v1(meta):
        meta.pop("acquisition"), meta.pop("corrections")
        meta["meta"] = old_meta

    path = _image().save(tmp_path / "old.h5")
    _rewrite(path, 1, to_v1)
    img = Image.load(path)
    assert img.acquisition == Acquisition(injected_mbq=458.0, weight_kg=62.5, scan_start_s=7200.0,
                                          time_per_view_s=20.0)
    assert img.corrections == Corrections(True, "dew", "scan_start", True, False)
    ppath = _projections().save(tmp_path / "oldp.h5")
    _rewrite(ppath, 1, to_v1)
    proj = Projections.load(ppath)
    assert proj.acquisition.time_per_view_s == 20.0 and proj.corrections is None
    # a version-1 meta that does not validate: the file and what to do
    _rewrite(path, 1, lambda m: m["meta"].update(weight_kg=-1))
    with pytest.raises(DataError, match=r"old\.h5: schema_version 1 file.*Acquisition\.weight_kg = -1.*re-run"):
        Image.load(path)


def test_schema_2_file_without_the_typed_attributes_is_refused(tmp_path):
    path = _image().save(tmp_path / "i.h5")
    _rewrite(path, 2, lambda m: m.pop("corrections"))
    with pytest.raises(DataError, match=r"i\.h5: required attribute 'corrections' is missing"):
        Image.load(path)
    _rewrite(path, 2, lambda m: m.update(corrections={"scatter": "magic"}))
    with pytest.raises(DataError, match=r"i\.h5: Corrections\.scatter = 'magic'"):
        Image.load(path)


def test_dicom_round_trip_of_both_objects(tmp_path):
    p = _projections(cor=Corrections(scatter="dew"))
    back = import_projections(export_projections(p, tmp_path / "proj"))
    assert back.acquisition == ACQ and back.corrections == p.corrections
    img = _image()
    back = import_image(export_image(img, tmp_path / "recon")[0])
    assert back.acquisition == ACQ and back.corrections == COR


def test_dicom_tags_come_from_the_typed_fields_and_a_foreign_file_is_read_from_them(tmp_path):
    img = _image(cor=Corrections(attenuation=True, scatter="none", decay_reference="scan_start"))
    img.meta.update({"weight_kg": 99.0, "attenuation_correction": False})  # stale untyped copies: not read
    ds = pydicom.dcmread(export_image(img, tmp_path)[0])
    assert list(ds.CorrectedImage) == ["ATTN", "DECY"] and ds.DecayCorrection == "START"
    assert float(ds.PatientWeight) == 62.5 and float(ds.PatientSize) == pytest.approx(1.58)
    assert ds.PatientSex == "F"
    assert float(ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose) == 458.0
    # strip the private block: what another vendor's file gives
    del ds[0x00110010], ds[0x00111001]
    ds.PatientWeight = 0  # out of range: left out and named
    ds.save_as(tmp_path / "foreign.dcm")
    foreign = import_image(tmp_path / "foreign.dcm")
    a = foreign.acquisition
    assert (a.injected_mbq, a.injection_time, a.scan_start_s, a.height_cm, a.sex, a.weight_kg) == \
        (458.0, "2024-03-05T09:15:00", 7200.0, pytest.approx(158.0), "F", None)
    assert foreign.meta["ignored_attributes"] == ["weight_kg"]
    assert foreign.corrections is None and foreign.meta["decay_corrected_to"] == "scan_start"


def test_corrected_image_of_a_reconstruction_comes_from_image_corrections(tmp_path):
    from her2sim.recon import grid_for_geometry, reconstruct

    p = _projections()
    grid = grid_for_geometry(p.geometry)
    mu = np.full(grid.shape, 0.15, np.float32)
    img = reconstruct(p, mu, grid, iterations=1, subsets=2, psf=False, scatter="dew", calibration_cps_per_bq=1e-4,
                      decay_reference="injection", progress=False)
    assert img.acquisition == ACQ
    assert img.corrections == Corrections(attenuation=True, scatter="dew", decay_reference="injection")
    ds = pydicom.dcmread(export_image(img, tmp_path / "a")[0])
    assert list(ds.CorrectedImage) == ["ATTN", "SCAT", "DECY"] and ds.DecayCorrection == "ADMIN"
    counts = reconstruct(p, None, grid, iterations=1, subsets=2, psf=False, attenuation_correction=False,
                         progress=False)
    assert counts.corrections == Corrections()  # nothing, and no decay correction of an image in counts
    ds = pydicom.dcmread(export_image(counts, tmp_path / "b")[0])
    assert ds.DecayCorrection == "NONE" and ds["CorrectedImage"].VM == 0


@pytest.mark.parametrize("ref", ["injection", "scan_start", "acquisition_mean"])
@pytest.mark.parametrize("normalisation", ["bw", "lbm", "bsa"])
def test_suv_from_typed_fields_equals_the_meta_value(ref, normalisation):
    acq = Acquisition(injected_mbq=458.0, scan_start_s=7200.0, weight_kg=62.5, height_cm=158.0, sex="F")
    typed = _image(acq=acq, cor=Corrections(decay_reference=ref))
    typed.meta["scan_duration_s"] = 1800.0
    old = Image(typed.array, typed.grid, "Bq/mL", {**typed.meta, **acq.to_meta(), "decay_corrected_to": ref})
    a, b = suv_image(typed, normalisation=normalisation), suv_image(old, normalisation=normalisation)
    assert a.meta["suv_scale_factor"] == b.meta["suv_scale_factor"]
    np.testing.assert_array_equal(a.array, b.array)
    assert a.acquisition == acq and a.corrections == typed.corrections
    # the typed field wins over a stale meta copy
    typed.meta["weight_kg"] = 1.0
    assert suv_image(typed, normalisation=normalisation).meta["suv_scale_factor"] == a.meta["suv_scale_factor"]
