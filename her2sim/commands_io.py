"""Input/output subcommands of the ``her2sim`` CLI: init, status, export-dicom, import-dicom, report.

:func:`register_io` adds them to the CLI's subparsers; each handler is
``cmd_<name>(args) -> int``, prints a short human summary (or one JSON object with
``--json``) and raises :class:`~her2sim.core.errors.Her2simError` subclasses for bad
input, which the CLI prints as one line.

DICOM export reads the study layout written by the pipeline::

    STUDY/patients/<PID>/phantom.h5              Phantom (CT in HU, weight/height/injected activity in meta)
    STUDY/patients/<PID>/t<H>h/noisy_r<K>.h5     Projections, Poisson realisation K
    STUDY/patients/<PID>/t<H>h/recon_r<K>.h5     Image in Bq/mL

and writes ``OUT/<PID>/t<H>h/{NM_projections,NM_recon,CT}`` with one StudyInstanceUID
and FrameOfReferenceUID per (patient, time point); UIDs are derived from the study
name, patient and time, so a re-export gives the same UIDs.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

from her2sim.core.errors import ConfigError, DataError
from her2sim.core.jsonio import print_json as _print_json

_TIME_DIR = re.compile(r"^t(\d+(?:\.\d+)?)h$")
_REALISATION = re.compile(r"^(noisy|recon)_r(\d+)\.h5$")
#: Series folder written by :func:`her2sim.dicom_io.export_study` for each of its outputs.
SERIES_FOLDERS = {"projections": "NM_projections", "recon": "NM_recon", "ct": "CT"}


def _study_dir(path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: study folder does not exist (STUDY_DIR must be the folder a study run wrote)")
    return p


# ---------------------------------------------------------------------------- init
def cmd_init(args) -> int:
    """Copy a bundled study preset to a TOML file (``--list`` lists the presets)."""
    from her2sim.config import init_preset, list_presets, preset_path

    if args.list:
        names = list_presets()
        if args.json:
            _print_json({"presets": names})
        else:
            print("bundled study presets:")
            for n in names:
                first = _preset_description(preset_path(n))
                print(f"  {n:<16}{first}")
        return 0
    if not args.preset:
        raise ConfigError("init: PRESET is required (one of "
                          f"{list_presets()}); use `her2sim init --list` to list them")
    dest = Path(args.out) if args.out is not None else Path.cwd() / f"{args.preset}.toml"
    path = init_preset(args.preset, dest, force=args.force)
    if args.json:
        _print_json({"preset": args.preset, "path": str(path)})
    else:
        print(path)
    return 0


def _preset_description(path: Path) -> str:
    """First comment line of a preset file, without the leading ``#`` (empty if none)."""
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            s = line.strip()
            if s.startswith("#"):
                return s.lstrip("#").strip()
            if s:
                break
    except OSError:
        pass
    return ""


# ---------------------------------------------------------------------------- status
def study_status(study_dir) -> dict:
    """Stages recorded in ``<study_dir>/.stages``: status and recorded outputs, each verified.

    Returns
    -------
    dict
        stage -> ``{"status": "done"|"stale"|"missing", "finished_utc", "seconds", "problem",
        "outputs": [{"path", "exists", "state"}]}``; statuses from :func:`her2sim.stages.stage_status`
        (manifests judged on their own: outputs intact and upstream keys current); ``state`` of an
        output is ``"ok"``, ``"missing"`` or ``"corrupt"`` (size or sha256 differs from the manifest);
        ``problem`` says why a manifest that exists could not be used (``None`` otherwise).
    """
    from her2sim.stages import MANIFEST_DIR, manifest_problem, output_state, read_manifest, stage_status

    study_dir = _study_dir(study_dir)
    statuses = stage_status(study_dir)
    out = {}
    folder = study_dir / MANIFEST_DIR
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    for name in names:
        m = read_manifest(study_dir, name)
        if m is None:  # unreadable/truncated/wrongly typed manifest: the stage counts as not done
            try:
                problem = manifest_problem(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                problem = f"not readable JSON ({type(exc).__name__})"
            out[name] = {"status": "missing", "finished_utc": None, "seconds": None, "outputs": [],
                         "problem": f"manifest {folder / (name + '.json')}: {problem}"}
            continue
        outs = []
        for rec in m["outputs"]:
            state = output_state(study_dir, rec)
            outs.append({"path": rec["path"], "exists": state != "missing", "state": state})
        out[name] = {"status": statuses.get(name, "missing"), "finished_utc": m.get("finished_utc"),
                     "seconds": m.get("seconds"), "outputs": outs, "problem": None}
    return out


def cmd_status(args) -> int:
    """Print which stages of a study are done, stale or missing, and which outputs are missing or corrupt."""
    info = study_status(args.study_dir)
    if args.json:
        _print_json({k: v["status"] for k, v in info.items()})
        return 0
    study_dir = Path(args.study_dir)
    if not info:
        print(f"{study_dir}: no stage manifests in {study_dir / '.stages'} (nothing has run yet)")
        return 0
    from her2sim.config import resolved_study_path
    from her2sim.stages import read_lock

    has_toml = resolved_study_path(study_dir).is_file()
    lock = read_lock(study_dir)
    print(f"study {study_dir}" + ("" if has_toml else " (no study.resolved.toml)")
          + (f" (locked by PID {lock.get('pid')} on {lock.get('host')})" if lock else ""))
    print(f"  {'stage':<28}{'status':<9}{'finished (UTC)':<27}{'seconds':>9}  outputs")
    damaged = []
    for name, v in info.items():
        n_out = len(v["outputs"])
        n_ok = sum(o["exists"] for o in v["outputs"])
        n_bad = sum(o["state"] == "corrupt" for o in v["outputs"])
        secs = "-" if v["seconds"] is None else f"{float(v['seconds']):.1f}"
        print(f"  {name:<28}{v['status']:<9}{str(v['finished_utc'] or '-'):<27}{secs:>9}  "
              f"{n_ok}/{n_out} present" + (f", {n_bad} corrupt" if n_bad else ""))
        damaged += [(o["state"], o["path"], name) for o in v["outputs"] if o["state"] != "ok"]
        if v["problem"]:
            print(f"    {v['problem']}")
    for state, path, name in damaged:
        print(f"  {state:<8} {path} (stage {name}; a rerun recomputes it and everything downstream)")
    counts = {s: sum(1 for v in info.values() if v["status"] == s) for s in ("done", "stale", "missing")}
    print("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0


# ---------------------------------------------------------------------------- export-dicom
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
    study_dir = _study_dir(study_dir)
    root = study_dir / "patients"
    pids = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not pids:
        raise DataError(f"{root}: no patient folders (patients/<PID>/) in this study")
    if patient is not None:
        if patient not in pids:
            raise DataError(f"--patient = {patient!r} is not in {root}; available {pids}")
        pids = [patient]
    scans = []
    for pid in pids:
        pdir = root / pid
        phantom = pdir / "phantom.h5"
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


def _time_label(t: float) -> str:
    return f"t{t:g}h"


def _injection_time(*metas) -> _dt.datetime | None:
    for m in metas:
        v = m.get("injection_time") if isinstance(m, dict) else None
        if isinstance(v, str) and v:
            try:
                t = _dt.datetime.fromisoformat(v)
            except ValueError:
                continue
            return t.replace(tzinfo=None)
    return None


def export_scan_dicom(scan: Scan, out_dir, study_name: str = "her2sim", ct: bool = True) -> list:
    """Write the DICOM series of one scan under ``out_dir``; returns the series folders written.

    NM projections (the noisy realisation), NM reconstruction (Bq/mL) and CT (the
    phantom's HU volume; not with ``ct=False``, a study without CT, ``phantom.ct = false``) share one
    StudyInstanceUID and FrameOfReferenceUID. Patient
    weight/height come from ``Phantom.meta``; injected activity, scan start and
    injection time from the image/projection meta, falling back to the phantom meta
    and to ``time_h`` for the scan start.
    """
    from her2sim.core.containers import Image, Phantom, Projections
    from her2sim.dicom_io import DicomPatient, DicomStudy, export_study

    ph = Phantom.load(scan.phantom) if scan.phantom is not None else None
    proj = Projections.load(scan.projections) if scan.projections is not None else None
    rec = Image.load(scan.recon) if scan.recon is not None else None
    pmeta = dict(ph.meta) if ph is not None else {}
    fill = {"scan_start_s": scan.time_h * 3600.0}
    for key in ("injected_mbq", "weight_kg", "height_cm", "injection_time"):
        if pmeta.get(key) is not None:
            fill[key] = pmeta[key]
    if proj is not None:
        proj = Projections(proj.counts, proj.windows, proj.geometry, proj.is_expected, proj.components,
                           proj.variance, {**fill, **proj.meta})
    if rec is not None:
        rec = Image(rec.array, rec.grid, rec.units, {**fill, **rec.meta})
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
    seed = f"{study_name}/{scan.patient_id}/{_time_label(scan.time_h)}"
    inj = _injection_time(rec.meta if rec is not None else {}, proj.meta if proj is not None else {}, pmeta)
    study = DicomStudy.new(seed=seed, injection_time=inj)
    dest = Path(out_dir) / scan.patient_id / _time_label(scan.time_h)
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
    study_dir = _study_dir(study_dir)
    if realisation is not None and (isinstance(realisation, bool) or int(realisation) < 0):
        raise ConfigError(f"realisation = {realisation!r} must be an integer >= 0")
    scans = find_scans(study_dir, patient, time_h, realisation)
    name = _study_name(study_dir)
    series = []
    for scan in scans:
        series.extend(export_scan_dicom(scan, out_dir, name, ct=ct))
    return scans, series


def cmd_export_dicom(args) -> int:
    """Export every (patient, time point) of a study as DICOM NM projections, NM recon and CT."""
    from her2sim.commands import _out_dir
    _out_dir("--out", args.out)
    scans, series = export_study_dicom(args.study_dir, args.out, args.patient, args.time_h, args.realisation)
    if args.json:
        _print_json({"series": [str(p) for p in series]})
    else:
        print(f"exported {len(series)} DICOM series of {len(scans)} scan(s) to {args.out}")
        for p in series:
            print(f"  {p}")
    return 0


# ---------------------------------------------------------------------------- import-dicom
def guess_dicom_kind(path) -> str:
    """``'projections'`` for an NM TOMO acquisition file, else ``'image'`` (NM recon file or CT folder)."""
    import pydicom

    p = Path(path)
    if p.is_dir():
        return "image"
    if not p.is_file():
        raise DataError(f"{p}: DICOM file or folder does not exist")
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - any pydicom failure means an unreadable file
        raise DataError(f"{p}: not a readable DICOM file ({exc})") from None
    itype = [str(v).upper() for v in (ds.get("ImageType") or [])]
    return "projections" if ds.get("Modality") == "NM" and "TOMO" in itype and "RECON TOMO" not in itype \
        else "image"


def cmd_import_dicom(args) -> int:
    """Read a DICOM file/series and save it as an her2sim HDF5 container."""
    from her2sim.dicom_io import import_image, import_projections

    from her2sim.commands import _out_file
    if not Path(args.path).exists():
        raise DataError(f"{args.path}: DICOM file or folder does not exist")
    _out_file("--out", args.out)
    kind = args.kind or guess_dicom_kind(args.path)
    obj = import_projections(args.path) if kind == "projections" else import_image(args.path)
    out = obj.save(args.out)
    if kind == "projections":
        summary = {"kind": "Projections", "path": str(out), "shape": list(obj.counts.shape),
                   "windows": [w.name for w in obj.windows], "total_counts": float(obj.counts.sum())}
    else:
        summary = {"kind": "Image", "path": str(out), "shape": list(obj.array.shape), "units": obj.units,
                   "spacing_mm": list(obj.grid.spacing_mm)}
    if args.json:
        _print_json(summary)
    else:
        extra = (f"windows {summary['windows']}, {summary['total_counts']:.6g} counts" if kind == "projections"
                 else f"{summary['units']}, voxels {tuple(summary['spacing_mm'])} mm")
        print(f"{summary['kind']} {tuple(summary['shape'])} ({extra}) -> {out}")
    return 0


# ---------------------------------------------------------------------------- report
def cmd_report(args) -> int:
    """Write the study report (HTML or Markdown) and print its path."""
    from her2sim.report import write_report

    study_dir = _study_dir(args.study_dir)
    fmt = args.format
    if fmt is None:
        fmt = "html"
        try:
            import tomllib

            from her2sim.config import resolved_study_path

            data = tomllib.loads(resolved_study_path(study_dir).read_text(encoding="utf-8"))
            fmt = data.get("output", {}).get("report", "html")
        except (OSError, ValueError, AttributeError):
            pass
    from her2sim.stages import study_lock

    with study_lock(study_dir):  # not while a run writes the folder
        path = write_report(study_dir, fmt)
    if args.json:
        _print_json({"report": str(path), "format": fmt})
    else:
        print(path)
    return 0


# ---------------------------------------------------------------------------- registration
def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v} is not an integer >= 0")
    return v


def register_io(sub) -> None:
    """Add ``init``, ``status``, ``export-dicom``, ``import-dicom`` and ``report`` to the CLI's subparsers."""
    from her2sim.core.limits import float_range
    s = sub.add_parser("init", help="copy a bundled study preset to a TOML file")
    s.add_argument("preset", nargs="?", metavar="PRESET", help="preset name (see --list)")
    s.add_argument("--out", type=Path, help="destination file or folder (default ./PRESET.toml)")
    s.add_argument("--force", action="store_true", help="overwrite an existing file")
    s.add_argument("--list", action="store_true", help="list the bundled presets")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("status", help="which stages of a study are done, stale or missing")
    s.add_argument("study_dir", metavar="STUDY_DIR", type=Path)
    s.add_argument("--json", action="store_true", help="print {stage: status}")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("export-dicom", help="export projections, reconstructions and CT of a study as DICOM")
    s.add_argument("study_dir", metavar="STUDY_DIR", type=Path)
    s.add_argument("--out", type=Path, required=True, help="destination folder (DIR/<PID>/t<H>h/<series>)")
    s.add_argument("--patient", help="only this patient id")
    s.add_argument("--time-h", type=float_range(0.0, 240.0, lo_open=True), help="only this time point (h after injection)")
    s.add_argument("--realisation", type=_nonneg_int, help="noise realisation K (default: the lowest present)")
    s.add_argument("--json", action="store_true", help='print {"series": [folders]}')
    s.set_defaults(func=cmd_export_dicom)

    s = sub.add_parser("import-dicom", help="read DICOM projections or an image into an HDF5 container")
    s.add_argument("path", metavar="PATH", type=Path, help="DICOM file, or a folder of one series")
    s.add_argument("--out", type=Path, required=True, help="destination .h5 file")
    s.add_argument("--kind", choices=("projections", "image"), help="default: guessed from ImageType")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_import_dicom)

    s = sub.add_parser("report", help="write the study report (HTML or Markdown)")
    s.add_argument("study_dir", metavar="STUDY_DIR", type=Path)
    s.add_argument("--format", choices=("html", "markdown", "md"),
                   help="default: [output] report of study.resolved.toml, else html")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_report)


__all__ = ["register_io", "cmd_init", "cmd_status", "cmd_export_dicom", "cmd_import_dicom", "cmd_report",
           "study_status", "find_scans", "export_scan_dicom", "export_study_dicom", "guess_dicom_kind", "Scan", "SERIES_FOLDERS"]
