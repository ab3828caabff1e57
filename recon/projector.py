"""SPECT system matrix: matched forward/back projector for parallel-hole cameras.

The object (z, y, x) on a :class:`~her2sim.core.grid.Grid` and the projections
(view, v, u) of a :class:`~her2sim.core.projection_geometry.ProjectionGeometry` are
related through world millimetres, following the shared convention exactly: a point
``p`` is seen by view ``theta`` at ``u = (p - axis) . t`` with ``t = (cos t, sin t)``,
row ``z``, and lies ``d = radius - (p - axis) . n`` from the collimator face with
``n = (sin t, -cos t)``.

Model per view (rotate-and-sum, :mod:`her2sim.recon._kernels`): bilinear sampling of the
volume on planes parallel to the detector (plane spacing = voxel size), attenuation
``exp(-integral mu)`` from each sample to the face along ``n`` (optional), the
depth-dependent Gaussian collimator-detector response of
:meth:`her2sim.sim.camera.Camera.sigma_mm` applied separably along u and z (optional),
summed along ``n``. ``backward`` is the exact transpose (dot-product test in
``tests/recon/test_recon_projector.py``).

Supported geometry: transaxial voxel size dx = dy = detector pixel du, axial voxel
size dz = pixel dv and grid slice centres on detector row centres (integer offset).
The grid may be shifted in x/y with respect to the rotation axis (handled in mm).
Anything else raises :class:`~her2sim.core.errors.DataError` naming the fields.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from her2sim.core.errors import DataError, check_int, check_range
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import ProjectionGeometry
from her2sim.core.radionuclide import TC99M

from . import _kernels
from .psf import incremental_variances_px2

#: Tolerance (mm) when comparing voxel and pixel sizes / positions.
GEOMETRY_TOL_MM = 1e-3
#: Largest attenuation coefficient accepted in a mu map (1/cm); bone at 140 keV is ~0.3/cm.
MU_MAX_PER_CM = 5.0


def check_mu_map(mu_map_per_cm, grid: Grid, field: str = "mu_map_per_cm") -> np.ndarray:
    """Validate an attenuation map (1/cm) against ``grid``; return it as float64 (z, y, x)."""
    mu = np.asarray(mu_map_per_cm, dtype=np.float64)
    if mu.shape != grid.shape:
        raise DataError(f"{field} has shape {mu.shape}, which does not match grid shape {grid.shape} (z, y, x)")
    if not np.all(np.isfinite(mu)):
        raise DataError(f"{field} contains NaN or infinite values; allowed range [0, {MU_MAX_PER_CM}] 1/cm")
    lo, hi = float(mu.min()), float(mu.max())
    if lo < 0.0 or hi > MU_MAX_PER_CM:
        raise DataError(f"{field} values span [{lo:.4g}, {hi:.4g}] 1/cm, outside the allowed range "
                        f"[0, {MU_MAX_PER_CM}] 1/cm (is it in 1/mm or HU?)")
    return np.ascontiguousarray(mu)


def grid_for_geometry(geometry: ProjectionGeometry, n_xy: int | None = None) -> Grid:
    """The natural reconstruction grid of a projection geometry.

    ``(nv, n_xy, n_xy)`` voxels of ``(dv, du, du)`` mm, slices on the detector rows and the
    transaxial grid centred on the rotation axis (``n_xy`` defaults to the detector width nu).
    """
    nv, nu = geometry.shape_vu
    dv, du = geometry.pixel_mm
    n = nu if n_xy is None else check_int("n_xy", n_xy, 2, 4096)
    ax, ay = geometry.axis_xy_mm
    return Grid((nv, n, n), (dv, du, du),
                (float(geometry.v_centers_mm()[0]), ay - 0.5 * (n - 1) * du, ax - 0.5 * (n - 1) * du))


_POOLS: dict = {}


def _batch_dtype(a) -> type:
    """float32 for float32 batches (half the memory traffic of the memory-bound batched kernels), else float64."""
    return np.float32 if np.asarray(a).dtype == np.float32 else np.float64


def _pool(n: int) -> ThreadPoolExecutor:
    """A persistent pool of ``n`` threads running the GIL-free kernels."""
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="her2sim-recon")
    return _POOLS[n]


class SpectSystemMatrix:
    """Forward/back projector of one energy window for a parallel-hole SPECT orbit.

    Parameters
    ----------
    grid : Grid
        Object grid (z, y, x), LPS mm.
    geometry : ProjectionGeometry
        Detector orbit and pixels.
    mu_map_per_cm : numpy.ndarray or None
        Linear attenuation coefficient (z, y, x) at the photopeak energy in 1/cm on ``grid``;
        ``None`` = no attenuation.
    camera : her2sim.sim.camera.Camera or None
        Supplies ``sigma_mm(distance_mm, energy_kev)``; a default NM670 camera when ``None``
        and ``psf`` is True.
    psf : bool
        Model the depth-dependent collimator-detector response (resolution recovery).
    energy_kev : float
        Photon energy for the PSF model (keV).
    n_threads : int or None
        Threads (``numba.set_num_threads``; the projector runs one GIL-free kernel call per
        thread); ``None`` keeps the current ``numba.get_num_threads()``.
    support : numpy.ndarray, str or None
        Boolean (z, y, x) mask of where activity may be. Only its transaxial footprint
        (union over slices, plus one voxel) and its slice range are used. The operator is
        A diag(support): voxels outside it are zero in both directions (the footprint's
        edge voxels would otherwise be reached by only the samples on the footprint side,
        which shifts them inwards and let air beside the body soak up edge activity), and
        samples whose bilinear neighbourhood misses the footprint are skipped (speed).
        ``"auto"`` (default): ``mu > 0`` when a mu map is given, else the whole grid;
        ``None``: the whole grid.
    penetration : object or None
        Septal-penetration tail of the response, e.g. :func:`her2sim.sim.penetration.penetration_table`
        of the camera (anything with ``at(distance_mm) -> (fraction, sigma_mm)``): the response to a
        point at distance d becomes (1 - f) G(sigma(d)) + f G(sigma_pen(d)), the fast Monte Carlo's own
        model, at the cost of a second projection pass. ``None`` (default): Gaussian core only.
    psf_variance_step_px2 : float
        Consecutive planes share a blur step until their PSF variances differ by this much
        (pixel^2), so a plane's variance is over-estimated by less than it; 0 blurs exactly per
        plane. The default 0.25 pixel^2 changes sigma by < 0.12 pixel wherever sigma >= 1 pixel;
        it also keeps the three-tap passes wide enough that a projected point matches the
        pixel-integrated Gaussian of sigma(d) within 5 % of its peak at 2-4.42 mm pixels,
        whereas exact per-plane steps (0) keep the exact variance but give a too peaked
        profile when sigma is below one pixel (tests/recon/test_recon_projector.py).

    Notes
    -----
    Units: the operator is geometric (a voxel value ``c`` contributes ``c`` x attenuation x
    normalised PSF to the views), so reconstructing counts gives counts per voxel per view
    time; :mod:`her2sim.recon.calibration` converts that to Bq/mL.
    """

    def __init__(self, grid: Grid, geometry: ProjectionGeometry, mu_map_per_cm=None, camera=None,
                 psf: bool = True, energy_kev: float = TC99M.gamma_kev, n_threads: int | None = None,
                 support="auto", psf_variance_step_px2: float = 0.25, penetration=None):
        self.grid = grid
        self.geometry = geometry
        self.psf = bool(psf)
        self.energy_kev = float(energy_kev)
        self.psf_variance_step_px2 = check_range("psf_variance_step_px2", psf_variance_step_px2, 0.0, 4.0)
        if n_threads is not None:
            n_threads = check_int("n_threads", n_threads, 1, numba.config.NUMBA_NUM_THREADS)
            numba.set_num_threads(n_threads)
        self._check_geometry()
        self.mu_map_per_cm = None if mu_map_per_cm is None else check_mu_map(mu_map_per_cm, grid)
        self._mu_yxz = (np.zeros((2, 2, 1)) if self.mu_map_per_cm is None
                        else np.ascontiguousarray((self.mu_map_per_cm / 10.0).transpose(1, 2, 0)))
        if self.psf and camera is None:
            from her2sim.sim.camera import Camera
            camera = Camera()
        self.camera = camera
        self._setup_support(support)
        self._setup_lattice()
        self._setup_penetration(penetration)
        self._sens_cache: dict = {}

    # ------------------------------------------------------------------ geometry
    def _check_geometry(self) -> None:
        g, geo = self.grid, self.geometry
        dz, dy, dx = g.spacing_mm
        dv, du = geo.pixel_mm
        if g.shape[1] < 2 or g.shape[2] < 2:
            raise DataError(f"grid.shape = {g.shape}: the projector needs at least 2 voxels along y and x")
        if abs(dx - dy) > GEOMETRY_TOL_MM:
            raise DataError(f"grid.spacing_mm: dy = {dy} mm and dx = {dx} mm differ; the projector needs square "
                            f"transaxial voxels (resample the grid)")
        if abs(du - dx) > GEOMETRY_TOL_MM:
            raise DataError(f"geometry.pixel_mm[1] (du = {du} mm) differs from grid.spacing_mm[2] (dx = {dx} mm); "
                            f"the projector needs detector pixel size = voxel size (resample the grid)")
        if abs(dv - dz) > GEOMETRY_TOL_MM:
            raise DataError(f"geometry.pixel_mm[0] (dv = {dv} mm) differs from grid.spacing_mm[0] (dz = {dz} mm); "
                            f"the projector needs detector row height = slice thickness")
        v0 = geo.v_centers_mm()[0]
        off = (v0 - g.origin_mm[0]) / dz  # grid slice index of detector row 0
        if abs(off - round(off)) * dz > GEOMETRY_TOL_MM:
            raise DataError(f"grid.origin_mm[0] = {g.origin_mm[0]} mm and geometry.axis_z_mm = {geo.axis_z_mm} mm "
                            f"put slice centres {abs(off - round(off)) * dz:.3g} mm off the detector row centres; "
                            f"they must coincide (tolerance {GEOMETRY_TOL_MM} mm)")
        self._z_off = -int(round(off))  # detector row of grid slice 0
        nz = g.shape[0]
        nv = geo.shape_vu[0]
        if self._z_off >= nv or self._z_off + nz <= 0:
            raise DataError(f"grid z range [{g.axis_mm(0)[0]:.1f}, {g.axis_mm(0)[-1]:.1f}] mm does not overlap the "
                            f"detector rows (geometry.axis_z_mm = {geo.axis_z_mm} mm, {nv} rows of {dv} mm)")

    def _setup_support(self, support) -> None:
        shape = self.grid.shape
        if isinstance(support, str):
            if support != "auto":
                raise DataError(f"support = {support!r}: use a boolean (z, y, x) mask, 'auto' or None")
            mask = None if self.mu_map_per_cm is None else self.mu_map_per_cm > 0
        elif support is None:
            mask = None
        else:
            mask = np.asarray(support, dtype=bool)
            if mask.shape != shape:
                raise DataError(f"support has shape {mask.shape}, which does not match grid shape {shape} (z, y, x)")
        if mask is None or not mask.any():
            self._supp2d = np.ones(shape[1:], dtype=np.bool_)
            self._zrange = (0, shape[0])
            self._masked = False
            return
        foot = mask.any(axis=0)
        grown = foot.copy()  # one-voxel margin in x and y
        grown[1:, :] |= foot[:-1, :]
        grown[:-1, :] |= foot[1:, :]
        grown[:, 1:] |= foot[:, :-1]
        grown[:, :-1] |= foot[:, 1:]
        zs = np.flatnonzero(mask.any(axis=(1, 2)))
        self._supp2d = np.ascontiguousarray(grown)
        self._masked = not bool(grown.all())
        self._zrange = (max(int(zs[0]) - 1, 0), min(int(zs[-1]) + 2, shape[0]))

    def _setup_lattice(self) -> None:
        g, geo = self.grid, self.geometry
        dz, dy, dx = g.spacing_mm
        ds = dx
        ax, ay = geo.axis_xy_mm
        oz, oy, ox = g.origin_mm
        corners_x = np.array([ox - 0.5 * dx, ox + (g.shape[2] - 0.5) * dx]) - ax
        corners_y = np.array([oy - 0.5 * dy, oy + (g.shape[1] - 0.5) * dy]) - ay
        r_max = float(np.sqrt(np.max(np.abs(corners_x)) ** 2 + np.max(np.abs(corners_y)) ** 2)) + ds
        n = geo.normals_xy()
        # plane lattice anchored on voxel (0, 0) so that views at multiples of 90 deg hit voxel centres
        s_ref = (ox - ax) * n[:, 0] + (oy - ay) * n[:, 1]
        s_hi = s_ref + ds * np.ceil((r_max - s_ref) / ds)
        ns = int(np.max(np.floor((s_hi + r_max) / ds))) + 1
        t = np.deg2rad(geo.angles_deg)
        self._cos = np.ascontiguousarray(np.cos(t))
        self._sin = np.ascontiguousarray(np.sin(t))
        self._s_hi = np.ascontiguousarray(s_hi)
        self._ds = float(ds)
        self._ns = ns
        self._u_c = np.ascontiguousarray(geo.u_centers_mm())
        self._axis = (float(ax), float(ay))
        self._origin_xy = (float(ox), float(oy))
        self._dxy = (float(dx), float(dy))
        s = s_hi[:, None] - ds * np.arange(ns)[None, :]  # (view, plane), nearest first
        self.plane_distance_mm = np.maximum(geo.radii_mm[:, None] - s, 0.0)
        if self.psf:
            self._inc_u, self._inc_v, self._margin_u, self._margin_v = self._response_blur(self.camera)
        else:
            self._inc_u = np.zeros((geo.n_views, ns))
            self._inc_v = np.zeros((geo.n_views, ns))
            self._margin_u = self._margin_v = 1

    def _response_blur(self, response):
        """Variance increments (u, v) per view and plane and blur margins (pixels) of a Gaussian response.

        ``response.sigma_mm(distance_mm, energy_kev)`` gives sigma(d); the margin is 4 sigma of the
        widest response on the lattice, plus one pixel.
        """
        geo = self.geometry
        inc_u = incremental_variances_px2(response, self.plane_distance_mm, geo.pixel_mm[1], self.energy_kev)
        inc_v = incremental_variances_px2(response, self.plane_distance_mm, geo.pixel_mm[0], self.energy_kev)
        margin_u = int(math.ceil(4.0 * math.sqrt(float(inc_u.sum(axis=1).max())))) + 1
        margin_v = int(math.ceil(4.0 * math.sqrt(float(inc_v.sum(axis=1).max())))) + 1
        return inc_u, inc_v, margin_u, margin_v

    def _setup_penetration(self, penetration) -> None:
        """Second response component: a broad septal-penetration Gaussian of weight f (see class doc)."""
        self.penetration = penetration
        self.penetration_fraction = 0.0
        self._tail_psf = None
        if penetration is None:
            return
        if not self.psf:
            raise DataError("penetration needs psf = True (the tail is part of the collimator-detector response)")
        frac, _ = penetration.at(self.plane_distance_mm)
        frac = np.asarray(frac, dtype=float)
        if np.ptp(frac) > 1e-3 or not 0.0 <= float(frac.mean()) < 0.5:
            raise DataError(f"penetration fraction must be one value in [0, 0.5) over the planes, got "
                            f"[{frac.min():.4f}, {frac.max():.4f}]")
        self.penetration_fraction = float(frac.mean())

        class _Tail:  # sigma(d) of the tail, in the interface incremental_variances_px2 expects
            @staticmethod
            def sigma_mm(distance_mm, energy_kev):
                return penetration.at(distance_mm)[1]

        inc_u, inc_v, margin_u, margin_v = self._response_blur(_Tail)
        self._tail_psf = (inc_u, inc_v, True, self.psf_variance_step_px2, margin_u, margin_v)

    # ------------------------------------------------------------------ operators
    @property
    def n_views(self) -> int:
        return self.geometry.n_views

    @property
    def projection_shape(self) -> tuple:
        """(view, v, u) of a full projection set."""
        return (self.n_views,) + tuple(self.geometry.shape_vu)

    def _views(self, views) -> np.ndarray:
        if views is None:
            return np.arange(self.n_views, dtype=np.int64)
        v = np.ascontiguousarray(np.asarray(views, dtype=np.int64).ravel())
        if v.size and (v.min() < 0 or v.max() >= self.n_views):
            raise DataError(f"views must lie in [0, {self.n_views - 1}], got [{v.min()}, {v.max()}]")
        return v

    def _chunks(self, n: int) -> int:
        return max(1, min(numba.get_num_threads(), n))

    def _common_args(self):
        return (self._mu_yxz, self.mu_map_per_cm is not None, self._supp2d, self._zrange[0], self._zrange[1])

    def _lattice_args(self):
        return (self._cos, self._sin, self._s_hi, self._ds, self._ns, self._u_c, self._axis[0], self._axis[1],
                self._origin_xy[0], self._origin_xy[1], self._dxy[0], self._dxy[1], self._z_off)

    def _psf_args(self):
        return (self._inc_u, self._inc_v, self.psf, self.psf_variance_step_px2, self._margin_u, self._margin_v)

    def _run(self, fn, first, out_factory, views, psf_args=None):
        """Run kernel ``fn`` on every thread's share of ``views``; returns the list of outputs."""
        n = self._chunks(views.size)
        outs = out_factory(n)
        psf_args = self._psf_args() if psf_args is None else psf_args
        args = [(first, *self._common_args(), views, *self._lattice_args(), *psf_args, c, n, outs[c])
                for c in range(n)]
        if n == 1:
            fn(*args[0])
        else:
            list(_pool(n).map(lambda a: fn(*a), args))
        return outs

    def _core_and_tail(self, run, kernel, data, out_factory, views):
        """``kernel`` through ``run`` with the Gaussian core response and, when the penetration tail is modelled,
        ``(1 - f) core + f tail``. ``out_factory(n)`` gives the n threads' outputs: one shared array (a
        projection, threads write disjoint views) or one array each (a back projection, summed here)."""
        def distinct(outs):   # a shared output array appears once per thread in the list
            return [o for k, o in enumerate(outs) if all(o is not p for p in outs[:k])]

        parts = distinct(run(kernel, data, out_factory, views))
        total = parts[0]
        for o in parts[1:]:
            total += o
        if self._tail_psf is not None:
            f = self.penetration_fraction
            tails = distinct(run(kernel, data, out_factory, views, self._tail_psf))
            total *= 1.0 - f
            for o in tails:
                total += f * o
        return total

    def forward(self, image, views=None) -> np.ndarray:
        """Project ``image`` (z, y, x) into the views ``views`` (all when ``None``).

        Returns
        -------
        numpy.ndarray
            (len(views), v, u) float64 expected counts per pixel (same unit as ``image`` x view time).
        """
        self.grid.check_array("image", image)
        x = np.ascontiguousarray(np.asarray(image, dtype=np.float64).transpose(1, 2, 0))
        if self._masked:
            x = x * self._supp2d[:, :, None]  # outside the support is not part of the model (never in place:
            # x may be a view of the caller's image when its transpose happens to be contiguous)
        v = self._views(views)
        nv, nu = self.geometry.shape_vu
        out = self._core_and_tail(self._run, _kernels.forward_project, x,
                                  lambda n: [np.zeros((v.size, nu, nv))] * n, v)
        return np.ascontiguousarray(out.transpose(0, 2, 1))

    def backward(self, projections, views=None) -> np.ndarray:
        """Transpose of :meth:`forward`: (len(views), v, u) -> image (z, y, x) float64."""
        v = self._views(views)
        p = np.asarray(projections, dtype=np.float64)
        expected = (v.size,) + tuple(self.geometry.shape_vu)
        if p.shape != expected:
            raise DataError(f"projections have shape {p.shape}, expected {expected} (view, v, u)")
        p_uv = np.ascontiguousarray(p.transpose(0, 2, 1))
        nz, ny, nx = self.grid.shape
        total = self._core_and_tail(self._run, _kernels.back_project, p_uv,
                                    lambda n: [np.zeros((ny, nx, nz)) for _ in range(n)], v)
        if self._masked:
            total *= self._supp2d[:, :, None]
        return np.ascontiguousarray(total.transpose(2, 0, 1))

    def sensitivity(self, views=None, weights=None) -> np.ndarray:
        """Sensitivity image ``A^T w`` for the views ``views`` (cached when ``weights`` is None).

        Parameters
        ----------
        views : sequence of int or None
        weights : numpy.ndarray or None
            (len(views), v, u) pixel weights (1 = used, 0 = masked); ones when ``None``.
        """
        v = self._views(views)
        key = tuple(v.tolist())
        if weights is None and key in self._sens_cache:
            return self._sens_cache[key]
        w = np.ones((v.size,) + tuple(self.geometry.shape_vu)) if weights is None else weights
        sens = self.backward(w, v)
        if weights is None:
            self._sens_cache[key] = sens
        return sens

    # ------------------------------------------------------------------ batched operators
    @property
    def batch_z_range(self) -> tuple:
        """Grid slices ``(lo, hi)`` held by the batched operators' images (the support's slice range)."""
        return tuple(int(z) for z in self._zrange)

    def _run_batch(self, fn, first, out_factory, views, psf_args=None):
        """:meth:`_run` for the batched kernels (which take the images' first slice after the data)."""
        n = self._chunks(views.size)
        outs = out_factory(n)
        psf_args = self._psf_args() if psf_args is None else psf_args
        args = [(first, self._zrange[0], *self._common_args(), views, *self._lattice_args(), *psf_args, c, n, outs[c])
                for c in range(n)]
        if n == 1:
            fn(*args[0])
        else:
            list(_pool(n).map(lambda a: fn(*a), args))
        return outs

    def _check_batch_images(self, x) -> None:
        ny, nx = self.grid.shape[1:]
        nzs = self._zrange[1] - self._zrange[0]
        if x.ndim != 4 or x.shape[:3] != (ny, nx, nzs):
            raise DataError(f"batch images have shape {x.shape}, expected ({ny}, {nx}, {nzs}, B): (y, x, z, batch) "
                            f"over the slices {self.batch_z_range}")

    def forward_batch_yxzb(self, x_yxzb: np.ndarray, views=None, masked: bool = False) -> np.ndarray:
        """Forward projection of a batch in the kernels' layout.

        Parameters
        ----------
        x_yxzb : numpy.ndarray
            (ny, nx, nzs, B) float64 C-contiguous: B images transposed to (y, x, z, batch), holding
            the grid slices :attr:`batch_z_range` (activity elsewhere is outside the support).
        views : sequence of int or None
        masked : bool
            The caller guarantees the images are already zero outside the transaxial support
            (OSEM iterates are: the back projection is masked), which saves a masked copy.

        Returns
        -------
        numpy.ndarray
            (len(views), nu, nv, B) float64 expected counts (the kernels' layout).
        """
        self._check_batch_images(x_yxzb)
        dt = _batch_dtype(x_yxzb)
        x = np.ascontiguousarray(x_yxzb, dtype=dt)
        if self._masked and not masked:
            x = x * self._supp2d[:, :, None, None]  # never in place (the caller's array)
        v = self._views(views)
        nv, nu = self.geometry.shape_vu
        nb = x.shape[3]
        return self._core_and_tail(self._run_batch, _kernels.forward_project_batch, x,
                                   lambda n: [np.zeros((v.size, nu, nv, nb), dtype=dt)] * n, v)

    def backward_batch_yxzb(self, p_uvb: np.ndarray, views=None) -> np.ndarray:
        """Transpose of :meth:`forward_batch_yxzb`: (len(views), nu, nv, B) -> (ny, nx, nzs, B) float64."""
        v = self._views(views)
        dt = _batch_dtype(p_uvb)
        p = np.ascontiguousarray(p_uvb, dtype=dt)
        nv, nu = self.geometry.shape_vu
        if p.ndim != 4 or p.shape[:3] != (v.size, nu, nv):
            raise DataError(f"batch projections have shape {p.shape}, expected ({v.size}, {nu}, {nv}, B)")
        ny, nx = self.grid.shape[1:]
        nzs = self._zrange[1] - self._zrange[0]
        nb = p.shape[3]
        total = self._core_and_tail(self._run_batch, _kernels.back_project_batch, p,
                                    lambda n: [np.zeros((ny, nx, nzs, nb), dtype=dt) for _ in range(n)], v)
        if self._masked:
            total *= self._supp2d[:, :, None, None]
        return total

    def backward_batch_parts_yxzb(self, p_uvb: np.ndarray, views, parts: np.ndarray) -> int:
        """:meth:`backward_batch_yxzb` without its reduction: thread ``c``'s share of the views is *added* to
        ``parts[c]`` and the result is neither summed nor masked (the caller does both, e.g.
        :func:`her2sim.recon._kernels.em_update_parts`), which saves two passes over the batch images and an
        allocation per call. Not available with the penetration tail.

        Parameters
        ----------
        p_uvb : numpy.ndarray
            (len(views), nu, nv, B) C-contiguous, of ``parts``' dtype.
        parts : numpy.ndarray
            (n, ny, nx, nzs, B) C-contiguous with n >= :meth:`batch_threads` ``(len(views))``.

        Returns
        -------
        int
            Number of parts used (the first n; the others are untouched).
        """
        if self._tail_psf is not None:
            raise DataError("backward_batch_parts_yxzb does not model the penetration tail; use backward_batch_yxzb")
        v = self._views(views)
        nv, nu = self.geometry.shape_vu
        ny, nx = self.grid.shape[1:]
        nzs = self._zrange[1] - self._zrange[0]
        n = self._chunks(v.size)
        if (p_uvb.ndim != 4 or p_uvb.shape[:3] != (v.size, nu, nv) or not p_uvb.flags.c_contiguous
                or parts.ndim != 5 or parts.shape[0] < n or parts.shape[1:] != (ny, nx, nzs, p_uvb.shape[3])
                or parts.dtype != p_uvb.dtype or not parts.flags.c_contiguous):
            raise DataError(f"batch projections {p_uvb.shape} / parts {parts.shape}: expected ({v.size}, {nu}, {nv}, B) "
                            f"and (>= {n}, {ny}, {nx}, {nzs}, B), C-contiguous, one dtype")
        self._run_batch(_kernels.back_project_batch, p_uvb, lambda m: [parts[c] for c in range(m)], v)
        return n

    def batch_columns(self) -> np.ndarray:
        """Flat (y * nx + x) indices of the image columns in the transaxial support (where the masked batched
        operators can be nonzero)."""
        return np.ascontiguousarray(np.flatnonzero(self._supp2d), dtype=np.int64)

    def batch_threads(self, n_views: int) -> int:
        """Number of kernel calls (threads, one output each) a batched back projection of ``n_views`` views uses."""
        return self._chunks(n_views)

    def forward_batch(self, images, views=None) -> np.ndarray:
        """Project a batch of images (B, z, y, x) -> (B, len(views), v, u); :meth:`forward` of each image."""
        x = np.asarray(images, dtype=np.float64)
        if x.ndim != 4 or x.shape[1:] != self.grid.shape:
            raise DataError(f"images have shape {x.shape}, expected (B,) + {self.grid.shape} (batch, z, y, x)")
        lo, hi = self.batch_z_range
        out = self.forward_batch_yxzb(np.ascontiguousarray(x[:, lo:hi].transpose(2, 3, 1, 0)), views)
        return np.ascontiguousarray(out.transpose(3, 0, 2, 1))

    def backward_batch(self, projections, views=None) -> np.ndarray:
        """Transpose of :meth:`forward_batch`: (B, len(views), v, u) -> (B, z, y, x)."""
        v = self._views(views)
        p = np.asarray(projections, dtype=np.float64)
        expected = (v.size,) + tuple(self.geometry.shape_vu)
        if p.ndim != 4 or p.shape[1:] != expected:
            raise DataError(f"projections have shape {p.shape}, expected (B,) + {expected} (batch, view, v, u)")
        loc = self.backward_batch_yxzb(np.ascontiguousarray(p.transpose(1, 3, 2, 0)), v)
        lo, hi = self.batch_z_range
        out = np.zeros((p.shape[0],) + self.grid.shape)
        out[:, lo:hi] = loc.transpose(3, 2, 0, 1)
        return out
