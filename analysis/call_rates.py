"""How often the SUVmax threshold calls a lesion positive, over the study's lesion rows.

The rows are the study's measured lesion rows (one per patient, lesion, time point and noise realisation;
SUV columns dimensionless, ``diameter_mm`` in mm, ``time_h`` in hours after injection):

* :func:`call_rates` - P(SUVmax >= threshold) per true HER2 class, lesion size bin and time point, for
  SUVmax and every PVC-corrected SUVmax column, with intervals (``summary.json`` ``call_rates``);
* :func:`call_consistency` - how often a lesion's call is the same across its time points and noise
  realisations (``summary.json`` ``call_stability``).

The per-scan noise view of the same question is :func:`her2sim.analysis.robustness.call_stability`.
"""
from __future__ import annotations

import math

from .robustness import size_bin
from .stats import result_or_undefined
from .threshold import call_rate_by_group


def call_rates(rows: list, threshold: float) -> dict:
    """P(measured SUVmax >= threshold | true HER2 class, lesion size, time point), all noise realisations.

    Parameters
    ----------
    rows : list of dict
        Measured lesion rows with ``her2_positive``, ``diameter_mm`` (mm), ``time_h`` (h) and ``suvmax`` and/or
        ``pvc_<method>_suvmax`` (SUV, dimensionless).
    threshold : float
        SUVmax threshold of a positive call (SUV).

    Returns
    -------
    dict
        ``{metric: {"HER2+ <10 mm 1h": {n, n_positive, rate, ci}, ...}}`` per SUVmax column with a finite
        value (:func:`her2sim.analysis.threshold.call_rate_by_group`), or ``{metric: {"undefined": reason}}``.
    """
    out = {}
    for metric in sorted({k for r in rows for k in r if k == "suvmax" or (k.startswith("pvc_") and k.endswith("suvmax"))}):
        sel = [r for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
        if not sel:
            continue
        groups = [f"HER2{'+' if r['her2_positive'] else '-'} {size_bin(r.get('diameter_mm'))} {r['time_h']:g}h"
                  for r in sel]
        res = result_or_undefined(call_rate_by_group, [r[metric] for r in sel], groups, threshold)
        out[metric] = {str(k): v for k, v in res.items()} if isinstance(res, dict) else res
    return out


def call_consistency(rows: list, threshold: float) -> dict:
    """How often a lesion's SUVmax call (>= threshold) is the same across time points and noise realisations.

    Parameters
    ----------
    rows : list of dict
        Measured lesion rows with ``patient_id``, ``lesion_id``, ``time_h`` (h), ``realisation`` and ``suvmax``.
    threshold : float
        SUVmax threshold of a positive call (SUV).

    Returns
    -------
    dict
        ``lesions`` (measured more than once), ``consistent_fraction`` (share whose calls all agree) and, with
        two or more time points, ``agreement_<t1>h_vs_<t2>h`` (share of lesions whose first-realisation calls
        at the first two time points agree); ``{"undefined": reason}`` when every lesion was measured once.
    """
    calls = {}
    for r in rows:
        calls.setdefault((r["patient_id"], r["lesion_id"]), {})[(r["time_h"], r.get("realisation", 0))] = \
            bool(r["suvmax"] >= threshold)
    lesions = [c for c in calls.values() if len(c) > 1]
    if not lesions:
        return {"undefined": "every lesion was measured once (one time point, one realisation)"}
    same = sum(1 for c in lesions if len(set(c.values())) == 1)
    times = sorted({t for c in lesions for (t, _) in c})
    out = {"lesions": len(lesions), "consistent_fraction": same / len(lesions)}
    if len(times) > 1:
        per = [c for c in lesions if {t for (t, _) in c} >= set(times[:2])]
        agree = [c[(times[0], 0)] == c[(times[1], 0)] for c in per if (times[0], 0) in c and (times[1], 0) in c]
        if agree:
            out[f"agreement_{times[0]:g}h_vs_{times[1]:g}h"] = sum(agree) / len(agree)
    return out
