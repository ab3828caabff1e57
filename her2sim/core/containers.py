"""The three data containers: :class:`Phantom`, :class:`Projections`, :class:`Image`.

Each is an array (or a few) *plus* its geometry and units, saved to and loaded
from a schema-versioned HDF5 file (:mod:`her2sim.core.hdf5io`).

Schema version 2 adds the typed :class:`~her2sim.core.acquisition.Acquisition` and
:class:`~her2sim.core.acquisition.Corrections` of :class:`Projections` and :class:`Image` (``meta_json``
keys ``acquisition`` and ``corrections``, an object or null). Version-1 files are *migrated* on load,
not refused: version 1 recorded the very same facts in the untyped ``meta`` under the keys of
:data:`~her2sim.core.acquisition.ACQUISITION_META_KEYS` and
:data:`~her2sim.core.acquisition.CORRECTIONS_META_KEYS` (the recon wrote them, the SUV and DICOM code
read them), so :meth:`Acquisition.from_meta` / :meth:`Corrections.from_meta` rebuild the typed fields
from what the file says, nothing is guessed: a key the file lacks stays unknown (None), and an image
whose meta holds no recon keys gets no Corrections. A value that fails validation gives a DataError
naming the file and telling to re-run the step that wrote it. Phantom files are identical in both
versions. Version-1 projections get ``corrections = None`` (raw projections, nothing corrected).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .acquisition import Acquisition, Corrections
from .errors import DataError, Her2simError
from .grid import Grid
from .hdf5io import check_meta, read_container, read_container_versioned, require, write_container
from .projection_geometry import EnergyWindow, ProjectionGeometry

#: required grid attributes and their types (other keys, e.g. ``orientation``, are allowed)
_GRID_SCHEMA = {"shape_zyx": ("int_list", 3), "spacing_mm_zyx": ("num_list", 3), "origin_mm_zyx": ("num_list", 3)}
_GEOMETRY_SCHEMA = {"angles_deg": "num_list", "radii_mm": "num_list", "shape_vu": ("int_list", 2),
                    "pixel_mm": ("num_list", 2), "axis_xy_mm": ("num_list", 2), "axis_z_mm": "num",
                    "heads": "int_list"}
_WINDOW_SCHEMA = {"name": "str", "lower_kev": "num", "upper_kev": "num"}


def _check_grid(path, meta: dict, key: str = "grid") -> None:
    check_meta(path, meta, {key: "dict"})
    check_meta(path, meta[key], _GRID_SCHEMA, prefix=f"{key}.")


def _check_typed(obj, kind: str) -> None:
    """``acquisition`` / ``corrections`` of a container are None or the typed objects."""
    for name, cls in (("acquisition", Acquisition), ("corrections", Corrections)):
        v = getattr(obj, name)
        if v is not None and not isinstance(v, cls):
            raise DataError(f"{kind}.{name} must be a her2sim {cls.__name__} or None, got {type(v).__name__}")


def _typed_attrs(obj) -> dict:
    """The ``meta_json`` entries of the typed fields (schema version 2)."""
    return {"acquisition": None if obj.acquisition is None else obj.acquisition.to_dict(),
            "corrections": None if obj.corrections is None else obj.corrections.to_dict()}


def _typed_from_file(path, meta: dict, version: int, migrate_corrections: bool) -> tuple:
    """(Acquisition or None, Corrections or None) of a loaded file; version 1 is migrated from ``meta``."""
    if version == 1:
        old = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
        try:
            acq = Acquisition.from_meta(old)
            cor = Corrections.from_meta(old) if migrate_corrections else None
        except DataError as exc:
            raise DataError(f"{path}: schema_version 1 file, its meta cannot be migrated to schema version 2: "
                            f"{exc}; re-run the step that wrote it") from None
        return acq, cor
    out = []
    for key, cls in (("acquisition", Acquisition), ("corrections", Corrections)):
        if key not in meta:
            raise DataError(f"{path}: required attribute {key!r} is missing (an object or null in schema_version 2)")
        v = meta[key]
        try:
            out.append(None if v is None else cls.from_dict(v, where=f"attribute {key!r}"))
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
    return tuple(out)


def _build(path, factory):
    """Run ``factory()``; a failed consistency check of the loaded values becomes a DataError naming ``path``."""
    try:
        return factory()
    except DataError as exc:
        msg = str(exc)
        raise DataError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (Her2simError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: inconsistent contents: {exc}") from None


@dataclass
class Phantom:
    """A digital patient or test object.

    Attributes
    ----------
    grid : Grid
        Geometry of every volume below.
    activity_bq_per_ml : numpy.ndarray
        Activity concentration (time, z, y, x) in Bq/mL at each time point.
    time_points_h : tuple of float
        Time after injection (h) of each activity frame.
    ct_hu : numpy.ndarray
        CT numbers (z, y, x) in HU.
    labels : numpy.ndarray
        Organ/structure label map (z, y, x), int16; names in ``label_names``.
    material_ids : numpy.ndarray
        Index into ``material_names`` per voxel (z, y, x), uint8.
    density_g_cm3 : numpy.ndarray
        Mass density (z, y, x) in g/cm^3 used by the Monte Carlo.
    label_names : dict of int -> str
    material_names : list of str
        Names from :mod:`her2sim.core.materials`.
    truth : list of dict
        Per-lesion truth table (id, type, location, volume, IHC, FISH, HER2 status, true SUV...).
    lesion_ids : numpy.ndarray or None
        Per-voxel lesion id (0 = no lesion), int16.
    meta : dict
        Patient and provenance (weight_kg, height_cm, injected_mbq, seed, config).
    lesion_fraction : numpy.ndarray or None
        Partial-volume fraction (z, y, x), 0-1, of the voxel occupied by lesions (supersampled).
    lesion_owner : numpy.ndarray or None
        Id of the lesion with the largest fraction in each voxel (z, y, x), int16; 0 where no lesion reaches.
    lesion_own_suv : numpy.ndarray or None
        The lesions' *own* share of the SUV (time, z, y, x): fraction x the lesion's uptake, with no
        surrounding tissue - the partial-volume truth that :mod:`her2sim.analysis.truth` puts on any grid.
    """

    grid: Grid
    activity_bq_per_ml: np.ndarray
    time_points_h: tuple
    ct_hu: np.ndarray
    labels: np.ndarray
    material_ids: np.ndarray
    density_g_cm3: np.ndarray
    label_names: dict = field(default_factory=dict)
    material_names: list = field(default_factory=list)
    truth: list = field(default_factory=list)
    lesion_ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    lesion_fraction: np.ndarray | None = None
    lesion_owner: np.ndarray | None = None
    lesion_own_suv: np.ndarray | None = None

    KIND = "Phantom"

    def __post_init__(self):
        act = np.asarray(self.activity_bq_per_ml, dtype=np.float32)
        if act.ndim == 3:
            act = act[None]
        self.activity_bq_per_ml = act
        self.time_points_h = tuple(float(t) for t in np.atleast_1d(self.time_points_h))
        if act.shape[0] != len(self.time_points_h):
            raise DataError(f"Phantom.activity_bq_per_ml has {act.shape[0]} time frames but time_points_h has "
                            f"{len(self.time_points_h)} entries")
        for name in ("activity_bq_per_ml", "ct_hu", "labels", "material_ids", "density_g_cm3"):
            self.grid.check_array(f"Phantom.{name}", getattr(self, name))
        for name in ("lesion_ids", "lesion_fraction", "lesion_owner", "lesion_own_suv"):
            if getattr(self, name) is not None:
                self.grid.check_array(f"Phantom.{name}", getattr(self, name))
        if self.lesion_own_suv is not None and np.shape(self.lesion_own_suv)[0] != len(self.time_points_h):
            raise DataError(f"Phantom.lesion_own_suv has {np.shape(self.lesion_own_suv)[0]} time frames but "
                            f"time_points_h has {len(self.time_points_h)} entries")
        if not np.all(np.isfinite(act)) or np.any(act < 0):
            raise DataError("Phantom.activity_bq_per_ml must be finite and >= 0 Bq/mL")
        self.label_names = {int(k): str(v) for k, v in self.label_names.items()}

    def activity_at(self, time_h: float) -> np.ndarray:
        """Activity frame (Bq/mL) for the time point ``time_h`` (must be one of ``time_points_h``)."""
        for i, t in enumerate(self.time_points_h):
            if abs(t - time_h) < 1e-6:
                return self.activity_bq_per_ml[i]
        raise DataError(f"Phantom has no activity frame at time_h = {time_h}; available {list(self.time_points_h)}")

    def total_activity_bq(self, frame: int = 0) -> float:
        """Total activity (Bq) in the volume for a time frame."""
        return float(self.activity_bq_per_ml[frame].sum(dtype=np.float64) * self.grid.voxel_volume_ml)

    def save(self, path) -> Path:
        meta = {"grid": self.grid.to_attrs(), "time_points_h": list(self.time_points_h),
                "label_names": {str(k): v for k, v in self.label_names.items()},
                "material_names": list(self.material_names), "truth": self.truth, "meta": self.meta}
        arrays = {"activity_bq_per_ml": self.activity_bq_per_ml, "ct_hu": self.ct_hu, "labels": self.labels,
                  "material_ids": self.material_ids, "density_g_cm3": self.density_g_cm3,
                  "lesion_ids": self.lesion_ids, "lesion_fraction": self.lesion_fraction,
                  "lesion_owner": self.lesion_owner, "lesion_own_suv": self.lesion_own_suv}
        units = {"activity_bq_per_ml": "Bq/mL", "ct_hu": "HU", "labels": "", "material_ids": "",
                 "density_g_cm3": "g/cm^3", "lesion_ids": "", "lesion_fraction": "1", "lesion_owner": "",
                 "lesion_own_suv": "SUV (g/mL)"}
        return write_container(path, self.KIND, arrays, meta, units)

    @classmethod
    def load(cls, path) -> "Phantom":
        arrays, meta, _ = read_container(path, cls.KIND)
        r = lambda n: require(arrays, n, path)  # noqa: E731
        m = lambda n: require(meta, n, path, "attribute")  # noqa: E731
        _check_grid(path, meta)
        check_meta(path, meta, {"time_points_h": "num>=0_list", "label_names": "dict", "material_names": "str_list",
                                "truth": "list", "meta": "dict"})
        if not meta["time_points_h"]:
            raise DataError(f"{path}: attribute 'time_points_h' = [] must list at least one time point (h >= 0)")
        for k, v in meta["label_names"].items():
            if not (isinstance(v, str) and k.lstrip("-").isdigit()):
                raise DataError(f"{path}: attribute 'label_names' entry {k!r}: {v!r} must map an integer label "
                                "to a name (string)")
        return _build(path, lambda: cls(
            grid=Grid.from_attrs(m("grid")), activity_bq_per_ml=r("activity_bq_per_ml"),
            time_points_h=tuple(m("time_points_h")), ct_hu=r("ct_hu"), labels=r("labels"),
            material_ids=r("material_ids"), density_g_cm3=r("density_g_cm3"),
            label_names={int(k): v for k, v in m("label_names").items()},
            material_names=list(m("material_names")), truth=list(m("truth")),
            lesion_ids=arrays.get("lesion_ids"), meta=dict(m("meta")),
            lesion_fraction=arrays.get("lesion_fraction"), lesion_owner=arrays.get("lesion_owner"),
            lesion_own_suv=arrays.get("lesion_own_suv")))


@dataclass
class Projections:
    """SPECT projections (window, view, v, u) with their geometry.

    Attributes
    ----------
    counts : numpy.ndarray
        (window, view, v, u). Expected counts (noise-free, ``is_expected=True``) or
        Poisson counts.
    windows : tuple of EnergyWindow
    geometry : ProjectionGeometry
    is_expected : bool
        True for noise-free expectations, False for a noisy realisation.
    components : dict of str -> numpy.ndarray
        Optional split of ``counts`` (``primary``, ``scatter1``, ``scatter2``,
        ``scatter3plus``, ``penetration``), each (window, view, v, u).
    variance : numpy.ndarray or None
        Monte Carlo variance estimate of ``counts`` (same shape), counts^2.
    meta : dict
        Provenance: camera description, seed, config, Monte Carlo summary (and, for the code that
        still reads them, the untyped copies ``time_per_view_s``, ``injected_mbq``, ``scan_start_s``...).
    acquisition : Acquisition or None
        Patient, injection and timing of the scan (:class:`her2sim.core.acquisition.Acquisition`).
    corrections : Corrections or None
        Corrections already applied to the counts (None: raw projections).
    """

    counts: np.ndarray
    windows: tuple
    geometry: ProjectionGeometry
    is_expected: bool = True
    components: dict = field(default_factory=dict)
    variance: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    acquisition: Acquisition | None = None
    corrections: Corrections | None = None

    KIND = "Projections"

    def __post_init__(self):
        c = np.asarray(self.counts)
        if c.ndim != 4:
            raise DataError(f"Projections.counts must be 4-D (window, view, v, u), got shape {c.shape}")
        self.windows = tuple(self.windows)
        if c.shape[0] != len(self.windows):
            raise DataError(f"Projections.counts has {c.shape[0]} windows but {len(self.windows)} windows are described")
        g = self.geometry
        if c.shape[1:] != (g.n_views,) + tuple(g.shape_vu):
            raise DataError(f"Projections.counts shape {c.shape} does not match geometry "
                            f"(views {g.n_views}, detector {g.shape_vu})")
        if not np.all(np.isfinite(c)) or np.any(c < 0):
            raise DataError("Projections.counts must be finite and >= 0")
        for k, v in self.components.items():
            if np.shape(v) != c.shape:
                raise DataError(f"Projections.components[{k!r}] has shape {np.shape(v)}, expected {c.shape}")
        if self.variance is not None and np.shape(self.variance) != c.shape:
            raise DataError(f"Projections.variance has shape {np.shape(self.variance)}, expected {c.shape}")
        _check_typed(self, "Projections")

    def window_index(self, name: str) -> int:
        for i, w in enumerate(self.windows):
            if w.name == name:
                return i
        raise DataError(f"no energy window named {name!r}; available {[w.name for w in self.windows]}")

    def save(self, path) -> Path:
        meta = {"windows": [w.to_dict() for w in self.windows], "geometry": self.geometry.to_attrs(),
                "is_expected": bool(self.is_expected), "components": sorted(self.components),
                "meta": self.meta, **_typed_attrs(self)}
        arrays = {"counts": self.counts, "variance": self.variance}
        arrays.update({f"component_{k}": v for k, v in self.components.items()})
        units = {k: "counts" for k in arrays}
        units["variance"] = "counts^2"
        return write_container(path, self.KIND, arrays, meta, units)

    @classmethod
    def load(cls, path) -> "Projections":
        arrays, meta, _, version = read_container_versioned(path, cls.KIND)
        m = lambda n: require(meta, n, path, "attribute")  # noqa: E731
        check_meta(path, meta, {"windows": ("dict_list", _WINDOW_SCHEMA), "geometry": "dict",
                                "is_expected": "bool", "components": "str_list", "meta": "dict"})
        check_meta(path, meta["geometry"], _GEOMETRY_SCHEMA, prefix="geometry.")
        if not meta["windows"]:
            raise DataError(f"{path}: attribute 'windows' = [] must describe at least one energy window")
        comps = {k: require(arrays, f"component_{k}", path) for k in m("components")}
        acq, cor = _typed_from_file(path, meta, version, migrate_corrections=False)
        return _build(path, lambda: cls(
            counts=require(arrays, "counts", path), windows=tuple(EnergyWindow(**w) for w in m("windows")),
            geometry=ProjectionGeometry.from_attrs(m("geometry")), is_expected=m("is_expected"),
            components=comps, variance=arrays.get("variance"), meta=dict(m("meta")), acquisition=acq,
            corrections=cor))


IMAGE_UNITS = ("Bq/mL", "counts", "SUV", "1/cm", "HU", "")


@dataclass
class Image:
    """A 3-D image (z, y, x) with geometry and units (reconstruction, mu map, SUV map).

    Attributes
    ----------
    array : numpy.ndarray
        Voxel values (z, y, x).
    grid : Grid
    units : str
        One of ``IMAGE_UNITS`` (``"Bq/mL"`` for calibrated reconstructions).
    meta : dict
        Provenance: the recon settings, calibration (and, for the code that still reads them, untyped
        copies of the typed fields: ``injected_mbq``, ``weight_kg``, ``scan_start_s``, ``decay_corrected_to``...).
    acquisition : Acquisition or None
        Patient, injection and timing of the scan the image comes from (what SUV needs).
    corrections : Corrections or None
        What the reconstruction corrected for (CorrectedImage in DICOM, the decay reference of SUV).
    """

    array: np.ndarray
    grid: Grid
    units: str = "Bq/mL"
    meta: dict = field(default_factory=dict)
    acquisition: Acquisition | None = None
    corrections: Corrections | None = None

    KIND = "Image"

    def __post_init__(self):
        self.grid.check_array("Image.array", self.array)
        if self.units not in IMAGE_UNITS:
            raise DataError(f"Image.units = {self.units!r} is not one of {list(IMAGE_UNITS)}")
        _check_typed(self, "Image")

    def save(self, path) -> Path:
        meta = {"grid": self.grid.to_attrs(), "units": self.units, "meta": self.meta, **_typed_attrs(self)}
        return write_container(path, self.KIND, {"array": self.array}, meta, {"array": self.units})

    @classmethod
    def load(cls, path) -> "Image":
        arrays, meta, _, version = read_container_versioned(path, cls.KIND)
        m = lambda n: require(meta, n, path, "attribute")  # noqa: E731
        _check_grid(path, meta)
        check_meta(path, meta, {"units": "str", "meta": "dict"})
        acq, cor = _typed_from_file(path, meta, version, migrate_corrections=True)
        return _build(path, lambda: cls(array=require(arrays, "array", path), grid=Grid.from_attrs(m("grid")),
                                        units=m("units"), meta=dict(m("meta")), acquisition=acq, corrections=cor))
