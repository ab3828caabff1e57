"""Input/output subcommands of the ``her2sim`` CLI: init, status, export-dicom, import-dicom, report.

:func:`register_io` adds them to the CLI's subparsers; each handler is
``cmd_<name>(args) -> int``, prints a short human summary (or one JSON object with
``--json``) and raises :class:`~her2sim.core.errors.Her2simError` subclasses for bad
input, which the CLI prints as one line.

DICOM export (:mod:`her2sim.study_dicom`) reads the study folder through
:class:`her2sim.study_layout.StudyLayout`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from her2sim.core.errors import ConfigError, DataError
from her2sim.core.jsonio import print_json as _print_json

from her2sim.study_dicom import SERIES_FOLDERS, export_scan_dicom, export_study_dicom  # noqa: F401 (CLI API)
from her2sim.study_layout import Scan, find_scans  # noqa: F401 (CLI API)


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
