"""Explicit (analog) camera mode: patient transport + photons carried through the heads.

Photons leaving the phantom (:func:`her2sim.sim.transport.trace` with escapes recorded) are
propagated in straight lines to the collimator front face of every view whose head they
travel toward, and handed to :func:`her2sim.sim.explicit_camera.detect_photons`, which tracks
them through the hexagonal-hole lead lattice (septal penetration) and the NaI crystal and
scores them in the energy windows. No forced detection: this is the analog reference the
fast mode is validated against, and the generator of collimator-detector response tables.

A photon can be scored in several views: views are acquired at different times, so each
view's expectation is estimated independently from the same histories (as in SIMIND/GATE
runs that rotate the camera around one set of histories).
"""
from __future__ import annotations

import time

import numpy as np

from her2sim.core.containers import Phantom, Projections
from her2sim.core.errors import check_choice
from her2sim.core.projection_geometry import ProjectionGeometry

from . import _transport_kernels as K
from .camera import Camera
from .explicit_camera import detect_photons
from .transport import (COMPONENTS, MonteCarloResult, MonteCarloSettings, prepare_transport, scan_acquisition,
                        simulate_projections, trace, view_effective_seconds)

#: components of an explicit-mode projection set
EXPLICIT_COMPONENTS = COMPONENTS + ("penetration",)


def simulate_explicit(phantom: Phantom, camera: Camera | None = None, settings: MonteCarloSettings | None = None,
                      frame: int = 0, geometry: ProjectionGeometry | None = None) -> MonteCarloResult:
    """Expected projections by analog transport through the patient and the camera heads.

    Parameters and units as :func:`her2sim.sim.transport.simulate_projections`. The
    variance is estimated from ``settings.batches`` independent batches of chunks.
    """
    t_start = time.perf_counter()
    setup = prepare_transport(phantom, camera, settings, frame, geometry)
    cam, st, geo = setup.camera, setup.settings, setup.geometry
    tr = trace(setup, record_escapes=True)
    w_hist = setup.photons_per_s / tr["n_histories"]
    cap_e, n_esc = tr["cap_e"], tr["n_escapes"]
    eff_s = view_effective_seconds(geo, cam.protocol.time_per_view_s)
    nv, nu = geo.shape_vu
    nwin = len(cam.windows)
    comps = np.zeros((len(EXPLICIT_COMPONENTS), nwin, geo.n_views, nv, nu))
    batch = np.zeros((st.batches, nwin, geo.n_views, nv, nu))
    ax, ay = geo.axis_xy_mm
    t_det = 0.0
    for b in range(st.batches):
        rows = np.concatenate([np.arange(c * cap_e, c * cap_e + n_esc[c]) for c in range(b, st.n_chunks, st.batches)])
        esc = tr["escapes"][rows]
        px, py, pz = esc[:, K.V_X] - ax, esc[:, K.V_Y] - ay, esc[:, K.V_Z]
        dx, dy, dz = esc[:, K.V_UX], esc[:, K.V_UY], esc[:, K.V_UZ]
        for j in range(geo.n_views):
            th = np.deg2rad(geo.angles_deg[j])
            nx, ny = np.sin(th), -np.cos(th)
            tx, ty = np.cos(th), np.sin(th)
            cn = dx * nx + dy * ny
            q = px * nx + py * ny
            go = cn > 1e-6
            # the recorded point lies outside the volume, possibly beyond the face plane (a long
            # Woodcock step): the straight line still crossed the plane after leaving the
            # volume, so t may be negative
            t = np.where(go, (geo.radii_mm[j] - q) / np.where(go, cn, 1.0), 0.0)
            sel = go
            if not sel.any():
                continue
            ts = t[sel]
            u = (px[sel] + ts * dx[sel]) * tx + (py[sel] + ts * dy[sel]) * ty
            v = pz[sel] + ts * dz[sel] - geo.axis_z_mm
            cu = dx[sel] * tx + dy[sel] * ty
            order = np.minimum(esc[sel, K.V_ORDER], 3).astype(np.int8)
            w = esc[sel, K.V_W] * w_hist * st.batches * eff_s[j]
            t0 = time.perf_counter()
            score = detect_photons(cam, u, v, cu, dz[sel], cn[sel], esc[sel, K.V_E], w, order,
                                   seed=(int(st.seed) * 1000003 + b * 1009 + j) % 2 ** 63, shape_vu=(nv, nu), pixel_mm=geo.pixel_mm)
            t_det += time.perf_counter() - t0
            batch[b, :, j] = score.counts
            for ci, name in enumerate(EXPLICIT_COMPONENTS):
                comps[ci, :, j] += score.components[name] / st.batches
    counts = batch.mean(axis=0)
    variance = batch.var(axis=0, ddof=1) / st.batches
    meta = {"mode": "explicit", "seed": st.seed, "n_histories": tr["n_histories"],
            "time_per_view_s": cam.protocol.time_per_view_s,
            "acquisition_seconds": float(cam.protocol.time_per_view_s * geo.n_views / 2),
            "total_activity_bq": setup.total_bq, "frame": frame, "time_point_h": phantom.time_points_h[frame],
            "camera": cam.to_dict(), "units": "counts"}
    proj = Projections(counts.astype(np.float32), cam.windows, geo, True,
                       {n: comps[i].astype(np.float32) for i, n in enumerate(EXPLICIT_COMPONENTS)},
                       variance.astype(np.float32), meta, acquisition=scan_acquisition(phantom, cam))
    stats = {"seconds_total": time.perf_counter() - t_start, "seconds_trace": tr["seconds"],
             "seconds_detection": t_det, "n_histories": tr["n_histories"], "n_escapes": int(n_esc.sum())}
    return MonteCarloResult(proj, np.zeros(0), {}, stats)


#: Monte Carlo modes of a study (``monte_carlo.mode``): ``fast`` (forced detection,
#: :func:`her2sim.sim.transport.simulate_projections`) or ``explicit`` (analog photons through the
#: camera heads, :func:`simulate_explicit`)
MC_MODES = ("fast", "explicit")


def simulate(phantom: Phantom, camera: Camera | None = None, settings: MonteCarloSettings | None = None,
             frame: int = 0, geometry: ProjectionGeometry | None = None, mode: str = "fast") -> MonteCarloResult:
    """Expected projections in the Monte Carlo mode ``mode`` (one of :data:`MC_MODES`); arguments as
    :func:`her2sim.sim.transport.simulate_projections`. ``projections.meta["mode"]`` records the mode."""
    check_choice("monte_carlo.mode", mode, MC_MODES)
    run = simulate_explicit if mode == "explicit" else simulate_projections
    return run(phantom, camera, settings, frame=frame, geometry=geometry)
