"""End-to-end run time of the seed-trial virtual study (issue 8).

Runs the ``seed-trial`` preset (Zhao et al., Breast Cancer Res 26:40 (2024): 30
patients, 99mTc-NM-02 SPECT/CT at 1 h and 2 h) through :func:`her2sim.pipeline.run_study`
for a few cohort sizes (``cohort.n_patients``) and numbers of local worker processes,
each run in a fresh study folder, and reports:

* ``runs``: per run ``patients``, ``workers``, ``wall_seconds`` (the summary's), the
  summary's ``stage_seconds`` {stage kind: seconds}, ``scans`` (patients x time points),
  plus ``busy_seconds`` {stage kind: seconds spent inside the stage functions, timed
  where they run}, ``cpu_seconds`` (CPU time of this process and its worker processes;
  ``cpu_seconds / wall_seconds`` below the core count shows time lost to other load)
  and the load average (1, 5, 15 min) before and after the run.
* ``seconds_per_scan``: median over runs of (simulate + recon) seconds / scans.
* ``extrapolated_minutes_30_patients_2_timepoints``: a 30-patient, 2-time-point study
  on one worker, ``fixed + 30 x per_patient + 60 x per_scan`` seconds / 60, where
  ``per_scan`` = (simulate + recon) / scans, ``per_patient`` = (phantom + quantify) /
  patients and ``fixed`` = calibration + statistics + report, each the median over the
  one-worker runs. ``extrapolated_basis`` says whether they are ``quick`` (shrunken
  grid/views/photons) or ``full`` (the preset's resolution and noise target) figures;
  ``..._2_workers`` divides by ``worker_speedup_2``.
* ``worker_speedup_2``: wall time with 1 worker / wall time with 2 workers at the same
  number of patients (the largest such count; every count in ``worker_speedup_2_by_patients``).

Stage times used for the derived figures are the ``busy_seconds`` (see
:class:`StageTimingExecutor`): ``run_stages`` measures a stage from its launch to the
moment the scheduler sees it finish, so with the serial executor a stage's time also
contains every stage launched after it in the same wave (e.g. ``calibration`` includes
``phantom_<id>``, and ``simulate_<p1>`` includes ``simulate_<p2>``), and with a process
pool it contains the time spent queued behind other stages. Both are still printed
(``stage_seconds``) as the pipeline reports them.

With more than one worker, ``monte_carlo.threads = 1`` is set so the Numba kernels of
the two processes do not oversubscribe the 2 cores; with one worker the preset's
``threads = 0`` (all cores) is kept. Worker pools use the ``spawn`` start method (as
``her2sim run --workers N``); their start-up (interpreter, imports, Numba cache loads)
is part of the wall time. The machine is shared, so the load average is part of the
output: figures measured under a load above the core count are slowed by other work.

Before full-resolution runs an uncounted 1-patient ``--quick`` study runs in this process
(``warmup_seconds``; ``--warmup`` / ``--no-warmup`` force it on or off; off by default
with ``--quick`` to keep that under a few minutes), so Numba compilation after a source change
is not charged to the first run (see :func:`warm_up`); spawned workers still pay their own
start-up (imports and Numba cache loads, several seconds each), which dominates quick runs.

``--quick`` shrinks the study (32 x 64 x 64 voxels of 8.84 mm, 64 x 64 detector of
8.84 mm pixels, 30 views, 50 000 photons instead of the 1 % noise target, 50 bootstrap
resamples) so the default quick bench (1 and 2 patients x 1 and 2 workers) ends in a
few minutes.

``--realisations N`` sets ``monte_carlo.noise_realisations = N`` (default: the preset's 1): every
scan's N Poisson realisations are reconstructed in one batch (issue 13), so the extrapolation is
that of the N-realisation trial (30 patients x 2 time points x N reconstructions). The same run
then times, on the first patient's 1 h scan of the first one-worker run, one reconstruction
(``single_recon_seconds``) and the batch of its N realisations (``batch_recon_seconds``), and
prints ``batch_over_single_cost_ratio`` = batch / single (issue target: <= 3 for N = 10) and
``per_realisation_cost_ratio`` = batch / (N x single).

Usage: ``python bench/e2e_seed_trial.py [--json] [--quick] [--patients 1,2] [--workers 1,2]
[--realisations N] [--warmup | --no-warmup] [--out-dir DIR]``
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from her2sim.config import StudyConfig, apply_overrides, load_study, preset_path
from her2sim.core.errors import ConfigError, DataError
from her2sim.pipeline import run_study
from her2sim.stages import SerialExecutor

N_PATIENTS_TRIAL = 30          # Zhao et al. 2024: 30 patients
N_TIMEPOINTS_TRIAL = 2         # imaged at 1 h and 2 h after injection
PER_SCAN_KINDS = ("simulate", "recon")
PER_PATIENT_KINDS = ("phantom", "quantify")
FIXED_KINDS = ("calibration", "statistics", "report")

#: study changes of ``--quick`` (same field of view as the preset: 64 x 8.84 mm = 128 x 4.42 mm)
QUICK_OVERRIDES = ("phantom.shape=[40, 64, 64]", "phantom.spacing_mm=8.84", "camera.protocol.matrix=64",
                   "camera.protocol.pixel_mm=8.84", "camera.protocol.n_views=30", "monte_carlo.photons=50000",
                   "analysis.bootstrap=50")


# ------------------------------------------------------------------------------------------ timing
def _timed_call(fn, *args, **kwargs):
    """Run ``fn`` and return ``(result, seconds, pid)``; runs where the executor puts it."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, os.getpid()


class StageTimingExecutor(cf.Executor):
    """Executor wrapper that records how long each submitted stage call runs, where it runs.

    ``run_stages`` submits ``(_call, stage_func, task)``; the stage name is ``task.stage``.
    The returned future carries the wrapped call's own result, so the runner sees no
    difference.

    Parameters
    ----------
    inner : concurrent.futures.Executor
        Where the calls run (``SerialExecutor`` or a ``ProcessPoolExecutor``).
    """

    def __init__(self, inner: cf.Executor):
        self.inner = inner
        self.busy_seconds: dict = {}   # stage name -> seconds inside the stage function
        self.pids: set = set()

    def submit(self, fn, /, *args, **kwargs):
        name = getattr(args[-1], "stage", "?") if args else "?"
        outer = cf.Future()
        inner = self.inner.submit(_timed_call, fn, *args, **kwargs)

        def relay(f):
            if outer.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                outer.set_exception(exc)
                return
            result, seconds, pid = f.result()
            self.busy_seconds[name] = self.busy_seconds.get(name, 0.0) + seconds
            self.pids.add(pid)
            outer.set_result(result)

        inner.add_done_callback(relay)
        return outer

    def shutdown(self, wait=True, *, cancel_futures=False):
        self.inner.shutdown(wait=wait, cancel_futures=cancel_futures)


def by_kind(seconds_by_stage: dict) -> dict:
    """Sum stage seconds over stage kinds (``simulate_P001`` -> ``simulate``), as ``run_study`` does."""
    out: dict = {}
    for name, s in seconds_by_stage.items():
        kind = name.split("_")[0]
        out[kind] = out.get(kind, 0.0) + s
    return out


# ------------------------------------------------------------------------------------------ study
def study_config(n_patients: int, workers: int, quick: bool, realisations: int | None = None) -> StudyConfig:
    """The seed-trial preset with ``n_patients`` patients, single-threaded MC when ``workers > 1``.

    ``monte_carlo.photons`` and ``monte_carlo.target_relative_noise`` are exclusive, and
    ``override_study`` cannot remove a key, so the overrides are applied to the study dict
    (``to_dict``) with ``target_relative_noise`` removed when ``--quick`` sets ``photons``.
    """
    if n_patients < 1:
        raise ConfigError(f"--patients = {n_patients}: allowed range [1, 100000]")
    if workers < 1:
        raise ConfigError(f"--workers = {workers}: allowed range [1, 64]")
    base = load_study(preset_path("seed-trial"))
    data = base.to_dict()
    sets = [f"cohort.n_patients={n_patients}"]
    if workers > 1:
        sets.append("monte_carlo.threads=1")
    if realisations is not None:
        if realisations < 1:
            raise ConfigError(f"--realisations = {realisations}: give an integer >= 1")
        sets.append(f"monte_carlo.noise_realisations={realisations}")
    if quick:
        data["monte_carlo"].pop("target_relative_noise", None)
        sets.extend(QUICK_OVERRIDES)
    return StudyConfig.from_dict(apply_overrides(data, sets), f"{base.source} with {sets}")


def warm_up(root: Path) -> float:
    """Run a 1-patient ``--quick`` study serially in this process (not counted); returns its seconds.

    The first study in a process imports the modules and compiles or loads the Numba
    kernels (a minute when the on-disk cache is stale after a source change, a few
    seconds otherwise), a one-off cost a 30-patient run pays once. Afterwards serial runs
    are warm and spawned workers find an up-to-date cache.
    """
    t0 = time.perf_counter()
    run_study(study_config(1, 1, True), root / "warmup", executor=None, progress=False)
    shutil.rmtree(root / "warmup", ignore_errors=True)
    return time.perf_counter() - t0


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its waited-for children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_once(n_patients: int, workers: int, quick: bool, study_dir: Path, warm: bool = False,
             realisations: int | None = None) -> dict:
    """One fresh run of the study; returns the row of ``runs``.

    ``warm`` is recorded as ``main_process_warm``: a serial run after another serial run
    in this process finds the modules imported and the Numba kernels loaded.
    """
    cfg = study_config(n_patients, workers, quick, realisations)
    inner = SerialExecutor() if workers == 1 else cf.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"))
    ex = StageTimingExecutor(inner)
    load_before = os.getloadavg()
    cpu_before = _cpu_seconds()
    try:
        summary = run_study(cfg, study_dir, executor=ex, progress=False)
    finally:
        ex.shutdown(wait=True)
    not_ran = {k: v for k, v in summary["stage_status"].items() if v != "ran"}
    if not_ran:
        raise DataError(f"study folder {study_dir} was not fresh: stages {not_ran} did not run")
    return {"patients": n_patients, "workers": workers, "wall_seconds": round(summary["wall_seconds"], 2),
            "stage_seconds": {k: round(v, 2) for k, v in summary["stage_seconds"].items()},
            "busy_seconds": {k: round(v, 2) for k, v in by_kind(ex.busy_seconds).items()},
            "scans": summary["scans"], "summary_patients": summary["patients"],
            "noise_realisations": cfg.monte_carlo.noise_realisations,
            "threads": cfg.monte_carlo.threads, "processes_used": len(ex.pids),
            "main_process_warm": bool(warm and workers == 1),
            "cpu_seconds": round(_cpu_seconds() - cpu_before, 2),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()]}


def recon_batch_cost(study_dir: Path, quick: bool, realisations: int) -> dict:
    """Seconds of one reconstruction and of the batch of ``realisations`` of the first scan of a finished study.

    Uses the study's own noisy realisations, attenuation map and calibration (the stage's code path:
    :func:`her2sim.steps.scan.reconstruct_scan` for one, :func:`her2sim.steps.scan.reconstruct_realisations`
    for the batch), each after an untimed warm-up call of its kind.
    """
    import json as _json

    from her2sim.core.containers import Phantom, Projections
    from her2sim.pipeline import build_stages
    from her2sim.steps.params import StepParams
    from her2sim.steps.scan import attenuation_map, recon_grid, reconstruct_realisations, reconstruct_scan

    cfg = study_config(1, 1, quick, realisations)
    stage = next(s for s in build_stages(cfg) if s.name.startswith("recon_"))
    step = StepParams.from_params(stage.params, stage.name)
    pdir = sorted(p for p in (study_dir / "patients").iterdir() if p.is_dir())[0]
    ph = Phantom.load(pdir / "phantom.h5")
    tdir = pdir / f"t{ph.time_points_h[0]:g}h"
    projs = [Projections.load(tdir / f"noisy_r{k}.h5") for k in range(realisations)]
    grid = recon_grid(step.camera, ph.grid)
    mu = attenuation_map(ph, grid, step.recon)
    cps = _json.loads((study_dir / "calibration" / "calibration.json").read_text())["cps_per_bq"]
    reconstruct_scan(projs[0], mu, grid, step.recon, step.camera, cps_per_bq=cps, phantom=ph)
    t0 = time.perf_counter()
    reconstruct_scan(projs[0], mu, grid, step.recon, step.camera, cps_per_bq=cps, phantom=ph)
    single = time.perf_counter() - t0
    reconstruct_realisations(projs[:1], mu, grid, step.recon, step.camera, cps_per_bq=cps)
    t0 = time.perf_counter()
    reconstruct_realisations(projs, mu, grid, step.recon, step.camera, cps_per_bq=cps)
    batch = time.perf_counter() - t0
    return {"realisations": realisations, "single_recon_seconds": round(single, 2),
            "batch_recon_seconds": round(batch, 2), "batch_over_single_cost_ratio": round(batch / single, 2),
            "per_realisation_cost_ratio": round(batch / (realisations * single), 3),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


# ------------------------------------------------------------------------------------------ figures
def _kind_sum(row: dict, kinds) -> float:
    return sum(row["busy_seconds"].get(k, 0.0) for k in kinds)


def derived_figures(runs: list, quick: bool) -> dict:
    """``seconds_per_scan``, the 30-patient extrapolation and the 2-worker speed-up from ``runs``."""
    per_scan = [_kind_sum(r, PER_SCAN_KINDS) / r["scans"] for r in runs]
    serial = [r for r in runs if r["workers"] == 1]
    out = {"seconds_per_scan": round(statistics.median(per_scan), 2) if per_scan else None,
           "seconds_per_scan_1_worker": (round(statistics.median(_kind_sum(r, PER_SCAN_KINDS) / r["scans"]
                                                                 for r in serial), 2) if serial else None),
           "extrapolated_basis": "quick" if quick else "full"}
    if serial:
        scan_s = statistics.median(_kind_sum(r, PER_SCAN_KINDS) / r["scans"] for r in serial)
        patient_s = statistics.median(_kind_sum(r, PER_PATIENT_KINDS) / r["patients"] for r in serial)
        fixed_s = statistics.median(_kind_sum(r, FIXED_KINDS) for r in serial)
        total = fixed_s + N_PATIENTS_TRIAL * patient_s + N_PATIENTS_TRIAL * N_TIMEPOINTS_TRIAL * scan_s
        out["extrapolated_minutes_30_patients_2_timepoints"] = round(total / 60.0, 1)
        out["extrapolation_terms_seconds"] = {"per_scan": round(scan_s, 2), "per_patient": round(patient_s, 2),
                                              "fixed": round(fixed_s, 2)}
    else:
        out["extrapolated_minutes_30_patients_2_timepoints"] = None
    speedups = {}
    for n in sorted({r["patients"] for r in runs}):
        w1 = [r["wall_seconds"] for r in runs if r["patients"] == n and r["workers"] == 1]
        w2 = [r["wall_seconds"] for r in runs if r["patients"] == n and r["workers"] == 2]
        if w1 and w2:
            speedups[str(n)] = round(statistics.median(w1) / statistics.median(w2), 2)
    out["worker_speedup_2"] = speedups[max(speedups, key=int)] if speedups else None
    out["worker_speedup_2_by_patients"] = speedups
    if out["worker_speedup_2"] and out["extrapolated_minutes_30_patients_2_timepoints"] is not None:
        out["extrapolated_minutes_30_patients_2_timepoints_2_workers"] = round(
            out["extrapolated_minutes_30_patients_2_timepoints"] / out["worker_speedup_2"], 1)
    return out


def _int_list(text: str, field: str) -> list:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{field} = {text!r}: give comma-separated integers >= 1, e.g. 1,2") from None
    if not vals or min(vals) < 1:
        raise ConfigError(f"{field} = {text!r}: give comma-separated integers >= 1, e.g. 1,2")
    return vals


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="shrunken grid/views/photons (minutes, not hours)")
    ap.add_argument("--patients", default="1,2", help="comma-separated cohort sizes (default 1,2)")
    ap.add_argument("--workers", default="1,2", help="comma-separated local worker counts (default 1,2)")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                    help="run an uncounted 1-patient quick study first to load/compile the Numba kernels "
                         "(default: on for full runs, off with --quick)")
    ap.add_argument("--out-dir", help="keep the study folders here (default: a temporary folder, deleted)")
    ap.add_argument("--realisations", type=int, default=None,
                    help="monte_carlo.noise_realisations per scan (default: the preset's); also times one "
                         "reconstruction against the batch of N")
    args = ap.parse_args(argv)
    if args.realisations is not None and args.realisations < 1:
        raise ConfigError(f"--realisations = {args.realisations}: give an integer >= 1")
    patients = _int_list(args.patients, "--patients")
    workers = _int_list(args.workers, "--workers")

    t0 = time.perf_counter()
    load_start = os.getloadavg()
    root = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="her2sim_e2e_"))
    runs = []
    warmup_s = None
    try:
        if args.warmup or (args.warmup is None and not args.quick):
            warmup_s = round(warm_up(root), 1)
        for n in patients:
            for w in workers:
                sd = root / f"{'quick' if args.quick else 'full'}_p{n}_w{w}"
                if sd.exists():
                    shutil.rmtree(sd)
                runs.append(run_once(n, w, args.quick, sd, warm=warmup_s is not None or any(r["workers"] == 1 for r in runs),
                                     realisations=args.realisations))
                if not args.json:
                    r = runs[-1]
                    print(f"{n} patient(s), {w} worker(s): {r['wall_seconds']:.1f} s wall, busy "
                          + ", ".join(f"{k} {v:.1f}" for k, v in r["busy_seconds"].items())
                          + f" s; load {r['load_average_after'][0]:.2f}", flush=True)
        batch_cost = None
        if args.realisations:
            serial = [r for r in runs if r["workers"] == 1] or runs
            first = root / f"{'quick' if args.quick else 'full'}_p{serial[0]['patients']}_w{serial[0]['workers']}"
            batch_cost = recon_batch_cost(first, args.quick, args.realisations)
    finally:
        if not args.out_dir:
            shutil.rmtree(root, ignore_errors=True)
    out = {"mode": "quick" if args.quick else "full", "warmup_seconds": warmup_s, "runs": runs,
           "noise_realisations": args.realisations or 1}
    out.update(derived_figures(runs, args.quick))
    if batch_cost is not None:
        out["recon_batch_cost"] = batch_cost
        out["batch_over_single_cost_ratio"] = batch_cost["batch_over_single_cost_ratio"]
    out["cpu_count"] = os.cpu_count()
    out["load_average"] = {"start": [round(x, 2) for x in load_start],
                           "end": [round(x, 2) for x in os.getloadavg()]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            if k != "runs":
                print(f"{k}: {v}")
    return out


if __name__ == "__main__":
    main()
