"""Subcommands that run the study stages: demo, run, phantom, cohort, simulate, recon, analyze.

Each prints a short human summary and, with ``--json``, one JSON object with stable keys.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from her2sim.core.errors import ConfigError, DataError
from her2sim.core.hdf5io import to_json


def _print_json(obj) -> None:
    print(json.dumps(json.loads(to_json(obj)), indent=2))


def _executor(args):
    """Executor for independent stages: serial, local processes (--workers N) or Dask (--dask ADDRESS)."""
    if getattr(args, "dask", None):
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("--dask needs the optional extra: pip install 'her2sim[cluster]'") from None
        return Client(args.dask).get_executor()
    if getattr(args, "workers", 1) and args.workers > 1:
        import concurrent.futures as cf
        import multiprocessing as mp
        return cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn"))
    return None


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
    _setup_log(args.log)
    return _run_and_report(cfg, args.out, _executor(args), args)


def _run_and_report(cfg, out, executor, args) -> int:
    """Run (or resume) a study and print its summary as text or JSON."""
    from her2sim.pipeline import run_study

    summary = run_study(cfg, out, executor=executor, progress=not (args.quiet or args.json))
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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = logging.getLogger("her2sim")
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def cmd_demo(args) -> int:
    from her2sim.config import load_study, preset_path

    return _run_and_report(load_study(preset_path("demo")), Path(args.out), None, args)


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

    cohort = generate_cohort(args.preset, seed=args.seed)
    spec = cohort["patients"][args.patient]
    grid = Grid.centered(tuple(args.shape), args.spacing_mm) if args.shape else None
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

    ph = Phantom.load(args.phantom)
    cam = Camera.from_toml(args.camera) if args.camera else Camera()
    if args.views or args.matrix or args.pixel_mm or args.radius_mm:
        from dataclasses import replace
        pr = cam.protocol
        cam = replace(cam, protocol=replace(pr, n_views=args.views or pr.n_views, matrix=args.matrix or pr.matrix,
                                            pixel_mm=args.pixel_mm or pr.pixel_mm,
                                            radius_mm=args.radius_mm or pr.radius_mm))
    st = MonteCarloSettings(n_histories=args.histories, seed=args.seed, threads=args.threads)
    res = simulate_projections(ph, cam, st, frame=args.frame, progress=not args.json)
    out = Path(args.out)
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
                 time_per_view_s=float(projections.meta.get("time_per_view_s", cam.protocol.time_per_view_s)))
    return replace(cam, protocol=pr, windows=tuple(projections.windows))


def cmd_recon(args) -> int:
    from her2sim.core.containers import Phantom, Projections
    from her2sim.core.grid import Grid
    from her2sim.recon import reconstruct
    from her2sim.recon.attenuation import mu_map_from_ct, mu_map_from_materials

    proj = Projections.load(args.projections)
    geo = proj.geometry
    nz = args.slices or geo.shape_vu[0]
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
    if args.scatter == "mc":
        from her2sim.mc_scatter import reconstruct_with_mc_scatter
        names = [w.name for w in proj.windows]
        img = reconstruct_with_mc_scatter(proj, mu, grid, _camera_for(proj, args.camera), ph.ct_hu, ph.grid,
                                          first_scatter="dew" if "scatter" in names else "none",
                                          n_histories=args.scatter_histories, seed=args.seed,
                                          smooth_fwhm_mm=args.scatter_smooth_fwhm_mm, **kwargs)
    else:
        img = reconstruct(proj, mu, grid, None, scatter=args.scatter, **kwargs)
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
    """Add the stage subcommands to the ``her2sim`` argument parser."""
    s = sub.add_parser("demo", help="run the built-in demo study (one small patient + IEC calibration)")
    s.add_argument("--out", default="demo_out", help="study folder (default demo_out)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("run", help="run or resume a study from a TOML file")
    s.add_argument("study", type=Path)
    s.add_argument("--out", type=Path, help="study folder (default: study.output_dir)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    s.add_argument("--workers", type=int, default=1, help="local worker processes for independent stages")
    s.add_argument("--dask", metavar="SCHEDULER_ADDRESS", help="run stages on a Dask distributed cluster")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--log", type=Path, help="write the stage log to this file")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("cohort", help="draw a virtual cohort and print its summary")
    s.add_argument("--preset", default="seed-trial")
    s.add_argument("--spec", type=Path, help="TOML cohort spec instead of a preset")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_cohort)

    s = sub.add_parser("phantom", help="build one patient phantom, save HDF5 + PNG")
    s.add_argument("--preset", default="demo")
    s.add_argument("--patient", type=int, default=0, help="index of the patient in the cohort")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--shape", type=int, nargs=3, metavar=("NZ", "NY", "NX"))
    s.add_argument("--spacing-mm", type=float, default=4.42)
    s.add_argument("--out", type=Path)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_phantom)

    s = sub.add_parser("simulate", help="fast-mode Monte Carlo projections of a phantom HDF5")
    s.add_argument("phantom", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--camera", type=Path, help="camera TOML overrides")
    s.add_argument("--histories", type=int, default=200_000)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--threads", type=int)
    s.add_argument("--frame", type=int, default=0)
    s.add_argument("--views", type=int)
    s.add_argument("--matrix", type=int)
    s.add_argument("--pixel-mm", type=float)
    s.add_argument("--radius-mm", type=float)
    s.add_argument("--realisations", type=int, default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("recon", help="OSEM reconstruction of a projections HDF5")
    s.add_argument("projections", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--phantom", type=Path, help="phantom HDF5 whose CT gives the attenuation map")
    s.add_argument("--iterations", type=int, default=4)
    s.add_argument("--subsets", type=int, default=10)
    s.add_argument("--no-psf", action="store_true")
    s.add_argument("--scatter", default="none", choices=["none", "dew", "tew", "mc"],
                   help="mc: Monte Carlo scatter correction through the phantom's CT (needs --phantom)")
    s.add_argument("--scatter-histories", type=int, default=100_000, help="histories per MC scatter estimate")
    s.add_argument("--scatter-smooth-fwhm-mm", type=float, default=0.0,
                   help="smoothing of the MC scatter estimate (mm FWHM; 0 = none, e.g. 40 for patients)")
    s.add_argument("--seed", type=int, default=0, help="seed of the MC scatter estimate")
    s.add_argument("--camera", type=Path, help="camera TOML (collimator, detector) for --scatter mc")
    s.add_argument("--penetration", action="store_true", help="model the septal-penetration tail of the PSF")
    s.add_argument("--mu-map", default="ct", choices=["ct", "materials"],
                   help="ct: bilinear HU->mu of the phantom CT; materials: ideal map of its materials")
    s.add_argument("--cps-per-bq", type=float, help="calibration (counts/s per Bq) for Bq/mL output")
    s.add_argument("--slices", type=int)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_recon)

    s = sub.add_parser("analyze", help="threshold statistics of a lesion CSV (see python -m her2sim.analysis.threshold)")
    s.add_argument("csv", type=Path)
    s.add_argument("--threshold", type=float, default=1.5)
    s.add_argument("--metric", default="suvmax")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_analyze)

    from her2sim.commands_io import register_io
    register_io(sub)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
