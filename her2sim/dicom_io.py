"""DICOM export and import of projections, reconstructions and CT (pydicom 3).

Export
------
* :func:`export_projections`: a :class:`~her2sim.core.containers.Projections` as one
  NM Image Storage file (SOP class 1.2.840.10008.5.1.4.1.1.20, ImageType
  ``ORIGINAL\\PRIMARY\\TOMO\\EMISSION``), multi-frame with Frame Increment Pointer
  ``EnergyWindowVector\\DetectorVector\\RotationVector\\AngularViewVector``
  (the layout of GE NM670 tomographic acquisitions), the Energy Window, Detector
  and Rotation Information Sequences, AngularStep and per-frame RadialPosition.
* :func:`export_image`: a reconstruction (Bq/mL) as NM multi-frame
  (``DERIVED\\PRIMARY\\RECON TOMO\\EMISSION``, frames = axial slices, Units (0054,1001)
  ``BQML``, 16-bit data with Rescale Slope/Intercept) with the Radiopharmaceutical
  Information Sequence (99mTc, injected activity, injection time, half-life
  21624 s), or a CT (HU) as a CT Image Storage series (one file per slice).
* Series of one study share a :class:`DicomStudy` (StudyInstanceUID,
  FrameOfReferenceUID, dates and the injection time).

Geometry (``her2sim.core.grid``): world = patient LPS mm, ImageOrientationPatient
``1\\0\\0\\0\\1\\0`` (rows along +x, columns along +y), frame/slice k at
``z = origin_z + k dz``; ImagePositionPatient is the centre of the first voxel
(Grid.origin_mm). PixelSpacing = (dy, dx), SliceThickness = SpacingBetweenSlices = dz.

Projection geometry (NM TOMO, PS3.3 C.8.4.11 NM Detector and C.8.4.12 NM Tomo Acquisition)
--------------------------------------------------------------------------------------------
* Angles: DICOM Start Angle (0054,0200) is the detector position, 0 deg at the patient's back,
  increasing counter-clockwise viewed from the patient's feet (from the back toward the
  patient's left); Rotation Direction CW = decreasing angle, CC = increasing; Angular Step
  > 0. The detector's outward normal is ``(x, y) = (sin phi, cos phi)`` in LPS. her2sim's view
  angle ``theta`` (0 = anterior, 90 = patient left, ``projection_geometry``) has the normal
  ``(sin theta, -cos theta)``, so ``phi = (180 - theta) mod 360`` and an orbit of increasing
  ``theta`` is ``CW``. A dual-head (H-mode) orbit from theta 0 therefore writes detector 1 at
  180 deg (anterior) and detector 2 at 0 deg (posterior), stepping CW.
* Frames: rows run from superior to inferior (row 0 = highest z), frame = ``counts[w, view, ::-1, :]``;
  columns follow ``u`` (``t(theta)``). Each DetectorInformationSequence item holds the
  ImageOrientationPatient of its first frame (rows along ``t``, columns ``0\\0\\-1``).
* Position (vendor practice: the GE NM670 convention PyTomography's reader is written for;
  PS3.3 leaves the position of a projection frame open): the
  detector ImagePositionPatient is ``(x_axis, 0, z of the top row centre)`` and the
  RotationInformationSequence carries TableHeight (0018,1130) = ``-y_axis`` (mm): the
  rotation axis is the line ``(x, y) = (IPP x, -TableHeight)`` of the shared frame of
  reference, i.e. the CT's. The transaxial reconstruction volume of ``nu x nu`` pixels is
  centred on it (``recon.grid_for_geometry``).
* Counts: NM pixel data hold counts (16-bit, no Rescale Slope, which the NM IOD does not
  define). Non-integer (noise-free expected) projections are refused unless
  ``non_integer="round"``, which stores them rounded to whole counts (scale 1 count per
  count, error <= 0.5 count per pixel) and says so in ImageComments and the private block.

NM Radionuclide Total Dose is written in MBq (DICOM PS3.3 C.8.4.10.1.7); on import values
above 1e5 are taken as Bq (some vendors write Bq). The Radiopharmaceutical (injected activity,
injection time), Patient (weight, size, sex) and timing (acquisition time = injection + scan start,
ActualFrameDuration = time per view) attributes come from the typed
:class:`~her2sim.core.acquisition.Acquisition` of the container. Reconstructions carry CorrectedImage
(0028,0051) ATTN / SCAT / DECY and DecayCorrection ADMIN (to injection), START (to scan start) or NONE
from their typed :class:`~her2sim.core.acquisition.Corrections` (attenuation, scatter,
decay_reference). Containers without the typed fields (built by hand from ``meta`` only) are read
through ``Acquisition.from_meta`` / ``Corrections.from_meta`` of their meta (back-compat).

Import
------
:func:`import_projections` reads NM TOMO files such as GE NM670 acquisitions with the same
rules: per-frame detector/window/angle vectors, Start Angle per detector, Rotation
Direction and Angular Step (missing or inconsistent: a :class:`DataError` naming the tag),
the axis from the detector position as above, optional RadialPosition (missing: radius
250 mm assumed and ``meta['radius_assumed'] = True``), Rescale Slope/Intercept when present.
her2sim files written before this convention (private block without ``angle_convention``)
are read with their own angles. :func:`import_image` reads an NM (multi-frame) or CT (one
file per slice) series into an :class:`Image`. Both fill ``acquisition`` (her2sim files: the
exported one from the private block; others: from the DICOM attributes, a value outside the
Acquisition's range is left out and named in ``meta['ignored_attributes']``) and, for her2sim
files, ``corrections``; another vendor's reconstruction gets ``corrections = None`` (its PSF and
scatter method are not in the file) and ``meta['decay_corrected_to']`` from its DecayCorrection.
Malformed files raise :class:`~her2sim.core.errors.DataError` naming the file and
the problem (unreadable/truncated, missing PixelData, NumberOfFrames inconsistent
with the pixel data, unsupported orientation...).

99mTc half-life 21624 s = 6.0067 h (:data:`her2sim.core.radionuclide.TC99M`).
"""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pydicom.datadict
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from her2sim.core.acquisition import Acquisition, Corrections
from her2sim.core.atomic import atomic_path
from her2sim.core.containers import Image, Projections
from her2sim.core.errors import ConfigError, DataError, check_choice
from her2sim.core.grid import Grid
from her2sim.core.jsonio import to_json
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry
from her2sim.core.radionuclide import TC99M

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Frame Increment Pointer of a tomographic acquisition: (window, detector, rotation, angular view).
TOMO_FRAME_POINTERS = (0x00540010, 0x00540020, 0x00540050, 0x00540090)
SLICE_VECTOR = 0x00540080
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "HER2SIM 1"
DEFAULT_RADIUS_MM = 250.0
#: 99mTc code (SNOMED CT, DICOM CID 18 "Isotopes in Radiopharmaceuticals"; replaces the retired SRT C-163A8).
TC99M_CODE = ("72454006", "SCT", "^99m^Technetium")
#: Private-block marker of files whose angles follow the DICOM convention (her2sim exports before it wrote
#: her2sim's own angles; such files are still read correctly).
ANGLE_CONVENTION = "dicom-ps3.3"
#: Largest count an NM pixel holds (16-bit unsigned, PS3.3 C.8.4.9: Bits Allocated 8 or 16).
MAX_NM_COUNT = 65535
NON_INTEGER_CHOICES = ("refuse", "round")
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.1"
_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def dicom_angle_deg(her2sim_angle_deg):
    """DICOM Start Angle convention (0 = detector at the patient's back, + toward the patient's left) of a
    her2sim view angle (0 = anterior, 90 = patient left); degrees in [0, 360). The map is its own inverse."""
    return (180.0 - np.asarray(her2sim_angle_deg, dtype=np.float64)) % 360.0


her2sim_angle_deg = dicom_angle_deg


# ---------------------------------------------------------------------------- study context
@dataclass(frozen=True)
class DicomPatient:
    """Patient attributes written to every series (anonymous defaults).

    Attributes
    ----------
    name, patient_id : str
    sex : str
        ``F``, ``M`` or ``O``.
    weight_kg : float or None
        PatientWeight (kg).
    height_cm : float or None
        Written as PatientSize in m.
    """

    name: str = "HER2SIM^VIRTUAL"
    patient_id: str = "HER2SIM-0001"
    sex: str = "F"
    weight_kg: float | None = None
    height_cm: float | None = None


@dataclass(frozen=True)
class DicomStudy:
    """UIDs and times shared by all series of one study.

    Attributes
    ----------
    study_uid, frame_of_reference_uid : str
    injection_time : datetime.datetime
        Radiopharmaceutical start time; acquisition times are this plus ``scan_start_s``.
    study_id : str
    accession_number : str
    """

    study_uid: str
    frame_of_reference_uid: str
    injection_time: _dt.datetime = _dt.datetime(2024, 1, 1, 8, 0, 0)
    study_id: str = "1"
    accession_number: str = ""

    @classmethod
    def new(cls, seed=None, injection_time: _dt.datetime | None = None) -> "DicomStudy":
        """Fresh UIDs; with ``seed`` the UIDs are reproducible (same seed -> same UIDs)."""
        if seed is None:
            su, fu = generate_uid(), generate_uid()
        else:
            su = generate_uid(entropy_srcs=["her2sim-study", str(seed)])
            fu = generate_uid(entropy_srcs=["her2sim-frame-of-reference", str(seed)])
        return cls(su, fu, injection_time or _dt.datetime(2024, 1, 1, 8, 0, 0))


def _uid(seed_parts) -> str:
    return generate_uid() if seed_parts is None else generate_uid(entropy_srcs=[str(p) for p in seed_parts])


def _ds(value: float) -> DSfloat:
    """A DS value of at most 16 characters."""
    return DSfloat(float(value), auto_format=True)


def _da(t: _dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: _dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")[:13]


def _base(sop_class: str, modality: str, patient: DicomPatient, study: DicomStudy, series_uid: str,
          series_number: int, instance_number: int, description: str, acq_time: _dt.datetime,
          sop_uid: str) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "HER2SIM_010"
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = _da(study.injection_time)
    ds.StudyTime = _tm(study.injection_time)
    ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _da(acq_time)
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _tm(acq_time)
    ds.AccessionNumber = study.accession_number
    ds.Modality = modality
    ds.Manufacturer = "her2sim"
    ds.ManufacturerModelName = "NM670-like simulation"
    ds.InstitutionName = "in silico"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "her2sim HER2 SPECT/CT"
    ds.SeriesDescription = description
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = check_choice("patient.sex", patient.sex, ("F", "M", "O"))
    if patient.weight_kg is not None:
        ds.PatientWeight = _ds(patient.weight_kg)
    if patient.height_cm is not None:
        ds.PatientSize = _ds(patient.height_cm / 100.0)
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = int(instance_number)
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    if modality == "CT":
        ds.PatientPosition = "HFS"  # NM uses PatientOrientationCodeSequence instead (PS3.3 C.7.3.1)
    ds.BodyPartExamined = "CHEST"
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray, signed: bool = False) -> None:
    """Uncompressed 16-bit monochrome pixel data; ``stored`` is (frames, rows, cols) or (rows, cols)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.PixelData = np.ascontiguousarray(stored.astype("<i2" if signed else "<u2")).tobytes()


def _quantise(values: np.ndarray, signed: bool = False, round_to_integer: bool = False
              ) -> tuple[np.ndarray, float, float]:
    """Integer pixel values and (slope, intercept) with ``values ~= stored * slope + intercept``.

    Integer-valued data that fit are stored exactly (slope 1, intercept 0), as are data
    rounded to integers with ``round_to_integer`` (CT: 1 HU steps); otherwise the range is
    mapped onto the full 16-bit range (quantisation error <= slope / 2).
    """
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise DataError("pixel values must be finite to be written as DICOM")
    lo_int, hi_int = (-32768, 32767) if signed else (0, 65535)
    vmin, vmax = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
    if round_to_integer and vmin >= lo_int and vmax <= hi_int:
        v = np.round(v)
    if v.size and np.all(v == np.round(v)) and vmin >= lo_int and vmax <= hi_int:
        return v.astype(np.int32), 1.0, 0.0
    intercept = 0.0 if (vmin >= 0 or signed) else vmin
    span = max(abs(vmax - intercept), abs(vmin - intercept)) if signed else vmax - intercept
    slope = float(_ds(span / hi_int)) if span > 0 else 1.0
    intercept = float(_ds(intercept))
    stored = np.clip(np.round((v - intercept) / slope), lo_int, hi_int).astype(np.int32)
    return stored, slope, intercept


def _code_item(value, scheme, meaning) -> Dataset:
    it = Dataset()
    it.CodeValue, it.CodingSchemeDesignator, it.CodeMeaning = value, scheme, meaning
    return it


def _radiopharmaceutical(injected_mbq: float | None, study: DicomStudy) -> Sequence:
    it = Dataset()
    it.Radiopharmaceutical = "99mTc-NM-02"
    it.RadiopharmaceuticalRoute = "Intravenous"
    it.RadiopharmaceuticalStartTime = _tm(study.injection_time)
    it.RadiopharmaceuticalStartDateTime = study.injection_time.strftime("%Y%m%d%H%M%S.%f")
    if injected_mbq is not None:
        it.RadionuclideTotalDose = _ds(injected_mbq)  # MBq in the NM Isotope module (PS3.3 C.8.4.10.1.7)
    it.RadionuclideHalfLife = _ds(TC99M.half_life_s)
    it.RadionuclidePositronFraction = _ds(0.0)
    it.RadionuclideCodeSequence = Sequence([_code_item(*TC99M_CODE)])
    return Sequence([it])


def _window_sequence(windows) -> Sequence:
    items = []
    for w in windows:
        rng = Dataset()
        rng.EnergyWindowLowerLimit = _ds(w.lower_kev)
        rng.EnergyWindowUpperLimit = _ds(w.upper_kev)
        it = Dataset()
        it.EnergyWindowRangeSequence = Sequence([rng])
        it.EnergyWindowName = str(w.name)[:16]
        items.append(it)
    return Sequence(items)


def _nm_common(ds: Dataset, windows, injected_mbq, study: DicomStudy) -> None:
    ds.PatientOrientationCodeSequence = Sequence()
    ds.PatientGantryRelationshipCodeSequence = Sequence()
    ds.AcquisitionContextSequence = Sequence()
    ds.EnergyWindowInformationSequence = _window_sequence(windows)
    ds.RadiopharmaceuticalInformationSequence = _radiopharmaceutical(injected_mbq, study)
    ds.NumberOfEnergyWindows = len(windows)
    ds.CountsAccumulated = None
    ds.LossyImageCompression = "00"


def _private_json(ds: Dataset, payload: dict) -> None:
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "UT", to_json(payload))


def _read_private_json(ds: Dataset) -> dict:
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
        return json.loads(block[0x01].value)
    except (KeyError, ValueError, TypeError):
        return {}


def _save(ds: FileDataset, path: Path) -> Path:
    """Write ``ds`` atomically (:func:`her2sim.core.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------- export
def _acquisition_of(obj) -> Acquisition:
    """The typed acquisition of a container; one built from ``meta`` only is read from it (back-compat)."""
    if obj.acquisition is not None:
        return obj.acquisition
    return Acquisition.from_meta(obj.meta) or Acquisition()


def _corrections_of(img: Image) -> Corrections | None:
    """The typed corrections of an image; one built from ``meta`` only is read from it (back-compat)."""
    return img.corrections if img.corrections is not None else Corrections.from_meta(img.meta)


def _acq_time(study: DicomStudy, acq: Acquisition) -> _dt.datetime:
    return study.injection_time + _dt.timedelta(seconds=acq.scan_start_s or 0.0)


def _patient_for(patient: DicomPatient | None, acq: Acquisition) -> DicomPatient:
    """``patient`` with its unknown weight/height taken from the acquisition; none given: the acquisition's
    weight, height and sex (``F`` when unknown, the anonymous default)."""
    if patient is None:
        return DicomPatient(sex=acq.sex or "F", weight_kg=acq.weight_kg, height_cm=acq.height_cm)
    return DicomPatient(patient.name, patient.patient_id, patient.sex,
                        acq.weight_kg if patient.weight_kg is None else patient.weight_kg,
                        acq.height_cm if patient.height_cm is None else patient.height_cm)


def _typed_payload(obj) -> dict:
    """Private-block copies of the typed fields (read back exactly by the importers)."""
    return {"acquisition": None if obj.acquisition is None else obj.acquisition.to_dict(),
            "corrections": None if obj.corrections is None else obj.corrections.to_dict()}


def export_projections(p: Projections, out_dir, patient: DicomPatient | None = None,
                       study: DicomStudy | None = None, series_number: int = 1,
                       filename: str = "projections.dcm", uid_seed=None, non_integer: str = "refuse") -> Path:
    """Write projections as one NM TOMO multi-frame file; returns its path.

    Parameters
    ----------
    p : Projections
        (window, view, v, u) counts; views are grouped per detector head
        (``geometry.heads``), each head's angles must be equally stepped.
    out_dir : path-like
    patient : DicomPatient
    study : DicomStudy
        Shared UIDs (``DicomStudy.new()`` when omitted).
    series_number : int
    filename : str
    uid_seed : any
        Makes the series and instance UIDs reproducible.
    non_integer : {"refuse", "round"}
        What to do with non-integer counts (noise-free expected projections): ``"refuse"``
        raises :class:`DataError`; ``"round"`` stores them rounded to whole counts (1 stored
        unit = 1 count, |error| <= 0.5 count per pixel) and records it in ImageComments.

    Notes
    -----
    NM pixel data hold counts in 16 bits without Rescale Slope/Intercept (outside the NM
    IOD; readers ignore them): counts must be >= 0 and <= 65535. Geometry: module docstring.
    ``p.acquisition`` used: ``time_per_view_s`` (s; unknown: 20 s), ``injected_mbq``, ``scan_start_s`` (s),
    ``injection_time`` (when ``study`` is not given), weight, height and sex (those ``patient`` leaves unknown).
    """
    check_choice("non_integer", non_integer, NON_INTEGER_CHOICES)
    acquisition = _acquisition_of(p)
    patient = _patient_for(patient, acquisition)
    study = study or DicomStudy.new(injection_time=acquisition.injection_datetime)
    g = p.geometry
    counts = np.asarray(p.counts, dtype=np.float64)
    if not np.all(np.isfinite(counts)):
        raise DataError("projections: counts must be finite to be written as DICOM")
    if counts.size and counts.min() < 0:
        raise DataError(f"projections: counts must be >= 0 (min {counts.min():g}); NM pixel data hold counts")
    rounded = np.round(counts)
    is_integer = bool(np.all(rounded == counts))
    if not is_integer and non_integer == "refuse":
        raise DataError("projections: non-integer counts (noise-free expected projections?) cannot be NM pixel data, "
                        "which hold counts without Rescale Slope; pass non_integer='round' to store whole counts "
                        "(|error| <= 0.5 count) or export a Poisson realisation")
    if counts.size and rounded.max() > MAX_NM_COUNT:
        raise DataError(f"projections: a pixel holds {rounded.max():.0f} counts > {MAX_NM_COUNT}, the most a 16-bit "
                        f"NM pixel holds (PS3.3 C.8.4.9); shorten time_per_view_s or split the acquisition")
    n_win = counts.shape[0]
    heads = np.asarray(g.heads, dtype=int)
    det_ids = sorted(set(heads.tolist()))
    per_det = [np.flatnonzero(heads == d) for d in det_ids]
    n_rot_frames = len(per_det[0])
    if any(len(v) != n_rot_frames for v in per_det):
        raise DataError(f"projection geometry: heads acquire {[len(v) for v in per_det]} views; DICOM NM TOMO "
                        f"needs the same number of views per detector")
    steps, starts, directions = [], [], []
    for d, views in zip(det_ids, per_det):
        phi = dicom_angle_deg(g.angles_deg[views])
        diffs = (np.diff(phi) + 180.0) % 360.0 - 180.0 if len(phi) > 1 else np.array([0.0])
        step = float(np.mean(diffs)) if len(phi) > 1 else 0.0
        if len(phi) > 1 and np.max(np.abs(diffs - step)) > 1e-3:
            raise DataError(f"projection geometry: head {d} angles {g.angles_deg[views][:4].tolist()}... are not "
                            f"equally stepped; DICOM NM TOMO stores start angle + angular step")
        steps.append(abs(step))
        starts.append(float(phi[0]))
        directions.append("CW" if step < 0 else "CC")  # CW = decreasing DICOM angle (PS3.3 C.8.4.12)
    if len(set(directions)) > 1 or (len(steps) > 1 and max(steps) - min(steps) > 1e-3):
        raise DataError(f"projection geometry: detectors rotate differently (steps {steps}, {directions})")

    meta = dict(p.meta)
    acq = _acq_time(study, acquisition)
    frame_ms = int(round((acquisition.time_per_view_s or 20.0) * 1000.0))
    series_uid = _uid(None if uid_seed is None else ["proj-series", uid_seed])
    sop_uid = _uid(None if uid_seed is None else ["proj-sop", uid_seed])
    ds = _base(NM_IMAGE_STORAGE, "NM", patient, study, series_uid, series_number, 1, "SPECT projections",
               acq, sop_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    _nm_common(ds, p.windows, acquisition.injected_mbq, study)

    frames, ew, dv, rv, av = [], [], [], [], []
    for w in range(n_win):
        for di, views in enumerate(per_det):
            for k, view in enumerate(views):
                frames.append(rounded[w, view, ::-1, :])
                ew.append(w + 1)
                dv.append(di + 1)
                rv.append(1)
                av.append(k + 1)
    _set_pixels(ds, np.stack(frames).astype(np.int32))
    ds.NumberOfFrames = len(frames)
    ds.FrameIncrementPointer = list(TOMO_FRAME_POINTERS)
    ds.EnergyWindowVector = ew
    ds.DetectorVector = dv
    ds.NumberOfDetectors = len(per_det)
    ds.RotationVector = rv
    ds.NumberOfRotations = 1
    ds.AngularViewVector = av
    ds.PixelSpacing = [_ds(g.pixel_mm[0]), _ds(g.pixel_mm[1])]
    ds.CountsAccumulated = int(rounded.sum())
    ds.CorrectedImage = []
    if not is_integer:
        ds.ImageComments = ("noise-free expected counts rounded to whole counts (1 stored unit = 1 count, "
                            "|error| <= 0.5 count per pixel)")

    ax, ay = (float(v) for v in g.axis_xy_mm)
    top_z = g.axis_z_mm + 0.5 * (g.shape_vu[0] - 1) * g.pixel_mm[0]
    detectors = []
    for di, views in enumerate(per_det):
        it = Dataset()
        it.CollimatorGridName = "LEHR"
        it.CollimatorType = "PARA"
        it.FocalDistance = [0]
        it.XFocusCenter = [0]
        it.YFocusCenter = [0]
        it.FieldOfViewShape = "RECTANGLE"
        it.FieldOfViewDimensions = [int(round(g.shape_vu[1] * g.pixel_mm[1])),
                                    int(round(g.shape_vu[0] * g.pixel_mm[0]))]
        it.ZoomFactor = [_ds(1.0), _ds(1.0)]
        it.CenterOfRotationOffset = _ds(0.0)
        it.StartAngle = _ds(starts[di])
        it.RadialPosition = [_ds(r) for r in g.radii_mm[views]]
        # first frame of this detector: rows along u = t(theta) = (cos theta, sin theta, 0), columns to inferior
        t = np.deg2rad(g.angles_deg[views[0]])
        it.ImageOrientationPatient = [_ds(round(v, 10) + 0.0) for v in (np.cos(t), np.sin(t), 0.0, 0.0, 0.0, -1.0)]
        # vendor (GE NM670) position: x of the rotation axis, y = 0 (axis at y = -TableHeight), z of the top row
        it.ImagePositionPatient = [_ds(ax), _ds(0.0), _ds(top_z)]
        detectors.append(it)
    ds.DetectorInformationSequence = Sequence(detectors)

    rot = Dataset()
    rot.StartAngle = _ds(starts[0])
    rot.AngularStep = _ds(steps[0])
    rot.RotationDirection = directions[0]
    rot.ScanArc = _ds(steps[0] * n_rot_frames)
    rot.ActualFrameDuration = frame_ms
    rot.NumberOfFramesInRotation = n_rot_frames
    rot.TableTraverse = _ds(0.0)
    rot.TableHeight = _ds(-ay + 0.0)
    ds.RotationInformationSequence = Sequence([rot])
    ds.TypeOfDetectorMotion = "STEP AND SHOOT"

    _private_json(ds, {"axis_xy_mm": list(g.axis_xy_mm), "axis_z_mm": g.axis_z_mm,
                       "is_expected": bool(p.is_expected), "meta": meta, "angle_convention": ANGLE_CONVENTION,
                       "rounded_to_counts": not is_integer,
                       "view_order": [int(v) for views in per_det for v in views], **_typed_payload(p)})
    return _save(ds, Path(out_dir) / filename)


#: DecayCorrection (0054,1102) of each decay reference (:data:`her2sim.core.radionuclide.DECAY_REFERENCES`).
DECAY_CORRECTION_CODES = {"injection": "ADMIN", "scan_start": "START", "acquisition_mean": "NONE"}
_DECAY_FROM_CODE = {v: k for k, v in DECAY_CORRECTION_CODES.items()}


def _as_corrections(corrections) -> Corrections | None:
    if corrections is None or isinstance(corrections, Corrections):
        return corrections
    if isinstance(corrections, dict):  # a recon's meta (back-compat)
        return Corrections.from_meta(corrections)
    raise DataError(f"corrections must be a her2sim Corrections or None, got {type(corrections).__name__}")


def decay_correction_code(corrections) -> str:
    """DecayCorrection (0054,1102) for a recon's :class:`Corrections` ``decay_reference``.

    ``injection`` -> ``ADMIN`` (activity at the radiopharmaceutical start time), ``scan_start`` ->
    ``START``, ``acquisition_mean`` or no corrections (None) -> ``NONE``. A recon ``meta`` dict is
    accepted too (read by :meth:`Corrections.from_meta`).
    """
    c = _as_corrections(corrections)
    return "NONE" if c is None else DECAY_CORRECTION_CODES[c.decay_reference]


def corrected_image_codes(corrections) -> list:
    """CorrectedImage (0028,0051) values of a reconstruction from its :class:`Corrections`.

    ``ATTN`` if ``attenuation``; ``SCAT`` if ``scatter`` is a scatter model (``dew``, ``tew``, ``mc``
    or a given ``array``, not ``none``); ``DECY`` if the image is decay corrected (``decay_reference``
    ``injection`` or ``scan_start``: DecayCorrection ``ADMIN`` or ``START``). None: ``[]``. A recon
    ``meta`` dict is accepted too (read by :meth:`Corrections.from_meta`).
    """
    c = _as_corrections(corrections)
    if c is None:
        return []
    codes = []
    if c.attenuation:
        codes.append("ATTN")
    if c.scatter != "none":
        codes.append("SCAT")
    if c.decay_corrected:
        codes.append("DECY")
    return codes


def export_image(img: Image, out_dir, modality: str = "NM", patient: DicomPatient | None = None,
                 study: DicomStudy | None = None, series_number: int = 2, description: str | None = None,
                 filename: str = "recon.dcm", uid_seed=None, kvp: float = 120.0) -> list[Path]:
    """Write a reconstruction (``modality='NM'``) or a CT (``modality='CT'``); returns the written files.

    Parameters
    ----------
    img : Image
        ``units`` 'Bq/mL' or 'counts' for NM, 'HU' for CT; (z, y, x) on its Grid.
    out_dir : path-like
        NM: one multi-frame file ``filename``; CT: ``ct_0001.dcm`` ... one per slice.
    modality : str
        ``'NM'`` or ``'CT'``.
    patient, study : DicomPatient, DicomStudy
        ``study`` must be shared with the projections for one StudyInstanceUID/FrameOfReferenceUID.
    kvp : float
        CT tube voltage written to KVP (kV).

    Notes
    -----
    ``img.acquisition`` used: ``injected_mbq`` (MBq), ``scan_start_s`` (s), ``injection_time`` (when
    ``study`` is not given), weight, height and sex (those ``patient`` leaves unknown);
    ``img.corrections`` gives CorrectedImage and DecayCorrection (:func:`corrected_image_codes`,
    :func:`decay_correction_code`).
    """
    check_choice("modality", modality, ("NM", "CT"))
    acquisition = _acquisition_of(img)
    patient = _patient_for(patient, acquisition)
    study = study or DicomStudy.new(injection_time=acquisition.injection_datetime)
    g = img.grid
    arr = np.asarray(img.array, dtype=np.float64)
    acq = _acq_time(study, acquisition)
    series_uid = _uid(None if uid_seed is None else [modality, "series", uid_seed])
    out_dir = Path(out_dir)
    ipp0 = (g.origin_mm[2], g.origin_mm[1], g.origin_mm[0])
    if modality == "CT":
        if img.units != "HU":
            raise ConfigError(f"export_image: modality = 'CT' needs an image in HU, got units = {img.units!r}")
        stored, slope, intercept = _quantise(arr, signed=True, round_to_integer=True)
        paths = []
        for k in range(g.shape[0]):
            sop = _uid(None if uid_seed is None else ["CT", "sop", uid_seed, k])
            ds = _base(CT_IMAGE_STORAGE, "CT", patient, study, series_uid, series_number, k + 1,
                       description or "CT", acq, sop)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            z = ipp0[2] + k * g.spacing_mm[0]
            ds.ImagePositionPatient = [_ds(ipp0[0]), _ds(ipp0[1]), _ds(z)]
            ds.ImageOrientationPatient = [_ds(v) for v in _AXIAL]
            ds.PixelSpacing = [_ds(g.spacing_mm[1]), _ds(g.spacing_mm[2])]
            ds.SliceThickness = _ds(g.spacing_mm[0])
            ds.SpacingBetweenSlices = _ds(g.spacing_mm[0])
            ds.SliceLocation = _ds(z)
            ds.PatientOrientation = ""
            ds.KVP = _ds(kvp)
            ds.AcquisitionNumber = 1
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = _ds(slope)
            ds.RescaleType = "HU"
            _set_pixels(ds, stored[k], signed=True)
            paths.append(_save(ds, out_dir / f"ct_{k + 1:04d}.dcm"))
        return paths

    units = {"Bq/mL": "BQML", "counts": "CNTS"}.get(img.units)
    if units is None:
        raise ConfigError(f"export_image: modality = 'NM' needs units 'Bq/mL' or 'counts', got {img.units!r}")
    sop = _uid(None if uid_seed is None else ["NM", "sop", uid_seed])
    ds = _base(NM_IMAGE_STORAGE, "NM", patient, study, series_uid, series_number, 1,
               description or "SPECT reconstruction", acq, sop)
    ds.ImageType = ["DERIVED", "PRIMARY", "RECON TOMO", "EMISSION"]
    windows = img.meta.get("windows") or [{"name": "photopeak", "lower_kev": 126.45, "upper_kev": 154.55}]
    _nm_common(ds, [EnergyWindow(**w) for w in windows][:1], acquisition.injected_mbq, study)
    stored, slope, intercept = _quantise(arr)
    _set_pixels(ds, stored)
    ds.NumberOfFrames = g.shape[0]
    ds.FrameIncrementPointer = SLICE_VECTOR
    ds.SliceVector = list(range(1, g.shape[0] + 1))
    ds.NumberOfSlices = g.shape[0]
    ds.PixelSpacing = [_ds(g.spacing_mm[1]), _ds(g.spacing_mm[2])]
    ds.SliceThickness = _ds(g.spacing_mm[0])
    ds.SpacingBetweenSlices = _ds(g.spacing_mm[0])
    ds.ImagePositionPatient = [_ds(v) for v in ipp0]
    ds.ImageOrientationPatient = [_ds(v) for v in _AXIAL]
    ds.RescaleSlope = _ds(slope)
    ds.RescaleIntercept = _ds(intercept)
    ds.Units = units
    corrections = _corrections_of(img)
    ds.DecayCorrection = decay_correction_code(corrections)
    ds.CorrectedImage = corrected_image_codes(corrections)
    det = Dataset()
    det.CollimatorGridName = "LEHR"
    det.CollimatorType = "PARA"
    det.FocalDistance = [0]
    det.XFocusCenter = [0]
    det.YFocusCenter = [0]
    det.ImageOrientationPatient = [_ds(v) for v in _AXIAL]
    det.ImagePositionPatient = [_ds(v) for v in ipp0]
    ds.DetectorInformationSequence = Sequence([det])
    ds.NumberOfDetectors = 1
    ds.RotationInformationSequence = Sequence()
    ds.NumberOfRotations = 1
    _private_json(ds, {"meta": img.meta, "units": img.units, **_typed_payload(img)})
    return [_save(ds, out_dir / filename)]


def export_study(out_dir, projections: Projections | None = None, recon: Image | None = None,
                 ct: Image | None = None, patient: DicomPatient | None = None, study: DicomStudy | None = None,
                 seed=None) -> dict:
    """Write the series of one SPECT/CT study under ``out_dir`` with shared Study/FrameOfReference UIDs.

    Folders: ``NM_projections/`` (series 1), ``NM_recon/`` (series 2), ``CT/`` (series 3, one file per
    slice). ``seed`` makes every UID reproducible. Returns ``{"projections": [...], "recon": [...], "ct": [...]}``
    with the written paths of the series given.
    """
    study = study or DicomStudy.new(seed=seed)
    out_dir = Path(out_dir)
    written = {}
    if projections is not None:
        written["projections"] = [export_projections(projections, out_dir / "NM_projections", patient, study, 1,
                                                     uid_seed=None if seed is None else [seed, "proj"])]
    if recon is not None:
        written["recon"] = export_image(recon, out_dir / "NM_recon", "NM", patient, study, 2,
                                        uid_seed=None if seed is None else [seed, "recon"])
    if ct is not None:
        written["ct"] = export_image(ct, out_dir / "CT", "CT", patient, study, 3,
                                     uid_seed=None if seed is None else [seed, "ct"])
    return written


# ---------------------------------------------------------------------------- import
def _read(path: Path) -> Dataset:
    if not path.is_file():
        raise DataError(f"{path}: DICOM file does not exist")
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on corrupt files
        raise DataError(f"{path}: not a readable DICOM file (truncated or corrupt?): {type(exc).__name__}: {exc}") \
            from None
    if "PixelData" not in ds:
        # pydicom stops silently at the end of a truncated file; an image file always ends with PixelData
        raise DataError(f"{path}: PixelData (7FE0,0010) is missing (the file of {path.stat().st_size} bytes is "
                        f"truncated or holds no image)")
    return ds


def _require(ds: Dataset, keyword: str, path: Path, where: str = ""):
    if keyword not in ds or ds[keyword].value in (None, ""):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        tag_s = "" if tag is None else f" ({tag >> 16:04X},{tag & 0xFFFF:04X})"
        raise DataError(f"{path}: required DICOM attribute {where}{keyword}{tag_s} is missing")
    return ds[keyword].value


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Stored values (frames, rows, cols) with Rescale Slope/Intercept applied (float64)."""
    if "PixelData" not in ds:
        raise DataError(f"{path}: PixelData (7FE0,0010) is missing")
    rows, cols = int(_require(ds, "Rows", path)), int(_require(ds, "Columns", path))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(_require(ds, "BitsAllocated", path))
    spp = int(ds.get("SamplesPerPixel", 1))
    if spp != 1:
        raise DataError(f"{path}: SamplesPerPixel = {spp}; only monochrome (1) images are supported")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        raw = ds.PixelData
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: PixelData cannot be read: {exc}") from None
    if ts is not None and ts.is_compressed:
        try:
            arr = np.asarray(ds.pixel_array, dtype=np.float64)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"{path}: compressed PixelData ({ts.name}) cannot be decoded: {exc}") from None
    else:
        if bits not in (8, 16, 32):
            raise DataError(f"{path}: BitsAllocated = {bits} is not supported (8, 16 or 32)")
        expected = rows * cols * frames * bits // 8
        if len(raw) < expected or len(raw) > expected + 1:
            raise DataError(f"{path}: PixelData holds {len(raw)} bytes but Rows x Columns x NumberOfFrames x "
                            f"BitsAllocated/8 = {rows} x {cols} x {frames} x {bits // 8} = {expected} bytes "
                            f"(NumberOfFrames inconsistent with the pixel data, or file truncated)")
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        dtype = np.dtype(f"{'<i' if signed else '<u'}{bits // 8}")
        big = ts is not None and not ts.is_little_endian
        arr = np.frombuffer(raw[:expected], dtype=dtype.newbyteorder(">") if big else dtype).astype(np.float64)
    arr = arr.reshape(frames, rows, cols)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return arr * slope + intercept


def _windows_from(ds: Dataset, window_ids, path: Path) -> list:
    """Energy windows for the 1-based EnergyWindowVector values ``window_ids``."""
    seq = ds.get("EnergyWindowInformationSequence", [])
    out = []
    for i in window_ids:
        name, lo, hi = f"window{i}", None, None
        if 1 <= i <= len(seq):
            it = seq[i - 1]
            name = str(it.get("EnergyWindowName", "") or name)
            rs = it.get("EnergyWindowRangeSequence", [])
            if rs:
                lo, hi = rs[0].get("EnergyWindowLowerLimit"), rs[0].get("EnergyWindowUpperLimit")
        if lo is None or hi is None:
            raise DataError(f"{path}: EnergyWindowInformationSequence item {i} gives no EnergyWindowRangeSequence "
                            f"lower/upper limits (keV)")
        out.append(EnergyWindow(name, float(lo), float(hi)))
    names = [w.name for w in out]
    if len(set(names)) != len(names):
        out = [EnergyWindow(f"{w.name}_{i}", w.lower_kev, w.upper_kev) for i, w in zip(window_ids, out)]
    return out


def _acquisition_from_tags(ds: Dataset, time_per_view_s: float | None = None) -> tuple[Acquisition, list]:
    """The :class:`Acquisition` the DICOM attributes state: RadionuclideTotalDose (MBq; > 1e5 taken as Bq),
    RadiopharmaceuticalStartDateTime (or StudyDate + RadiopharmaceuticalStartTime), the acquisition time
    minus it (scan start), PatientWeight, PatientSize (m -> cm), PatientSex and ``time_per_view_s``.
    A value outside the Acquisition's range is left out; returns the acquisition and the names left out."""
    got = {}
    seq = ds.get("RadiopharmaceuticalInformationSequence", [])
    if seq:
        it = seq[0]
        dose = it.get("RadionuclideTotalDose")
        if dose not in (None, ""):
            dose = float(dose)
            got["injected_mbq"] = dose / 1e6 if dose > 1e5 else dose
        start = it.get("RadiopharmaceuticalStartDateTime") or (
            f"{ds.get('StudyDate', '')}{it.get('RadiopharmaceuticalStartTime', '')}"
            if it.get("RadiopharmaceuticalStartTime") else None)
        acq = f"{ds.get('AcquisitionDate', '') or ds.get('SeriesDate', '')}{ds.get('AcquisitionTime', '') or ''}"
        t0, t1 = _parse_dt(start), _parse_dt(acq)
        if t0 is not None:
            got["injection_time"] = t0.isoformat()
        if t0 is not None and t1 is not None:
            got["scan_start_s"] = (t1 - t0).total_seconds()
    if ds.get("PatientWeight") not in (None, ""):
        got["weight_kg"] = float(ds.PatientWeight)
    if ds.get("PatientSize") not in (None, ""):
        got["height_cm"] = float(ds.PatientSize) * 100.0
    if ds.get("PatientSex") not in (None, ""):
        got["sex"] = str(ds.PatientSex)
    if time_per_view_s is not None:
        got["time_per_view_s"] = time_per_view_s
    kept, ignored = {}, []
    for k, v in got.items():
        try:
            Acquisition(**{k: v})
            kept[k] = v
        except DataError:
            ignored.append(k)
    return Acquisition(**kept), ignored


def _typed_from_file(ds: Dataset, private: dict, meta: dict, time_per_view_s: float | None = None) -> tuple:
    """(Acquisition, Corrections or None) of an imported file: the private block's copies (her2sim files),
    else the DICOM attributes (:func:`_acquisition_from_tags`) and no corrections. ``meta`` gets the untyped
    copies of the acquisition (for code that reads them) and ``ignored_attributes``."""
    if private.get("acquisition") is not None:
        acq = Acquisition.from_dict(private["acquisition"], where="private block 'acquisition'")
    else:
        acq, ignored = _acquisition_from_tags(ds, time_per_view_s)
        if ignored:
            meta["ignored_attributes"] = ignored
    cor = None
    if private.get("corrections") is not None:
        cor = Corrections.from_dict(private["corrections"], where="private block 'corrections'")
    meta.update({k: v for k, v in acq.to_meta().items() if k not in meta and k in _INJECTION_META_KEYS})
    return acq, cor


#: meta keys the importers filled before the typed fields (kept for the code that reads them)
_INJECTION_META_KEYS = ("injected_mbq", "scan_start_s", "weight_kg", "time_per_view_s")


def _parse_dt(text) -> _dt.datetime | None:
    if not text:
        return None
    s = str(text).split("+")[0].split("-")[0]
    for fmt in ("%Y%m%d%H%M%S.%f", "%Y%m%d%H%M%S", "%Y%m%d%H%M"):
        try:
            return _dt.datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


def _vector(ds: Dataset, keyword: str, n: int, path: Path, default=None) -> np.ndarray:
    if keyword in ds and ds[keyword].value not in (None, ""):
        v = np.atleast_1d(np.asarray(ds[keyword].value, dtype=int))
        if v.size != n:
            raise DataError(f"{path}: {keyword} has {v.size} entries but NumberOfFrames = {n}")
        return v
    if default is None:
        raise DataError(f"{path}: required DICOM attribute {keyword} is missing")
    return np.asarray(default, dtype=int)


def import_projections(path) -> Projections:
    """Read an NM TOMO file (her2sim export or a camera's, e.g. GE NM670) into :class:`Projections`.

    Views are ordered detector by detector, each in acquisition order. DICOM angles are
    ``StartAngle(detector) + s * AngularStep * (view - 1)`` with ``s = +1`` for ``CC`` and
    ``-1`` for ``CW`` (PS3.3 C.8.4.12), converted to her2sim angles by ``theta = (180 - phi) mod
    360`` (module docstring). The rotation axis comes from the first detector's
    ImagePositionPatient (vendor practice: ``y = 0`` -> axis at ``(IPP x, -TableHeight)``;
    otherwise IPP is the first voxel of the ``nu x nu`` transaxial volume centred on the axis)
    and the axial centre from its z (top row). Missing RadialPosition -> ``DEFAULT_RADIUS_MM``
    and ``meta['radius_assumed'] = True``.

    Raises
    ------
    DataError
        Missing or inconsistent geometry, naming the tag: no RotationInformationSequence,
        AngularStep, RotationDirection (CW/CC) or StartAngle; NumberOfFramesInRotation or
        DetectorVector not matching the frames; columns not along the patient axis.
    """
    path = Path(path)
    ds = _read(path)
    if str(ds.get("SOPClassUID", "")) != NM_IMAGE_STORAGE and ds.get("Modality") != "NM":
        raise DataError(f"{path}: SOPClassUID = {ds.get('SOPClassUID')!s} is not NM Image Storage "
                        f"({NM_IMAGE_STORAGE})")
    itype = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if len(itype) > 2 and itype[2] not in ("TOMO", "GATED TOMO"):
        raise DataError(f"{path}: ImageType value 3 = {itype[2]!r}; projections need 'TOMO'")
    pix = _pixels(ds, path)
    n = pix.shape[0]
    ew = _vector(ds, "EnergyWindowVector", n, path, np.ones(n))
    dv = _vector(ds, "DetectorVector", n, path, np.ones(n))
    det_seq = ds.get("DetectorInformationSequence", [])
    rot_seq = ds.get("RotationInformationSequence", [])
    if not rot_seq:
        raise DataError(f"{path}: RotationInformationSequence (0054,0052) is missing or empty; cannot place the views")
    av = _vector(ds, "AngularViewVector", n, path, _running_index(ew, dv))
    rot = rot_seq[0]
    step = float(_require(rot, "AngularStep", path, "RotationInformationSequence item 1 "))
    direction = str(rot.get("RotationDirection", "") or "").upper()
    if direction not in ("CW", "CC"):
        raise DataError(f"{path}: RotationInformationSequence item 1 RotationDirection (0018,1140) = {direction!r}; "
                        f"allowed 'CW' (decreasing angle) or 'CC' (increasing angle)")
    sign = -1.0 if direction == "CW" else 1.0
    rot_start = rot.get("StartAngle")
    windows = sorted(set(ew.tolist()))
    detectors = sorted(set(dv.tolist()))
    n_det = int(ds.get("NumberOfDetectors", 0) or 0) or len(det_seq) or len(detectors)
    if detectors[0] < 1 or detectors[-1] > n_det:
        raise DataError(f"{path}: DetectorVector (0054,0020) holds detectors {detectors}, outside 1..{n_det} "
                        f"(NumberOfDetectors / DetectorInformationSequence)")
    per_group = {}
    for key in zip(ew.tolist(), dv.tolist()):
        per_group[key] = per_group.get(key, 0) + 1
    n_per = int(rot.get("NumberOfFramesInRotation", 0) or 0) or int(np.max(av))
    if set(per_group.values()) != {n_per}:
        raise DataError(f"{path}: NumberOfFramesInRotation (0054,0053) = {n_per} but the frames hold "
                        f"{sorted(set(per_group.values()))} views per (energy window, detector)")
    private = _read_private_json(ds)
    # her2sim exports before ANGLE_CONVENTION wrote her2sim's own angles (0 = anterior, CC = increasing theta)
    legacy = bool(private) and private.get("angle_convention") != ANGLE_CONVENTION
    angles, radii, heads = [], [], []
    radius_assumed = False
    for di, d in enumerate(detectors):
        item = det_seq[d - 1] if d - 1 < len(det_seq) else Dataset()
        start = item.get("StartAngle")
        if start in (None, ""):
            if len(detectors) > 1 or rot_start in (None, ""):
                raise DataError(f"{path}: DetectorInformationSequence item {d} has no StartAngle (0054,0200)"
                                + ("" if len(detectors) > 1 else " and neither has RotationInformationSequence")
                                + "; the detector's angles are unknown")
            start = rot_start
        phi = (float(start) + sign * step * np.arange(n_per)) % 360.0
        angles.append(phi if legacy else her2sim_angle_deg(phi))
        rp = item.get("RadialPosition")
        if rp in (None, ""):
            rp = rot.get("RadialPosition")
        if rp in (None, ""):
            radius_assumed = True
            rp = [DEFAULT_RADIUS_MM] * n_per
        rp = np.atleast_1d(np.asarray(rp, dtype=float))
        if rp.size == 1:
            rp = np.full(n_per, float(rp[0]))
        if rp.size != n_per:
            raise DataError(f"{path}: RadialPosition (0018,1142) of detector {d} has {rp.size} entries, "
                            f"expected {n_per} (NumberOfFramesInRotation)")
        radii.append(rp)
        heads.append(np.full(n_per, di))
    flip_rows = _rows_run_inferior(det_seq, path)
    counts = np.zeros((len(windows), len(detectors) * n_per) + pix.shape[1:], dtype=np.float32)
    filled = np.zeros(counts.shape[:2], dtype=bool)
    for f in range(n):
        wi, di, k = windows.index(int(ew[f])), detectors.index(int(dv[f])), int(av[f]) - 1
        if not 0 <= k < n_per:
            raise DataError(f"{path}: AngularViewVector (0054,0090)[{f}] = {k + 1} outside [1, {n_per}] "
                            f"(NumberOfFramesInRotation)")
        counts[wi, di * n_per + k] = pix[f, ::-1, :] if flip_rows else pix[f]
        filled[wi, di * n_per + k] = True
    if not filled.all():
        raise DataError(f"{path}: frames do not cover every (window, detector, view): "
                        f"{int((~filled).sum())} missing (EnergyWindowVector / DetectorVector / AngularViewVector)")
    spacing = _require(ds, "PixelSpacing", path)
    angles, radii, heads = np.concatenate(angles), np.concatenate(radii), np.concatenate(heads)
    order = private.get("view_order")
    if order is not None and sorted(order) == list(range(counts.shape[1])):
        # a her2sim export: put the views back in the original (possibly interleaved) order
        inverse = np.empty(len(order), dtype=int)
        inverse[np.asarray(order)] = np.arange(len(order))
        counts, angles, radii, heads = counts[:, inverse], angles[inverse], radii[inverse], heads[inverse]
    dv_mm, du_mm = float(spacing[0]), float(spacing[1])
    axis_xy, axis_z = _axis_from_detector(det_seq, rot, counts.shape[2:], (dv_mm, du_mm), flip_rows)
    if private.get("axis_xy_mm") is not None:
        axis_xy = tuple(float(v) for v in private["axis_xy_mm"])
    if private.get("axis_z_mm") is not None:
        axis_z = float(private["axis_z_mm"])
    geometry = ProjectionGeometry(angles, radii, counts.shape[2:], (dv_mm, du_mm), axis_xy, float(axis_z), heads)
    meta = dict(private.get("meta", {}))
    frame_ms = rot.get("ActualFrameDuration") or ds.get("ActualFrameDuration")
    tpv = float(frame_ms) / 1000.0 if frame_ms not in (None, "") else None
    acquisition, corrections = _typed_from_file(ds, private, meta, tpv)
    if radius_assumed:
        meta["radius_assumed"] = True
    meta["source_file"] = str(path)
    counts = np.clip(counts, 0.0, None)
    return Projections(counts=counts, windows=tuple(_windows_from(ds, windows, path)), geometry=geometry,
                       is_expected=bool(private.get("is_expected", False)), meta=meta, acquisition=acquisition,
                       corrections=corrections)


def _rows_run_inferior(det_seq, path: Path) -> bool:
    """True when frame rows run from superior to inferior (columns ``0\\0\\-1``, also when no orientation is
    given, as vendors write), False for ``0\\0\\1``; any other column direction is an error."""
    iop = det_seq[0].get("ImageOrientationPatient") if det_seq else None
    if iop is None or len(iop) != 6:
        return True
    col = np.array([float(v) for v in iop[3:]])
    if np.allclose(col, (0.0, 0.0, -1.0), atol=1e-4):
        return True
    if np.allclose(col, (0.0, 0.0, 1.0), atol=1e-4):
        return False
    raise DataError(f"{path}: DetectorInformationSequence ImageOrientationPatient (0020,0037) column direction "
                    f"{col.tolist()}; projection columns must run along the rotation axis (0\\0\\-1 or 0\\0\\1)")


def _axis_from_detector(det_seq, rot, shape_vu, pixel_mm, rows_inferior: bool) -> tuple:
    """Rotation axis ``((x, y), z)`` in mm from the first detector's ImagePositionPatient (vendor rules).

    ``IPP y == 0`` (GE NM670): axis at ``x = IPP x``, ``y = -TableHeight`` (0 if absent); otherwise IPP
    is the first voxel of the ``nu x nu`` transaxial volume centred on the axis. z: IPP z is the
    centre of the first row, the top row when rows run inferior. No IPP: axis at the origin.
    """
    nv, nu = shape_vu
    dv, du = pixel_mm
    item = det_seq[0] if det_seq else Dataset()
    ipp = item.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        return (0.0, 0.0), 0.0
    x, y, z = (float(v) for v in ipp)
    if y == 0.0:
        th = rot.get("TableHeight")
        axis_xy = (x, -float(th) if th not in (None, "") else 0.0)
    else:
        half = 0.5 * (nu - 1) * du
        axis_xy = (x + half, y + half)
    axis_z = z - 0.5 * (nv - 1) * dv if rows_inferior else z + 0.5 * (nv - 1) * dv
    return (axis_xy[0] + 0.0, axis_xy[1] + 0.0), axis_z


def _running_index(ew, dv) -> np.ndarray:
    """1-based position of each frame within its (window, detector) group, in file order."""
    out, seen = np.zeros(len(ew), dtype=int), {}
    for i, key in enumerate(zip(ew.tolist(), dv.tolist())):
        seen[key] = seen.get(key, 0) + 1
        out[i] = seen[key]
    return out


def _check_axial(iop, path) -> None:
    if iop is None or len(iop) != 6 or not np.allclose([float(v) for v in iop], _AXIAL, atol=1e-4):
        raise DataError(f"{path}: ImageOrientationPatient = {None if iop is None else list(iop)}; only axial "
                        f"1\\0\\0\\0\\1\\0 images are supported")


def _units_of(ds: Dataset) -> str:
    if ds.get("Modality") == "CT":
        return "HU"
    u = str(ds.get("Units", "") or "").upper()
    return {"BQML": "Bq/mL", "CNTS": "counts"}.get(u, "counts")


def import_image(path_or_dir) -> Image:
    """Read an NM reconstruction (one multi-frame file) or a CT series (folder of slices) into :class:`Image`."""
    path = Path(path_or_dir)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: folder holds no DICOM files")
        datasets = [(_read(p), p) for p in files]
        series = {str(ds.get("SeriesInstanceUID", "")) for ds, _ in datasets}
        if len(series) > 1:
            raise DataError(f"{path}: folder holds {len(series)} series; pass one series' file or folder")
        if len(datasets) == 1:
            return _image_from_multiframe(*datasets[0])
        return _image_from_slices(datasets, path)
    ds = _read(path)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 or ds.get("Modality") == "NM":
        return _image_from_multiframe(ds, path)
    return _image_from_slices([(ds, path)], path)


def _image_from_multiframe(ds: Dataset, path: Path) -> Image:
    itype = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if ds.get("Modality") == "NM" and len(itype) > 2 and itype[2] not in ("RECON TOMO", "RECON GATED TOMO"):
        raise DataError(f"{path}: ImageType value 3 = {itype[2]!r}; an NM image volume needs 'RECON TOMO'")
    pix = _pixels(ds, path)
    det = (ds.get("DetectorInformationSequence") or [Dataset()])[0]
    iop = ds.get("ImageOrientationPatient") or det.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient") or det.get("ImagePositionPatient")
    _check_axial(iop, path)
    if ipp is None:
        raise DataError(f"{path}: ImagePositionPatient is missing (top level and DetectorInformationSequence)")
    ps = _require(ds, "PixelSpacing", path)
    dz = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    if dz in (None, ""):
        raise DataError(f"{path}: SpacingBetweenSlices and SliceThickness are both missing")
    dz = float(dz)
    arr = pix
    z0 = float(ipp[2])
    if dz < 0:  # frames run toward inferior: flip into increasing z
        arr, z0, dz = arr[::-1], z0 + dz * (pix.shape[0] - 1), -dz
    grid = Grid(arr.shape, (dz, float(ps[0]), float(ps[1])), (z0, float(ipp[1]), float(ipp[0])))
    private = _read_private_json(ds)
    meta = dict(private.get("meta", {}))
    acquisition, corrections = _typed_from_file(ds, private, meta)
    if corrections is None and "decay_corrected_to" not in meta and ds.get("DecayCorrection") in _DECAY_FROM_CODE:
        meta["decay_corrected_to"] = _DECAY_FROM_CODE[ds.DecayCorrection]
    meta["source_file"] = str(path)
    return Image(arr.astype(np.float32), grid, _units_of(ds), meta, acquisition=acquisition, corrections=corrections)


def _image_from_slices(datasets, path: Path) -> Image:
    slices = []
    for ds, p in datasets:
        _check_axial(ds.get("ImageOrientationPatient"), p)
        ipp = ds.get("ImagePositionPatient")
        if ipp is None:
            raise DataError(f"{p}: ImagePositionPatient is missing")
        slices.append((float(ipp[2]), ds, p))
    slices.sort(key=lambda s: s[0])
    zs = np.array([s[0] for s in slices])
    if len(zs) > 1:
        dzs = np.diff(zs)
        if np.any(dzs <= 0) or np.max(np.abs(dzs - dzs.mean())) > 1e-3 * max(1.0, abs(dzs.mean())):
            raise DataError(f"{path}: slice positions are not equally spaced (z steps {np.unique(dzs.round(4))} mm)")
        dz = float(dzs.mean())
    else:
        dz = float(slices[0][1].get("SliceThickness") or 1.0)
    first = slices[0][1]
    rows, cols = first.Rows, first.Columns
    planes = []
    for _, ds, p in slices:
        if (ds.Rows, ds.Columns) != (rows, cols):
            raise DataError(f"{p}: slice is {ds.Rows} x {ds.Columns}, the series is {rows} x {cols}")
        planes.append(_pixels(ds, p)[0])
    arr = np.stack(planes)
    ps = _require(first, "PixelSpacing", slices[0][2])
    ipp = first.ImagePositionPatient
    grid = Grid(arr.shape, (dz, float(ps[0]), float(ps[1])), (zs[0], float(ipp[1]), float(ipp[0])))
    meta = {}
    acquisition, _ = _typed_from_file(first, {}, meta)
    meta["source_file"] = str(path)
    return Image(arr.astype(np.float32), grid, _units_of(first), meta, acquisition=acquisition)


__all__ = ["DicomPatient", "DicomStudy", "export_projections", "export_image", "export_study", "import_projections",
           "import_image", "NM_IMAGE_STORAGE", "CT_IMAGE_STORAGE", "dicom_angle_deg", "her2sim_angle_deg",
           "corrected_image_codes", "decay_correction_code"]
