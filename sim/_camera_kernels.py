"""Numba kernels of the explicit camera Monte Carlo (collimator lattice march + layered detector).

Plain arrays and scalars in, plain arrays out; orchestration, units and validation live in
:mod:`her2sim.sim.explicit_camera`.

Head-local frame: the collimator front face is the plane ``n = 0`` and ``n`` grows toward the
crystal; ``u`` (transaxial) and ``v`` (axial) span the face, all in mm.

Hexagonal lattice: hole centres at ``i a1 + j a2`` with ``a1 = p (1, 0)``,
``a2 = p (1/2, sqrt(3)/2)`` (pitch ``p`` = hole + septum). A hole is the regular hexagon
``|r . n_k| <= D/2`` (k = 0, 1, 2) with ``n_k`` the unit vectors at 0, 60 and 120 deg, i.e. the
Voronoi cell of the lattice (apothem ``p/2``) shrunk to ``D/2``: the septum between two
neighbouring holes is ``p - D`` thick everywhere.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._transport_kernels import _rotate
from ._transport_kernels import sample_klein_nishina as _kn_fraction
from ._transport_kernels import sample_rayleigh_cos  # the one Rayleigh sampler (x^2 inversion)
from .xsections import COH, INCOH, PHOTO

SQRT3_2 = math.sqrt(3.0) / 2.0
ELECTRON_REST_KEV = 510.99895
#: photons below this energy deposit what they have left where they are (keV)
E_CUTOFF_KEV = 10.0
#: maximum number of lattice cells visited per photon (guards against degenerate rays)
MAX_CELLS = 100000

# unit normals of the three pairs of hexagon faces (0, 60, 120 deg)
_NX = np.array([1.0, 0.5, -0.5])
_NY = np.array([0.0, SQRT3_2, SQRT3_2])
# lattice index step (di, dj) to the neighbour across the +n_k face
_DI = np.array([1, 0, -1])
_DJ = np.array([0, 1, 1])


@njit(cache=True)
def mu_channels(log_mu_rho, e0_kev, de_kev, m, energy_kev):
    """(photo, incoherent, coherent) mu/rho (cm^2/g) of material ``m`` by log-log interpolation.

    Same interpolation as :func:`her2sim.sim.xsections.mu_lookup`, sharing the logarithms
    between the three channels.
    """
    n = log_mu_rho.shape[2]
    i = int((energy_kev - e0_kev) / de_kev)
    if i < 0:
        i = 0
    if i > n - 2:
        i = n - 2
    e_lo = e0_kev + i * de_kev
    t = (math.log(energy_kev) - math.log(e_lo)) / (math.log(e_lo + de_kev) - math.log(e_lo))
    p = math.exp(log_mu_rho[m, PHOTO, i] * (1.0 - t) + log_mu_rho[m, PHOTO, i + 1] * t)
    q = math.exp(log_mu_rho[m, INCOH, i] * (1.0 - t) + log_mu_rho[m, INCOH, i + 1] * t)
    r = math.exp(log_mu_rho[m, COH, i] * (1.0 - t) + log_mu_rho[m, COH, i + 1] * t)
    return p, q, r


@njit(cache=True)
def nearest_cell(x_mm, y_mm, pitch_mm):
    """Lattice indices (i, j) of the hole centre nearest to (x, y) (its Voronoi cell)."""
    fj = y_mm / (pitch_mm * SQRT3_2)
    fi = x_mm / pitch_mm - 0.5 * fj
    i0 = math.floor(fi)
    j0 = math.floor(fj)
    best = 1e300
    bi = 0
    bj = 0
    for di in range(2):
        for dj in range(2):
            i = i0 + di
            j = j0 + dj
            cx = pitch_mm * (i + 0.5 * j)
            cy = pitch_mm * SQRT3_2 * j
            d2 = (x_mm - cx) ** 2 + (y_mm - cy) ** 2
            if d2 < best:
                best = d2
                bi = i
                bj = j
    return bi, bj


@njit(cache=True)
def _cell_crossing(rx, ry, dx, dy, half_hole, half_cell):
    """Crossing of a straight line with one hexagonal lattice cell and its hole.

    The line starts at (rx, ry) relative to the cell centre with in-plane direction (dx, dy).
    Returns (t_exit, exit_k, exit_s, h_in, h_out): the parameter at which the line leaves the
    cell, through which face pair ``exit_k`` and on which side ``exit_s`` (+1/-1), and the
    parameter interval [h_in, h_out] it spends inside the hexagonal hole (empty when h_in > h_out).
    """
    t_exit = 1e300
    exit_k = -1
    exit_s = 0
    h_in = -1e300
    h_out = 1e300
    for k in range(3):
        r = rx * _NX[k] + ry * _NY[k]
        d = dx * _NX[k] + dy * _NY[k]
        if d > 1e-14 or d < -1e-14:
            if d > 0.0:
                te = (half_cell - r) / d
                sg = 1
            else:
                te = (-half_cell - r) / d
                sg = -1
            if te < t_exit:
                t_exit = te
                exit_k = k
                exit_s = sg
            a = (-half_hole - r) / d
            b = (half_hole - r) / d
            if a > b:
                a, b = b, a
            if a > h_in:
                h_in = a
            if b < h_out:
                h_out = b
        elif r > half_hole or r < -half_hole:
            h_in = 1e300  # parallel to this face pair and outside the hole: never inside
    return t_exit, exit_k, exit_s, h_in, h_out


@njit(cache=True)
def lead_depth_mm(x0_mm, y0_mm, dx, dy, length_mm, hole_mm, pitch_mm, max_depth_mm):
    """Depth-length of lead crossed by a straight ray through the hexagonal-hole collimator.

    The ray is ``(x0 + t dx, y0 + t dy)`` for depth ``t`` in ``[0, length_mm]`` (``dx = cu/cn``,
    ``dy = cv/cn``); it is followed cell by cell through the Voronoi cells of the lattice and
    in each cell the chord inside the hole (slab clipping on the three face pairs) is
    subtracted from the chord inside the cell.

    Returns
    -------
    float
        Sum of the depth intervals spent in lead (mm of ``n``); the 3-D lead path is this
        divided by ``cn``. The march stops early once the sum exceeds ``max_depth_mm``.
    """
    i, j = nearest_cell(x0_mm, y0_mm, pitch_mm)
    half_hole = 0.5 * hole_mm
    half_cell = 0.5 * pitch_mm
    t = 0.0
    lead = 0.0
    for _ in range(MAX_CELLS):
        cx = pitch_mm * (i + 0.5 * j)
        cy = pitch_mm * SQRT3_2 * j
        rx = x0_mm - cx
        ry = y0_mm - cy
        t_exit, exit_k, exit_s, h_in, h_out = _cell_crossing(rx, ry, dx, dy, half_hole, half_cell)
        seg_end = t_exit if t_exit < length_mm else length_mm
        seg = seg_end - t
        if seg > 0.0:
            lo = h_in if h_in > t else t
            hi = h_out if h_out < seg_end else seg_end
            inside = hi - lo if hi > lo else 0.0
            lead += seg - inside
            if lead > max_depth_mm:
                return lead
        if t_exit >= length_mm or exit_k < 0:
            break
        if t_exit > t:
            t = t_exit
        i += exit_s * _DI[exit_k]
        j += exit_s * _DJ[exit_k]
    return lead


@njit(cache=True)
def march_lead(x0_mm, y0_mm, n0_mm, cu, cv, cn, length_mm, hole_mm, pitch_mm, target_mm):
    """Follow a ray inside the collimator slab until it has crossed ``target_mm`` of lead or leaves.

    The ray starts at ``(x0, y0)`` (lattice frame) at depth ``n0`` in ``[0, length]`` with unit
    direction ``(cu, cv, cn)`` (any sign of ``cn``) and is parameterised by its 3-D path length ``s``.

    Returns
    -------
    hit : bool
        True if the cumulative lead path reached ``target_mm`` inside the slab.
    s_mm : float
        Path length to that point (hit) or to the slab face where the ray leaves (no hit).
    lead_mm : float
        Lead path crossed up to ``s_mm``.
    """
    if cn > 1e-300:
        s_end = (length_mm - n0_mm) / cn
    elif cn < -1e-300:
        s_end = -n0_mm / cn
    else:
        s_end = 1e300
    i, j = nearest_cell(x0_mm, y0_mm, pitch_mm)
    half_hole = 0.5 * hole_mm
    half_cell = 0.5 * pitch_mm
    s = 0.0
    lead = 0.0
    for _ in range(MAX_CELLS):
        cx = pitch_mm * (i + 0.5 * j)
        cy = pitch_mm * SQRT3_2 * j
        rx = x0_mm - cx
        ry = y0_mm - cy
        t_exit, exit_k, exit_s, h_in, h_out = _cell_crossing(rx, ry, cu, cv, half_hole, half_cell)
        seg_end = t_exit if t_exit < s_end else s_end
        if seg_end > s:
            lo = h_in if h_in > s else s
            hi = h_out if h_out < seg_end else seg_end
            if hi > lo:
                a1, b1, a2, b2 = s, lo, hi, seg_end
            else:
                a1, b1, a2, b2 = s, seg_end, seg_end, seg_end
            if b1 > a1:
                if lead + (b1 - a1) >= target_mm:
                    return True, a1 + (target_mm - lead), target_mm
                lead += b1 - a1
            if b2 > a2:
                if lead + (b2 - a2) >= target_mm:
                    return True, a2 + (target_mm - lead), target_mm
                lead += b2 - a2
        if t_exit >= s_end or exit_k < 0:
            return False, s_end, lead
        if t_exit > s:
            s = t_exit
        i += exit_s * _DI[exit_k]
        j += exit_s * _DJ[exit_k]
    return False, s, lead


@njit(cache=True)
def sample_klein_nishina(e_kev):
    """Scattered energy (keV) and cos(theta) of a Compton event, free electron (Klein-Nishina).

    The sampler of :func:`her2sim.sim._transport_kernels.sample_klein_nishina` (Butcher & Messel
    composition/rejection of Geant4's ``G4KleinNishinaCompton``), returning E' instead of E'/E.
    """
    eps, cos_t = _kn_fraction(e_kev)
    return eps * e_kev, cos_t


@njit(cache=True)
def transport_layers(u, v, n, cu, cv, cn, e_kev, z_bounds, layer_mat, layer_rho, crystal_layer, first_layer,
                     log_mu_rho, e0_kev, de_kev, ff_q, ff_cdf, hc_kev_a, p_k_fluor, k_line_kev, k_line_cdf,
                     k_edge_kev):
    """Follow one photon through laterally infinite slabs; return (deposit keV, u_c, v_c, depth_c).

    Layers ``l`` occupy ``z_bounds[l] <= n < z_bounds[l+1]`` (mm), material row ``layer_mat[l]`` at
    density ``layer_rho[l]`` g/cm^3. Interactions: photoelectric (absorbed; in the crystal an
    iodine K x-ray is emitted isotropically with probability ``p_k_fluor`` and followed),
    Compton (Klein-Nishina, electron energy deposited locally in the crystal) and Rayleigh
    (form-factor sampling). Only the crystal layer scores energy. A photon leaving the stack
    (either side) escapes. The position returned is the energy-weighted centroid of the
    deposits in the crystal.
    """
    n_layers = layer_mat.size
    layer = first_layer
    dep = 0.0
    su = 0.0
    sv = 0.0
    sn = 0.0
    for _ in range(10000):
        m = layer_mat[layer]
        rho_mm = layer_rho[layer] * 0.1  # (cm^2/g)(g/cm^3) = 1/cm -> 1/mm
        mu_p, mu_i, mu_c = mu_channels(log_mu_rho, e0_kev, de_kev, m, e_kev)
        mu_p *= rho_mm
        mu_i *= rho_mm
        mu_t = mu_p + mu_i + mu_c * rho_mm
        s = -math.log(1.0 - np.random.random()) / mu_t
        if cn > 0.0:
            s_b = (z_bounds[layer + 1] - n) / cn
        elif cn < 0.0:
            s_b = (z_bounds[layer] - n) / cn
        else:
            s_b = 1e300
        if s >= s_b:
            u += s_b * cu
            v += s_b * cv
            if cn > 0.0:
                n = z_bounds[layer + 1]
                layer += 1
            else:
                n = z_bounds[layer]
                layer -= 1
            if layer < 0 or layer >= n_layers:
                break
            continue
        u += s * cu
        v += s * cv
        n += s * cn
        in_crystal = layer == crystal_layer
        r = np.random.random() * mu_t
        if r < mu_p:
            if not in_crystal:
                break
            if e_kev > k_edge_kev and np.random.random() < p_k_fluor:
                x = np.random.random()
                li = 0
                while li < k_line_cdf.size - 1 and k_line_cdf[li] < x:
                    li += 1
                ek = k_line_kev[li]
                d = e_kev - ek
                dep += d
                su += d * u
                sv += d * v
                sn += d * n
                e_kev = ek
                cos_t = 2.0 * np.random.random() - 1.0
                phi = 2.0 * math.pi * np.random.random()
                st = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
                cu = st * math.cos(phi)
                cv = st * math.sin(phi)
                cn = cos_t
                continue
            dep += e_kev
            su += e_kev * u
            sv += e_kev * v
            sn += e_kev * n
            e_kev = 0.0
            break
        elif r < mu_p + mu_i:
            e_new, cos_t = sample_klein_nishina(e_kev)
            if in_crystal:
                d = e_kev - e_new
                dep += d
                su += d * u
                sv += d * v
                sn += d * n
            e_kev = e_new
        else:
            cos_t = sample_rayleigh_cos(e_kev, ff_q, ff_cdf[m], hc_kev_a)
        cu, cv, cn = _rotate(cu, cv, cn, cos_t, 2.0 * math.pi * np.random.random())
        if e_kev < E_CUTOFF_KEV:
            if in_crystal:
                dep += e_kev
                su += e_kev * u
                sv += e_kev * v
                sn += e_kev * n
            break
    if dep > 0.0:
        return dep, su / dep, sv / dep, sn / dep
    return 0.0, 0.0, 0.0, 0.0


@njit(cache=True)
def transport_collimator(x, y, cu, cv, cn, e_kev, length_mm, hole_mm, pitch_mm, lead_mat, lead_rho,
                         log_mu_rho, e0_kev, de_kev, ff_q, ff_cdf, hc_kev_a, p_k_fluor, k_line_kev, k_line_cdf,
                         k_edge_kev):
    """Analog transport through the lead lattice with interactions, from the front face (n = 0).

    Free paths in lead are sampled from exp(-mu s) and measured along the ray's lead chords
    (:func:`march_lead`); at an interaction: photoelectric absorption (with probability
    ``p_k_fluor`` above the K edge a Pb K x-ray is emitted isotropically and followed),
    Compton (Klein-Nishina) or Rayleigh (form factor). Photons leaving through the front face,
    absorbed, or below ``E_CUTOFF_KEV`` are lost.

    Returns
    -------
    (alive, x, y, cu, cv, cn, e_kev, lead_mm, n_interactions)
        ``alive`` is True for a photon leaving the back face (n = L) at lattice-frame ``(x, y)``.
    """
    n = 0.0
    lead_total = 0.0
    n_int = 0
    rho_mm = lead_rho * 0.1
    for _ in range(1000):
        mu_p, mu_i, mu_c = mu_channels(log_mu_rho, e0_kev, de_kev, lead_mat, e_kev)
        mu_p *= rho_mm
        mu_i *= rho_mm
        mu_t = mu_p + mu_i + mu_c * rho_mm
        target = -math.log(1.0 - np.random.random()) / mu_t
        hit, s, lead = march_lead(x, y, n, cu, cv, cn, length_mm, hole_mm, pitch_mm, target)
        lead_total += lead
        x += s * cu
        y += s * cv
        if not hit:
            if cn > 0.0:
                return True, x, y, cu, cv, cn, e_kev, lead_total, n_int
            return False, x, y, cu, cv, cn, e_kev, lead_total, n_int
        n += s * cn
        if n < 0.0:
            n = 0.0
        elif n > length_mm:
            n = length_mm
        n_int += 1
        r = np.random.random() * mu_t
        if r < mu_p:
            if e_kev > k_edge_kev and np.random.random() < p_k_fluor:
                xr = np.random.random()
                li = 0
                while li < k_line_cdf.size - 1 and k_line_cdf[li] < xr:
                    li += 1
                e_kev = k_line_kev[li]
                cos_t = 2.0 * np.random.random() - 1.0
                phi = 2.0 * math.pi * np.random.random()
                st = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
                cu = st * math.cos(phi)
                cv = st * math.sin(phi)
                cn = cos_t
                continue
            return False, x, y, cu, cv, cn, 0.0, lead_total, n_int
        elif r < mu_p + mu_i:
            e_kev, cos_t = sample_klein_nishina(e_kev)
        else:
            cos_t = sample_rayleigh_cos(e_kev, ff_q, ff_cdf[lead_mat], hc_kev_a)
        cu, cv, cn = _rotate(cu, cv, cn, cos_t, 2.0 * math.pi * np.random.random())
        if e_kev < E_CUTOFF_KEV:
            return False, x, y, cu, cv, cn, e_kev, lead_total, n_int
    return False, x, y, cu, cv, cn, e_kev, lead_total, n_int


@njit(cache=True, parallel=True)
def detect_kernel(u0, v0, cu, cv, cn, e_kev, chunk_seeds, chunk_size,
                  use_collimator, coll_scatter, coll_len_mm, hole_mm, pitch_mm, lead_mat, lead_rho,
                  roulette_threshold, pb_p_k, pb_line_kev, pb_line_cdf, pb_edge_kev,
                  z_bounds, layer_mat, layer_rho, crystal_layer, first_layer,
                  log_mu_rho, e0_kev, de_kev, ff_q, ff_cdf, hc_kev_a, p_k_fluor, k_line_kev, k_line_cdf, k_edge_kev,
                  energy_res, ref_kev, intrinsic_fwhm_mm, intrinsic_ref_kev, half_width_mm, half_height_mm,
                  out_weight, out_lead_mm, out_e_blur, out_u, out_v, out_e_dep, out_coll_int):
    """Transport photons given at the collimator front face through collimator and detector.

    Per photon ``p`` (chunk ``c = p // chunk_size`` uses the RNG stream seeded by
    ``chunk_seeds[c]``):

    1. collimator (when ``use_collimator``): random lattice offset uniform over one cell; with
       ``coll_scatter`` analog transport with interactions in lead (:func:`transport_collimator`,
       Pb K x-rays from ``pb_*``); otherwise the
       exact lead path ``l`` along the straight line; the weight is multiplied by
       ``exp(-mu_Pb l)``; below ``roulette_threshold`` the photon plays Russian roulette
       (survives with probability ``T / threshold`` carrying weight ``threshold``); killed photons
       report the lead path marched so far (at least ``ln(1/threshold)/mu``);
    2. layered transport from ``first_layer`` (see :func:`transport_layers`);
    3. a deposit outside the useful field of view (``|u| > half_width``, ``|v| > half_height``)
       is dropped; otherwise energy is blurred with FWHM ``energy_res sqrt(ref_kev E)`` and the
       centroid with FWHM ``intrinsic_fwhm sqrt(intrinsic_ref_kev / E)``.

    Outputs (filled in place): ``out_weight`` (0 when killed or not detected), ``out_lead_mm``
    (3-D lead path, mm), ``out_e_blur`` (keV, 0 when nothing scored), ``out_u``, ``out_v``
    (blurred position, mm), ``out_e_dep`` (deposit before blur, keV), ``out_coll_int`` (number of
    interactions in the collimator).
    """
    n_ph = u0.size
    n_chunks = chunk_seeds.size
    fwhm_to_sigma = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    n_front = z_bounds[first_layer]
    for c in prange(n_chunks):
        np.random.seed(chunk_seeds[c])
        start = c * chunk_size
        stop = min(start + chunk_size, n_ph)
        for p in range(start, stop):
            out_weight[p] = 0.0
            out_lead_mm[p] = 0.0
            out_e_blur[p] = 0.0
            out_u[p] = 0.0
            out_v[p] = 0.0
            out_e_dep[p] = 0.0
            out_coll_int[p] = 0.0
            e = e_kev[p]
            if cn[p] <= 0.0 or e < E_CUTOFF_KEV:
                continue
            w = 1.0
            dx = cu[p] / cn[p]
            dy = cv[p] / cn[p]
            # position, direction and depth handed to the slab stack (default: straight from the face)
            pu = u0[p]
            pv = v0[p]
            pn = 0.0
            du_ = cu[p]
            dv_ = cv[p]
            dn_ = cn[p]
            if use_collimator and coll_scatter:
                r1 = np.random.random()
                r2 = np.random.random()
                ox = pitch_mm * (r1 + 0.5 * r2)
                oy = pitch_mm * SQRT3_2 * r2
                alive, xx, yy, du_, dv_, dn_, e, lead, nint = transport_collimator(
                    u0[p] + ox, v0[p] + oy, cu[p], cv[p], cn[p], e, coll_len_mm, hole_mm, pitch_mm, lead_mat,
                    lead_rho, log_mu_rho, e0_kev, de_kev, ff_q, ff_cdf, hc_kev_a, pb_p_k, pb_line_kev, pb_line_cdf,
                    pb_edge_kev)
                out_lead_mm[p] = lead
                out_coll_int[p] = nint
                if not alive:
                    continue
                pu = xx - ox
                pv = yy - oy
                pn = coll_len_mm
            elif use_collimator:
                # random lattice offset uniform over one cell (parallelogram of a1, a2)
                r1 = np.random.random()
                r2 = np.random.random()
                ox = pitch_mm * (r1 + 0.5 * r2)
                oy = pitch_mm * SQRT3_2 * r2
                m_p, m_i, m_c = mu_channels(log_mu_rho, e0_kev, de_kev, lead_mat, e)
                mu_pb = (m_p + m_i + m_c) * lead_rho * 0.1
                # Russian roulette below the threshold transmission, decided before the march: a photon
                # whose lead path l exceeds l_thr = ln(1/threshold)/mu survives with probability
                # exp(-mu (l - l_thr)) = T/threshold, i.e. iff l - l_thr < an exponential free path, so
                # the march can stop as soon as l > l_thr + that free path (photon killed).
                l_thr = -math.log(roulette_threshold) / mu_pb
                l_max = l_thr - math.log(1.0 - np.random.random()) / mu_pb
                depth = lead_depth_mm(u0[p] + ox, v0[p] + oy, dx, dy, coll_len_mm, hole_mm, pitch_mm,
                                      l_max * cn[p])
                path = depth / cn[p]
                out_lead_mm[p] = path
                if path > l_max:
                    continue
                if path > l_thr:
                    w = roulette_threshold
                elif path > 0.0:
                    w = math.exp(-mu_pb * path)
            # free flight (air) to the first layer
            s = (n_front - pn) / dn_
            u = pu + s * du_
            v = pv + s * dv_
            dep, uc, vc, nc = transport_layers(u, v, n_front, du_, dv_, dn_, e, z_bounds, layer_mat,
                                               layer_rho, crystal_layer, first_layer, log_mu_rho, e0_kev, de_kev,
                                               ff_q, ff_cdf, hc_kev_a, p_k_fluor, k_line_kev, k_line_cdf,
                                               k_edge_kev)
            if dep <= 0.0:
                continue
            if uc > half_width_mm or uc < -half_width_mm or vc > half_height_mm or vc < -half_height_mm:
                continue
            sig_e = energy_res * math.sqrt(ref_kev * dep) * fwhm_to_sigma
            sig_x = intrinsic_fwhm_mm * math.sqrt(intrinsic_ref_kev / dep) * fwhm_to_sigma
            out_weight[p] = w
            out_e_dep[p] = dep
            out_e_blur[p] = dep + sig_e * np.random.standard_normal()
            out_u[p] = uc + sig_x * np.random.standard_normal()
            out_v[p] = vc + sig_x * np.random.standard_normal()


@njit(cache=True, parallel=True)
def lead_paths_mm(x0_mm, y0_mm, cu, cv, cn, length_mm, hole_mm, pitch_mm, max_path_mm):
    """3-D lead path (mm) of many straight rays through the collimator (see :func:`lead_depth_mm`).

    Positions are in the lattice frame (any lattice offset already added); a path longer than
    ``max_path_mm`` is returned as soon as the march exceeds it.
    """
    n = x0_mm.size
    out = np.empty(n)
    for p in prange(n):
        c = cn[p]
        out[p] = lead_depth_mm(x0_mm[p], y0_mm[p], cu[p] / c, cv[p] / c, length_mm, hole_mm, pitch_mm,
                               max_path_mm * c) / c
    return out
