"""Monte Carlo SPECT projections of a voxel phantom, fast (forced-detection) mode.

Method
------
* **Sources**: activity volume (Bq/mL) -> photons/s per voxel (x 0.8906 photons per
  decay of 99mTc, ICRP-107); decays during each view integrate the exponential decay
  over the step-and-shoot stop.
* **Transport** (:func:`her2sim.sim._transport_kernels.trace_histories`): Woodcock delta
  tracking with a per-energy majorant, photoelectric absorption by implicit capture,
  Compton scattering sampled from the free-electron Klein-Nishina cross-section (no
  incoherent-scattering-function binding correction; the Compton/Rayleigh channel
  probabilities use xraydb's Elam incoherent/coherent cross-sections, which include
  binding), Rayleigh scattering sampled from the atomic form factor F(x) (xraydb ``f0``),
  energy cut-off below the lowest window and Russian roulette.
* **Detection** (convolution-based forced detection, de Jong et al., Phys Med Biol
  46:621, 2001): the primary is forced-detected from every voxel centre (deterministic,
  noise-free), scatter from every recorded interaction vertex; each vertex adds, for
  every view, weight x angular pdf toward the head x 4 pi g (the collimator's effective
  solid angle, Anger/Keller g) x exp(-line integral of mu(E') to the body surface) x
  detector full-energy efficiency(E') x Gaussian window acceptance(E'). Contributions are
  binned in distance planes and each plane is blurred with the depth-dependent Gaussian
  collimator-detector response sigma(d) of :class:`her2sim.sim.camera.Camera`.
* **Attenuation at E'**: the line integral is computed at 140.5 keV per view and scaled by
  mu_water(E')/mu_water(140.5 keV) (water-equivalent energy scaling; tissues differ from water
  by < 2 % in this ratio between 90 and 155 keV).
* **Septal penetration and collimator scatter** (on by default, ``MonteCarloSettings.penetration``):
  not tracked through the lead, but added as a tail of the response: a fraction f(d) of each
  distance plane is blurred with a broad Gaussian sigma_pen(d) instead of sigma(d), both
  tabulated from the explicit mode's lead-lattice transport of a 140.5 keV point in air
  (:mod:`her2sim.sim.penetration`; stored as the ``penetration`` component). ``penetration=False``
  gives the geometric response alone.
* **Not modelled in fast mode**: the energy dependence of that tail (it is applied at 140.5 keV to
  scattered photons too), crystal Compton continuum and backscatter from behind the crystal into
  the windows, dead time (the explicit mode, :mod:`her2sim.sim.analog`, tracks the heads photon by photon).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from her2sim.core.acquisition import Acquisition
from her2sim.core.containers import Phantom, Projections
from her2sim.core.errors import ConfigError, DataError, PhysicsError, check_int, check_range
from her2sim.core.limits import LIMITS
from her2sim.core.materials import MATERIAL_NAMES
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.core.radionuclide import TC99M

from . import _transport_kernels as K
from .camera import Camera
from .detector_response import full_energy_efficiency, window_acceptance
from .penetration import penetration_table
from .xsections import E_MAX_KEV, E_MIN_KEV, E_STEP_KEV, build_table

COMPONENTS = ("primary", "scatter1", "scatter2", "scatter3plus")
SPECTRUM_BIN_KEV = 0.5
SPECTRUM_MAX_KEV = 200.0


@dataclass(frozen=True)
class MonteCarloSettings:
    """Settings of a fast-mode Monte Carlo run.

    Attributes
    ----------
    n_histories : int
        Photon histories traced for the scatter estimate (the primary is deterministic).
    seed : int
        Root seed; per-chunk streams derive from it via ``numpy.random.SeedSequence``.
    n_chunks : int
        Independent RNG streams (fixed, so output does not depend on the thread count).
    batches : int
        Batches for the per-pixel Monte Carlo variance estimate (>= 2).
    max_order : int
        Maximum number of scatters followed.
    threads : int or None
        Numba threads (None = all cores).
    primary_supersample : int
        Sub-positions per voxel axis for the deterministic primary (1 = voxel centres).
    penetration : bool
        Add the septal-penetration tail tabulated from the explicit mode (:mod:`her2sim.sim.penetration`).
    """

    n_histories: int = 200_000
    seed: int = 1
    n_chunks: int = 64
    batches: int = 4
    max_order: int = 30
    threads: int | None = None
    primary_supersample: int = 1
    penetration: bool = True

    def __post_init__(self):
        check_int("monte_carlo.n_histories", self.n_histories, *LIMITS["monte_carlo.photons"])
        check_int("monte_carlo.seed", self.seed, 0, 2 ** 63 - 1)
        check_int("monte_carlo.n_chunks", self.n_chunks, 1, 100_000)
        check_int("monte_carlo.batches", self.batches, 2, 64)
        check_int("monte_carlo.max_order", self.max_order, 1, 1000)
        check_int("monte_carlo.primary_supersample", self.primary_supersample, 1, 8)
        if self.threads is not None:
            check_int("monte_carlo.threads", self.threads, 1, 1024)
        if self.n_chunks % self.batches:
            raise ConfigError(f"monte_carlo.n_chunks = {self.n_chunks} must be a multiple of "
                              f"monte_carlo.batches = {self.batches}")


@dataclass
class MonteCarloResult:
    """Output of :func:`simulate_projections`.

    Attributes
    ----------
    projections : Projections
        Expected counts (window, view, v, u) with components and variance.
    spectrum_kev : numpy.ndarray
        Bin centres (keV) of the energy spectra.
    spectra : dict of str -> numpy.ndarray
        Detected-energy spectra (counts per keV per acquisition, summed over views) per
        component, after the detector's Gaussian energy blur.
    stats : dict
        Run statistics (histories, vertices, seconds, ...).
    """

    projections: Projections
    spectrum_kev: np.ndarray
    spectra: dict
    stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """SIMIND-like figures per window: counts, cps/MBq, S/T, S/P, scatter-order fractions."""
        p = self.projections
        total_bq = p.meta.get("total_activity_bq", 0.0)
        time_per_view_s = p.meta.get("time_per_view_s", 1.0)
        out = {}
        for wi, w in enumerate(p.windows):
            comp = {k: float(v[wi].sum()) for k, v in p.components.items()}
            tot = float(p.counts[wi].sum())
            scat = sum(comp.get(k, 0.0) for k in COMPONENTS[1:])
            prim = comp.get("primary", 0.0)
            n_views = p.geometry.n_views
            out[w.name] = {
                "lower_kev": w.lower_kev, "upper_kev": w.upper_kev,
                "counts": tot,
                # mean counts per view per second of view time per MBq (one head, one view at a time)
                "cps_per_mbq": tot / (n_views * time_per_view_s * total_bq / 1e6) if total_bq > 0 else 0.0,
                "scatter_to_total": scat / tot if tot > 0 else float("nan"),
                "scatter_to_primary": scat / prim if prim > 0 else float("nan"),
                "penetration_fraction": comp.get("penetration", 0.0) / tot if tot > 0 else 0.0,
                "scatter_order_fractions": {k: (comp.get(k, 0.0) / scat if scat > 0 else 0.0)
                                            for k in COMPONENTS[1:]},
                "relative_mc_error": float(np.sqrt(p.variance[wi].sum()) / tot) if (p.variance is not None and tot > 0) else None,
            }
        return out


def _material_rows(phantom: Phantom, names: tuple) -> np.ndarray:
    """Map the phantom's material ids to rows of the cross-section table."""
    lut = np.zeros(max(256, len(phantom.material_names)), np.int64)
    pnames = phantom.material_names or list(MATERIAL_NAMES)
    for i, n in enumerate(pnames):
        if n not in names:
            raise PhysicsError(f"phantom material {n!r} (id {i}) is not in the cross-section table {list(names)}")
        lut[i] = names.index(n)
    used = np.unique(phantom.material_ids)
    if used.max(initial=0) >= len(pnames):
        raise DataError(f"Phantom.material_ids uses id {int(used.max())} but only {len(pnames)} material_names exist")
    return lut[phantom.material_ids].astype(np.uint8)


def body_extent_mm(phantom: Phantom, axis_xy_mm=(0.0, 0.0), density_threshold: float = 0.01) -> float:
    """Largest transaxial distance (mm) from the rotation axis of any non-air or active voxel."""
    g = phantom.grid
    occupied = (phantom.density_g_cm3 > density_threshold) | np.any(phantom.activity_bq_per_ml > 0, axis=0)
    occ2 = occupied.any(axis=0)
    if not occ2.any():
        return 0.0
    _, y, x = g.mesh_mm(np.float64)
    yy, xx = np.broadcast_arrays(y[0], x[0])
    r = np.hypot(xx[occ2] - axis_xy_mm[0], yy[occ2] - axis_xy_mm[1])
    half_vox = 0.5 * math.hypot(g.spacing_mm[1], g.spacing_mm[2])
    return float(r.max() + half_vox)


def body_reach_mm(phantom: Phantom, geometry: ProjectionGeometry, density_threshold: float = 0.01) -> np.ndarray:
    """Per view, the largest distance (mm) from the axis toward the head of any non-air or active voxel corner."""
    g = phantom.grid
    occupied = (phantom.density_g_cm3 > density_threshold) | np.any(phantom.activity_bq_per_ml > 0, axis=0)
    occ2 = occupied.any(axis=0)
    if not occ2.any():
        return np.zeros(geometry.n_views)
    _, y, x = g.mesh_mm(np.float64)
    yy, xx = np.broadcast_arrays(y[0], x[0])
    px = xx[occ2] - geometry.axis_xy_mm[0]
    py = yy[occ2] - geometry.axis_xy_mm[1]
    n = geometry.normals_xy()
    half = 0.5 * (g.spacing_mm[2] * np.abs(n[:, 0]) + g.spacing_mm[1] * np.abs(n[:, 1]))
    return (px[:, None] * n[None, :, 0] + py[:, None] * n[None, :, 1]).max(axis=0) + half


#: ``Phantom.meta`` keys of the patient and injection that a simulated scan's :class:`Acquisition` takes
PHANTOM_ACQUISITION_KEYS = ("injected_mbq", "injection_time", "weight_kg", "height_cm", "sex")


def scan_acquisition(phantom: Phantom, camera: Camera) -> Acquisition:
    """The :class:`~her2sim.core.acquisition.Acquisition` of a simulated scan: the camera's time per view and
    the phantom's patient and injection (:data:`PHANTOM_ACQUISITION_KEYS` of its meta). The scan start is
    not known here (the study sets it per time point)."""
    known = Acquisition.from_meta({k: phantom.meta.get(k) for k in PHANTOM_ACQUISITION_KEYS})
    return Acquisition(time_per_view_s=camera.protocol.time_per_view_s).filled_from(known)


def view_effective_seconds(geometry: ProjectionGeometry, time_per_view_s: float) -> np.ndarray:
    """Decay-weighted acquisition time per view (s) relative to the activity at scan start.

    Both heads acquire simultaneously; view ``j`` of head ``h`` is stop ``j - h n/2``.
    """
    heads = geometry.heads
    n = geometry.n_views
    stops = np.arange(n) - heads.astype(int) * (n // 2 if heads.max() > 0 else 0)
    lam = TC99M.decay_constant_per_s
    t0 = stops * time_per_view_s
    return (np.exp(-lam * t0) - np.exp(-lam * (t0 + time_per_view_s))) / lam


@dataclass
class TransportSetup:
    """Validated inputs of a transport run (shared by the fast and the explicit mode)."""

    phantom: Phantom
    camera: Camera
    settings: MonteCarloSettings
    frame: int
    geometry: ProjectionGeometry
    activity: np.ndarray
    total_bq: float
    r_body_mm: float
    n_threads: int
    table: object
    material: np.ndarray
    density: np.ndarray
    rho_max: np.ndarray
    e_cut_kev: float

    @property
    def photons_per_s(self) -> float:
        """99mTc photons emitted per second at scan start (Bq x 0.8906)."""
        return self.total_bq * TC99M.gamma_yield


def prepare_transport(phantom: Phantom, camera: Camera | None, settings: MonteCarloSettings | None, frame: int = 0,
                      geometry: ProjectionGeometry | None = None) -> TransportSetup:
    """Validate a phantom/camera pair and build the arrays the kernels need.

    Raises ConfigError / DataError / PhysicsError naming the field for: frame out of range,
    zero activity, windows outside the tables, a phantom not fitting inside the orbit radius,
    unknown materials, negative or NaN densities.
    """
    import numba

    camera = camera or Camera()
    settings = settings or MonteCarloSettings()
    if not 0 <= frame < len(phantom.time_points_h):
        raise ConfigError(f"frame = {frame} is outside the phantom's time frames [0, {len(phantom.time_points_h) - 1}]")
    g = phantom.grid
    act = phantom.activity_bq_per_ml[frame].astype(np.float64)
    total_bq = float(act.sum() * g.voxel_volume_ml)
    if total_bq <= 0:
        raise DataError("Phantom.activity_bq_per_ml: total activity is 0 Bq; nothing to simulate")
    for w in camera.windows:
        if w.lower_kev < E_MIN_KEV or w.upper_kev > E_MAX_KEV:
            raise PhysicsError(f"window[{w.name}] lies outside the tabulated range [{E_MIN_KEV}, {E_MAX_KEV}] keV")
    if geometry is None:
        geometry = camera.projection_geometry(axis_z_mm=g.center_mm[0])
    r_body = body_extent_mm(phantom, geometry.axis_xy_mm)
    reach = body_reach_mm(phantom, geometry)
    bad = np.nonzero(reach >= geometry.radii_mm)[0]
    if bad.size:
        j = int(bad[0])
        raise ConfigError(f"phantom does not fit inside the orbit: at view {j} ({geometry.angles_deg[j]:g} deg) the body "
                          f"reaches {reach[j]:.1f} mm toward the head but protocol.radius_mm = "
                          f"{geometry.radii_mm[j]:.1f} mm (must be larger)")
    # always set the thread count, so a previous run's setting does not leak into this one
    numba.set_num_threads(min(settings.threads or numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS))
    table = build_table()
    material = _material_rows(phantom, table.names)
    density = phantom.density_g_cm3.astype(np.float64)
    if np.any(~np.isfinite(density)) or np.any(density < 0):
        raise DataError("Phantom.density_g_cm3 must be finite and >= 0 g/cm^3")
    rho_max = np.zeros(len(table.names))
    for m in np.unique(material):
        rho_max[m] = density[material == m].max()
    win_lo = min(w.lower_kev for w in camera.windows)
    sig_e_min = float(camera.detector.energy_fwhm_kev(win_lo)) / 2.3548200450309493
    e_cut = float(max(E_MIN_KEV + 1.0, win_lo - 4.0 * sig_e_min))
    return TransportSetup(phantom, camera, settings, frame, geometry, act, total_bq, r_body, numba.get_num_threads(),
                          table, material, density, rho_max, e_cut)


def trace(setup: TransportSetup, record_escapes: bool = False) -> dict:
    """Run the photon histories of ``setup``; return interaction vertices (and escapes) per chunk.

    Returns a dict with ``vertices`` (rows, 11), ``counts`` per chunk, ``cap`` rows per chunk,
    ``escapes`` / ``n_escapes`` / ``cap_e`` when recorded, ``n_histories``, ``escaped`` stats and
    ``seconds``.
    """
    st = setup.settings
    g = setup.phantom.grid
    ss = np.random.SeedSequence(st.seed)
    chunk_seeds = np.array([s.generate_state(1, np.uint32)[0] for s in ss.spawn(st.n_chunks)], np.int64)
    n_per_chunk = -(-st.n_histories // st.n_chunks)
    cap_e = (n_per_chunk + 16) if record_escapes else 0
    t0 = time.perf_counter()
    # interaction rows per history: about 2.9 in water and 1.8 in a torso above the energy cut-off;
    # start at 4 and retrace (same seeds, same result) with more room if a chunk overflowed
    for rows_per_history in (4, 8, 16, st.max_order + 1):
        cap = n_per_chunk * rows_per_history + 16
        vertices = np.zeros((cap * st.n_chunks, K.N_VCOLS), np.float64)
        escapes = np.zeros((cap_e * st.n_chunks, K.N_VCOLS), np.float64)
        counts = np.zeros(st.n_chunks, np.int64)
        n_escapes = np.zeros(st.n_chunks, np.int64)
        escaped = np.zeros((st.n_chunks, 2), np.float64)
        K.trace_histories(chunk_seeds, n_per_chunk, np.cumsum(setup.activity.ravel()), np.array(g.shape, np.int64),
                          np.array(g.lower_corner_mm, np.float64), np.array(g.spacing_mm, np.float64),
                          setup.material, setup.density, setup.table.log_mu_rho, float(setup.table.energies_kev[0]),
                          E_STEP_KEV, setup.table.ff_q, setup.table.ff2_total, setup.rho_max, TC99M.gamma_kev,
                          setup.e_cut_kev, st.max_order, vertices, counts, escaped, escapes, n_escapes)
        if escaped[:, 1].sum() == 0:
            break
        del vertices, escapes
    seconds = time.perf_counter() - t0
    return {"vertices": vertices, "counts": counts, "cap": cap, "escapes": escapes, "n_escapes": n_escapes,
            "cap_e": cap_e, "n_histories": n_per_chunk * st.n_chunks, "escaped": escaped, "seconds": seconds}


def simulate_projections(phantom: Phantom, camera: Camera | None = None, settings: MonteCarloSettings | None = None,
                         frame: int = 0, geometry: ProjectionGeometry | None = None,
                         progress: bool = False) -> MonteCarloResult:
    """Expected (noise-free) SPECT projections of ``phantom`` by fast-mode Monte Carlo.

    Parameters
    ----------
    phantom : Phantom
        Activity (Bq/mL) at the scan start of time frame ``frame``, materials, densities.
    camera : Camera
        Camera, windows and protocol (views, radius, matrix, pixel, time per view).
    settings : MonteCarloSettings
        Histories, seed, threads.
    frame : int
        Index into ``phantom.time_points_h``.
    geometry : ProjectionGeometry, optional
        Overrides the camera's circular orbit (e.g. body-contour radii).
    progress : bool
        Show a tqdm progress bar over views.

    Returns
    -------
    MonteCarloResult
    """
    t_start = time.perf_counter()
    setup = prepare_transport(phantom, camera, settings, frame, geometry)
    camera, settings, geometry = setup.camera, setup.settings, setup.geometry
    g = phantom.grid
    act = setup.activity
    total_bq = setup.total_bq
    n_threads = setup.n_threads
    table = setup.table
    material, density = setup.material, setup.density
    axis_x, axis_y = geometry.axis_xy_mm
    r_body = setup.r_body_mm
    e_emit = TC99M.gamma_kev
    log_mu = table.log_mu_rho
    e0 = float(table.energies_kev[0])
    lower = np.array(g.lower_corner_mm, np.float64)
    spacing = np.array(g.spacing_mm, np.float64)

    # --- mu at 140.5 keV per voxel (1/mm) and water scaling for other energies
    mu140 = np.zeros(len(table.names))
    for m in range(len(table.names)):
        mu140[m] = table.mu_rho(table.names[m], e_emit)[0]
    mu_map = (0.1 * density * mu140[material]).astype(np.float64)
    w_row = table.index("water")
    mu_w = np.exp(np.logaddexp.reduce(log_mu[w_row], axis=0))
    mu_water_ratio = mu_w / table.mu_rho("water", e_emit)[0]
    det_eff = full_energy_efficiency(camera, table.energies_kev)
    # detector efficiency x Gaussian window acceptance per window on the table's energy grid
    eff_acc = np.stack([det_eff * window_acceptance(camera, w.lower_kev, w.upper_kev, table.energies_kev)
                        for w in camera.windows])
    e_cut = setup.e_cut_kev
    omega_eff = 4.0 * math.pi * camera.collimator.geometric_efficiency(e_emit)

    # --- scatter histories
    tr = trace(setup)
    t_trace = tr["seconds"]
    counts, cap, escaped = tr["counts"], tr["cap"], tr["escaped"]
    vertices = tr["vertices"]
    n_hist = tr["n_histories"]
    photons_per_s = setup.photons_per_s
    w_hist = photons_per_s / n_hist
    batch_vertices = []
    for b in range(settings.batches):
        rows = [np.arange(c * cap, c * cap + counts[c]) for c in range(b, settings.n_chunks, settings.batches)]
        v = vertices[np.concatenate(rows)] if rows else np.zeros((0, K.N_VCOLS))
        v[:, K.V_W] *= w_hist * settings.batches  # each batch is an unbiased estimate of the whole
        vf = np.zeros((v.shape[0], K.N_FD_COLS))
        K.vertex_channel_factors(v, log_mu, e0, E_STEP_KEV, table.rayleigh_norm, vf)
        batch_vertices.append(vf)
    n_vertices = int(counts.sum())
    del vertices, tr

    # --- primary emission points: voxel (sub-)centres
    prim = _primary_vertices(act, g, settings.primary_supersample)

    # --- per-view forced detection
    nv_pix, nu_pix = geometry.shape_vu
    dv, du = geometry.pixel_mm
    u0 = -0.5 * (nu_pix - 1) * du
    v0 = geometry.axis_z_mm - 0.5 * (nv_pix - 1) * dv
    step = float(min(g.spacing_mm[1], g.spacing_mm[2]))
    half_diag = 0.5 * math.hypot(g.extent_mm[1], g.extent_mm[2]) + math.hypot(
        abs(g.center_mm[2] - axis_x), abs(g.center_mm[1] - axis_y))
    tau_n = int(2 * math.ceil(half_diag / step) + 1)
    tau = np.zeros((g.shape[0], tau_n, tau_n), np.float64)
    dd = du
    d0 = float(geometry.radii_mm.min() - r_body - 2 * dd)
    nd = int(math.ceil((geometry.radii_mm.max() + r_body + 2 * dd - d0) / dd)) + 1
    nwin = len(camera.windows)
    ncomp = len(COMPONENTS)
    nspec = int(SPECTRUM_MAX_KEV / SPECTRUM_BIN_KEV)
    spectrum = np.zeros((n_threads, ncomp, nspec))
    out_comp = np.zeros((ncomp, nwin, geometry.n_views, nv_pix, nu_pix), np.float64)
    pen_out = np.zeros((nwin, geometry.n_views, nv_pix, nu_pix), np.float64)
    sumsq_b = np.zeros((nwin, geometry.n_views, nv_pix, nu_pix))
    eff_s = view_effective_seconds(geometry, camera.protocol.time_per_view_s)
    plane_d = d0 + dd * np.arange(nd)
    sig_pix_u = camera.sigma_mm(np.maximum(plane_d, 0.0)) / du
    sig_pix_v = camera.sigma_mm(np.maximum(plane_d, 0.0)) / dv
    buf = np.zeros((n_threads, nwin, ncomp, nd, nv_pix, nu_pix), np.float64)
    iterator = range(geometry.n_views)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="forced detection", unit="view")
    t0 = time.perf_counter()
    # depth-dependent blur by incremental blurring (exact per-plane variances, see the kernel)
    var_v = np.maximum.accumulate(sig_pix_v ** 2)
    var_u = np.maximum.accumulate(sig_pix_u ** 2)

    # septal-penetration tail: a fraction f(d) of each plane goes to a broad Gaussian sigma_pen(d)
    if settings.penetration:
        pen_f, pen_sig = penetration_table(camera).at(np.maximum(plane_d, 0.0))
    else:
        pen_f, pen_sig = np.zeros(nd), camera.sigma_mm(np.maximum(plane_d, 0.0))
    var_pv = np.maximum.accumulate(np.maximum((pen_sig / dv) ** 2, var_v))
    var_pu = np.maximum.accumulate(np.maximum((pen_sig / du) ** 2, var_u))

    def blur(selections, with_penetration=False):
        """Blurred sums of buffer selections [(window, c0, c1), ...] -> (S, v, u); with penetration the
        geometric core and the tail go through one parallel call and (total, tail) are returned."""
        n = len(selections)
        win = np.array([x[0] for x in selections], np.int64)
        c0 = np.array([x[1] for x in selections], np.int64)
        c1 = np.array([x[2] for x in selections], np.int64)
        if not with_penetration or not np.any(pen_f > 0):
            out = np.zeros((n, nv_pix, nu_pix))
            K.blur_from_buffer(buf, win, c0, c1, np.ones((n, nd)), var_v2[:n], var_u2[:n], out)
            return (out, np.zeros_like(out)) if with_penetration else out
        weight = np.concatenate([np.broadcast_to(1.0 - pen_f, (n, nd)), np.broadcast_to(pen_f, (n, nd))])
        vv = np.concatenate([var_v2[:n], var_pv2[:n]])
        vu = np.concatenate([var_u2[:n], var_pu2[:n]])
        out = np.zeros((2 * n, nv_pix, nu_pix))
        K.blur_from_buffer(buf, np.concatenate([win, win]), np.concatenate([c0, c0]), np.concatenate([c1, c1]),
                           np.ascontiguousarray(weight), np.ascontiguousarray(vv), np.ascontiguousarray(vu), out)
        return out[:n] + out[n:], out[n:]

    n_max = nwin * ncomp
    var_v2 = np.ascontiguousarray(np.broadcast_to(var_v, (n_max, nd)))
    var_u2 = np.ascontiguousarray(np.broadcast_to(var_u, (n_max, nd)))
    var_pv2 = np.ascontiguousarray(np.broadcast_to(var_pv, (n_max, nd)))
    var_pu2 = np.ascontiguousarray(np.broadcast_to(var_pu, (n_max, nd)))

    t_kernel = t_blur = t_tau = 0.0
    for j in iterator:
        th = math.radians(geometry.angles_deg[j])
        ct, st = math.cos(th), math.sin(th)
        ta = time.perf_counter()
        K.attenuation_to_face(mu_map, lower, spacing, axis_x, axis_y, tau_n, ct, st, step, tau)
        t_tau += time.perf_counter() - ta
        radius = float(geometry.radii_mm[j])
        common = (tau, float(g.origin_mm[0]), float(g.spacing_mm[0]), step, tau_n, ct, st, axis_x, axis_y, radius,
                  u0, du, v0, dv, nu_pix, nv_pix, d0, dd, nd, e0, E_STEP_KEV, table.ff_q, table.ff2,
                  mu_water_ratio, det_eff, eff_acc, omega_eff, n_threads)
        buf[:] = 0.0
        ta = time.perf_counter()
        K.forced_detection_view(prim, True, *common, buf, spectrum, SPECTRUM_BIN_KEV)
        t_kernel += time.perf_counter() - ta
        ta = time.perf_counter()
        out_comp[0, :, j], tail0 = blur([(wi, 0, 1) for wi in range(nwin)], True)
        t_blur += time.perf_counter() - ta
        # batches accumulate into the scatter components; the blurred cumulative sums give each
        # batch's own (blurred) total by difference, since the blur is linear
        prev = np.zeros((nwin, nv_pix, nu_pix))
        batch_tot = np.zeros((settings.batches, nwin, nv_pix, nu_pix))
        for b, bv in enumerate(batch_vertices):
            ta = time.perf_counter()
            K.forced_detection_view(bv, False, *common, buf, spectrum, SPECTRUM_BIN_KEV)
            t_kernel += time.perf_counter() - ta
            ta = time.perf_counter()
            cum = blur([(wi, 1, ncomp) for wi in range(nwin)])
            batch_tot[b] = cum - prev
            prev = cum
            t_blur += time.perf_counter() - ta
        ta = time.perf_counter()
        comps, tails = blur([(wi, c, c + 1) for c in range(1, ncomp) for wi in range(nwin)], True)
        pen_out[:, j] = (tail0 + tails.reshape(ncomp - 1, nwin, nv_pix, nu_pix).sum(axis=0) / settings.batches
                         ) * eff_s[j]
        t_blur += time.perf_counter() - ta
        out_comp[1:, :, j] = comps.reshape(ncomp - 1, nwin, nv_pix, nu_pix) / settings.batches
        sumsq_b[:, j] = batch_tot.var(axis=0, ddof=1) / settings.batches
        out_comp[:, :, j] *= eff_s[j]
        sumsq_b[:, j] *= eff_s[j] ** 2
    t_fd = time.perf_counter() - t0

    counts_exp = out_comp.sum(axis=0)
    components = {name: out_comp[i] for i, name in enumerate(COMPONENTS)}
    components["penetration"] = pen_out
    acq_s = float(camera.protocol.time_per_view_s * geometry.n_views / 2)
    meta = {
        "mode": "fast", "seed": settings.seed, "n_histories": n_hist, "n_vertices": n_vertices,
        "time_per_view_s": camera.protocol.time_per_view_s, "acquisition_seconds": acq_s,
        "total_activity_bq": total_bq, "frame": frame, "time_point_h": phantom.time_points_h[frame],
        "camera": camera.to_dict(), "units": "counts",
    }
    for key in ("injected_mbq", "weight_kg", "height_cm"):
        if key in phantom.meta:
            meta[key] = phantom.meta[key]
    proj = Projections(counts_exp.astype(np.float32), camera.windows, geometry, True,
                       {k: v.astype(np.float32) for k, v in components.items()}, sumsq_b.astype(np.float32), meta,
                       acquisition=scan_acquisition(phantom, camera))
    # spectra: sum threads, divide by number of batches for the scatter part already included
    spec = spectrum.sum(axis=0)
    spec[1:] /= settings.batches
    # convert to counts over the acquisition (views share eff seconds on average)
    spec *= eff_s.mean()
    e_cent = (np.arange(nspec) + 0.5) * SPECTRUM_BIN_KEV
    spectra = {name: _energy_blur(spec[i], e_cent, camera) / SPECTRUM_BIN_KEV for i, name in enumerate(COMPONENTS)}
    spectra["total"] = sum(spectra[n] for n in COMPONENTS)
    stats = {"seconds_total": time.perf_counter() - t_start, "seconds_trace": t_trace, "seconds_forced_detection": t_fd,
             "seconds_fd_kernel": t_kernel, "seconds_fd_blur": t_blur, "seconds_attenuation_maps": t_tau,
             "n_histories": n_hist, "n_vertices": n_vertices, "n_primary_points": int(prim.shape[0]),
             "threads": n_threads, "e_cut_kev": e_cut,
             "unscattered_escape_fraction": float(escaped[:, 0].sum() / n_hist)}
    return MonteCarloResult(proj, e_cent, spectra, stats)


def _primary_vertices(act: np.ndarray, g, supersample: int) -> np.ndarray:
    """Emission points for the deterministic primary: (sub-)voxel centres weighted by photons/s."""
    idx = np.nonzero(act > 0)
    photons = act[idx] * g.voxel_volume_ml * TC99M.gamma_yield
    centres = g.index_to_world(np.stack(idx, axis=-1))  # (n, 3) z, y, x
    s = supersample
    offs = (np.arange(s) + 0.5) / s - 0.5
    oz, oy, ox = np.meshgrid(offs, offs, offs, indexing="ij")
    off = np.stack([oz.ravel(), oy.ravel(), ox.ravel()], -1) * np.asarray(g.spacing_mm)
    pts = (centres[:, None, :] + off[None]).reshape(-1, 3)
    out = np.zeros((pts.shape[0], K.N_VCOLS))
    out[:, K.V_Z], out[:, K.V_Y], out[:, K.V_X] = pts[:, 0], pts[:, 1], pts[:, 2]
    out[:, K.V_E] = TC99M.gamma_kev
    out[:, K.V_W] = np.repeat(photons / s ** 3, s ** 3)
    return out


def _energy_blur(hist: np.ndarray, e_cent: np.ndarray, camera: Camera) -> np.ndarray:
    """Blur a histogram of arrival energies with the detector's Gaussian energy response."""
    sig = camera.detector.energy_fwhm_kev(np.maximum(e_cent, 1.0)) / 2.3548200450309493
    out = np.zeros_like(hist)
    for i in np.nonzero(hist)[0]:
        out += hist[i] * np.exp(-0.5 * ((e_cent - e_cent[i]) / sig[i]) ** 2) * (
            SPECTRUM_BIN_KEV / (math.sqrt(2 * math.pi) * sig[i]))
    return out


def poisson_realisations(projections: Projections, n: int = 1, seed: int = 0, scale: float = 1.0) -> list:
    """Independent Poisson noise realisations of expected projections.

    Parameters
    ----------
    projections : Projections
        Expected counts (``is_expected`` must be True).
    n : int
        Number of realisations.
    seed : int
        Root seed; realisation ``i`` uses stream ``SeedSequence(seed).spawn(n)[i]``.
    scale : float
        Factor applied to the expectation first (e.g. activity or time scaling).
    """
    if not projections.is_expected:
        raise DataError("poisson_realisations needs expected (noise-free) projections; got a noisy realisation")
    check_int("noise_realisations", n, *LIMITS["monte_carlo.noise_realisations"])
    check_range("scale", scale, 0.0, None, lo_open=True)
    out = []
    for i, s in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(s)
        lam = projections.counts.astype(np.float64) * scale
        meta = dict(projections.meta, noise_seed=seed, realisation=i, scale=scale)
        out.append(Projections(rng.poisson(lam).astype(np.float32), projections.windows, projections.geometry,
                               False, {}, None, meta, acquisition=projections.acquisition,
                               corrections=projections.corrections))
    return out


def pencil_beam_transmission(phantom: Phantom, y_mm: float, z_mm: float, n_photons: int = 100_000, seed: int = 0,
                             energy_kev: float = TC99M.gamma_kev) -> float:
    """Unscattered fraction of a +x pencil beam crossing ``phantom`` at (y, z) by Woodcock tracking.

    The narrow-beam check of the transport: it must equal exp(-integral of mu dx).
    """
    check_int("n_photons", n_photons, 1, 10 ** 9)
    check_range("energy_kev", energy_kev, E_MIN_KEV, E_MAX_KEV, error=PhysicsError)
    table = build_table()
    material = _material_rows(phantom, table.names)
    density = phantom.density_g_cm3.astype(np.float64)
    rho_max = np.zeros(len(table.names))
    for m in np.unique(material):
        rho_max[m] = density[material == m].max()
    g = phantom.grid
    lower = np.array(g.lower_corner_mm, np.float64)
    return float(K.pencil_beam_unscattered(seed, n_photons, lower[2] + 1e-9, y_mm, z_mm, np.array(g.shape, np.int64),
                                           lower, np.array(g.spacing_mm, np.float64), material, density,
                                           table.log_mu_rho, float(table.energies_kev[0]), E_STEP_KEV, rho_max,
                                           energy_kev))
