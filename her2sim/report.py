"""Study report: one self-contained HTML page (or a Markdown file) from a finished study folder.

The report is built from what the pipeline wrote (see the study layout in
:mod:`her2sim.stages` and the pipeline):

* ``results/summary.json`` (required): study name, patients, scans, stage run times,
  outputs, threshold statistics, calibration, Monte Carlo summary, resolved config,
  package versions, seeds and figure list;
* ``study.resolved.toml`` (resolved configuration, shown verbatim when present; ``study.toml`` in
  folders written by earlier versions);
* ``calibration/calibration.json`` (merged under the summary's ``calibration``);
* ``results/lesions.csv`` (or, without it, ``patients/<PID>/lesions.json``);
* every image in ``results/figures`` (and in ``calibration/``).

Parts other than the summary are optional; a missing part is stated in the report
instead of failing. Fallbacks: stage run times from the ``.stages`` manifests,
seeds from the resolved study file, package versions from the installed packages, the
Monte Carlo table from the calibration scan. The HTML page embeds each figure as a
base64 ``data:`` URI, so the single file can be mailed or archived; the Markdown
file links the images by paths relative to the report. No generation time is
written, so the same study folder gives the same report bytes.

The SUVmax = 1.5 HER2-positive threshold quoted in captions is the one proposed by
Zhao et al., Breast Cancer Res 26:40 (2024) (``shared/reference``, seed paper).
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from her2sim.core.errors import ConfigError, DataError
from her2sim.core.versions import VERSION_PACKAGES, package_versions
from her2sim.stages import write_text_atomic
from her2sim.study_layout import StudyLayout

REPORT_FORMATS = ("html", "markdown")
_FORMAT_ALIASES = {"html": "html", "htm": "html", "markdown": "markdown", "md": "markdown"}
_LAYOUT = StudyLayout(Path("."))   # paths relative to the study folder
SUMMARY_FILE = Path(_LAYOUT.relative(_LAYOUT.summary_json))
LESIONS_CSV = Path(_LAYOUT.relative(_LAYOUT.lesions_csv))
FIGURES_DIR = Path(_LAYOUT.relative(_LAYOUT.figures_dir))
CALIBRATION_JSON = Path(_LAYOUT.relative(_LAYOUT.calibration_json))
STUDY_TOML = "study.resolved.toml"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
               ".gif": "image/gif"}
#: Lesion rows shown in the report; the CSV keeps all of them.
MAX_LESION_ROWS = 1000

_ID_COLUMNS = ("patient_id", "lesion_id", "type", "time_h", "realisation", "ihc", "fish", "her2_positive",
               "diameter_mm", "volume_ml")
_MEASURED = ("suvmax", "suvmean", "suvpeak", "suvmean_iso", "sul", "sulmax", "sulmean", "sulpeak")
#: Truth columns a measured metric is compared with, in order of preference (``true_suv`` is the true mean SUV
#: of :func:`her2sim.analysis.lesion_table.lesion_rows`).
_TRUTH_OF = {"suvmean": ("true_suv_intrinsic", "true_suvmean", "true_suv"),
             "suvmean_iso": ("true_suv_intrinsic", "true_suvmean", "true_suv"),
             "suvmax": ("true_suvmax_pv", "true_suvmax")}
#: Packages whose installed versions are listed when the summary has no ``versions``.
_VERSION_PACKAGES = VERSION_PACKAGES
_RATES = ("sensitivity", "specificity", "ppv", "npv", "accuracy")


# ---------------------------------------------------------------------------- document model
@dataclass
class Table:
    """A table block: header ``columns`` and ``rows`` of already formatted cells."""

    columns: list
    rows: list
    caption: str = ""


@dataclass
class Figure:
    """An image file with its caption; ``group`` is ``"calibration"`` or ``"results"``."""

    path: Path
    caption: str
    group: str = "results"


@dataclass
class Section:
    """A titled part of the report holding paragraphs (str), preformatted text, tables and figures."""

    title: str
    blocks: list = field(default_factory=list)

    def text(self, s: str) -> None:
        self.blocks.append(("p", s))

    def pre(self, s: str) -> None:
        self.blocks.append(("pre", s))

    def table(self, t: Table) -> None:
        self.blocks.append(("table", t))

    def figure(self, f: Figure) -> None:
        self.blocks.append(("figure", f))


# ---------------------------------------------------------------------------- inputs
def load_summary(study_dir) -> dict:
    """``<study_dir>/results/summary.json`` as a dict.

    Raises
    ------
    DataError
        The file is missing, unreadable, not JSON or not a JSON object (message names the file).
    """
    path = Path(study_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: study summary is missing; run the study (her2sim run study.toml) "
                        f"before writing its report") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: study summary cannot be read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: study summary is corrupt (invalid JSON: {exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: study summary must be a JSON object, got {type(data).__name__}")
    return data


def _read_json_file(path: Path):
    """JSON content of ``path`` or ``None`` when missing; DataError naming the file when corrupt."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as JSON: {exc}") from None


def read_lesion_table(study_dir) -> tuple[list, list, str]:
    """Lesion rows of a study: ``(columns, rows, source)``.

    ``rows`` are dicts of column -> value (CSV strings, or JSON values from the
    per-patient ``lesions.json`` files used when ``results/lesions.csv`` is absent).
    ``source`` is the relative path read (``""`` when there is no lesion table).
    """
    study_dir = Path(study_dir)
    path = study_dir / LESIONS_CSV
    if path.is_file():
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = [dict(r) for r in reader]
                columns = list(reader.fieldnames or [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: lesion table cannot be read: {exc}") from None
        return columns, rows, LESIONS_CSV.as_posix()
    columns, rows, used = [], [], []
    for p in sorted(StudyLayout(study_dir).patients_dir.glob("*/lesions.json")):
        data = _read_json_file(p)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"{p}: must hold a JSON list of lesion rows (objects)")
        for r in data:
            for k in r:
                if k not in columns:
                    columns.append(k)
        rows.extend(data)
        used.append(p.relative_to(study_dir).as_posix())
    return columns, rows, ("patients/*/lesions.json" if used else "")


def order_lesion_columns(columns) -> list:
    """Columns grouped as identity, truth (``true_*``), measured SUV/SUL, PVC (``pvc_*``), other (LBR, CNR, reads...).

    The order of the input is kept within each group.
    """
    def group(c: str) -> int:
        if c in _ID_COLUMNS:
            return 0
        if c.startswith("true_"):
            return 1
        if c in _MEASURED:
            return 2
        if c.startswith("pvc_"):
            return 3
        return 4
    return sorted(columns, key=lambda c: (group(c), list(columns).index(c)))


# ---------------------------------------------------------------------------- formatting
def _as_float(v):
    """``v`` as float when it is a number (or a numeric string with '.'/'e'/'nan'/'inf'), else ``None``."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s and any(ch in s for ch in ".e") or s in ("nan", "inf", "-inf"):
            try:
                return float(s)
            except ValueError:
                return None
    return None


def _number(v):
    """``v`` as float for arithmetic (numbers and any numeric string), else ``None``."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def format_value(v, digits: int = 4) -> str:
    """A table cell: ``digits`` significant digits for floats, ``-`` for empty/None, lists joined."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x, digits) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    f = _as_float(v)
    if f is not None:
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f"{f:.{digits}g}"
    return str(v)


def _with_ci(value, ci) -> str:
    if value is None:
        return "-"
    s = format_value(value)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(c is not None for c in ci):
        s += f" [{format_value(ci[0])}, {format_value(ci[1])}]"
    return s


def _flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> ``{"a.b": value}`` (lists kept as values)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _key_value_table(d: dict, caption: str = "", key_name: str = "quantity") -> Table:
    flat = _flatten(d)
    return Table([key_name, "value"], [[k, format_value(v, 6)] for k, v in flat.items()], caption)


# ---------------------------------------------------------------------------- figures
_CAPTIONS = (
    (lambda t: "mip" in t and ({"phantom", "truth", "activity"} & t),
     "Maximum-intensity projection of the digital phantom's true activity."),
    (lambda t: "mip" in t and ({"recon", "reconstruction", "osem"} & t),
     "Maximum-intensity projection of the OSEM reconstruction (Bq/mL)."),
    (lambda t: "mip" in t and "ct" in t, "Maximum-intensity projection of the CT (HU)."),
    (lambda t: "mip" in t, "Maximum-intensity projection."),
    (lambda t: "phantom" in t,
     "Digital phantom: activity, CT and labels in axial, coronal and sagittal slices and a maximum-intensity "
     "projection."),
    (lambda t: {"recovery", "rc"} & t,
     "Recovery coefficients of the calibration spheres vs diameter (measured mean or max over true activity)."),
    (lambda t: any(w.startswith("calib") for w in t), "Calibration scan (counts to Bq/mL)."),
    (lambda t: "ihc" in t,
     "SUV per lesion grouped by IHC score; the dashed line is the SUVmax = 1.5 HER2-positive threshold "
     "(Zhao et al. 2024)."),
    (lambda t: {"p", "positive"} <= t,
     "P(SUVmax >= 1.5) over the Poisson noise realisations of each scan against the lesion's true SUVmean, by "
     "diameter and time point (hollow: with PVC); the dotted line is the threshold."),
    (lambda t: {"whole", "body"} <= t,
     "Planar whole-body sweep (anterior, posterior; counts) at each time point beside the local SPECT's anterior SUV "
     "MIP at the same body level; the dashed lines mark the SPECT's axial field of view."),
    (lambda t: "roc" in t, "ROC curve of HER2 status from the lesion metric (patient-bootstrap interval)."),
    (lambda t: "bias" in t, "SUV bias vs lesion size (measured - true) / true."),
    (lambda t: "bland" in t or "altman" in t, "Bland-Altman agreement of two measurements."),
    (lambda t: "true" in t and ("measured" in t or "vs" in t), "Measured vs true SUV (identity line dashed)."),
    (lambda t: {"spectrum", "spectra", "energy"} & t, "Energy spectrum with the acquisition windows."),
    (lambda t: "profile" in t, "Line profile through the image."),
    (lambda t: {"projection", "projections", "sinogram"} & t, "Projections (counts)."),
)


def figure_caption(path, captions: dict | None = None) -> str:
    """Caption of a figure file: from ``captions`` (by file name or stem) or from words of its name."""
    p = Path(path)
    captions = captions or {}
    for key in (p.as_posix(), p.name, p.stem):
        if key in captions:
            return str(captions[key])
    tokens = set(w for w in re.split(r"[^a-z0-9]+", p.stem.lower()) if w)
    for test, text in _CAPTIONS:
        if test(tokens):
            return text
    words = " ".join(w for w in re.split(r"[_\-\s]+", p.stem) if w)
    return (words[:1].upper() + words[1:] + ".") if words else p.name


def _is_calibration_figure(rel: Path) -> bool:
    tokens = set(w for w in re.split(r"[^a-z0-9]+", rel.stem.lower()) if w)
    return rel.parts[:1] == ("calibration",) or bool({"recovery", "rc"} & tokens) or any(
        w.startswith("calib") for w in tokens)


def find_figures(study_dir, summary: dict | None = None) -> list:
    """Figures of a study: images in ``results/figures`` and ``calibration/`` plus those listed in the summary.

    ``summary["figures"]`` entries may be paths (relative to the study folder or absolute) or
    ``{"path": ..., "caption": ...}``; ``summary["figure_captions"]`` maps file names to captions.
    Listed files that do not exist are returned too (the report says they are missing); a
    listed absolute path outside the study folder is skipped when a figure of the same file
    name was found inside it (a study folder moved or copied after the run).
    """
    study_dir = Path(study_dir)
    summary = summary or {}
    captions = dict(summary.get("figure_captions") or {})
    listed = []
    for entry in summary.get("figures") or []:
        if isinstance(entry, dict) and entry.get("path"):
            listed.append(Path(entry["path"]))
            if entry.get("caption"):
                captions[Path(entry["path"]).name] = entry["caption"]
        elif isinstance(entry, str) and entry:
            listed.append(Path(entry))
    found = []
    for folder in (study_dir / FIGURES_DIR, StudyLayout(study_dir).calibration_dir):
        if folder.is_dir():
            found.extend(sorted(p for p in folder.rglob("*")
                                if p.is_file() and p.suffix.lower() in IMAGE_TYPES and not p.name.startswith(".")))
    out, seen = [], set()
    found_names = {p.name for p in found}
    for p in found + [q if q.is_absolute() else study_dir / q for q in listed]:
        key = os.path.normpath(str(p.resolve() if p.exists() else p))
        if key in seen:
            continue
        seen.add(key)
        outside = not os.path.normpath(str(p)).startswith(os.path.normpath(str(study_dir)) + os.sep)
        if outside and p.name in found_names:
            continue  # absolute path recorded before the study folder was moved or copied
        try:
            rel = p.relative_to(study_dir)
        except ValueError:
            rel = Path(p.name)
        group = "calibration" if _is_calibration_figure(rel) else "results"
        out.append(Figure(p, figure_caption(rel, captions), group))
    return out


# ---------------------------------------------------------------------------- sections
def _study_toml(study_dir: Path) -> dict:
    """Parsed resolved study file (``{}`` when absent or not valid TOML; the report then uses the summary only)."""
    import tomllib

    try:
        data = tomllib.loads(_resolved_study_path(study_dir).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _config_text(study_dir: Path, summary: dict) -> tuple[str, str]:
    """(text, where from) of the resolved configuration."""
    toml_path = _resolved_study_path(study_dir)
    if toml_path.is_file():
        try:
            return toml_path.read_text(encoding="utf-8"), toml_path.name
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{toml_path}: resolved study file cannot be read: {exc}") from None
    cfg = summary.get("config")
    if isinstance(cfg, dict) and cfg:
        try:
            import tomli_w
            return tomli_w.dumps(cfg), "summary.json config (as TOML)"
        except (TypeError, ValueError):
            return json.dumps(cfg, indent=2, sort_keys=True, default=str), "summary.json config"
    return "", ""


def _count(v) -> str:
    if isinstance(v, (list, tuple, dict)):
        return str(len(v))
    return format_value(v)


def _resolved_study_path(study_dir) -> Path:
    """:func:`her2sim.config.resolved_study_path` (imported here: the config imports :data:`REPORT_FORMATS`)."""
    from her2sim.config import resolved_study_path
    return resolved_study_path(study_dir)


def installed_versions(packages=_VERSION_PACKAGES) -> dict:
    """Installed versions of her2sim and ``packages`` (packages not installed are left out)."""
    return package_versions(packages, keep_missing=False)


def _seeds(summary: dict, toml: dict) -> dict:
    """``summary["seeds"]`` or the seeds written in study.toml / the summary config."""
    seeds = summary.get("seeds")
    if isinstance(seeds, dict) and seeds:
        return seeds
    cfg = toml or (summary.get("config") if isinstance(summary.get("config"), dict) else {})
    out = {}
    for section in ("study", "cohort", "monte_carlo"):
        sec = cfg.get(section)
        if isinstance(sec, dict) and sec.get("seed") is not None:
            out[section] = sec["seed"]
    return out


def count_scans(study_dir) -> int:
    """Number of ``patients/<PID>/t<H>h`` folders holding projections or a reconstruction."""
    n = 0
    for d in Path(study_dir).glob("patients/*/t*h"):
        if d.is_dir() and re.fullmatch(r"t\d+(\.\d+)?h", d.name) and (
                any(d.glob("noisy_r*.h5")) or any(d.glob("recon_r*.h5")) or (d / "expected.h5").is_file()):
            n += 1
    return n


def _overview(study_dir: Path, summary: dict, toml: dict) -> Section:
    s = Section("Study")
    scans = summary.get("scans")
    rows = [["study", format_value(summary.get("study", study_dir.name))],
            ["patients", _count(summary.get("patients"))],
            ["scans (patient x time point)", _count(scans) if scans is not None else str(count_scans(study_dir))]]
    if "lesions" in summary:
        rows.append(["lesion rows (measured)", _count(summary["lesions"])])
    if summary.get("lesions_truth") is not None:
        why = summary.get("unmeasured_by_reason") or {}
        rows.append(["lesions in the truth / measured", f"{_count(summary['lesions_truth'])} / "
                     f"{_count(summary.get('lesions_measured'))}"])
        if why:
            rows.append(["unmeasured lesions", ", ".join(f"{k}: {v}" for k, v in sorted(why.items()))])
    for k, label in (("wall_seconds", "wall time (s)"), ("her2sim_version", "her2sim version"),
                     ("finished_utc", "finished (UTC)"), ("config_sha256", "config sha256")):
        if summary.get(k) is not None:
            rows.append([label, format_value(summary[k])])
    s.table(Table(["item", "value"], rows))
    if isinstance(summary.get("patients"), (list, tuple)):
        s.text("Patients: " + ", ".join(str(p) for p in summary["patients"]))
    text, where = _config_text(study_dir, summary)
    if text:
        s.text(f"Resolved configuration ({where}):")
        s.pre(text.rstrip("\n"))
    else:
        s.text("No resolved configuration was found (study.resolved.toml and summary config are missing).")
    versions = summary.get("versions")
    caption = "Software versions"
    if not (isinstance(versions, dict) and versions):
        versions, caption = installed_versions(), "Software versions (installed when this report was written)"
    if versions:
        s.table(Table(["package", "version"], [[k, format_value(v)] for k, v in sorted(versions.items())], caption))
    seeds = _seeds(summary, toml)
    if seeds:
        s.table(_key_value_table(seeds, "Seeds", "seed"))
    return s


def _window_table(mc: dict, caption: str) -> list:
    """Tables of a per-window Monte Carlo summary (nested values flattened as ``a.b`` columns)."""
    windows = [w for w, v in mc.items() if isinstance(v, dict)]
    tables = []
    if windows:
        flat = {w: _flatten(mc[w]) for w in windows}
        cols = []
        for w in windows:
            for k in flat[w]:
                if k not in cols:
                    cols.append(k)
        tables.append(Table(["window"] + cols, [[w] + [format_value(flat[w].get(k)) for k in cols]
                                                for w in windows], caption))
    other = {k: v for k, v in mc.items() if not isinstance(v, dict)}
    if other:
        tables.append(_key_value_table(other, "Monte Carlo run"))
    return tables


def _camera_mc(summary: dict, calibration: dict) -> Section | None:
    camera = summary.get("camera")
    mc = summary.get("mc_summary")
    cal_mc = calibration.get("mc_summary")
    if not any(isinstance(x, dict) and x for x in (camera, mc, cal_mc)):
        return None
    s = Section("Camera and Monte Carlo")
    if isinstance(camera, dict) and camera:
        s.table(_key_value_table(camera, "Camera"))
    if isinstance(mc, dict) and mc:
        for t in _window_table(mc, "Monte Carlo summary per energy window"):
            s.table(t)
    if isinstance(cal_mc, dict) and cal_mc:
        for t in _window_table(cal_mc, "Monte Carlo summary per energy window of the calibration scan "
                                       "(counts, cps/MBq, scatter-to-total, scatter orders)"):
            s.table(t)
    return s


def _calibration_data(study_dir: Path, summary: dict) -> dict:
    """``summary["calibration"]`` completed by ``calibration/calibration.json``."""
    cal = dict(summary["calibration"]) if isinstance(summary.get("calibration"), dict) else {}
    from_file = _read_json_file(study_dir / CALIBRATION_JSON)
    if isinstance(from_file, dict):
        for k, v in from_file.items():
            cal.setdefault(k, v)
    return cal


def _calibration(cal: dict, figures: list) -> Section | None:
    cal = {k: v for k, v in cal.items() if k not in ("mc_summary", "mc_stats")}
    cal_figs = [f for f in figures if f.group == "calibration"]
    if not cal and not cal_figs:
        return None
    s = Section("Calibration")
    rc_tables = {k: cal.pop(k) for k in [k for k, v in cal.items() if k.startswith("rc") and isinstance(v, dict)]}
    if cal:
        s.table(_key_value_table(cal, "Calibration factors and scan"))
    if rc_tables:
        diameters = sorted({str(d) for t in rc_tables.values() for d in t},
                           key=lambda d: (_number(d) is None, _number(d) or 0.0, d))
        names = list(rc_tables)
        s.table(Table(["sphere diameter (mm)"] + [f"{n} (recovery coefficient)" for n in names],
                      [[d] + [format_value(rc_tables[n].get(d)) for n in names] for d in diameters],
                      "Recovery coefficients of the calibration spheres (measured / true concentration)"))
    for f in cal_figs:
        s.figure(f)
    return s


def bias_summary(rows: list, columns: list) -> Table | None:
    """Mean relative bias and RMS relative error of each measured/PVC column against its ``true_*`` column.

    A column ``X`` (or ``pvc_<method>_X``) is compared with ``true_X`` when that column
    exists (``suvmean`` with ``true_suvmean`` or ``true_suv``); rows where either value is
    missing, not finite or the truth is 0 are skipped.
    """
    out = []
    for c in columns:
        base = c.split("_", 2)[2] if c.startswith("pvc_") and c.count("_") >= 2 else c
        if c.startswith("true_"):
            continue
        truth = next((t for t in _TRUTH_OF.get(base, (f"true_{base}",)) if t in columns), None)
        if truth is None:
            continue
        rel = []
        for r in rows:
            m, t = _number(r.get(c)), _number(r.get(truth))
            if m is None or t is None or not math.isfinite(m) or not math.isfinite(t) or t == 0:
                continue
            rel.append((m - t) / t)
        if rel:
            mean = sum(rel) / len(rel)
            rms = math.sqrt(sum(x * x for x in rel) / len(rel))
            out.append([c, truth, str(len(rel)), f"{100 * mean:+.1f}", f"{100 * rms:.1f}"])
    if not out:
        return None
    return Table(["measured", "truth", "n", "mean bias (%)", "RMS error (%)"], out,
                 "Relative error of each measured and partial-volume-corrected metric against the truth")


def _lesions(study_dir: Path) -> Section:
    s = Section("Lesions: true vs measured")
    columns, rows, source = read_lesion_table(study_dir)
    if not rows:
        s.text("No lesion table was found (results/lesions.csv and patients/*/lesions.json are missing or empty).")
        return s
    cols = order_lesion_columns(columns)
    b = bias_summary(rows, cols)
    if b is not None:
        s.table(b)
    shown = rows[:MAX_LESION_ROWS]
    note = (f"{len(rows)} lesion rows from {source}"
            + (f"; the first {MAX_LESION_ROWS} are shown" if len(rows) > MAX_LESION_ROWS else "")
            + ". Columns: identity, truth (true_*), measured, partial-volume corrected (pvc_<method>_*), other.")
    s.table(Table(cols, [[format_value(r.get(c)) for c in cols] for r in shown], note))
    return s


def threshold_table(threshold: dict) -> Table | None:
    """One row per metric/method: counts, Se/Sp/PPV/NPV/accuracy, AUC and Youden cut-off with intervals."""
    entries = [(k, v) for k, v in threshold.items() if isinstance(v, dict)]
    if not entries:
        return None
    cols = ["metric", "threshold", "n", "TP/FP/TN/FN"] + list(_RATES) + ["AUC", "Youden cut-off"]
    rows = []
    for name, r in entries:
        n = r.get("n_lesions", r.get("n"))
        counts = "/".join(format_value(r.get(k)) for k in ("tp", "fp", "tn", "fn")) if "tp" in r else "-"
        row = [name, format_value(r.get("threshold")), format_value(n), counts]
        row += [_with_ci(r.get(k), r.get(f"{k}_ci")) for k in _RATES]
        row += [_with_ci(r.get("auc"), r.get("auc_ci")), _with_ci(r.get("youden_threshold"), r.get("youden_ci"))]
        rows.append(row)
    return Table(cols, rows, "HER2 classification at the SUV threshold: value [95 % interval] "
                             "(proportions: Wilson/Clopper-Pearson; AUC and Youden cut-off: patient bootstrap)")


def _threshold(summary: dict) -> Section:
    s = Section("Threshold statistics")
    thr = summary.get("threshold")
    t = threshold_table(thr) if isinstance(thr, dict) else None
    if t is None:
        s.text("No threshold statistics in results/summary.json.")
        return s
    s.table(t)
    for name, r in thr.items():
        if isinstance(r, dict) and isinstance(r.get("undefined"), dict):
            for k, why in r["undefined"].items():
                s.text(f"{name}: {k} undefined ({why}).")
    return s


def _robustness(study_dir: Path, summary: dict) -> Section | None:
    """Noise robustness (issue 13): Se/Sp/AUC with realisation-nested patient-bootstrap intervals, call
    stability and P(SUVmax >= threshold) per lesion with its figure, from ``summary["robustness"]``."""
    rob = summary.get("robustness")
    if not isinstance(rob, dict):
        return None
    s = Section("Threshold robustness under image noise")
    n = rob.get("noise_realisations")
    if rob.get("undefined"):
        s.text(f"Not available: {rob['undefined']}.")
        return s
    s.text(f"Every scan was reconstructed from {format_value(n)} independent Poisson realisations of the same "
           f"expected projections. Intervals come from a bootstrap over patients in which each drawn scan also "
           f"draws one of its realisations, so they hold sampling and image noise; estimates are means over "
           f"realisations; 'noise only' is the range over realisations with the cohort fixed. Median "
           f"within-lesion wCV over realisations: SUVmax {format_value(rob.get('suvmax_wcv_pct_median'))} %, "
           f"SUVmean {format_value(rob.get('suvmean_wcv_pct_median'))} %.")
    rows, notes = [], []
    for metric, per_t in (rob.get("threshold_with_noise") or {}).items():
        for t, e in per_t.items():
            if not isinstance(e, dict) or "se" not in e:
                notes.append(f"{metric} at {t}: Se/Sp/AUC undefined ("
                             f"{e.get('undefined', 'no data') if isinstance(e, dict) else e}).")
                continue
            rows.append([metric, t, format_value(e.get("n_patients")), format_value(e.get("n_lesions"))]
                        + [_with_ci(e[k]["estimate"], e[k]["ci"]) + "; noise only "
                           + "-".join(format_value(x) for x in (e["noise_only"].get(k) or []))
                           for k in ("se", "sp", "auc")])
    if rows:
        s.table(Table(["metric", "time", "patients", "lesions", "Se", "Sp", "AUC"], rows,
                      f"At SUVmax >= {format_value(rob.get('threshold'))}: estimate [95 % interval, realisations "
                      "nested in the patient bootstrap]"))
    for note in notes:
        s.text(note)
    cs = rob.get("call_stability")
    if isinstance(cs, dict) and "undefined" not in cs:
        s.table(_key_value_table({k: v for k, v in cs.items() if k != "unstable"}, "Call stability per lesion",
                                 "quantity"))
        un = cs.get("unstable") or []
        if un:
            s.table(Table(["patient", "lesion", "time (h)", "P(positive)", "true SUV", "diameter (mm)"],
                          [[str(u["patient_id"]), format_value(u["lesion_id"]), format_value(u["time_h"]),
                            format_value(u["p_positive"]), format_value(u.get("true_suv")),
                            format_value(u.get("diameter_mm"))] for u in un[:MAX_LESION_ROWS]],
                          "Lesions whose call changes between realisations"))
    pp = rob.get("p_positive") or []
    if pp:
        metrics = sorted({m for e in pp for m in e.get("p_positive", {})}, key=lambda m: (m != "suvmax", m))
        s.table(Table(["patient", "lesion", "time (h)", "true SUV", "diameter (mm)", "HER2+"]
                      + [f"P({m} >= thr)" for m in metrics],
                      [[str(e["patient_id"]), format_value(e["lesion_id"]), format_value(e["time_h"]),
                        format_value(e.get("true_suv")), format_value(e.get("diameter_mm")),
                        format_value(e.get("her2_positive"))]
                       + [format_value(e["p_positive"].get(m)) for m in metrics] for e in pp[:MAX_LESION_ROWS]],
                      "Fraction of realisations reading positive, per lesion and time point"))
    fig = rob.get("figure")
    if fig:
        p = Path(str(fig))
        p = p if p.is_absolute() else study_dir / p
        if not p.exists() and (study_dir / FIGURES_DIR / p.name).exists():
            p = study_dir / FIGURES_DIR / p.name  # study folder moved after the run
        s.figure(Figure(p, figure_caption(p)))
    return s


def _manifest_seconds(study_dir: Path) -> dict:
    """Run time (s) of each stage from its ``.stages/<stage>.json`` manifest."""
    from her2sim.stages import MANIFEST_DIR, read_manifest

    folder = study_dir / MANIFEST_DIR
    out = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        m = read_manifest(study_dir, p.stem)
        if m is not None and _number(m.get("seconds")) is not None:
            out[p.stem] = m["seconds"]
    return out


def _exists(study_dir: Path, path) -> bool:
    p = Path(str(path))
    return (p if p.is_absolute() else study_dir / p).exists()


def _runtime(study_dir: Path, summary: dict) -> Section | None:
    secs = summary.get("stage_seconds")
    caption = "Stage run times"
    if not (isinstance(secs, dict) and secs):
        secs, caption = _manifest_seconds(study_dir), "Stage run times (from the .stages manifests)"
    outs = summary.get("outputs")
    if not secs and not (isinstance(outs, dict) and outs):
        return None
    s = Section("Stages and outputs")
    if secs:
        rows = [[k, format_value(v)] for k, v in secs.items()]
        total = sum(_number(v) for v in secs.values() if _number(v) is not None)
        s.table(Table(["stage", "seconds"], rows + [["total", format_value(total)]], caption))
    if isinstance(outs, dict) and outs:
        rows = []
        for k, v in outs.items():
            if isinstance(v, (list, tuple)):
                n_ok = sum(_exists(study_dir, x) for x in v)
                rows.append([k, f"{len(v)} files", f"{n_ok}/{len(v)} present"])
            elif isinstance(v, dict):
                rows.append([k, json.dumps(v, sort_keys=True), "-"])
            else:
                rows.append([k, str(v), "yes" if _exists(study_dir, v) else "missing"])
        s.table(Table(["output", "path", "present"], rows, "Outputs"))
    return s


def _statistics(summary: dict) -> Section | None:
    stats = summary.get("statistics")
    if not (isinstance(stats, dict) and stats):
        return None
    s = Section("Seed-paper statistics")
    s.text("Group comparisons, rank correlation with IHC and agreement with the truth, per time point "
           "(the analyses of the seed trial; values from results/summary.json).")
    for key, entry in stats.items():
        if isinstance(entry, dict) and entry:
            s.table(_key_value_table(entry, f"{key}", "statistic"))
        else:
            s.text(f"{key}: {format_value(entry)}")
    return s


def _figures(figures: list) -> Section:
    s = Section("Figures")
    res = [f for f in figures if f.group == "results"]
    if not res:
        s.text("No figures were found in results/figures.")
    for f in res:
        s.figure(f)
    return s


def _reproduce(study_dir: Path, summary: dict, toml: dict) -> Section:
    s = Section("How to reproduce")
    seed = _seeds(summary, toml).get("study")
    toml_path = _resolved_study_path(study_dir)
    lines = []
    if toml_path.is_file():
        from her2sim.stages import file_sha256
        lines.append(f"{toml_path.name} in this folder is the resolved configuration (every default filled in; "
                     f"sha256 {file_sha256(toml_path)}).")
    out_dir = toml.get("study", {}).get("output_dir") if isinstance(toml.get("study"), dict) else None
    lines.append("With the package versions listed above, run the commands below"
                 + (f" (outputs go to [study] output_dir = {out_dir})" if out_dir else "") + ":")
    s.text(" ".join(lines))
    s.pre(f"cp {study_dir.name}/{toml_path.name} study.toml\n"
          "her2sim run study.toml\n"
          f"her2sim status {study_dir.name}\n"
          f"her2sim report {study_dir.name} --format html")
    s.text(("The master seed " + format_value(seed) + " fixes every random stream, so the same configuration "
            "gives the same results; finished stages are skipped on a rerun (see .stages/*.json)."
            ) if seed is not None else
           "Every random stream is derived from the seeds listed above, so the same configuration gives the "
           "same results; finished stages are skipped on a rerun (see .stages/*.json).")
    return s


def build_sections(study_dir, summary: dict) -> list:
    """The report's sections: study, camera/MC, calibration, lesions, threshold, statistics, figures, stages, reproduce."""
    study_dir = Path(study_dir)
    figures = find_figures(study_dir, summary)
    toml = _study_toml(study_dir)
    cal = _calibration_data(study_dir, summary)
    parts = [_overview(study_dir, summary, toml), _camera_mc(summary, cal), _calibration(cal, figures),
             _lesions(study_dir), _threshold(summary), _robustness(study_dir, summary), _statistics(summary),
             _figures(figures),
             _runtime(study_dir, summary), _reproduce(study_dir, summary, toml)]
    return [p for p in parts if p is not None]


# ---------------------------------------------------------------------------- renderers
_CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.85em}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}caption{caption-side:top;text-align:left;font-style:italic}
pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.85em}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-style:italic}
.scroll{overflow-x:auto}"""


def _data_uri(path: Path) -> str:
    mime = IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _rel(path: Path, study_dir: Path) -> str:
    try:
        return path.relative_to(study_dir).as_posix()
    except ValueError:
        return path.as_posix()


def render_html(title: str, sections: list, study_dir: Path) -> str:
    """One HTML page; figures embedded as base64 data URIs."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>", "<nav><ul>"]
    anchors = [re.sub(r"[^a-z0-9]+", "-", s.title.lower()).strip("-") for s in sections]
    out += [f'<li><a href="#{a}">{e(s.title)}</a></li>' for s, a in zip(sections, anchors)]
    out.append("</ul></nav>")
    for s, a in zip(sections, anchors):
        out.append(f'<h2 id="{a}">{e(s.title)}</h2>')
        for kind, b in s.blocks:
            if kind == "p":
                out.append(f"<p>{e(b)}</p>")
            elif kind == "pre":
                out.append(f"<pre>{e(b)}</pre>")
            elif kind == "table":
                out.append('<div class="scroll"><table>')
                if b.caption:
                    out.append(f"<caption>{e(b.caption)}</caption>")
                out.append("<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in b.columns) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b.rows]
                out.append("</table></div>")
            elif kind == "figure":
                rel = _rel(b.path, study_dir)
                if b.path.is_file():
                    out.append(f'<figure><img src="{_data_uri(b.path)}" alt="{e(rel)}">'
                               f"<figcaption>{e(b.caption)} ({e(rel)})</figcaption></figure>")
                else:
                    out.append(f"<p>Figure {e(rel)} is listed in the summary but missing.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list, study_dir: Path, report_dir: Path) -> str:
    """Markdown text; figures linked by paths relative to ``report_dir``."""
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for kind, b in s.blocks:
            if kind == "p":
                out += [b, ""]
            elif kind == "pre":
                fence = "````" if "```" in b else "```"
                out += [fence, b, fence, ""]
            elif kind == "table":
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out.append("| " + " | ".join(_md_cell(c) for c in b.columns) + " |")
                out.append("|" + "|".join("---" for _ in b.columns) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
                out.append("")
            elif kind == "figure":
                rel = _rel(b.path, study_dir)
                if b.path.is_file():
                    link = Path(os.path.relpath(b.path, report_dir)).as_posix()
                    out += [f"![{b.caption}]({link})", "", f"*{b.caption}* ({rel})", ""]
                else:
                    out += [f"Figure {rel} is listed in the summary but missing.", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------- entry point
def normalise_format(fmt: str) -> str:
    """``'html'``/``'htm'`` -> ``'html'``, ``'markdown'``/``'md'`` -> ``'markdown'``; ConfigError otherwise."""
    key = str(fmt).lower() if isinstance(fmt, str) else fmt
    if key not in _FORMAT_ALIASES:
        raise ConfigError(f"report format = {fmt!r} is not allowed; choose one of {list(REPORT_FORMATS)}")
    return _FORMAT_ALIASES[key]


def report_path(study_dir, fmt: str = "html") -> Path:
    """``<study_dir>/report.html`` or ``<study_dir>/report.md``."""
    return Path(study_dir) / ("report.html" if normalise_format(fmt) == "html" else "report.md")


def write_report(study_dir, fmt: str = "html", out=None) -> Path:
    """Write the study report and return its path.

    Parameters
    ----------
    study_dir : path-like
        A study folder holding at least ``results/summary.json``.
    fmt : str
        ``"html"`` (self-contained, figures embedded as base64 data URIs) or
        ``"markdown"`` (figures linked by relative paths).
    out : path-like or None
        Destination; default ``<study_dir>/report.html`` or ``report.md``.

    Raises
    ------
    DataError
        ``results/summary.json`` (or another file read) is missing or corrupt; the message names the file.
    ConfigError
        ``fmt`` is not a report format, or ``study_dir`` is not a folder.
    """
    fmt = normalise_format(fmt)
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise DataError(f"{study_dir}: study folder does not exist")
    summary = load_summary(study_dir)
    sections = build_sections(study_dir, summary)
    title = f"her2sim study report: {summary.get('study', study_dir.name)}"
    dest = Path(out) if out is not None else report_path(study_dir, fmt)
    if fmt == "html":
        text = render_html(title, sections, study_dir)
    else:
        text = render_markdown(title, sections, study_dir, dest.resolve().parent)
    path = write_text_atomic(dest, text)
    _share_permissions(path)
    return path


def _share_permissions(path: Path) -> None:
    """Give ``path`` the permissions of a plainly created file (0666 minus the umask).

    The atomic writer's temporary file is created 0600 by :func:`tempfile.mkstemp`; a report
    is meant to be read by others.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


__all__ = ["write_report", "load_summary", "read_lesion_table", "order_lesion_columns", "find_figures",
           "figure_caption", "threshold_table", "bias_summary", "build_sections", "render_html",
           "render_markdown", "report_path", "normalise_format", "format_value", "REPORT_FORMATS"]
