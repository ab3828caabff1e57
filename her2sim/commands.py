"""Subcommands that run the study stages: demo, run, phantom, cohort, simulate, recon, analyze.

Each prints a short human summary and, with ``--json``, one JSON object with stable keys.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from her2sim.core.errors import ConfigError, DataError
from her2sim.core.jsonio import print_json as _print_json


#: seconds to wait for a Dask scheduler before giving up (``her2sim run --dask ADDRESS``)
DASK_CONNECT_TIMEOUT_S = 5


def _executor(args):
    """Executor for independent stages: serial, local processes (--workers N) or Dask (--dask ADDRESS).

    Raises
    ------
    ConfigError
        ``--workers`` together with ``--dask``, the Dask extra is not installed, or the scheduler cannot be
        reached within ``DASK_CONNECT_TIMEOUT_S`` seconds (the message names the address).
    """
    workers = getattr(args, "workers", 1)
    if getattr(args, "dask", None):
        if workers != 1:
            raise ConfigError(f"--workers = {workers} and --dask = {args.dask!r} exclude each other: the Dask "
                              "cluster decides where stages run")
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("--dask needs the optional extra: pip install 'her2sim[cluster]'") from None
        try:
            client = Client(args.dask, timeout=f"{DASK_CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ConfigError(f"--dask = {args.dask!r}: cannot reach the Dask scheduler within "
                              f"{DASK_CONNECT_TIMEOUT_S} s ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None
        return client.get_executor()
    if workers > 1:
        import concurrent.futures as cf
        import multiprocessing as mp
        return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    return None


def _check_creatable(option: str, p: Path, start: Path) -> None:
    """The nearest existing ancestor of ``start`` must be a writable folder (so ``p`` can be created)."""
    probe = start
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{option} {p}: {probe} is a file, so the folder cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {p}: {probe} is not writable (permission denied)")


def _out_dir(option: str, path) -> Path:
    """Check an output folder option before any work: not an existing file; creatable and writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {p}: exists and is not a folder; give a folder (it is created if absent)")
    _check_creatable(option, p, p)
    return p


def _out_file(option: str, path) -> Path:
    """Check an output file option before any work: not a folder; its folder creatable and writable."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {p}: is a folder; give the path of the file to write")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{option} {p}: exists and is not writable (permission denied)")
    _check_creatable(option, p, p.parent)
    return p


def _print_study_summary(s: dict) -> None:
    print(f"study {s.get('study')}: {s.get('patients')} patient(s), {s.get('scans')} scan(s), "
          f"{s.get('lesions')} lesion measurements, {s.get('wall_seconds', 0):.1f} s")
    if s.get("lesions_truth") is not None:
        why = s.get("unmeasured_by_reason") or {}
        print(f"  lesions: {s['lesions_truth']} in the truth, {s.get('lesions_measured')} measured"
              + (" (unmeasured: " + ", ".join(f"{k} {v}" for k, v in sorted(why.items())) + ")" if why else ""))
    for k, v in s.get("stage_seconds", {}).items():
        print(f"  stage {k:<12} {v:8.1f} s")
    cal = s.get("calibration", {})
    if cal:
        print(f"  calibration: {cal.get('phantom')} -> {cal.get('sensitivity_cps_per_mbq', float('nan')):.2f} cps/MBq "
              "(reconstructed, all views)")
        if "rc" in cal:
            print("  IEC contrast recovery of the mean: " + ", ".join(f"{k} mm {v:.2f}" for k, v in sorted(cal["rc"].items(),
                                                                                         key=lambda kv: -float(kv[0]))))
    print(f"  {'metric':<26}{'Se':>6}{'Sp':>6}{'AUC':>7}  Youden cut-off")
    for name, t in s.get("threshold", {}).items():
        fmt = lambda x: "  n/a" if x is None else f"{x:6.2f}"  # noqa: E731
        yt = t.get("youden_threshold")
        print(f"  {name:<26}{fmt(t.get('sensitivity'))}{fmt(t.get('specificity'))} {fmt(t.get('auc'))}  "
              f"{'n/a' if yt is None else f'{yt:.2f}'}")
    out = s.get("outputs", {})
    print(f"  report: {out.get('report')}\n  lesion table: {out.get('lesions_csv')}")


def cmd_run(args) -> int:
    from her2sim.config import load_study, override_study

    cfg = load_study(args.study)
    if args.set:
        cfg = override_study(cfg, args.set)
    _out_dir("--out" if args.out else "study.output_dir", args.out or cfg.study.output_dir)
    if args.log:
        _out_file("--log", args.log)
    from her2sim.config import preflight
    preflight(cfg, args.workers)  # every check before the log, the executor or the study folder is touched
    _setup_log(args.log)
    return _run_and_report(cfg, args.out, _executor(args), args)


def _run_and_report(cfg, out, executor, args) -> int:
    """Run (or resume) a study and print its summary as text or JSON."""
    from her2sim.pipeline import run_study

    try:
        summary = run_study(cfg, out, executor=executor, progress=not (args.quiet or args.json),
                            workers=getattr(args, "workers", 1))
    except BaseException:
        if executor is not None:  # do not wait for the other workers' pieces before reporting the error
            try:
                executor.shutdown(wait=False, cancel_futures=True)
            except TypeError:  # executors without cancel_futures (Dask's)
                executor.shutdown(wait=False)
        raise
    if executor is not None:
        executor.shutdown(wait=True)
    if args.json:
        _print_json(summary)
    else:
        _print_study_summary(summary)
    return 0


def _setup_log(path) -> None:
    """Send the stage log (start, skip, finish, seconds) to ``path`` when given."""
    if not path:
        return
    import logging
    path = _out_file("--log", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("her2sim")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def cmd_demo(args) -> int:
    from her2sim.config import load_study, preset_path

    out = _out_dir("--out", args.out)
    return _run_and_report(load_study(preset_path("demo")), out, None, args)


def cmd_cohort(args) -> int:
    from her2sim.phantoms import cohort_summary, generate_cohort

    cohort = generate_cohort(args.spec or args.preset, seed=args.seed)
    s = cohort_summary(cohort)
    if args.json:
        _print_json(s)
    else:
        print(f"cohort {cohort['name']} (seed {args.seed}): {s['patients']} patients "
              f"({s['newly_diagnosed']} newly diagnosed, {s['treated']} treated), {s['primaries']} primaries")
        print("  IHC (primaries): " + ", ".join(f"{k}: {v}" for k, v in s["ihc_counts"].items()))
        print("  metastases (patients): " + ", ".join(f"{k}: {v}" for k, v in s["metastases"].items()))
        print(f"  chest inflammation: {s['inflammation']}, visible heterogeneity: {s['heterogeneous']}")
    return 0


def cmd_phantom(args) -> int:
    from her2sim.core.grid import Grid
    from her2sim.phantoms import build_patient_phantom, generate_cohort, phantom_summary, plot_phantom
    from her2sim.phantoms.whole_body import whole_body_grid

    from her2sim.core.limits import check_memory, estimate_peak_memory_bytes

    if args.out:
        _out_dir("--out", args.out)
    cohort = generate_cohort(args.preset, seed=args.seed)
    n = len(cohort["patients"])
    if not 0 <= args.patient < n:
        raise ConfigError(f"--patient = {args.patient} is outside the allowed range [0, {n - 1}] "
                          f"(cohort {args.preset!r} has {n} patient(s))")
    spec = dict(cohort["patients"][args.patient])
    if args.anatomy != "v1":
        spec["anatomy"] = args.anatomy
    grid = None
    if args.extent != "torso":
        spec["extent"] = args.extent
        spec.pop("grid", None)
        if not args.shape:
            grid = whole_body_grid(args.spacing_mm, float(spec.get("height_cm", 160.0)))
    if args.shape:
        grid = Grid.centered(tuple(args.shape), args.spacing_mm)
        n_t = len(spec.get("time_points_h") or (1.0, 2.0))
        est = estimate_peak_memory_bytes(args.shape, n_t, n_views=1, matrix=4, n_windows=1)
        check_memory(f"--shape {' '.join(map(str, args.shape))}", est)
    ph = build_patient_phantom(spec, grid, seed=args.seed)
    s = phantom_summary(ph)
    if args.out:
        out = Path(args.out)
        ph.save(out / "phantom.h5")
        png = plot_phantom(ph, out / "phantom.png")
        s["outputs"] = {"hdf5": str(out / "phantom.h5"), "png": str(png)}
    if args.json:
        _print_json(s)
    else:
        print(f"phantom {spec['id']} of preset {args.preset} (seed {args.seed}): grid {ph.grid.shape} x "
              f"{ph.grid.spacing_mm[0]:g} mm")
        tot = s.get("total_activity_mbq", [])
        print("  activity in FOV: " + ", ".join(f"{t:g} h: {v:.1f} MBq" for t, v in zip(s["time_points_h"], tot)))
        for name, org in sorted(s.get("organs", {}).items()):
            vol = org.get("volume_ml") if isinstance(org, dict) else org
            if vol:
                print(f"  organ {name:<22} {vol:9.1f} mL")
        for les in s.get("lesions", []):
            print(f"  lesion {les.get('id')}: {les.get('type')} IHC {les.get('ihc')} "
                  f"{les.get('volume_ml') or 0:.2f} mL, HER2 {'+' if les.get('her2_positive') else '-'}")
        if args.out:
            print(f"  wrote {s['outputs']['hdf5']} and {s['outputs']['png']}")
    return 0


def cmd_simulate(args) -> int:
    from her2sim.core.containers import Phantom
    from her2sim.sim.camera import Camera
    from her2sim.sim.spectra import plot_spectra
    from her2sim.sim.transport import MonteCarloSettings, poisson_realisations, simulate_projections

    out = _out_dir("--out", args.out)
    ph = Phantom.load(args.phantom)
    if not 0 <= args.frame < len(ph.time_points_h):
        raise ConfigError(f"--frame = {args.frame} is outside the allowed range [0, {len(ph.time_points_h) - 1}] "
                          f"({args.phantom} has time points {list(ph.time_points_h)} h)")
    cam = Camera.from_toml(args.camera) if args.camera else Camera()
    given = {"n_views": args.views, "matrix": args.matrix, "pixel_mm": args.pixel_mm, "radius_mm": args.radius_mm}
    given = {k: v for k, v in given.items() if v is not None}  # 0 is a value (refused), never "use the default"
    if given:
        from dataclasses import replace
        options = {"n_views": "--views", "matrix": "--matrix", "pixel_mm": "--pixel-mm", "radius_mm": "--radius-mm"}
        try:
            cam = replace(cam, protocol=replace(cam.protocol, **given))
        except ConfigError as exc:
            msg = str(exc)
            for k, opt in options.items():
                msg = msg.replace(f"protocol.{k}", f"{opt} (protocol.{k})")
            raise ConfigError(msg) from None
    st = MonteCarloSettings(n_histories=args.histories, seed=args.seed, threads=args.threads)
    res = simulate_projections(ph, cam, st, frame=args.frame, progress=not args.json)
    res.projections.save(out / "expected.h5")
    files = {"expected": str(out / "expected.h5")}
    for k, noisy in enumerate(poisson_realisations(res.projections, args.realisations, seed=args.seed + 1)):
        noisy.save(out / f"noisy_r{k}.h5")
        files[f"noisy_r{k}"] = str(out / f"noisy_r{k}.h5")
    files["spectra_png"] = str(plot_spectra(res, out / "spectra.png"))
    summary = {"windows": res.summary(), "stats": res.stats, "outputs": files}
    if args.json:
        _print_json(summary)
    else:
        from her2sim.sim.spectra import summary_text
        print(summary_text(res))
        print(f"wrote {files['expected']} and {args.realisations} noisy realisation(s)")
    return 0


def _camera_for(projections, camera_toml=None):
    """The camera (default NM670 or ``camera_toml``) with the protocol and windows of ``projections``."""
    from dataclasses import replace

    from her2sim.sim.camera import Camera

    cam = Camera.from_toml(camera_toml) if camera_toml else Camera()
    geo = projections.geometry
    nv, nu = geo.shape_vu
    if nv != nu or abs(geo.pixel_mm[0] - geo.pixel_mm[1]) > 1e-6:
        raise DataError(f"projections: detector {nv} x {nu} pixels of {geo.pixel_mm} mm; the camera protocol "
                        "describes square matrices of square pixels only")
    radius = float(np.median(geo.radii_mm))
    pr = replace(cam.protocol, n_views=geo.n_views, matrix=int(nu), pixel_mm=float(geo.pixel_mm[1]),
                 radius_mm=radius, start_deg=float(geo.angles_deg[0]),
                 time_per_view_s=_time_per_view_s(projections) or cam.protocol.time_per_view_s)
    return replace(cam, protocol=pr, windows=tuple(projections.windows))


def _time_per_view_s(projections) -> float | None:
    """The projections' typed time per view (their meta's for in-memory objects without acquisition)."""
    from her2sim.core.acquisition import Acquisition
    acq = projections.acquisition or Acquisition.from_meta(projections.meta)
    return None if acq is None else acq.time_per_view_s


def cmd_recon(args) -> int:
    from her2sim.core.containers import Phantom, Projections
    from her2sim.core.grid import Grid
    from her2sim.recon import reconstruct
    from her2sim.recon.attenuation import mu_map_from_ct, mu_map_from_materials

    _out_file("--out", args.out)
    proj = Projections.load(args.projections)
    geo = proj.geometry
    nz = geo.shape_vu[0] if args.slices is None else args.slices  # --slices 0 is refused by its type
    grid = Grid((nz, geo.shape_vu[1], geo.shape_vu[1]), (geo.pixel_mm[0], geo.pixel_mm[1], geo.pixel_mm[1]),
                (geo.axis_z_mm - 0.5 * (nz - 1) * geo.pixel_mm[0], -0.5 * (geo.shape_vu[1] - 1) * geo.pixel_mm[1],
                 -0.5 * (geo.shape_vu[1] - 1) * geo.pixel_mm[1]))
    mu = None
    ph = None
    if args.phantom:
        ph = Phantom.load(args.phantom)
        mu = mu_map_from_materials(ph, grid) if args.mu_map == "materials" else mu_map_from_ct(ph.ct_hu, ph.grid, grid)
    elif args.scatter == "mc":
        raise ConfigError("--scatter mc simulates scatter through the CT: give --phantom PHANTOM.h5")
    kwargs = dict(iterations=args.iterations, subsets=args.subsets, psf=not args.no_psf,
                  penetration=args.penetration, calibration_cps_per_bq=args.cps_per_bq,
                  attenuation_correction=mu is not None, progress=not args.json)
    mc = None
    if args.scatter == "mc":
        from her2sim.recon import MonteCarloScatter
        mc = MonteCarloScatter(ph.ct_hu, ph.grid, n_histories=args.scatter_histories, seed=args.seed,
                               smooth_fwhm_mm=args.scatter_smooth_fwhm_mm)
    img = reconstruct(proj, mu, grid, _camera_for(proj, args.camera) if mc is not None else None,
                      scatter=args.scatter, mc_scatter=mc, **kwargs)
    img.save(args.out)
    s = {"output": str(args.out), "units": img.units, "shape": list(img.array.shape), "max": float(img.array.max()),
         "mean": float(img.array.mean()), "total": float(img.array.sum(dtype=np.float64) * grid.voxel_volume_ml),
         "scatter": args.scatter, "penetration": bool(args.penetration)}
    if args.json:
        _print_json(s)
    else:
        print(f"wrote {args.out}: {img.units}, shape {img.array.shape}, max {img.array.max():.4g}")
    return 0


def cmd_analyze(args) -> int:
    from her2sim.analysis.threshold import main as threshold_main
    argv = [str(args.csv), "--threshold", str(args.threshold), "--metric", args.metric, "--seed", str(args.seed)]
    if args.json:
        argv.append("--json")
    return threshold_main(argv)


def register(sub) -> None:
    """Add the stage subcommands to the ``her2sim`` argument parser (every number checked by its type)."""
    from her2sim.phantoms.torso_v2 import ANATOMIES  # the library's list of --anatomy values
    from her2sim.phantoms.whole_body import EXTENTS  # ... and of --extent values
    from her2sim.recon.osem import SCATTER_METHODS  # the library's list of --scatter values
    from her2sim.core.limits import float_range, int_range
    from her2sim.core.limits import LIMITS

    s = sub.add_parser("demo", help="run the built-in demo study (one small patient + IEC calibration)")
    s.add_argument("--out", default="demo_out", help="study folder (default demo_out)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("run", help="run or resume a study from a TOML file")
    s.add_argument("study", type=Path)
    s.add_argument("--out", type=Path, help="study folder (default: study.output_dir)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    s.add_argument("--workers", type=int_range(*LIMITS["workers"]), default=1,
                   help=f"local worker processes for independent stages {list(LIMITS['workers'])}")
    s.add_argument("--dask", metavar="SCHEDULER_ADDRESS", help="run stages on a Dask distributed cluster")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--log", type=Path, help="write the stage log to this file")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("cohort", help="draw a virtual cohort and print its summary")
    s.add_argument("--preset", default="seed-trial")
    s.add_argument("--spec", type=Path, help="TOML cohort spec instead of a preset")
    s.add_argument("--seed", type=int_range(*LIMITS["seed"]), default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_cohort)

    s = sub.add_parser("phantom", help="build one patient phantom, save HDF5 + PNG")
    s.add_argument("--preset", default="demo")
    s.add_argument("--patient", type=int_range(0, None), default=0, help="index of the patient in the cohort (0 = first)")
    s.add_argument("--seed", type=int_range(*LIMITS["seed"]), default=1)
    s.add_argument("--shape", type=int_range(*LIMITS["phantom.shape"]), nargs=3, metavar=("NZ", "NY", "NX"))
    s.add_argument("--spacing-mm", type=float_range(*LIMITS["phantom.spacing_mm"]), default=4.42)
    s.add_argument("--anatomy", choices=ANATOMIES, default="v2",
                   help="torso anatomy version (v2, the default: sub-voxel surfaces, heart chambers, shoulder girdle, "
                        "breasts from published statistics; v1: the first, analytic torso)")
    s.add_argument("--extent", choices=EXTENTS, default="torso",
                   help="torso (the SPECT/CT field) or whole_body (vertex to mid-thigh, on a grid that holds her "
                        "unless --shape is given; either anatomy)")
    s.add_argument("--out", type=Path)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_phantom)

    s = sub.add_parser("simulate", help="fast-mode Monte Carlo projections of a phantom HDF5")
    s.add_argument("phantom", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--camera", type=Path, help="camera TOML overrides")
    s.add_argument("--histories", type=int_range(*LIMITS["monte_carlo.photons"]), default=200_000)
    s.add_argument("--seed", type=int_range(0, LIMITS["seed"][1] - 1), default=1)  # seed + 1 seeds the noise
    s.add_argument("--threads", type=int_range(1, LIMITS["monte_carlo.threads"][1]), help="default: all cores")
    s.add_argument("--frame", type=int_range(0, None), default=0, help="activity time frame of the phantom")
    s.add_argument("--views", type=int_range(1, None), help="views (even, dual head; default the camera's)")
    s.add_argument("--matrix", type=int_range(1, None), help="detector pixels per side")
    s.add_argument("--pixel-mm", type=float_range(0.0, None, lo_open=True))
    s.add_argument("--radius-mm", type=float_range(0.0, None, lo_open=True))
    s.add_argument("--realisations", type=int_range(*LIMITS["monte_carlo.noise_realisations"]), default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("recon", help="OSEM reconstruction of a projections HDF5")
    s.add_argument("projections", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--phantom", type=Path, help="phantom HDF5 whose CT gives the attenuation map")
    s.add_argument("--iterations", type=int_range(*LIMITS["recon.iterations"]), default=4)
    s.add_argument("--subsets", type=int_range(*LIMITS["recon.subsets"]), default=10)
    s.add_argument("--no-psf", action="store_true")
    s.add_argument("--scatter", default="none", choices=list(SCATTER_METHODS),
                   help="mc: Monte Carlo scatter correction through the phantom's CT (needs --phantom)")
    s.add_argument("--scatter-histories", type=int_range(*LIMITS["recon.scatter_histories"]), default=100_000,
                   help="histories per MC scatter estimate")
    s.add_argument("--scatter-smooth-fwhm-mm", type=float_range(0.0, 500.0), default=0.0,
                   help="smoothing of the MC scatter estimate (mm FWHM; 0 = none, e.g. 40 for patients)")
    s.add_argument("--seed", type=int_range(*LIMITS["seed"]), default=0, help="seed of the MC scatter estimate")
    s.add_argument("--camera", type=Path, help="camera TOML (collimator, detector) for --scatter mc")
    s.add_argument("--penetration", action="store_true", help="model the septal-penetration tail of the PSF")
    s.add_argument("--mu-map", default="ct", choices=["ct", "materials"],
                   help="ct: bilinear HU->mu of the phantom CT; materials: ideal map of its materials")
    s.add_argument("--cps-per-bq", type=float_range(0.0, None, lo_open=True),
                   help="calibration (counts/s per Bq) for Bq/mL output")
    s.add_argument("--slices", type=int_range(1, LIMITS["phantom.shape"][1]), help="default: the detector rows")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_recon)

    s = sub.add_parser("analyze", help="threshold statistics of a lesion CSV (see python -m her2sim.analysis.threshold)")
    s.add_argument("csv", type=Path)
    s.add_argument("--threshold", type=float_range(0.0, 100.0, lo_open=True), default=1.5)
    s.add_argument("--metric", default="suvmax")
    s.add_argument("--seed", type=int_range(*LIMITS["seed"]), default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_analyze)

    from her2sim.commands_io import register_io
    register_io(sub)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
