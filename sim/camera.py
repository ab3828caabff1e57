"""NM670-like dual-head SPECT camera with a GE LEHR parallel-hole collimator.

One dataclass family describes the camera for the Monte Carlo (``her2sim.sim``) and
for reconstruction (``her2sim.recon``). Numbers and formulas from
``../shared/reference/camera_nm670.md``:

* LEHR: hexagonal holes 1.50 mm across flats, 0.20 mm lead septa, 35.0 mm long
  (SIMIND ``collim.col`` GI-LEHR; OpenGATE ``ge_discovery_nm670.py``).
* Detector: NaI(Tl) 9.525 mm, 540 x 400 mm; intrinsic resolution 3.9 mm FWHM
  (vendor spec), energy resolution 9.5 % FWHM at 140.5 keV scaling as 1/sqrt(E);
  1.3 mm Al cover.
* Geometric efficiency: Anger/Keller g = K^2 (D/L_e)^2 D^2/(D+t)^2, K = 0.26 for
  hexagonal holes, L_e = L - 2/mu_Pb (Cherry, Sorenson & Phelps).
* Geometric resolution R_g = D (L_e + z + c) / L_e; system FWHM = sqrt(R_g^2 + R_i^2).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from her2sim.core.errors import ConfigError, check_int, check_range
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry, check_windows
from her2sim.core.radionuclide import TC99M

from .xsections import E_MAX_KEV, E_MIN_KEV, linear_attenuation_per_cm

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548


@dataclass(frozen=True)
class Collimator:
    """Parallel-hole collimator with a hexagonal hole lattice.

    Attributes
    ----------
    hole_mm : float
        Hole size across flats (mm).
    septa_mm : float
        Septal thickness (mm); hole pitch = hole + septa.
    length_mm : float
        Hole length (mm).
    material : str
        Septal material (catalogue name).
    shape_factor_k : float
        Keller/Anger K for hexagonal holes (0.26).
    """

    name: str = "GE LEHR"
    hole_mm: float = 1.50
    septa_mm: float = 0.20
    length_mm: float = 35.0
    material: str = "lead"
    shape_factor_k: float = 0.26

    def __post_init__(self):
        check_range("collimator.hole_mm", self.hole_mm, 0.1, 10.0)
        check_range("collimator.septa_mm", self.septa_mm, 0.01, 5.0)
        check_range("collimator.length_mm", self.length_mm, 5.0, 100.0)
        check_range("collimator.shape_factor_k", self.shape_factor_k, 0.1, 0.5)

    @property
    def pitch_mm(self) -> float:
        return self.hole_mm + self.septa_mm

    def mu_per_mm(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Linear attenuation of the septal material (1/mm)."""
        return linear_attenuation_per_cm(self.material, energy_kev) / 10.0

    def effective_length_mm(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """L_e = L - 2/mu (penetration-corrected hole length, mm)."""
        return self.length_mm - 2.0 / self.mu_per_mm(energy_kev)

    def geometric_efficiency(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Anger/Keller fraction of emitted photons passing the collimator."""
        d, t, le = self.hole_mm, self.septa_mm, self.effective_length_mm(energy_kev)
        return self.shape_factor_k ** 2 * (d / le) ** 2 * d ** 2 / (d + t) ** 2

    def geometric_fwhm_mm(self, distance_mm, gap_mm: float = 0.0, energy_kev: float = TC99M.gamma_kev):
        """Anger geometric resolution R_g = D (L_e + z + c) / L_e (mm) at distance z from the face."""
        le = self.effective_length_mm(energy_kev)
        return self.hole_mm * (le + np.asarray(distance_mm, dtype=float) + gap_mm) / le

    def min_septal_path_mm(self) -> float:
        """Shortest lead path of a ray crossing one septum from hole to hole: t L / (2 D + t) (mm)."""
        return self.septa_mm * self.length_mm / (2.0 * self.hole_mm + self.septa_mm)

    def septal_transmission(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Transmission exp(-mu w) through the minimum septal path."""
        return math.exp(-self.mu_per_mm(energy_kev) * self.min_septal_path_mm())


@dataclass(frozen=True)
class Detector:
    """NaI(Tl) scintillation detector of one head.

    Attributes
    ----------
    crystal_mm : float
        Crystal thickness (mm).
    width_mm, height_mm : float
        Useful field of view, transaxial (u) x axial (v), mm.
    intrinsic_fwhm_mm : float
        Intrinsic spatial resolution at 140 keV (mm FWHM).
    energy_resolution : float
        Energy FWHM / E at ``reference_kev`` (0.095 = 9.5 %); scales as 1/sqrt(E).
    cover_mm : float
        Aluminium entrance cover (mm).
    air_gap_mm : float
        Gap between collimator back face and cover (mm, assumption).
    photopeak_efficiency : float
        Fraction of photons reaching the crystal at 140.5 keV scored in a 20 % photopeak
        window (0.862 for 9.5 mm NaI, OpenTOPAS-SPECT validation); used by the analytic report.
    """

    crystal_mm: float = 9.525
    width_mm: float = 540.0
    height_mm: float = 400.0
    intrinsic_fwhm_mm: float = 3.9
    energy_resolution: float = 0.095
    reference_kev: float = 140.5
    cover_mm: float = 1.3
    air_gap_mm: float = 2.0
    photopeak_efficiency: float = 0.862

    def __post_init__(self):
        check_range("detector.crystal_mm", self.crystal_mm, 1.0, 50.0)
        check_range("detector.width_mm", self.width_mm, 50.0, 1000.0)
        check_range("detector.height_mm", self.height_mm, 50.0, 1000.0)
        check_range("detector.intrinsic_fwhm_mm", self.intrinsic_fwhm_mm, 0.0, 20.0)
        check_range("detector.energy_resolution", self.energy_resolution, 0.0, 0.5, lo_open=True)
        check_range("detector.cover_mm", self.cover_mm, 0.0, 10.0)
        check_range("detector.air_gap_mm", self.air_gap_mm, 0.0, 50.0)
        check_range("detector.photopeak_efficiency", self.photopeak_efficiency, 0.0, 1.0, lo_open=True)

    def energy_fwhm_kev(self, energy_kev):
        """Energy FWHM (keV) at ``energy_kev``: R(E) E with R(E) = R0 sqrt(E0/E)."""
        e = np.asarray(energy_kev, dtype=float)
        return self.energy_resolution * np.sqrt(self.reference_kev * e)

    def intrinsic_fwhm_at(self, energy_kev):
        """Intrinsic spatial FWHM (mm), scaling as 1/sqrt(E) from 140 keV."""
        return self.intrinsic_fwhm_mm * np.sqrt(140.0 / np.asarray(energy_kev, dtype=float))

    def mean_interaction_depth_mm(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Mean depth of first interaction in the crystal for normal incidence (mm)."""
        mu = linear_attenuation_per_cm("nai", energy_kev) / 10.0
        t = self.crystal_mm
        return 1.0 / mu - t * math.exp(-mu * t) / (1.0 - math.exp(-mu * t))

    def image_plane_gap_mm(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Distance from collimator back face to the mean interaction depth (mm)."""
        return self.air_gap_mm + self.cover_mm + self.mean_interaction_depth_mm(energy_kev)

    def window_acceptance(self, window: EnergyWindow, deposited_kev) -> np.ndarray:
        """Probability that a deposit of ``deposited_kev`` is scored in ``window`` after Gaussian blur."""
        from scipy.special import erf
        e = np.asarray(deposited_kev, dtype=float)
        s = self.energy_fwhm_kev(np.maximum(e, 1e-3)) / FWHM_PER_SIGMA
        return 0.5 * (erf((window.upper_kev - e) / (math.sqrt(2) * s)) - erf((window.lower_kev - e) / (math.sqrt(2) * s)))


def default_windows() -> tuple:
    """Clinical NM670 99mTc protocol: photopeak 140.5 keV +/-10 % and scatter 120 keV +/-5 %.

    (EJNMMI Res 2017 Table 1; ``camera_nm670.md``.)
    """
    return (EnergyWindow.centered("photopeak", 140.5, 0.20), EnergyWindow.centered("scatter", 120.0, 0.10))


def tew_windows(width_kev: float = 3.0) -> tuple:
    """Photopeak plus two TEW sidebands of ``width_kev`` adjacent to it (Ogawa 1991)."""
    pk = EnergyWindow.centered("photopeak", 140.5, 0.20)
    return (EnergyWindow("tew_lower", pk.lower_kev - width_kev, pk.lower_kev), pk,
            EnergyWindow("tew_upper", pk.upper_kev, pk.upper_kev + width_kev))


@dataclass(frozen=True)
class Protocol:
    """Step-and-shoot acquisition protocol.

    Attributes
    ----------
    n_views : int
        Views over 360 deg from both heads (120 = 60 stops x 3 deg x 2 heads).
    radius_mm : float
        Radius of rotation: rotation axis to collimator face (mm).
    matrix : int
        Detector matrix (matrix x matrix).
    pixel_mm : float
        Pixel size (mm).
    time_per_view_s : float
        Acquisition time per view (s).
    start_deg : float
        Angle of the first view.
    orbit : str
        ``"circular"`` or ``"contour"`` (radii from the body outline).
    """

    n_views: int = 120
    radius_mm: float = 250.0
    matrix: int = 128
    pixel_mm: float = 4.42
    time_per_view_s: float = 20.0
    start_deg: float = 0.0
    orbit: str = "circular"

    def __post_init__(self):
        n = check_int("protocol.n_views", self.n_views, 2, 1024)
        if n % 2:
            raise ConfigError(f"protocol.n_views = {n} must be even (dual-head orbit)")
        check_range("protocol.radius_mm", self.radius_mm, 50.0, 600.0)
        check_int("protocol.matrix", self.matrix, 8, 1024)
        check_range("protocol.pixel_mm", self.pixel_mm, 0.5, 20.0)
        check_range("protocol.time_per_view_s", self.time_per_view_s, 0.0, 3600.0, lo_open=True)
        if self.orbit not in ("circular", "contour"):
            raise ConfigError(f"protocol.orbit = {self.orbit!r} must be 'circular' or 'contour'")


@dataclass(frozen=True)
class Camera:
    """A dual-head NM670-like camera: collimator, detector, windows and protocol."""

    collimator: Collimator = field(default_factory=Collimator)
    detector: Detector = field(default_factory=Detector)
    windows: tuple = field(default_factory=default_windows)
    protocol: Protocol = field(default_factory=Protocol)
    heads: int = 2

    def __post_init__(self):
        ws = check_windows(self.windows)
        for w in ws:
            if w.lower_kev < E_MIN_KEV or w.upper_kev > E_MAX_KEV:
                raise ConfigError(f"window[{w.name}] = [{w.lower_kev:g}, {w.upper_kev:g}] keV lies outside the "
                                  f"tabulated energy range [{E_MIN_KEV:g}, {E_MAX_KEV:g}] keV")
        object.__setattr__(self, "windows", ws)
        check_int("camera.heads", self.heads, 1, 2)

    # ------------------------------------------------------------------ analytic properties
    def system_fwhm_mm(self, distance_mm, energy_kev: float = TC99M.gamma_kev):
        """System FWHM (mm) at distance from the collimator face: sqrt(R_g^2 + R_i^2), gap included."""
        rg = self.collimator.geometric_fwhm_mm(distance_mm, self.detector.image_plane_gap_mm(energy_kev), energy_kev)
        ri = self.detector.intrinsic_fwhm_at(energy_kev)
        return np.sqrt(rg ** 2 + ri ** 2)

    def sigma_model_mm(self, energy_kev: float = TC99M.gamma_kev) -> tuple:
        """Coefficients (a, b, c) of sigma(d) = sqrt((a d + b)^2 + c^2) in mm (d from the face).

        The PyTomography/SIMIND-style depth model with the image-plane gap included in ``b``.
        """
        le = self.collimator.effective_length_mm(energy_kev)
        gap = self.detector.image_plane_gap_mm(energy_kev)
        d = self.collimator.hole_mm
        a = d / le / FWHM_PER_SIGMA
        b = d * (le + gap) / le / FWHM_PER_SIGMA
        c = float(self.detector.intrinsic_fwhm_at(energy_kev)) / FWHM_PER_SIGMA
        return a, b, c

    def sigma_mm(self, distance_mm, energy_kev: float = TC99M.gamma_kev):
        """Gaussian sigma (mm) of the collimator-detector response at distance from the face."""
        a, b, c = self.sigma_model_mm(energy_kev)
        d = np.asarray(distance_mm, dtype=float)
        return np.sqrt((a * d + b) ** 2 + c ** 2)

    def sensitivity_per_photon(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Expected photopeak counts per emitted photon for one head (g x photopeak efficiency)."""
        return self.collimator.geometric_efficiency(energy_kev) * self.detector.photopeak_efficiency

    def sensitivity_cps_per_mbq(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Expected photopeak cps/MBq of one head for 99mTc in air."""
        return self.sensitivity_per_photon(energy_kev) * TC99M.gamma_yield * 1e6

    def septal_penetration_fraction(self, energy_kev: float = TC99M.gamma_kev) -> float:
        """Analytic single-septum transmission exp(-mu w_min) (definition: one septum crossed at the minimum path)."""
        return self.collimator.septal_transmission(energy_kev)

    def projection_geometry(self, radius_mm: float | None = None, axis_z_mm: float = 0.0,
                            radii_mm=None) -> ProjectionGeometry:
        """The dual-head orbit of ``protocol`` as a :class:`ProjectionGeometry`.

        Circular at ``radius_mm`` (default ``protocol.radius_mm``), or a body-contour orbit when
        per-view ``radii_mm`` are given (e.g. :func:`her2sim.phantoms.body_radius_mm` + a margin).
        """
        p = self.protocol
        geo = ProjectionGeometry.dual_head(p.n_views, p.radius_mm if radius_mm is None else radius_mm,
                                           (p.matrix, p.matrix), (p.pixel_mm, p.pixel_mm), p.start_deg,
                                           (0.0, 0.0), axis_z_mm)
        if radii_mm is None:
            return geo
        return ProjectionGeometry(geo.angles_deg, np.asarray(radii_mm, dtype=float), geo.shape_vu, geo.pixel_mm,
                                  geo.axis_xy_mm, geo.axis_z_mm, geo.heads)

    def report(self, distances_mm=(0, 50, 100, 150, 200)) -> dict:
        """Analytic camera figures (SIMIND-like summary) as a JSON-ready dict."""
        c, d = self.collimator, self.detector
        return {
            "collimator": asdict(c) | {"pitch_mm": c.pitch_mm,
                                       "effective_length_mm": c.effective_length_mm(),
                                       "mu_septa_per_cm": c.mu_per_mm() * 10.0},
            "detector": asdict(d) | {"image_plane_gap_mm": d.image_plane_gap_mm(),
                                     "mean_interaction_depth_mm": d.mean_interaction_depth_mm()},
            "windows": [w.to_dict() for w in self.windows],
            "protocol": asdict(self.protocol),
            "geometric_efficiency": c.geometric_efficiency(),
            "sensitivity_per_photon": self.sensitivity_per_photon(),
            "sensitivity_cps_per_mbq": self.sensitivity_cps_per_mbq(),
            "geometric_fwhm_mm": {str(int(z)): float(c.geometric_fwhm_mm(z)) for z in distances_mm},
            "system_fwhm_mm": {str(int(z)): float(self.system_fwhm_mm(z)) for z in distances_mm},
            "min_septal_path_mm": c.min_septal_path_mm(),
            "septal_penetration_fraction": self.septal_penetration_fraction(),
            "energy_fwhm_kev_at_140": float(d.energy_fwhm_kev(140.5)),
        }

    def to_dict(self) -> dict:
        return {"collimator": asdict(self.collimator), "detector": asdict(self.detector),
                "windows": [w.to_dict() for w in self.windows], "protocol": asdict(self.protocol),
                "heads": self.heads}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        """Build a camera from a (partial) dict of overrides; unknown keys are errors."""
        allowed = {"collimator", "detector", "windows", "protocol", "heads"}
        for k in d:
            if k not in allowed:
                raise ConfigError(f"camera.{k} is not a known camera section; allowed {sorted(allowed)}")
        kw = {}
        for key, klass in (("collimator", Collimator), ("detector", Detector), ("protocol", Protocol)):
            if key in d:
                names = {f.name for f in fields(klass)}
                for k in d[key]:
                    if k not in names:
                        raise ConfigError(f"camera.{key}.{k} is not a known field; allowed {sorted(names)}")
                kw[key] = replace(klass(), **d[key])
        if "windows" in d:
            ws = []
            for i, w in enumerate(d["windows"]):
                try:
                    ws.append(EnergyWindow(str(w["name"]), float(w["lower_kev"]), float(w["upper_kev"])))
                except KeyError as exc:
                    raise ConfigError(f"camera.windows[{i}] needs key {exc.args[0]!r} (name, lower_kev, upper_kev)") from None
            kw["windows"] = tuple(ws)
        if "heads" in d:
            kw["heads"] = d["heads"]
        return cls(**kw)

    @classmethod
    def from_toml(cls, path) -> "Camera":
        """Camera with the overrides of a TOML file (sections ``[collimator]``, ``[detector]``, ...)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"camera file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"camera file {path}: invalid TOML: {exc}") from None
        if "camera" in data and isinstance(data["camera"], dict):
            data = data["camera"]
        return cls.from_dict(data)
