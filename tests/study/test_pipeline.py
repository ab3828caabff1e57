"""End-to-end pipeline on a tiny study: outputs, resumability, invalidation, kill-and-resume, determinism."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from her2sim.config import load_study, override_study
from her2sim.pipeline import run_study

STUDY = Path(__file__).parents[1] / "data" / "tiny_study.toml"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    summary = run_study(load_study(STUDY), out, progress=False)
    return out, summary


def test_outputs_and_summary_keys(finished):
    out, s = finished
    for key in ("patients", "scans", "stage_seconds", "outputs", "threshold"):
        assert key in s
    assert s["patients"] == 1 and s["scans"] == 1
    assert Path(s["outputs"]["report"]).exists() and Path(s["outputs"]["lesions_csv"]).exists()
    assert (out / "patients" / "P001" / "t1h" / "recon_r0.h5").exists()
    rows = json.loads((out / "patients" / "P001" / "lesions.json").read_text())
    assert {r["ihc"] for r in rows} == {0, 3}
    # the HER2 3+ lesion (true class SUV 3.5) reads higher than the IHC 0 lesion (0.8)
    by_ihc = {r["ihc"]: r for r in rows}
    assert by_ihc[3]["suvmax"] > by_ihc[0]["suvmax"]
    assert "suvmax@1h" in s["threshold"]
    # every lesion of the truth is reported and counted; the truth quoted is the lesion's own
    assert s["lesions_truth"] == 2 and s["lesions_measured"] == 2 and s["unmeasured_by_reason"] == {}
    assert all(r["measured"] and r["voi"] == "lesion" and r["true_suvmax_pv"] <= r["true_suv_intrinsic"] * 1.5
               for r in rows)


def test_voi_and_pvc_options_rerun_only_the_analysis(finished, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    cfg = override_study(load_study(STUDY), ["analysis.voi=threshold", 'analysis.pvc_methods=["none", "gtm", "rbv"]'])
    s = run_study(cfg, out, progress=False)
    ran = {k for k, v in s["stage_status"].items() if v == "ran"}
    assert ran == {"quantify_P001", "statistics", "report"}
    rows = json.loads((out / "patients" / "P001" / "lesions.json").read_text())
    assert all(r["voi"] == "threshold" for r in rows)
    assert all("pvc_gtm_suvmean" in r and "pvc_gtm_suvmax" not in r and "pvc_rbv_suvmax" in r for r in rows)
    # the default response is the reconstruction's own (recon.response): two calls, four model images per scan
    assert all(r["gtm_response"] == "reconstruction" and r["gtm_response_images"] == 4 for r in rows)
    g = override_study(cfg, ["analysis.pvc_response=gaussian"])
    s = run_study(g, out, progress=False)
    assert {k for k, v in s["stage_status"].items() if v == "ran"} == {"quantify_P001", "statistics", "report"}
    rows_g = json.loads((out / "patients" / "P001" / "lesions.json").read_text())
    assert all(r["gtm_response"] == "gaussian" and np.isfinite(r["pvc_gtm_suvmean"]) for r in rows_g)


def test_rerun_skips_every_stage(finished):
    out, _ = finished
    s = run_study(load_study(STUDY), out, progress=False)
    assert set(s["stage_status"].values()) == {"skipped"}


def test_changed_recon_setting_invalidates_exactly_downstream(finished, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)  # keep the shared finished study unchanged for the other tests
    cfg = override_study(load_study(STUDY), ["recon.iterations=3"])
    s = run_study(cfg, out, progress=False)
    ran = {k for k, v in s["stage_status"].items() if v == "ran"}
    assert ran == {"calibration", "recon_P001", "quantify_P001", "statistics", "report"}


def test_mc_scatter_reruns_calibration_and_recon_and_lowers_the_calibration(finished, tmp_path):
    """recon.scatter = "mc" reruns exactly the stages that reconstruct; the images say how they were
    corrected, and removing the scatter DEW leaves lowers the reconstructed calibration (cps/MBq)."""
    out = tmp_path / "copy"
    shutil.copytree(finished[0], out)
    s = run_study(override_study(load_study(STUDY), ["recon.scatter=mc", "recon.scatter_histories=20000",
                                                     'analysis.pvc_methods=["none", "gtm"]']), out, progress=False)
    ran = {k for k, v in s["stage_status"].items() if v == "ran"}
    assert ran == {"calibration", "recon_P001", "quantify_P001", "statistics", "report"}
    from her2sim.core.containers import Image
    meta = Image.load(out / "patients" / "P001" / "t1h" / "recon_r0.h5").meta
    assert meta.get("scatter") == "mc" and meta.get("scatter_first") == "dew"
    # the Monte Carlo scatter estimate is kept, and GTM's reconstruction response uses it
    assert (out / "patients" / "P001" / "t1h" / "mc_scatter_r0.h5").exists()
    rows = json.loads((out / "patients" / "P001" / "lesions.json").read_text())
    assert all(r["gtm_response"] == "reconstruction" and np.isfinite(r["pvc_gtm_suvmean"]) for r in rows)
    dew = json.loads((finished[0] / "calibration" / "calibration.json").read_text())["sensitivity_cps_per_mbq"]
    mc = json.loads((out / "calibration" / "calibration.json").read_text())["sensitivity_cps_per_mbq"]
    assert mc < dew


def _arrays(path):
    with h5py.File(path, "r") as f:
        return {k: f["arrays"][k][()] for k in f["arrays"]}


def test_same_seed_byte_identical_arrays(finished, tmp_path):
    out, _ = finished
    other = tmp_path / "again"
    run_study(load_study(STUDY), other, progress=False)
    for rel in ("patients/P001/phantom.h5", "patients/P001/t1h/expected.h5", "patients/P001/t1h/noisy_r0.h5"):
        a, b = _arrays(out / rel), _arrays(other / rel)
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), (rel, k)


@pytest.mark.parametrize("victim,before", [("simulate_P001", "phantom_P001"), ("recon_P001", "simulate_P001")])
def test_sigkill_then_resume(tmp_path, finished, victim, before):
    study = tmp_path / "killed"
    env = dict(os.environ, HER2SIM_STAGE_DELAY_S=f"{victim}=60")
    cmd = [sys.executable, "-m", "her2sim.cli", "run", str(STUDY), "--out", str(study), "--quiet",
           "--log", str(tmp_path / "run.log")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest_dir = study / ".stages"
    deadline = time.time() + 600
    while time.time() < deadline and not (manifest_dir / f"{before}.json").exists():
        time.sleep(0.5)
    time.sleep(3.0)  # inside the (delayed) victim stage now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (manifest_dir / f"{before}.json").exists()
    assert not (manifest_dir / f"{victim}.json").exists()
    assert f"stage {before}: done" in (tmp_path / "run.log").read_text()
    s = run_study(load_study(STUDY), study, progress=False)
    assert s["stage_status"][before] == "skipped"
    assert s["stage_status"][victim] == "ran"
    assert not list(study.rglob("*.tmp"))
    # the resumed study equals an uninterrupted one
    out, _ = finished
    for rel in ("patients/P001/t1h/noisy_r0.h5", "patients/P001/t1h/recon_r0.h5"):
        a, b = _arrays(out / rel), _arrays(study / rel)
        for k in a:
            assert np.array_equal(a[k], b[k]), (rel, k)


def test_ideal_mu_map_from_materials_matches_xcom_and_exposes_the_bilinear_lung_bias():
    """recon.mu_map = "materials": water at 140.5 keV is 0.1538 1/cm (NIST XCOM, physics.md) in the IEC
    background; in the lung insert (ICRU lung, 0.26 g/cm^3 -> 0.040 1/cm) the clinical bilinear map of the
    CT (-750 HU -> 0.029 1/cm with the GE CT540 slope) is > 20 % lower, which is why the option exists."""
    from her2sim.core.grid import Grid
    from her2sim.core.materials import MATERIAL_IDS
    from her2sim.phantoms import iec_body_phantom
    from her2sim.config import ReconSection
    from her2sim.steps.scan import attenuation_map

    g = Grid.centered((16, 48, 48), 6.0)
    ph = iec_body_phantom(g)
    ideal = attenuation_map(ph, g, ReconSection(mu_map="materials"))
    ct = attenuation_map(ph, g, ReconSection(mu_map="ct"))
    water = ph.material_ids == MATERIAL_IDS["water"]
    lung = ph.material_ids == MATERIAL_IDS["lung"]
    interior_water = water & (np.abs(np.gradient(ph.material_ids.astype(float), axis=2)) == 0)
    assert np.median(ideal[interior_water]) == pytest.approx(0.1538, abs=0.001)
    assert np.median(ideal[lung]) == pytest.approx(0.040, abs=0.003)
    assert np.median(ct[lung]) < 0.8 * np.median(ideal[lung])
