"""Monte Carlo throughput, thread scaling, forced-detection efficiency and patient run time.

Four measurements (issue 4):

1. **Transport throughput** in "infinite water" at 140.5 keV: a 101 cm water cube of 10 mm
   voxels with a point source in the centre voxel; :func:`her2sim.sim.transport.trace`
   (Woodcock tracking, interaction vertices recorded, no detection) at 1 and 2 numba
   threads, after a warm-up call. Rate = histories / the ``seconds`` returned by ``trace``.
   The machine is shared, so each thread count is timed ``repeats`` times (interleaved) and
   the fastest run is reported; every rate, the load average and the histories per second
   of process CPU time (insensitive to other processes; at 2 threads it shows the parallel
   overhead rather than the speed-up) are printed too.
2. **Peer**: the same problem in goupil (forward mode, unbounded water, Klein-Nishina
   Compton, continuous absorption, same energy cut-off), timed on the same number of
   photons (see ``_peer_goupil.py``); ``null`` when goupil is not importable.
3. **Figure of merit** FOM = 1 / (relative variance x seconds per run) of the photopeak
   counts summed over all views inside a 3 cm diameter ROI around the projection of a
   3 cm sphere source 5 cm off-centre in a 22 cm water cylinder, fast mode
   (:func:`simulate_projections`, forced detection) vs explicit/analog mode
   (:func:`simulate_explicit`), K = 8 independent seeds each (5 with ``--quick``), first
   (warm-up) call excluded; a 95 % interval of the gain from the F distribution of the
   ratio of the two sample variances is printed too.
4. **Patient run time**: :func:`simulate_projections` of the 128^3 x 4.42 mm female torso of
   :func:`her2sim.phantoms.torso_phantom` (1 h frame), default camera (120 views, 128 x 128
   x 4.42 mm, photopeak + scatter windows). The number of histories is chosen by a 12-view
   pilot so that the per-pixel MC relative error sqrt(variance)/counts is at most half the
   Poisson relative error of a clinical acquisition of 1e7 photopeak counts (median and
   RMS ratio over pixels above 10 % of the maximum, target <= 0.5, pilot aims at 0.45).
   Per-view quantities do not depend on the number of views, so the pilot scales its
   counts to 1e7 x 12 / 120.

``--quick`` runs a small version of every part (< 2 min); the 128^3 / 120-view patient
time is then ``null`` and the small run's figures are under ``patient``.

Usage: ``python bench/mc_throughput.py [--json] [--quick] [--patient-histories N]``
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
from scipy import stats

from her2sim.core.containers import Phantom
from her2sim.core.grid import Grid
from her2sim.core.materials import MATERIAL_IDS, MATERIAL_NAMES
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.core.radionuclide import TC99M
from her2sim.sim.analog import simulate_explicit
from her2sim.sim.camera import Camera, Protocol
from her2sim.sim.transport import MonteCarloSettings, body_extent_mm, prepare_transport, simulate_projections, trace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peer_goupil as peer_goupil  # noqa: E402

CLINICAL_COUNTS = 1e7      # photopeak counts of a clinical 99mTc SPECT acquisition (brief)
NOISE_RATIO_TARGET = 0.5   # MC relative error / Poisson relative error
PILOT_AIM = 0.45           # the pilot sizes the run for this ratio (10 % margin)
ROI_DIAMETER_MM = 30.0


def _all_threads() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def _load() -> list:
    return [round(v, 2) for v in os.getloadavg()]


def _water_phantom(grid: Grid, water: np.ndarray, activity_bq_per_ml: np.ndarray) -> Phantom:
    """Water (1 g/cm^3) where ``water`` else air (density 0), with the given activity."""
    mat = np.where(water, MATERIAL_IDS["water"], MATERIAL_IDS["air"]).astype(np.uint8)
    return Phantom(grid, activity_bq_per_ml.astype(np.float32), (0.0,),
                   np.where(water, 0.0, -1000.0).astype(np.float32), water.astype(np.int16), mat,
                   water.astype(np.float32), label_names={0: "air", 1: "water"},
                   material_names=list(MATERIAL_NAMES))


# ----------------------------------------------------------------------------- 1. throughput
def infinite_water(side_voxels: int = 101, voxel_mm: float = 10.0) -> Phantom:
    """Water cube of ``side_voxels``^3 voxels with 1 MBq in the centre voxel (odd side: centred)."""
    g = Grid.centered((side_voxels,) * 3, voxel_mm)
    act = np.zeros(g.shape)
    c = side_voxels // 2
    act[c, c, c] = 1e6 / g.voxel_volume_ml
    return _water_phantom(g, np.ones(g.shape, bool), act)


def throughput(n_histories: int, repeats: int) -> dict:
    """Histories/s of :func:`trace` in infinite water at 1 and 2 threads (best of ``repeats``)."""
    ph = infinite_water()
    geo = ProjectionGeometry.dual_head(2, body_extent_mm(ph) + 100.0, (8, 8), (4.42, 4.42))
    camera = Camera()
    threads = [t for t in (1, 2) if t <= _all_threads()]
    # warm-up: loads the cached JIT code of the kernel
    trace(prepare_transport(ph, camera, MonteCarloSettings(n_histories=2048, seed=999, threads=1), geometry=geo))
    rates = {t: [] for t in threads}
    cpu_rates = {t: [] for t in threads}  # histories per process-CPU second (insensitive to other load)
    load_before = _load()
    last = None
    for r in range(repeats):
        for t in threads:
            setup = prepare_transport(ph, camera, MonteCarloSettings(n_histories=n_histories, seed=1 + r, threads=t),
                                      geometry=geo)
            if setup.n_threads != t:
                raise RuntimeError(f"numba runs {setup.n_threads} threads, asked {t}")
            c0 = time.process_time()
            tr = trace(setup)
            cpu_rates[t].append(tr["n_histories"] / (time.process_time() - c0))
            rates[t].append(tr["n_histories"] / tr["seconds"])
            last = (setup, tr)
    setup, tr = last
    n_hist = tr["n_histories"]
    best = {t: max(v) for t, v in rates.items()}
    return {
        "photons_per_s_per_thread": best[1],
        "thread_scaling_2": (best[2] / best[1]) if 2 in best else None,
        "detail": {
            "problem": f"{ph.grid.shape[0]}^3 water cube of {ph.grid.spacing_mm[0]:g} mm voxels "
                       f"(side {ph.grid.extent_mm[0] / 10:g} cm), point source in the centre voxel, "
                       f"{TC99M.gamma_kev} keV, trace() only (Woodcock tracking + vertex recording, no detection)",
            "n_histories": n_hist, "repeats": repeats,
            "rates_1_thread": rates[1], "rates_2_threads": rates.get(2, []),
            "photons_per_s_2_threads": best.get(2),
            "photons_per_cpu_s_1_thread": max(cpu_rates[1]),
            "photons_per_cpu_s_2_threads": max(cpu_rates[2]) if 2 in cpu_rates else None,
            "e_cut_kev": setup.e_cut_kev,
            "interactions_per_history": float(tr["counts"].sum() / n_hist),
            "unscattered_escape_fraction": float(tr["escaped"][:, 0].sum() / n_hist),
            "load_average_before": load_before, "load_average_after": _load(), "cpu_count": os.cpu_count(),
        },
    }


# ----------------------------------------------------------------------------- 2. peer
def peer(n_photons: int, e_cut_kev: float, repeats: int) -> dict | None:
    """goupil forward transport of the same problem, or None when goupil is missing."""
    if not peer_goupil.available():
        return None
    main = peer_goupil.time_transport(n_photons, TC99M.gamma_kev, e_cut_kev, repeats=repeats)
    default = peer_goupil.time_transport(n_photons, TC99M.gamma_kev, e_cut_kev, repeats=repeats,
                                         compton_model="Scattering Function", absorption="Discrete")
    n_int = peer_goupil.interactions_per_photon(min(n_photons, 20000), TC99M.gamma_kev, e_cut_kev)
    threads = max(1, round(main["cpu_per_wall"]))
    return {
        "name": "goupil",
        "version": peer_goupil.goupil_version(),
        "photons_per_s": main["photons_per_s"],
        "photons_per_s_per_thread": main["photons_per_s"] / threads,
        "what_was_timed": (
            f"goupil.TransportEngine.transport() (forward mode) of {n_photons} photon states of "
            f"{TC99M.gamma_kev} keV emitted isotropically from the origin of SimpleGeometry('H2O', 1.0) "
            f"(unbounded water), compton_model='Klein-Nishina', absorption='Continuous' (weights, like her2sim's "
            f"implicit capture), Rayleigh on, energy_min={e_cut_kev:.2f} keV (her2sim's cut-off): every photon "
            f"is followed until it falls below the cut. Wall time of the transport call only, one thread "
            f"(CPU/wall = {main['cpu_per_wall']:.2f}); state generation (numpy) and table compilation excluded; "
            f"best of {repeats} after a warm-up call. her2sim's figure includes its in-kernel source sampling "
            f"and vertex recording, goupil records nothing."),
        "photons_per_s_with_source_generation": main["photons_per_s_with_source"],
        "all_photons_per_s": main["all_photons_per_s"],
        "default_physics_photons_per_s": default["photons_per_s"],
        "default_physics": "compton_model='Scattering Function' (Penelope), absorption='Discrete'",
        "interactions_per_photon": n_int,
    }


# ----------------------------------------------------------------------------- 3. FOM
def fom_phantom() -> Phantom:
    """22 cm x 16 cm water cylinder with a 3 cm sphere (1 MBq) centred 5 cm off-axis (+x)."""
    g = Grid.centered((40, 64, 64), 4.42)
    z, y, x = g.mesh_mm(np.float64)
    cyl = (np.hypot(x, y) <= 110.0) & (np.abs(z) <= 80.0)
    sphere = (x - 50.0) ** 2 + y ** 2 + z ** 2 <= (0.5 * ROI_DIAMETER_MM) ** 2
    act = np.where(sphere, 1e6 / (sphere.sum() * g.voxel_volume_ml), 0.0)
    return _water_phantom(g, cyl, act)


def roi_masks(geometry: ProjectionGeometry, point_mm, diameter_mm: float) -> np.ndarray:
    """(view, v, u) mask of the pixels whose centre lies within ``diameter_mm / 2`` of the projected point."""
    u, zc, _ = geometry.project_point(point_mm[2], point_mm[1], point_mm[0])
    uc, vc = geometry.u_centers_mm(), geometry.v_centers_mm()
    r2 = (0.5 * diameter_mm) ** 2
    return np.stack([(uc[None, :] - u[j]) ** 2 + (vc[:, None] - zc[j]) ** 2 <= r2
                     for j in range(geometry.n_views)])


def _window_index(projections, name: str = "photopeak") -> int:
    names = [w.name for w in projections.windows]
    return names.index(name) if name in names else 0


def _roi_runs(simulate, phantom, camera, n_histories: int, k: int, roi: np.ndarray, threads: int) -> dict:
    simulate(phantom, camera, MonteCarloSettings(n_histories=n_histories, seed=10_000, threads=threads))  # warm-up
    sums, secs, pen = [], [], []
    for seed in range(1, k + 1):
        t0 = time.perf_counter()
        res = simulate(phantom, camera, MonteCarloSettings(n_histories=n_histories, seed=seed, threads=threads))
        secs.append(time.perf_counter() - t0)
        p = res.projections
        wi = _window_index(p)
        sums.append(float(p.counts[wi][roi].sum()))
        pen.append(float(p.components["penetration"][wi][roi].sum()) if "penetration" in p.components else 0.0)
    sums = np.array(sums)
    rel_var = float(sums.var(ddof=1) / sums.mean() ** 2)
    sec = float(np.mean(secs))
    return {"n_histories": n_histories, "roi_sums": sums.tolist(), "roi_mean": float(sums.mean()),
            "relative_variance": rel_var, "seconds_per_run": sec,
            "roi_penetration_fraction": float(np.sum(pen) / sums.sum()),
            "fom": (1.0 / (rel_var * sec)) if rel_var > 0 else math.inf}


def fom_gain(n_views: int, k: int, n_fast: int, n_analog: int) -> dict:
    """FOM of fast vs analog mode on :func:`fom_phantom`."""
    ph = fom_phantom()
    cam = Camera(protocol=Protocol(n_views=n_views, matrix=64, pixel_mm=4.42))
    geo = cam.projection_geometry(axis_z_mm=ph.grid.center_mm[0])
    roi = roi_masks(geo, (0.0, 0.0, 50.0), ROI_DIAMETER_MM)
    threads = _all_threads()
    fast = _roi_runs(simulate_projections, ph, cam, n_fast, k, roi, threads)
    analog = _roi_runs(simulate_explicit, ph, cam, n_analog, k, roi, threads)
    gain = fast["fom"] / analog["fom"] if analog["fom"] > 0 else None
    # 95 % interval of the gain from the sampling error of the two variances (F distribution,
    # K-1 and K-1 degrees of freedom); the run times are taken as exact
    f_lo, f_hi = stats.f.ppf([0.025, 0.975], k - 1, k - 1)
    ci = [gain / f_hi, gain / f_lo] if gain is not None else None
    return {"fom_gain_vs_analog": gain,
            "detail": {"phantom": "22 cm diameter x 16 cm water cylinder, 3 cm sphere (1 MBq) at x = +5 cm; "
                                  "40x64x64 voxels of 4.42 mm",
                       "camera": f"{n_views} views, 64x64 pixels of 4.42 mm, radius 250 mm, 20 s/view",
                       "roi": f"{ROI_DIAMETER_MM:g} mm diameter circle around the sphere's projection, "
                              f"photopeak window, summed over views ({int(roi.sum())} pixels)",
                       "k_runs": k, "threads": threads, "fast": fast, "analog": analog,
                       "fom_gain_ci95": ci,
                       "analog_over_fast_roi_mean": analog["roi_mean"] / fast["roi_mean"],
                       "target": ">= 100"}}


# ----------------------------------------------------------------------------- 4. patient
def noise_ratio(projections, clinical_counts: float) -> dict:
    """MC vs Poisson relative error per pixel of the photopeak window, counts scaled to ``clinical_counts``.

    MC relative error = sqrt(variance) / counts (scale-free); Poisson relative error =
    1 / sqrt(counts x s) with s = clinical_counts / total photopeak counts. Pixels with
    counts above 10 % of the maximum.
    """
    wi = _window_index(projections)
    c = projections.counts[wi].astype(np.float64)
    v = projections.variance[wi].astype(np.float64)
    scale = clinical_counts / c.sum()
    sel = c > 0.1 * c.max()
    mc = np.sqrt(v[sel]) / c[sel]
    poisson = 1.0 / np.sqrt(c[sel] * scale)
    ratio = mc / poisson
    return {"median_ratio": float(np.median(ratio)), "rms_ratio": float(np.sqrt(np.mean(ratio ** 2))),
            "median_mc_relative_error": float(np.median(mc)), "median_poisson_relative_error": float(np.median(poisson)),
            "n_pixels": int(sel.sum()), "clinical_counts_total": clinical_counts,
            "scaled_counts_per_pixel_median": float(np.median(c[sel] * scale))}


def _patient_phantom(shape: int, spacing_mm: float) -> tuple:
    from her2sim.phantoms import torso_phantom

    t0 = time.perf_counter()
    ph = torso_phantom(Grid.centered((shape,) * 3, spacing_mm), seed=0)
    return ph, time.perf_counter() - t0


def _run_patient(ph, cam, n_histories: int, threads: int, clinical_counts: float) -> dict:
    t0 = time.perf_counter()
    res = simulate_projections(ph, cam, MonteCarloSettings(n_histories=n_histories, seed=1, threads=threads))
    sec = time.perf_counter() - t0
    summ = res.summary()
    out = {"seconds": sec, "n_histories": res.stats["n_histories"], "n_views": cam.protocol.n_views,
           "stats": {k: res.stats[k] for k in ("seconds_trace", "seconds_forced_detection", "seconds_fd_kernel",
                                               "seconds_fd_blur", "seconds_attenuation_maps", "n_vertices",
                                               "n_primary_points", "threads") if k in res.stats},
           "photopeak_counts": summ["photopeak"]["counts"] if "photopeak" in summ else None,
           "photopeak_scatter_to_total": summ["photopeak"]["scatter_to_total"] if "photopeak" in summ else None}
    out.update(noise_ratio(res.projections, clinical_counts))
    return out


def patient(quick: bool, n_histories: int | None) -> dict:
    """Wall time of a torso run meeting the MC-vs-Poisson noise target (see module docstring)."""
    threads = _all_threads()
    if quick:
        ph, t_build = _patient_phantom(64, 8.84)
        n_views = 12
        cam = Camera(protocol=Protocol(n_views=n_views, matrix=64, pixel_mm=8.84))
        run = _run_patient(ph, cam, n_histories or 100_032, threads, CLINICAL_COUNTS * n_views / 120)
        return {"seconds_patient_128_120views": None,
                "detail": dict(run, phantom="torso_phantom 64^3 x 8.84 mm (quick)", seconds_phantom_build=t_build,
                               camera="12 views, 64x64 pixels of 8.84 mm (quick)",
                               meets_target=bool(run["median_ratio"] <= NOISE_RATIO_TARGET))}
    ph, t_build = _patient_phantom(128, 4.42)
    pilot = None
    if n_histories is None:
        n_pilot_views = 12
        pilot_hist = 50_048
        cam_p = Camera(protocol=Protocol(n_views=n_pilot_views))
        pilot = _run_patient(ph, cam_p, pilot_hist, threads, CLINICAL_COUNTS * n_pilot_views / 120)
        worst = max(pilot["median_ratio"], pilot["rms_ratio"])
        n_histories = int(math.ceil(pilot_hist * (worst / PILOT_AIM) ** 2 / 64.0) * 64)
        n_histories = max(n_histories, 6400)
    run = _run_patient(ph, Camera(), n_histories, threads, CLINICAL_COUNTS)
    return {"seconds_patient_128_120views": run["seconds"],
            "detail": dict(run, phantom="her2sim.phantoms.torso_phantom(Grid.centered((128,)*3, 4.42), seed=0), "
                                        "frame 0 (1 h p.i.)",
                           camera="default Camera(): 120 views, 128x128 x 4.42 mm, photopeak + scatter windows",
                           seconds_phantom_build=t_build, pilot=pilot,
                           meets_target=bool(run["median_ratio"] <= NOISE_RATIO_TARGET))}


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="small smoke version of every part (< 2 min)")
    ap.add_argument("--patient-histories", type=int, default=None,
                    help="histories of the patient run (default: chosen by a 12-view pilot)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    q = args.quick
    tp = throughput(n_histories=50_048 if q else 200_000, repeats=2 if q else 5)
    pr = peer(tp["detail"]["n_histories"], tp["detail"]["e_cut_kev"], repeats=2 if q else 3)
    if pr is not None:
        pr["her2sim_over_peer_per_thread"] = tp["photons_per_s_per_thread"] / pr["photons_per_s_per_thread"]
    fom = fom_gain(n_views=4 if q else 8, k=5 if q else 8, n_fast=20_000 if q else 100_000, n_analog=200_000 if q else 1_000_000)
    pat = patient(q, args.patient_histories)
    res = {
        "photons_per_s_per_thread": tp["photons_per_s_per_thread"],
        "thread_scaling_2": tp["thread_scaling_2"],
        "fom_gain_vs_analog": fom["fom_gain_vs_analog"],
        "peer": pr,
        "seconds_patient_128_120views": pat["seconds_patient_128_120views"],
        "seconds": time.perf_counter() - t0,
        "quick": q,
        "throughput": tp["detail"],
        "fom": fom["detail"],
        "patient": pat["detail"],
    }
    if args.json:
        print(json.dumps(res))
        return 0
    d = tp["detail"]
    print(f"her2sim trace(), infinite water: {res['photons_per_s_per_thread']:.4g} photons/s at 1 thread, "
          f"{d['photons_per_s_2_threads'] or float('nan'):.4g} at 2 (scaling {res['thread_scaling_2'] or float('nan'):.2f}); "
          f"{d['interactions_per_history']:.2f} interactions/history; per CPU-second {d['photons_per_cpu_s_1_thread']:.4g} "
          f"(1 thread) and {d['photons_per_cpu_s_2_threads'] or float('nan'):.4g} (2 threads); load {d['load_average_before']} -> "
          f"{d['load_average_after']}")
    if pr is None:
        print("peer: goupil not importable")
    else:
        print(f"peer goupil {pr['version']}: {pr['photons_per_s']:.4g} photons/s (1 thread, KN + continuous "
              f"absorption), {pr['default_physics_photons_per_s']:.4g} with its default physics; "
              f"{pr['interactions_per_photon']:.2f} interactions/photon; her2sim/goupil per thread "
              f"{pr['her2sim_over_peer_per_thread']:.2f}")
    f = fom["detail"]
    print(f"FOM fast/analog = {res['fom_gain_vs_analog']:.4g} (95 % interval {f['fom_gain_ci95'][0]:.3g}-"
          f"{f['fom_gain_ci95'][1]:.3g}; fast: rel var {f['fast']['relative_variance']:.3g}, "
          f"{f['fast']['seconds_per_run']:.2f} s; analog: rel var {f['analog']['relative_variance']:.3g}, "
          f"{f['analog']['seconds_per_run']:.2f} s; analog/fast ROI mean {f['analog_over_fast_roi_mean']:.3f})")
    p = pat["detail"]
    label = "128^3 / 120 views" if not q else "quick 64^3 / 12 views"
    print(f"patient ({label}): {p['seconds']:.1f} s with {p['n_histories']} histories; MC/Poisson relative error "
          f"median {p['median_ratio']:.3f}, rms {p['rms_ratio']:.3f} (target <= {NOISE_RATIO_TARGET}) over "
          f"{p['n_pixels']} pixels")
    print(f"total {res['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
