"""The ``statistics`` step: the study's lesion table, threshold statistics, call rates, robustness and figures.

Merges every patient's ``lesions.json`` into ``results/lesions.csv`` and writes ``results/summary.json``: Se/Sp/AUC
per metric and time point (:func:`her2sim.analysis.threshold.evaluate_threshold`), the seed paper's group
statistics (:mod:`her2sim.analysis.stats`), call rates and call consistency (:mod:`her2sim.analysis.call_rates`),
robustness under image noise (:mod:`her2sim.analysis.robustness`) and the figures.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from her2sim.analysis import figures
from her2sim.analysis.call_rates import call_consistency, call_rates
from her2sim.analysis.robustness import study_robustness_summary
from her2sim.analysis.stats import bias_rmse, compare_groups, group_mean_sd, result_or_undefined, spearman_ihc
from her2sim.analysis.threshold import evaluate_threshold, write_lesion_csv
from her2sim.core.containers import Projections
from her2sim.core.errors import DataError
from her2sim.core.jsonio import write_json
from her2sim.core.versions import package_versions
from her2sim.stages import StageTask
from her2sim.study_layout import StudyLayout

from .common import fault_injection_delay
from .params import StepParams


def stage_statistics(task: StageTask) -> None:
    """Merge lesion rows; threshold statistics per metric; seed-paper statistics; figures; summary."""
    fault_injection_delay(task.stage)

    step = StepParams.from_params(task.params, task.stage)
    a = step.analysis
    sd = Path(task.study_dir)
    lay = StudyLayout(sd)
    res = lay.results_dir
    figdir = lay.figures_dir
    if step.figures:
        figdir.mkdir(parents=True, exist_ok=True)
    all_rows = []
    for pid in step.patient_ids:
        all_rows.extend(json.loads(lay.lesions_json(pid).read_text()))
    if not all_rows:
        raise DataError(f"study {step.study_name!r}: the truth of its {len(step.patient_ids)} patient(s) holds no "
                        "lesion with a HER2 status; add lesions (phantom.lesions or a cohort preset)")
    write_lesion_csv(all_rows, res / "lesions.csv")
    # every lesion of the truth has rows; statistics use the measured ones and count the rest
    first_t = min(r["time_h"] for r in all_rows)
    per_lesion = [r for r in all_rows if r["time_h"] == first_t and r.get("realisation", 0) == 0]
    unmeasured: dict = {}
    for r in per_lesion:
        if not r.get("measured", True):
            unmeasured[r["unmeasured_reason"]] = unmeasured.get(r["unmeasured_reason"], 0) + 1
    rows = [r for r in all_rows if r.get("measured", True)]
    summary = {"study": step.study_name, "patients": len(step.patient_ids), "lesions": len(rows),
               "lesions_truth": len(per_lesion), "lesions_measured": len(per_lesion) - sum(unmeasured.values()),
               "unmeasured_by_reason": dict(sorted(unmeasured.items()))}
    thr = {}
    metrics = [m for m in a.metrics] + [k for k in sorted({k for r in rows for k in r}) if k.startswith("pvc_")]
    primary_rows = [r for r in rows if r.get("realisation", 0) == 0]
    for t_h in sorted({r["time_h"] for r in primary_rows}):
        sel = [r for r in primary_rows if r["time_h"] == t_h]
        for m in metrics:
            vals = [r.get(m) for r in sel]
            if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in vals):
                continue
            ev = result_or_undefined(evaluate_threshold, [bool(r["her2_positive"]) for r in sel], vals,
                                     [r["patient_id"] for r in sel], threshold=a.threshold, n_boot=a.bootstrap,
                                     seed=step.seed)
            thr[f"{m}@{t_h:g}h"] = ev
    summary["threshold"] = thr
    stats = {}
    for t_h in sorted({r["time_h"] for r in primary_rows}):
        sel = [r for r in primary_rows if r["time_h"] == t_h]
        pos = [r["suvmax"] for r in sel if r["her2_positive"]]
        neg = [r["suvmax"] for r in sel if not r["her2_positive"]]
        entry = {}
        if len(pos) >= 2 and len(neg) >= 2:
            entry["her2pos_vs_neg"] = result_or_undefined(compare_groups, pos, neg)
        ihc = [r["ihc"] for r in sel]
        if len(set(ihc)) >= 2:
            entry["spearman_suvmax_ihc"] = result_or_undefined(spearman_ihc, [r["suvmax"] for r in sel], ihc)
        entry["suvmax_by_ihc"] = result_or_undefined(group_mean_sd, [r["suvmax"] for r in sel], ihc)
        trues = [r.get("true_suv_intrinsic") for r in sel]
        if all(t is not None for t in trues) and sel:
            entry["suvmean_bias_rmse"] = result_or_undefined(bias_rmse, [r["suvmean"] for r in sel], trues)
        stats[f"{t_h:g}h"] = entry
    summary["statistics"] = stats
    summary["call_rates"] = call_rates(rows, a.threshold)
    summary["call_stability"] = call_consistency(rows, a.threshold)
    summary["robustness"] = study_robustness_summary(rows, a.threshold, a.bootstrap, step.seed,
                                                     figdir if step.figures else None)
    figs = []
    if primary_rows and step.figures:
        t0 = min(r["time_h"] for r in primary_rows)
        sel = [r for r in primary_rows if r["time_h"] == t0]
        figs.append(str(figures.plot_suv_vs_ihc([r["suvmax"] for r in sel], [r["ihc"] for r in sel],
                                                [bool(r["her2_positive"]) for r in sel], figdir / "suvmax_vs_ihc.png",
                                                threshold=a.threshold)))
        trues = [r.get("true_suv_intrinsic") for r in sel]
        if all(t is not None for t in trues):
            figs.append(str(figures.plot_measured_vs_true(trues, [r["suvmean"] for r in sel],
                                                          figdir / "measured_vs_true.png")))
            figs.append(str(figures.plot_bias_vs_size([r["diameter_mm"] for r in sel], trues,
                                                      [r["suvmean"] for r in sel], figdir / "bias_vs_size.png")))
        labels = [bool(r["her2_positive"]) for r in sel]
        if 0 < sum(labels) < len(labels):
            figs.append(str(figures.plot_roc(labels, [r["suvmax"] for r in sel], figdir / "roc_suvmax.png",
                                             patient_ids=[r["patient_id"] for r in sel], n_boot=a.bootstrap,
                                             seed=step.seed)))
    cal = json.loads(lay.calibration_json.read_text())
    if "rc" in cal and step.figures:
        d = sorted(float(k) for k in cal["rc"])
        figs.append(str(figures.plot_recovery_curves(d, [cal["rc"][str(int(x))] for x in d],
                                                     figdir / "rc_vs_diameter.png")))
    figs.extend(str(f) for f in sorted(figdir.glob("phantom_*.png")))
    figs.extend(str(f) for f in sorted(figdir.glob("recon_*.png")))
    summary["figures"] = figs
    summary["calibration"] = {k: v for k, v in cal.items() if k not in ("mc_stats",)}
    summary["mc_summary"] = cal.get("mc_summary", {})
    for exp in sorted(lay.patient_dir(step.patient_ids[0]).glob("t*h/expected.h5"))[:1]:
        summary["mc_summary"] = Projections.load(exp).meta.get("mc_summary", summary["mc_summary"])
    summary["versions"] = package_versions()
    summary["seeds"] = {"study": step.seed, "monte_carlo": step.mc_seed}
    summary["config"] = step.config
    write_json(task.outputs[0], summary)
