"""Per-lesion SUV against the truth on the virtual seed trial, with and without partial-volume correction.

Runs the ``seed-trial`` preset (30 patients at 1 h and 2 h; Zhao et al., Breast Cancer Res 26:40, 2024) at
the preset's full resolution (80 x 128 x 128 voxels of 4.42 mm, 120 views, 1 % Monte Carlo noise target,
one noise realisation) with ``analysis.pvc_methods = ["none", "gtm", "rbv", "iy"]`` and compares every lesion
row of ``results/lesions.csv`` with its truth. Prints (``--json``: one object):

* ``lesions_truth``, ``lesions_reported``, ``lesions_measured``, ``unmeasured_by_reason`` - lesions of the
  phantom truth (inflammation has no HER2 status and is not a lesion here), rows in ``lesions.csv`` (per
  lesion, first time point), measured rows, and why the others are not measured;
* ``bias_pct[method][bin][metric]`` - mean of (measured - true) / true in %, and ``rmse[method][bin][metric]``
  in SUV, for ``method`` in ``none``, ``gtm``, ``rbv``, ``iy``, ``bin`` in ``<15``, ``15-25``, ``>25`` (lesion
  diameter, mm) and ``metric`` in ``suvmean``, ``suvmax``, against ``true_suv_intrinsic`` (the lesion's own
  uptake); both time points pooled; ``n[bin]`` rows per bin. GTM yields a regional mean only: its
  ``suvmax`` is ``null``;
* ``seed_trends`` - the seed paper's tests on the measured SUVmax at 1 h in the newly diagnosed group:
  ``ihc_spearman_rho_1h`` / ``ihc_spearman_p_1h`` (primaries, SUVmax vs IHC score),
  ``mets_her2pos_vs_neg_p_1h`` (metastases, HER2+ vs HER2-, Student t, with the group means), and
  ``treated_vs_new_pos_p_1h`` (HER2-positive primaries, newly diagnosed vs treated, Student t);
  ``seed_trends_truth`` the same on ``true_suv_intrinsic`` and ``seed_trends_pvc`` on ``pvc_gtm_suvmean`` and
  ``pvc_rbv_suvmax``;
* ``bias_pct_by_type[type][method][bin][metric]`` - the bias split by lesion type (primary, lymph_node, bone,
  liver), which shows where a bin's mean comes from;
* ``recon_fwhm_mm`` - the reconstruction's Gaussian resolution measured on a point source (PVC models the
  image's point response as this Gaussian followed by the protocol's post-filter) and
  ``iec_gaussian_fit_fwhm_mm`` - the Gaussian that best fits the IEC recovery (reported only);
* ``seconds``.

``--quick`` runs the coarse grids of ``e2e_seed_trial.py`` (40 x 64 x 64 voxels of 8.84 mm, 30 views) for
CI-sized checks; ``--patients N`` a subset; ``--study DIR`` only re-reads a finished study folder.

Usage: ``python bench/lesion_quantitation.py [--json] [--quick] [--patients N] [--out-dir DIR | --study DIR] [--set KEY=VALUE ...]``
(full resolution: 31 min on 2 cores, measured on the anatomy v2 rerun).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e_seed_trial  # noqa: E402

from her2sim.analysis.stats import compare_groups, spearman_ihc  # noqa: E402
from her2sim.config import override_study  # noqa: E402
from her2sim.core.errors import ConfigError  # noqa: E402
from her2sim.core.errors import Her2simError  # noqa: E402
from her2sim.pipeline import run_study  # noqa: E402

METHODS = {"none": ("suvmean", "suvmax"), "gtm": ("pvc_gtm_suvmean", None),
           "rbv": ("pvc_rbv_suvmean", "pvc_rbv_suvmax"), "iy": ("pvc_iy_suvmean", "pvc_iy_suvmax")}
BINS = (("<15", 0.0, 15.0), ("15-25", 15.0, 25.0), (">25", 25.0, math.inf))


def _num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _bin(d: float) -> str:
    for name, lo, hi in BINS:
        if lo <= d < hi:
            return name
    raise ValueError(d)


def accuracy(rows: list) -> dict:
    """``bias_pct``, ``rmse`` and ``n`` per method, size bin and metric against ``true_suv_intrinsic``."""
    bias, rmse, n = {}, {}, {}
    for method, cols in METHODS.items():
        bias[method], rmse[method] = {}, {}
        for name, _, _ in BINS:
            sel = [r for r in rows if _bin(float(r["diameter_mm"])) == name]
            n[name] = len(sel)
            bias[method][name], rmse[method][name] = {}, {}
            for metric, col in zip(("suvmean", "suvmax"), cols):
                pairs = [(_num(r.get(col)), _num(r["true_suv_intrinsic"])) for r in sel] if col else []
                pairs = [(m, t) for m, t in pairs if m is not None and t is not None and t > 0]
                if not pairs:
                    bias[method][name][metric] = rmse[method][name][metric] = None
                    continue
                m, t = np.array(pairs).T
                bias[method][name][metric] = round(float(np.mean((m - t) / t) * 100.0), 2)
                rmse[method][name][metric] = round(float(np.sqrt(np.mean((m - t) ** 2))), 4)
    return {"bias_pct": bias, "rmse": rmse, "n": n}


def _p(fn, *args) -> dict:
    try:
        return fn(*args)
    except Her2simError as exc:
        return {"undefined": str(exc)}


def seed_trends(rows: list, column: str, t_h: float = 1.0) -> dict:
    """The seed paper's three tests on ``column`` at ``t_h`` (see the module docstring)."""
    at = [r for r in rows if abs(float(r["time_h"]) - t_h) < 1e-6 and _num(r.get(column)) is not None]
    new = [r for r in at if r.get("group", "newly_diagnosed") == "newly_diagnosed"]
    prim = [r for r in new if r["type"] == "primary"]
    out = {}
    sp = _p(spearman_ihc, [float(r[column]) for r in prim], [int(r["ihc"]) for r in prim])
    out["ihc_spearman_rho_1h"], out["ihc_spearman_p_1h"] = sp.get("rho"), sp.get("p")
    mets = [r for r in new if r["type"] != "primary"]
    pos = [float(r[column]) for r in mets if int(r["her2_positive"])]
    neg = [float(r[column]) for r in mets if not int(r["her2_positive"])]
    cg = _p(compare_groups, pos, neg)
    out["mets_her2pos_vs_neg_p_1h"] = cg.get("student", {}).get("p")
    out["mets_her2pos_mean_1h"] = round(float(np.mean(pos)), 3) if pos else None
    out["mets_her2neg_mean_1h"] = round(float(np.mean(neg)), 3) if neg else None
    out["mets_n_pos_neg"] = [len(pos), len(neg)]
    pos_prim = [r for r in at if r["type"] == "primary" and int(r["her2_positive"])]
    newp = [float(r[column]) for r in pos_prim if r.get("group") == "newly_diagnosed"]
    trp = [float(r[column]) for r in pos_prim if r.get("group") == "treated"]
    tg = _p(compare_groups, newp, trp)
    out["treated_vs_new_pos_p_1h"] = tg.get("student", {}).get("p")
    out["treated_vs_new_n"] = [len(trp), len(newp)]
    for k, v in list(out.items()):
        if isinstance(v, float):
            out[k] = float(f"{v:.4g}")
    return out


def summarise(study: Path) -> dict:
    """All figures of the module docstring from a finished study folder."""
    with open(study / "results" / "lesions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((study / "results" / "summary.json").read_text())
    first_t = min(float(r["time_h"]) for r in rows)
    per_lesion = [r for r in rows if float(r["time_h"]) == first_t and int(float(r.get("realisation") or 0)) == 0]
    reasons: dict = {}
    for r in per_lesion:
        if r["measured"] != "True":
            reasons[r["unmeasured_reason"]] = reasons.get(r["unmeasured_reason"], 0) + 1
    measured = [r for r in rows if r["measured"] == "True" and int(float(r.get("realisation") or 0)) == 0]
    out = {"lesions_truth": summary.get("lesions_truth"), "lesions_reported": len(per_lesion),
           "lesions_measured": len(per_lesion) - sum(reasons.values()), "unmeasured_by_reason": reasons}
    out.update(accuracy(measured))
    out["bias_pct_by_type"] = {t: accuracy([r for r in measured if r["type"] == t])["bias_pct"]
                               for t in sorted({r["type"] for r in measured})}
    out["seed_trends"] = seed_trends(measured, "suvmax")
    out["seed_trends_truth"] = seed_trends(measured, "true_suv_intrinsic")
    out["seed_trends_pvc"] = {c: seed_trends(measured, c) for c in ("pvc_gtm_suvmean", "pvc_rbv_suvmax")
                              if any(_num(r.get(c)) is not None for r in measured)}
    cal = summary.get("calibration", {})
    out["recon_fwhm_mm"] = cal.get("recon_fwhm_mm")
    out["iec_gaussian_fit_fwhm_mm"] = cal.get("iec_gaussian_fit_fwhm_mm")
    return out


def lesion_figure(study: Path, path: Path, patient: str | None = None, lesion: int | None = None) -> Path:
    """``docs/lesion_truth.png``: the three truths of one lesion beside its measurement (first time point).

    Without ``patient``/``lesion``: the measured primary whose diameter is closest to 20 mm.
    """
    from her2sim.analysis.figures import plot_lesion_truths
    from her2sim.analysis.lesion_truth import lesions_on_grid
    from her2sim.analysis.suv import suv_image, suv_scale_factor
    from her2sim.core.containers import Image, Phantom
    from her2sim.core.grid import resample

    with open(study / "results" / "lesions.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["measured"] == "True"]
    t0 = min(float(r["time_h"]) for r in rows)
    rows = [r for r in rows if float(r["time_h"]) == t0 and int(float(r.get("realisation") or 0)) == 0]
    if patient is None:
        prim = [r for r in rows if r["type"] == "primary"] or rows
        row = min(prim, key=lambda r: abs(float(r["diameter_mm"]) - 20.0))
    else:
        row = next(r for r in rows if r["patient_id"] == patient and int(r["lesion_id"]) == lesion)
    pdir = study / "patients" / row["patient_id"]
    ph = Phantom.load(pdir / "phantom.h5")
    img = Image.load(pdir / f"t{t0:g}h" / "recon_r0.h5")
    g = img.grid
    les = lesions_on_grid(g, ph.grid, ph.lesion_fraction, ph.lesion_owner, ph.lesion_own_suv, ph.truth)
    L = les[int(row["lesion_id"])]
    scale = suv_scale_factor(ph.meta["injected_mbq"] * 1e6, ph.meta["weight_kg"], elapsed_s=t0 * 3600.0)
    truth = resample(ph.activity_bq_per_ml[0], ph.grid, g, order=1) * scale
    centre = np.unravel_index(int(np.argmax(np.where(L.voi, L.fraction, 0.0))), g.shape)
    nums = {k: float(row[k]) for k in ("true_suv_intrinsic", "true_suvmean_pv", "true_suvmax_pv", "suvmean", "suvmax")}
    return plot_lesion_truths(truth, L.own_suv[0], suv_image(img).array, L.voi, centre, g.spacing_mm, path,
                              numbers=nums, title=f"{row['patient_id']} lesion {row['lesion_id']} ({row['type']}, "
                                                  f"{float(row['diameter_mm']):.0f} mm, IHC {row['ihc']}) at {t0:g} h")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="coarse grids (8.84 mm, 30 views) instead of full resolution")
    ap.add_argument("--patients", type=int, default=30, help="number of seed-trial patients (1-30)")
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the study folder here")
    ap.add_argument("--study", type=Path, default=None, help="only summarise this finished study folder")
    ap.add_argument("--figure", type=Path, default=None, help="also draw one lesion's three truths to this PNG")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a study key (as her2sim run --set), e.g. phantom.anatomy='v2'")
    args = ap.parse_args(argv)
    if not 1 <= args.patients <= 30:
        ap.error(f"--patients = {args.patients}: allowed range [1, 30]")
    t0 = time.perf_counter()
    tmp = None
    if args.study is not None:
        if not (args.study / "results" / "lesions.csv").is_file():
            ap.error(f"--study {args.study}: no results/lesions.csv (run the study first)")
        study = args.study
    else:
        root = args.out_dir
        if root is None:
            tmp = tempfile.TemporaryDirectory(prefix="her2sim_lesions_")
            root = Path(tmp.name)
        try:
            cfg = override_study(e2e_seed_trial.study_config(args.patients, 1, args.quick),
                                 ['analysis.pvc_methods=["none", "gtm", "rbv", "iy"]'] + list(args.sets))
        except ConfigError as exc:
            ap.error(str(exc))
        study = root / ("quick" if args.quick else "full")
        run_study(cfg, study, progress=False)
    result = {"grid": "quick" if args.quick else "full", "patients": args.patients, "sets": list(args.sets)}
    result.update(summarise(study))
    if args.figure is not None:
        result["figure"] = str(lesion_figure(study, args.figure))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"lesions: {result['lesions_truth']} in the truth, {result['lesions_reported']} reported, "
              f"{result['lesions_measured']} measured; unmeasured {result['unmeasured_by_reason']}")
        for method in METHODS:
            cells = []
            for name, _, _ in BINS:
                b, r = result["bias_pct"][method][name], result["rmse"][method][name]
                cells.append(f"{name}: " + ", ".join(f"{m} {b[m]:+.1f} % / {r[m]:.3f}" for m in ("suvmean", "suvmax")
                                                     if b[m] is not None))
            print(f"  {method:4s} bias / RMSE  " + " | ".join(cells))
        print(f"  seed trends (measured SUVmax, 1 h): {result['seed_trends']}")
        print(f"  seed trends (truth):                {result['seed_trends_truth']}")
    return result


if __name__ == "__main__":
    main()
