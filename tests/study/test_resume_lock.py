"""Resume that verifies every file a stage wrote, one writer per study folder, stale temporaries removed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from her2sim.core.errors import DataError
from her2sim.stages import (LOCK_NAME, Stage, manifest_path, read_lock, run_stages, stage_status, study_lock,
                            write_text_atomic)

TESTS_DIR = Path(__file__).parents[1]


def write_main_and_extra(task):
    """Declares one output but also writes ``extra/side.txt`` (like simulate's noisy_r<K>.h5)."""
    write_text_atomic(task.outputs[0], "main-" + task.params["text"])
    write_text_atomic(Path(task.study_dir) / "extra" / "side.txt", "side-" + task.params["text"] * 50)


def copy_upper(task):
    text = (Path(task.study_dir) / "extra" / "side.txt").read_text()
    write_text_atomic(task.outputs[0], text.upper())


def independent(task):
    write_text_atomic(task.outputs[0], "independent")


def graph():
    return [Stage("first", [], {"text": "abc"}, write_main_and_extra, ["main.txt"]),
            Stage("second", ["first"], {}, copy_upper, ["upper.txt"]),
            Stage("third", [], {}, independent, ["ind.txt"])]


def statuses(res):
    return {k: v.status for k, v in res.items()}


def test_undeclared_written_file_is_recorded_with_size_and_hash(tmp_path):
    run_stages(graph(), tmp_path, progress=False)
    m = json.loads(manifest_path(tmp_path, "first").read_text())
    paths = [o["path"] for o in m["outputs"]]
    assert paths == ["main.txt", "extra/side.txt"]
    side = next(o for o in m["outputs"] if o["path"] == "extra/side.txt")
    assert side["size"] == (tmp_path / "extra" / "side.txt").stat().st_size
    # the downstream stage wrote only its own file: nothing of "first" is recorded in its manifest
    assert [o["path"] for o in json.loads(manifest_path(tmp_path, "second").read_text())["outputs"]] == ["upper.txt"]


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_damaged_undeclared_output_reruns_stage_and_everything_downstream(tmp_path, damage):
    run_stages(graph(), tmp_path, progress=False)
    side = tmp_path / "extra" / "side.txt"
    good = side.read_bytes()
    if damage == "truncate":
        side.write_bytes(good[: len(good) // 2])
    elif damage == "delete":
        side.unlink()
    else:  # same size, one byte changed: only the hash can tell
        side.write_bytes(good[:-1] + (b"X" if good[-1:] != b"X" else b"Y"))
    assert stage_status(tmp_path, graph())["first"] == "stale"
    assert stage_status(tmp_path)["second"] == "stale"  # judged from the manifests alone: upstream not done
    res = run_stages(graph(), tmp_path, progress=False)
    assert statuses(res) == {"first": "ran", "second": "ran", "third": "skipped"}
    assert side.read_bytes() == good
    assert set(stage_status(tmp_path, graph()).values()) == {"done"}


def test_deleted_result_of_last_stage_is_recomputed(tmp_path):
    run_stages(graph(), tmp_path, progress=False)
    (tmp_path / "upper.txt").unlink()
    res = run_stages(graph(), tmp_path, progress=False)
    assert statuses(res) == {"first": "skipped", "second": "ran", "third": "skipped"}


def test_stale_temporaries_of_study_outputs_are_removed_and_nothing_else(tmp_path):
    run_stages(graph(), tmp_path, progress=False)
    stale = [tmp_path / "extra" / ".side.txt.abc123.tmp", tmp_path / ".main.txt.k9_x2.tmp"]
    for p in stale:
        p.write_text("half")
    keep = [tmp_path / "extra" / "notes.tmp",               # not a her2sim temporary name (no leading dot)
            tmp_path / "unrelated" / ".draft.txt.q1w2.tmp"]  # a folder the study does not write to
    for p in keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("user file")
    res = run_stages(graph(), tmp_path, progress=False)
    assert set(statuses(res).values()) == {"skipped"}
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in keep)


def test_wrongly_typed_manifest_counts_as_not_done(tmp_path):
    run_stages(graph(), tmp_path, progress=False)
    mp = manifest_path(tmp_path, "third")
    m = json.loads(mp.read_text())
    m["outputs"] = [{"path": 3, "sha256": None}]
    mp.write_text(json.dumps(m))
    assert stage_status(tmp_path, graph())["third"] == "missing"
    assert statuses(run_stages(graph(), tmp_path, progress=False))["third"] == "ran"


# ---------------------------------------------------------------------------- lock
HOLD = """
import sys, time
from her2sim.stages import study_lock
with study_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(study: Path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(study)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_is_refused_and_lock_of_a_killed_run_is_taken_over(tmp_path):
    study = tmp_path / "study"
    proc = _holder(study)
    try:
        info = read_lock(study)
        assert info["pid"] == proc.pid and info["host"]
        with pytest.raises(DataError, match=rf"in use by another her2sim run \(PID {proc.pid} on host"):
            run_stages(graph(), study, progress=False)
        assert not (study / "main.txt").exists()  # refused before any work
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (study / LOCK_NAME).exists()  # the killed holder left its lock file behind
    res = run_stages(graph(), study, progress=False)
    assert set(statuses(res).values()) == {"ran"}
    assert not (study / LOCK_NAME).exists()  # released after the run


def test_lock_is_reentrant_in_one_process_and_released(tmp_path):
    with study_lock(tmp_path):
        assert read_lock(tmp_path)["pid"] == os.getpid()
        res = run_stages(graph(), tmp_path, progress=False)  # run_stages takes the same lock again
        assert set(statuses(res).values()) == {"ran"}
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_cli_second_run_is_one_line_exit_2(tmp_path):
    study = tmp_path / "study"
    proc = _holder(study)
    try:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "her2sim.cli", "run", str(TESTS_DIR / "data" / "tiny_study.toml"),
                            "--out", str(study), "--quiet"], capture_output=True, text=True, timeout=300)
        assert time.monotonic() - t0 < 120
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "in use by another her2sim run" in err[0] and "Traceback" not in r.stderr
    assert not (study / "calibration").exists()


# ---------------------------------------------------------------------------- the study pipeline
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from her2sim.config import load_study
    from her2sim.pipeline import run_study

    out = tmp_path_factory.mktemp("tiny")
    # the user's commented study file lives in the study folder itself (output_dir = ".")
    original = (TESTS_DIR / "data" / "tiny_study.toml").read_text()
    (out / "study.toml").write_text("# my notes\n# more notes\n" + original)
    run_study(load_study(out / "study.toml"), out, progress=False)
    return out


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def _arrays(path):
    import h5py
    with h5py.File(path, "r") as f:
        return {k: f["arrays"][k][()] for k in f["arrays"]}


def _rerun(study):
    from her2sim.config import load_study
    from her2sim.pipeline import run_study
    return run_study(load_study(TESTS_DIR / "data" / "tiny_study.toml"), study, progress=False)["stage_status"]


def test_study_input_is_never_overwritten_and_resolved_copy_is_separate(tiny_study, tmp_path, capsys):
    from her2sim.config import load_study
    from her2sim.core.errors import ConfigError
    from her2sim.pipeline import run_study

    assert (tiny_study / "study.toml").read_text().startswith("# my notes\n# more notes\n")
    resolved = tiny_study / "study.resolved.toml"
    assert resolved.read_text().startswith("# resolved her2sim study (sha256 ")
    study = _copy(tiny_study, tmp_path / "copy")
    with pytest.raises(ConfigError, match="refusing to overwrite it"):
        run_study(load_study(study / "study.resolved.toml"), study, progress=False)
    assert not (study / LOCK_NAME).exists()


def test_manifests_cover_every_product(tiny_study):
    def paths(stage):
        return {o["path"] for o in json.loads(manifest_path(tiny_study, stage).read_text())["outputs"]}
    assert {"patients/P001/t1h/expected.h5", "patients/P001/t1h/noisy_r0.h5"} <= paths("simulate_P001")
    assert {"calibration/calibration.json", "calibration/recon.h5", "calibration/expected.h5",
            "calibration/phantom.h5"} <= paths("calibration")
    assert {"results/summary.json", "results/lesions.csv", "results/figures/suvmax_vs_ihc.png"} <= paths("statistics")
    assert "results/figures/phantom_P001.png" in paths("phantom_P001")


@pytest.mark.parametrize("victim,redone", [
    ("patients/P001/t1h/noisy_r0.h5", {"simulate_P001", "recon_P001", "quantify_P001", "statistics", "report"}),
    ("calibration/recon.h5", {"calibration", "recon_P001", "quantify_P001", "statistics", "report"}),
    ("results/lesions.csv", {"statistics", "report"}),
])
def test_damaged_product_is_reported_and_repaired_identically(tiny_study, tmp_path, capsys, victim, redone):
    from her2sim.cli import main

    study = _copy(tiny_study, tmp_path / "copy")
    path = study / victim
    good = path.read_bytes()
    if victim.endswith(".csv"):
        path.unlink()
        state = "missing"
    else:
        path.write_bytes(good[: len(good) // 2])  # truncated
        state = "corrupt"
    assert main(["status", str(study)]) == 0
    out = capsys.readouterr().out
    assert f"{state:<8} {victim}" in out
    status = _rerun(study)
    assert {k for k, v in status.items() if v == "ran"} == redone
    if victim.endswith(".csv"):
        assert path.read_bytes() == good
    else:
        a, b = _arrays(tiny_study / victim), _arrays(path)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert main(["status", str(study), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out).values()) == {"done"}
