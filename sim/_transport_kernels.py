"""Numba kernels of the photon transport and of convolution-based forced detection.

Plain arrays and scalars in, no objects. Conventions of :mod:`her2sim.sim.transport`:
positions are world mm (x, y, z), cross-sections mu/rho in cm^2/g (tables from
:mod:`her2sim.sim.xsections`), densities g/cm^3, so mu [1/mm] = 0.1 rho mu/rho.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .xsections import mu_lookup

ELECTRON_REST_KEV = 510.99895
HC_KEV_A = 12.398419843320026
PHOTO, INCOH, COH = 0, 1, 2

# vertex record columns (float64): x, y, z (mm), ux, uy, uz, energy (keV), weight, order, material, density
V_X, V_Y, V_Z, V_UX, V_UY, V_UZ, V_E, V_W, V_ORDER, V_MAT, V_RHO = range(11)
N_VCOLS = 11


@njit(cache=True)
def _isotropic():
    cz = 2.0 * np.random.random() - 1.0
    phi = 2.0 * math.pi * np.random.random()
    s = math.sqrt(max(0.0, 1.0 - cz * cz))
    return s * math.cos(phi), s * math.sin(phi), cz


@njit(cache=True)
def _rotate(ux, uy, uz, cost, phi):
    """Direction after scattering by polar angle acos(cost) and azimuth phi from (ux, uy, uz)."""
    sint = math.sqrt(max(0.0, 1.0 - cost * cost))
    cp, sp = math.cos(phi), math.sin(phi)
    if abs(uz) > 0.99999:
        sgn = 1.0 if uz > 0 else -1.0
        return sint * cp, sint * sp, sgn * cost
    d = math.sqrt(1.0 - uz * uz)
    nx = ux * cost + sint * (ux * uz * cp - uy * sp) / d
    ny = uy * cost + sint * (uy * uz * cp + ux * sp) / d
    nz = uz * cost - sint * cp * d
    n = math.sqrt(nx * nx + ny * ny + nz * nz)
    return nx / n, ny / n, nz / n


@njit(cache=True)
def sample_klein_nishina(e_kev):
    """Sample (E'/E, cos theta) from the free-electron Klein-Nishina cross-section.

    Butcher & Messel composition-rejection as used in Geant4's G4KleinNishinaCompton.
    """
    k = e_kev / ELECTRON_REST_KEV
    eps0 = 1.0 / (1.0 + 2.0 * k)
    eps0sq = eps0 * eps0
    alpha1 = -math.log(eps0)
    alpha2 = alpha1 + 0.5 * (1.0 - eps0sq)
    while True:
        if alpha1 > alpha2 * np.random.random():
            eps = math.exp(-alpha1 * np.random.random())
            epssq = eps * eps
        else:
            epssq = eps0sq + (1.0 - eps0sq) * np.random.random()
            eps = math.sqrt(epssq)
        onecost = (1.0 - eps) / (eps * k)
        sint2 = onecost * (2.0 - onecost)
        greject = 1.0 - eps * sint2 / (1.0 + epssq)
        if greject >= np.random.random():
            return eps, 1.0 - onecost


@njit(cache=True)
def kn_total_re2(e_kev):
    """Klein-Nishina total cross-section per electron in units of r_e^2."""
    k = e_kev / ELECTRON_REST_KEV
    l = math.log(1.0 + 2.0 * k)
    return 2.0 * math.pi * ((1.0 + k) / (k * k) * (2.0 * (1.0 + k) / (1.0 + 2.0 * k) - l / k)
                            + l / (2.0 * k) - (1.0 + 3.0 * k) / ((1.0 + 2.0 * k) ** 2))


@njit(cache=True)
def kn_pdf_per_sr(e_kev, cost):
    """Klein-Nishina angular pdf per steradian at cos theta (integrates to 1 over 4 pi)."""
    k = e_kev / ELECTRON_REST_KEV
    eps = 1.0 / (1.0 + k * (1.0 - cost))
    return 0.5 * eps * eps * (eps + 1.0 / eps - (1.0 - cost * cost)) / kn_total_re2(e_kev)


@njit(cache=True)
def sample_rayleigh_cos(e_kev, ff_q, cdf_row, hc_kev_a):
    """cos theta of a coherent (Rayleigh) event, pdf proportional to (1 + cos^2)/2 F^2(x) d(x^2).

    The one Rayleigh sampler of the patient transport and the camera heads. ``cdf_row`` is the
    cumulative ``C(x) = int_0^x F^2(x') d(x'^2)`` of one material on the uniform grid ``ff_q`` of
    ``x = sin(theta/2)/lambda`` (1/Angstrom), in any scale (normalised or not; :func:`her2sim.sim.
    xsections.build_table`). ``x^2`` is drawn by inverting C up to ``x_max = E / hc`` and the Thomson
    factor ``(1 + cos^2)/2`` is applied by rejection (the PENELOPE / EGSnrc scheme: Salvat et al.,
    PENELOPE-2018 sec. 2.1; Hubbell et al., J Phys Chem Ref Data 4:471, 1975 for F).

    Inside a grid interval ``C`` is linear in ``x^2``, not in ``x``: with ``F^2`` constant over
    ``[x_a, x_b]``, ``C(x) - C(x_a) = F^2 (x^2 - x_a^2)`` (the trapezoid tabulation of ``F^2 2x dx`` is
    exact then), so ``x^2`` is interpolated linearly. Interpolating ``x`` instead draws ``x`` uniformly
    in the interval where the density is proportional to ``x`` (forward-biased; wrong by a factor 2 of
    P(x < dq/2) in the first interval; tests/sim/test_mc_physics.py checks against the analytic hydrogen
    form factor).
    """
    x_max = e_kev / hc_kev_a
    n = ff_q.size
    dq = ff_q[1] - ff_q[0]
    f = x_max / dq
    i = int(f)
    if i >= n - 1:
        c_max = cdf_row[n - 1]
    else:
        # C is linear in x^2 inside the interval
        xa2 = ff_q[i] * ff_q[i]
        xb2 = ff_q[i + 1] * ff_q[i + 1]
        c_max = cdf_row[i] + (x_max * x_max - xa2) / (xb2 - xa2) * (cdf_row[i + 1] - cdf_row[i])
    while True:
        target = np.random.random() * c_max
        lo = 0
        hi = n - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cdf_row[mid] < target:
                lo = mid
            else:
                hi = mid
        c0 = cdf_row[lo]
        c1 = cdf_row[hi]
        w = (target - c0) / (c1 - c0) if c1 > c0 else 0.0
        x2 = (ff_q[lo] ** 2) * (1.0 - w) + (ff_q[hi] ** 2) * w
        cos_t = 1.0 - 2.0 * x2 / (x_max * x_max)
        if cos_t < -1.0:
            cos_t = -1.0
        if np.random.random() * 2.0 <= 1.0 + cos_t * cos_t:
            return cos_t


@njit(cache=True)
def rayleigh_pdf_per_sr(e_kev, cost, m, ff_q, ff2, rnorm, e0, de):
    """Rayleigh angular pdf per steradian (material ``m``) at cos theta."""
    x = e_kev / HC_KEV_A * math.sqrt(max(0.0, 0.5 * (1.0 - cost)))
    dq = ff_q[1] - ff_q[0]
    fx = x / dq
    i = int(fx)
    if i >= ff_q.shape[0] - 1:
        return 0.0
    t = fx - i
    f2 = ff2[m, i] * (1 - t) + ff2[m, i + 1] * t
    fe = (e_kev - e0) / de
    j = int(fe)
    if j < 0:
        j = 0
    if j > rnorm.shape[1] - 2:
        j = rnorm.shape[1] - 2
    te = fe - j
    n = rnorm[m, j] * (1 - te) + rnorm[m, j + 1] * te
    return 0.5 * (1.0 + cost * cost) * f2 / n


@njit(cache=True)
def _voxel_of(x, y, z, lo_x, lo_y, lo_z, dx, dy, dz, nx, ny, nz):
    ix = int(math.floor((x - lo_x) / dx))
    iy = int(math.floor((y - lo_y) / dy))
    iz = int(math.floor((z - lo_z) / dz))
    if ix < 0 or iy < 0 or iz < 0 or ix >= nx or iy >= ny or iz >= nz:
        return -1, -1, -1
    return iz, iy, ix


@njit(cache=True)
def linear_tables(log_mu, rho_max):
    """Linear mu/rho tables (material, channel 0-2 + total, energy) and the Woodcock majorant per energy bin.

    ``majorant[i]`` (1/mm) bounds rho_max(m) mu_m(E) for every material on [E_i, E_i+1]: the larger of
    the two node values (mu falls with energy between absorption edges, and an edge inside a bin is
    covered by taking both nodes), with a 0.1 % margin.
    """
    n_m, _, n_e = log_mu.shape
    lin = np.zeros((n_m, 4, n_e))
    for m in range(n_m):
        for c in range(3):
            for i in range(n_e):
                v = math.exp(log_mu[m, c, i])
                lin[m, c, i] = v
                lin[m, 3, i] += v
    maj = np.zeros(n_e)
    for i in range(n_e - 1):
        best = 0.0
        for m in range(n_m):
            if rho_max[m] > 0:
                v = 0.1 * rho_max[m] * max(lin[m, 3, i], lin[m, 3, i + 1])
                if v > best:
                    best = v
        maj[i] = best * 1.001
    maj[n_e - 1] = maj[n_e - 2]
    return lin, maj


@njit(cache=True)
def _lin(lin, m, c, i, t):
    return lin[m, c, i] * (1.0 - t) + lin[m, c, i + 1] * t


@njit(parallel=True, cache=True)
def trace_histories(chunk_seeds, n_per_chunk, src_cdf, shape, lower_mm, spacing_mm, material, density,
                    log_mu, e0, de, ff_q, ff2_total, rho_max, e_emit, e_cut, max_order, vertices, counts,
                    escaped, escapes, n_escapes):
    """Track photon histories from the activity distribution, recording every real interaction.

    Each chunk ``c`` seeds the thread's generator with ``chunk_seeds[c]`` and traces
    ``n_per_chunk`` histories, writing interaction vertices into rows
    ``[c * cap, c * cap + counts[c])`` of ``vertices`` (cap = rows // n_chunks).
    Implicit capture: at a real interaction the vertex is recorded with the incoming
    weight, then the weight is multiplied by the scatter probability (1 - sigma_pe/sigma_t)
    and a Compton or Rayleigh scatter is sampled. Histories end when the photon leaves
    the volume, falls below ``e_cut`` keV, exceeds ``max_order`` scatters, or loses
    Russian roulette (weight < 0.05 survives with p = 0.5).

    ``escaped[c, 0]`` sums weights leaving without interaction (unscattered escape),
    ``escaped[c, 1]`` counts histories whose vertices overflowed the buffer.
    When ``escapes`` has rows, photons leaving the volume are recorded there (same columns
    as vertices; position = first point outside the volume) for the explicit/analog camera
    mode, chunk ``c`` in rows ``[c * cap_e, c * cap_e + n_escapes[c])``.
    """
    nz, ny, nx = shape[0], shape[1], shape[2]
    lo_z, lo_y, lo_x = lower_mm[0], lower_mm[1], lower_mm[2]
    dz, dy, dx = spacing_mm[0], spacing_mm[1], spacing_mm[2]
    n_chunks = chunk_seeds.shape[0]
    cap = vertices.shape[0] // n_chunks
    nvox = src_cdf.shape[0]
    cap_e = escapes.shape[0] // n_chunks
    lin, maj = linear_tables(log_mu, rho_max)
    n_e = lin.shape[2]
    for c in prange(n_chunks):
        np.random.seed(chunk_seeds[c])
        base = c * cap
        base_e = c * cap_e
        nv = 0
        ne = 0
        for h in range(n_per_chunk):
            # --- emission: voxel from the activity CDF, uniform inside it, isotropic
            r = np.random.random() * src_cdf[nvox - 1]
            lo, hi = 0, nvox - 1
            while lo < hi:
                mid = (lo + hi) // 2
                if src_cdf[mid] <= r:
                    lo = mid + 1
                else:
                    hi = mid
            flat = lo
            iz = flat // (ny * nx)
            iy = (flat // nx) % ny
            ix = flat % nx
            x = lo_x + (ix + np.random.random()) * dx
            y = lo_y + (iy + np.random.random()) * dy
            z = lo_z + (iz + np.random.random()) * dz
            ux, uy, uz = _isotropic()
            e = e_emit
            w = 1.0
            order = 0
            while True:
                fe = (e - e0) / de
                ie = min(max(int(fe), 0), n_e - 2)
                te = fe - ie
                mu_max = maj[ie]
                # --- Woodcock delta tracking to the next real interaction
                inside = True
                if mu_max <= 1e-12:  # nothing but vacuum: leave from the current point
                    inside = False
                while inside:
                    s = -math.log(1.0 - np.random.random()) / mu_max
                    x += s * ux
                    y += s * uy
                    z += s * uz
                    kz, ky, kx = _voxel_of(x, y, z, lo_x, lo_y, lo_z, dx, dy, dz, nx, ny, nz)
                    if kz < 0:
                        inside = False
                        break
                    m = material[kz, ky, kx]
                    rho = density[kz, ky, kx]
                    if rho <= 0.0:
                        continue
                    mu_real = 0.1 * rho * _lin(lin, m, 3, ie, te)
                    if np.random.random() * mu_max < mu_real:
                        break
                if not inside:
                    if order == 0:
                        escaped[c, 0] += w
                    if ne < cap_e and e >= e_cut:
                        row = base_e + ne
                        escapes[row, V_X] = x
                        escapes[row, V_Y] = y
                        escapes[row, V_Z] = z
                        escapes[row, V_UX] = ux
                        escapes[row, V_UY] = uy
                        escapes[row, V_UZ] = uz
                        escapes[row, V_E] = e
                        escapes[row, V_W] = w
                        escapes[row, V_ORDER] = order
                        ne += 1
                    break
                # --- real interaction: record the vertex with the incoming weight
                if nv < cap:
                    row = base + nv
                    vertices[row, V_X] = x
                    vertices[row, V_Y] = y
                    vertices[row, V_Z] = z
                    vertices[row, V_UX] = ux
                    vertices[row, V_UY] = uy
                    vertices[row, V_UZ] = uz
                    vertices[row, V_E] = e
                    vertices[row, V_W] = w
                    vertices[row, V_ORDER] = order
                    vertices[row, V_MAT] = m
                    vertices[row, V_RHO] = rho
                    nv += 1
                else:
                    escaped[c, 1] += 1.0
                mu_pe = _lin(lin, m, PHOTO, ie, te)
                mu_in = _lin(lin, m, INCOH, ie, te)
                mu_co = _lin(lin, m, COH, ie, te)
                w *= (mu_in + mu_co) / (mu_pe + mu_in + mu_co)
                if np.random.random() * (mu_in + mu_co) < mu_in:
                    eps, cost = sample_klein_nishina(e)
                    e = e * eps
                else:
                    cost = sample_rayleigh_cos(e, ff_q, ff2_total[m], HC_KEV_A)
                phi = 2.0 * math.pi * np.random.random()
                ux, uy, uz = _rotate(ux, uy, uz, cost, phi)
                order += 1
                if e < e_cut or order >= max_order:
                    break
                if w < 0.05:
                    if np.random.random() < 0.5:
                        w *= 2.0
                    else:
                        break
        counts[c] = nv
        n_escapes[c] = ne


@njit(parallel=True, cache=True)
def attenuation_to_face(mu_per_mm, lower_mm, spacing_mm, axis_x, axis_y, nx_t, cos_t, sin_t, step_mm, out):
    """Line integral of mu from sample points to the body exit along the detector normal, for one view.

    The view frame has axes q (along the normal n = (sin t, -cos t), toward the head) and
    u (along (cos t, sin t)), both sampled at ``step_mm`` on [-(nx_t-1)/2, (nx_t-1)/2] steps,
    and z identical to the volume's. ``out[z, iq, iu]`` receives
    step * (sum_{j > iq} mu_j + mu_iq / 2) with mu sampled bilinearly in (x, y).
    """
    nz, ny, nx = mu_per_mm.shape
    lo_y, lo_x = lower_mm[1], lower_mm[2]
    dy, dx = spacing_mm[1], spacing_mm[2]
    half = 0.5 * (nx_t - 1)
    for kz in prange(nz):
        for iu in range(nx_t):
            u = (iu - half) * step_mm
            acc = 0.0
            for iq in range(nx_t - 1, -1, -1):
                q = (iq - half) * step_mm
                x = axis_x + q * sin_t + u * cos_t
                y = axis_y - q * cos_t + u * sin_t
                fx = (x - lo_x) / dx - 0.5
                fy = (y - lo_y) / dy - 0.5
                ix = int(math.floor(fx))
                iy = int(math.floor(fy))
                tx = fx - ix
                ty = fy - iy
                val = 0.0
                for a in range(2):
                    yy = iy + a
                    if yy < 0 or yy >= ny:
                        continue
                    wy = ty if a == 1 else 1.0 - ty
                    for b in range(2):
                        xx = ix + b
                        if xx < 0 or xx >= nx:
                            continue
                        wx = tx if b == 1 else 1.0 - tx
                        val += wy * wx * mu_per_mm[kz, yy, xx]
                out[kz, iq, iu] = step_mm * (acc + 0.5 * val)
                acc += val


@njit(cache=True)
def _interp_tau(tau, z_idx, q_idx, u_idx):
    nz, nq, nu = tau.shape
    iz = int(math.floor(z_idx))
    iq = int(math.floor(q_idx))
    iu = int(math.floor(u_idx))
    tz, tq, tu = z_idx - iz, q_idx - iq, u_idx - iu
    s = 0.0
    for a in range(2):
        zz = min(max(iz + a, 0), nz - 1)
        wa = tz if a == 1 else 1.0 - tz
        for b in range(2):
            qq = min(max(iq + b, 0), nq - 1)
            wb = tq if b == 1 else 1.0 - tq
            for c in range(2):
                uu = min(max(iu + c, 0), nu - 1)
                wc = tu if c == 1 else 1.0 - tu
                s += wa * wb * wc * tau[zz, qq, uu]
    return s


# extra per-vertex columns precomputed once per run by :func:`vertex_channel_factors`
V_PC, V_PR, V_RM = 11, 12, 13
N_FD_COLS = 14


@njit(parallel=True, cache=True)
def vertex_channel_factors(vertices, log_mu, e0, de, rnorm, out):
    """Per-vertex view-independent factors of the forced-detection pdfs.

    ``out[i, V_PC]`` = (sigma_incoh / sigma_t) / sigma_KN(E) [1/r_e^2], ``out[i, V_PR]`` =
    (sigma_coh / sigma_t) / N_Rayleigh(E, m), copied with the vertex columns.
    """
    n = vertices.shape[0]
    for i in prange(n):
        for c in range(N_VCOLS):
            out[i, c] = vertices[i, c]
        e = vertices[i, V_E]
        m = int(vertices[i, V_MAT])
        mu_in = mu_lookup(log_mu, e0, de, m, INCOH, e)
        mu_co = mu_lookup(log_mu, e0, de, m, COH, e)
        mu_pe = mu_lookup(log_mu, e0, de, m, PHOTO, e)
        mu_t = mu_in + mu_co + mu_pe
        out[i, V_PC] = (mu_in / mu_t) / kn_total_re2(e)
        fe = (e - e0) / de
        j = int(fe)
        if j < 0:
            j = 0
        if j > rnorm.shape[1] - 2:
            j = rnorm.shape[1] - 2
        te = fe - j
        out[i, V_PR] = (mu_co / mu_t) / (rnorm[m, j] * (1 - te) + rnorm[m, j + 1] * te)
        out[i, V_RM] = m


@njit(cache=True)
def _table_at(table, e0, de, e):
    fe = (e - e0) / de
    j = int(fe)
    if j < 0:
        j = 0
    if j > table.shape[0] - 2:
        j = table.shape[0] - 2
    t = fe - j
    return table[j] * (1 - t) + table[j + 1] * t


@njit(parallel=True, cache=True)
def forced_detection_view(vertices, isotropic, tau, tau_lower_z, tau_dz, tau_step, tau_n, cos_t, sin_t,
                          axis_x, axis_y, radius, u0, du, v0, dv, nu, nv, d0, dd, nd,
                          e0, de, ff_q, ff2, mu_water_ratio, det_eff, eff_acc, omega_eff, n_threads, buf,
                          spectrum, spec_de):
    """Convolution-based forced detection of all vertices toward one view.

    Each vertex adds weight x angular pdf toward the head normal x 4 pi g (the collimator's
    effective solid angle) x exp(-tau(E')) x detector full-energy efficiency(E') x Gaussian
    window acceptance(E'), splatted bilinearly in (u, v) and linearly between distance planes
    of ``buf[thread, window, component, plane, v, u]``. Emission vertices (``isotropic``) use
    the pdf 1/(4 pi) at the emission energy; scatter vertices (rows prepared by
    :func:`vertex_channel_factors`) use the Klein-Nishina pdf at the Compton energy E' and the
    Rayleigh pdf at E. Components: 0 primary, 1 scatter order 1, 2 order 2, 3 order >= 3.
    ``spectrum[thread, component, bin]`` accumulates the arrival energy x efficiency (unblurred).
    """
    nvert = vertices.shape[0]
    nwin = eff_acc.shape[0]
    n_e = eff_acc.shape[1]
    half = 0.5 * (tau_n - 1)
    inv4pi = 1.0 / (4.0 * math.pi)
    nspec = spectrum.shape[2]
    dq = ff_q[1] - ff_q[0]
    nq = ff_q.shape[0]
    for th in prange(n_threads):
        start = (nvert * th) // n_threads
        stop = (nvert * (th + 1)) // n_threads
        for i in range(start, stop):
            w = vertices[i, V_W]
            if w <= 0.0:
                continue
            x = vertices[i, V_X]
            y = vertices[i, V_Y]
            z = vertices[i, V_Z]
            e = vertices[i, V_E]
            px = x - axis_x
            py = y - axis_y
            q = px * sin_t - py * cos_t
            u = px * cos_t + py * sin_t
            tau140 = _interp_tau(tau, (z - tau_lower_z) / tau_dz, q / tau_step + half, u / tau_step + half)
            # Compton (or emission) contribution at energy e_c, Rayleigh at energy e
            if isotropic:
                e_c = e
                p_c = inv4pi
                p_r = 0.0
                comp = 0
            else:
                cost = vertices[i, V_UX] * sin_t - vertices[i, V_UY] * cos_t
                k = e / ELECTRON_REST_KEV
                eps = 1.0 / (1.0 + k * (1.0 - cost))
                e_c = e * eps
                p_c = vertices[i, V_PC] * 0.5 * eps * eps * (eps + 1.0 / eps - (1.0 - cost * cost))
                xq = e / HC_KEV_A * math.sqrt(max(0.0, 0.5 * (1.0 - cost))) / dq
                iq = int(xq)
                if iq < nq - 1:
                    m = int(vertices[i, V_RM])
                    tq = xq - iq
                    f2 = ff2[m, iq] * (1 - tq) + ff2[m, iq + 1] * tq
                    p_r = vertices[i, V_PR] * 0.5 * (1.0 + cost * cost) * f2
                else:
                    p_r = 0.0
                order = int(vertices[i, V_ORDER]) + 1
                comp = order if order < 3 else 3
            base_c = w * p_c * omega_eff * math.exp(-tau140 * _table_at(mu_water_ratio, e0, de, e_c))
            base_r = 0.0
            if p_r > 0.0:
                base_r = w * p_r * omega_eff * math.exp(-tau140 * _table_at(mu_water_ratio, e0, de, e))
            fec = (e_c - e0) / de
            jc = min(max(int(fec), 0), n_e - 2)
            tc = fec - jc
            fer = (e - e0) / de
            jr = min(max(int(fer), 0), n_e - 2)
            tr = fer - jr
            sb = int(e_c / spec_de)
            if sb < nspec:
                spectrum[th, comp, sb] += base_c * (det_eff[jc] * (1 - tc) + det_eff[jc + 1] * tc)
            sb = int(e / spec_de)
            if base_r > 0.0 and sb < nspec:
                spectrum[th, comp, sb] += base_r * (det_eff[jr] * (1 - tr) + det_eff[jr + 1] * tr)
            fd = (radius - q - d0) / dd
            fu = (u - u0) / du
            fv = (z - v0) / dv
            id0 = int(math.floor(fd))
            td = fd - id0
            iu0 = int(math.floor(fu))
            tuu = fu - iu0
            iv0 = int(math.floor(fv))
            tvv = fv - iv0
            for wi in range(nwin):
                val = base_c * (eff_acc[wi, jc] * (1 - tc) + eff_acc[wi, jc + 1] * tc)
                if base_r > 0.0:
                    val += base_r * (eff_acc[wi, jr] * (1 - tr) + eff_acc[wi, jr + 1] * tr)
                if val <= 0.0:
                    continue
                for a in range(2):
                    pd = id0 + a
                    if pd < 0 or pd >= nd:
                        continue
                    wd = td if a == 1 else 1.0 - td
                    for b in range(2):
                        pv = iv0 + b
                        if pv < 0 or pv >= nv:
                            continue
                        wv = tvv if b == 1 else 1.0 - tvv
                        for cc in range(2):
                            pu = iu0 + cc
                            if pu < 0 or pu >= nu:
                                continue
                            wu = tuu if cc == 1 else 1.0 - tuu
                            buf[th, wi, comp, pd, pv, pu] += val * wd * wv * wu


@njit(cache=True)
def pencil_beam_unscattered(seed, n, start_x, y, z, shape, lower_mm, spacing_mm, material, density, log_mu, e0,
                            de, rho_max, e_kev):
    """Fraction of a +x pencil beam leaving the volume with no real interaction.

    Uses the same linear tables, majorant and Woodcock rejection as :func:`trace_histories`.
    """
    np.random.seed(seed)
    nz, ny, nx = shape[0], shape[1], shape[2]
    lin, maj = linear_tables(log_mu, rho_max)
    fe = (e_kev - e0) / de
    ie = min(max(int(fe), 0), lin.shape[2] - 2)
    te = fe - ie
    mu_max = maj[ie]
    survived = 0
    for _ in range(n):
        x = start_x
        while True:
            x += -math.log(1.0 - np.random.random()) / mu_max
            kz, ky, kx = _voxel_of(x, y, z, lower_mm[2], lower_mm[1], lower_mm[0], spacing_mm[2], spacing_mm[1],
                                   spacing_mm[0], nx, ny, nz)
            if kz < 0:
                survived += 1
                break
            m = material[kz, ky, kx]
            if np.random.random() * mu_max < 0.1 * density[kz, ky, kx] * _lin(lin, m, 3, ie, te):
                break
    return survived / n


@njit(cache=True)
def _three_tap(src, dst, a, axis):
    """dst = src convolved with [a, 1 - 2a, a] along ``axis`` (0 = v, 1 = u), zero padding."""
    nv, nu = src.shape
    c = 1.0 - 2.0 * a
    for iv in range(nv):
        for iu in range(nu):
            s = c * src[iv, iu]
            if axis == 1:
                if iu > 0:
                    s += a * src[iv, iu - 1]
                if iu < nu - 1:
                    s += a * src[iv, iu + 1]
            else:
                if iv > 0:
                    s += a * src[iv - 1, iu]
                if iv < nv - 1:
                    s += a * src[iv + 1, iu]
            dst[iv, iu] = s


@njit(cache=True)
def _add_variance(acc, tmp, var_px2, axis):
    """Blur ``acc`` in place along ``axis`` by a total variance ``var_px2`` (px^2) with 3-tap passes."""
    if var_px2 <= 0.0:
        return
    n = int(math.ceil(var_px2 / 0.5))
    a = 0.5 * var_px2 / n  # each pass adds variance 2a <= 0.5 px^2
    for _ in range(n):
        _three_tap(acc, tmp, a, axis)
        acc[:, :] = tmp


@njit(parallel=True, cache=True)
def blur_from_buffer(buf, sel_win, sel_c0, sel_c1, weight, var_v, var_u, out):
    """Incremental depth-dependent blur straight from the forced-detection buffer.

    Output stack ``s`` is the sum over threads and components ``sel_c0[s] <= c < sel_c1[s]`` of window
    ``sel_win[s]`` of ``buf[thread, window, component, plane, v, u]``, each plane ``p`` scaled by
    ``weight[s, p]`` and blurred by variance ``var_v[s, p]`` / ``var_u[s, p]`` (px^2, non-decreasing in
    ``p``); the result is added to ``out[s]``.

    Incremental blurring: planes are added from the largest variance down and the running sum is
    blurred by the variance difference to the next plane (3-tap passes whose variances add up
    exactly), so every plane receives exactly its own variance, as in rotation-based SPECT
    projectors. Empty far planes cost nothing.
    """
    n_th = buf.shape[0]
    n_p, nv, nu = buf.shape[3], buf.shape[4], buf.shape[5]
    for s in prange(out.shape[0]):
        acc = np.zeros((nv, nu))
        tmp = np.zeros((nv, nu))
        wi = sel_win[s]
        started = False
        for p in range(n_p - 1, -1, -1):
            wgt = weight[s, p]
            has = False
            if wgt != 0.0:
                for th in range(n_th):
                    for c in range(sel_c0[s], sel_c1[s]):
                        plane = buf[th, wi, c, p]
                        for iv in range(nv):
                            for iu in range(nu):
                                x = plane[iv, iu]
                                if x != 0.0:
                                    acc[iv, iu] += wgt * x
                                    has = True
            if has:
                started = True
            if started:
                if p > 0:
                    _add_variance(acc, tmp, var_v[s, p] - var_v[s, p - 1], 0)
                    _add_variance(acc, tmp, var_u[s, p] - var_u[s, p - 1], 1)
                else:
                    _add_variance(acc, tmp, var_v[s, 0], 0)
                    _add_variance(acc, tmp, var_u[s, 0], 1)
        out[s] += acc
