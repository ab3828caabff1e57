"""Planar whole-body sweep (anterior + posterior heads, continuous bed motion) by the fast-mode Monte Carlo.

Protocol
--------
The seed trial acquired "routine whole-body SPECT" (planar anterior/posterior sweeps) on the Discovery NM670
at 1 h and 2 h (Zhao et al., Breast Cancer Res 26:40, 2024). Clinical 99mTc whole-body sweeps on dual-head
cameras use anterior and posterior views at a table speed of 10-15 cm/min (Donohoe et al., SNM Procedure
Guideline for Bone Scintigraphy 2.0, SNM guideline manual 2002, pp. 167-171) and a 256 x 1024 matrix
(transaxial x axial); on the NM670's 540 mm wide detector the 256-pixel row is sampled at 2.21 mm (the
SPECT 256-matrix pixel, ``camera_nm670.md``), so the 1024 rows span 2263 mm, more than a patient's height.
:class:`WholeBodyProtocol` defaults to 12 cm/min and 256 x 1024 at 2.21 mm; 128 x 512 at 4.42 mm is the
coarse alternative (:data:`WB_MATRICES`). The bed speed is limited to 1-60 cm/min (assumed console range; the
dwell per point stays below the Monte Carlo's 3600 s per view).

Method: continuous motion as a long static detector
---------------------------------------------------
At constant speed ``s`` every point of the body crosses the detector's axial field of view ``L`` (400 mm,
:class:`her2sim.sim.camera.Detector.height_mm`) and is seen for ``L / s`` seconds; a parallel-hole camera's
response is invariant to a shift along the bed axis, so integrating it over the sweep equals a static detector
long enough to cover the scan range, with a dwell of ``L / s`` per point. The fast-mode transport tallies each
view on a (v, u) detector matrix of any size (:func:`her2sim.sim.transport.simulate_projections` with a
two-view :class:`~her2sim.core.projection_geometry.ProjectionGeometry`: 0 deg = anterior head, 180 deg =
posterior head, both acquiring at once), so that is what is simulated: the scan range is the phantom grid's
axial extent plus a 20 mm margin at each end, the bed travel is that range plus ``L`` (the detector enters
above the vertex and leaves below the last row, so the ends get the full dwell as well), and
``seconds = (range + L) / s``. Physical decay during the sweep: the transport integrates decay over the dwell;
the head-first motion makes a row at height ``z`` enter the field ``(z_top - z) / s`` later, so each row is
scaled by ``exp(-lambda (z_top - z) / s)`` (exact for the primary, whose counts in a row come from that row's
height; scattered counts come from nearby heights, within a few cm, i.e. a few seconds of decay). The heads
follow the body contour: each head's face is ``clearance_mm`` outside the body's reach toward it.

Only the photopeak window is simulated (the sweep's image). The detector window outside the scan range is
empty (no counts), as on a clinical image whose scan length is shorter than the matrix.

Images are (v, u) in counts: ``v`` along +z (row 0 is the inferior end of the matrix), ``u`` along each head's
in-plane axis (anterior: toward the patient's left, +x; posterior: toward the patient's right, -x, as that head
sees the patient). :func:`geometric_mean` mirrors the posterior view onto the anterior's columns.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from her2sim.core.containers import Phantom
from her2sim.core.errors import ConfigError, check_int, check_range
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.core.radionuclide import TC99M

from .camera import Camera, Protocol
from .transport import MonteCarloSettings, body_reach_mm, simulate_projections

#: allowed whole-body matrices (v rows axial, u columns transaxial) -> pixel size (mm): the NM670 256 x 1024
#: clinical matrix at the 2.21 mm pixel and its 2 x 2-binned 128 x 512 form at 4.42 mm
WB_MATRICES = {(1024, 256): 2.21, (512, 128): 4.42}
#: bed speed range (cm/min)
SPEED_RANGE_CM_PER_MIN = (1.0, 60.0)
#: extra rows simulated beyond the phantom grid at each end (mm): the collimator blur (FWHM <= 15 mm) and
#: scatter leaving the grid's end faces
END_MARGIN_MM = 20.0


@dataclass(frozen=True)
class WholeBodyProtocol:
    """A continuous-motion anterior/posterior whole-body sweep.

    Attributes
    ----------
    speed_cm_per_min : float
        Bed speed (cm/min, 1-60; clinical 10-15).
    matrix : tuple of int
        (v rows along the bed axis, u columns), one of :data:`WB_MATRICES`; fixes the pixel size.
    clearance_mm : float
        Gap between each head's face and the nearest body surface toward it (mm, 0-200).
    """

    speed_cm_per_min: float = 12.0
    matrix: tuple = (1024, 256)
    clearance_mm: float = 20.0

    def __post_init__(self):
        lo, hi = SPEED_RANGE_CM_PER_MIN
        check_range("whole_body.speed_cm_per_min", self.speed_cm_per_min, lo, hi)
        m = tuple(self.matrix) if isinstance(self.matrix, (tuple, list)) else self.matrix
        if not isinstance(m, tuple) or m not in WB_MATRICES:
            raise ConfigError(f"whole_body.matrix = {self.matrix!r} is not allowed; choose one of "
                              f"{[list(k) for k in WB_MATRICES]} (rows along the bed, columns)")
        object.__setattr__(self, "matrix", m)
        check_range("whole_body.clearance_mm", self.clearance_mm, 0.0, 200.0)

    @classmethod
    def from_mm_per_s(cls, speed_mm_per_s: float, **kw) -> "WholeBodyProtocol":
        """Protocol with the bed speed given in mm/s (1 mm/s = 6 cm/min)."""
        lo, hi = SPEED_RANGE_CM_PER_MIN
        v = check_range("whole_body.speed_mm_per_s", speed_mm_per_s, lo / 6.0, hi / 6.0)
        return cls(speed_cm_per_min=v * 6.0, **kw)

    @property
    def speed_mm_per_s(self) -> float:
        return self.speed_cm_per_min * 10.0 / 60.0

    @property
    def pixel_mm(self) -> float:
        return WB_MATRICES[self.matrix]

    def dwell_s(self, detector_axial_mm: float) -> float:
        """Time every point spends under a detector of axial length ``detector_axial_mm`` (s)."""
        return float(detector_axial_mm) / self.speed_mm_per_s


@dataclass
class WholeBodyScan:
    """Anterior and posterior whole-body images of one sweep.

    Attributes
    ----------
    anterior, posterior : numpy.ndarray
        Poisson counts (v, u), int32, each in its own head's frame (module docstring).
    expected_anterior, expected_posterior : numpy.ndarray
        Noise-free expectations (v, u), counts (float32).
    primary_anterior, primary_posterior : numpy.ndarray
        The unscattered part of the expectations (v, u), counts (float32).
    pixel_mm : tuple of float
        (dv, du) in mm.
    v_z_mm : numpy.ndarray
        World z (mm) of each row centre.
    u_mm : numpy.ndarray
        Column centres (mm) along the anterior head's u axis (world x - axis x); the posterior's column j
        lies at ``-u_mm[j]``.
    axis_xy_mm : tuple of float
        World (x, y) of the axis the heads face.
    speed_cm_per_min, dwell_s, seconds : float
        Bed speed, time each point is imaged (s) and the sweep's duration (s).
    scan_range_z_mm : tuple of float
        World z (mm) of the swept range (lower, upper).
    radii_mm : tuple of float
        Axis-to-face distance of the anterior and posterior heads (mm).
    time_point_h : float
        Scan start after injection (h): the phantom frame simulated.
    noise_seed : int
    meta : dict
        Monte Carlo statistics and settings.
    """

    anterior: np.ndarray
    posterior: np.ndarray
    expected_anterior: np.ndarray
    expected_posterior: np.ndarray
    primary_anterior: np.ndarray
    primary_posterior: np.ndarray
    pixel_mm: tuple
    v_z_mm: np.ndarray
    u_mm: np.ndarray
    axis_xy_mm: tuple
    speed_cm_per_min: float
    dwell_s: float
    seconds: float
    scan_range_z_mm: tuple
    radii_mm: tuple
    time_point_h: float
    noise_seed: int
    meta: dict = field(default_factory=dict)

    @property
    def matrix(self) -> tuple:
        return tuple(self.anterior.shape)

    def total_counts(self) -> dict:
        """Poisson counts of each head (whole image)."""
        return {"anterior": int(self.anterior.sum(dtype=np.int64)), "posterior": int(self.posterior.sum(dtype=np.int64))}


def geometric_mean(anterior: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """Geometric mean sqrt(A P) with the posterior view mirrored onto the anterior's columns (v, u; counts).

    The conjugate-view mean cancels the depth dependence of attenuation for a source along a line
    (``A P = C^2 exp(-mu T)``, T the body thickness), the basis of planar whole-body quantitation.
    """
    a = np.asarray(anterior, np.float64)
    p = np.asarray(posterior, np.float64)
    if a.shape != p.shape or a.ndim != 2:
        raise ConfigError(f"geometric_mean: anterior {a.shape} and posterior {p.shape} must be equal (v, u) images")
    if np.any(a < 0) or np.any(p < 0):
        raise ConfigError("geometric_mean: counts must be >= 0")
    return np.sqrt(a * p[:, ::-1])


def _sweep_geometry(phantom: Phantom, protocol: WholeBodyProtocol) -> tuple:
    """(full-matrix row z centres, simulated row/column slices, sub-geometry without radii, axis)."""
    g = phantom.grid
    nv, nu = protocol.matrix
    p = protocol.pixel_mm
    z_lo = g.lower_corner_mm[0] - END_MARGIN_MM
    z_hi = g.lower_corner_mm[0] + g.extent_mm[0] + END_MARGIN_MM
    n_rows = int(math.ceil((z_hi - z_lo) / p))
    if n_rows > nv:
        raise ConfigError(f"the phantom's axial extent ({g.extent_mm[0]:.0f} mm + 2 x {END_MARGIN_MM:g} mm) needs "
                          f"{n_rows} rows of {p} mm but whole_body.matrix has {nv}; use a shorter grid")
    # full matrix: the scan range's superior end at the top edge of the last row
    top = z_lo + n_rows * p
    v_z = top - (nv - np.arange(nv) - 0.5) * p
    rows = slice(nv - n_rows, nv)
    axis_x, axis_y = float(g.center_mm[2]), float(g.center_mm[1])
    u_full = (np.arange(nu) - 0.5 * (nu - 1)) * p
    half_w = 0.5 * max(g.extent_mm[1], g.extent_mm[2]) * math.sqrt(2.0) + END_MARGIN_MM
    n_cols = min(nu, 2 * int(math.ceil(half_w / p)))
    n_cols += (nu - n_cols) % 2                      # same parity as nu: centres coincide with the full matrix
    c0 = (nu - n_cols) // 2
    cols = slice(c0, c0 + n_cols)
    axis_z = float(v_z[rows].mean())
    return v_z, u_full, rows, cols, (axis_x, axis_y), axis_z, (z_lo, top)


def simulate_whole_body(phantom: Phantom, frame: int = 0, protocol: WholeBodyProtocol | None = None,
                        camera: Camera | None = None, settings: MonteCarloSettings | None = None,
                        noise_seed: int = 0) -> WholeBodyScan:
    """Anterior/posterior whole-body sweep of ``phantom`` (time frame ``frame``) by fast-mode Monte Carlo.

    Parameters
    ----------
    phantom : Phantom
        Activity (Bq/mL) at the start of the sweep, materials and densities (e.g. the patient phantom with
        ``extent = "whole_body"`` on :func:`her2sim.phantoms.whole_body.whole_body_grid`).
    frame : int
        Index into ``phantom.time_points_h``.
    protocol : WholeBodyProtocol
        Bed speed, matrix (pixel size), head clearance.
    camera : Camera, optional
        Collimator and detector (default NM670 LEHR); its photopeak window (the first window named
        ``photopeak``, or the first window) is used, its protocol replaced by the sweep's.
    settings : MonteCarloSettings, optional
        Histories and Monte Carlo seed (scatter estimate).
    noise_seed : int
        Seed of the Poisson counts (``numpy.random.SeedSequence(noise_seed)``; anterior and posterior drawn
        from one stream in that order).

    Returns
    -------
    WholeBodyScan
    """
    t0 = time.perf_counter()
    protocol = protocol or WholeBodyProtocol()
    camera = camera or Camera()
    settings = settings or MonteCarloSettings(n_histories=500_000, seed=1)
    seed = check_int("noise_seed", noise_seed, 0, 2 ** 63 - 1)
    if not 0 <= frame < len(phantom.time_points_h):
        raise ConfigError(f"frame = {frame} is outside the phantom's time frames [0, {len(phantom.time_points_h) - 1}]")
    win = next((w for w in camera.windows if w.name == "photopeak"), camera.windows[0])
    L = float(camera.detector.height_mm)
    dwell = protocol.dwell_s(L)
    p = protocol.pixel_mm
    v_z, u_full, rows, cols, axis_xy, axis_z, (z_lo, z_top) = _sweep_geometry(phantom, protocol)
    n_rows, n_cols = rows.stop - rows.start, cols.stop - cols.start
    probe = ProjectionGeometry(np.array([0.0, 180.0]), np.array([1e4, 1e4]), (n_rows, n_cols), (p, p), axis_xy,
                               axis_z, np.array([0, 1]))
    radii = body_reach_mm(phantom, probe) + protocol.clearance_mm
    geo = ProjectionGeometry(probe.angles_deg, radii, probe.shape_vu, probe.pixel_mm, axis_xy, axis_z, probe.heads)
    cam = replace(camera, windows=(win,),
                  protocol=Protocol(n_views=2, radius_mm=float(min(max(radii.max(), 50.0), 600.0)),
                                    matrix=int(min(max(n_cols, 8), 1024)), pixel_mm=p, time_per_view_s=dwell))
    res = simulate_projections(phantom, cam, settings, frame=frame, geometry=geo)
    lam = TC99M.decay_constant_per_s
    row_decay = np.exp(-lam * (z_top - v_z[rows]) / protocol.speed_mm_per_s)
    nv, nu = protocol.matrix
    expected = np.zeros((2, nv, nu), np.float64)
    expected[:, rows, cols] = res.projections.counts[0].astype(np.float64) * row_decay[None, :, None]
    primary = np.zeros((2, nv, nu), np.float32)
    primary[:, rows, cols] = res.projections.components["primary"][0] * row_decay[None, :, None]
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    counts = [rng.poisson(expected[0]).astype(np.int32), rng.poisson(expected[1]).astype(np.int32)]
    sweep_s = ((z_top - z_lo) + L) / protocol.speed_mm_per_s
    meta = {"monte_carlo": {k: (float(v) if isinstance(v, (float, np.floating)) else v)
                            for k, v in res.stats.items()},
            "n_histories": settings.n_histories, "mc_seed": settings.seed, "window": win.to_dict(),
            "detector_axial_mm": L, "protocol": asdict(protocol), "simulated_rows": [rows.start, rows.stop],
            "simulated_cols": [cols.start, cols.stop], "total_activity_bq": res.projections.meta["total_activity_bq"],
            "seconds_sim": time.perf_counter() - t0}
    return WholeBodyScan(anterior=counts[0], posterior=counts[1], expected_anterior=expected[0].astype(np.float32),
                         expected_posterior=expected[1].astype(np.float32), primary_anterior=primary[0],
                         primary_posterior=primary[1], pixel_mm=(p, p), v_z_mm=v_z,
                         u_mm=u_full, axis_xy_mm=axis_xy, speed_cm_per_min=protocol.speed_cm_per_min,
                         dwell_s=dwell, seconds=sweep_s, scan_range_z_mm=(z_lo, z_top),
                         radii_mm=(float(radii[0]), float(radii[1])), time_point_h=phantom.time_points_h[frame],
                         noise_seed=seed, meta=meta)


def organ_thickness(phantom: Phantom, scan: WholeBodyScan, labels) -> np.ndarray:
    """Path length (mm) through the union of ``labels`` along the anterior-posterior rays of each pixel (v, u).

    The phantom's label map is summed along y (the rays of both heads are parallel to y) and sampled at the
    anterior image's pixel centres (nearest voxel), so the map is in the anterior head's frame.
    """
    g = phantom.grid
    ids = [k for k, v in phantom.label_names.items() if v in set(labels)]
    if not ids:
        return np.zeros(scan.anterior.shape)
    thick = np.isin(phantom.labels, ids).sum(axis=1) * g.spacing_mm[1]          # (z, x) mm
    iz = np.round((scan.v_z_mm - g.origin_mm[0]) / g.spacing_mm[0]).astype(int)
    ix = np.round((scan.u_mm + scan.axis_xy_mm[0] - g.origin_mm[2]) / g.spacing_mm[2]).astype(int)
    okz = (iz >= 0) & (iz < g.shape[0])
    okx = (ix >= 0) & (ix < g.shape[2])
    out = np.zeros(scan.anterior.shape)
    out[np.ix_(okz, okx)] = thick[np.ix_(iz[okz], ix[okx])]
    return out


def organ_footprint(phantom: Phantom, scan: WholeBodyScan, labels, core_fraction: float = 0.5) -> np.ndarray:
    """Pixels (v, u) where the organ's path length is >= ``core_fraction`` x its maximum (bool, anterior frame).

    The core of the projected footprint: the organ's edge pixels, where it is thin and its neighbours
    dominate the counts, are left out.
    """
    check_range("core_fraction", core_fraction, 0.0, 1.0, lo_open=True)
    t = organ_thickness(phantom, scan, labels)
    if t.max() <= 0:
        return np.zeros(t.shape, bool)
    return t >= core_fraction * t.max()
