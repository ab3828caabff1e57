"""Explicit camera mode of the Monte Carlo: photons through the hexagonal-hole collimator and the crystal.

The patient transport (:mod:`her2sim.sim.transport`) hands over photons at the collimator front
face of one head; :func:`detect_photons` carries them through the head and scores them.

Head-local frame (mm): the collimator front face is the plane ``n = 0``, ``n`` grows toward the
crystal; ``u`` is the in-plane transaxial axis and ``v`` the axial axis, origin at the detector
centre. Along ``n``: collimator ``0 <= n <= L``, air gap, Al cover, NaI crystal, backscatter slab.

Physics in the head (numbers from ``../shared/reference/camera_nm670.md`` and ``physics.md``)
--------------------------------------------------------------------------------------------
* Collimator: hexagonal close-packed lattice of regular hexagonal holes (GE LEHR: 1.50 mm across
  flats, 0.20 mm lead septa, 35.0 mm long; SIMIND ``collim.col`` GI-LEHR, OpenGATE NM670 model),
  hole flats facing +/-u. Each photon gets a random lattice offset uniform over one cell (no
  aliasing of the hole pattern with pixels); its line is marched cell by cell through the lattice
  with the exact lead chord in every cell. Two modes:

  - ``collimator_scatter=True`` (default): analog transport in the lead. Free paths are sampled
    from exp(-mu_Pb s) along the lead chords; at an interaction the photon is absorbed
    (photoelectric; above the 88 keV K edge a Pb K x-ray, 72.8-87.6 keV lines from xraydb, is
    emitted isotropically with probability (1 - 1/J_K) omega_K and followed), Compton scattered
    (Klein-Nishina) or Rayleigh scattered (form factor) and followed again through the lattice.
    Photons leaving through the front face are lost.
  - ``collimator_scatter=False``: straight rays only; the weight is multiplied by
    ``exp(-mu_Pb(E) l)`` (exact lead path ``l``) with Russian roulette below
    ``ROULETTE_THRESHOLD``; photons interacting in the lead are removed (no collimator scatter,
    no Pb x-rays; lower variance for the PSF core).

  The collimator is laterally unbounded.
* Air: 2 mm gap (and the short flight inside the holes) are not attenuating.
* Al cover (1.3 mm), NaI(Tl) crystal (9.525 mm) and a backscatter slab of
  ``BACKSCATTER_GLASS_MM`` of Pyrex glass (light guide / PMTs, "about 8 cm glass equivalent",
  OpenGATE NM670 model) are laterally infinite slabs with photoelectric, Compton
  (Klein-Nishina, free electron) and Rayleigh (form factor) interactions; only the crystal scores.
  A photoelectric absorption in the crystal emits an iodine K x-ray (lines and intensities from
  xraydb; fluorescence yield and K jump ratio from xraydb ``xray_edge('I', 'K')``) which is
  followed, so the I K-escape peak (about 112 keV) is produced. Photons leaving the stack toward
  the collimator are lost.
* Position: energy-weighted centroid of the crystal deposits; deposits whose centroid lies outside
  the useful field of view (540 x 400 mm) are dropped.
* Blur: Gaussian energy blur of the total deposit, FWHM(E) = R0 sqrt(E_ref E) (R0 = 9.5 % at
  140.5 keV), and Gaussian intrinsic spatial blur with FWHM 3.9 mm sqrt(140 keV / E).

Definitions
-----------
* ``penetration``: scored photons whose path through the collimator crossed ANY lead (lead path
  > 0), whatever their scatter order in the patient; this includes ``collimator_scatter``
  (photons that interacted in the lead). ``geometric``: scored photons whose path crossed no lead
  (``geometric + penetration = counts``). ``primary`` / ``scatter1`` / ``scatter2`` /
  ``scatter3plus`` split the same counts by patient scatter order (they include penetration).
  Straight-through septal penetration = ``penetration - collimator_scatter``.

Randomness: photons are processed in fixed chunks of ``CHUNK_SIZE``; chunk ``c`` uses the
integer seed drawn from ``numpy.random.SeedSequence(seed).spawn(n_chunks)[c]``, so the same seed
and the same photons give the same result for any number of threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import xraydb

from her2sim.core.errors import ConfigError, DataError, check_int, check_range
from her2sim.core.materials import MATERIAL_IDS, get_material

from . import _camera_kernels as K
from .camera import Camera
from .xsections import E_MAX_KEV, E_STEP_KEV, HC_KEV_A, build_table

#: photons per RNG chunk (fixed so results do not depend on the thread count)
CHUNK_SIZE = 4096
#: photons per call of the Numba kernel (bounds the per-photon output memory); a multiple of CHUNK_SIZE
BATCH_SIZE = 1 << 19
#: Russian roulette threshold on the collimator transmission
ROULETTE_THRESHOLD = 0.05
#: backscatter slab behind the crystal: Pyrex glass thickness (mm), OpenGATE NM670 model
BACKSCATTER_GLASS_MM = 80.0
#: energy spectrum binning (keV)
SPECTRUM_BIN_KEV = 0.5
SPECTRUM_MAX_KEV = 200.0
#: component names of a HeadScore
COMPONENTS = ("primary", "scatter1", "scatter2", "scatter3plus", "penetration", "geometric", "collimator_scatter")
#: lead path above which a photon counts as having crossed lead (mm; guards against round-off)
PENETRATION_EPS_MM = 1e-9


@dataclass
class HeadScore:
    """What one head scored.

    Attributes
    ----------
    counts : numpy.ndarray
        (window, v, u) summed photon weights scored in each camera window.
    components : dict of str -> numpy.ndarray
        Same shape as ``counts``: ``primary``, ``scatter1``, ``scatter2``, ``scatter3plus``
        (split by patient scatter order), ``penetration`` (path crossed any lead) and
        ``geometric`` (crossed no lead); ``penetration + geometric == counts``;
        ``collimator_scatter`` (interacted in the lead: Compton/Rayleigh or Pb K x-ray; a subset of
        ``penetration``).
    spectrum_kev_edges : numpy.ndarray
        (n_bins + 1,) bin edges (keV), 0.5 keV bins over 0-200 keV.
    spectrum : dict of str -> numpy.ndarray
        (n_bins,) histogram of the blurred deposited energy of every photon whose deposit lies in
        the field of view (all energies, not only the windows), same keys as ``components``.
    n_input : int
        Number of photons handed to :func:`detect_photons`.
    window_names : tuple of str
        Names of the windows (first axis of ``counts``).
    pixel_mm : tuple of float
        Pixel size (dv, du) in mm.
    """

    counts: np.ndarray
    components: dict
    spectrum_kev_edges: np.ndarray
    spectrum: dict
    n_input: int
    window_names: tuple = ()
    pixel_mm: tuple = (4.42, 4.42)

    def __iadd__(self, other: "HeadScore") -> "HeadScore":
        if other.counts.shape != self.counts.shape:
            raise DataError(f"HeadScore.counts shape {other.counts.shape} differs from {self.counts.shape}")
        self.counts += other.counts
        for k in self.components:
            self.components[k] += other.components[k]
            self.spectrum[k] += other.spectrum[k]
        self.n_input += other.n_input
        return self


@dataclass(frozen=True)
class HeadPhysics:
    """Arrays the kernel needs for one camera (built once per camera by :func:`head_physics`)."""

    log_mu_rho: np.ndarray
    e0_kev: float
    ff_q: np.ndarray
    ff_cdf: np.ndarray
    z_bounds: np.ndarray
    layer_mat: np.ndarray
    layer_rho: np.ndarray
    crystal_layer: int
    lead_mat: int
    lead_rho: float
    p_k_fluor: float
    k_line_kev: np.ndarray
    k_line_cdf: np.ndarray
    k_edge_kev: float
    pb_p_k: float
    pb_line_kev: np.ndarray
    pb_line_cdf: np.ndarray
    pb_edge_kev: float


def k_fluorescence(element: str, material: str, energy_kev: float = 140.5) -> tuple:
    """K x-ray emission of ``element`` after a photoelectric absorption in ``material``.

    Parameters
    ----------
    element : str
        Emitting element (``"I"`` in NaI, ``"Pb"`` in the collimator).
    material : str
        Catalogue material containing it.
    energy_kev : float
        Photon energy (keV) at which the element's share of the photo cross-section is taken.

    Returns
    -------
    p_emit : float
        Probability that an absorption above the K edge emits a K x-ray: (element share of the
        material's photo cross-section) x (1 - 1/J_K) x omega_K, xraydb Elam data.
    line_kev : numpy.ndarray
        K line energies (keV).
    line_cdf : numpy.ndarray
        Cumulative relative intensities of the lines.
    edge_kev : float
        K edge (keV).
    """
    fr = dict(get_material(material).mass_fractions)
    if element not in fr:
        raise ConfigError(f"element = {element!r} is not in material {material!r}; allowed {sorted(fr)}")
    e_ev = energy_kev * 1000.0
    taus = {el: w * float(xraydb.mu_elam(el, e_ev, kind="photo")) for el, w in fr.items()}
    edge = xraydb.xray_edge(element, "K")
    p = taus[element] / sum(taus.values()) * (1.0 - 1.0 / edge.jump_ratio) * edge.fyield
    lines = sorted(xraydb.xray_lines(element, "K").values(), key=lambda ln: ln.energy)
    e = np.array([ln.energy for ln in lines]) / 1000.0
    w = np.array([ln.intensity for ln in lines])
    cdf = np.cumsum(w) / w.sum()
    cdf[-1] = 1.0
    return float(p), e, cdf, edge.energy / 1000.0


@lru_cache(maxsize=8)
def head_physics(camera: Camera, backscatter_mm: float = BACKSCATTER_GLASS_MM) -> HeadPhysics:
    """Cross-section tables and the slab stack (Al cover, NaI, glass) of ``camera``'s head."""
    check_range("backscatter_mm", backscatter_mm, 0.0, 500.0)
    tab = build_table()
    col, det = camera.collimator, camera.detector
    z0 = col.length_mm + det.air_gap_mm
    z_bounds = np.array([z0, z0 + det.cover_mm, z0 + det.cover_mm + det.crystal_mm,
                         z0 + det.cover_mm + det.crystal_mm + backscatter_mm])
    names = ("aluminium", "nai", "glass")
    layer_mat = np.array([MATERIAL_IDS[nm] for nm in names], dtype=np.int64)
    layer_rho = np.array([get_material(nm).density_g_cm3 for nm in names])
    p, e, cdf, edge = k_fluorescence("I", "nai")
    sym = get_material(col.material).mass_fractions[0][0]
    pb = k_fluorescence(sym, col.material)
    return HeadPhysics(tab.log_mu_rho, float(tab.energies_kev[0]), tab.ff_q, tab.ff_cdf, z_bounds, layer_mat,
                       layer_rho, 1, MATERIAL_IDS[col.material], get_material(col.material).density_g_cm3,
                       p, e, cdf, edge, pb[0], pb[1], pb[2], pb[3])


def chunk_seeds(seed: int, n_photons: int, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    """One integer seed per chunk of ``chunk_size`` photons from ``SeedSequence(seed).spawn``."""
    n_chunks = max(1, -(-n_photons // chunk_size))
    kids = np.random.SeedSequence(seed).spawn(n_chunks)
    return np.array([int(k.generate_state(1, dtype=np.uint32)[0]) for k in kids], dtype=np.int64)


def _as_photon_array(name, a, n=None, dtype=np.float64):
    arr = np.ascontiguousarray(np.asarray(a, dtype=dtype).ravel())
    if n is not None and arr.size != n:
        raise DataError(f"{name} has {arr.size} entries, expected {n} (one per photon)")
    return arr


def run_head_kernel(camera: Camera, u_mm, v_mm, cu, cv, cn, energy_kev, seed: int, *, use_collimator: bool = True,
                    start_at_crystal: bool = False, backscatter_mm: float = BACKSCATTER_GLASS_MM,
                    collimator_scatter: bool = True) -> dict:
    """Per-photon head response (no binning): the raw output of the Numba kernel.

    Parameters
    ----------
    camera : Camera
    u_mm, v_mm : array_like
        Photon positions on the collimator front face (mm).
    cu, cv, cn : array_like
        Unit directions, ``cn > 0`` (photons with ``cn <= 0`` are not detected).
    energy_kev : array_like
        Photon energies (keV), 0-250 keV (below 10 keV: never detected).
    seed : int
        Seed of the chunked random streams.
    use_collimator : bool
        False removes the collimator (photons fly straight to the cover).
    start_at_crystal : bool
        True starts the slab transport at the crystal front face (no Al cover): used for the
        intrinsic photopeak efficiency.
    backscatter_mm : float
        Thickness of the glass backscatter slab behind the crystal (mm).
    collimator_scatter : bool
        True: analog transport in the lead with Compton/Rayleigh scatter and Pb K x-rays;
        False: straight rays weighted by exp(-mu_Pb l) (no collimator scatter).

    Returns
    -------
    dict
        ``weight`` (collimator weight of scored photons, 0 otherwise), ``lead_mm`` (3-D lead path),
        ``e_blur_kev``, ``u_mm``, ``v_mm`` (blurred), ``e_dep_kev`` (before blur),
        ``collimator_interactions`` (number of interactions in the lead).
    """
    photons = _checked_photons(u_mm, v_mm, cu, cv, cn, energy_kev)
    n = photons[0].size
    out = {k: np.zeros(n) for k in _RAW_KEYS}
    for sl, raw in _kernel_batches(camera, photons, seed, use_collimator, start_at_crystal, backscatter_mm,
                                   collimator_scatter):
        for k in _RAW_KEYS:
            out[k][sl] = raw[k]
    return out


_RAW_KEYS = ("weight", "lead_mm", "e_blur_kev", "u_mm", "v_mm", "e_dep_kev", "collimator_interactions")


def _checked_photons(u_mm, v_mm, cu, cv, cn, energy_kev) -> tuple:
    """Contiguous float64 photon arrays (u, v, cu, cv, cn, E) after shape, range and unit checks."""
    u = _as_photon_array("u_mm", u_mm)
    n = u.size
    v = _as_photon_array("v_mm", v_mm, n)
    a = _as_photon_array("cu", cu, n)
    b = _as_photon_array("cv", cv, n)
    c = _as_photon_array("cn", cn, n)
    e = _as_photon_array("energy_kev", energy_kev, n)
    if n and (not np.all(np.isfinite(u)) or not np.all(np.isfinite(v))):
        raise DataError("u_mm / v_mm must be finite")
    if n and not (e.min() >= 0.0 and e.max() <= E_MAX_KEV):  # NaN fails too
        bad = e[~((e >= 0.0) & (e <= E_MAX_KEV))][0]
        check_range("energy_kev", float(bad), 0.0, E_MAX_KEV)
    if n and np.any(np.abs(a * a + b * b + c * c - 1.0) > 1e-6):
        raise DataError("photon directions (cu, cv, cn) must be unit vectors (|c|^2 - 1 within 1e-6)")
    return u, v, a, b, c, e


def _kernel_batches(camera: Camera, photons: tuple, seed: int, use_collimator: bool = True,
                    start_at_crystal: bool = False, backscatter_mm: float = BACKSCATTER_GLASS_MM,
                    collimator_scatter: bool = True):
    """Run the kernel on ``BATCH_SIZE`` slices; yield (slice, per-photon output dict) per batch.

    Chunk ``c`` of the whole photon list always uses seed ``chunk_seeds(seed, n)[c]``, so the result
    does not depend on the batching.
    """
    seed = check_int("seed", seed, 0, 2 ** 63 - 1)
    u, v, a, b, c, e = photons
    n = u.size
    hp = head_physics(camera, float(backscatter_mm))
    col, det = camera.collimator, camera.detector
    seeds = chunk_seeds(seed, n)
    for s0 in range(0, n, BATCH_SIZE):
        s1 = min(n, s0 + BATCH_SIZE)
        c0 = s0 // CHUNK_SIZE
        c1 = -(-s1 // CHUNK_SIZE)
        sl = slice(s0, s1)
        out = {k: np.zeros(s1 - s0) for k in _RAW_KEYS}
        K.detect_kernel(u[sl], v[sl], a[sl], b[sl], c[sl], e[sl], seeds[c0:c1], CHUNK_SIZE,
                        bool(use_collimator), bool(collimator_scatter), col.length_mm, col.hole_mm, col.pitch_mm,
                        hp.lead_mat, hp.lead_rho, ROULETTE_THRESHOLD, hp.pb_p_k, hp.pb_line_kev, hp.pb_line_cdf,
                        hp.pb_edge_kev, hp.z_bounds, hp.layer_mat, hp.layer_rho, hp.crystal_layer,
                        hp.crystal_layer if start_at_crystal else 0,
                        hp.log_mu_rho, hp.e0_kev, E_STEP_KEV, hp.ff_q, hp.ff_cdf, HC_KEV_A, hp.p_k_fluor,
                        hp.k_line_kev, hp.k_line_cdf, hp.k_edge_kev,
                        det.energy_resolution, det.reference_kev, det.intrinsic_fwhm_mm, 140.0,
                        0.5 * det.width_mm, 0.5 * det.height_mm,
                        out["weight"], out["lead_mm"], out["e_blur_kev"], out["u_mm"], out["v_mm"], out["e_dep_kev"],
                        out["collimator_interactions"])
        yield sl, out


def spectrum_edges_kev() -> np.ndarray:
    """Bin edges (keV) of HeadScore spectra: 0.5 keV bins over 0-200 keV."""
    n = int(round(SPECTRUM_MAX_KEV / SPECTRUM_BIN_KEV))
    return np.linspace(0.0, SPECTRUM_MAX_KEV, n + 1)


def score_head(camera: Camera, raw: dict, photon_weight, scatter_order, shape_vu=(128, 128),
               pixel_mm=(4.42, 4.42)) -> HeadScore:
    """Bin the per-photon output of :func:`run_head_kernel` into a :class:`HeadScore`.

    Pixel ``(iv, iu)`` has its centre at ``u = (iu - (nu-1)/2) du``, ``v = (iv - (nv-1)/2) dv``
    (the convention of :mod:`her2sim.core.projection_geometry`).
    """
    nv = check_int("shape_vu[0]", int(shape_vu[0]), 1, 4096)
    nu = check_int("shape_vu[1]", int(shape_vu[1]), 1, 4096)
    dv = check_range("pixel_mm[0]", pixel_mm[0], 0.0, 2000.0, lo_open=True)
    du = check_range("pixel_mm[1]", pixel_mm[1], 0.0, 2000.0, lo_open=True)
    n = raw["weight"].size
    pw = _as_photon_array("weight", photon_weight, n)
    order = _as_photon_array("scatter_order", scatter_order, n, np.int64)
    if n and order.min() < 0:
        raise DataError(f"scatter_order must be >= 0 (got {order.min()})")
    keep = np.flatnonzero(raw["weight"] > 0)  # scored photons only
    w = raw["weight"][keep] * pw[keep]
    order = np.minimum(order[keep], 3)
    pen = raw["lead_mm"][keep] > PENETRATION_EPS_MM
    eb = raw["e_blur_kev"][keep]
    iu = np.floor(raw["u_mm"][keep] / du + 0.5 * nu).astype(np.int64)
    iv = np.floor(raw["v_mm"][keep] / dv + 0.5 * nv).astype(np.int64)
    inside = (iu >= 0) & (iu < nu) & (iv >= 0) & (iv < nv)
    n_keep = keep.size
    win = np.full(n_keep, -1, np.int64)
    for k, wd in enumerate(camera.windows):
        win[(eb >= wd.lower_kev) & (eb < wd.upper_kev)] = k
    nw = len(camera.windows)
    sel_pix = inside & (win >= 0)
    flat = (win * nv + iv) * nu + iu
    size = nw * nv * nu
    coll = raw["collimator_interactions"][keep] > 0
    masks = {"primary": order == 0, "scatter1": order == 1, "scatter2": order == 2, "scatter3plus": order == 3,
             "penetration": pen, "geometric": ~pen, "collimator_scatter": coll}
    edges = spectrum_edges_kev()
    comps, spec = {}, {}
    for key, m in masks.items():
        s = sel_pix & m
        comps[key] = np.bincount(flat[s], weights=w[s], minlength=size).astype(np.float64).reshape(nw, nv, nu)
        spec[key] = np.histogram(eb[m], bins=edges, weights=w[m])[0].astype(np.float64)
    counts = comps["penetration"] + comps["geometric"]
    return HeadScore(counts, comps, edges, spec, int(n), tuple(wd.name for wd in camera.windows), (dv, du))


def detect_photons(camera: Camera, u_mm, v_mm, cu, cv, cn, energy_kev, weight, scatter_order, seed: int,
                   shape_vu=(128, 128), pixel_mm=(4.42, 4.42), *, collimator_scatter: bool = True) -> HeadScore:
    """Carry photons from the collimator front face through the head and score them.

    Parameters
    ----------
    camera : Camera
        Collimator, detector and windows.
    u_mm, v_mm : array_like of float64
        (N,) photon positions on the collimator front face (head frame, mm).
    cu, cv, cn : array_like of float64
        (N,) unit directions in the head frame; ``cn > 0`` toward the crystal.
    energy_kev : array_like of float64
        (N,) photon energies (keV), at most 250 keV (the tabulated range); photons below the
        10 keV table floor are accepted and never detected.
    weight : array_like of float64
        (N,) photon weights (counts carried by each photon).
    scatter_order : array_like of int8
        (N,) scatter order in the patient: 0 primary, 1, 2, 3 = 3 or more.
    seed : int
        Seed of the per-chunk random streams.
    shape_vu : tuple of int
        Detector matrix (nv, nu).
    pixel_mm : tuple of float
        Pixel size (dv, du) in mm.
    collimator_scatter : bool
        True (default): analog transport in the lead with scatter and Pb K x-rays; False: straight
        rays weighted by the lead transmission (no collimator scatter, lower variance).

    Returns
    -------
    HeadScore
    """
    photons = _checked_photons(u_mm, v_mm, cu, cv, cn, energy_kev)
    n = photons[0].size
    w = _as_photon_array("weight", weight, n)
    order = _as_photon_array("scatter_order", scatter_order, n, np.int64)
    if n and (not np.all(np.isfinite(w)) or w.min() < 0):
        raise DataError("weight must be finite and >= 0")
    total = None
    for sl, raw in _kernel_batches(camera, photons, seed, collimator_scatter=collimator_scatter):
        part = score_head(camera, raw, w[sl], order[sl], shape_vu, pixel_mm)
        if total is None:
            total = part
        else:
            total += part
    if total is None:  # no photons: an empty score
        total = score_head(camera, {k: np.zeros(0) for k in _RAW_KEYS}, np.zeros(0), np.zeros(0, np.int64),
                           shape_vu, pixel_mm)
    return total


# ---------------------------------------------------------------------------------------------------------------
# point-source response in air
# ---------------------------------------------------------------------------------------------------------------

#: default half-angle of the emission cone for point sources (tan theta = 0.15, lateral shift 5.25 mm =
#: 3 pitches over the 35 mm collimator): steeper rays add < 1 % to the sensitivity (tests/sim/test_explicit_camera.py)
DEFAULT_MAX_TAN = 0.15


@dataclass
class PointResponse:
    """Scored response of one head to a point source in air.

    Attributes
    ----------
    distances_mm : numpy.ndarray
        (d,) source distances from the collimator face (mm).
    psf : numpy.ndarray
        (d, v, u) photopeak-window counts per emitted photon per pixel.
    pixel_mm : float
        Pixel size of ``psf`` (mm).
    fwhm_mm : numpy.ndarray
        (d,) FWHM (mm) of the line-spread profile, see :func:`psf_fwhm_mm`.
    sensitivity_per_photon : numpy.ndarray
        (d,) photopeak-window counts per emitted photon (whole detector).
    sensitivity_std : numpy.ndarray
        (d,) Monte Carlo standard error of ``sensitivity_per_photon``.
    geometric_sensitivity_per_photon : numpy.ndarray
        (d,) the part whose path crossed no lead.
    penetration_fraction : numpy.ndarray
        (d,) photopeak counts whose path crossed lead / all photopeak counts.
    collimator_scatter_fraction : numpy.ndarray
        (d,) photopeak counts that interacted in the lead / all photopeak counts.
    spectrum_kev_edges : numpy.ndarray
        Spectrum bin edges (keV).
    spectrum : numpy.ndarray
        (d, n_bins) blurred deposited-energy spectrum per emitted photon.
    cone_fraction : float
        Solid-angle fraction of 4 pi that was sampled (1 - cos theta_max) / 2.
    """

    distances_mm: np.ndarray
    psf: np.ndarray
    pixel_mm: float
    fwhm_mm: np.ndarray
    sensitivity_per_photon: np.ndarray
    sensitivity_std: np.ndarray
    geometric_sensitivity_per_photon: np.ndarray
    penetration_fraction: np.ndarray
    collimator_scatter_fraction: np.ndarray
    spectrum_kev_edges: np.ndarray
    spectrum: np.ndarray
    cone_fraction: float


def sample_annulus(n: int, tan_lo: float, tan_hi: float, rng: np.random.Generator) -> tuple:
    """Isotropic directions with ``tan_lo < tan(theta) <= tan_hi`` about +n (``tan_hi = inf``: to 90 deg).

    Returns (cu, cv, cn, solid_angle_fraction) with the fraction of 4 pi (cos_lo - cos_hi) / 2.
    """
    c_hi = 1.0 / math.sqrt(1.0 + tan_lo * tan_lo)
    c_lo = 0.0 if math.isinf(tan_hi) else 1.0 / math.sqrt(1.0 + tan_hi * tan_hi)
    cn = c_hi - rng.random(n) * (c_hi - c_lo)
    cn = np.maximum(cn, 1e-9)
    phi = 2.0 * math.pi * rng.random(n)
    st = np.sqrt(np.maximum(0.0, 1.0 - cn * cn))
    return st * np.cos(phi), st * np.sin(phi), cn, 0.5 * (c_hi - c_lo)


def sample_cone(n: int, max_tan: float, rng: np.random.Generator) -> tuple:
    """Isotropic directions within the cone ``tan(theta) <= max_tan`` about +n.

    Returns (cu, cv, cn, cone_fraction) with cone_fraction = (1 - cos theta_max) / 2 of 4 pi.
    """
    return sample_annulus(n, 0.0, max_tan, rng)


def lsf_fwhm_mm(profile, pixel_mm: float) -> float:
    """FWHM (mm) of a 1-D profile, NEMA NU 1 style.

    The maximum is the vertex of a parabola through the highest bin and its neighbours; the
    half-maximum crossings on both sides are found by linear interpolation.
    """
    y = np.asarray(profile, dtype=float)
    if y.ndim != 1 or y.size < 5:
        raise DataError(f"profile must be 1-D with >= 5 bins (got shape {y.shape})")
    k = int(np.argmax(y))
    if y[k] <= 0 or k == 0 or k == y.size - 1:
        raise DataError("profile has no interior positive maximum; widen the matrix")
    a, b, c = y[k - 1], y[k], y[k + 1]
    den = a - 2 * b + c
    peak = b - 0.125 * (a - c) ** 2 / den if den < 0 else b
    half = 0.5 * peak
    i = k
    while i > 0 and y[i] > half:
        i -= 1
    j = k
    while j < y.size - 1 and y[j] > half:
        j += 1
    if y[i] > half or y[j] > half:
        raise DataError("profile does not fall below half maximum inside the matrix; widen the matrix")
    left = i + (half - y[i]) / (y[i + 1] - y[i])
    right = j - 1 + (y[j - 1] - half) / (y[j - 1] - y[j])
    return float((right - left) * pixel_mm)


def psf_fwhm_mm(psf, pixel_mm: float) -> float:
    """FWHM (mm) of a centred point-source response from its line-spread profiles.

    The PSF is summed over v (profile along u) and over u (profile along v); each profile is
    folded about the central pixel (the on-axis response of a lattice with random offsets is
    point-symmetric, folding halves the Monte Carlo variance) and measured with
    :func:`lsf_fwhm_mm`; the two FWHM are averaged. For a Gaussian PSF the line-spread FWHM equals
    the point-spread FWHM; a NEMA NU 1 line-source measurement reports this quantity.
    """
    p = np.asarray(psf, dtype=float)
    if p.ndim != 2:
        raise DataError(f"psf must be 2-D (v, u), got shape {p.shape}")
    out = []
    for prof in (p.sum(axis=0), p.sum(axis=1)):
        out.append(lsf_fwhm_mm(0.5 * (prof + prof[::-1]), pixel_mm))
    return float(np.mean(out))


def tabulate_response(camera: Camera, distances_mm, n_photons: int, seed: int, *, pixel_mm: float = 0.5,
                      matrix: int = 161, max_tan: float = DEFAULT_MAX_TAN, window: int = 0,
                      measure_fwhm: bool = True, collimator_scatter: bool = True,
                      outer_photons: int = 0) -> PointResponse:
    """Response of one head to a point source in air at each distance (on the central axis).

    Photons are emitted isotropically into the cone ``tan(theta) <= max_tan`` around the detector
    normal and every count is weighted by the cone's solid-angle fraction (1 - cos theta_max)/2,
    so results are per photon emitted into 4 pi. Directions outside the cone cross more than about
    2 mm of lead: they are only simulated when ``outer_photons > 0`` (a second stratum, weighted by
    its own solid-angle fraction); without it the collimator-scatter counts they produce (about
    0.6 % of the photopeak counts) are missing. Air attenuation from the source to the face is
    applied (mu of ICRU dry air).

    Parameters
    ----------
    camera : Camera
    distances_mm : sequence of float
        Source distances from the collimator face (mm), 0-1000.
    n_photons : int
        Photons emitted into the cone per distance.
    seed : int
    pixel_mm : float
        Pixel size of the PSF matrix (mm).
    matrix : int
        PSF matrix size (odd, so the source projects onto a pixel centre).
    max_tan : float
        tan of the cone half-angle.
    window : int
        Index of the camera window used for the PSF and sensitivities (0 = photopeak).
    measure_fwhm : bool
        False skips the FWHM (reported as NaN), e.g. for a coarse matrix used only for sensitivity.
    collimator_scatter : bool
        Analog lead transport with scatter and Pb K x-rays (True) or transmission weighting (False).
    outer_photons : int
        Extra photons emitted outside the cone (tan(theta) > max_tan, up to 90 deg), weighted by that
        stratum's solid-angle fraction (stratified sampling): they add the small collimator-scatter
        contribution of steep directions (about 0.6 % of the photopeak counts at 10 cm).
    """
    d = np.atleast_1d(np.asarray(distances_mm, dtype=float))
    for x in d:
        check_range("distances_mm", float(x), 0.0, 1000.0)
    n_photons = check_int("n_photons", n_photons, 1, 10 ** 10)
    seed = check_int("seed", seed, 0, 2 ** 63 - 1)
    check_range("max_tan", max_tan, 0.0, 2.0, lo_open=True)
    matrix = check_int("matrix", matrix, 5, 4095)
    check_int("window", window, 0, len(camera.windows) - 1)
    if matrix % 2 == 0:
        raise ConfigError(f"matrix = {matrix} must be odd so the source projects on a pixel centre")
    e0 = 140.511  # 99mTc gamma, ICRP-107 (physics.md)
    n_outer = check_int("outer_photons", outer_photons, 0, 10 ** 10)
    tab = build_table()
    mu_air_mm = float(tab.mu_rho("air", e0)[0]) * get_material("air").density_g_cm3 * 0.1
    ss = np.random.SeedSequence(seed).spawn(2 * d.size)
    psf, fwhm, sens, sens_sd, geo, pen, csc, spec = [], [], [], [], [], [], [], []
    frac = 0.0
    wd = camera.windows[window]
    for k, dist in enumerate(d):
        rng = np.random.default_rng(ss[2 * k])
        cu, cv, cn, frac = sample_cone(n_photons, max_tan, rng)
        w = np.full(n_photons, frac / n_photons)
        if n_outer:
            ou, ov, on, f_out = sample_annulus(n_outer, max_tan, math.inf, rng)
            cu, cv, cn = np.concatenate([cu, ou]), np.concatenate([cv, ov]), np.concatenate([cn, on])
            w = np.concatenate([w, np.full(n_outer, f_out / n_outer)])
        n_tot = cn.size
        u0 = dist * cu / cn
        v0 = dist * cv / cn
        w = w * np.exp(-mu_air_mm * dist / cn)  # per emitted photon, air attenuation included
        kernel_seed = int(ss[2 * k + 1].generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        raw = run_head_kernel(camera, u0, v0, cu, cv, cn, np.full(n_tot, e0), kernel_seed,
                              collimator_scatter=collimator_scatter)
        zero = np.zeros(n_tot, np.int8)
        score = score_head(camera, raw, w, zero, (matrix, matrix), (pixel_mm, pixel_mm))
        full = score_head(camera, raw, w, zero, (1, 1), (camera.detector.height_mm * 2, camera.detector.width_mm * 2))
        p = score.counts[window]
        psf.append(p)
        fwhm.append(psf_fwhm_mm(p, pixel_mm) if measure_fwhm else float("nan"))
        tot = float(full.counts[window].sum())
        hit = (raw["weight"] > 0) & (raw["e_blur_kev"] >= wd.lower_kev) & (raw["e_blur_kev"] < wd.upper_kev)
        # standard error of a sum of independent per-photon scores: sqrt(sum x_i^2) (upper bound)
        sens_sd.append(math.sqrt(float(np.sum((raw["weight"][hit] * w[hit]) ** 2))))
        sens.append(tot)
        geo.append(float(full.components["geometric"][window].sum()))
        pen.append(float(full.components["penetration"][window].sum()) / tot if tot > 0 else 0.0)
        csc.append(float(full.components["collimator_scatter"][window].sum()) / tot if tot > 0 else 0.0)
        spec.append(full.spectrum["primary"])
    return PointResponse(d, np.array(psf), float(pixel_mm), np.array(fwhm), np.array(sens), np.array(sens_sd),
                         np.array(geo), np.array(pen), np.array(csc), spectrum_edges_kev(), np.array(spec),
                         float(frac))


def collimator_efficiency(camera: Camera, n_photons: int, seed: int, *, max_tan: float = DEFAULT_MAX_TAN,
                          energy_kev: float = 140.511) -> dict:
    """Fraction of isotropically emitted photons that leave the collimator back face (no detector).

    Directions are sampled in the cone ``tan(theta) <= max_tan`` (weighted by its solid-angle
    fraction) with random lattice offsets; each ray's exact lead path ``l`` gives the transmission
    ``exp(-mu_Pb l)``.

    Returns
    -------
    dict
        ``efficiency`` (mean transmission x cone fraction: geometric + septal penetration),
        ``geometric_efficiency`` (rays crossing no lead), their standard errors ``efficiency_std`` and
        ``geometric_std``, and ``mean_lead_path_mm`` of the transmitted weight.
    """
    n = check_int("n_photons", n_photons, 1, 10 ** 9)
    check_range("max_tan", max_tan, 0.0, 2.0, lo_open=True)
    col = camera.collimator
    rng = np.random.default_rng(seed)
    cu, cv, cn, frac = sample_cone(n, max_tan, rng)
    r1, r2 = rng.random(n), rng.random(n)
    x = col.pitch_mm * (r1 + 0.5 * r2)
    y = col.pitch_mm * K.SQRT3_2 * r2
    mu = col.mu_per_mm(energy_kev)
    path = K.lead_paths_mm(x, y, cu, cv, cn, col.length_mm, col.hole_mm, col.pitch_mm, 40.0 / mu)
    t = np.exp(-mu * path)
    geo = (path <= PENETRATION_EPS_MM).astype(float)
    return {"efficiency": float(t.mean() * frac), "efficiency_std": float(t.std() * frac / math.sqrt(n)),
            "geometric_efficiency": float(geo.mean() * frac), "geometric_std": float(geo.std() * frac / math.sqrt(n)),
            "mean_lead_path_mm": float(np.sum(t * path) / max(np.sum(t), 1e-300))}
