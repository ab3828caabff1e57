"""Where a lesion's PVC error comes from: noise, the scatter estimate, or the model of the image.

Takes one patient of a finished study (e.g. the seed trial of ``bench/lesion_quantitation.py``) and
reconstructs the same scan four ways with the study's OSEM protocol, then corrects each with GTM through the
reconstruction's own response (``analysis.pvc_response = "reconstruction"``) and with the Gaussian point
response (``"gaussian"``):

* ``measured`` - the Poisson realisation with the study's scatter estimate (what ``lesions.csv`` holds);
* ``noise_free`` - the Monte Carlo expectation, same scatter method (removes Poisson noise);
* ``true_scatter`` - the expectation with the Monte Carlo's own scatter as the additive term (removes the
  scatter estimate's error; septal penetration stays in the data);
* ``primary_only`` - the expectation's unscattered, unpenetrated photons, no scatter term.

Each variant is converted to SUV with the measured image's calibration (so a global scale error of the
variant shows up in the organs too). The data are reconstructed on the whole body; ``measured_vs_study_recon_max_rel``
checks that the measured variant is the study's own image. Prints (``--json``): ``patient_id``, ``time_h``, ``lesions`` (per lesion:
``type``, ``diameter_mm``, ``true_suv_intrinsic``, and for every variant ``suvmean``, ``gtm_gaussian`` and
``gtm_response``), ``host_organ_suv`` per variant (the GTM value of each lesion's host organ), ``seconds``.

Usage: ``python bench/pvc_error_sources.py --study DIR [--patient P006] [--time-h 1] [--json]``
(about 2 min per patient at the seed trial's full resolution on 2 cores).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from her2sim import pipeline
from her2sim.analysis.lesion_truth import host_labels, lesions_on_grid
from her2sim.analysis.suv import counts_per_suv as image_counts_per_suv, suv_image
from her2sim.config import loads_study, resolved_study_path
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import Her2simError
from her2sim.core.grid import resample
from her2sim.core.jsonio import print_json
from her2sim.recon.osem import osem, post_filter, recon_system, scatter_estimate
from her2sim.recon.response import ReconstructionResponse
from her2sim.steps.params import StepParams
from her2sim.steps.quantify import response_slabs
from her2sim.steps.scan import recon_kwargs
from her2sim.study_layout import StudyLayout

SCATTER_COMPONENTS = ("scatter1", "scatter2", "scatter3plus")


def error_sources(study: Path, patient_id: str, time_h: float) -> dict:
    t0 = time.time()
    cfg = loads_study(resolved_study_path(study).read_text())
    stage = next((s for s in pipeline.build_stages(cfg) if s.name == f"quantify_{patient_id}"), None)
    if stage is None:
        raise SystemExit(f"--patient {patient_id}: not a patient of the study in {study}")
    step = StepParams.from_params(stage.params, stage.name)
    r = step.recon
    lay = StudyLayout(study)
    ph = Phantom.load(lay.phantom(patient_id))
    img = Image.load(lay.recon(patient_id, time_h))
    grid = img.grid
    measured = Projections.load(lay.noisy(patient_id, time_h))
    expected = Projections.load(lay.expected(patient_id, time_h))
    missing = [c for c in ("primary",) + SCATTER_COMPONENTS if c not in expected.components]
    if missing:
        raise SystemExit(f"{lay.expected(patient_id, time_h)} has no Monte Carlo components {missing}")
    pk = [w.name for w in measured.windows].index("photopeak")
    lesions = lesions_on_grid(grid, ph.grid, ph.lesion_fraction, ph.lesion_owner, ph.lesion_own_suv, ph.truth)
    measured_lesions = {lid: L for lid, L in lesions.items() if L.reason is None}
    organs = resample(host_labels(ph.labels, ph.label_names), ph.grid, grid, order=0)
    cal = json.loads(lay.calibration_json.read_text())
    psf_fwhm = step.analysis.psf_fwhm_mm or cal.get("recon_fwhm_mm") or step.psf_fwhm_mm
    slabs = response_slabs(r, step.camera, ph, grid, organs, measured_lesions, psf_fwhm, measured.geometry)
    suv_img = suv_image(img)
    suv_meta, suv_study = suv_img.meta, np.asarray(suv_img.array, dtype=np.float64)
    check = {}
    counts_per_suv = image_counts_per_suv(img, suv_meta)
    kw = recon_kwargs(r, None, None, False)
    method = r.scatter if r.scatter in ("dew", "tew") else "none"
    true_scatter = sum(np.asarray(expected.components[c][pk], dtype=np.float64) for c in SCATTER_COMPONENTS)
    variants = {"measured": (measured, np.asarray(measured.counts[pk], dtype=np.float64), method),
                "noise_free": (expected, np.asarray(expected.counts[pk], dtype=np.float64), method),
                "true_scatter": (expected, np.asarray(expected.counts[pk], dtype=np.float64), true_scatter),
                "primary_only": (expected, np.asarray(expected.components["primary"][pk], dtype=np.float64), "none")}
    out = {lid: {"type": None, "diameter_mm": None, "true_suv_intrinsic": None} for lid in measured_lesions}
    host = {}
    # the data are reconstructed on the whole body (as the study did); only the model images live on slabs
    mu = slabs[0][2].mu_map_per_cm if slabs else None
    full = recon_system(grid, measured.geometry, mu, step.camera, psf=r.psf, penetration=r.penetration,
                        attenuation_correction=mu is not None)
    for name, (proj, counts, scatter) in variants.items():
        s = scatter_estimate(proj, scatter)   # the recon's unsmoothed DEW, the MC truth, or none
        image = osem(full, counts, r.iterations, r.subsets, scatter=s, progress=False)
        image = post_filter(image, grid, kw["post_filter_fwhm_mm"], kw["butterworth"]) / counts_per_suv
        if name == "measured":
            check["measured_vs_study_recon_max_rel"] = float(np.max(np.abs(image - suv_study)) / np.max(suv_study))
        for sl, model, system, psf, own in slabs:
            resp = ReconstructionResponse(system, s, r.iterations, r.subsets,
                                          post_filter_fwhm_mm=kw["post_filter_fwhm_mm"], butterworth=kw["butterworth"],
                                          counts_per_unit=counts_per_suv, z_slice=sl)
            x = image[sl]
            fit = model.gtm_response(x, resp, psf, grid.spacing_mm)
            gauss = model.gtm(x, psf, grid.spacing_mm)
            means = model.voi_means(x)
            n_org = len(model.organs)
            for lid in own:
                j = n_org + model.lesions.index(lid)
                out[lid][name] = {"suvmean": float(means[j]), "gtm_gaussian": float(gauss[j]),
                                  "gtm_response": float(fit.coeffs[j])}
                h = int(np.bincount(model.organ_labels[model.lesion_vois[lid]]).argmax())
                host.setdefault(name, {})[str(lid)] = float(fit.coeffs[model.organs.index(h)])
    rows = json.loads(lay.lesions_json(patient_id).read_text())
    for row in rows:
        lid = row["lesion_id"]
        if lid in out and abs(row["time_h"] - time_h) < 1e-6 and row.get("realisation", 0) == 0:
            out[lid].update(type=row.get("type"), diameter_mm=row.get("diameter_mm"),
                            true_suv_intrinsic=row.get("true_suv_intrinsic"))
    return {"patient_id": patient_id, "time_h": time_h, "scatter_method": r.scatter, **check,
            "lesions": {str(k): v for k, v in out.items()}, "host_organ_suv": host,
            "seconds": round(time.time() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, required=True, help="a finished study folder (needs expected.h5)")
    ap.add_argument("--patient", default="P006", help="patient id (default P006: two liver metastases)")
    ap.add_argument("--time-h", type=float, default=1.0, help="time point (h)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    try:
        res = error_sources(args.study, args.patient, args.time_h)
    except (Her2simError, OSError) as exc:
        print(f"pvc_error_sources: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(res)
    else:
        for lid, v in res["lesions"].items():
            print(f"lesion {lid} ({v['type']}, {v['diameter_mm']:.1f} mm, intrinsic {v['true_suv_intrinsic']:.2f}): "
                  + "; ".join(f"{k} {v[k]['suvmean']:.2f}/{v[k]['gtm_gaussian']:.2f}/{v[k]['gtm_response']:.2f}"
                              for k in ("measured", "noise_free", "true_scatter", "primary_only")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
