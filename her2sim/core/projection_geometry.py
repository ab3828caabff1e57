"""Geometry of parallel-hole SPECT projections, shared by ``sim`` and ``recon``.

Convention
----------
* The rotation axis is parallel to world z (patient superior) and passes through
  the world point ``(x, y) = axis_xy_mm`` (LPS, mm).
* View angle ``theta`` (deg): the detector face is at distance ``radius_mm`` from the
  axis along the outward normal ``n(theta) = (x = sin theta, y = -cos theta)``; at
  0 deg the head is anterior (LPS -y), at 90 deg on the patient's left (+x).
* In-plane detector coordinate ``u`` runs along ``t(theta) = (x = cos theta, y = sin theta)``;
  ``v`` runs along +z. Pixel ``(iv, iu)`` has its centre at
  ``u = (iu - (nu-1)/2) du`` and ``z = axis_z_mm + (iv - (nv-1)/2) dv``.
* Projections are stored (window, view, v, u).
* Distance of a point p from the collimator face: ``d = radius - (p - axis) . n``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, DataError, check_int, check_range


@dataclass(frozen=True)
class EnergyWindow:
    """An acquisition energy window [lower_kev, upper_kev)."""

    name: str
    lower_kev: float
    upper_kev: float

    def __post_init__(self):
        check_range(f"window[{self.name}].lower_kev", self.lower_kev, 1.0, 1000.0)
        check_range(f"window[{self.name}].upper_kev", self.upper_kev, 1.0, 1000.0)
        if not self.upper_kev > self.lower_kev:
            raise ConfigError(f"window[{self.name}]: upper_kev = {self.upper_kev} must be greater than lower_kev = {self.lower_kev}")

    @classmethod
    def centered(cls, name: str, center_kev: float, width_fraction: float) -> "EnergyWindow":
        """Window of total width ``width_fraction * center_kev`` (0.20 = +/-10 %)."""
        check_range(f"window[{name}].width_fraction", width_fraction, 0.0, 1.0, lo_open=True)
        half = 0.5 * width_fraction * center_kev
        return cls(name, center_kev - half, center_kev + half)

    @property
    def width_kev(self) -> float:
        return self.upper_kev - self.lower_kev

    @property
    def center_kev(self) -> float:
        return 0.5 * (self.upper_kev + self.lower_kev)

    def to_dict(self) -> dict:
        return {"name": self.name, "lower_kev": self.lower_kev, "upper_kev": self.upper_kev}


def check_windows(windows) -> tuple:
    """Validate a list of windows: unique names, no overlaps. Returns a tuple."""
    ws = tuple(windows)
    if not ws:
        raise ConfigError("windows: at least one energy window is required")
    names = [w.name for w in ws]
    if len(set(names)) != len(names):
        raise ConfigError(f"windows: names must be unique, got {names}")
    srt = sorted(ws, key=lambda w: w.lower_kev)
    for a, b in zip(srt, srt[1:]):
        if b.lower_kev < a.upper_kev - 1e-9:
            raise ConfigError(f"windows: {a.name} [{a.lower_kev:g}, {a.upper_kev:g}] keV overlaps {b.name} "
                              f"[{b.lower_kev:g}, {b.upper_kev:g}] keV; windows must not overlap")
    return ws


@dataclass(frozen=True)
class ProjectionGeometry:
    """Where each projection pixel looks (see module docstring for the convention).

    Attributes
    ----------
    angles_deg : numpy.ndarray
        View angles (view,) in degrees.
    radii_mm : numpy.ndarray
        Distance from rotation axis to collimator face per view (view,) in mm.
    shape_vu : tuple of int
        Detector matrix (nv, nu).
    pixel_mm : tuple of float
        Pixel size (dv, du) in mm.
    axis_xy_mm : tuple of float
        World (x, y) of the rotation axis in mm.
    axis_z_mm : float
        World z of the detector's axial centre in mm.
    heads : numpy.ndarray
        Head index (0 or 1) acquiring each view.
    """

    angles_deg: np.ndarray
    radii_mm: np.ndarray
    shape_vu: tuple = (128, 128)
    pixel_mm: tuple = (4.42, 4.42)
    axis_xy_mm: tuple = (0.0, 0.0)
    axis_z_mm: float = 0.0
    heads: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        a = np.atleast_1d(np.asarray(self.angles_deg, dtype=float))
        r = np.asarray(self.radii_mm, dtype=float)
        if a.size == 0:
            raise ConfigError("projection.angles_deg: the number of views must be >= 1 (got 0)")
        if r.ndim == 0:
            r = np.full(a.shape, float(r))
        if r.shape != a.shape:
            raise ConfigError(f"projection.radii_mm has {r.size} entries, expected one per view ({a.size})")
        if np.any(~np.isfinite(r)) or np.any(r <= 0):
            raise ConfigError(f"projection.radii_mm must be > 0 mm (got min {np.nanmin(r):g})")
        nv = check_int("projection.shape_vu[0]", int(self.shape_vu[0]), 1, 2048)
        nu = check_int("projection.shape_vu[1]", int(self.shape_vu[1]), 1, 2048)
        dv = check_range("projection.pixel_mm[0]", self.pixel_mm[0], 0.0, 100.0, lo_open=True)
        du = check_range("projection.pixel_mm[1]", self.pixel_mm[1], 0.0, 100.0, lo_open=True)
        heads = np.zeros(a.shape, np.int8) if self.heads is None else np.asarray(self.heads, np.int8)
        object.__setattr__(self, "angles_deg", a)
        object.__setattr__(self, "radii_mm", r)
        object.__setattr__(self, "shape_vu", (nv, nu))
        object.__setattr__(self, "pixel_mm", (dv, du))
        object.__setattr__(self, "axis_xy_mm", tuple(float(v) for v in self.axis_xy_mm))
        object.__setattr__(self, "axis_z_mm", float(self.axis_z_mm))
        object.__setattr__(self, "heads", heads)

    @classmethod
    def dual_head(cls, n_views: int = 120, radius_mm: float = 250.0, shape_vu=(128, 128),
                  pixel_mm=(4.42, 4.42), start_deg: float = 0.0, axis_xy_mm=(0.0, 0.0),
                  axis_z_mm: float = 0.0) -> "ProjectionGeometry":
        """Step-and-shoot orbit of two heads at 180 deg covering 360 deg in ``n_views`` views.

        Head 0 acquires the first half of the angles (``start .. start+180``), head 1 the
        opposite ones, as on a dual-head NM670 in H-mode.
        """
        n = check_int("protocol.n_views", n_views, 2, 1024)
        if n % 2:
            raise ConfigError(f"protocol.n_views = {n} must be even for a dual-head 360 deg orbit")
        angles = (start_deg + np.arange(n) * 360.0 / n) % 360.0
        heads = (np.arange(n) >= n // 2).astype(np.int8)
        return cls(angles, np.full(n, float(radius_mm)), tuple(shape_vu), tuple(pixel_mm),
                   tuple(axis_xy_mm), axis_z_mm, heads)

    @property
    def n_views(self) -> int:
        return int(self.angles_deg.size)

    def normals_xy(self) -> np.ndarray:
        """Outward detector normals (view, 2) as (x, y) components."""
        t = np.deg2rad(self.angles_deg)
        return np.stack([np.sin(t), -np.cos(t)], axis=-1)

    def u_axes_xy(self) -> np.ndarray:
        """In-plane detector axes (view, 2) as (x, y) components."""
        t = np.deg2rad(self.angles_deg)
        return np.stack([np.cos(t), np.sin(t)], axis=-1)

    def u_centers_mm(self) -> np.ndarray:
        nu = self.shape_vu[1]
        return (np.arange(nu) - 0.5 * (nu - 1)) * self.pixel_mm[1]

    def v_centers_mm(self) -> np.ndarray:
        """World z (mm) of the pixel-row centres."""
        nv = self.shape_vu[0]
        return self.axis_z_mm + (np.arange(nv) - 0.5 * (nv - 1)) * self.pixel_mm[0]

    def project_point(self, x_mm: float, y_mm: float, z_mm: float):
        """(u_mm, z_mm, distance_to_face_mm) of a world point for every view (arrays (view,))."""
        px, py = x_mm - self.axis_xy_mm[0], y_mm - self.axis_xy_mm[1]
        n = self.normals_xy()
        t = self.u_axes_xy()
        u = px * t[:, 0] + py * t[:, 1]
        d = self.radii_mm - (px * n[:, 0] + py * n[:, 1])
        return u, np.full_like(u, z_mm), d

    def to_attrs(self) -> dict:
        return {"angles_deg": self.angles_deg.tolist(), "radii_mm": self.radii_mm.tolist(),
                "shape_vu": list(self.shape_vu), "pixel_mm": list(self.pixel_mm),
                "axis_xy_mm": list(self.axis_xy_mm), "axis_z_mm": self.axis_z_mm,
                "heads": self.heads.tolist()}

    @classmethod
    def from_attrs(cls, d: dict) -> "ProjectionGeometry":
        try:
            return cls(np.asarray(d["angles_deg"]), np.asarray(d["radii_mm"]), tuple(d["shape_vu"]),
                       tuple(d["pixel_mm"]), tuple(d["axis_xy_mm"]), float(d["axis_z_mm"]),
                       np.asarray(d["heads"]))
        except KeyError as exc:
            raise DataError(f"projection geometry attribute {exc.args[0]!r} is missing") from None
