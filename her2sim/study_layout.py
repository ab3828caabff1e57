"""Where every file of a study folder lives: :class:`StudyLayout`, and the scans found in a folder.

::

    STUDY/study.resolved.toml                    the resolved configuration (her2sim.config)
    STUDY/calibration/                           phantom.h5 expected.h5 recon.h5 calibration.json
    STUDY/patients/<PID>/phantom.h5              Phantom (CT in HU, truth, weight/height/injected activity in meta)
    STUDY/patients/<PID>/t<H>h/expected.h5       Monte Carlo expected projections
    STUDY/patients/<PID>/t<H>h/noisy_r<K>.h5     Projections, Poisson realisation K
    STUDY/patients/<PID>/t<H>h/recon_r<K>.h5     Image in Bq/mL
    STUDY/patients/<PID>/t<H>h/mc_scatter_r<K>.h5  Monte Carlo scatter estimate (recon.scatter = "mc")
    STUDY/patients/<PID>/lesions.json            measured vs true lesion rows
    STUDY/results/summary.json, lesions.csv, figures/
    STUDY/dicom/<PID>/t<H>h/{NM_projections,NM_recon,CT}

The pipeline writes through it, and the report, the DICOM export and the CLI read through it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from her2sim.core.errors import DataError

_TIME_DIR = re.compile(r"^t(\d+(?:\.\d+)?)h$")
_REALISATION = re.compile(r"^(noisy|recon)_r(\d+)\.h5$")


def time_tag(time_h: float) -> str:
    """Folder name of a time point: ``t1h``, ``t2.5h``."""
    return f"t{time_h:g}h"


@dataclass(frozen=True)
class StudyLayout:
    """Paths of one study folder (nothing is created or checked here).

    Attributes
    ----------
    root : Path
        The study folder.
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # study level
    @property
    def calibration_dir(self) -> Path:
        return self.root / "calibration"

    @property
    def calibration_json(self) -> Path:
        return self.calibration_dir / "calibration.json"

    @property
    def patients_dir(self) -> Path:
        return self.root / "patients"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"

    @property
    def summary_json(self) -> Path:
        return self.results_dir / "summary.json"

    @property
    def lesions_csv(self) -> Path:
        return self.results_dir / "lesions.csv"

    @property
    def dicom_dir(self) -> Path:
        return self.root / "dicom"

    # patient level
    def patient_dir(self, patient_id: str) -> Path:
        return self.patients_dir / str(patient_id)

    def phantom(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "phantom.h5"

    def lesions_json(self, patient_id: str) -> Path:
        return self.patient_dir(patient_id) / "lesions.json"

    def whole_body(self, patient_id: str) -> Path:
        """The patient's planar whole-body sweeps, every time point (``[whole_body]``)."""
        return self.patient_dir(patient_id) / "whole_body.h5"

    # scan level
    def scan_dir(self, patient_id: str, time_h: float) -> Path:
        return self.patient_dir(patient_id) / time_tag(time_h)

    def expected(self, patient_id: str, time_h: float) -> Path:
        return self.scan_dir(patient_id, time_h) / "expected.h5"

    def noisy(self, patient_id: str, time_h: float, realisation: int = 0) -> Path:
        return self.scan_dir(patient_id, time_h) / f"noisy_r{int(realisation)}.h5"

    def recon(self, patient_id: str, time_h: float, realisation: int = 0) -> Path:
        return self.scan_dir(patient_id, time_h) / f"recon_r{int(realisation)}.h5"

    def mc_scatter(self, patient_id: str, time_h: float, realisation: int = 0) -> Path:
        return self.scan_dir(patient_id, time_h) / f"mc_scatter_r{int(realisation)}.h5"

    def relative(self, path: Path) -> str:
        """``path`` relative to the study folder, as stage outputs are declared."""
        return Path(path).relative_to(self.root).as_posix()


@dataclass(frozen=True)
class Scan:
    """One (patient, time point) of a study folder and its files for one noise realisation."""

    patient_id: str
    time_h: float
    folder: Path
    phantom: Path | None
    projections: Path | None
    recon: Path | None
    realisation: int | None


def _realisations(folder: Path) -> list:
    ks = set()
    for p in folder.iterdir():
        m = _REALISATION.match(p.name)
        if m:
            ks.add(int(m.group(2)))
    return sorted(ks)


def find_scans(study_dir, patient: str | None = None, time_h: float | None = None,
               realisation: int | None = None) -> list:
    """The (patient, time point) scans of a study folder, optionally filtered.

    Parameters
    ----------
    study_dir : path-like
    patient : str or None
        Patient id (folder name under ``patients/``).
    time_h : float or None
        Time point (h after injection), matched to ``t<H>h`` folders within 1e-6 h.
    realisation : int or None
        Noise realisation K (``noisy_r<K>.h5`` / ``recon_r<K>.h5``); default the lowest K present.

    Raises
    ------
    DataError
        No patients, or a requested patient / time point / realisation is absent (lists what exists).
    """
    layout = StudyLayout(study_dir)
    root = layout.patients_dir
    pids = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not pids:
        raise DataError(f"{root}: no patient folders (patients/<PID>/) in this study")
    if patient is not None:
        if patient not in pids:
            raise DataError(f"--patient = {patient!r} is not in {root}; available {pids}")
        pids = [patient]
    scans = []
    for pid in pids:
        pdir = layout.patient_dir(pid)
        phantom = layout.phantom(pid)
        times = []
        for d in pdir.iterdir():
            m = _TIME_DIR.match(d.name)
            if d.is_dir() and m:
                times.append((float(m.group(1)), d))
        times.sort()
        if time_h is not None:
            sel = [(t, d) for t, d in times if abs(t - time_h) < 1e-6]
            if not sel:
                raise DataError(f"--time-h = {time_h:g} has no folder t<H>h under {pdir}; "
                                f"available {[t for t, _ in times]} h")
            times = sel
        for t, d in times:
            ks = _realisations(d)
            if realisation is not None:
                if realisation not in ks:
                    raise DataError(f"--realisation = {realisation} has no noisy_r{realisation}.h5 or "
                                    f"recon_r{realisation}.h5 in {d}; available {ks}")
                k = realisation
            else:
                k = ks[0] if ks else None
            proj = d / f"noisy_r{k}.h5" if k is not None else None
            rec = d / f"recon_r{k}.h5" if k is not None else None
            scans.append(Scan(pid, t, d, phantom if phantom.is_file() else None,
                              proj if proj is not None and proj.is_file() else None,
                              rec if rec is not None and rec.is_file() else None, k))
    if not scans:
        raise DataError(f"{root}: no time-point folders t<H>h with data for the selected patients {pids}")
    return scans
