"""SUV from the exported DICOM alone equals the pipeline's lesions.csv (tiny study, output.dicom = true).

An SUV tool reads only standard tags: pixel data x Rescale Slope/Intercept in Units BQML,
CorrectedImage (it checks ATTN and DECY before computing), DecayCorrection, the
Radiopharmaceutical Information Sequence (Radionuclide Total Dose in MBq for NM, start date
time, half-life) and PatientWeight. The SUV formula is written here from those definitions:
``SUVbw = C [Bq/mL] x weight [g] / dose [Bq]`` with the dose decayed to the time the image is
decay corrected to (ADMIN: injection, START: acquisition start, NONE: refused).
"""
from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest

from her2sim.analysis.lesion_table import lesion_rows
from her2sim.analysis.lesion_truth import host_labels, lesions_on_grid, margin_allowed
from her2sim.config import load_study, override_study
from her2sim.core.containers import Phantom
from her2sim.core.grid import Grid, resample
from her2sim.pipeline import run_study

STUDY = Path(__file__).parents[1] / "data" / "tiny_study.toml"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("dicom_suv")
    run_study(override_study(load_study(STUDY), ["output.dicom=true"]), out, progress=False)
    return out


def _dt(text: str) -> dt.datetime:
    text = str(text).split("+")[0]
    return dt.datetime.strptime(text, "%Y%m%d%H%M%S.%f" if "." in text else "%Y%m%d%H%M%S")


def suv_from_dicom(ds: pydicom.Dataset) -> tuple[np.ndarray, Grid]:
    """SUVbw volume (z, y, x) and its grid from the standard tags of an NM RECON TOMO dataset."""
    assert ds.Units == "BQML"
    corrected = list(ds.CorrectedImage)
    assert "ATTN" in corrected and "DECY" in corrected, corrected  # an SUV tool refuses the series otherwise
    conc = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    rp = ds.RadiopharmaceuticalInformationSequence[0]
    dose_bq = float(rp.RadionuclideTotalDose) * 1e6  # NM Isotope module: MBq
    half_life_s = float(rp.RadionuclideHalfLife)
    injected = _dt(rp.RadiopharmaceuticalStartDateTime)
    acquired = _dt(f"{ds.AcquisitionDate}{ds.AcquisitionTime}")
    if ds.DecayCorrection == "ADMIN":
        dose_at_ref = dose_bq
    elif ds.DecayCorrection == "START":
        dose_at_ref = dose_bq * 0.5 ** ((acquired - injected).total_seconds() / half_life_s)
    else:
        raise AssertionError(f"DecayCorrection {ds.DecayCorrection}: not decay corrected")
    suv = conc * float(ds.PatientWeight) * 1000.0 / dose_at_ref
    ipp = [float(v) for v in ds.ImagePositionPatient]
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    dz = float(ds.SpacingBetweenSlices)
    grid = Grid(suv.shape, (dz, float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])), (ipp[2], ipp[1], ipp[0]))
    return suv, grid


def test_suvmax_from_dicom_alone_equals_lesions_csv(study):
    recon_files = sorted((study / "dicom").rglob("NM_recon/recon.dcm"))
    assert recon_files, "the dicom stage wrote no NM reconstruction"
    with open(study / "results" / "lesions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    ph = Phantom.load(study / "patients" / "P001" / "phantom.h5")
    checked = 0
    for path in recon_files:
        ds = pydicom.dcmread(path)
        assert list(ds.CorrectedImage) == ["ATTN", "SCAT", "DECY"]
        suv, grid = suv_from_dicom(ds)
        time_h = float(path.parent.parent.name[1:-1])
        lesions = lesions_on_grid(grid, ph.grid, ph.lesion_fraction, ph.lesion_owner, ph.lesion_own_suv, ph.truth)
        allowed = margin_allowed(resample(host_labels(ph.labels, ph.label_names), ph.grid, grid, order=0),
                                 ph.label_names)
        ti = list(ph.time_points_h).index(time_h)
        rows = lesion_rows(suv, grid, lesions, ph.truth, "P001", time_index=ti, margin_mm=grid.spacing_mm[1],
                           allowed=allowed)
        for row in rows:
            ref = [r for r in table if int(r["lesion_id"]) == row["lesion_id"] and float(r["time_h"]) == time_h
                   and int(r["realisation"]) == 0]
            assert len(ref) == 1
            # 16-bit quantisation of the Bq/mL image: half a step of the image maximum
            tol = 0.5 * float(suv.max()) / 65535.0 + 1e-6
            assert row["suvmax"] == pytest.approx(float(ref[0]["suvmax"]), abs=tol)
            checked += 1
    assert checked == 2  # two lesions, one time point


def test_interop_bench_compares_the_pipelines_lesion_suvmax(study, tmp_path):
    """``bench/dicom_interop.py`` scores the peer against the SUVmax the pipeline reports: a peer image that
    is her2sim's own reconstruction (as counts per voxel, in PyTomography's (x, y, z) order and affine)
    scores corr 1, total ratio 1 and SUVmax equal to lesions.csv (no torch needed)."""
    import json

    from bench_modules import load_bench

    from her2sim.dicom_io import import_image

    mod = load_bench("dicom_interop")
    scan_dir = study / "dicom" / "P001" / "t1h"
    ours = import_image(scan_dir / "NM_recon" / "recon.dcm")
    m, g = ours.meta, ours.grid
    counts = (ours.array.astype(np.float64) * float(m["calibration_cps_per_bq"]) * float(m["time_per_view_s"])
              * g.voxel_volume_ml * float(m["decay_factor_applied"]))
    peer_dir = tmp_path / "peer"
    peer_dir.mkdir()
    np.save(peer_dir / "peer_recon_xyz.npy", np.transpose(counts, (2, 1, 0)).astype(np.float32))
    affine = [[g.spacing_mm[2], 0, 0, g.origin_mm[2]], [0, g.spacing_mm[1], 0, g.origin_mm[1]],
              [0, 0, g.spacing_mm[0], g.origin_mm[0]], [0, 0, 0, 1]]
    (peer_dir / "peer_affine.json").write_text(json.dumps(affine))
    r = mod.compare_scan(scan_dir, study, peer_dir, {"seconds": 0.0, "angles_deg_first": []}, "P001", 1.0)
    assert r["pytomography_corr"] == pytest.approx(1.0, abs=1e-6)
    assert r["total_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert r["peer_grid_resampled"] is False
    with open(study / "results" / "lesions.csv", newline="") as f:
        table = {int(row["lesion_id"]): float(row["suvmax"]) for row in csv.DictReader(f)
                 if float(row["time_h"]) == 1.0 and int(row["realisation"]) == 0}
    assert sorted(les["lesion_id"] for les in r["lesions"]) == sorted(table)
    for les in r["lesions"]:
        assert les["rel_diff"] == pytest.approx(0.0, abs=1e-4)
        assert les["suvmax_her2sim"] == pytest.approx(table[les["lesion_id"]], rel=1e-3)
