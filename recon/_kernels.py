"""Numba kernels of the rotate-and-sum SPECT projector (plain arrays in, no objects).

The geometry (see :mod:`her2sim.core.projection_geometry`) is resolved in
:mod:`her2sim.recon.projector`; these kernels only see, per view, the in-plane unit
vectors and a lattice of sample points ``p = axis + u t + s n`` (u at the detector
pixel centres, s on planes parallel to the collimator face, nearest plane first).

For every view the volume is sampled on that lattice with a fixed bilinear kernel
(in the x-y plane; z rows map one-to-one to detector rows), optionally multiplied by
the attenuation factor ``exp(-integral of mu from the sample to the face)``, and the
planes are summed along the normal. The depth-dependent collimator blur uses the
incremental-blurring scheme (McCarthy & Miller 1991; Zeng et al. 1998): planes are added from the
farthest to the nearest and the running sum is blurred by the *difference* of the
Gaussian variances of consecutive planes, so a plane at distance d ends up blurred by
exactly sigma(d)^2 (variances add under convolution). Each blur step is one or more
passes of the symmetric three-tap kernel ``[w, 1 - 2w, w]`` (variance 2w pixel^2,
w <= 0.25), applied separably along u and v with zero boundaries; every step is a
symmetric matrix, so the backprojector below is the exact transpose. Consecutive
planes whose variances differ by less than ``var_step_px2`` share one blur step (a
plane then gets up to that much *more* variance than its exact one), and the
running sum is kept on a box around the object grown by a margin of 4 sigma (values
beyond it are dropped, in both directions).

Parallelism: the kernels release the GIL (``nogil``) and handle every ``n_chunks``-th view,
so :mod:`her2sim.recon.projector` runs one call per thread (a thread pool sized by
``numba.get_num_threads()``); this avoids the long compile time of ``parallel=True``
kernels while giving the same view-level parallelism.

Memory layout: the kernels take the volume transposed to (y, x, z) and produce
projections as (u, v), so that the innermost loops run along z / v contiguously.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Largest variance (pixel^2) of one three-tap pass; w = var / 2 <= 0.25 keeps the kernel positive.
MAX_PASS_VARIANCE_PX2 = 0.5


@njit(cache=True)
def _sample_lattice(cos_t, sin_t, s_hi, ds, u_c, axis_x, axis_y, ox, oy, dx, dy, supp2d,
                    iy0, ix0, w4, ulo, uhi):
    """Bilinear neighbours/weights of the lattice of one view.

    ``iy0/ix0[j, iu]`` are the (clamped) lower neighbour indices and ``w4[j, iu, :]`` the
    weights of (y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1), zero for neighbours
    outside the grid. ``ulo[j]:uhi[j]`` is the u range of plane j whose neighbourhoods touch
    the transaxial support ``supp2d`` (ny, nx); other samples are never used, in the forward
    nor in the back projection.
    """
    ns = iy0.shape[0]
    nu = u_c.shape[0]
    ny, nx = supp2d.shape
    for j in range(ns):
        s = s_hi - j * ds
        lo = nu
        hi = 0
        for iu in range(nu):
            u = u_c[iu]
            px = axis_x + u * cos_t + s * sin_t
            py = axis_y + u * sin_t - s * cos_t
            fx = (px - ox) / dx
            fy = (py - oy) / dy
            x0 = int(math.floor(fx))
            y0 = int(math.floor(fy))
            ax = fx - x0
            ay = fy - y0
            okx0 = x0 >= 0 and x0 < nx
            okx1 = x0 + 1 >= 0 and x0 + 1 < nx
            oky0 = y0 >= 0 and y0 < ny
            oky1 = y0 + 1 >= 0 and y0 + 1 < ny
            touch = False
            w00 = 0.0
            w01 = 0.0
            w10 = 0.0
            w11 = 0.0
            if oky0 and okx0:
                w00 = (1.0 - ay) * (1.0 - ax)
                touch = touch or supp2d[y0, x0]
            if oky0 and okx1:
                w01 = (1.0 - ay) * ax
                touch = touch or supp2d[y0, x0 + 1]
            if oky1 and okx0:
                w10 = ay * (1.0 - ax)
                touch = touch or supp2d[y0 + 1, x0]
            if oky1 and okx1:
                w11 = ay * ax
                touch = touch or supp2d[y0 + 1, x0 + 1]
            # clamp so that the four reads are always in bounds (their weights are 0 when clamped)
            iy0[j, iu] = min(max(y0, 0), ny - 2) if ny > 1 else 0
            ix0[j, iu] = min(max(x0, 0), nx - 2) if nx > 1 else 0
            if ny > 1 and (y0 < 0 or y0 > ny - 2):
                # y0 clamped: the in-bounds row is the only one with weight
                if y0 == -1:
                    w00, w01, w10, w11 = w10, w11, 0.0, 0.0
                elif y0 == ny - 1:
                    w10, w11 = w00, w01
                    w00 = 0.0
                    w01 = 0.0
                else:
                    w00 = w01 = w10 = w11 = 0.0
            if nx > 1 and (x0 < 0 or x0 > nx - 2):
                if x0 == -1:
                    w00, w01 = w01, 0.0
                    w10, w11 = w11, 0.0
                elif x0 == nx - 1:
                    w01, w11 = w00, w10
                    w00 = 0.0
                    w10 = 0.0
                else:
                    w00 = w01 = w10 = w11 = 0.0
            w4[j, iu, 0] = w00
            w4[j, iu, 1] = w01
            w4[j, iu, 2] = w10
            w4[j, iu, 3] = w11
            if touch:
                if iu < lo:
                    lo = iu
                hi = iu + 1
        ulo[j] = lo
        uhi[j] = hi


@njit(cache=True)
def _group_variances(ulo, uhi, inc_u, inc_v, var_step_px2, bv_u, bv_v):
    """Blur step variances ``bv`` (pixel^2) of one view.

    Planes are added farthest first; step j is applied after plane j and carries the sum of
    the increments since the previous step. A step is emitted before a plane with samples
    once the pending variance reaches ``var_step_px2`` (and always after plane 0), so
    planes without samples never cost a blur.
    """
    ns = ulo.shape[0]
    pu = 0.0
    pv = 0.0
    for j in range(ns - 1, -1, -1):
        pu += inc_u[j]
        pv += inc_v[j]
        bv_u[j] = 0.0
        bv_v[j] = 0.0
        if j == 0 or (ulo[j - 1] < uhi[j - 1] and max(pu, pv) >= var_step_px2):
            bv_u[j] = pu
            bv_v[j] = pv
            pu = 0.0
            pv = 0.0


@njit(cache=True)
def _n_passes(var):
    """Number of three-tap passes realising variance ``var`` (pixel^2)."""
    if var <= 0.0:
        return 0
    return int(math.ceil(var / MAX_PASS_VARIANCE_PX2))


@njit(cache=True)
def _blur_plan(ulo, uhi, zv_lo, zv_hi, nv, nu, bv_u, bv_v, margin_u, margin_v, ops):
    """Operations of one view's forward summation, in order.

    Rows (kind, j, axis, vlo, vhi, ulo, uhi, olo, ohi): kind 0 adds plane j; kind 1 is one
    three-tap pass of step j along ``axis`` (0 = u, 1 = v) whose input is nonzero only on the
    box (vlo:vhi, ulo:uhi) and whose output is kept on olo:ohi along ``axis`` (the box grown
    by one pixel, capped at the object's extent plus ``margin`` and at the detector).
    Returns the number of rows written.
    """
    ns = ulo.shape[0]
    cu_lo = nu
    cu_hi = 0
    for j in range(ns):
        if ulo[j] < uhi[j]:
            cu_lo = min(cu_lo, ulo[j])
            cu_hi = max(cu_hi, uhi[j])
    cu_lo = max(cu_lo - margin_u, 0)
    cu_hi = min(cu_hi + margin_u, nu)
    cv_lo = max(zv_lo - margin_v, 0)
    cv_hi = min(zv_hi + margin_v, nv)
    n = 0
    have = False
    bvl = nv
    bvh = 0
    bul = nu
    buh = 0
    for j in range(ns - 1, -1, -1):
        if ulo[j] < uhi[j] and zv_lo < zv_hi:
            if not have:
                bvl = zv_lo
                bvh = zv_hi
                bul = ulo[j]
                buh = uhi[j]
                have = True
            else:
                bvl = min(bvl, zv_lo)
                bvh = max(bvh, zv_hi)
                bul = min(bul, ulo[j])
                buh = max(buh, uhi[j])
            ops[n, 0] = 0
            ops[n, 1] = j
            ops[n, 2] = 0
            ops[n, 3] = bvl
            ops[n, 4] = bvh
            ops[n, 5] = bul
            ops[n, 6] = buh
            ops[n, 7] = 0
            ops[n, 8] = 0
            n += 1
        if have:
            for axis in range(2):
                m = _n_passes(bv_u[j] if axis == 0 else bv_v[j])
                for _ in range(m):
                    ops[n, 0] = 1
                    ops[n, 1] = j
                    ops[n, 2] = axis
                    ops[n, 3] = bvl
                    ops[n, 4] = bvh
                    ops[n, 5] = bul
                    ops[n, 6] = buh
                    if axis == 0:
                        bul = max(bul - 1, cu_lo)
                        buh = min(buh + 1, cu_hi)
                        ops[n, 7] = bul
                        ops[n, 8] = buh
                    else:
                        bvl = max(bvl - 1, cv_lo)
                        bvh = min(bvh + 1, cv_hi)
                        ops[n, 7] = bvl
                        ops[n, 8] = bvh
                    n += 1
    return n


@njit(cache=True)
def _count_ops(bv_u, bv_v, ns):
    """Upper bound of the number of rows :func:`_blur_plan` writes."""
    n = ns
    for j in range(ns):
        n += _n_passes(bv_u[j]) + _n_passes(bv_v[j])
    return n


@njit(cache=True)
def _pass(a, tmp, axis, w, vlo, vhi, ulo, uhi, olo, ohi):
    """One [w, 1-2w, w] pass on ``a`` (u, v): input nonzero on the box, output kept on olo:ohi.

    The same routine is its own transpose when called with the input and output boxes
    swapped: reads are restricted to the input box, writes to the output range.
    """
    c = 1.0 - 2.0 * w
    if axis == 0:
        for iu in range(olo, ohi):
            for iv in range(vlo, vhi):
                left = a[iu - 1, iv] if iu - 1 >= ulo and iu - 1 < uhi else 0.0
                mid = a[iu, iv] if iu >= ulo and iu < uhi else 0.0
                right = a[iu + 1, iv] if iu + 1 >= ulo and iu + 1 < uhi else 0.0
                tmp[iu, iv] = c * mid + w * (left + right)
        for iu in range(olo, ohi):
            for iv in range(vlo, vhi):
                a[iu, iv] = tmp[iu, iv]
    else:
        for iu in range(ulo, uhi):
            for iv in range(olo, ohi):
                up = a[iu, iv - 1] if iv - 1 >= vlo and iv - 1 < vhi else 0.0
                mid = a[iu, iv] if iv >= vlo and iv < vhi else 0.0
                down = a[iu, iv + 1] if iv + 1 >= vlo and iv + 1 < vhi else 0.0
                tmp[iu, iv] = c * mid + w * (up + down)
            for iv in range(olo, ohi):
                a[iu, iv] = tmp[iu, iv]


@njit(cache=True)
def _plane_weights(ns, bv_u, bv_v):
    """Weight w per step and axis (arrays (ns,)) of the passes realising ``bv``."""
    wu = np.zeros(ns)
    wv = np.zeros(ns)
    for j in range(ns):
        m = _n_passes(bv_u[j])
        if m > 0:
            wu[j] = 0.5 * bv_u[j] / m
        m = _n_passes(bv_v[j])
        if m > 0:
            wv[j] = 0.5 * bv_v[j] / m
    return wu, wv


@njit(cache=True)
def _forward_view(vol_yxz, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, ct, st, sh, ds, u_c, axis_x, axis_y,
                  ox, oy, dx, dy, inc_u, inc_v, use_psf, var_step_px2, margin_u, margin_v,
                  iy0, ix0, w4, ulo, uhi, bv_u, bv_v, buf, cum, acc, tmp):
    """Projection (u, v) of one view into ``acc``; the other arrays are work buffers."""
    ns = iy0.shape[0]
    nu, nv = acc.shape
    z0 = zv_lo - z_off
    nzr = zv_hi - zv_lo
    _sample_lattice(ct, st, sh, ds, u_c, axis_x, axis_y, ox, oy, dx, dy, supp2d, iy0, ix0, w4, ulo, uhi)
    # pass 1: sample (and attenuate) every plane, nearest first
    cum[:, :] = 0.0
    for j in range(ns):
        for iu in range(ulo[j], uhi[j]):
            y0 = iy0[j, iu]
            x0 = ix0[j, iu]
            w00 = w4[j, iu, 0]
            w01 = w4[j, iu, 1]
            w10 = w4[j, iu, 2]
            w11 = w4[j, iu, 3]
            for r in range(nzr):
                iz = z0 + r
                a = (w00 * vol_yxz[y0, x0, iz] + w01 * vol_yxz[y0, x0 + 1, iz]
                     + w10 * vol_yxz[y0 + 1, x0, iz] + w11 * vol_yxz[y0 + 1, x0 + 1, iz])
                if use_att:
                    half = 0.5 * ds * (w00 * mu_yxz[y0, x0, iz] + w01 * mu_yxz[y0, x0 + 1, iz]
                                       + w10 * mu_yxz[y0 + 1, x0, iz] + w11 * mu_yxz[y0 + 1, x0 + 1, iz])
                    a *= math.exp(-(cum[iu, r] + half))
                    cum[iu, r] += 2.0 * half
                buf[j, iu, r] = a
    # pass 2: sum along the normal, blurring from the farthest plane to the nearest
    acc[:, :] = 0.0
    if use_psf:
        _group_variances(ulo, uhi, inc_u, inc_v, var_step_px2, bv_u, bv_v)
    else:
        bv_u[:] = 0.0
        bv_v[:] = 0.0
    wu, wv = _plane_weights(ns, bv_u, bv_v)
    ops = np.empty((_count_ops(bv_u, bv_v, ns), 9), np.int64)
    n_ops = _blur_plan(ulo, uhi, zv_lo, zv_hi, nv, nu, bv_u, bv_v, margin_u, margin_v, ops)
    for q in range(n_ops):
        j = ops[q, 1]
        if ops[q, 0] == 0:
            for iu in range(ulo[j], uhi[j]):
                for r in range(nzr):
                    acc[iu, zv_lo + r] += buf[j, iu, r]
        else:
            axis = ops[q, 2]
            w = wu[j] if axis == 0 else wv[j]
            _pass(acc, tmp, axis, w, ops[q, 3], ops[q, 4], ops[q, 5], ops[q, 6], ops[q, 7], ops[q, 8])


@njit(cache=True)
def _back_view(g, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, ct, st, sh, ds, u_c, axis_x, axis_y,
               ox, oy, dx, dy, inc_u, inc_v, use_psf, var_step_px2, margin_u, margin_v,
               iy0, ix0, w4, ulo, uhi, bv_u, bv_v, gbuf, cum, tmp, outc):
    """Transpose of :func:`_forward_view`: adds the back projection of ``g`` (u, v; overwritten) to ``outc``."""
    ns = iy0.shape[0]
    nu, nv = g.shape
    z0 = zv_lo - z_off
    nzr = zv_hi - zv_lo
    _sample_lattice(ct, st, sh, ds, u_c, axis_x, axis_y, ox, oy, dx, dy, supp2d, iy0, ix0, w4, ulo, uhi)
    if use_psf:
        _group_variances(ulo, uhi, inc_u, inc_v, var_step_px2, bv_u, bv_v)
    else:
        bv_u[:] = 0.0
        bv_v[:] = 0.0
    wu, wv = _plane_weights(ns, bv_u, bv_v)
    ops = np.empty((_count_ops(bv_u, bv_v, ns), 9), np.int64)
    n_ops = _blur_plan(ulo, uhi, zv_lo, zv_hi, nv, nu, bv_u, bv_v, margin_u, margin_v, ops)
    # transpose of pass 2: operations in reverse order, input/output boxes swapped
    for q in range(n_ops - 1, -1, -1):
        j = ops[q, 1]
        if ops[q, 0] == 0:
            for iu in range(ulo[j], uhi[j]):
                for r in range(nzr):
                    gbuf[j, iu, r] = g[iu, zv_lo + r]
        else:
            axis = ops[q, 2]
            w = wu[j] if axis == 0 else wv[j]
            if axis == 0:
                _pass(g, tmp, 0, w, ops[q, 3], ops[q, 4], ops[q, 7], ops[q, 8], ops[q, 5], ops[q, 6])
            else:
                _pass(g, tmp, 1, w, ops[q, 7], ops[q, 8], ops[q, 5], ops[q, 6], ops[q, 3], ops[q, 4])
    # transpose of pass 1
    cum[:, :] = 0.0
    for j in range(ns):
        for iu in range(ulo[j], uhi[j]):
            y0 = iy0[j, iu]
            x0 = ix0[j, iu]
            w00 = w4[j, iu, 0]
            w01 = w4[j, iu, 1]
            w10 = w4[j, iu, 2]
            w11 = w4[j, iu, 3]
            for r in range(nzr):
                iz = z0 + r
                val = gbuf[j, iu, r]
                if use_att:
                    half = 0.5 * ds * (w00 * mu_yxz[y0, x0, iz] + w01 * mu_yxz[y0, x0 + 1, iz]
                                       + w10 * mu_yxz[y0 + 1, x0, iz] + w11 * mu_yxz[y0 + 1, x0 + 1, iz])
                    val *= math.exp(-(cum[iu, r] + half))
                    cum[iu, r] += 2.0 * half
                outc[y0, x0, iz] += w00 * val
                outc[y0, x0 + 1, iz] += w01 * val
                outc[y0 + 1, x0, iz] += w10 * val
                outc[y0 + 1, x0 + 1, iz] += w11 * val


@njit(cache=True, nogil=True)
def forward_project(vol_yxz, mu_yxz, use_att, supp2d, zlo, zhi, views, cos_t, sin_t, s_hi, ds, ns, u_c,
                    axis_x, axis_y, ox, oy, dx, dy, z_off, inc_u_px2, inc_v_px2, use_psf, var_step_px2,
                    margin_u, margin_v, chunk, n_chunks, out):
    """Forward projection for the views ``views``.

    Parameters
    ----------
    vol_yxz, mu_yxz : ndarray (ny, nx, nz) float64
        Activity (any unit) and attenuation coefficient (1/mm; ignored unless ``use_att``),
        transposed to (y, x, z).
    supp2d : ndarray (ny, nx) bool
        Transaxial support; with slices ``zlo:zhi`` it bounds the sampled region.
    views : ndarray int64
        Indices of the views to compute (into the per-view arrays).
    cos_t, sin_t, s_hi : ndarray (n_views,)
        cos/sin of the view angle and s (mm) of the nearest sample plane.
    ds : float
        Plane spacing (mm); ``ns`` planes at ``s_hi - j ds``.
    u_c : ndarray (nu,)
        Detector pixel centres along u (mm).
    axis_x, axis_y, ox, oy, dx, dy : float
        Rotation axis, grid origin (centre of voxel 0) and voxel size in x/y (mm).
    z_off : int
        Detector row of grid slice 0 (``iv = iz + z_off``).
    inc_u_px2, inc_v_px2 : ndarray (n_views, ns)
        Incremental PSF variances (pixel^2): plane j is blurred by the sum of entries 0..j.
    use_psf : bool
    var_step_px2 : float
        Variance tolerance for sharing blur steps between planes (pixel^2).
    margin_u, margin_v : int
        Pixels kept around the object's extent while blurring.
    chunk, n_chunks : int
        This call handles ``views[chunk::n_chunks]`` (one call per thread).
    out : ndarray (len(views), nu, nv) float64
        Output projections; rows of this chunk are overwritten.
    """
    nview, nu, nv = out.shape
    zv_lo = max(zlo + z_off, 0)
    zv_hi = min(zhi + z_off, nv)
    nzr = max(zv_hi - zv_lo, 1)
    iy0 = np.empty((ns, nu), np.int64)
    ix0 = np.empty((ns, nu), np.int64)
    w4 = np.empty((ns, nu, 4))
    ulo = np.empty(ns, np.int64)
    uhi = np.empty(ns, np.int64)
    bv_u = np.zeros(ns)
    bv_v = np.zeros(ns)
    buf = np.zeros((ns, nu, nzr))
    cum = np.zeros((nu, nzr))
    tmp = np.zeros((nu, nv))
    for k in range(chunk, nview, n_chunks):
        vw = views[k]
        _forward_view(vol_yxz, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, cos_t[vw], sin_t[vw], s_hi[vw],
                      ds, u_c, axis_x, axis_y, ox, oy, dx, dy, inc_u_px2[vw], inc_v_px2[vw], use_psf,
                      var_step_px2, margin_u, margin_v, iy0, ix0, w4, ulo, uhi, bv_u, bv_v, buf, cum,
                      out[k], tmp)


@njit(cache=True, nogil=True)
def back_project(proj_uv, mu_yxz, use_att, supp2d, zlo, zhi, views, cos_t, sin_t, s_hi, ds, ns, u_c,
                 axis_x, axis_y, ox, oy, dx, dy, z_off, inc_u_px2, inc_v_px2, use_psf, var_step_px2,
                 margin_u, margin_v, chunk, n_chunks, out_yxz):
    """Exact transpose of :func:`forward_project` for the views ``views[chunk::n_chunks]``.

    ``proj_uv`` is (len(views), nu, nv); the back projection is *added* to ``out_yxz``
    (ny, nx, nz), float64 (one output volume per thread, summed by the caller).
    """
    nview, nu, nv = proj_uv.shape
    zv_lo = max(zlo + z_off, 0)
    zv_hi = min(zhi + z_off, nv)
    nzr = max(zv_hi - zv_lo, 1)
    iy0 = np.empty((ns, nu), np.int64)
    ix0 = np.empty((ns, nu), np.int64)
    w4 = np.empty((ns, nu, 4))
    ulo = np.empty(ns, np.int64)
    uhi = np.empty(ns, np.int64)
    bv_u = np.zeros(ns)
    bv_v = np.zeros(ns)
    gbuf = np.zeros((ns, nu, nzr))
    cum = np.zeros((nu, nzr))
    g = np.zeros((nu, nv))
    tmp = np.zeros((nu, nv))
    for k in range(chunk, nview, n_chunks):
        vw = views[k]
        g[:, :] = proj_uv[k]
        _back_view(g, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, cos_t[vw], sin_t[vw], s_hi[vw], ds, u_c,
                   axis_x, axis_y, ox, oy, dx, dy, inc_u_px2[vw], inc_v_px2[vw], use_psf, var_step_px2,
                   margin_u, margin_v, iy0, ix0, w4, ulo, uhi, bv_u, bv_v, gbuf, cum, tmp, out_yxz)


# ------------------------------------------------------------------------------------------ batched kernels
# The same operators for a batch of B images that share the geometry, attenuation and response (e.g. the
# Poisson realisations of one scan). Arrays carry a trailing batch axis, so the lattice, the attenuation
# factors exp(-integral mu) and the blur plan are computed once per sample and reused for the B images,
# and the innermost loops run over the batch contiguously. The sampling is fused with the summation (no
# per-plane buffer of B images, which is what made the work memory-bound): the back projection meets the
# planes nearest first, the order in which the attenuation integral grows, and the forward projection,
# which adds them farthest first, gets each sample's path to the face as (total path) - (path beyond it),
# the total coming from a first pass over the attenuation map only. Images cover only the slices
# ``zbase:zbase + nz_local`` (the support's slice range) to halve their memory.


@njit(cache=True)
def _pass_b(a, tmp, axis, w, vlo, vhi, ulo, uhi, olo, ohi):
    """:func:`_pass` on ``a`` (u, v, B): the same three-tap pass applied to every image of the batch."""
    c = 1.0 - 2.0 * w
    nb = a.shape[2]
    if axis == 0:
        for iu in range(olo, ohi):
            has_l = iu - 1 >= ulo and iu - 1 < uhi
            has_m = iu >= ulo and iu < uhi
            has_r = iu + 1 >= ulo and iu + 1 < uhi
            for iv in range(vlo, vhi):
                for b in range(nb):
                    s = 0.0
                    if has_l:
                        s += w * a[iu - 1, iv, b]
                    if has_m:
                        s += c * a[iu, iv, b]
                    if has_r:
                        s += w * a[iu + 1, iv, b]
                    tmp[iu, iv, b] = s
        for iu in range(olo, ohi):
            for iv in range(vlo, vhi):
                for b in range(nb):
                    a[iu, iv, b] = tmp[iu, iv, b]
    else:
        for iu in range(ulo, uhi):
            for iv in range(olo, ohi):
                has_u = iv - 1 >= vlo and iv - 1 < vhi
                has_m = iv >= vlo and iv < vhi
                has_d = iv + 1 >= vlo and iv + 1 < vhi
                for b in range(nb):
                    s = 0.0
                    if has_u:
                        s += w * a[iu, iv - 1, b]
                    if has_m:
                        s += c * a[iu, iv, b]
                    if has_d:
                        s += w * a[iu, iv + 1, b]
                    tmp[iu, iv, b] = s
            for iv in range(olo, ohi):
                for b in range(nb):
                    a[iu, iv, b] = tmp[iu, iv, b]


@njit(cache=True)
def _mu_bilinear_half(mu_yxz, y0, x0, iz, w00, w01, w10, w11, ds):
    """Half the attenuation path of one sample: 0.5 ds mu(sample) (mu in 1/mm)."""
    return 0.5 * ds * (w00 * mu_yxz[y0, x0, iz] + w01 * mu_yxz[y0, x0 + 1, iz]
                       + w10 * mu_yxz[y0 + 1, x0, iz] + w11 * mu_yxz[y0 + 1, x0 + 1, iz])


@njit(cache=True)
def _forward_view_b(vol, zbase, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, ct, st, sh, ds, u_c, axis_x,
                    axis_y, ox, oy, dx, dy, inc_u, inc_v, use_psf, var_step_px2, margin_u, margin_v,
                    iy0, ix0, w4, ulo, uhi, bv_u, bv_v, tot, far, acc, tmp):
    """:func:`_forward_view` for a batch: ``vol`` (y, x, z - zbase, B) -> ``acc`` (u, v, B), fused."""
    ns = iy0.shape[0]
    nu, nv, nb = acc.shape
    z0 = zv_lo - z_off
    nzr = zv_hi - zv_lo
    _sample_lattice(ct, st, sh, ds, u_c, axis_x, axis_y, ox, oy, dx, dy, supp2d, iy0, ix0, w4, ulo, uhi)
    if use_att:  # total attenuation path (both halves of every sample) from the far side to the face
        tot[:, :] = 0.0
        far[:, :] = 0.0
        for j in range(ns):
            for iu in range(ulo[j], uhi[j]):
                y0 = iy0[j, iu]
                x0 = ix0[j, iu]
                for r in range(nzr):
                    tot[iu, r] += 2.0 * _mu_bilinear_half(mu_yxz, y0, x0, z0 + r, w4[j, iu, 0], w4[j, iu, 1],
                                                          w4[j, iu, 2], w4[j, iu, 3], ds)
    acc[:, :, :] = 0.0
    if use_psf:
        _group_variances(ulo, uhi, inc_u, inc_v, var_step_px2, bv_u, bv_v)
    else:
        bv_u[:] = 0.0
        bv_v[:] = 0.0
    wu, wv = _plane_weights(ns, bv_u, bv_v)
    ops = np.empty((_count_ops(bv_u, bv_v, ns), 9), np.int64)
    n_ops = _blur_plan(ulo, uhi, zv_lo, zv_hi, nv, nu, bv_u, bv_v, margin_u, margin_v, ops)
    for q in range(n_ops):
        j = ops[q, 1]
        if ops[q, 0] == 0:  # sample plane j (attenuated) and add it, farthest planes first
            for iu in range(ulo[j], uhi[j]):
                y0 = iy0[j, iu]
                x0 = ix0[j, iu]
                w00 = w4[j, iu, 0]
                w01 = w4[j, iu, 1]
                w10 = w4[j, iu, 2]
                w11 = w4[j, iu, 3]
                for r in range(nzr):
                    iz = z0 + r
                    f = 1.0
                    if use_att:
                        half = _mu_bilinear_half(mu_yxz, y0, x0, iz, w00, w01, w10, w11, ds)
                        f = math.exp(-(tot[iu, r] - far[iu, r] - half))
                        far[iu, r] += 2.0 * half
                    a00 = w00 * f
                    a01 = w01 * f
                    a10 = w10 * f
                    a11 = w11 * f
                    lz = iz - zbase
                    iv = zv_lo + r
                    for b in range(nb):
                        acc[iu, iv, b] += (a00 * vol[y0, x0, lz, b] + a01 * vol[y0, x0 + 1, lz, b]
                                           + a10 * vol[y0 + 1, x0, lz, b] + a11 * vol[y0 + 1, x0 + 1, lz, b])
        else:
            axis = ops[q, 2]
            w = wu[j] if axis == 0 else wv[j]
            _pass_b(acc, tmp, axis, w, ops[q, 3], ops[q, 4], ops[q, 5], ops[q, 6], ops[q, 7], ops[q, 8])


@njit(cache=True)
def _back_view_b(g, zbase, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, ct, st, sh, ds, u_c, axis_x, axis_y,
                 ox, oy, dx, dy, inc_u, inc_v, use_psf, var_step_px2, margin_u, margin_v,
                 iy0, ix0, w4, ulo, uhi, bv_u, bv_v, cum, tmp, outc):
    """:func:`_back_view` for a batch: adds the back projection of ``g`` (u, v, B; overwritten) to ``outc``
    (y, x, z - zbase, B); each plane is spread into the volume as soon as the transposed blur reaches it."""
    ns = iy0.shape[0]
    nu, nv, nb = g.shape
    z0 = zv_lo - z_off
    nzr = zv_hi - zv_lo
    _sample_lattice(ct, st, sh, ds, u_c, axis_x, axis_y, ox, oy, dx, dy, supp2d, iy0, ix0, w4, ulo, uhi)
    if use_psf:
        _group_variances(ulo, uhi, inc_u, inc_v, var_step_px2, bv_u, bv_v)
    else:
        bv_u[:] = 0.0
        bv_v[:] = 0.0
    wu, wv = _plane_weights(ns, bv_u, bv_v)
    ops = np.empty((_count_ops(bv_u, bv_v, ns), 9), np.int64)
    n_ops = _blur_plan(ulo, uhi, zv_lo, zv_hi, nv, nu, bv_u, bv_v, margin_u, margin_v, ops)
    cum[:, :] = 0.0
    for q in range(n_ops - 1, -1, -1):  # planes come nearest first
        j = ops[q, 1]
        if ops[q, 0] == 0:
            for iu in range(ulo[j], uhi[j]):
                y0 = iy0[j, iu]
                x0 = ix0[j, iu]
                w00 = w4[j, iu, 0]
                w01 = w4[j, iu, 1]
                w10 = w4[j, iu, 2]
                w11 = w4[j, iu, 3]
                for r in range(nzr):
                    iz = z0 + r
                    f = 1.0
                    if use_att:
                        half = _mu_bilinear_half(mu_yxz, y0, x0, iz, w00, w01, w10, w11, ds)
                        f = math.exp(-(cum[iu, r] + half))
                        cum[iu, r] += 2.0 * half
                    a00 = w00 * f
                    a01 = w01 * f
                    a10 = w10 * f
                    a11 = w11 * f
                    lz = iz - zbase
                    iv = zv_lo + r
                    for b in range(nb):
                        val = g[iu, iv, b]
                        outc[y0, x0, lz, b] += a00 * val
                        outc[y0, x0 + 1, lz, b] += a01 * val
                        outc[y0 + 1, x0, lz, b] += a10 * val
                        outc[y0 + 1, x0 + 1, lz, b] += a11 * val
        else:
            axis = ops[q, 2]
            w = wu[j] if axis == 0 else wv[j]
            if axis == 0:
                _pass_b(g, tmp, 0, w, ops[q, 3], ops[q, 4], ops[q, 7], ops[q, 8], ops[q, 5], ops[q, 6])
            else:
                _pass_b(g, tmp, 1, w, ops[q, 7], ops[q, 8], ops[q, 5], ops[q, 6], ops[q, 3], ops[q, 4])


@njit(cache=True, nogil=True)
def forward_project_batch(vol_yxzb, zbase, mu_yxz, use_att, supp2d, zlo, zhi, views, cos_t, sin_t, s_hi, ds, ns,
                          u_c, axis_x, axis_y, ox, oy, dx, dy, z_off, inc_u_px2, inc_v_px2, use_psf, var_step_px2,
                          margin_u, margin_v, chunk, n_chunks, out):
    """:func:`forward_project` of a batch of images sharing geometry, attenuation and response.

    Parameters
    ----------
    vol_yxzb : ndarray (ny, nx, nz_local, B) float64
        The B activity images, transposed to (y, x, z, batch), holding grid slices
        ``zbase:zbase + nz_local`` (they must contain ``zlo:zhi``).
    zbase : int
        Grid slice of ``vol_yxzb[:, :, 0]``.
    out : ndarray (len(views), nu, nv, B) float64
        Output projections; rows of this chunk are overwritten.

    The other parameters are those of :func:`forward_project`. Per sample the bilinear weights
    and the attenuation factor are computed once and applied to all B images.
    """
    nview, nu, nv, nb = out.shape
    zv_lo = max(zlo + z_off, 0)
    zv_hi = min(zhi + z_off, nv)
    nzr = max(zv_hi - zv_lo, 1)
    iy0 = np.empty((ns, nu), np.int64)
    ix0 = np.empty((ns, nu), np.int64)
    w4 = np.empty((ns, nu, 4))
    ulo = np.empty(ns, np.int64)
    uhi = np.empty(ns, np.int64)
    bv_u = np.zeros(ns)
    bv_v = np.zeros(ns)
    tot = np.zeros((nu, nzr))
    far = np.zeros((nu, nzr))
    tmp = np.zeros((nu, nv, nb))
    for k in range(chunk, nview, n_chunks):
        vw = views[k]
        _forward_view_b(vol_yxzb, zbase, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, cos_t[vw], sin_t[vw],
                        s_hi[vw], ds, u_c, axis_x, axis_y, ox, oy, dx, dy, inc_u_px2[vw], inc_v_px2[vw], use_psf,
                        var_step_px2, margin_u, margin_v, iy0, ix0, w4, ulo, uhi, bv_u, bv_v, tot, far,
                        out[k], tmp)


@njit(cache=True, nogil=True)
def back_project_batch(proj_uvb, zbase, mu_yxz, use_att, supp2d, zlo, zhi, views, cos_t, sin_t, s_hi, ds, ns, u_c,
                       axis_x, axis_y, ox, oy, dx, dy, z_off, inc_u_px2, inc_v_px2, use_psf, var_step_px2,
                       margin_u, margin_v, chunk, n_chunks, out_yxzb):
    """Exact transpose of :func:`forward_project_batch` for the views ``views[chunk::n_chunks]``.

    ``proj_uvb`` is (len(views), nu, nv, B); the back projections are *added* to ``out_yxzb``
    (ny, nx, nz_local, B) float64 holding slices ``zbase:`` (one output per thread, summed by the caller).
    """
    nview, nu, nv, nb = proj_uvb.shape
    zv_lo = max(zlo + z_off, 0)
    zv_hi = min(zhi + z_off, nv)
    nzr = max(zv_hi - zv_lo, 1)
    iy0 = np.empty((ns, nu), np.int64)
    ix0 = np.empty((ns, nu), np.int64)
    w4 = np.empty((ns, nu, 4))
    ulo = np.empty(ns, np.int64)
    uhi = np.empty(ns, np.int64)
    bv_u = np.zeros(ns)
    bv_v = np.zeros(ns)
    cum = np.zeros((nu, nzr))
    g = np.zeros((nu, nv, nb))
    tmp = np.zeros((nu, nv, nb))
    for k in range(chunk, nview, n_chunks):
        vw = views[k]
        g[:, :, :] = proj_uvb[k]
        _back_view_b(g, zbase, mu_yxz, use_att, supp2d, zv_lo, zv_hi, z_off, cos_t[vw], sin_t[vw], s_hi[vw], ds,
                     u_c, axis_x, axis_y, ox, oy, dx, dy, inc_u_px2[vw], inc_v_px2[vw], use_psf, var_step_px2,
                     margin_u, margin_v, iy0, ix0, w4, ulo, uhi, bv_u, bv_v, cum, tmp, out_yxzb)


@njit(cache=True, nogil=True)
def em_ratio(y, ybar, s, use_s, out):
    """OSEM data ratio ``out = y / (ybar + s)`` (0 where the denominator is 0), elementwise on equal-shape
    C-contiguous arrays (``s`` ignored unless ``use_s``); one pass instead of several numpy temporaries."""
    yf = y.ravel()
    bf = ybar.ravel()
    sf = s.ravel()
    of = out.ravel()
    for i in range(yf.size):
        d = bf[i] + sf[i] if use_s else bf[i]
        of[i] = yf[i] / d if d > 0 else 0.0


@njit(cache=True, nogil=True)
def em_update(x, bp, inv_sens):
    """OSEM multiplicative update ``x *= bp * inv_sens`` in place; ``x``, ``bp`` (..., B), ``inv_sens`` (...)."""
    nb = x.shape[-1]
    xf = x.reshape(-1, nb)
    bf = bp.reshape(-1, nb)
    inv = inv_sens.ravel()
    for i in range(inv.size):
        w = inv[i]
        for b in range(nb):
            xf[i, b] *= bf[i, b] * w


@njit(cache=True, nogil=True)
def em_update_parts(x, parts, inv_sens, cols):
    """:func:`em_update` with the back projection given as per-thread partial sums ``parts`` (n, y, x, z, B):
    ``x *= (parts[0] + parts[1] + ...) * inv_sens`` (summed in that order, as the projector's reduction) on
    the (y, x) columns ``cols`` (flat indices y * nx + x), whose ``parts`` are zeroed for the next back
    projection. ``cols`` must hold the transaxial support, outside which ``x`` is 0 and stays so: this
    replaces the back projection's mask (``parts`` outside ``cols`` are never read, nor zeroed)."""
    ny, nx, nz, nb = x.shape
    n = parts.shape[0]
    xf = x.reshape(ny * nx, nz, nb)
    pf = parts.reshape(n, ny * nx, nz, nb)
    inv = inv_sens.reshape(ny * nx, nz)
    for q in range(cols.size):
        i = cols[q]
        for z in range(nz):
            w = inv[i, z]
            for b in range(nb):
                s = pf[0, i, z, b]
                pf[0, i, z, b] = 0.0
                for c in range(1, n):
                    s += pf[c, i, z, b]
                    pf[c, i, z, b] = 0.0
                xf[i, z, b] *= s * w
