"""The command line: machine-readable outputs keep their keys; errors are one clear line."""
import json
import subprocess
import sys


def _run(*args, check=True):
    return subprocess.run([sys.executable, "-m", "her2sim.cli", *args], capture_output=True, text=True, check=check)


def test_cohort_json_matches_seed_trial():
    s = json.loads(_run("cohort", "--preset", "seed-trial", "--seed", "1", "--json").stdout)
    assert s["patients"] == 30 and s["newly_diagnosed"] == 24 and s["treated"] == 6 and s["primaries"] == 32
    assert s["ihc_counts"] == {"0": 6, "1+": 10, "2+": 6, "3+": 10}
    assert s["metastases"] == {"lymph_node": 17, "bone": 3, "brain": 1, "liver": 2}
    assert s["inflammation"] == 3 and s["heterogeneous"] == 9


def test_phantom_writes_hdf5_png_and_json(tmp_path):
    out = tmp_path / "ph"
    s = json.loads(_run("phantom", "--preset", "demo", "--seed", "1", "--shape", "24", "48", "48",
                        "--spacing-mm", "8.84", "--out", str(out), "--json").stdout)
    assert (out / "phantom.h5").exists() and (out / "phantom.png").stat().st_size > 1000
    assert len(s["total_activity_mbq"]) == len(s["time_points_h"]) == 2
    assert s["total_activity_mbq"][1] < s["total_activity_mbq"][0]  # physical decay 1 h -> 2 h
    assert "liver" in s["organs"] and s["lesions"]


def test_phantom_anatomy_and_extent_options():
    v2 = json.loads(_run("phantom", "--anatomy", "v2", "--shape", "24", "48", "48", "--spacing-mm", "8.84",
                         "--json").stdout)
    assert "heart_lv" in v2["organs"] and "pectoralis" in v2["organs"]
    wb = json.loads(_run("phantom", "--extent", "whole_body", "--spacing-mm", "8.84", "--json").stdout)
    assert "bladder" in wb["organs"] and "brain" in wb["organs"]
    wb2 = json.loads(_run("phantom", "--extent", "whole_body", "--anatomy", "v2", "--spacing-mm", "17.68",
                          "--json").stdout)
    assert {"bladder", "brain", "pelvis_marrow", "femur_cortical"} <= set(wb2["organs"])


def test_simulate_and_recon_commands(tmp_path):
    ph = tmp_path / "ph"
    _run("phantom", "--preset", "demo", "--seed", "2", "--shape", "24", "48", "48", "--spacing-mm", "8.84",
         "--out", str(ph))
    sim = tmp_path / "sim"
    s = json.loads(_run("simulate", str(ph / "phantom.h5"), "--out", str(sim), "--histories", "5000", "--views", "8",
                        "--matrix", "48", "--pixel-mm", "8.84", "--json").stdout)
    assert 0.0 < s["windows"]["photopeak"]["scatter_to_total"] < 1.0
    assert (sim / "noisy_r0.h5").exists() and (sim / "spectra.png").exists()
    r = json.loads(_run("recon", str(sim / "noisy_r0.h5"), "--phantom", str(ph / "phantom.h5"), "--out",
                        str(tmp_path / "recon.h5"), "--iterations", "2", "--subsets", "2", "--json").stdout)
    assert r["units"] == "counts" and r["max"] > 0
    # Monte Carlo scatter correction and the penetration tail from the CLI: less total than uncorrected
    mc = json.loads(_run("recon", str(sim / "noisy_r0.h5"), "--phantom", str(ph / "phantom.h5"), "--out",
                         str(tmp_path / "recon_mc.h5"), "--iterations", "2", "--subsets", "2", "--scatter", "mc",
                         "--scatter-histories", "5000", "--penetration", "--json").stdout)
    assert mc["scatter"] == "mc" and mc["penetration"] is True
    assert 0.0 < mc["total"] < r["total"]
    bad = _run("recon", str(sim / "noisy_r0.h5"), "--out", str(tmp_path / "x.h5"), "--scatter", "mc", check=False)
    assert bad.returncode != 0 and "--phantom" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bad_config_value_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[study]\nname = "x"\n[phantom]\npreset = "demo"\n[recon]\niterations = -1\n')
    p = _run("run", str(bad), check=False)
    assert p.returncode == 2
    lines = [x for x in p.stderr.strip().splitlines() if x]
    assert len(lines) == 1 and "recon.iterations" in lines[0]
    assert not (tmp_path / "her2sim_out").exists()
