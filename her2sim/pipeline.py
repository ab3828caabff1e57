"""The virtual-study pipeline: phantom -> Monte Carlo -> Poisson -> OSEM -> SUV/PVC -> statistics -> report.

Every step is a :class:`her2sim.stages.Stage` whose products are files in the study
folder, so a killed run resumes where it stopped and a changed setting recomputes only
what depends on it. Per patient there are four stages (``phantom_<id>``,
``simulate_<id>``, ``recon_<id>``, ``quantify_<id>``), and ``whole_body_<id>`` with
``[whole_body] enabled``; a ``calibration`` stage turns
counts into Bq/mL (and measures IEC recovery coefficients); ``statistics`` and
``report`` close the study.

This module assembles the stages (:func:`build_stages`), checks a study before any work
(:func:`check_noise_realisations`, :func:`her2sim.config.preflight`) and runs it
(:func:`run_study`). The stage functions themselves are the steps of :mod:`her2sim.steps`,
one module each, and take their parameters as a typed :class:`her2sim.steps.params.StepParams`.

Study folder layout::

    study.resolved.toml             resolved configuration (the study file given is never overwritten)
    .her2sim.lock                   PID and host of the run writing the folder (while it runs)
    (every path from :class:`her2sim.study_layout.StudyLayout`)
    calibration/                    phantom.h5 expected.h5 recon.h5 calibration.json
    patients/<id>/phantom.h5        Phantom (truth table inside)
    patients/<id>/t<H>h/            expected.h5, noisy_r<K>.h5, recon_r<K>.h5
    patients/<id>/lesions.json      measured vs true lesion rows
    patients/<id>/whole_body.h5     planar whole-body sweeps ([whole_body] enabled)
    results/lesions.csv, results/summary.json, results/figures/*.png
    report.html
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from her2sim.config import (RESOLVED_NAME, MonteCarloSection, OutputSection, PhantomSection, StudyConfig, preflight,
                            save_study)
from her2sim.core.errors import ConfigError
from her2sim.core.hdf5io import to_json
from her2sim.phantoms import generate_cohort
from her2sim.recon.osem import batch_memory_bytes
from her2sim.stages import Stage, run_stages, study_lock
from her2sim.steps.calibration import stage_calibration
from her2sim.steps.common import derive_seed
from her2sim.steps.dicom import stage_dicom
from her2sim.steps.phantom import stage_phantom
from her2sim.steps.quantify import stage_quantify
from her2sim.steps.recon import stage_recon
from her2sim.steps.report import stage_report
from her2sim.steps.simulate import PILOT_HISTORIES, stage_simulate
from her2sim.steps.statistics import stage_statistics
from her2sim.steps.whole_body import stage_whole_body
from her2sim.study_layout import StudyLayout

#: bump when a stage's function changes what it writes (part of every stage key)
PIPELINE_VERSION = 2  # 2: exact recon support (recon outputs change)


# ------------------------------------------------------------------------------------------ assembly
def patient_specs(cfg: StudyConfig) -> list:
    """The study's patients as phantom specs (cohort draw, or one patient from ``[phantom]``)."""

    if cfg.cohort is not None:
        cohort = generate_cohort(cfg.cohort.preset, seed=cfg.cohort.seed)
        pats = cohort["patients"][: cfg.cohort.n_patients]  # n_patients <= the preset's size (config check)
        extra = cfg.lesion_specs()  # [[phantom.lesions]] beside [cohort]: fixed lesions added to every patient
        if extra:
            pats = [dict(pt, lesions=list(pt.get("lesions") or []) + [dict(x) for x in extra]) for pt in pats]
    elif cfg.phantom.preset in ("demo", "torso"):
        pats = [dict(generate_cohort("demo", seed=cfg.study.seed)["patients"][0])]
        pats[0].update({"weight_kg": cfg.phantom.weight_kg, "height_cm": cfg.phantom.height_cm})
        specs = cfg.lesion_specs()  # [[phantom.lesions]] or a table of per-lesion lists
        if specs:
            pats[0]["lesions"] = specs
        elif cfg.phantom.preset == "torso":  # as phantoms.preset_phantom: default lesions are preset 'demo's
            raise ConfigError("phantom.lesions: phantom.preset = 'torso' without [cohort] has only the lesions "
                              "phantom.lesions gives, and none are given; add [[phantom.lesions]] or set "
                              "phantom.preset = 'demo' (the demo cohort's first patient with its lesions)")
    else:
        raise ConfigError(f"phantom.preset = {cfg.phantom.preset!r}: the pipeline runs patient studies "
                          "(demo, torso or a [cohort]); use the calibration section for test objects")
    out = []
    for p in pats:
        p = dict(p)
        p.pop("grid", None)
        if cfg.phantom.anatomy != "v1":     # v1 (the library's default) stays out of the stage keys of v1 studies
            p["anatomy"] = cfg.phantom.anatomy
        if cfg.phantom.breast_volume_ml is not None:
            p["breast_volume_ml"] = cfg.phantom.breast_volume_ml
        p["injected_mbq"] = p.get("injected_mbq", cfg.tracer.injected_mbq) if cfg.cohort else cfg.tracer.injected_mbq
        p["time_points_h"] = list(cfg.tracer.time_points_h)
        out.append(json.loads(to_json(p)))
    return out


def _non_default(**values) -> dict:
    """``{key: value}`` for each ``key=(value, default)`` whose value is not the default: a stage parameter
    added after studies were run stays out of the stage key at its default, so those studies resume."""
    return {k: v for k, (v, default) in values.items() if v != default}


def _whole_body_dict(cfg: StudyConfig) -> dict:
    """The ``[whole_body]`` section as a ``whole_body_<id>`` stage carries it (JSON values)."""
    return cfg.to_dict()["whole_body"]


def build_stages(cfg: StudyConfig) -> list:
    """All stages of a study, with their parameters (the keys of resumability)."""
    lay = StudyLayout(Path("."))   # stage outputs are declared relative to the study folder
    g = cfg.phantom.grid()
    cam = cfg.camera
    mc = cfg.monte_carlo
    histories = int(mc.effective_photons) if mc.effective_photons else None
    common = {"version": PIPELINE_VERSION, "seed": int(cfg.mc_seed), "camera": cam.to_dict(),
              "grid": {"shape": list(g.shape), "spacing_mm": list(g.spacing_mm)},
              "monte_carlo": {"histories": histories, "target_relative_noise": mc.target_relative_noise,
                              "calibration_histories": max(10_000, (histories or PILOT_HISTORIES) // 4),
                              "noise_realisations": mc.noise_realisations, "threads": mc.threads,
                              **_non_default(mode=(mc.mode, MonteCarloSection.mode))},
              "recon": {"iterations": cfg.recon.iterations, "subsets": cfg.recon.subsets, "psf": cfg.recon.psf,
                        "penetration": cfg.recon.penetration,
                        "scatter": cfg.recon.scatter, "scatter_histories": cfg.recon.scatter_histories,
                        "scatter_smooth_fwhm_mm": cfg.recon.scatter_smooth_fwhm_mm, "mu_map": cfg.recon.mu_map,
                        "attenuation": cfg.recon.attenuation, "post_filter_fwhm_mm": cfg.recon.post_filter_fwhm_mm,
                        "butterworth_cutoff_cycles_per_cm": cfg.recon.butterworth_cutoff_cycles_per_cm,
                        "butterworth_order": cfg.recon.butterworth_order}}
    analysis = {"threshold": cfg.analysis.threshold, "metrics": list(cfg.analysis.metrics),
                "pvc_methods": list(cfg.analysis.pvc_methods), "psf_fwhm_mm": cfg.analysis.psf_fwhm_mm,
                "bootstrap": cfg.analysis.bootstrap, "rose_k": cfg.analysis.rose_k, "voi": cfg.analysis.voi,
                "voi_margin_mm": cfg.analysis.voi_margin_mm,
                "voi_threshold_fraction": cfg.analysis.voi_threshold_fraction,
                "min_voi_voxels": cfg.analysis.min_voi_voxels, "pvc_response": cfg.analysis.pvc_response}
    figures = _non_default(figures=(cfg.output.figures, OutputSection.figures))
    stages = [Stage("calibration", [], dict(common, calibration={"phantom": cfg.calibration.phantom,
                                                                   "activity_mbq": cfg.calibration.activity_mbq,
                                                                   "ratio": 4.0}),
                    stage_calibration, ["calibration/calibration.json"])]
    # resolution for PVC when not configured: system FWHM at the orbit radius minus ~10 cm depth (recon with PSF
    # recovers part of it; the user can set analysis.psf_fwhm_mm from a measured point source)
    psf_fwhm = float(cam.system_fwhm_mm(max(cam.protocol.radius_mm - 100.0, 50.0)))
    ids = []
    for i, spec in enumerate(patient_specs(cfg)):
        pid = spec["id"]
        ids.append(pid)
        pp = dict(common, patient=spec, patient_seed=int(spec.get("seed", derive_seed(cfg.study.seed, i, 0))),
                  index=i, patient_id=pid)
        stages.append(Stage(f"phantom_{pid}", [], {**{k: pp[k] for k in ("version", "grid", "patient", "patient_seed",
                                                                             "patient_id")}, **figures},
                            stage_phantom, [lay.relative(lay.phantom(pid))]))
        stages.append(Stage(f"simulate_{pid}", [f"phantom_{pid}"],
                            {k: pp[k] for k in ("version", "seed", "camera", "monte_carlo", "index", "patient_id")},
                            stage_simulate, [lay.relative(lay.expected(pid, t))
                                             for t in cfg.tracer.time_points_h]))
        stages.append(Stage(f"recon_{pid}", [f"simulate_{pid}", "calibration"],
                            {k: pp[k] for k in ("version", "seed", "index", "camera", "grid", "recon", "monte_carlo",
                                                "patient_id")},
                            stage_recon, [lay.relative(lay.recon(pid, t)) for t in cfg.tracer.time_points_h]))
        stages.append(Stage(f"quantify_{pid}", [f"recon_{pid}", "calibration"],
                            {"version": PIPELINE_VERSION, "grid": common["grid"], "analysis": analysis,
                             "monte_carlo": common["monte_carlo"], "patient_id": pid, "psf_fwhm_mm": psf_fwhm,
                             "recon": common["recon"], "camera": common["camera"], **figures},
                            stage_quantify, [lay.relative(lay.lesions_json(pid))]))
        if cfg.whole_body.enabled:
            stages.append(Stage(f"whole_body_{pid}", [f"recon_{pid}"],
                                {**{k: pp[k] for k in ("version", "seed", "index", "camera", "patient", "patient_seed",
                                                       "patient_id")},
                                 "whole_body": json.loads(to_json(_whole_body_dict(cfg))), **figures},
                                stage_whole_body, [lay.relative(lay.whole_body(pid))]))
    stages.append(Stage("statistics", [f"quantify_{pid}" for pid in ids] + ["calibration"],
                        {"version": PIPELINE_VERSION, "analysis": analysis, "patient_ids": ids,
                         "study_name": cfg.study.name, "seed": int(cfg.study.seed), "mc_seed": int(cfg.mc_seed),
                         "config": json.loads(to_json(cfg.to_dict())), **figures},
                        stage_statistics, ["results/summary.json"]))
    wb_stages = [f"whole_body_{pid}" for pid in ids] if cfg.whole_body.enabled else []
    stages.append(Stage("report", ["statistics"] + wb_stages, {"version": PIPELINE_VERSION, "format": cfg.output.report},
                        stage_report, ["report.html" if cfg.output.report == "html" else "report.md"]))
    if cfg.output.dicom:
        stages.append(Stage("dicom", [f"recon_{pid}" for pid in ids],
                            {"version": PIPELINE_VERSION, **_non_default(ct=(cfg.phantom.ct, PhantomSection.ct))},
                            stage_dicom, ["dicom/series.json", "dicom"]))  # the folder: every DICOM file
    return stages


def available_memory_bytes() -> int:
    """Memory the OS can give this process now (``MemAvailable`` of /proc/meminfo; physical memory
    when that is unreadable)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


#: share of the available memory one batched reconstruction may plan to use
MEMORY_FRACTION = 0.8


def check_noise_realisations(cfg: StudyConfig, available_bytes: int | None = None) -> int:
    """``monte_carlo.noise_realisations`` N as an int, or a one-line ConfigError when N < 1 or when the
    batched reconstruction of N realisations of one scan (:func:`her2sim.recon.osem.batch_memory_bytes`)
    would not fit in :data:`MEMORY_FRACTION` of the available memory. Runs before any stage."""

    n = cfg.monte_carlo.noise_realisations
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"monte_carlo.noise_realisations = {n!r}: give an integer >= 1 (Poisson realisations "
                          f"per scan)")
    cam = cfg.camera
    m = int(cam.protocol.matrix)
    grid_shape = (m, m, m)  # the recon grid: detector rows x matrix x matrix (recon.grid_for_geometry)
    proj_shape = (int(cam.protocol.n_views), m, m)
    threads = int(cfg.monte_carlo.threads or 0) or (os.cpu_count() or 1)
    fixed = batch_memory_bytes(grid_shape, proj_shape, len(cam.windows), 0, threads)
    per = batch_memory_bytes(grid_shape, proj_shape, len(cam.windows), 1, threads) - fixed
    need = fixed + int(n) * per
    avail = available_memory_bytes() if available_bytes is None else int(available_bytes)
    if need > MEMORY_FRACTION * avail:
        n_max = max(0, int((MEMORY_FRACTION * avail - fixed) // per))
        raise ConfigError(f"monte_carlo.noise_realisations = {n}: reconstructing them as one batch needs "
                          f"~{need / 2**30:.1f} GiB but {avail / 2**30:.1f} GiB is available (limit "
                          f"{MEMORY_FRACTION:.0%}); use at most {n_max} on this machine")
    return int(n)


def run_study(cfg: StudyConfig, study_dir=None, executor=None, progress: bool = True, workers: int = 1) -> dict:
    """Run (or resume) a study; returns the JSON summary the CLI prints.

    Parameters
    ----------
    cfg : StudyConfig
    study_dir : path-like, optional
        Defaults to ``cfg.study.output_dir``.
    executor : concurrent.futures.Executor, optional
        Where independent stages run (serial by default).
    progress : bool
    workers : int
        Worker processes of ``executor`` (sizes the memory check of :func:`her2sim.config.preflight`).

    Raises
    ------
    ConfigError
        Before any work: the study does not fit in memory, a lesion lies outside the grid, the study
        folder is a file, or the resolved copy would overwrite the study file given.
    DataError
        Another run holds the study folder (:func:`her2sim.stages.study_lock`).
    """
    check_noise_realisations(cfg)  # one-line error before any work (N < 1, or more than fits in memory)
    sd = Path(study_dir or cfg.study.output_dir)
    preflight(cfg, workers)
    stages = build_stages(cfg)
    if sd.exists() and not sd.is_dir():
        raise ConfigError(f"{sd}: the study folder path exists and is not a folder (study.output_dir / --out)")
    resolved = sd / RESOLVED_NAME
    src = Path(cfg.source_path) if cfg.source_path else None
    if src is not None and resolved.exists() and src.exists() and resolved.samefile(src):
        raise ConfigError(f"{resolved}: the study file given is the study folder's resolved copy; "
                          f"refusing to overwrite it (copy it elsewhere or choose another --out)")
    sd.mkdir(parents=True, exist_ok=True)
    with study_lock(sd):
        save_study(cfg, resolved)
        t0 = time.perf_counter()
        results = run_stages(stages, sd, executor=executor, progress=progress)
    summary_path = StudyLayout(sd).summary_json
    summary = json.loads(summary_path.read_text())
    stage_seconds = {}
    per_patient = {s.name: s.name[: -len(s.params["patient_id"]) - 1] for s in stages if "patient_id" in s.params}
    for name, r in results.items():
        kind = per_patient.get(name, name)   # phantom_P001 -> phantom, whole_body_P001 -> whole_body
        stage_seconds[kind] = stage_seconds.get(kind, 0.0) + r.seconds
    n_scans = len([1 for s in stages if s.name.startswith("simulate_")]) * len(cfg.tracer.time_points_h)
    summary.update({
        "patients": summary.get("patients"), "scans": n_scans, "stage_seconds": stage_seconds,
        "stage_status": {n: r.status for n, r in results.items()}, "wall_seconds": time.perf_counter() - t0,
        "outputs": {"study_dir": str(sd), "summary": str(summary_path), "lesions_csv": str(StudyLayout(sd).lesions_csv),
                    "dicom": json.loads((sd / "dicom" / "series.json").read_text())
                    if (sd / "dicom" / "series.json").exists() and cfg.output.dicom else [],
                    "report": str(sd / ("report.html" if cfg.output.report == "html" else "report.md")),
                    "figures": summary.get("figures", []),
                    "hdf5": sorted(str(p) for p in sd.glob("patients/*/**/*.h5"))},
    })
    return summary
