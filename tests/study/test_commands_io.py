"""CLI I/O subcommands through a parser built with register_io: init, status, export/import DICOM, report."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from her2sim.commands_io import find_scans, register_io
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_IDS, MATERIAL_NAMES
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry
from her2sim.stages import Stage, run_stages
from test_report import make_study

WINDOWS = (EnergyWindow("photopeak", 126.45, 154.55), EnergyWindow("scatter", 114.0, 126.0))


def run(argv) -> int:
    p = argparse.ArgumentParser(prog="her2sim-test")
    sub = p.add_subparsers(dest="command", required=True)
    register_io(sub)
    args = p.parse_args([str(a) for a in argv])
    return args.func(args)


def _grid() -> Grid:
    return Grid((4, 5, 6), (4.42, 4.0, 3.0), (-10.0, -20.0, -30.0))


def make_patient_study(root: Path) -> Path:
    """Study folder with one patient at 1 h and 2 h: phantom, noisy projections (r0, r1) and recons."""
    rng = np.random.default_rng(5)
    study = root / "pstudy"
    pdir = study / "patients" / "P001"
    pdir.mkdir(parents=True)
    (study / "study.toml").write_text('[study]\nname = "pstudy"\n')
    g = _grid()
    ph = Phantom(grid=g, activity_bq_per_ml=rng.random((2,) + g.shape).astype(np.float32) * 1e4,
                 time_points_h=(1.0, 2.0), ct_hu=np.round(rng.normal(0, 300, g.shape)).astype(np.float32),
                 labels=np.ones(g.shape, np.int16), material_ids=np.full(g.shape, MATERIAL_IDS["water"], np.uint8),
                 density_g_cm3=np.ones(g.shape, np.float32), label_names={1: "body"},
                 material_names=list(MATERIAL_NAMES), meta={"weight_kg": 63.5, "height_cm": 158.0,
                                                             "injected_mbq": 458.0})
    ph.save(pdir / "phantom.h5")
    geo = ProjectionGeometry.dual_head(8, 230.0, (6, 5), (4.42, 4.42), axis_z_mm=0.0)
    for t in (1, 2):
        tdir = pdir / f"t{t}h"
        tdir.mkdir()
        for k in (0, 1):
            counts = rng.poisson(25, size=(2, 8, 6, 5)).astype(np.float32)
            Projections(counts, WINDOWS, geo, is_expected=False,
                        meta={"time_per_view_s": 20.0, "scan_start_s": 3600.0 * t}).save(tdir / f"noisy_r{k}.h5")
            Image(rng.random(g.shape).astype(np.float32) * 5e3, g, "Bq/mL",
                  {"scan_start_s": 3600.0 * t}).save(tdir / f"recon_r{k}.h5")
    return study


@pytest.fixture(scope="module")
def pstudy(tmp_path_factory):
    return make_patient_study(tmp_path_factory.mktemp("io"))


# ---------------------------------------------------------------------------- init
def test_init_refuses_to_overwrite_without_force(tmp_path, capsys):
    dest = tmp_path / "mystudy.toml"
    assert run(["init", "demo", "--out", dest]) == 0
    assert capsys.readouterr().out.strip() == str(dest)
    original = dest.read_text()
    assert "[study]" in original
    dest.write_text("# edited by the user\n")
    with pytest.raises(ConfigError, match="already exists"):
        run(["init", "demo", "--out", dest])
    assert dest.read_text() == "# edited by the user\n"
    assert run(["init", "demo", "--out", dest, "--force"]) == 0
    assert dest.read_text() == original


def test_init_list_and_unknown_preset(capsys):
    assert run(["init", "--list", "--json"]) == 0
    presets = json.loads(capsys.readouterr().out)["presets"]
    assert "demo" in presets and "seed-trial" in presets
    with pytest.raises(ConfigError, match="did you mean 'demo'"):
        run(["init", "dmeo"])
    with pytest.raises(ConfigError, match="PRESET is required"):
        run(["init"])


# ---------------------------------------------------------------------------- status
def _write_output(task):
    for p in task.outputs:
        p.write_text(f"{task.stage} {task.params}")


def test_status_json_reports_done_stale_and_unreadable(tmp_path, capsys):
    stages = [Stage("phantoms", [], {"n": 1}, _write_output, ["a.txt"]),
              Stage("simulate", ["phantoms"], {"photons": 10}, _write_output, ["b.txt"]),
              Stage("report", [], {}, _write_output, ["c.txt"])]
    run_stages(stages, tmp_path, progress=False)
    assert run(["status", tmp_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"phantoms": "done", "simulate": "done", "report": "done"}
    (tmp_path / "a.txt").write_text("changed by hand")           # phantoms stale -> simulate stale
    (tmp_path / ".stages" / "report.json").write_text("{trunc")  # unreadable manifest -> missing
    assert run(["status", tmp_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"phantoms": "stale", "simulate": "stale", "report": "missing"}
    assert run(["status", tmp_path]) == 0
    out = capsys.readouterr().out
    assert "simulate" in out and "1/1 present" in out and "0 done, 2 stale, 1 missing" in out


def test_status_of_fresh_and_absent_folders(tmp_path, capsys):
    assert run(["status", tmp_path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {}
    with pytest.raises(DataError, match="study folder does not exist"):
        run(["status", tmp_path / "nope"])


# ---------------------------------------------------------------------------- DICOM
def test_export_dicom_series_import_back_equal(pstudy, tmp_path, capsys):
    out = tmp_path / "dcm"
    assert run(["export-dicom", pstudy, "--out", out, "--json"]) == 0
    series = [Path(p) for p in json.loads(capsys.readouterr().out)["series"]]
    expected = [out / "P001" / t / s for t in ("t1h", "t2h") for s in ("NM_projections", "NM_recon", "CT")]
    assert series == expected

    # one study / frame of reference per scan, shared by its three series; different scans differ
    uids = {}
    for t in ("t1h", "t2h"):
        files = sorted((out / "P001" / t).rglob("*.dcm"))
        ds = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
        assert len({d.StudyInstanceUID for d in ds}) == 1 and len({d.FrameOfReferenceUID for d in ds}) == 1
        assert {d.PatientID for d in ds} == {"P001"} and {float(d.PatientWeight) for d in ds} == {63.5}
        uids[t] = ds[0].StudyInstanceUID
    assert uids["t1h"] != uids["t2h"]
    recon_ds = pydicom.dcmread(out / "P001" / "t2h" / "NM_recon" / "recon.dcm")
    assert float(recon_ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose) == 458.0

    t2 = pstudy / "patients" / "P001" / "t2h"
    # projections: integer counts round-trip exactly (realisation 0, the default)
    assert run(["import-dicom", out / "P001" / "t2h" / "NM_projections" / "projections.dcm",
                "--out", tmp_path / "p.h5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "Projections"
    back = Projections.load(tmp_path / "p.h5")
    np.testing.assert_array_equal(back.counts, Projections.load(t2 / "noisy_r0.h5").counts)
    assert back.meta["scan_start_s"] == pytest.approx(7200.0)
    # recon: Bq/mL within half a 16-bit quantisation step
    assert run(["import-dicom", out / "P001" / "t2h" / "NM_recon" / "recon.dcm", "--out", tmp_path / "r.h5"]) == 0
    rec, orig = Image.load(tmp_path / "r.h5"), Image.load(t2 / "recon_r0.h5")
    assert rec.units == "Bq/mL" and rec.grid.same_as(orig.grid)
    step = float(orig.array.max()) / 65535.0
    assert np.max(np.abs(rec.array - orig.array)) <= 0.5 * step * 1.001 + 1e-6
    assert rec.meta["injected_mbq"] == pytest.approx(458.0) and rec.meta["weight_kg"] == pytest.approx(63.5)
    # CT: whole HU round-trip exactly
    assert run(["import-dicom", out / "P001" / "t2h" / "CT", "--out", tmp_path / "ct.h5", "--kind", "image"]) == 0
    ct = Image.load(tmp_path / "ct.h5")
    np.testing.assert_array_equal(ct.array, Phantom.load(pstudy / "patients" / "P001" / "phantom.h5").ct_hu)
    assert ct.units == "HU"


def test_export_dicom_filters_and_reproducible_uids(pstudy, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for dest in (a, b):
        assert run(["export-dicom", pstudy, "--out", dest, "--patient", "P001", "--time-h", "1",
                    "--realisation", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(a / "P001" / "t1h" / "NM_recon") in printed
    assert not (a / "P001" / "t2h").exists()
    f = Path("P001") / "t1h" / "NM_projections" / "projections.dcm"
    da, db = pydicom.dcmread(a / f), pydicom.dcmread(b / f)
    assert da.StudyInstanceUID == db.StudyInstanceUID and da.SOPInstanceUID == db.SOPInstanceUID
    counts_r1 = Projections.load(pstudy / "patients" / "P001" / "t1h" / "noisy_r1.h5").counts
    from her2sim.dicom_io import import_projections
    np.testing.assert_array_equal(import_projections(a / f).counts, counts_r1)


@pytest.mark.parametrize("option, value, message", [
    ("--patient", "P404", "available \\['P001'\\]"),
    ("--time-h", "3", "available \\[1.0, 2.0\\] h"),
    ("--realisation", "7", "available \\[0, 1\\]"),
])
def test_export_dicom_selection_errors_list_what_exists(pstudy, tmp_path, option, value, message):
    with pytest.raises(DataError, match=message):
        run(["export-dicom", pstudy, "--out", tmp_path, option, value])


def test_find_scans_without_patients_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no patient folders"):
        find_scans(tmp_path)


def test_import_dicom_of_missing_or_non_dicom_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run(["import-dicom", tmp_path / "none.dcm", "--out", tmp_path / "x.h5"])
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a dicom file at all")
    with pytest.raises(DataError, match=str(junk)):
        run(["import-dicom", junk, "--out", tmp_path / "x.h5"])


# ---------------------------------------------------------------------------- report
def test_report_command_prints_path_and_uses_format(tmp_path, capsys):
    study = make_study(tmp_path)
    assert run(["report", study, "--format", "markdown"]) == 0
    assert capsys.readouterr().out.strip() == str(study / "report.md")
    assert run(["report", study]) == 0  # study.toml has no [output] report -> html
    assert capsys.readouterr().out.strip() == str(study / "report.html")
    (study / "results" / "summary.json").unlink()
    with pytest.raises(DataError, match="summary.json"):
        run(["report", study])
