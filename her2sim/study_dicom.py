"""DICOM export of a study folder: every scan's NM projections, NM reconstruction (Bq/mL) and CT.

Reads the folder through :class:`her2sim.study_layout.StudyLayout` (:func:`her2sim.study_layout.find_scans`)
and writes ``OUT/<PID>/t<H>h/{NM_projections,NM_recon,CT}`` with one StudyInstanceUID and
FrameOfReferenceUID per (patient, time point); UIDs are derived from the study name, patient and time, so a
re-export gives the same UIDs. The pipeline's ``dicom`` stage and ``her2sim export-dicom`` both call
:func:`export_study_dicom`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from her2sim.core.acquisition import Acquisition
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import ConfigError, DataError
from her2sim.dicom_io import DicomPatient, DicomStudy, export_study
from her2sim.study_layout import Scan, find_scans, time_tag

#: Series folder written by :func:`her2sim.dicom_io.export_study` for each of its outputs.
SERIES_FOLDERS = {"projections": "NM_projections", "recon": "NM_recon", "ct": "CT"}


def export_scan_dicom(scan: Scan, out_dir, study_name: str = "her2sim", ct: bool = True) -> list:
    """Write the DICOM series of one scan under ``out_dir``; returns the series folders written.

    NM projections (the noisy realisation), NM reconstruction (Bq/mL) and CT (the
    phantom's HU volume; not with ``ct=False``, a study without CT, ``phantom.ct = false``) share one
    StudyInstanceUID and FrameOfReferenceUID. Patient
    weight/height come from ``Phantom.meta``; injected activity, scan start and
    injection time from the image's/projections' typed ``acquisition`` (their meta for files that
    predate it), its unknown fields from the phantom meta and ``time_h`` (scan start).
    """
    ph = Phantom.load(scan.phantom) if scan.phantom is not None else None
    proj = Projections.load(scan.projections) if scan.projections is not None else None
    rec = Image.load(scan.recon) if scan.recon is not None else None
    pmeta = dict(ph.meta) if ph is not None else {}
    fill = {"scan_start_s": scan.time_h * 3600.0}
    for key in ("injected_mbq", "weight_kg", "height_cm", "injection_time"):
        if pmeta.get(key) is not None:
            fill[key] = pmeta[key]
    known = Acquisition.from_meta(fill)
    if proj is not None:
        own = proj.acquisition or Acquisition.from_meta(proj.meta) or Acquisition()
        proj = replace(proj, meta={**fill, **proj.meta}, acquisition=own.filled_from(known))
    if rec is not None:
        own = rec.acquisition or Acquisition.from_meta(rec.meta) or Acquisition()
        rec = replace(rec, meta={**fill, **rec.meta}, acquisition=own.filled_from(known))
    with_ct, ct = ct, None
    if ph is not None and with_ct:
        src = rec.meta if rec is not None else (proj.meta if proj is not None else fill)
        ct_meta = {k: src[k] for k in ("scan_start_s", "weight_kg") if src.get(k) is not None}
        ct = Image(ph.ct_hu, ph.grid, "HU", ct_meta)
    if proj is None and rec is None and ct is None:
        raise DataError(f"{scan.folder}: nothing to export (no noisy_r<K>.h5, recon_r<K>.h5 or "
                        f"{scan.folder.parent / 'phantom.h5'})")
    weight = pmeta.get("weight_kg") or (rec.meta.get("weight_kg") if rec is not None else None)
    patient = DicomPatient(name=f"HER2SIM^{scan.patient_id}", patient_id=str(scan.patient_id)[:64],
                           weight_kg=None if weight is None else float(weight),
                           height_cm=None if pmeta.get("height_cm") is None else float(pmeta["height_cm"]))
    seed = f"{study_name}/{scan.patient_id}/{time_tag(scan.time_h)}"
    acqs = [x.acquisition for x in (rec, proj) if x is not None] + [known]
    inj = next((a.injection_datetime for a in acqs if a is not None and a.injection_time is not None), None)
    study = DicomStudy.new(seed=seed, injection_time=inj)
    dest = Path(out_dir) / scan.patient_id / time_tag(scan.time_h)
    written = export_study(dest, projections=proj, recon=rec, ct=ct, patient=patient, study=study, seed=seed)
    return [dest / SERIES_FOLDERS[k] for k in SERIES_FOLDERS if k in written]


def _study_name(study_dir: Path) -> str:
    try:
        import tomllib

        from her2sim.config import resolved_study_path

        data = tomllib.loads(resolved_study_path(study_dir).read_text(encoding="utf-8"))
        return str(data["study"]["name"])
    except (OSError, KeyError, TypeError, ValueError):
        return study_dir.resolve().name


def export_study_dicom(study_dir, out_dir, patient: str | None = None, time_h: float | None = None,
                       realisation: int | None = None, ct: bool = True) -> tuple[list, list]:
    """Export the selected scans of a study folder as DICOM (see :func:`find_scans`, :func:`export_scan_dicom`;
    ``ct=False``: no CT series).

    Returns
    -------
    (scans, series) : list of Scan, list of Path
        The scans exported and the series folders written (``out_dir/<PID>/t<H>h/<series>``).
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise DataError(f"{study_dir}: study folder does not exist (STUDY_DIR must be the folder a study run wrote)")
    if realisation is not None and (isinstance(realisation, bool) or int(realisation) < 0):
        raise ConfigError(f"realisation = {realisation!r} must be an integer >= 0")
    scans = find_scans(study_dir, patient, time_h, realisation)
    name = _study_name(study_dir)
    series = []
    for scan in scans:
        series.extend(export_scan_dicom(scan, out_dir, name, ct=ct))
    return scans, series
