"""Resume that verifies every file a stage wrote, one writer per study folder, stale temporaries removed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from her2sim.core.errors import DataError
from her2sim.stages import (LOCK_NAME, Stage, manifest_path, read_lock, run_stages, stage_status, study_lock,
                            write_text_atomic)

TESTS_DIR = Path(__file__).parent


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
