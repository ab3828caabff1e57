"""Typed acquisition metadata: :class:`Acquisition` (patient, injection, timing) and :class:`Corrections`
(what a reconstruction corrected for).

Both travel on :class:`~her2sim.core.containers.Projections` and :class:`~her2sim.core.containers.Image`
(fields ``acquisition`` and ``corrections``), are stored in the HDF5 schema (version 2) and are what
:func:`her2sim.recon.reconstruct` fills, :func:`her2sim.analysis.suv.suv_image` reads and
:mod:`her2sim.dicom_io` writes as the Radiopharmaceutical/Patient modules and CorrectedImage (0028,0051).

Both are frozen and validate on construction: a bad value raises a one-line
:class:`~her2sim.core.errors.DataError` naming the field, the value and the allowed range.

Before schema version 2 the same facts lived in the untyped ``meta`` dicts under the keys of
:data:`ACQUISITION_META_KEYS` and :data:`CORRECTIONS_META_KEYS`; :meth:`Acquisition.from_meta` and
:meth:`Corrections.from_meta` read them (the HDF5 loader migrates version-1 files with them, and readers
use them when an in-memory object carries no typed field). The meta keys are still written alongside
for the code that reads them.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, fields

from .errors import DataError, check_range
from .radionuclide import DECAY_REFERENCES

#: Patient sex as DICOM PatientSex (0010,0040) writes it; ``female``/``male``/``other`` are accepted and stored so.
SEXES = ("F", "M", "O")
_SEX_ALIASES = {"f": "F", "female": "F", "m": "M", "male": "M", "o": "O", "other": "O"}

#: (field, lower bound, upper bound, lower bound open) of the numeric :class:`Acquisition` fields
_ACQ_RANGES = (
    ("injected_mbq", 0.0, 1.0e6, True),        # MBq at injection; calibration sources up to 1 TBq
    ("scan_start_s", 0.0, 10 * 24 * 3600.0, False),  # s from injection to scan start, at most 10 days
    ("time_per_view_s", 0.0, 3600.0, True),    # s per projection view
    ("weight_kg", 0.0, 1000.0, True),          # kg; a 0.5 L phantom "weighs" 0.5 kg
    ("height_cm", 30.0, 260.0, False),         # cm
)

#: ``meta`` keys of the facts :class:`Acquisition` holds (the spelling used before schema version 2)
ACQUISITION_META_KEYS = ("injected_mbq", "injection_time", "scan_start_s", "time_per_view_s", "weight_kg",
                         "height_cm", "sex")
#: ``meta`` key -> :class:`Corrections` field (the recon's spelling before schema version 2)
CORRECTIONS_META_KEYS = {"attenuation_correction": "attenuation", "scatter": "scatter",
                         "decay_corrected_to": "decay_reference", "psf": "psf", "penetration": "penetration"}


def _check_keys(where: str, d, allowed) -> dict:
    if not isinstance(d, dict):
        raise DataError(f"{where} = {d!r:.60} must be an object with keys {sorted(allowed)}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise DataError(f"{where} has unknown key(s) {unknown}; allowed {sorted(allowed)}")
    return d


@dataclass(frozen=True)
class Acquisition:
    """Patient, injection and timing of one SPECT acquisition; every field may be unknown (``None``).

    Attributes
    ----------
    injected_mbq : float or None
        Injected activity at injection time (MBq), in (0, 1e6].
    injection_time : str or None
        Radiopharmaceutical start date-time, ISO 8601 (``"2024-01-01T08:00:00"``).
    scan_start_s : float or None
        Time from injection to the start of the scan (s), in [0, 864000].
    time_per_view_s : float or None
        Acquisition time per projection view (s), in (0, 3600].
    weight_kg : float or None
        Body weight (kg), in (0, 1000].
    height_cm : float or None
        Body height (cm), in [30, 260].
    sex : str or None
        ``"F"``, ``"M"`` or ``"O"`` (``female``/``male``/``other`` are accepted and stored as the letter).
    """

    injected_mbq: float | None = None
    injection_time: str | None = None
    scan_start_s: float | None = None
    time_per_view_s: float | None = None
    weight_kg: float | None = None
    height_cm: float | None = None
    sex: str | None = None

    def __post_init__(self):
        for name, lo, hi, lo_open in _ACQ_RANGES:
            v = getattr(self, name)
            if v is not None:
                if isinstance(v, bool):
                    raise DataError(f"Acquisition.{name} = {v!r} is not a number; allowed range "
                                    f"{'(' if lo_open else '['}{lo:g}, {hi:g}]")
                object.__setattr__(self, name, check_range(f"Acquisition.{name}", v, lo, hi, lo_open=lo_open,
                                                           error=DataError))
        if self.sex is not None:
            s = _SEX_ALIASES.get(self.sex.strip().lower()) if isinstance(self.sex, str) else None
            if s is None:
                raise DataError(f"Acquisition.sex = {self.sex!r} is not allowed; choose one of "
                                f"{list(SEXES)} (or female/male/other)")
            object.__setattr__(self, "sex", s)
        if self.injection_time is not None:
            if not isinstance(self.injection_time, str):
                raise DataError(f"Acquisition.injection_time = {self.injection_time!r:.60} must be an ISO 8601 "
                                "date-time string such as '2024-01-01T08:00:00'")
            try:
                _dt.datetime.fromisoformat(self.injection_time)
            except ValueError:
                raise DataError(f"Acquisition.injection_time = {self.injection_time!r:.60} is not an ISO 8601 "
                                "date-time such as '2024-01-01T08:00:00'") from None

    @property
    def injection_datetime(self) -> _dt.datetime | None:
        """``injection_time`` as a naive :class:`datetime.datetime` (time zone dropped), or None."""
        if self.injection_time is None:
            return None
        return _dt.datetime.fromisoformat(self.injection_time).replace(tzinfo=None)

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field (None for unknown)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "acquisition") -> "Acquisition":
        """Inverse of :meth:`to_dict`; missing keys are unknown (None), unknown keys are refused."""
        _check_keys(where, d, [f.name for f in fields(cls)])
        return cls(**d)

    @classmethod
    def from_meta(cls, meta: dict | None) -> "Acquisition | None":
        """The acquisition recorded in an untyped ``meta`` dict (keys :data:`ACQUISITION_META_KEYS`), or None
        when it holds none of them. ``None`` values count as unknown."""
        got = {k: meta[k] for k in ACQUISITION_META_KEYS if meta and meta.get(k) is not None}
        return cls(**got) if got else None

    def filled_from(self, other: "Acquisition | None") -> "Acquisition":
        """This acquisition with its unknown (None) fields taken from ``other``."""
        if other is None:
            return self
        return Acquisition(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                              else getattr(other, f.name) for f in fields(self)})

    def to_meta(self) -> dict:
        """The known fields under their ``meta`` keys (for code that still reads the untyped dict)."""
        return {k: v for k, v in self.to_dict().items() if v is not None}


#: Scatter estimates of a reconstruction's additive term (``reconstruct(scatter=...)``): none, window-based
#: (DEW, TEW) or Monte Carlo. The one list of the recon (re-exported as ``her2sim.recon.SCATTER_METHODS``, which
#: the study config takes) and of :class:`Corrections`; it lives here, like
#: :data:`her2sim.core.radionuclide.DECAY_REFERENCES`, because core does not import recon.
SCATTER_METHODS = ("none", "dew", "tew", "mc")
#: :attr:`Corrections.scatter` values: a scatter method, or ``"array"`` (an estimate the caller passed in)
CORRECTION_SCATTER = SCATTER_METHODS + ("array",)


@dataclass(frozen=True)
class Corrections:
    """What a reconstruction corrected for (the defaults: nothing).

    Attributes
    ----------
    attenuation : bool
        Attenuation modelled in the system matrix (a mu map was used).
    scatter : str
        The additive scatter term: one of :data:`SCATTER_METHODS` (``"none"``, ``"dew"``, ``"tew"``,
        ``"mc"``) or ``"array"`` (an estimate passed in by the caller).
    decay_reference : str
        Time the voxels are decay-corrected to, one of :data:`her2sim.core.radionuclide.DECAY_REFERENCES`;
        ``"acquisition_mean"`` means no decay correction (also that of an uncalibrated image in counts).
    psf : bool
        Depth-dependent collimator-detector response modelled (resolution recovery).
    penetration : bool
        Septal-penetration tail modelled (needs ``psf``).
    """

    attenuation: bool = False
    scatter: str = "none"
    decay_reference: str = "acquisition_mean"
    psf: bool = False
    penetration: bool = False

    def __post_init__(self):
        for name in ("attenuation", "psf", "penetration"):
            v = getattr(self, name)
            if type(v).__name__ == "bool_":  # numpy bool
                v = bool(v)
                object.__setattr__(self, name, v)
            if not isinstance(v, bool):
                raise DataError(f"Corrections.{name} = {v!r:.60} must be true or false")
        if not isinstance(self.scatter, str) or self.scatter not in CORRECTION_SCATTER:
            raise DataError(f"Corrections.scatter = {self.scatter!r:.60} is not allowed; choose one of "
                            f"{list(CORRECTION_SCATTER)}")
        if not isinstance(self.decay_reference, str) or self.decay_reference not in DECAY_REFERENCES:
            raise DataError(f"Corrections.decay_reference = {self.decay_reference!r:.60} is not allowed; choose one "
                            f"of {list(DECAY_REFERENCES)}")
        if self.penetration and not self.psf:
            raise DataError("Corrections.penetration = True needs psf = True (the tail is part of the collimator "
                            "response)")

    @property
    def decay_corrected(self) -> bool:
        """True when the voxels are decay-corrected to a time point (injection or scan start)."""
        return self.decay_reference != "acquisition_mean"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "corrections") -> "Corrections":
        """Inverse of :meth:`to_dict`; missing keys take the defaults (not corrected), unknown keys are refused."""
        _check_keys(where, d, [f.name for f in fields(cls)])
        return cls(**d)

    @classmethod
    def from_meta(cls, meta: dict | None) -> "Corrections | None":
        """The corrections a reconstruction recorded in its untyped ``meta`` before schema version 2
        (``attenuation_correction``, ``scatter``, ``decay_corrected_to``, ``psf``, ``penetration``), or None
        when ``meta`` holds none of them. An absent key means "not done", as the readers of these keys
        (DICOM CorrectedImage) took it; an absent ``decay_corrected_to`` means no decay correction."""
        if not meta or not any(meta.get(k) is not None for k in CORRECTIONS_META_KEYS):
            return None
        got = {field: meta[key] for key, field in CORRECTIONS_META_KEYS.items() if meta.get(key) is not None}
        return cls(**got)

    def to_meta(self) -> dict:
        """The corrections under the recon's ``meta`` keys (:data:`CORRECTIONS_META_KEYS`)."""
        return {key: getattr(self, field) for key, field in CORRECTIONS_META_KEYS.items()}


__all__ = ["Acquisition", "Corrections", "SEXES", "SCATTER_METHODS", "CORRECTION_SCATTER", "ACQUISITION_META_KEYS", "CORRECTIONS_META_KEYS"]
