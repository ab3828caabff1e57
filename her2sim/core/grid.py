"""Voxel grid geometry: the coordinates that travel with every 3-D array.

Conventions (used by every module)
----------------------------------
* Arrays are indexed ``(z, y, x)``; world coordinates are patient LPS in mm
  (x -> patient Left, y -> Posterior, z -> Superior). All tuples in this
  module are given in the array order ``(z, y, x)``.
* ``origin_mm`` is the world position of the *centre* of voxel ``(0, 0, 0)``;
  the direction cosines are the identity (axial slices, DICOM
  ImageOrientationPatient = 1/0/0/0/1/0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError, DataError, check_int, check_range


@dataclass(frozen=True)
class Grid:
    """Geometry of a voxel volume.

    Attributes
    ----------
    shape : tuple of int
        ``(nz, ny, nx)`` voxels.
    spacing_mm : tuple of float
        Voxel size ``(dz, dy, dx)`` in mm.
    origin_mm : tuple of float
        World LPS position (z, y, x components, mm) of the centre of voxel (0, 0, 0).
    """

    shape: tuple
    spacing_mm: tuple
    origin_mm: tuple = None  # type: ignore[assignment]

    def __post_init__(self):
        if len(self.shape) != 3 or len(self.spacing_mm) != 3:
            raise ConfigError(f"grid.shape = {self.shape} and grid.spacing_mm = {self.spacing_mm} must both have 3 entries (z, y, x)")
        shape = tuple(check_int(f"grid.shape[{i}]", int(s), 1, 4096) for i, s in enumerate(self.shape))
        spacing = tuple(check_range(f"grid.spacing_mm[{i}]", s, 0.0, 1000.0, lo_open=True)
                        for i, s in enumerate(self.spacing_mm))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing_mm", spacing)
        if self.origin_mm is None:
            # centred on the world origin
            origin = tuple(-0.5 * (n - 1) * d for n, d in zip(shape, spacing))
        else:
            if len(self.origin_mm) != 3:
                raise ConfigError(f"grid.origin_mm = {self.origin_mm} must have 3 entries (z, y, x)")
            origin = tuple(check_range(f"grid.origin_mm[{i}]", o, -1e6, 1e6) for i, o in enumerate(self.origin_mm))
        object.__setattr__(self, "origin_mm", origin)

    # ------------------------------------------------------------------ factories
    @classmethod
    def centered(cls, shape, spacing_mm) -> "Grid":
        """Grid of ``shape`` voxels of ``spacing_mm`` centred on the world origin."""
        if np.isscalar(spacing_mm):
            spacing_mm = (spacing_mm,) * 3
        return cls(tuple(shape), tuple(spacing_mm), None)

    # ------------------------------------------------------------------ geometry
    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (cm^3)."""
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def extent_mm(self) -> tuple:
        """Full size of the volume (z, y, x) in mm."""
        return tuple(n * d for n, d in zip(self.shape, self.spacing_mm))

    @property
    def center_mm(self) -> tuple:
        """World position (z, y, x) of the geometric centre of the volume in mm."""
        return tuple(o + 0.5 * (n - 1) * d for o, n, d in zip(self.origin_mm, self.shape, self.spacing_mm))

    @property
    def lower_corner_mm(self) -> tuple:
        """World position (z, y, x) of the outer corner of voxel (0, 0, 0) in mm."""
        return tuple(o - 0.5 * d for o, d in zip(self.origin_mm, self.spacing_mm))

    def axis_mm(self, axis: int) -> np.ndarray:
        """World coordinates (mm) of the voxel centres along array ``axis`` (0=z, 1=y, 2=x)."""
        return self.origin_mm[axis] + self.spacing_mm[axis] * np.arange(self.shape[axis])

    def index_to_world(self, index_zyx) -> np.ndarray:
        """Continuous index ``(..., 3)`` in (z, y, x) order -> world mm (z, y, x)."""
        idx = np.asarray(index_zyx, dtype=float)
        return np.asarray(self.origin_mm) + idx * np.asarray(self.spacing_mm)

    def world_to_index(self, world_zyx) -> np.ndarray:
        """World mm ``(..., 3)`` in (z, y, x) order -> continuous voxel index (z, y, x)."""
        w = np.asarray(world_zyx, dtype=float)
        return (w - np.asarray(self.origin_mm)) / np.asarray(self.spacing_mm)

    def contains_world(self, world_zyx) -> np.ndarray:
        """True where a world point (mm) lies inside the volume's outer boundary."""
        idx = self.world_to_index(world_zyx)
        return np.all((idx >= -0.5) & (idx <= np.asarray(self.shape) - 0.5), axis=-1)

    def mesh_mm(self, dtype=np.float32):
        """Open mesh (z, y, x) of voxel-centre world coordinates in mm (broadcastable)."""
        z = self.axis_mm(0).astype(dtype)[:, None, None]
        y = self.axis_mm(1).astype(dtype)[None, :, None]
        x = self.axis_mm(2).astype(dtype)[None, None, :]
        return z, y, x

    def check_array(self, name: str, array: np.ndarray) -> None:
        """Raise :class:`DataError` unless ``array`` has this grid's shape (trailing 3 axes)."""
        if tuple(np.shape(array)[-3:]) != self.shape:
            raise DataError(f"{name} has shape {np.shape(array)}, which does not match grid shape {self.shape} (z, y, x)")

    def same_as(self, other: "Grid", tol_mm: float = 1e-4) -> bool:
        """True when shape, spacing and origin agree (within ``tol_mm``)."""
        return (self.shape == other.shape
                and np.allclose(self.spacing_mm, other.spacing_mm, atol=tol_mm)
                and np.allclose(self.origin_mm, other.origin_mm, atol=tol_mm))

    def to_attrs(self) -> dict:
        """Plain attributes for HDF5/JSON."""
        return {"shape_zyx": list(self.shape), "spacing_mm_zyx": list(self.spacing_mm),
                "origin_mm_zyx": list(self.origin_mm), "orientation": "LPS"}

    @classmethod
    def from_attrs(cls, attrs) -> "Grid":
        """Inverse of :meth:`to_attrs`."""
        try:
            return cls(tuple(int(v) for v in attrs["shape_zyx"]),
                       tuple(float(v) for v in attrs["spacing_mm_zyx"]),
                       tuple(float(v) for v in attrs["origin_mm_zyx"]))
        except KeyError as exc:
            raise DataError(f"grid attribute {exc.args[0]!r} is missing") from None


def _axis_operator(n_src: int, o_src: float, d_src: float, n_dst: int, o_dst: float, d_dst: float,
                   order: int) -> tuple:
    """1-D resampling operator along one axis and the destination voxels that see the source.

    The source covers its *extent* ``[o_src - d_src/2, o_src + (n_src - 1/2) d_src]`` (voxel edges, not
    centres). Coarsening (``d_dst > d_src``, ``order >= 1``) averages the source over each destination voxel
    weighted by the overlap length, which conserves the integral; otherwise a destination centre inside the
    extent is interpolated linearly (``order=1``) or by nearest neighbour (``order=0``), with the outer
    half-voxel of the source taking the edge voxel's value (no fall-off to ``cval`` inside the extent).

    Returns
    -------
    (scipy.sparse.csr_matrix of shape (n_dst, n_src), bool array of shape (n_dst,))
        The operator and which destination voxels overlap the source extent.
    """
    from scipy import sparse

    lo_src, hi_src = o_src - 0.5 * d_src, o_src + (n_src - 0.5) * d_src
    centres = o_dst + d_dst * np.arange(n_dst)
    tol = 1e-6 * min(d_src, d_dst)
    if order >= 1 and d_dst > d_src * (1.0 + 1e-6):
        # overlap of destination voxel i with source voxel j, per unit of the destination voxel inside the extent
        dlo, dhi = centres - 0.5 * d_dst, centres + 0.5 * d_dst
        j0 = np.clip(np.floor((dlo - lo_src) / d_src).astype(int), 0, n_src - 1)
        j1 = np.clip(np.floor((dhi - lo_src) / d_src).astype(int), 0, n_src - 1)
        rows, cols, vals = [], [], []
        span = int((j1 - j0).max(initial=0)) + 1
        for k in range(span):
            j = j0 + k
            ok = j <= j1
            slo = lo_src + j * d_src
            ov = np.minimum(dhi, slo + d_src) - np.maximum(dlo, slo)
            ok &= ov > tol
            rows.append(np.nonzero(ok)[0]), cols.append(j[ok]), vals.append(ov[ok])
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        inside = np.bincount(r, weights=v, minlength=n_dst)
        valid = inside > tol
        v = v / inside[r]
        return sparse.csr_matrix((v, (r, c)), shape=(n_dst, n_src)), valid
    valid = (centres >= lo_src - tol) & (centres <= hi_src + tol)
    idx = np.clip((centres - o_src) / d_src, 0.0, n_src - 1.0)
    r = np.nonzero(valid)[0]
    if order == 0:
        c = np.clip(np.floor(idx[r] + 0.5).astype(int), 0, n_src - 1)
        return sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(n_dst, n_src)), valid
    i0 = np.minimum(np.floor(idx[r]).astype(int), max(n_src - 2, 0))
    w = idx[r] - i0
    i1 = np.minimum(i0 + 1, n_src - 1)
    m = sparse.csr_matrix((np.concatenate([1.0 - w, w]), (np.concatenate([r, r]), np.concatenate([i0, i1]))),
                          shape=(n_dst, n_src))
    return m, valid


def resample(array: np.ndarray, src: Grid, dst: Grid, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Resample ``array`` defined on ``src`` onto ``dst`` (axis-aligned grids), keeping every voxel in the extent.

    Applied separably along z, y and x (:func:`_axis_operator`):

    * a destination voxel whose centre lies anywhere inside the source's *extent* (voxel edges, including the
      outer half-voxel) gets a value - uniform volumes stay uniform to the edge;
    * coarsening an axis with ``order=1`` is a volume-weighted average (activity is conserved), not point
      sampling, so a lesion smaller than the new voxel keeps its activity;
    * refining an axis with ``order=1`` is linear interpolation clamped at the edges;
    * ``order=0`` (label maps) takes the nearest source voxel, so a label keeps its volume within one voxel layer.

    Destination voxels outside the source extent take ``cval``.

    Parameters
    ----------
    array : numpy.ndarray
        Values on ``src`` (z, y, x).
    src, dst : Grid
        Source and destination geometry.
    order : int
        0 nearest (labels) or 1 linear / volume-weighted (concentrations, Bq/mL, HU, mu).
    cval : float
        Fill value outside the source volume.
    """
    src.check_array("resample input", array)
    check_int("resample order", order, 0, 1)
    a = np.asarray(array)
    out = a if order == 0 else a.astype(np.float64)
    valid = []
    for axis in range(3):
        op, ok = _axis_operator(src.shape[axis], src.origin_mm[axis], src.spacing_mm[axis], dst.shape[axis],
                                dst.origin_mm[axis], dst.spacing_mm[axis], order)
        moved = np.moveaxis(out, axis, 0)
        rest = moved.shape[1:]
        flat = moved.reshape(moved.shape[0], -1)
        if order == 0:
            # nearest neighbour: a gather (keeps integer labels exact)
            pick = np.zeros(op.shape[0], dtype=int)
            coo = op.tocoo()
            pick[coo.row] = coo.col
            res = flat[pick]
        else:
            res = op @ flat
        out = np.moveaxis(res.reshape((op.shape[0],) + rest), 0, axis)
        valid.append(ok)
    out = np.array(out, copy=True)
    outside = ~(valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :])
    if outside.any():
        out[outside] = cval
    return out.astype(a.dtype, copy=False)
