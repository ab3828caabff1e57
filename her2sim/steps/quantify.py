"""The ``quantify_<id>`` step: every truth lesion's row (SUVmax/mean/peak, reading, PVC) against its truth.

The array work is :mod:`her2sim.analysis` (lesion truth on the recon grid, VOIs, background ring, SUV and SUL,
PVC region models); this step loads the patient's files, hands the analysis the reconstruction's own
response where PVC needs it (:mod:`her2sim.recon.response`) and writes ``lesions.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from her2sim.analysis.figures import plot_true_vs_reconstructed
from her2sim.analysis.lesion_table import add_reading, background_ring, lesion_rows
from her2sim.analysis.lesion_truth import host_labels, lesions_on_grid, margin_allowed
from her2sim.analysis.pvc import apply_pvc, pvc_recovery_coefficient
from her2sim.analysis.pvc_regions import lesion_box_models, lesion_slab_models
from her2sim.analysis.suv import counts_per_suv, lean_body_mass_kg, suv_image, suv_scale_factor
from her2sim.config import ReconSection
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import DataError
from her2sim.core.grid import Grid, resample
from her2sim.core.jsonio import write_json
from her2sim.recon.filters import point_response_filter
from her2sim.recon.osem import recon_system, scatter_estimate
from her2sim.recon.response import ReconstructionResponse, slab_support
from her2sim.sim.camera import Camera
from her2sim.stages import StageTask
from her2sim.study_layout import StudyLayout

from .common import fault_injection_delay
from .params import StepParams
from .scan import attenuation_map, recon_kwargs, scatter_method


def stage_quantify(task: StageTask) -> None:
    """SUV per lesion (max, mean, peak) with and without PVC, visual read, against the truth.

    Every lesion of the truth gets a row: measured on the recon grid (its VOI from the phantom's sub-voxel
    lesion fraction, its margin kept out of other organs), or with the reason it is not
    (:data:`her2sim.analysis.lesion_truth.UNMEASURED_REASONS`). GTM, RBV and iterative Yang use the organ
    labels plus the lesions' fraction maps as regions (:mod:`her2sim.analysis.pvc_regions`); with
    ``analysis.pvc_response = "reconstruction"`` GTM and RBV model the image by the OSEM protocol itself
    (:mod:`her2sim.recon.response`), iterative Yang by the Gaussian point response.
    """
    fault_injection_delay(task.stage)

    step = StepParams.from_params(task.params, task.stage)
    a = step.analysis
    lay, pid = StudyLayout(task.study_dir), step.patient_id
    ph = Phantom.load(lay.phantom(pid))
    if ph.lesion_fraction is None or ph.lesion_owner is None or ph.lesion_own_suv is None:
        raise DataError(f"{lay.phantom(pid)} has no lesion fraction maps (made by an older her2sim); "
                        "delete the study's patients folder and rerun")
    grid = Image.load(lay.recon(pid, ph.time_points_h[0])).grid
    sp = grid.spacing_mm
    lesions = lesions_on_grid(grid, ph.grid, ph.lesion_fraction, ph.lesion_owner, ph.lesion_own_suv, ph.truth,
                              min_voxels=a.min_voi_voxels)
    measured = {lid: L for lid, L in lesions.items() if L.reason is None}
    organs = resample(host_labels(ph.labels, ph.label_names), ph.grid, grid, order=0)
    allowed = margin_allowed(organs, ph.label_names)
    body = organs > 0
    any_lesion = np.zeros(grid.shape, bool)
    for L in lesions.values():
        if L.voi is not None:
            any_lesion |= L.voi
    voi_method = a.voi
    ct = resample(ph.ct_hu, ph.grid, grid, order=1, cval=-1000.0) if voi_method == "ct" else None
    margin = a.voi_margin_mm
    margin = float(sp[1]) if margin is None else float(margin)
    cal = json.loads(lay.calibration_json.read_text())
    psf_fwhm = a.psf_fwhm_mm or cal.get("recon_fwhm_mm") or step.psf_fwhm_mm
    region_methods = [m for m in a.pvc_methods if m in ("gtm", "rbv", "iy")]
    use_response = bool(region_methods and measured) and a.pvc_response == "reconstruction"
    # one small region model per lesion (a box of +-60 mm: the blur's reach), organs + lesions as regions
    boxes = lesion_box_models(organs.astype(np.int32), {lid: L.fraction for lid, L in measured.items()},
                              {lid: L.voi for lid, L in measured.items()}, sp) \
        if region_methods and measured and not use_response else {}
    slabs = response_slabs(step.recon, step.camera, ph, grid, organs, measured, psf_fwhm, Projections.load(
        lay.noisy(pid, ph.time_points_h[0])).geometry) if use_response else []
    box_psf = {lid: pvc_psf(step.recon, psf_fwhm, Grid(tuple(s.stop - s.start for s in box), sp))
               for lid, (box, _) in boxes.items()}
    lbm_kg = lean_body_mass_kg(ph.meta["weight_kg"], ph.meta["height_cm"], ph.meta.get("sex", "F"))
    rings = {lid: background_ring(L.voi, body, any_lesion, sp) for lid, L in measured.items()}
    rows = []
    for fi, t_h in enumerate(ph.time_points_h):
        for k in range(step.monte_carlo.noise_realisations):
            img = Image.load(lay.recon(pid, t_h, k))
            suv_img = suv_image(img)
            suv = suv_img.array
            base = lesion_rows(suv, grid, lesions, ph.truth, step.patient_id, time_index=fi, voi=voi_method,
                               margin_mm=margin, allowed=allowed, ct_hu=ct,
                               threshold_fraction=a.voi_threshold_fraction)
            for row in base:
                row.update({"time_h": t_h, "realisation": k, "group": ph.meta.get("group")})
                if not row["measured"]:
                    continue
                add_reading(row, suv, rings[row["lesion_id"]], rose_k=a.rose_k, lbm_kg=lbm_kg,
                            weight_kg=ph.meta["weight_kg"])
            done = [row for row in base if row["measured"]]
            gtm_c = {}
            if slabs and done:
                region_pvc_with_response(slabs, suv, counts_per_suv(img, suv_img.meta),
                                          Projections.load(lay.noisy(pid, t_h, k)), step.recon,
                                          [m for m in a.pvc_methods if m in ("gtm", "rbv", "iy")], done,
                                          mc_scatter_path=lay.mc_scatter(pid, t_h, k))
            for method in a.pvc_methods:
                if method == "none" or not done:
                    continue
                if method == "rc":
                    rc_curve = cal.get("rc_voi") or {}
                    d = np.array([float(x) for x in rc_curve])
                    if d.size < 2:
                        continue
                    order = np.argsort(d)
                    rc = np.array(list(rc_curve.values()), dtype=float)[order]
                    for row in done:
                        row["pvc_rc_suvmean"] = pvc_recovery_coefficient(
                            row["suvmean"], row["diameter_mm"], d[order], np.clip(rc, 1e-3, 2.0),
                            extrapolate=True, background=row.get("background_suv", 0.0))
                    continue
                if method in ("gtm", "rbv", "iy"):
                    if slabs:
                        continue   # done above with the reconstruction's response
                    for row in done:
                        lid = row["lesion_id"]
                        row["gtm_response"] = "gaussian"
                        box, model = boxes[lid]
                        sub = suv[box]
                        if method == "gtm" or lid not in gtm_c:
                            gtm_c[lid] = model.gtm(sub, box_psf[lid], sp)
                        if method == "gtm":
                            row["pvc_gtm_suvmean"] = model.lesion_value(gtm_c[lid], lid)
                            continue
                        if method == "rbv":
                            x, c = model.rbv(sub, box_psf[lid], sp, gtm_coeffs=gtm_c[lid])
                        else:
                            x, c = model.iterative_yang(sub, box_psf[lid], sp)
                        row[f"pvc_{method}_suvmean"] = model.lesion_value(c, lid)
                        row[f"pvc_{method}_suvmax"] = float(x[model.lesion_vois[lid]].max())
                    continue
                # voxel-wise deconvolutions (rl, vc) and two-compartment Muller-Gartner on the lesion VOIs
                labels = np.where(any_lesion, 0, np.where(body, 10000, 1)).astype(np.int32)
                for lid in measured:
                    labels[lesions[lid].voi] = lid + 20000
                opts = {"background_label": 10000} if method == "mg" else {}
                corrected = apply_pvc(method, suv, grid, psf_fwhm, labels=labels, **opts)
                for row in done:
                    m = lesions[row["lesion_id"]].voi
                    row[f"pvc_{method}_suvmean"] = float(corrected[m].mean())
                    row[f"pvc_{method}_suvmax"] = float(corrected[m].max())
            rows.extend(base)
            if fi == 0 and k == 0 and step.figures:   # output.figures = false writes none
                true_bq = resample(ph.activity_bq_per_ml[0], ph.grid, grid, order=1)
                scale = suv_scale_factor(ph.meta["injected_mbq"] * 1e6, ph.meta["weight_kg"], elapsed_s=t_h * 3600.0)
                plot_true_vs_reconstructed(true_bq * scale, suv, grid.spacing_mm,
                                           lay.figures_dir / f"recon_{pid}.png",
                                           title=f"{step.patient_id} at {t_h:g} h: truth vs OSEM (SUV)",
                                           lesion_mask=any_lesion, vmax=4.0)
    write_json(task.outputs[0], rows)


def response_slabs(recon: ReconSection, camera: Camera, ph: Phantom, grid: Grid, organs, measured: dict,
                   psf_fwhm: float, geometry) -> list:
    """Slab region models (:func:`her2sim.analysis.pvc_regions.lesion_slab_models`) with their system
    matrices (the reconstruction's, supported on the slab) and Gaussian point responses (the Newton
    preconditioner of :meth:`~her2sim.analysis.pvc_regions.RegionModel.gtm_response`).

    Parameters
    ----------
    recon : ReconSection
        The study's OSEM protocol (PSF, penetration, attenuation correction, post-filters).
    camera : Camera
    ph : Phantom
        The patient (its CT gives the attenuation map).
    grid : Grid
        The recon grid (mm).
    organs : numpy.ndarray
        Host-organ labels on ``grid``.
    measured : dict
        Measured lesions (:func:`her2sim.analysis.lesion_truth.lesions_on_grid`) by lesion id.
    psf_fwhm : float
        Reconstructed resolution (mm FWHM) of the Gaussian point response.
    geometry : ProjectionGeometry
        The scan's orbit.

    Returns
    -------
    list of tuple
        ``(z slice, RegionModel, system matrix, point response, lesion ids wholly inside the slab)``.
    """

    mu = attenuation_map(ph, grid, recon) if recon.attenuation else None
    out = []
    models = lesion_slab_models(organs.astype(np.int32), {lid: L.fraction for lid, L in measured.items()},
                                {lid: L.voi for lid, L in measured.items()}, grid.spacing_mm)
    for sl, model in models:
        system = recon_system(grid, geometry, mu, camera, psf=recon.psf, penetration=recon.penetration,
                              attenuation_correction=mu is not None, support=slab_support(mu, grid, sl))
        slab_grid = Grid((sl.stop - sl.start,) + grid.shape[1:], grid.spacing_mm)
        own = [lid for lid in model.lesions if lid in measured and measured[lid].voi[sl].sum() == measured[lid].voi.sum()]
        out.append((sl, model, system, pvc_psf(recon, psf_fwhm, slab_grid), own))
    return out


def region_pvc_with_response(slabs: list, suv, counts_per_suv: float, projections: Projections, recon: ReconSection,
                             methods: list, rows: list, mc_scatter_path: Path) -> None:
    """GTM and RBV of each slab through the reconstruction's own response; fills the lesions' ``rows`` in place.

    Parameters
    ----------
    slabs : list
        :func:`response_slabs` of the patient.
    suv : numpy.ndarray
        The scan's SUV image (z, y, x).
    counts_per_suv : float
        :func:`her2sim.analysis.suv.counts_per_suv` of that image.
    projections : Projections
        The realisation the image was reconstructed from.
    recon : ReconSection
        The study's OSEM protocol (iterations, subsets, scatter correction, post-filters).
    methods : list of str
        Region methods to report (``gtm``, ``rbv``, ``iy``; iterative Yang keeps the Gaussian response, since
        each of its iterations would cost a reconstruction).
    mc_scatter_path : Path
        The realisation's saved Monte Carlo scatter estimate (read when ``recon.scatter = "mc"``).
    """
    method = scatter_method(recon, projections)
    if method == "mc":
        if not mc_scatter_path.exists():
            raise DataError(f"{mc_scatter_path} is missing: the reconstruction's Monte Carlo scatter estimate is "
                            "needed for analysis.pvc_response = 'reconstruction' (a study made by an older her2sim); "
                            "delete the recon outputs and rerun, or set analysis.pvc_response = 'gaussian'")
        scatter = Projections.load(mc_scatter_path).counts[0]
    else:
        # the recon's own additive term: DEW/TEW unsmoothed, as stage_recon used them
        # (recon.scatter_smooth_fwhm_mm smooths only the Monte Carlo estimate, which is saved already smoothed)
        scatter = scatter_estimate(projections, method)
    kw = recon_kwargs(recon, None, None, False)
    by_id = {row["lesion_id"]: row for row in rows}
    for sl, model, system, psf, own in slabs:
        slab_lesions = [lid for lid in own if lid in by_id]
        if not slab_lesions:
            continue
        resp = ReconstructionResponse(system, scatter, recon.iterations, recon.subsets,
                                      post_filter_fwhm_mm=kw["post_filter_fwhm_mm"], butterworth=kw["butterworth"],
                                      counts_per_unit=counts_per_suv, z_slice=sl)
        sub = suv[sl]
        fit = model.gtm_response(sub, resp, psf, system.grid.spacing_mm)
        x_rbv, c_rbv = model.rbv_response(sub, fit) if "rbv" in methods else (None, None)
        x_iy, c_iy = model.iterative_yang(sub, psf, system.grid.spacing_mm) if "iy" in methods else (None, None)
        for lid in slab_lesions:
            row = by_id[lid]
            voi = model.lesion_vois[lid]
            if "gtm" in methods:
                row["pvc_gtm_suvmean"] = model.lesion_value(fit.coeffs, lid)
            if x_rbv is not None:
                row["pvc_rbv_suvmean"] = model.lesion_value(c_rbv, lid)
                row["pvc_rbv_suvmax"] = float(x_rbv[voi].max())
            if x_iy is not None:
                row["pvc_iy_suvmean"] = model.lesion_value(c_iy, lid)
                row["pvc_iy_suvmax"] = float(x_iy[voi].max())
            row["gtm_response"] = "reconstruction"
            row["gtm_response_images"] = resp.evaluations


def pvc_psf(recon: ReconSection, fwhm_mm: float, grid: Grid):
    """The reconstructed image's point response for PVC: Gaussian ``fwhm_mm`` then the protocol's post-filter.

    Returns a callable image (z, y, x) -> image on ``grid`` (:mod:`her2sim.analysis.pvc_regions`), one FFT
    per call in single precision (:func:`her2sim.recon.filters.point_response_filter`).
    """

    fc = recon.butterworth_cutoff_cycles_per_cm or 0.0
    bw = (float(fc), int(recon.butterworth_order)) if fc > 0 else None
    post = float(recon.post_filter_fwhm_mm or 0.0)

    def psf(image):
        x = point_response_filter(np.asarray(image, dtype=np.float32), grid, fwhm_mm, post_filter_fwhm_mm=post,
                                  butterworth=bw)
        return np.asarray(x, dtype=np.float64)
    return psf
