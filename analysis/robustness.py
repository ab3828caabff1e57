"""Threshold robustness from many noise realisations per scan (issue 13).

The rows are the study's lesion rows (one per patient, lesion, time point and Poisson realisation
``realisation`` of the same expected projections). The helpers answer the trial team's question,
how often a lesion of a given true uptake and size reads SUVmax >= threshold, and put the noise into
the study's intervals:

* :func:`realisation_spread` - per lesion and time point, mean, SD and within-lesion coefficient of
  variation (wCV = SD / mean over realisations, %) of a metric: the noise-only repeatability, the
  quantity published as test-retest wCV;
* :func:`p_positive_table` - per lesion and time point, P(metric >= threshold) over realisations for
  SUVmax and every PVC-corrected SUVmax column;
* :func:`call_stability` - how often each lesion's call agrees across realisations (and between the
  time points);
* :func:`nested_bootstrap_threshold` - Se, Sp and AUC at the threshold with percentile intervals from
  a bootstrap over patients in which each drawn scan also draws one of its noise realisations
  (realisations nested in the patient bootstrap), so the interval holds sampling *and* image noise;
* :func:`robustness_summary` - all of the above for ``results/summary.json``
  (:func:`study_robustness_summary`: or why it is undefined, with one realisation per scan);
* :func:`plot_p_positive` - P(SUVmax >= threshold) against true SUV, by size bin and time point.

Randomness takes an explicit seed; the same seed gives the same result.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from her2sim.core.errors import DataError

#: lesion diameter bins (mm) of the P(positive) figure and table
SIZE_BINS_MM = (10.0, 15.0, 20.0, 30.0)


def size_bin(diameter_mm) -> str:
    """Label of the diameter bin (mm) of :data:`SIZE_BINS_MM`: "<10 mm", ..., ">=30 mm"."""
    if diameter_mm is None or not math.isfinite(float(diameter_mm)):
        return "unknown"
    for hi in SIZE_BINS_MM:
        if diameter_mm < hi:
            return f"<{hi:g} mm"
    return f">={SIZE_BINS_MM[-1]:g} mm"


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(float(v))


def suvmax_metrics(rows: list) -> list:
    """``suvmax`` and every PVC-corrected SUVmax column (``pvc_<method>_suvmax``) present in ``rows``."""
    keys = sorted({k for r in rows for k in r if k.startswith("pvc_") and k.endswith("_suvmax")})
    return (["suvmax"] if any("suvmax" in r for r in rows) else []) + keys


def _by_scan_lesion(rows: list) -> dict:
    """{(patient_id, lesion_id, time_h): [rows over realisations]}."""
    out: dict = {}
    for r in rows:
        out.setdefault((str(r["patient_id"]), int(r["lesion_id"]), float(r["time_h"])), []).append(r)
    return out


def realisation_spread(rows: list, metric: str = "suvmax") -> list:
    """Per lesion and time point: mean, SD (ddof = 1) and wCV (%) of ``metric`` over the realisations.

    Parameters
    ----------
    rows : list of dict
        Lesion rows with ``patient_id``, ``lesion_id``, ``time_h``, ``realisation`` and ``metric``.
    metric : str

    Returns
    -------
    list of dict
        One entry per (patient, lesion, time) with at least 2 finite values: ``patient_id``,
        ``lesion_id``, ``time_h``, ``true_suv``, ``diameter_mm``, ``n``, ``mean``, ``sd``, ``wcv_pct``.
    """
    out = []
    for (pid, lid, t), grp in sorted(_by_scan_lesion(rows).items()):
        v = np.array([float(r[metric]) for r in grp if _finite(r.get(metric))])
        if v.size < 2:
            continue
        mean = float(v.mean())
        sd = float(v.std(ddof=1))
        out.append({"patient_id": pid, "lesion_id": lid, "time_h": t, "true_suv": grp[0].get("true_suv_intrinsic"),
                    "diameter_mm": grp[0].get("diameter_mm"), "n": int(v.size), "mean": mean, "sd": sd,
                    "wcv_pct": 100.0 * sd / mean if mean > 0 else None})
    return out


def median_wcv_pct(rows: list, metric: str = "suvmax") -> float | None:
    """Median over lesions and time points of the realisation wCV (%) of ``metric`` (None if undefined)."""
    w = [e["wcv_pct"] for e in realisation_spread(rows, metric) if e["wcv_pct"] is not None]
    return float(np.median(w)) if w else None


def p_positive_table(rows: list, threshold: float) -> list:
    """Per lesion and time point, the fraction of realisations with SUVmax (and each PVC SUVmax) >= threshold.

    Returns
    -------
    list of dict
        ``patient_id``, ``lesion_id``, ``time_h``, ``true_suv`` (true SUVmean), ``true_suvmax``,
        ``diameter_mm``, ``size_bin``, ``her2_positive``, ``n_realisations`` and ``p_positive``
        {metric: fraction}, for ``suvmax`` and every ``pvc_<method>_suvmax`` in the rows.
    """
    metrics = suvmax_metrics(rows)
    out = []
    for (pid, lid, t), grp in sorted(_by_scan_lesion(rows).items()):
        p = {}
        for m in metrics:
            v = [float(r[m]) for r in grp if _finite(r.get(m))]
            if v:
                p[m] = float(np.mean(np.asarray(v) >= threshold))
        r0 = grp[0]
        out.append({"patient_id": pid, "lesion_id": lid, "time_h": t, "true_suv": r0.get("true_suv_intrinsic"),
                    "true_suvmax": r0.get("true_suvmax_pv"), "diameter_mm": r0.get("diameter_mm"),
                    "size_bin": size_bin(r0.get("diameter_mm")), "her2_positive": bool(r0.get("her2_positive")),
                    "n_realisations": len(grp), "p_positive": p})
    return out


def call_stability(rows: list, threshold: float, metric: str = "suvmax") -> dict:
    """How stable each lesion's call (``metric`` >= threshold) is under image noise.

    Returns
    -------
    dict
        ``scans_lesions``: lesion-time pairs with >= 2 realisations; ``unanimous_fraction``: share of
        them whose realisations all give the same call; ``mean_flip_probability``: mean over them of
        2 p (1 - p), the chance that two independent scans of the same lesion disagree (p = P(positive));
        ``unstable``: the lesions with 0 < p < 1 (patient, lesion, time, p, true SUV, diameter); and,
        when there are two time points, ``agreement_<t1>_vs_<t2>``: share of (lesion, realisation) pairs
        whose call is the same at both.
    """
    groups = {k: v for k, v in _by_scan_lesion(rows).items() if sum(_finite(r.get(metric)) for r in v) >= 2}
    if not groups:
        return {"undefined": "no lesion has two or more noise realisations (monte_carlo.noise_realisations = 1)"}
    unanimous = 0
    flips = []
    unstable = []
    for (pid, lid, t), grp in sorted(groups.items()):
        calls = np.array([float(r[metric]) >= threshold for r in grp if _finite(r.get(metric))])
        p = float(calls.mean())
        flips.append(2.0 * p * (1.0 - p))
        if p in (0.0, 1.0):
            unanimous += 1
        else:
            unstable.append({"patient_id": pid, "lesion_id": lid, "time_h": t, "p_positive": p,
                             "true_suv": grp[0].get("true_suv_intrinsic"), "diameter_mm": grp[0].get("diameter_mm")})
    out = {"metric": metric, "threshold": threshold, "scans_lesions": len(groups),
           "unanimous_fraction": unanimous / len(groups), "mean_flip_probability": float(np.mean(flips)),
           "unstable": unstable}
    times = sorted({float(r["time_h"]) for r in rows})
    if len(times) >= 2:
        by = {}
        for r in rows:
            if _finite(r.get(metric)):
                by[(str(r["patient_id"]), int(r["lesion_id"]), int(r.get("realisation", 0)), float(r["time_h"]))] = \
                    float(r[metric]) >= threshold
        pairs = [(v, by[(p, l, k, times[1])]) for (p, l, k, t), v in by.items()
                 if t == times[0] and (p, l, k, times[1]) in by]
        if pairs:
            out[f"agreement_{times[0]:g}h_vs_{times[1]:g}h"] = float(np.mean([a == b for a, b in pairs]))
    return out


def _auc(truth: np.ndarray, values: np.ndarray) -> float:
    """Mann-Whitney AUC with ties counted 1/2 (truth boolean, both classes present)."""
    from scipy.stats import rankdata
    r = rankdata(values)
    n1 = int(truth.sum())
    n0 = truth.size - n1
    return float((r[truth].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _se_sp_auc(truth: np.ndarray, values: np.ndarray, threshold: float):
    pos = values >= threshold
    n1 = int(truth.sum())
    n0 = truth.size - n1
    if n1 == 0 or n0 == 0:
        return None
    return (float((pos & truth).sum() / n1), float((~pos & ~truth).sum() / n0), _auc(truth, values))


def nested_bootstrap_threshold(rows: list, threshold: float, metric: str = "suvmax", n_boot: int = 2000,
                               seed: int = 0, alpha: float = 0.05) -> dict:
    """Se, Sp and AUC of ``metric`` >= threshold per time point with realisation-nested patient bootstrap.

    Each replicate draws patients with replacement and, for every drawn patient, one of its noise
    realisations (the same realisation for all lesions of that scan, as a real rescan would be); the
    lesions of the drawn scans form the replicate's sample. The point estimates are the means over
    realisations of the full-cohort values (the expected performance under image noise); the
    intervals are percentiles of the replicates. ``noise_only`` gives the spread (min, max) of the
    full-cohort values over the realisations alone.

    Parameters
    ----------
    rows : list of dict
        Lesion rows with ``patient_id``, ``lesion_id``, ``time_h``, ``realisation``, ``her2_positive``
        and ``metric``.
    threshold : float
    metric : str
    n_boot : int
        Bootstrap replicates (>= 1).
    seed : int
        Seed of the resampling.
    alpha : float
        1 - interval coverage.

    Returns
    -------
    dict
        {"<t>h": {"n_patients", "n_lesions", "n_realisations", "se", "sp", "auc" (each with
        "estimate", "ci"), "noise_only", "n_boot_defined"}} or {"<t>h": {"undefined": reason}}.
    """
    if n_boot < 1:
        raise DataError(f"n_boot = {n_boot}: give at least 1 bootstrap replicate")
    rng = np.random.default_rng(seed)
    out = {}
    for t in sorted({float(r["time_h"]) for r in rows}):
        sel = [r for r in rows if float(r["time_h"]) == t and _finite(r.get(metric))]
        scans: dict = {}
        for r in sel:
            scans.setdefault(str(r["patient_id"]), {}).setdefault(int(r.get("realisation", 0)), []).append(r)
        pids = sorted(scans)
        key = f"{t:g}h"
        truth_all = np.array([bool(r["her2_positive"]) for r in sel])
        if len(pids) < 2 or truth_all.all() or not truth_all.any():
            out[key] = {"undefined": "needs >= 2 patients and both HER2 classes"}
            continue
        reals = sorted({k for p in pids for k in scans[p]})
        per_real = []
        for k in reals:
            rr = [r for p in pids for r in scans[p].get(k, [])]
            v = _se_sp_auc(np.array([bool(r["her2_positive"]) for r in rr]), np.array([float(r[metric]) for r in rr]),
                           threshold)
            if v is not None:
                per_real.append(v)
        # arrays per patient and realisation for fast resampling
        data = {p: [(np.array([bool(r["her2_positive"]) for r in scans[p][k]]),
                     np.array([float(r[metric]) for r in scans[p][k]])) for k in sorted(scans[p])] for p in pids}
        boots = []
        for _ in range(int(n_boot)):
            draw = rng.integers(0, len(pids), len(pids))
            tt, vv = [], []
            for i in draw:
                opts = data[pids[i]]
                a, b = opts[int(rng.integers(0, len(opts)))]
                tt.append(a)
                vv.append(b)
            v = _se_sp_auc(np.concatenate(tt), np.concatenate(vv), threshold)
            if v is not None:
                boots.append(v)
        lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
        entry = {"n_patients": len(pids), "n_lesions": int(len(sel) / max(len(reals), 1)),
                 "n_realisations": len(reals), "n_boot_defined": len(boots), "threshold": threshold,
                 "metric": metric}
        pr = np.array(per_real)
        bt = np.array(boots) if boots else np.full((0, 3), np.nan)
        for j, name in enumerate(("se", "sp", "auc")):
            entry[name] = {"estimate": float(pr[:, j].mean()) if pr.size else None,
                           "ci": [float(np.percentile(bt[:, j], lo)), float(np.percentile(bt[:, j], hi))]
                           if bt.shape[0] else None}
        entry["noise_only"] = {name: [float(pr[:, j].min()), float(pr[:, j].max())] if pr.size else None
                               for j, name in enumerate(("se", "sp", "auc"))}
        out[key] = entry
    return out


def robustness_summary(rows: list, threshold: float, n_boot: int = 2000, seed: int = 0,
                       figure_path=None) -> dict:
    """Everything the report shows about noise: nested-bootstrap Se/Sp/AUC, call stability, the
    P(positive) table and, when ``figure_path`` is given and there are >= 2 realisations, the figure."""
    n_real = len({int(r.get("realisation", 0)) for r in rows})
    out = {"noise_realisations": n_real, "threshold": threshold,
           "suvmax_wcv_pct_median": median_wcv_pct(rows, "suvmax"),
           "suvmean_wcv_pct_median": median_wcv_pct(rows, "suvmean"),
           "threshold_with_noise": {m: nested_bootstrap_threshold(rows, threshold, m, n_boot=max(1, n_boot), seed=seed)
                                    for m in suvmax_metrics(rows)},
           "call_stability": call_stability(rows, threshold),
           "p_positive": p_positive_table(rows, threshold)}
    if figure_path is not None and n_real >= 2:
        out["figure"] = str(plot_p_positive(out["p_positive"], figure_path, threshold))
    return out


def study_robustness_summary(rows: list, threshold: float, bootstrap: int, seed: int, figure_dir=None) -> dict:
    """The study summary's ``robustness``: :func:`robustness_summary` when the scans have >= 2 noise
    realisations, else the count and the reason it is undefined.

    Parameters
    ----------
    rows : list of dict
        The study's measured lesion rows (all time points and realisations).
    threshold : float
        SUVmax threshold of a positive call (SUV).
    bootstrap : int
        ``analysis.bootstrap`` resamples; 0 uses 200 (the nested bootstrap needs some).
    seed : int
        Seed of the bootstrap.
    figure_dir : path-like or None
        Folder of ``p_positive_vs_true_suv.png`` (None: no figure).
    """
    n_real = len({int(r.get("realisation", 0)) for r in rows})
    if n_real < 2:
        return {"noise_realisations": n_real,
                "undefined": "one noise realisation per scan; set monte_carlo.noise_realisations >= 2"}
    return robustness_summary(rows, threshold, n_boot=bootstrap or 200, seed=seed,
                              figure_path=None if figure_dir is None else Path(figure_dir) / "p_positive_vs_true_suv.png")


def plot_p_positive(table: list, path, threshold: float = 1.5) -> Path:
    """P(SUVmax >= threshold) over realisations against the true SUV, one panel per time point.

    Markers are coloured by lesion size bin (:func:`size_bin`); filled for SUVmax, hollow for the
    first PVC-corrected SUVmax when present. The dotted line is the threshold on the x axis (a lesion
    whose true SUV equals it would read positive half the time without bias).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not table:
        raise DataError("plot_p_positive: empty table")
    times = sorted({e["time_h"] for e in table})
    bins = [size_bin(d) for d in (5.0, 12.0, 17.0, 25.0, 40.0)]
    colours = dict(zip(bins, ("#8e44ad", "#2e86c1", "#16a085", "#f39c12", "#c0392b")))
    pvc = sorted({m for e in table for m in e["p_positive"] if m != "suvmax"})
    fig, axes = plt.subplots(1, len(times), figsize=(5.0 * len(times), 4.0), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], times):
        sel = [e for e in table if e["time_h"] == t and e.get("true_suv") is not None]
        for b in bins:
            pts = [e for e in sel if e["size_bin"] == b]
            if not pts:
                continue
            ax.scatter([e["true_suv"] for e in pts], [e["p_positive"].get("suvmax", np.nan) for e in pts],
                       color=colours[b], label=f"{b}", s=28, zorder=3)
            if pvc:
                ax.scatter([e["true_suv"] for e in pts], [e["p_positive"].get(pvc[0], np.nan) for e in pts],
                           facecolors="none", edgecolors=colours[b], s=40, zorder=2)
        ax.axvline(threshold, color="0.4", ls=":", lw=1)
        ax.set_xlabel("true lesion SUVmean")
        ax.set_title(f"{t:g} h p.i.")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"P(SUVmax >= {threshold:g}) over noise realisations")
    labelled = next((ax for row in axes for ax in row if ax.get_legend_handles_labels()[0]), None)
    if labelled is not None:  # a time point may have no lesion of any size
        labelled.legend(title="diameter" + (f" (hollow: {pvc[0]})" if pvc else ""), fontsize=7, title_fontsize=7)
    from her2sim.core.atomic import savefig_atomic
    fig.tight_layout()
    p = savefig_atomic(fig, path, dpi=120)
    plt.close(fig)
    return p
