"""Diagnostic performance of an SUV threshold for HER2 status.

The seed trial (Zhao et al., Breast Cancer Res 26:40, 2024) proposes SUVmax = 1.5
as the cut-off between HER2-positive and HER2-negative imaging. This module scores
any lesion-level measurement against the truth (``validation_targets.md``):

* Se, Sp, PPV, NPV and accuracy at a fixed threshold (lesion positive when
  ``value >= threshold``) with Wilson score or Clopper-Pearson intervals;
* ROC and AUC with :mod:`sklearn.metrics`;
* Youden-optimal cut-off (max Se + Sp - 1);
* bootstrap intervals of AUC and of the Youden cut-off that resample *patients*
  (all lesions of a resampled patient come along), seeded, 2000 replicates;
* a visual-read model: lesion-to-background ratio and the Rose criterion
  ``CNR = (lesion - background) / SD_background >= k`` (k = 4 by default;
  Rose, "Vision: Human and Electronic", 1973).

A metric whose denominator is empty (e.g. sensitivity without positive lesions)
is reported as ``None`` with the reason in ``undefined``; ROC/AUC with a single
truth class raise :class:`~her2sim.core.errors.DataError`.

Command line: ``python -m her2sim.analysis.threshold lesions.csv --threshold 1.5
--metric suvmax --seed 1 --json`` (CSV columns ``patient_id, lesion_id,
her2_positive, ihc, suvmax[, suvmean, suvpeak, true_suv]``).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats
from sklearn import metrics

from her2sim.core.errors import ConfigError, DataError, check_choice, check_int, check_range

#: Proposed SUVmax cut-off of the seed trial.
SEED_THRESHOLD_SUV = 1.5
CI_METHODS = ("wilson", "clopper-pearson")


# ----------------------------------------------------------------------------- intervals
def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple:
    """Wilson score interval of a binomial proportion k/n (two-sided, level 1 - alpha)."""
    k = check_int("k", int(k), 0, None)
    n = check_int("n", int(n), 1, None)
    if k > n:
        raise ConfigError(f"k = {k} must not exceed n = {n}")
    a = check_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    z = stats.norm.ppf(1 - a / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = 0.0 if k == 0 else float(max(0.0, centre - half))  # the bounds are exactly 0 / 1 at k = 0 / n
    hi = 1.0 if k == n else float(min(1.0, centre + half))
    return (lo, hi)


def clopper_pearson_interval(k: int, n: int, alpha: float = 0.05) -> tuple:
    """Exact (Clopper-Pearson) interval from beta quantiles (scipy.stats.beta)."""
    k = check_int("k", int(k), 0, None)
    n = check_int("n", int(n), 1, None)
    if k > n:
        raise ConfigError(f"k = {k} must not exceed n = {n}")
    a = check_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)


def proportion_interval(k: int, n: int, alpha: float = 0.05, method: str = "wilson") -> tuple:
    """Interval of k/n by ``method`` in {'wilson', 'clopper-pearson'}."""
    check_choice("ci_method", method, CI_METHODS)
    return wilson_interval(k, n, alpha) if method == "wilson" else clopper_pearson_interval(k, n, alpha)


# ----------------------------------------------------------------------------- inputs
def _truth_values(truth, values) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(truth)
    v = np.asarray(values, dtype=float)
    if t.ndim != 1 or v.ndim != 1 or t.shape != v.shape:
        raise DataError(f"truth {t.shape} and values {v.shape} must be 1-D arrays of equal length")
    if t.size == 0:
        raise DataError("no lesions: truth and values are empty")
    if t.dtype != bool:
        if not np.all(np.isin(t, (0, 1))):
            raise DataError("truth must be boolean (HER2 positive = True / 1)")
        t = t.astype(bool)
    if not np.all(np.isfinite(v)):
        raise DataError("values contain NaN or infinite entries")
    return t, v


def _require_both_classes(t: np.ndarray, what: str) -> None:
    n_pos = int(t.sum())
    if n_pos == 0 or n_pos == t.size:
        cls = "positive" if n_pos else "negative"
        raise DataError(f"{what} is undefined: all {t.size} lesions are HER2-{cls}; "
                        "it needs at least one positive and one negative lesion")


# ----------------------------------------------------------------------------- fixed threshold
def confusion_counts(truth, values, threshold: float = SEED_THRESHOLD_SUV) -> dict:
    """TP, FP, TN, FN with a lesion called positive when ``value >= threshold``."""
    t, v = _truth_values(truth, values)
    thr = check_range("threshold", threshold, None, None)
    call = v >= thr
    return {"tp": int(np.sum(call & t)), "fp": int(np.sum(call & ~t)),
            "tn": int(np.sum(~call & ~t)), "fn": int(np.sum(~call & t))}


def binary_metrics(truth, values, threshold: float = SEED_THRESHOLD_SUV, *, alpha: float = 0.05,
                   ci_method: str = "wilson") -> dict:
    """Se, Sp, PPV, NPV, accuracy at ``threshold`` with (1 - alpha) intervals.

    Returns
    -------
    dict
        ``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``accuracy`` (float or
        ``None`` when undefined), ``<name>_ci`` (tuple or ``None``), the counts,
        ``threshold``, ``ci_method`` and ``undefined`` (name -> reason).
    """
    check_choice("ci_method", ci_method, CI_METHODS)
    c = confusion_counts(truth, values, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    parts = {"sensitivity": (tp, tp + fn, "no HER2-positive lesions"),
             "specificity": (tn, tn + fp, "no HER2-negative lesions"),
             "ppv": (tp, tp + fp, "no lesion called positive"),
             "npv": (tn, tn + fn, "no lesion called negative"),
             "accuracy": (tp + tn, tp + tn + fp + fn, "no lesions")}
    out: dict = dict(c)
    out.update({"threshold": float(threshold), "ci_method": ci_method, "undefined": {}})
    for name, (k, n, why) in parts.items():
        if n == 0:
            out[name], out[f"{name}_ci"] = None, None
            out["undefined"][name] = why
        else:
            out[name] = k / n
            out[f"{name}_ci"] = proportion_interval(k, n, alpha, ci_method)
    return out


# ----------------------------------------------------------------------------- ROC
def roc_table(truth, values) -> dict:
    """ROC curve (sklearn.metrics.roc_curve, all thresholds kept) and AUC.

    Returns
    -------
    dict
        ``fpr``, ``tpr``, ``thresholds`` (numpy arrays; a lesion is positive when
        ``value >= threshold``; the first threshold is +inf) and ``auc``.
    """
    t, v = _truth_values(truth, values)
    _require_both_classes(t, "ROC/AUC")
    fpr, tpr, thr = metrics.roc_curve(t, v, drop_intermediate=False)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": float(metrics.roc_auc_score(t, v))}


def auc(truth, values) -> float:
    """Area under the ROC curve (probability that a positive lesion scores above a negative one)."""
    t, v = _truth_values(truth, values)
    _require_both_classes(t, "AUC")
    return float(metrics.roc_auc_score(t, v))


def youden_threshold(truth, values) -> dict:
    """Cut-off maximising Youden's J = Se + Sp - 1.

    The cut-off is an observed value (positive when ``value >= cut-off``); ties in J
    go to the highest cut-off (the most specific one).

    Returns
    -------
    dict
        ``threshold``, ``j``, ``sensitivity``, ``specificity``.
    """
    r = roc_table(truth, values)
    fin = np.isfinite(r["thresholds"])
    j = r["tpr"] - r["fpr"]
    j = np.where(fin, j, -np.inf)
    i = int(np.argmax(j))  # thresholds decrease along the curve: first max = highest cut-off
    return {"threshold": float(r["thresholds"][i]), "j": float(j[i]), "sensitivity": float(r["tpr"][i]),
            "specificity": float(1.0 - r["fpr"][i])}


def _roc_points_fast(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct value, highest first, without the (0, 0) point.

    Same points as ``sklearn.metrics.roc_curve(drop_intermediate=False)`` minus its
    leading +inf threshold; no input checks (used inside bootstrap loops).
    """
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    order = np.argsort(-v, kind="mergesort")
    vs, ts = v[order], t[order]
    tps = np.cumsum(ts)
    fps = np.arange(1, t.size + 1) - tps
    last = np.r_[np.flatnonzero(vs[1:] != vs[:-1]), t.size - 1]
    return fps[last] / n_neg, tps[last] / n_pos, vs[last]


def _auc_and_youden_fast(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """AUC (Mann-Whitney with mid-ranks) and Youden cut-off without sklearn's input checks.

    Same numbers as :func:`auc` and :func:`youden_threshold` (tested against
    sklearn), much faster; used inside the bootstrap loop.
    """
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    ranks = stats.rankdata(v)
    a = (ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    fpr, tpr, thr = _roc_points_fast(t, v)
    return float(a), float(thr[int(np.argmax(tpr - fpr))])


def bootstrap_roc(truth, values, patient_ids, *, n_boot: int = 2000, seed: int = 1, alpha: float = 0.05) -> dict:
    """Patient-level bootstrap of AUC and of the Youden-optimal cut-off.

    Each replicate draws as many patients as there are, with replacement, and keeps
    all lesions of every drawn patient (lesions of one patient are correlated).
    Replicates that contain a single truth class cannot give an AUC; they are
    skipped and counted in ``n_skipped``. Percentile intervals.

    Parameters
    ----------
    truth, values, patient_ids : 1-D arrays of equal length
    n_boot : int
        Replicates (10-100000; 2000 by default, ``validation_targets.md``).
    seed : int
        Seed of ``numpy.random.default_rng``.
    alpha : float
        1 - confidence level.

    Returns
    -------
    dict
        ``auc``, ``auc_ci``, ``youden_threshold``, ``youden_ci``, ``auc_samples``,
        ``youden_samples``, ``n_valid``, ``n_skipped``.
    """
    t, v = _truth_values(truth, values)
    pid = np.asarray(patient_ids)
    if pid.shape != t.shape:
        raise DataError(f"patient_ids {pid.shape} must have one entry per lesion {t.shape}")
    nb = check_int("n_boot", n_boot, 10, 100000)
    a = check_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    point_auc = auc(t, v)
    point_youden = youden_threshold(t, v)["threshold"]
    patients, inverse = np.unique(pid, return_inverse=True)
    members = [np.flatnonzero(inverse == i) for i in range(patients.size)]
    rng = np.random.default_rng(seed)
    aucs, cuts = [], []
    skipped = 0
    for _ in range(nb):
        draw = rng.integers(0, patients.size, size=patients.size)
        idx = np.concatenate([members[i] for i in draw])
        tb, vb = t[idx], v[idx]
        if tb.all() or not tb.any():
            skipped += 1
            continue
        a_b, cut_b = _auc_and_youden_fast(tb, vb)
        aucs.append(a_b)
        cuts.append(cut_b)
    if len(aucs) < max(10, nb // 2):
        raise DataError(f"bootstrap: only {len(aucs)} of {nb} patient resamples contain both HER2 classes; "
                        "too few patients of one class for a bootstrap interval")
    aucs, cuts = np.asarray(aucs), np.asarray(cuts)
    q = [100 * a / 2, 100 * (1 - a / 2)]
    return {"auc": point_auc, "auc_ci": tuple(float(x) for x in np.percentile(aucs, q)),
            "youden_threshold": point_youden, "youden_ci": tuple(float(x) for x in np.percentile(cuts, q)),
            "auc_samples": aucs, "youden_samples": cuts, "n_valid": int(aucs.size), "n_skipped": int(skipped)}


def call_rate_by_group(values, groups, threshold: float = SEED_THRESHOLD_SUV, *, alpha: float = 0.05,
                       ci_method: str = "wilson") -> dict:
    """P(value >= threshold) per group with an interval, e.g. per true class x lesion size x PVC method.

    Parameters
    ----------
    values : 1-D array
    groups : 1-D array of hashable labels (one per value)
    threshold : float

    Returns
    -------
    dict
        group -> {``n``, ``n_positive``, ``rate``, ``ci``}.
    """
    v = np.asarray(values, dtype=float).ravel()
    g = np.asarray(groups).ravel()
    if v.shape != g.shape or v.size == 0:
        raise DataError(f"values {v.shape} and groups {g.shape} must be non-empty and of equal length")
    if not np.all(np.isfinite(v)):
        raise DataError("values contain NaN or infinite entries")
    thr = check_range("threshold", threshold, None, None)
    out = {}
    for k in np.unique(g):
        sel = g == k
        n, kpos = int(sel.sum()), int(np.sum(v[sel] >= thr))
        key = k.item() if hasattr(k, "item") else k
        out[key] = {"n": n, "n_positive": kpos, "rate": kpos / n,
                    "ci": proportion_interval(kpos, n, alpha, ci_method)}
    return out


# ----------------------------------------------------------------------------- visual read
def visual_read(lesion_mean, background_mean, background_sd, *, k: float = 4.0, min_ratio: float = 1.0) -> dict:
    """Visual-read model: lesion seen as positive when brighter than background and detectable.

    The seed trial calls a lesion positive when its uptake exceeds the surrounding
    background; detectability follows the Rose criterion ``CNR >= k``.

    Parameters
    ----------
    lesion_mean, background_mean : float or array
        Mean uptake of the lesion and of the surrounding background (same units).
    background_sd : float or array
        Voxel SD of the background (> 0).
    k : float
        Rose threshold (default 4; range (0, 100]).
    min_ratio : float
        Lesion-to-background ratio that must be exceeded (default 1).

    Returns
    -------
    dict
        ``ratio``, ``cnr``, ``positive`` (arrays or scalars).
    """
    kk = check_range("k", k, 0.0, 100.0, lo_open=True)
    mr = check_range("min_ratio", min_ratio, 0.0, None)
    lm = np.asarray(lesion_mean, dtype=float)
    bm = np.asarray(background_mean, dtype=float)
    sd = np.asarray(background_sd, dtype=float)
    if np.any(bm <= 0):
        raise DataError("background_mean must be > 0 for a lesion-to-background ratio")
    if np.any(sd <= 0):
        raise DataError("background_sd must be > 0 for a contrast-to-noise ratio")
    ratio = lm / bm
    cnr = (lm - bm) / sd
    pos = (ratio > mr) & (cnr >= kk)
    scal = lambda x: x.item() if np.ndim(x) == 0 else x  # noqa: E731
    return {"ratio": scal(ratio), "cnr": scal(cnr), "positive": scal(pos)}


# ----------------------------------------------------------------------------- full evaluation
def evaluate_threshold(truth, values, patient_ids, *, threshold: float = SEED_THRESHOLD_SUV, n_boot: int = 2000,
                       seed: int = 1, alpha: float = 0.05, ci_method: str = "wilson") -> dict:
    """Fixed-threshold metrics, AUC and Youden cut-off with patient-bootstrap intervals.

    AUC-related entries are ``None`` (and explained in ``undefined``) when the
    truth holds a single class.
    """
    t, v = _truth_values(truth, values)
    pid = np.asarray(patient_ids)
    out = binary_metrics(t, v, threshold, alpha=alpha, ci_method=ci_method)
    out["n_lesions"] = int(t.size)
    out["n_patients"] = int(np.unique(pid).size)
    out["n_positive"] = int(t.sum())
    out["n_negative"] = int((~t).sum())
    try:
        b = bootstrap_roc(t, v, pid, n_boot=n_boot, seed=seed, alpha=alpha)
        out.update({k: b[k] for k in ("auc", "auc_ci", "youden_threshold", "youden_ci", "n_skipped")})
        out["n_boot"] = int(n_boot)
    except DataError as exc:
        for k in ("auc", "auc_ci", "youden_threshold", "youden_ci"):
            out[k] = None
            out["undefined"][k] = str(exc)
    out["seed"] = int(seed)
    return out


# ----------------------------------------------------------------------------- CSV + CLI
CSV_REQUIRED = ("patient_id", "lesion_id", "her2_positive", "ihc", "suvmax")
CSV_METRICS = ("suvmax", "suvmean", "suvpeak", "true_suv")


def _parse_bool(text: str, row: int, where: str = "lesion CSV") -> bool:
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "y", "pos", "positive", "+"):
        return True
    if s in ("0", "false", "no", "n", "neg", "negative", "-"):
        return False
    raise DataError(f"{where} line {row}: her2_positive = {text!r} is not a boolean (1/0, true/false)")


def read_lesion_csv(path) -> dict:
    """Read a lesion table, strictly.

    Columns ``patient_id, lesion_id, her2_positive, ihc, suvmax`` are required;
    ``suvmean, suvpeak, true_suv`` optional. Returns column name -> numpy array
    (``her2_positive`` bool, ``ihc`` int, SUV columns float; an empty cell, ``nan`` or
    ``inf`` is kept as NaN/inf for the caller to count and drop).

    The file must be UTF-8 (a leading byte-order mark is accepted, as spreadsheet programs
    write it); every row must have as many fields as the header; column names must be unique.

    Raises
    ------
    DataError
        Naming the file, the line number and the column: missing file, not UTF-8, ragged
        row, duplicate or missing column, a non-numeric SUV, an IHC score outside 0-3, an
        empty patient or lesion id.
    """
    p = Path(path)
    name = repr(str(p))
    if not p.is_file():
        raise DataError(f"lesion CSV {name} does not exist")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"lesion CSV {name} line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8; save the file "
                        "as UTF-8 (CSV UTF-8 in spreadsheet programs)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(c.strip() for c in header):  # leading blank lines
            header = next(reader, None)
        if header is None:
            raise DataError(f"lesion CSV {name} is empty; required columns {list(CSV_REQUIRED)}")
        cols = [c.strip() for c in header]
        for i, c in enumerate(cols):
            if not c:
                raise DataError(f"lesion CSV {name} line {reader.line_num}: column {i + 1} of the header has no name")
            if c in cols[:i]:
                raise DataError(f"lesion CSV {name} line {reader.line_num}: column {c!r} appears twice in the "
                                "header; column names must be unique")
        missing = [c for c in CSV_REQUIRED if c not in cols]
        if missing:
            raise DataError(f"lesion CSV {name} lacks column(s) {missing}; required {list(CSV_REQUIRED)}")
        rows, lines = [], []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(cols):
                raise DataError(f"lesion CSV {name} line {reader.line_num}: {len(fields)} field(s) but the header "
                                f"has {len(cols)}; every row needs one value per column")
            rows.append({c: f.strip() for c, f in zip(cols, fields)})
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"lesion CSV {name} line {reader.line_num}: not valid CSV ({exc})") from None
    if not rows:
        raise DataError(f"lesion CSV {name} has no data rows")
    for key in ("patient_id", "lesion_id"):
        for r, ln in zip(rows, lines):
            if not r[key]:
                raise DataError(f"lesion CSV {name} line {ln}: {key} is empty")
    out: dict = {"patient_id": np.array([r["patient_id"] for r in rows]),
                 "lesion_id": np.array([r["lesion_id"] for r in rows]),
                 "her2_positive": np.array([_parse_bool(r["her2_positive"], ln, f"lesion CSV {name}")
                                            for r, ln in zip(rows, lines)])}
    ihc = []
    for r, ln in zip(rows, lines):
        try:
            v = float(r["ihc"])
        except ValueError:
            v = float("nan")
        if not (np.isfinite(v) and v == int(v) and 0 <= v <= 3):
            raise DataError(f"lesion CSV {name} line {ln}: ihc = {r['ihc']!r} must be an integer 0-3")
        ihc.append(int(v))
    out["ihc"] = np.array(ihc)
    for c in CSV_METRICS:
        if c in cols:
            vals = []
            for r, ln in zip(rows, lines):
                cell = r[c]
                if cell == "":
                    vals.append(np.nan)
                    continue
                try:
                    vals.append(float(cell))
                except ValueError:
                    raise DataError(f"lesion CSV {name} line {ln}: {c} = {cell!r} is not a number "
                                    "(leave the cell empty for a missing value)") from None
            out[c] = np.array(vals, dtype=float)
    return out


def write_lesion_csv(rows, path) -> Path:
    """Write lesion rows (dicts) as a CSV that :func:`read_lesion_csv` and the CLI accept.

    Every row needs ``patient_id, lesion_id, her2_positive, ihc, suvmax``; other keys
    (``suvmean``, ``suvpeak``, ``true_suv``, ...) become extra columns in first-seen order.
    """
    rows = list(rows)
    if not rows:
        raise DataError("write_lesion_csv: no rows")
    cols = list(CSV_REQUIRED)
    for r in rows:
        missing = [c for c in CSV_REQUIRED if c not in r]
        if missing:
            raise DataError(f"write_lesion_csv: row {r!r} lacks {missing}")
        cols += [k for k in r if k not in cols]
    from her2sim.core.atomic import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:  # a kill leaves no half CSV
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            out = dict(r)
            out["her2_positive"] = int(bool(out["her2_positive"]))
            w.writerow(out)
    return p


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m her2sim.analysis.threshold",
                                 description="Score an SUV threshold for HER2 status from a lesion CSV "
                                             "(columns patient_id, lesion_id, her2_positive, ihc, suvmax"
                                             "[, suvmean, suvpeak, true_suv]).")
    ap.add_argument("csv", help="lesion table (CSV)")
    from her2sim.core.limits import float_range, int_range
    ap.add_argument("--threshold", type=float_range(0.0, 100.0, lo_open=True), default=SEED_THRESHOLD_SUV,
                    help="cut-off (default 1.5)")
    ap.add_argument("--metric", default="suvmax", choices=CSV_METRICS, help="column to score (default suvmax)")
    ap.add_argument("--seed", type=int_range(0, 2 ** 63 - 1), default=1, help="bootstrap seed (default 1)")
    ap.add_argument("--n-boot", type=int_range(0, 1_000_000), default=2000,
                    help="bootstrap replicates over patients (default 2000)")
    ap.add_argument("--alpha", type=float_range(0.0, 0.5, lo_open=True), default=0.05,
                    help="1 - confidence level (default 0.05)")
    ap.add_argument("--ci", default="wilson", choices=CI_METHODS, help="interval of proportions")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    try:
        table = read_lesion_csv(a.csv)
        if a.metric not in table:
            raise DataError(f"lesion CSV has no column {a.metric!r}")
        vals = table[a.metric]
        keep = np.isfinite(vals)
        if not np.any(keep):
            raise DataError(f"column {a.metric!r} has no numeric values")
        res = evaluate_threshold(table["her2_positive"][keep], vals[keep], table["patient_id"][keep],
                                 threshold=a.threshold, n_boot=a.n_boot, seed=a.seed, alpha=a.alpha,
                                 ci_method=a.ci)
        res["metric"] = a.metric
        res["n_missing"] = int((~keep).sum())
    except (ConfigError, DataError) as exc:
        print(f"her2sim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"her2sim: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(_jsonable(res)))
        return 0
    fmt = lambda x: "undefined" if x is None else f"{x:.3f}"  # noqa: E731
    fci = lambda c: "" if c is None else f" [{c[0]:.3f}, {c[1]:.3f}]"  # noqa: E731
    print(f"{res['n_lesions']} lesions in {res['n_patients']} patients ({res['n_positive']} HER2+); "
          f"{a.metric} >= {a.threshold:g}")
    for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        print(f"  {k:12s} {fmt(res[k])}{fci(res[k + '_ci'])}")
    print(f"  {'AUC':12s} {fmt(res['auc'])}{fci(res['auc_ci'])}")
    print(f"  {'Youden cut':12s} {fmt(res['youden_threshold'])}{fci(res['youden_ci'])}")
    for k, why in res["undefined"].items():
        print(f"  note: {k} undefined - {why}")
    if res["n_missing"]:
        print(f"  note: {res['n_missing']} row(s) dropped: {a.metric} empty, NaN or infinite")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
