"""Benchmark: OSEM with AC + depth-dependent PSF at a clinical-size configuration.

Configuration (the "peer" configuration the recon is compared with): 128^3 voxels of
4.42 mm, 120 views over 360 deg from 0 deg, radius 250 mm, OSEM 4 iterations x 10
subsets with attenuation and depth-dependent PSF, 2 threads. Phantom: water ellipsoid
300 x 200 x 400 mm (x, y, z), mu = 0.15/cm, six spheres (37, 28, 22, 17, 13, 10 mm) on
a 55 mm-radius ring at z = 0, sphere:background 4:1. Projections come from the recon
forward projector, scaled to 5e6 total counts and Poisson-sampled (seeded).

``peer_seconds`` = 177 s is the reference time of the peer implementation for this
configuration (given in the project brief); ``speedup_vs_peer`` = 177 / osem_seconds.

Peer in the same run: when an interpreter with PyTorch + PyTomography is available
(``make peer-env`` builds ``.venv-peer``; or ``--peer-python PATH``), the same phantom,
mu map, PSF model and Poisson projections are reconstructed by PyTomography's OSEM
(``_peer_pytomography.py``) and scored with the same sphere masks: ``peer`` holds its
``osem_seconds``, ``peak_rss_mib``, ``rc`` and ``background_ratio``;
``speedup_vs_peer_measured`` and ``rc_max_abs_diff_vs_peer`` compare the two.
``--no-peer`` skips it (the peer takes about 5 min on 2 cores).

Usage::

    python bench/recon_peer_config.py --json
    python bench/recon_peer_config.py --out-dir /tmp/peer       # also writes the .npy inputs
    python bench/recon_peer_config.py --projections proj.npy   # reconstruct given (view, v, u) counts
    python bench/recon_peer_config.py --json --peer-python .venv-peer/bin/python
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.recon import SpectSystemMatrix, osem

PEER_SECONDS = 177.0
SPHERE_DIAMETERS_MM = (37, 28, 22, 17, 13, 10)
RING_RADIUS_MM = 55.0
TOTAL_COUNTS = 5e6
MU_WATER_PER_CM = 0.15
CONTRAST = 4.0
REPO = Path(__file__).resolve().parent.parent
DEFAULT_PEER_PYTHON = REPO / ".venv-peer" / "bin" / "python"


def build_phantom(grid: Grid):
    """Activity (background 1, spheres 4), mu map (1/cm) and sphere masks on ``grid`` (z, y, x)."""
    z, y, x = grid.mesh_mm(np.float64)
    body = (x / 150.0) ** 2 + (y / 100.0) ** 2 + (z / 200.0) ** 2 <= 1.0
    act = body.astype(np.float64)
    masks = {}
    for i, d in enumerate(SPHERE_DIAMETERS_MM):
        ang = math.radians(60.0 * i)
        cx, cy = RING_RADIUS_MM * math.cos(ang), RING_RADIUS_MM * math.sin(ang)
        m = (x - cx) ** 2 + (y - cy) ** 2 + z ** 2 <= (d / 2.0) ** 2
        masks[str(d)] = m
        act[m] = CONTRAST
    mu = np.where(body, MU_WATER_PER_CM, 0.0)
    # background VOI: inside the body, |z| < 40 mm, at least 15 mm from every sphere surface
    far = np.ones(grid.shape, bool)
    for i, d in enumerate(SPHERE_DIAMETERS_MM):
        ang = math.radians(60.0 * i)
        cx, cy = RING_RADIUS_MM * math.cos(ang), RING_RADIUS_MM * math.sin(ang)
        far &= (x - cx) ** 2 + (y - cy) ** 2 + z ** 2 > (d / 2.0 + 15.0) ** 2
    inner = (x / 120.0) ** 2 + (y / 75.0) ** 2 <= 1.0
    bkg = body & far & inner & (np.abs(z) < 40.0)
    return act, mu, masks, bkg


def warm_up() -> None:
    """Compile (or load from cache) the Numba kernels on a tiny problem, outside the timings."""
    g = Grid.centered((4, 8, 8), 4.42)
    geo = ProjectionGeometry.dual_head(n_views=4, radius_mm=100.0, shape_vu=(4, 8), pixel_mm=(4.42, 4.42))
    a = SpectSystemMatrix(g, geo, np.full(g.shape, 0.1), psf=True)
    a.backward(a.forward(np.ones(g.shape)))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--out-dir", type=Path, default=None, help="write phantom, mu map and projections (.npy)")
    ap.add_argument("--projections", type=Path, default=None, help="(view, v, u) counts .npy to reconstruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=20240614)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--subsets", type=int, default=10)
    ap.add_argument("--peer-python", type=Path, default=None,
                    help=f"interpreter with pytomography (default {DEFAULT_PEER_PYTHON.relative_to(REPO)} if present)")
    ap.add_argument("--no-peer", action="store_true", help="do not run the PyTomography peer")
    args = ap.parse_args(argv)
    peer_python = None
    if not args.no_peer:
        peer_python = args.peer_python or (DEFAULT_PEER_PYTHON if DEFAULT_PEER_PYTHON.exists() else None)
        if peer_python is not None and not Path(peer_python).exists():
            sys.exit(f"--peer-python: {peer_python} does not exist (build it with `make peer-env`)")

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    threads = numba.get_num_threads()
    grid = Grid.centered((128, 128, 128), 4.42)
    geo = ProjectionGeometry.dual_head(n_views=120, radius_mm=250.0, shape_vu=(128, 128), pixel_mm=(4.42, 4.42),
                                       start_deg=0.0)
    act, mu, masks, bkg = build_phantom(grid)
    warm_up()

    system = SpectSystemMatrix(grid, geo, mu, psf=True)
    t0 = time.perf_counter()
    expected = system.forward(act)
    fwd_s = time.perf_counter() - t0
    scale = TOTAL_COUNTS / float(expected.sum())  # counts per unit activity
    if args.projections is not None:
        counts = np.load(args.projections)
        if counts.shape != system.projection_shape:
            sys.exit(f"--projections: shape {counts.shape}, expected {system.projection_shape} (view, v, u)")
        scale = float(counts.sum()) / float(expected.sum())
    else:
        rng = np.random.default_rng(args.seed)
        counts = rng.poisson(expected * scale).astype(np.float64)
    tmp = None
    out_dir = args.out_dir
    if out_dir is None and peer_python is not None:
        tmp = tempfile.TemporaryDirectory(prefix="her2sim_peer_")
        out_dir = Path(tmp.name)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "phantom_activity_zyx.npy", act.astype(np.float32))
        np.save(out_dir / "mu_map_per_cm_zyx.npy", mu.astype(np.float32))
        np.save(out_dir / "projections_view_v_u.npy", counts.astype(np.float32))
        (out_dir / "geometry.json").write_text(json.dumps({
            "voxel_mm": grid.spacing_mm[0], "angles_deg": [float(a) for a in geo.angles_deg],
            "radii_mm": [float(r) for r in geo.radii_mm], "pixel_mm": [float(p) for p in geo.pixel_mm],
            "sigma_model_mm": [float(v) for v in system.camera.sigma_model_mm(system.energy_kev)],
            "axes": "images (z, y, x), projections (view, v, u), her2sim LPS conventions"}, indent=1))

    t0 = time.perf_counter()
    system = SpectSystemMatrix(grid, geo, mu, psf=True)
    rec = osem(system, counts, iterations=args.iterations, subsets=args.subsets, progress=False)
    osem_s = time.perf_counter() - t0

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before the bandwidth probe
    # bandwidth floor of one forward pass: every view reads the image and the mu map once (float64) and
    # writes its projection; floor = those bytes / the machine's measured copy bandwidth (best of 5,
    # 64 MiB arrays). The projector only touches the body support, so it can beat this full-volume floor.
    src = np.ones(8 * 1024 * 1024)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(5):
        t1 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t1)
    bw_bytes_per_s = 2 * src.nbytes / best  # read + write
    del src, dst
    pass_bytes = geo.n_views * (2 * act.size * 8 + int(np.prod(system.projection_shape[1:])) * 8)
    floor_s = pass_bytes / bw_bytes_per_s

    img = rec / scale  # same units as the phantom (background 1)
    rc = {k: float(img[m].mean() / CONTRAST) for k, m in masks.items()}
    peer = None
    if peer_python is not None:
        peer = run_peer(peer_python, out_dir, args)
        peer_img = np.load(out_dir / "peer_recon_zyx.npy").astype(np.float64) / scale
        peer["rc"] = {k: round(float(peer_img[m].mean() / CONTRAST), 4) for k, m in masks.items()}
        peer["background_ratio"] = round(float(peer_img[bkg].mean()), 4)
    if tmp is not None:
        tmp.cleanup()
    result = {
        "osem_seconds": round(osem_s, 3),
        "forward_projection_seconds": round(fwd_s, 3),
        "forward_bandwidth_floor_seconds": round(floor_s, 3),
        "forward_vs_bandwidth_floor": round(fwd_s / floor_s, 2),
        "memory_bandwidth_gib_s": round(bw_bytes_per_s / 2 ** 30, 2),
        "peak_rss_mib": round(peak_rss_mib, 1),
        "rc": {k: round(v, 4) for k, v in rc.items()},
        "background_ratio": round(float(img[bkg].mean()), 4),
        "threads": threads,
        "peer_seconds": PEER_SECONDS,
        "speedup_vs_peer": round(PEER_SECONDS / osem_s, 2),
        "total_counts": float(counts.sum()),
        "iterations": args.iterations,
        "subsets": args.subsets,
        "peer": peer,
    }
    if peer is not None:
        result["speedup_vs_peer_measured"] = round(peer["osem_seconds"] / osem_s, 2)
        result["rc_max_abs_diff_vs_peer"] = round(max(abs(rc[k] - peer["rc"][k]) for k in rc), 4)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"OSEM {args.iterations} it x {args.subsets} subsets, AC + PSF, 128^3, 120 views, {threads} threads")
        print(f"  osem {osem_s:.2f} s (peer {PEER_SECONDS:.0f} s, speed-up {PEER_SECONDS / osem_s:.1f}x), "
              f"one forward pass {fwd_s:.2f} s, peak RSS {result['peak_rss_mib']} MiB")
        print("  RC (mean/true): " + ", ".join(f"{k} mm {v:.3f}" for k, v in rc.items())
              + f"; background ratio {result['background_ratio']:.3f}")
        if peer is not None:
            print(f"peer {peer['name']} {peer['version']} (torch {peer['torch_version']}, {peer['threads']} threads) "
                  f"on the same projections: osem {peer['osem_seconds']:.1f} s "
                  f"(her2sim {result['speedup_vs_peer_measured']:.1f}x faster), peak RSS {peer['peak_rss_mib']} MiB")
            print("  RC (mean/true): " + ", ".join(f"{k} mm {v:.3f}" for k, v in peer["rc"].items())
                  + f"; background ratio {peer['background_ratio']:.3f}; "
                  f"largest |RC difference| {result['rc_max_abs_diff_vs_peer']:.3f}")
    return result


def run_peer(peer_python: Path, data_dir: Path, args) -> dict:
    """Run ``_peer_pytomography.py`` under ``peer_python`` on ``data_dir``; its JSON as a dict."""
    script = Path(__file__).resolve().parent / "_peer_pytomography.py"
    cmd = [str(peer_python), str(script), str(data_dir), "--iterations", str(args.iterations),
           "--subsets", str(args.subsets), "--threads", str(args.threads)]
    print(f"running the PyTomography peer ({' '.join(cmd)}) ...", file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"peer failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
