"""Noise repeatability of the seed-trial protocol from many Poisson realisations of one scan (issue 13).

Runs the ``seed-trial`` preset (full resolution: 128 x 128 x 4.42 mm, 120 views, clinical
protocol) for ``--patients`` patients (default 1) with ``monte_carlo.noise_realisations = N``
(default 10) through :func:`her2sim.pipeline.run_study`: the Monte Carlo runs once per scan, the
N realisations are Poisson draws of the same expected projections, reconstructed in one batch.
Prints (``--json``: one JSON object):

* ``realisations``: N;
* ``suvmax_wcv_pct``, ``suvmean_wcv_pct``: median over lesions and time points of the
  within-lesion coefficient of variation over the realisations (SD / mean, %), the noise-only
  analogue of a test-retest wCV; ``wcv_by_lesion`` lists them;
* ``clinical_reference_wcv_pct``: published tumour SUV test-retest wCV with its source;
* ``background_cov``: per tissue, the voxel coefficient of variation (SD / mean of the SUV over the
  tissue's voxels, eroded by one voxel, mean over realisations; what a clinic measures in a
  background region, it includes true heterogeneity) and ``noise_cov``, the across-realisation SD /
  mean per voxel averaged over the tissue (image noise only);
* ``p_positive``: per lesion and time point, true SUV (mean and max), diameter, and the fraction
  of realisations with SUVmax >= 1.5, without PVC (``suvmax``) and with PVC (``pvc_<method>_suvmax``,
  ``--pvc``, default rbv);
* ``counts_per_scan``: per time point the expected photopeak and scatter window counts (total, per
  view, per second per head) and an independent estimate of the photopeak *primary* counts:
  activity in the field of view x decay during each view (``view_effective_seconds``) x the
  camera's planar sensitivity (:meth:`Camera.sensitivity_cps_per_mbq`) x the activity-weighted
  Beer-Lambert transmission along the view normals (projector without response, ideal mu map of
  the phantom's materials), compared with the Monte Carlo's primary counts (photopeak x (1 -
  scatter-to-total));
* ``protocol``: the reconstruction settings; with ``--compare-no-filter`` also ``no_filter``, the
  same figures reconstructed without the post-filter (same data);
* ``seconds``, ``load_average``.

Usage: ``python bench/repeatability.py [--json] [--realisations 10] [--patients 1] [--pvc rbv]
[--compare-no-filter] [--set KEY=VALUE ...] [--out-dir DIR]`` (with ``--out-dir`` of an earlier run,
the Monte Carlo of that run is reused when only recon or analysis keys change).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from her2sim.analysis.robustness import p_positive_table, realisation_spread
from her2sim.config import StudyConfig, apply_overrides, load_study, preset_path
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import ConfigError
from her2sim.pipeline import run_study

#: published tumour SUV repeatability (test-retest within-subject CV)
CLINICAL_REFERENCE_WCV = {
    "value_pct": 10.0,
    "source": "Lodge MA, Repeatability of SUV in oncologic 18F-FDG PET, J Nucl Med 58:523-532 (2017): "
              "tumour SUVmax/SUVmean test-retest wCV about 10 % (meta-analysis); "
              "shared/reference/validation_targets.md",
}
#: tissues whose background noise is reported (phantom label names)
BACKGROUND_TISSUES = ("breast_adipose", "breast_gland", "muscle", "lungs", "liver", "fat")
THRESHOLD = 1.5  # SUVmax threshold of the seed trial (Zhao et al., Breast Cancer Res 26:40, 2024)


def study_config(n_patients: int, n_real: int, pvc: str, overrides=()) -> StudyConfig:
    """The seed-trial preset with ``n_patients`` patients, ``n_real`` realisations and the given PVC."""
    if n_real < 2:
        raise ConfigError(f"--realisations = {n_real}: repeatability needs at least 2 (10 or more recommended)")
    base = load_study(preset_path("seed-trial"))
    methods = ["none"] + ([pvc] if pvc != "none" else [])
    sets = [f"cohort.n_patients={n_patients}", f"monte_carlo.noise_realisations={n_real}",
            f"analysis.pvc_methods={json.dumps(methods)}", "analysis.bootstrap=200", *overrides]
    return StudyConfig.from_dict(apply_overrides(base.to_dict(), sets), f"{base.source} with {sets}")


def background_noise(study_dir: Path, patient_ids: list, n_real: int) -> dict:
    """Voxel COV and across-realisation noise COV of the SUV per background tissue (see module doc)."""
    from scipy import ndimage

    from her2sim.analysis.suv import suv_image
    from her2sim.core.grid import resample

    acc: dict = {}
    for pid in patient_ids:
        pdir = study_dir / "patients" / pid
        ph = Phantom.load(pdir / "phantom.h5")
        names = {v: int(k) for k, v in ph.label_names.items()}
        for t in ph.time_points_h:
            tdir = pdir / f"t{t:g}h"
            imgs = [suv_image(Image.load(tdir / f"recon_r{k}.h5")) for k in range(n_real)]
            grid = imgs[0].grid
            labels = resample(ph.labels.astype(np.int16), ph.grid, grid, order=0)
            stack = np.stack([im.array for im in imgs]).astype(np.float64)
            mean_img = stack.mean(axis=0)
            sd_img = stack.std(axis=0, ddof=1)
            for tissue in BACKGROUND_TISSUES:
                if tissue not in names:
                    continue
                m = ndimage.binary_erosion(labels == names[tissue])
                if m.sum() < 20:
                    continue
                vox = [float(s[m].std(ddof=1) / s[m].mean()) for s in stack if s[m].mean() > 0]
                noise = float(np.mean(sd_img[m] / np.maximum(mean_img[m], 1e-12)))
                e = acc.setdefault(tissue, {"voxel_cov": [], "noise_cov": [], "voxels": 0})
                e["voxel_cov"].append(float(np.mean(vox)))
                e["noise_cov"].append(noise)
                e["voxels"] += int(m.sum())
    return {k: {"voxel_cov": round(float(np.mean(v["voxel_cov"])), 3),
                "noise_cov": round(float(np.mean(v["noise_cov"])), 3), "voxels": v["voxels"]}
            for k, v in acc.items()}


def counts_per_scan(study_dir: Path, patient_id: str, cfg: StudyConfig) -> dict:
    """Expected counts per window of each scan and the independent primary-count estimate (module doc)."""
    from her2sim.core.grid import resample
    from her2sim.recon import SpectSystemMatrix, grid_for_geometry
    from her2sim.recon.attenuation import mu_map_from_materials
    from her2sim.sim.camera import Camera
    from her2sim.sim.transport import view_effective_seconds

    cam = cfg.camera if isinstance(cfg.camera, Camera) else Camera.from_dict(cfg.camera)
    s_cps_per_mbq = float(cam.sensitivity_cps_per_mbq())
    pdir = study_dir / "patients" / patient_id
    ph = Phantom.load(pdir / "phantom.h5")
    out = {"patient_id": patient_id, "planar_sensitivity_cps_per_mbq": round(s_cps_per_mbq, 2),
           "injected_mbq": ph.meta.get("injected_mbq"), "scans": {}}
    for fi, t in enumerate(ph.time_points_h):
        proj = Projections.load(pdir / f"t{t:g}h" / "expected.h5")
        geo = proj.geometry
        tpv = float(proj.meta["time_per_view_s"])
        grid = grid_for_geometry(geo)
        act = resample(ph.activity_bq_per_ml[fi].astype(np.float64), ph.grid, grid, order=1) * grid.voxel_volume_ml
        mu = mu_map_from_materials(ph, grid)
        with_att = SpectSystemMatrix(grid, geo, mu, psf=False, support=None).forward(act)
        without = SpectSystemMatrix(grid, geo, None, psf=False, support=None).forward(act)
        transmission = float(with_att.sum() / without.sum())
        eff_s = view_effective_seconds(geo, tpv)  # decay-weighted seconds per view
        a_fov_mbq = float(act.sum() / 1e6)
        est_primary = a_fov_mbq * s_cps_per_mbq * float(eff_s.sum()) * transmission
        summ = proj.meta.get("mc_summary", {})
        entry = {"activity_in_fov_mbq": round(a_fov_mbq, 2),
                 "injected_decayed_mbq": round(float(ph.meta.get("injected_mbq", 0.0))
                                               * 0.5 ** (t / 6.0067), 1),
                 "mean_transmission": round(transmission, 4), "windows": {}}
        n_heads = max(1, int(np.unique(geo.heads).size))
        scan_s = geo.n_views / n_heads * tpv
        for w, win in enumerate(proj.windows):
            tot = float(proj.counts[w].sum())
            entry["windows"][win.name] = {"total": round(tot), "per_view_mean": round(tot / geo.n_views),
                                          "cps_per_head": round(tot / (scan_s * n_heads), 1)}
        pk = summ.get("photopeak", {})
        if "photopeak" in entry["windows"] and "scatter_to_total" in pk:
            mc_primary = entry["windows"]["photopeak"]["total"] * (1.0 - float(pk["scatter_to_total"]))
            entry["mc_primary_photopeak"] = round(mc_primary)
            entry["independent_primary_estimate"] = round(est_primary)
            entry["mc_over_independent"] = round(mc_primary / est_primary, 3)
            entry["scatter_to_total"] = round(float(pk["scatter_to_total"]), 3)
        out["scans"][f"{t:g}h"] = entry
    return out


def figures(study_dir: Path, patient_ids: list, n_real: int) -> dict:
    """wCV, P(positive) and background COV of a finished study folder."""
    rows = []
    for pid in patient_ids:
        rows.extend(json.loads((study_dir / "patients" / pid / "lesions.json").read_text()))
    spread_max = realisation_spread(rows, "suvmax")
    spread_mean = {(e["patient_id"], e["lesion_id"], e["time_h"]): e for e in realisation_spread(rows, "suvmean")}
    wmax = [e["wcv_pct"] for e in spread_max if e["wcv_pct"] is not None]
    wmean = [e["wcv_pct"] for e in spread_mean.values() if e["wcv_pct"] is not None]
    by_lesion = []
    for e in spread_max:
        m = spread_mean.get((e["patient_id"], e["lesion_id"], e["time_h"]), {})
        by_lesion.append({"patient_id": e["patient_id"], "lesion_id": e["lesion_id"], "time_h": e["time_h"],
                          "true_suv": _r(e["true_suv"]), "diameter_mm": _r(e["diameter_mm"], 1),
                          "suvmax_mean": _r(e["mean"]), "suvmax_wcv_pct": _r(e["wcv_pct"], 1),
                          "suvmean_mean": _r(m.get("mean")), "suvmean_wcv_pct": _r(m.get("wcv_pct"), 1)})
    pp = []
    for e in p_positive_table(rows, THRESHOLD):
        pp.append({"patient_id": e["patient_id"], "lesion_id": e["lesion_id"], "time_h": e["time_h"],
                   "true_suv": _r(e["true_suv"]), "true_suvmax": _r(e["true_suvmax"]),
                   "diameter_mm": _r(e["diameter_mm"], 1), "her2_positive": e["her2_positive"],
                   "p_positive": {k: round(v, 3) for k, v in e["p_positive"].items()}})
    return {"suvmax_wcv_pct": _r(float(np.median(wmax)), 1) if wmax else None,
            "suvmean_wcv_pct": _r(float(np.median(wmean)), 1) if wmean else None,
            "lesion_time_points": len(wmax), "wcv_by_lesion": by_lesion,
            "background_cov": background_noise(study_dir, patient_ids, n_real), "p_positive": pp}


def _r(v, nd=3):
    return None if v is None else round(float(v), nd)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--realisations", type=int, default=10, help="Poisson realisations per scan (>= 2; default 10)")
    ap.add_argument("--patients", type=int, default=1, help="cohort patients (default 1)")
    ap.add_argument("--pvc", default="rbv", help="PVC method giving a corrected SUVmax (default rbv; none = off)")
    ap.add_argument("--compare-no-filter", action="store_true",
                    help="also reconstruct the same data without the post-filter")
    ap.add_argument("--out-dir", help="keep the study folder here (default: a temporary folder, deleted)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a study key (e.g. recon.iterations=2); repeatable")
    args = ap.parse_args(argv)
    if args.patients < 1:
        raise ConfigError(f"--patients = {args.patients}: give 1 or more")
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    root = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="her2sim_rep_"))
    try:
        cfg = study_config(args.patients, args.realisations, args.pvc, args.set)
        sd = root / "study"
        summary = run_study(cfg, sd, progress=False)
        pids = [p.name for p in sorted((sd / "patients").iterdir()) if p.is_dir()]
        out = {"realisations": args.realisations, "patients": pids,
               "protocol": {k: v for k, v in cfg.recon.__dict__.items()},
               "threshold": THRESHOLD}
        out.update(figures(sd, pids, args.realisations))
        out["clinical_reference_wcv_pct"] = CLINICAL_REFERENCE_WCV
        out["counts_per_scan"] = counts_per_scan(sd, pids[0], cfg)
        out["stage_seconds"] = {k: round(v, 1) for k, v in summary["stage_seconds"].items()}
        if args.compare_no_filter:
            cfg0 = study_config(args.patients, args.realisations, args.pvc,
                                [*args.set, "recon.butterworth_cutoff_cycles_per_cm=0.0",
                                 "recon.post_filter_fwhm_mm=0.0"])
            run_study(cfg0, sd, progress=False)  # same data: simulate stages are reused
            f0 = figures(sd, pids, args.realisations)
            out["no_filter"] = {k: f0[k] for k in ("suvmax_wcv_pct", "suvmean_wcv_pct", "background_cov")}
            out["no_filter"]["p_positive_suvmax"] = [
                {"lesion_id": e["lesion_id"], "time_h": e["time_h"], "p": e["p_positive"].get("suvmax")}
                for e in f0["p_positive"]]
    finally:
        if not args.out_dir:
            shutil.rmtree(root, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_average"] = {"start": [round(x, 2) for x in load0], "end": [round(x, 2) for x in os.getloadavg()]}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k in ("realisations", "suvmax_wcv_pct", "suvmean_wcv_pct", "background_cov", "clinical_reference_wcv_pct",
                  "counts_per_scan", "no_filter", "seconds"):
            if k in out:
                print(f"{k}: {out[k]}")
    return out


if __name__ == "__main__":
    main()
