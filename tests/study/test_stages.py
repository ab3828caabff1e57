"""Resumable stage runner: skip when up to date, exact invalidation, crash safety, executors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from her2sim.core.errors import ConfigError, DataError
from her2sim.stages import (Stage, atomic_path, file_sha256, manifest_path, run_stages, stage_keys, stage_status,
                            write_text_atomic)

TESTS_DIR = Path(__file__).parent


# ---------------------------------------------------------------------------- stage functions (module level)
def make_numbers(task):
    rng = np.random.default_rng(task.params["seed"])
    values = rng.normal(size=task.params["n"]) * task.params["scale"]
    write_text_atomic(task.outputs[0], json.dumps(values.tolist()))


def square_numbers(task):
    values = np.asarray(json.loads(task.inputs["numbers"][0].read_text()))
    write_text_atomic(task.outputs[0], json.dumps((values ** task.params["power"]).tolist()))


def sum_numbers(task):
    values = np.asarray(json.loads(task.inputs["squares"][0].read_text()))
    write_text_atomic(task.outputs[0], repr(float(values.sum())))


def label_text(task):
    write_text_atomic(task.outputs[0], task.params["text"])


def simulate_patient(task):
    """One independent item: a 'patient' whose numbers depend only on (seed, item)."""
    rng = np.random.default_rng([task.params["seed"], task.item])
    counts = rng.poisson(task.params["mean"], size=64)
    write_text_atomic(task.outputs[task.index], json.dumps({"patient": task.item, "counts": counts.tolist()}))


def summarise_patients(task):
    totals = [sum(json.loads(p.read_text())["counts"]) for p in task.inputs["patients"]]
    write_text_atomic(task.outputs[0], json.dumps(totals))


def slow_write(task):
    """Writes its output through a temporary file, sleeping inside the write (HER2SIM_TEST_SLEEP_S)."""
    marker = task.study_dir / "slow.started"
    with atomic_path(task.outputs[0]) as tmp:
        tmp.write_text(task.inputs["prepare"][0].read_text() * 3)
        marker.write_text("started")
        time.sleep(float(os.environ.get("HER2SIM_TEST_SLEEP_S", "0")))
    marker.unlink()


def forget_output(task):
    """Does not write its declared output."""


def fail(task):
    raise RuntimeError("boom")


# ---------------------------------------------------------------------------- study builders
def chain(scale=1.0, power=2, text="a"):
    return [Stage("numbers", [], {"seed": 5, "n": 10, "scale": scale}, make_numbers, ["numbers.json"]),
            Stage("squares", ["numbers"], {"power": power}, square_numbers, ["squares.json"]),
            Stage("total", ["squares"], {}, sum_numbers, ["total.txt"]),
            Stage("label", [], {"text": text}, label_text, ["label.txt"])]


def cohort(n=4):
    items = list(range(n))
    return [Stage("patients", [], {"seed": 11, "mean": 50.0}, simulate_patient,
                  [f"patients/p{i:02d}.json" for i in items], items=items),
            Stage("summary", ["patients"], {}, summarise_patients, ["summary.json"])]


def killable():
    return [Stage("prepare", [], {"text": "abc"}, label_text, ["prepare.txt"]),
            Stage("slow", ["prepare"], {}, slow_write, ["slow.txt"]),
            Stage("after", ["slow"], {"text": "end"}, label_text, ["after.txt"])]


def run_killable(study_dir):
    """Entry point of the subprocess that the kill test SIGKILLs."""
    run_stages(killable(), study_dir, progress=False)


def statuses(results):
    return {k: v.status for k, v in results.items()}


def hashes(folder: Path, names):
    return {n: file_sha256(folder / n) for n in names}


# ---------------------------------------------------------------------------- tests
def test_second_run_skips_everything_and_keeps_files(tmp_path):
    first = run_stages(chain(), tmp_path, progress=False)
    assert set(statuses(first).values()) == {"ran"}
    mtimes = {p: (tmp_path / p).stat().st_mtime_ns for p in ("numbers.json", "squares.json", "total.txt")}
    second = run_stages(chain(), tmp_path, progress=False)
    assert set(statuses(second).values()) == {"skipped"}
    assert mtimes == {p: (tmp_path / p).stat().st_mtime_ns for p in mtimes}
    manifest = json.loads(manifest_path(tmp_path, "total").read_text())
    assert manifest["outputs"] == [{"path": "total.txt", "sha256": file_sha256(tmp_path / "total.txt"),
                                    "size": (tmp_path / "total.txt").stat().st_size}]
    # the sum of squares of the written numbers, recomputed outside the runner
    values = np.asarray(json.loads((tmp_path / "numbers.json").read_text()))
    assert float((tmp_path / "total.txt").read_text()) == pytest.approx(float(np.sum(values ** 2)))


def test_param_change_reruns_exactly_that_stage_and_downstream(tmp_path):
    run_stages(chain(), tmp_path, progress=False)
    res = run_stages(chain(power=3), tmp_path, progress=False)
    assert statuses(res) == {"numbers": "skipped", "squares": "ran", "total": "ran", "label": "skipped"}
    res = run_stages(chain(power=3, scale=2.0), tmp_path, progress=False)
    assert statuses(res) == {"numbers": "ran", "squares": "ran", "total": "ran", "label": "skipped"}
    res = run_stages(chain(power=3, scale=2.0, text="b"), tmp_path, progress=False)
    assert statuses(res) == {"numbers": "skipped", "squares": "skipped", "total": "skipped", "label": "ran"}


def test_keys_propagate_downstream_only():
    a, b = stage_keys(chain()), stage_keys(chain(power=3))
    assert {n for n in a if a[n] != b[n]} == {"squares", "total"}


def test_tampered_or_deleted_output_is_recomputed(tmp_path):
    run_stages(chain(), tmp_path, progress=False)
    good = (tmp_path / "squares.json").read_text()
    (tmp_path / "squares.json").write_text("[1]")
    assert stage_status(tmp_path, chain())["squares"] == "stale"
    res = run_stages(chain(), tmp_path, progress=False)
    assert statuses(res)["squares"] == "ran" and statuses(res)["numbers"] == "skipped"
    assert (tmp_path / "squares.json").read_text() == good
    (tmp_path / "label.txt").unlink()
    assert statuses(run_stages(chain(), tmp_path, progress=False))["label"] == "ran"


def test_stage_status(tmp_path):
    assert set(stage_status(tmp_path, chain()).values()) == {"missing"}
    run_stages(chain(), tmp_path, progress=False)
    assert set(stage_status(tmp_path, chain()).values()) == {"done"}
    assert set(stage_status(tmp_path).values()) == {"done"}
    st = stage_status(tmp_path, chain(scale=3.0))
    assert st == {"numbers": "stale", "squares": "stale", "total": "stale", "label": "done"}
    # rerun only the first stage with new params: downstream manifests now point to an old upstream key
    run_stages(chain(scale=3.0)[:1], tmp_path, progress=False)
    assert stage_status(tmp_path) == {"numbers": "done", "squares": "stale", "total": "stale", "label": "done"}


def test_items_and_process_pool_match_serial(tmp_path):
    serial = run_stages(cohort(), tmp_path / "serial", progress=False)
    with ProcessPoolExecutor(2) as pool:
        parallel = run_stages(cohort(), tmp_path / "pool", executor=pool, progress=False)
    assert statuses(serial) == statuses(parallel) == {"patients": "ran", "summary": "ran"}
    names = [f"patients/p{i:02d}.json" for i in range(4)] + ["summary.json"]
    assert hashes(tmp_path / "serial", names) == hashes(tmp_path / "pool", names)
    totals = json.loads((tmp_path / "pool" / "summary.json").read_text())
    assert len(totals) == 4 and len(set(totals)) == 4
    # 64 Poisson draws of mean 50: total within 5 sigma of 3200
    assert all(abs(t - 3200) < 5 * np.sqrt(3200) for t in totals)


def test_dask_local_cluster_matches_serial(tmp_path):
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    serial = run_stages(cohort(3), tmp_path / "serial", progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        res = run_stages(cohort(3), tmp_path / "dask", executor=client.get_executor(), progress=False)
    assert statuses(res) == statuses(serial)
    names = [f"patients/p{i:02d}.json" for i in range(3)] + ["summary.json"]
    assert hashes(tmp_path / "serial", names) == hashes(tmp_path / "dask", names)


def test_sigkill_mid_stage_leaves_no_manifest_and_rerun_completes(tmp_path):
    study = tmp_path / "killed"
    env = dict(os.environ, HER2SIM_TEST_SLEEP_S="60")
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_stages; "
            f"test_stages.run_killable({str(study)!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 45
        while not (study / "slow.started").exists():
            assert proc.poll() is None, "the subprocess ended before reaching the slow stage"
            assert time.monotonic() < deadline, "the slow stage never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert manifest_path(study, "prepare").exists()
    assert not manifest_path(study, "slow").exists()
    assert not (study / "slow.txt").exists()
    assert list(study.glob(".slow.txt.*.tmp")), "the kill should have interrupted the temporary write"
    assert stage_status(study, killable()) == {"prepare": "done", "slow": "missing", "after": "missing"}

    res = run_stages(killable(), study, progress=False)
    assert statuses(res) == {"prepare": "skipped", "slow": "ran", "after": "ran"}
    assert not list(study.glob(".*.tmp"))
    clean = tmp_path / "clean"
    run_stages(killable(), clean, progress=False)
    names = ["prepare.txt", "slow.txt", "after.txt"]
    assert hashes(study, names) == hashes(clean, names)
    assert (study / "slow.txt").read_text() == "abc" * 3


def test_failing_stage_raises_and_writes_no_manifest(tmp_path):
    stages = [Stage("ok", [], {"text": "x"}, label_text, ["ok.txt"]),
              Stage("bad", ["ok"], {}, fail, ["bad.txt"])]
    with pytest.raises(RuntimeError, match="boom") as info:
        run_stages(stages, tmp_path, progress=False)
    assert any("'bad'" in n for n in getattr(info.value, "__notes__", []))
    assert manifest_path(tmp_path, "ok").exists() and not manifest_path(tmp_path, "bad").exists()
    with pytest.raises(DataError, match="forgot.txt"):
        run_stages([Stage("lazy", [], {}, forget_output, ["forgot.txt"])], tmp_path, progress=False)
    assert not manifest_path(tmp_path, "lazy").exists()


def test_serial_run_books_each_finished_stage_before_starting_the_next(tmp_path):
    # independent stages start together; with the serial executor each runs inside submit. A failure in the
    # last one must not cost the manifests of those that finished before it (a kill there would lose them)
    stages = [Stage(f"done_{i}", [], {"text": str(i)}, label_text, [f"done_{i}.txt"]) for i in range(3)]
    stages.append(Stage("bad", [], {}, fail, ["bad.txt"]))
    with pytest.raises(RuntimeError, match="boom"):
        run_stages(stages, tmp_path, progress=False)
    assert all(manifest_path(tmp_path, f"done_{i}").exists() for i in range(3))
    assert statuses(run_stages(stages[:3], tmp_path, progress=False)) == {f"done_{i}": "skipped" for i in range(3)}


def test_invalid_stage_graphs_are_config_errors(tmp_path):
    a = Stage("a", ["b"], {}, label_text, ["a.txt"])
    b = Stage("b", ["a"], {}, label_text, ["b.txt"])
    with pytest.raises(ConfigError, match="cycle"):
        run_stages([a, b], tmp_path, progress=False)
    with pytest.raises(ConfigError, match="'zzz'"):
        run_stages([Stage("c", ["zzz"], {}, label_text, ["c.txt"])], tmp_path, progress=False)
    with pytest.raises(ConfigError, match="used twice"):
        run_stages([Stage("d", [], {"text": "1"}, label_text, ["d.txt"])] * 2, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="JSON"):
        Stage("e", [], {"x": object()}, label_text, ["e.txt"])
    with pytest.raises(ConfigError, match="f.txt is declared by stages 'f' and 'g'"):
        run_stages([Stage("f", [], {"text": "1"}, label_text, ["f.txt"]),
                    Stage("g", [], {"text": "2"}, label_text, ["f.txt"])], tmp_path, progress=False)


def test_force_reruns_only_the_named_stage(tmp_path):
    run_stages(chain(), tmp_path, progress=False)
    res = run_stages(chain(), tmp_path, progress=False, force=["squares"])
    assert statuses(res) == {"numbers": "skipped", "squares": "ran", "total": "skipped", "label": "skipped"}
    with pytest.raises(ConfigError, match="force"):
        run_stages(chain(), tmp_path, progress=False, force=["nope"])
