"""The virtual-study pipeline: phantom -> Monte Carlo -> Poisson -> OSEM -> SUV/PVC -> statistics -> report.

Every step is a :class:`her2sim.stages.Stage` whose products are files in the study
folder, so a killed run resumes where it stopped and a changed setting recomputes only
what depends on it. Per patient there are four stages (``phantom_<id>``,
``simulate_<id>``, ``recon_<id>``, ``quantify_<id>``); a ``calibration`` stage turns
counts into Bq/mL (and measures IEC recovery coefficients); ``statistics`` and
``report`` close the study.

Study folder layout::

    study.resolved.toml             resolved configuration (the study file given is never overwritten)
    .her2sim.lock                   PID and host of the run writing the folder (while it runs)
    (every path from :class:`her2sim.study_layout.StudyLayout`)
    calibration/                    phantom.h5 expected.h5 recon.h5 calibration.json
    patients/<id>/phantom.h5        Phantom (truth table inside)
    patients/<id>/t<H>h/            expected.h5, noisy_r<K>.h5, recon_r<K>.h5
    patients/<id>/lesions.json      measured vs true lesion rows
    results/lesions.csv, results/summary.json, results/figures/*.png
    report.html
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeWarning

from her2sim.analysis import figures
from her2sim.analysis.figures import plot_true_vs_reconstructed
from her2sim.analysis.lesion_table import add_reading, background_ring, lesion_rows
from her2sim.analysis.lesion_truth import host_labels, lesions_on_grid, margin_allowed
from her2sim.analysis.pvc import (apply_pvc, fit_effective_fwhm_mm, measure_recovery_coefficients,
                                  psf_from_point_source, pvc_recovery_coefficient)
from her2sim.analysis.pvc_regions import lesion_box_models, lesion_slab_models
from her2sim.analysis.call_rates import call_consistency, call_rates
from her2sim.analysis.robustness import study_robustness_summary
from her2sim.analysis.stats import bias_rmse, compare_groups, group_mean_sd, result_or_undefined, spearman_ihc
from her2sim.analysis.suv import counts_per_suv, lean_body_mass_kg, suv_image, suv_scale_factor
from her2sim.analysis.threshold import evaluate_threshold, write_lesion_csv
from her2sim.config import RESOLVED_NAME, StudyConfig, preflight, save_study
from her2sim.core.acquisition import Acquisition
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.grid import Grid, resample
from her2sim.core.hdf5io import to_json
from her2sim.core.jsonio import write_json
from her2sim.core.versions import package_versions
from her2sim.phantoms import (build_patient_phantom, generate_cohort, iec_body_phantom, iec_sphere_centres_mm,
                              plot_phantom, point_source_phantom, uniform_cylinder_phantom)
from her2sim.recon import MonteCarloScatter, grid_for_geometry, reconstruct, reconstruct_batch
from her2sim.recon.attenuation import mu_map_from_ct, mu_map_from_materials
from her2sim.recon.calibration import CALIBRATION_PHANTOMS, calibrate_image, sensitivity_cps_per_bq
from her2sim.recon.filters import point_response_filter
from her2sim.recon.osem import batch_memory_bytes, recon_system, scatter_estimate
from her2sim.recon.response import ReconstructionResponse, slab_support
from her2sim.report import write_report
from her2sim.sim.analog import simulate
from her2sim.sim.camera import Camera
from her2sim.sim.transport import MonteCarloSettings, body_reach_mm, poisson_realisations
from her2sim.stages import Stage, StageTask, run_stages, study_lock
from her2sim.study_dicom import export_study_dicom
from her2sim.study_layout import StudyLayout

#: bump when a stage's function changes what it writes (part of every stage key)
PIPELINE_VERSION = 2  # 2: exact recon support (recon outputs change)
#: histories of the pilot run used to size a run for ``monte_carlo.target_relative_noise``
PILOT_HISTORIES = 100_000
MAX_HISTORIES = 100_000_000
HIGH_PRIORITY_KEYS = ("suvmax", "suvmean", "suvpeak")


# ------------------------------------------------------------------------------------------ helpers
def _fault_injection_delay(stage: str) -> None:
    """Sleep at the start of ``stage`` when ``HER2SIM_STAGE_DELAY_S="stage=seconds,..."`` is set.

    Used by the kill-and-resume reliability tests to stop a run inside a given stage.
    """
    spec = os.environ.get("HER2SIM_STAGE_DELAY_S", "")
    for item in filter(None, spec.split(",")):
        name, _, secs = item.partition("=")
        if name.strip() == stage:
            time.sleep(float(secs))


def _seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (study seed, patient index, stage code)."""
    return int(np.random.SeedSequence([int(p) % (2 ** 32) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


def _camera(params):
    return Camera.from_dict(params["camera"])


def _simulate(ph, cam, params, settings, frame: int = 0, geometry=None):
    """Expected projections in the study's ``monte_carlo.mode`` (fast when the key is absent)."""
    return simulate(ph, cam, settings, frame=frame, geometry=geometry, mode=params["monte_carlo"].get("mode", "fast"))


def _mc_settings(params, seed: int, histories: int | None = None):
    mc = params["monte_carlo"]
    threads = mc.get("threads") or None
    return MonteCarloSettings(n_histories=int(histories or mc["histories"]), seed=seed, threads=threads)


_write_json = write_json


def _grid(params) -> Grid:
    g = params["grid"]
    return Grid.centered(tuple(g["shape"]), tuple(g["spacing_mm"]))


def _recon_grid(params, phantom_grid: Grid) -> Grid:
    """Reconstruction grid: slices on the detector rows, transaxial grid on the rotation axis."""
    geo = _camera(params).projection_geometry(axis_z_mm=phantom_grid.center_mm[0])
    return grid_for_geometry(geo)


def _reconstruct(projections: Projections, mu_map, grid: Grid, params, cps_per_bq=None, progress=False,
                 phantom: Phantom | None = None, seed: int = 0, scatter_out: list | None = None) -> Image:
    """One reconstruction with the study's recon settings; with ``recon.scatter = "mc"`` the Monte Carlo
    scatter estimate (view, v, u) is appended to ``scatter_out`` when given."""
    r = params["recon"]
    scatter = _scatter_method(r, projections)
    kwargs = _recon_kwargs(r, mu_map, cps_per_bq, progress)
    mu = mu_map if r["attenuation"] else None
    if scatter == "mc":
        if phantom is None:
            raise ConfigError("recon.scatter = 'mc' needs the phantom's CT for the scatter simulation")
        kwargs["mc_scatter"] = MonteCarloScatter(phantom.ct_hu, phantom.grid, n_histories=r["scatter_histories"],
                                                 seed=seed, smooth_fwhm_mm=r["scatter_smooth_fwhm_mm"])
    img, s = reconstruct(projections, mu, grid, _camera(params), scatter=scatter, return_scatter=True, **kwargs)
    if scatter_out is not None and scatter == "mc":
        scatter_out.append(s)
    return img


def _at_scan_start(acq: Acquisition | None, scan_start_s: float) -> Acquisition:
    """``acq`` (None: nothing known) with the scan starting ``scan_start_s`` after injection."""
    return replace(acq or Acquisition(), scan_start_s=scan_start_s)


def _scatter_method(r: dict, projections: Projections) -> str:
    """``recon.scatter``, except DEW on projections without a "scatter" window (a calibration or point-source
    scan simulated with the photopeak only), which has nothing to correct with: ``"none"``."""
    if r["scatter"] == "dew" and "scatter" not in [w.name for w in projections.windows]:
        return "none"
    return r["scatter"]


def _recon_kwargs(r: dict, mu_map, cps_per_bq, progress: bool) -> dict:
    """Keyword arguments of :func:`her2sim.recon.reconstruct` from the stage's ``recon`` parameters."""
    fc = r.get("butterworth_cutoff_cycles_per_cm") or 0.0
    return dict(iterations=r["iterations"], subsets=r["subsets"], psf=r["psf"], penetration=r["penetration"],
                post_filter_fwhm_mm=r["post_filter_fwhm_mm"] or None, calibration_cps_per_bq=cps_per_bq,
                butterworth=(float(fc), int(r.get("butterworth_order", 10))) if fc > 0 else None,
                attenuation_correction=bool(r["attenuation"] and mu_map is not None), progress=progress)


def _reconstruct_realisations(realisations: list, mu_map, grid: Grid, params, cps_per_bq=None,
                              progress=False) -> list:
    """All noise realisations of one scan in one batched OSEM (:func:`her2sim.recon.reconstruct_batch`):
    the system matrix, attenuation and sensitivity images are built once and every projector pass
    serves the whole batch. ``recon.scatter = "mc"`` is not batched (its scatter term needs a
    reconstruction per realisation); the caller loops over :func:`_reconstruct` then."""
    r = params["recon"]
    scatter = _scatter_method(r, realisations[0])
    mu = mu_map if r["attenuation"] else None
    return reconstruct_batch(realisations, mu, grid, _camera(params), scatter=scatter,
                             **_recon_kwargs(r, mu_map, cps_per_bq, progress))


def _mu_map(phantom: Phantom, grid: Grid, params=None):
    """Attenuation map (1/cm at 140.5 keV) on the recon grid.

    ``recon.mu_map = "ct"`` (default): the scanner's bilinear HU -> mu map applied to the CT, as a clinic
    would; ``"materials"``: the ideal map, mu of the phantom's own materials and densities (what the Monte
    Carlo transports), to separate attenuation-map error from the other errors of a study.
    """
    if params is not None and params["recon"]["mu_map"] == "materials":
        return mu_map_from_materials(phantom, grid)
    return mu_map_from_ct(phantom.ct_hu, phantom.grid, grid)


# ------------------------------------------------------------------------------------------ stages
def stage_calibration(task: StageTask) -> None:
    """Simulate and reconstruct a calibration object; derive cps/Bq (and IEC recovery coefficients).

    ``calibration.phantom``: ``iec``, ``cylinder`` or ``point`` (a point source in air at the centre) is
    simulated and reconstructed like a patient scan; ``none`` scans nothing and uses the camera's analytic
    planar sensitivity. The reconstructed resolution for PVC is measured with point sources in every case.
    """
    _fault_injection_delay(task.stage)

    p = task.params
    out = Path(task.outputs[0]).parent
    grid = _grid(p)
    kind = p["calibration"]["phantom"]
    if kind not in CALIBRATION_PHANTOMS:
        raise ConfigError(f"calibration.phantom = {kind!r} is not allowed; choose one of {list(CALIBRATION_PHANTOMS)}")
    act_bq = p["calibration"]["activity_mbq"] * 1e6
    cam = _camera(p)
    if kind == "none":
        cps = cam.sensitivity_cps_per_mbq() / 1e6
        cal = {"phantom": kind, "activity_mbq": None, "cps_per_bq": cps, "sensitivity_cps_per_mbq": cps * 1e6,
               "source": "analytic planar sensitivity of the camera (Camera.sensitivity_cps_per_mbq)"}
        cal["recon_fwhm_mm"] = _point_source_fwhm_mm(p, grid, cam)
        _write_json(task.outputs[0], cal)
        return
    if kind == "iec":
        ph = iec_body_phantom(grid, background_bq_per_ml=1000.0, sphere_to_background=p["calibration"]["ratio"])
    elif kind == "point":
        ph = point_source_phantom(grid, p["calibration"]["activity_mbq"], medium="air")
    else:
        ph = uniform_cylinder_phantom(grid, concentration_bq_per_ml=1000.0)
    scale = act_bq / ph.total_activity_bq(0)
    ph.activity_bq_per_ml *= np.float32(scale)
    ph.save(out / "phantom.h5")
    res = _simulate(ph, cam, p, _mc_settings(p, _seed(p["seed"], 0, 1), p["monte_carlo"]["calibration_histories"]))
    proj = res.projections
    proj.meta["scan_start_s"] = 0.0
    proj.acquisition = _at_scan_start(proj.acquisition, 0.0)
    proj.save(out / "expected.h5")
    rgrid = _recon_grid(p, grid)
    img = _reconstruct(proj, _mu_map(ph, rgrid, p), rgrid, p, phantom=ph, seed=_seed(p["seed"], 0, 4))
    tpv = cam.protocol.time_per_view_s
    duration = tpv * proj.geometry.n_views / 2
    cps = sensitivity_cps_per_bq(img, act_bq, tpv, 0.0, duration)
    img.save(out / "recon.h5")
    cal = {"phantom": kind, "activity_mbq": p["calibration"]["activity_mbq"], "cps_per_bq": cps,
           "sensitivity_cps_per_mbq": cps * 1e6, "mc_summary": res.summary(), "mc_stats": res.stats}
    if kind == "iec":
        bq = calibrate_image(img, cps, tpv, 0.0, duration, decay_reference="scan_start")
        spheres = iec_sphere_centres_mm()
        centres = [s["centre_mm"] for s in spheres]
        diameters = [s["diameter_mm"] for s in spheres]
        bg = 1000.0 * scale
        cal["rc"], cal["rc_max"], cal["rc_voi"] = {}, {}, {}
        for c, d in zip(centres, diameters):
            try:  # spheres smaller than a voxel have no voxel mostly inside them on coarse grids
                rc = measure_recovery_coefficients(bq.array, rgrid, [c], [d], bg * p["calibration"]["ratio"],
                                                   background_value=bg)
            except DataError:
                continue
            cal["rc"][str(int(round(d)))] = float(rc["rc_mean"][0])
            cal["rc_max"][str(int(round(d)))] = float(rc["rc_max"][0])
            cal["rc_voi"][str(int(round(d)))] = float(rc["rc_mean_voi"][0])
        if len(cal["rc"]) >= 2:
            # the Gaussian FWHM whose blurred-sphere recovery best fits the IEC spheres (reported, not used by
            # PVC: the IEC recovery of this protocol is not a resolution effect alone, see README)
            cal["iec_gaussian_fit_fwhm_mm"] = fit_effective_fwhm_mm([float(k) for k in cal["rc"]],
                                                                     list(cal["rc"].values()))
    cal["recon_fwhm_mm"] = _point_source_fwhm_mm(p, grid, cam)
    _write_json(task.outputs[0], cal)


#: point sources of the reconstructed-resolution measurement (z, y, x mm): the centre of a 216 mm water
#: cylinder and 75 mm off the axis, as NEMA NU 1 measures SPECT reconstructed resolution with scatter
PSF_POINTS_MM = ((0.0, 0.0, 0.0), (0.0, 0.0, 75.0))


def _point_source_fwhm_mm(p: dict, grid: Grid, cam) -> float | None:
    """Reconstructed resolution of the study's protocol without its post-filter (mm FWHM).

    A 10 MBq point source in a 216 mm water cylinder, at each of :data:`PSF_POINTS_MM` (NEMA NU 1: central
    and 75 mm peripheral), is simulated with the study's camera and reconstructed with its OSEM (iterations,
    subsets, resolution recovery, AC, scatter correction) but no post-filter; a 3-D Gaussian is fitted to
    each (:func:`her2sim.analysis.pvc.psf_from_point_source`) and the FWHMs (z, y, x, both points) are
    averaged. Partial-volume correction models the image's point response as this Gaussian followed by the
    protocol's post-filter, which is known exactly (:func:`pvc_psf`). None when no fit succeeds.
    """



    # no post-filter, and an unsmoothed Monte Carlo scatter estimate (smoothing suits diffuse uptake, not a point:
    # 40 mm of it turned the demo's 5.9 mm point response into 10.3 mm)
    unfiltered = dict(p, recon=dict(p["recon"], post_filter_fwhm_mm=0.0, butterworth_cutoff_cycles_per_cm=0.0,
                                    scatter_smooth_fwhm_mm=0.0))
    rgrid = _recon_grid(p, grid)
    fwhms = []
    for i, pos in enumerate(PSF_POINTS_MM):
        ph = point_source_phantom(grid, 10.0, position_mm=pos, medium="water", medium_diameter_mm=216.0)
        res = _simulate(ph, cam, p, _mc_settings(p, _seed(p["seed"], 0, 5, i), p["monte_carlo"]["calibration_histories"]))
        img = _reconstruct(res.projections, _mu_map(ph, rgrid, p), rgrid, unfiltered, phantom=ph,
                           seed=_seed(p["seed"], 0, 6, i))
        try:
            with warnings.catch_warnings():   # a coarse grid leaves the fit's covariance undetermined: not an error
                warnings.simplefilter("ignore", OptimizeWarning)
                fwhms.extend(psf_from_point_source(img.array, rgrid)["fwhm_mm"])
        except (DataError, RuntimeError, ValueError):   # no Gaussian fits (e.g. a grid too coarse for a point)
            continue
    fwhms = [f for f in fwhms if np.isfinite(f) and f > 0]
    return float(np.mean(fwhms)) if fwhms else None


def pvc_psf(recon: dict, fwhm_mm: float, grid: Grid):
    """The reconstructed image's point response for PVC: Gaussian ``fwhm_mm`` then the protocol's post-filter.

    Returns a callable image (z, y, x) -> image on ``grid`` (:mod:`her2sim.analysis.pvc_regions`), one FFT
    per call in single precision (:func:`her2sim.recon.filters.point_response_filter`).
    """

    fc = recon.get("butterworth_cutoff_cycles_per_cm") or 0.0
    bw = (float(fc), int(recon.get("butterworth_order", 10))) if fc > 0 else None
    post = float(recon.get("post_filter_fwhm_mm") or 0.0)

    def psf(image):
        x = point_response_filter(np.asarray(image, dtype=np.float32), grid, fwhm_mm, post_filter_fwhm_mm=post,
                                  butterworth=bw)
        return np.asarray(x, dtype=np.float64)
    return psf


def stage_phantom(task: StageTask) -> None:
    """Build one patient's phantom (activity per time point, CT, labels, truth) and its figure."""
    _fault_injection_delay(task.stage)

    p = task.params
    grid = _grid(p)
    ph = build_patient_phantom(p["patient"], grid, seed=p["patient_seed"])
    ph.meta["patient_id"] = p["patient"]["id"]
    ph.save(task.outputs[0])
    if p.get("figures", True):
        plot_phantom(ph, StudyLayout(task.study_dir).figures_dir / f"phantom_{p['patient']['id']}.png")


def stage_simulate(task: StageTask) -> None:
    """Expected projections per time point by fast Monte Carlo, then Poisson realisations."""
    _fault_injection_delay(task.stage)

    p = task.params
    lay, pid = StudyLayout(task.study_dir), p["patient_id"]
    ph = Phantom.load(lay.phantom(pid))
    cam = _camera(p)
    geometry = _orbit(ph, cam)
    for fi, t_h in enumerate(ph.time_points_h):
        res = _simulate_to_target(ph, cam, p, _seed(p["seed"], p["index"], 2, fi), fi, geometry)
        proj = res.projections
        proj.meta.update({"scan_start_s": t_h * 3600.0, "patient_id": p["patient_id"], "mc_summary": res.summary(),
                          "mc_stats": res.stats})
        proj.acquisition = _at_scan_start(proj.acquisition, t_h * 3600.0)
        proj.save(lay.expected(pid, t_h))
        for k, noisy in enumerate(poisson_realisations(proj, p["monte_carlo"]["noise_realisations"],
                                                       seed=_seed(p["seed"], p["index"], 3, fi))):
            noisy.save(lay.noisy(pid, t_h, k))


#: clearance between the body outline and the collimator face on a body-contour orbit (mm, assumption)
CONTOUR_MARGIN_MM = 20.0


def _orbit(ph: Phantom, cam):
    """The acquisition orbit: circular, or body contour + margin when ``protocol.orbit = "contour"``."""
    geo = cam.projection_geometry(axis_z_mm=ph.grid.center_mm[0])
    if cam.protocol.orbit != "contour":
        return geo
    radii = np.maximum(body_reach_mm(ph, geo) + CONTOUR_MARGIN_MM, 50.0)
    return cam.projection_geometry(axis_z_mm=ph.grid.center_mm[0], radii_mm=radii)


def _simulate_to_target(ph, cam, p, seed: int, frame: int, geometry=None):
    """MC (``monte_carlo.mode``) with ``monte_carlo.histories``, or, when a ``target_relative_noise`` is set, a
    pilot run of ``PILOT_HISTORIES`` followed (if needed) by a run sized so that the relative MC standard error of
    the photopeak total, sqrt(var)/counts, reaches the target (it falls as 1/sqrt(histories))."""
    mc = p["monte_carlo"]
    if mc.get("histories"):
        return _simulate(ph, cam, p, _mc_settings(p, seed), frame=frame, geometry=geometry)
    target = mc["target_relative_noise"]
    res = _simulate(ph, cam, p, _mc_settings(p, seed, PILOT_HISTORIES), frame=frame, geometry=geometry)
    err = res.summary()["photopeak" if "photopeak" in [w.name for w in cam.windows] else cam.windows[0].name][
        "relative_mc_error"] or 0.0
    if err <= target:
        return res
    n = int(min(MAX_HISTORIES, math.ceil(PILOT_HISTORIES * (err / target) ** 2 * 1.1)))
    return _simulate(ph, cam, p, _mc_settings(p, seed, n), frame=frame, geometry=geometry)


def stage_recon(task: StageTask) -> None:
    """OSEM (AC, PSF, scatter) of every noisy realisation, calibrated to Bq/mL."""
    _fault_injection_delay(task.stage)
    p = task.params
    lay, pid = StudyLayout(task.study_dir), p["patient_id"]
    ph = Phantom.load(lay.phantom(pid))
    grid = _recon_grid(p, ph.grid)
    mu = _mu_map(ph, grid, p)
    cal = json.loads(lay.calibration_json.read_text())
    n_real = p["monte_carlo"]["noise_realisations"]
    for t_h in ph.time_points_h:
        projs = [Projections.load(lay.noisy(pid, t_h, k)) for k in range(n_real)]
        if p["recon"]["scatter"] == "mc":
            imgs = []
            for k, proj in enumerate(projs):
                est: list = []
                imgs.append(_reconstruct(proj, mu, grid, p, cps_per_bq=cal["cps_per_bq"], phantom=ph,
                                         seed=_seed(p["seed"], p["index"], 4, int(round(t_h * 3600)), k),
                                         scatter_out=est))
                # kept for PVC with the reconstruction's response (analysis.pvc_response)
                pk = [w.name for w in proj.windows].index("photopeak")
                Projections(est[0][None].astype(np.float32), (proj.windows[pk],), proj.geometry, is_expected=True,
                            meta={"content": "Monte Carlo scatter estimate of the photopeak window (counts)"}
                            ).save(lay.mc_scatter(pid, t_h, k))
        else:  # one batched OSEM over the realisations of this scan
            imgs = _reconstruct_realisations(projs, mu, grid, p, cps_per_bq=cal["cps_per_bq"])
        for k, img in enumerate(imgs):
            # the phantom is the patient record: its injection and body data, the time point the scan start
            patient = Acquisition.from_meta({key: ph.meta.get(key) for key in ("injected_mbq", "injection_time",
                                                                               "weight_kg", "height_cm", "sex")})
            img.acquisition = replace(patient or Acquisition(), scan_start_s=t_h * 3600.0).filled_from(img.acquisition)
            img.meta.update({"injected_mbq": ph.meta.get("injected_mbq"), "weight_kg": ph.meta.get("weight_kg"),
                             "height_cm": ph.meta.get("height_cm"), "scan_start_s": t_h * 3600.0,
                             "patient_id": p["patient_id"], "time_h": t_h, "realisation": k})
            img.save(lay.recon(pid, t_h, k))


def stage_quantify(task: StageTask) -> None:
    """SUV per lesion (max, mean, peak) with and without PVC, visual read, against the truth.

    Every lesion of the truth gets a row: measured on the recon grid (its VOI from the phantom's sub-voxel
    lesion fraction, its margin kept out of other organs), or with the reason it is not
    (:data:`her2sim.analysis.lesion_truth.UNMEASURED_REASONS`). GTM, RBV and iterative Yang use the organ
    labels plus the lesions' fraction maps as regions (:mod:`her2sim.analysis.pvc_regions`); with
    ``analysis.pvc_response = "reconstruction"`` GTM and RBV model the image by the OSEM protocol itself
    (:mod:`her2sim.recon.response`), iterative Yang by the Gaussian point response.
    """
    _fault_injection_delay(task.stage)

    p = task.params
    a = p["analysis"]
    lay, pid = StudyLayout(task.study_dir), p["patient_id"]
    ph = Phantom.load(lay.phantom(pid))
    if ph.lesion_fraction is None or ph.lesion_owner is None or ph.lesion_own_suv is None:
        raise DataError(f"{lay.phantom(pid)} has no lesion fraction maps (made by an older her2sim); "
                        "delete the study's patients folder and rerun")
    grid = Image.load(lay.recon(pid, ph.time_points_h[0])).grid
    sp = grid.spacing_mm
    lesions = lesions_on_grid(grid, ph.grid, ph.lesion_fraction, ph.lesion_owner, ph.lesion_own_suv, ph.truth,
                              min_voxels=a.get("min_voi_voxels", 1.0))
    measured = {lid: L for lid, L in lesions.items() if L.reason is None}
    organs = resample(host_labels(ph.labels, ph.label_names), ph.grid, grid, order=0)
    allowed = margin_allowed(organs, ph.label_names)
    body = organs > 0
    any_lesion = np.zeros(grid.shape, bool)
    for L in lesions.values():
        if L.voi is not None:
            any_lesion |= L.voi
    voi_method = a.get("voi", "lesion")
    ct = resample(ph.ct_hu, ph.grid, grid, order=1, cval=-1000.0) if voi_method == "ct" else None
    margin = a.get("voi_margin_mm")
    margin = float(sp[1]) if margin is None else float(margin)
    cal = json.loads(lay.calibration_json.read_text())
    psf_fwhm = a.get("psf_fwhm_mm") or cal.get("recon_fwhm_mm") or p["psf_fwhm_mm"]
    region_methods = [m for m in a["pvc_methods"] if m in ("gtm", "rbv", "iy")]
    use_response = bool(region_methods and measured) and a.get("pvc_response", "reconstruction") == "reconstruction"
    # one small region model per lesion (a box of +-60 mm: the blur's reach), organs + lesions as regions
    boxes = lesion_box_models(organs.astype(np.int32), {lid: L.fraction for lid, L in measured.items()},
                              {lid: L.voi for lid, L in measured.items()}, sp) \
        if region_methods and measured and not use_response else {}
    slabs = _response_slabs(p, ph, grid, organs, measured, psf_fwhm, Projections.load(
        lay.noisy(pid, ph.time_points_h[0])).geometry) if use_response else []
    box_psf = {lid: pvc_psf(p.get("recon", {}), psf_fwhm, Grid(tuple(s.stop - s.start for s in box), sp))
               for lid, (box, _) in boxes.items()}
    lbm_kg = lean_body_mass_kg(ph.meta["weight_kg"], ph.meta["height_cm"], ph.meta.get("sex", "F"))
    rings = {lid: background_ring(L.voi, body, any_lesion, sp) for lid, L in measured.items()}
    rows = []
    for fi, t_h in enumerate(ph.time_points_h):
        for k in range(p["monte_carlo"]["noise_realisations"]):
            img = Image.load(lay.recon(pid, t_h, k))
            suv_img = suv_image(img)
            suv = suv_img.array
            base = lesion_rows(suv, grid, lesions, ph.truth, p["patient_id"], time_index=fi, voi=voi_method,
                               margin_mm=margin, allowed=allowed, ct_hu=ct,
                               threshold_fraction=a.get("voi_threshold_fraction", 0.42))
            for row in base:
                row.update({"time_h": t_h, "realisation": k, "group": ph.meta.get("group")})
                if not row["measured"]:
                    continue
                add_reading(row, suv, rings[row["lesion_id"]], rose_k=a["rose_k"], lbm_kg=lbm_kg,
                            weight_kg=ph.meta["weight_kg"])
            done = [row for row in base if row["measured"]]
            gtm_c = {}
            if slabs and done:
                _region_pvc_with_response(slabs, suv, counts_per_suv(img, suv_img.meta),
                                          Projections.load(lay.noisy(pid, t_h, k)), p,
                                          [m for m in a["pvc_methods"] if m in ("gtm", "rbv", "iy")], done,
                                          mc_scatter_path=lay.mc_scatter(pid, t_h, k))
            for method in a["pvc_methods"]:
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
            if fi == 0 and k == 0 and p.get("figures", True):   # output.figures = false writes none
                true_bq = resample(ph.activity_bq_per_ml[0], ph.grid, grid, order=1)
                scale = suv_scale_factor(ph.meta["injected_mbq"] * 1e6, ph.meta["weight_kg"], elapsed_s=t_h * 3600.0)
                plot_true_vs_reconstructed(true_bq * scale, suv, grid.spacing_mm,
                                           lay.figures_dir / f"recon_{pid}.png",
                                           title=f"{p['patient_id']} at {t_h:g} h: truth vs OSEM (SUV)",
                                           lesion_mask=any_lesion, vmax=4.0)
    _write_json(task.outputs[0], rows)


def _response_slabs(p: dict, ph: Phantom, grid: Grid, organs, measured: dict, psf_fwhm: float, geometry) -> list:
    """Slab region models (:func:`her2sim.analysis.pvc_regions.lesion_slab_models`) with their system
    matrices (the reconstruction's, supported on the slab) and Gaussian point responses (the Newton
    preconditioner of :meth:`~her2sim.analysis.pvc_regions.RegionModel.gtm_response`)."""

    r = p["recon"]
    mu = _mu_map(ph, grid, p) if r["attenuation"] else None
    cam = _camera(p)
    out = []
    models = lesion_slab_models(organs.astype(np.int32), {lid: L.fraction for lid, L in measured.items()},
                                {lid: L.voi for lid, L in measured.items()}, grid.spacing_mm)
    for sl, model in models:
        system = recon_system(grid, geometry, mu, cam, psf=r["psf"], penetration=r["penetration"],
                              attenuation_correction=mu is not None, support=slab_support(mu, grid, sl))
        slab_grid = Grid((sl.stop - sl.start,) + grid.shape[1:], grid.spacing_mm)
        own = [lid for lid in model.lesions if lid in measured and measured[lid].voi[sl].sum() == measured[lid].voi.sum()]
        out.append((sl, model, system, pvc_psf(r, psf_fwhm, slab_grid), own))
    return out


def _region_pvc_with_response(slabs: list, suv, counts_per_suv: float, projections: Projections, p: dict,
                              methods: list, rows: list, mc_scatter_path: Path) -> None:
    """GTM and RBV of each slab through the reconstruction's own response; fills the lesions' ``rows`` in place.

    Parameters
    ----------
    slabs : list
        :func:`_response_slabs` of the patient.
    suv : numpy.ndarray
        The scan's SUV image (z, y, x).
    counts_per_suv : float
        :func:`her2sim.analysis.suv.counts_per_suv` of that image.
    projections : Projections
        The realisation the image was reconstructed from.
    methods : list of str
        Region methods to report (``gtm``, ``rbv``, ``iy``; iterative Yang keeps the Gaussian response, since
        each of its iterations would cost a reconstruction).
    mc_scatter_path : Path
        The realisation's saved Monte Carlo scatter estimate (read when ``recon.scatter = "mc"``).
    """
    r = p["recon"]
    method = _scatter_method(r, projections)
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
    kw = _recon_kwargs(r, None, None, False)
    by_id = {row["lesion_id"]: row for row in rows}
    for sl, model, system, psf, own in slabs:
        todo = [lid for lid in own if lid in by_id]
        if not todo:
            continue
        resp = ReconstructionResponse(system, scatter, r["iterations"], r["subsets"],
                                      post_filter_fwhm_mm=kw["post_filter_fwhm_mm"], butterworth=kw["butterworth"],
                                      counts_per_unit=counts_per_suv, z_slice=sl)
        sub = suv[sl]
        fit = model.gtm_response(sub, resp, psf, system.grid.spacing_mm)
        x_rbv, c_rbv = model.rbv_response(sub, fit) if "rbv" in methods else (None, None)
        x_iy, c_iy = model.iterative_yang(sub, psf, system.grid.spacing_mm) if "iy" in methods else (None, None)
        for lid in todo:
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


def stage_statistics(task: StageTask) -> None:
    """Merge lesion rows; threshold statistics per metric; seed-paper statistics; figures; summary."""
    _fault_injection_delay(task.stage)

    p = task.params
    a = p["analysis"]
    sd = Path(task.study_dir)
    lay = StudyLayout(sd)
    res = lay.results_dir
    figdir = lay.figures_dir
    if p.get("figures", True):
        figdir.mkdir(parents=True, exist_ok=True)
    all_rows = []
    for pid in p["patient_ids"]:
        all_rows.extend(json.loads(lay.lesions_json(pid).read_text()))
    if not all_rows:
        raise DataError(f"study {p['study_name']!r}: the truth of its {len(p['patient_ids'])} patient(s) holds no "
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
    summary = {"study": p["study_name"], "patients": len(p["patient_ids"]), "lesions": len(rows),
               "lesions_truth": len(per_lesion), "lesions_measured": len(per_lesion) - sum(unmeasured.values()),
               "unmeasured_by_reason": dict(sorted(unmeasured.items()))}
    thr = {}
    metrics = [m for m in a["metrics"]] + [k for k in sorted({k for r in rows for k in r}) if k.startswith("pvc_")]
    primary_rows = [r for r in rows if r.get("realisation", 0) == 0]
    for t_h in sorted({r["time_h"] for r in primary_rows}):
        sel = [r for r in primary_rows if r["time_h"] == t_h]
        for m in metrics:
            vals = [r.get(m) for r in sel]
            if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in vals):
                continue
            ev = result_or_undefined(evaluate_threshold, [bool(r["her2_positive"]) for r in sel], vals,
                                     [r["patient_id"] for r in sel], threshold=a["threshold"], n_boot=a["bootstrap"],
                                     seed=p["seed"])
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
    summary["call_rates"] = call_rates(rows, a["threshold"])
    summary["call_stability"] = call_consistency(rows, a["threshold"])
    summary["robustness"] = study_robustness_summary(rows, a["threshold"], a["bootstrap"], p["seed"],
                                                     figdir if p.get("figures", True) else None)
    figs = []
    if primary_rows and p.get("figures", True):
        t0 = min(r["time_h"] for r in primary_rows)
        sel = [r for r in primary_rows if r["time_h"] == t0]
        figs.append(str(figures.plot_suv_vs_ihc([r["suvmax"] for r in sel], [r["ihc"] for r in sel],
                                                [bool(r["her2_positive"]) for r in sel], figdir / "suvmax_vs_ihc.png",
                                                threshold=a["threshold"])))
        trues = [r.get("true_suv_intrinsic") for r in sel]
        if all(t is not None for t in trues):
            figs.append(str(figures.plot_measured_vs_true(trues, [r["suvmean"] for r in sel],
                                                          figdir / "measured_vs_true.png")))
            figs.append(str(figures.plot_bias_vs_size([r["diameter_mm"] for r in sel], trues,
                                                      [r["suvmean"] for r in sel], figdir / "bias_vs_size.png")))
        labels = [bool(r["her2_positive"]) for r in sel]
        if 0 < sum(labels) < len(labels):
            figs.append(str(figures.plot_roc(labels, [r["suvmax"] for r in sel], figdir / "roc_suvmax.png",
                                             patient_ids=[r["patient_id"] for r in sel], n_boot=a["bootstrap"],
                                             seed=p["seed"])))
    cal = json.loads(lay.calibration_json.read_text())
    if "rc" in cal and p.get("figures", True):
        d = sorted(float(k) for k in cal["rc"])
        figs.append(str(figures.plot_recovery_curves(d, [cal["rc"][str(int(x))] for x in d],
                                                     figdir / "rc_vs_diameter.png")))
    figs.extend(str(f) for f in sorted(figdir.glob("phantom_*.png")))
    figs.extend(str(f) for f in sorted(figdir.glob("recon_*.png")))
    summary["figures"] = figs
    summary["calibration"] = {k: v for k, v in cal.items() if k not in ("mc_stats",)}
    summary["mc_summary"] = cal.get("mc_summary", {})
    for exp in sorted(lay.patient_dir(p["patient_ids"][0]).glob("t*h/expected.h5"))[:1]:
        summary["mc_summary"] = Projections.load(exp).meta.get("mc_summary", summary["mc_summary"])
    summary["versions"] = _versions()
    summary["seeds"] = {"study": p["seed"], "monte_carlo": p["mc_seed"]}
    summary["config"] = p["config"]
    _write_json(task.outputs[0], summary)


def stage_dicom(task: StageTask) -> None:
    """Export every scan (NM projections, NM reconstruction in Bq/mL, CT) as DICOM series."""
    _fault_injection_delay(task.stage)
    _, series = export_study_dicom(task.study_dir, StudyLayout(task.study_dir).dicom_dir,
                                   ct=task.params.get("ct", True))
    _write_json(task.outputs[0], [str(x) for x in series])


_versions = package_versions  # her2sim and the libraries whose numbers shape the results (None: not installed)


def stage_report(task: StageTask) -> None:
    """HTML/Markdown report of the study."""
    _fault_injection_delay(task.stage)
    write_report(task.study_dir, fmt=task.params["format"])


# ------------------------------------------------------------------------------------------ assembly
def patient_specs(cfg: StudyConfig) -> list:
    """The study's patients as phantom specs (cohort draw, or one patient from ``[phantom]``)."""

    if cfg.cohort is not None:
        cohort = generate_cohort(cfg.cohort.preset, seed=cfg.cohort.seed)
        pats = cohort["patients"][: cfg.cohort.n_patients]  # n_patients <= the preset's size (config check)
        extra = cfg.lesion_specs()  # [[phantom.lesions]] beside [cohort]: fixed lesions added to every patient
        if extra:
            pats = [dict(pt, lesions=list(pt.get("lesions") or []) + [dict(x) for x in extra]) for pt in pats]
    elif cfg.phantom.preset in ("demo", "torso"):
        pats = [dict(generate_cohort("demo", seed=cfg.study.seed)["patients"][0])]
        pats[0].update({"weight_kg": cfg.phantom.weight_kg, "height_cm": cfg.phantom.height_cm})
        specs = cfg.lesion_specs()  # [[phantom.lesions]] or a table of per-lesion lists
        if specs:
            pats[0]["lesions"] = specs
        elif cfg.phantom.preset == "torso":  # as phantoms.preset_phantom: default lesions are preset 'demo's
            raise ConfigError("phantom.lesions: phantom.preset = 'torso' without [cohort] has only the lesions "
                              "phantom.lesions gives, and none are given; add [[phantom.lesions]] or set "
                              "phantom.preset = 'demo' (the demo cohort's first patient with its lesions)")
    else:
        raise ConfigError(f"phantom.preset = {cfg.phantom.preset!r}: the pipeline runs patient studies "
                          "(demo, torso or a [cohort]); use the calibration section for test objects")
    out = []
    for p in pats:
        p = dict(p)
        p.pop("grid", None)
        p["injected_mbq"] = p.get("injected_mbq", cfg.tracer.injected_mbq) if cfg.cohort else cfg.tracer.injected_mbq
        p["time_points_h"] = list(cfg.tracer.time_points_h)
        out.append(json.loads(to_json(p)))
    return out


def _non_default(**values) -> dict:
    """``{key: value}`` for each ``key=(value, default)`` whose value is not the default: a stage parameter
    added after studies were run stays out of the stage key at its default, so those studies resume."""
    return {k: v for k, (v, default) in values.items() if v != default}


def build_stages(cfg: StudyConfig) -> list:
    """All stages of a study, with their parameters (the keys of resumability)."""
    lay = StudyLayout(Path("."))   # stage outputs are declared relative to the study folder
    g = cfg.phantom.grid()
    cam = cfg.camera
    mc = cfg.monte_carlo
    histories = int(mc.effective_photons) if mc.effective_photons else None
    common = {"version": PIPELINE_VERSION, "seed": int(cfg.mc_seed), "camera": cam.to_dict(),
              "grid": {"shape": list(g.shape), "spacing_mm": list(g.spacing_mm)},
              "monte_carlo": {"histories": histories, "target_relative_noise": mc.target_relative_noise,
                              "calibration_histories": max(10_000, (histories or PILOT_HISTORIES) // 4),
                              "noise_realisations": mc.noise_realisations, "threads": mc.threads,
                              **_non_default(mode=(mc.mode, "fast"))},
              "recon": {"iterations": cfg.recon.iterations, "subsets": cfg.recon.subsets, "psf": cfg.recon.psf,
                        "penetration": cfg.recon.penetration,
                        "scatter": cfg.recon.scatter, "scatter_histories": cfg.recon.scatter_histories,
                        "scatter_smooth_fwhm_mm": cfg.recon.scatter_smooth_fwhm_mm, "mu_map": cfg.recon.mu_map,
                        "attenuation": cfg.recon.attenuation, "post_filter_fwhm_mm": cfg.recon.post_filter_fwhm_mm,
                        "butterworth_cutoff_cycles_per_cm": cfg.recon.butterworth_cutoff_cycles_per_cm,
                        "butterworth_order": cfg.recon.butterworth_order}}
    analysis = {"threshold": cfg.analysis.threshold, "metrics": list(cfg.analysis.metrics),
                "pvc_methods": list(cfg.analysis.pvc_methods), "psf_fwhm_mm": cfg.analysis.psf_fwhm_mm,
                "bootstrap": cfg.analysis.bootstrap, "rose_k": cfg.analysis.rose_k, "voi": cfg.analysis.voi,
                "voi_margin_mm": cfg.analysis.voi_margin_mm,
                "voi_threshold_fraction": cfg.analysis.voi_threshold_fraction,
                "min_voi_voxels": cfg.analysis.min_voi_voxels, "pvc_response": cfg.analysis.pvc_response}
    figures = _non_default(figures=(cfg.output.figures, True))
    stages = [Stage("calibration", [], dict(common, calibration={"phantom": cfg.calibration.phantom,
                                                                   "activity_mbq": cfg.calibration.activity_mbq,
                                                                   "ratio": 4.0}),
                    stage_calibration, ["calibration/calibration.json"])]
    # resolution for PVC when not configured: system FWHM at the orbit radius minus ~10 cm depth (recon with PSF
    # recovers part of it; the user can set analysis.psf_fwhm_mm from a measured point source)
    psf_fwhm = float(cam.system_fwhm_mm(max(cam.protocol.radius_mm - 100.0, 50.0)))
    ids = []
    for i, spec in enumerate(patient_specs(cfg)):
        pid = spec["id"]
        ids.append(pid)
        pp = dict(common, patient=spec, patient_seed=int(spec.get("seed", _seed(cfg.study.seed, i, 0))), index=i,
                  patient_id=pid)
        stages.append(Stage(f"phantom_{pid}", [], {**{k: pp[k] for k in ("version", "grid", "patient", "patient_seed",
                                                                             "patient_id")}, **figures},
                            stage_phantom, [lay.relative(lay.phantom(pid))]))
        stages.append(Stage(f"simulate_{pid}", [f"phantom_{pid}"],
                            {k: pp[k] for k in ("version", "seed", "camera", "monte_carlo", "index", "patient_id")},
                            stage_simulate, [lay.relative(lay.expected(pid, t))
                                             for t in cfg.tracer.time_points_h]))
        stages.append(Stage(f"recon_{pid}", [f"simulate_{pid}", "calibration"],
                            {k: pp[k] for k in ("version", "seed", "index", "camera", "grid", "recon", "monte_carlo",
                                                "patient_id")},
                            stage_recon, [lay.relative(lay.recon(pid, t)) for t in cfg.tracer.time_points_h]))
        stages.append(Stage(f"quantify_{pid}", [f"recon_{pid}", "calibration"],
                            {"version": PIPELINE_VERSION, "grid": common["grid"], "analysis": analysis,
                             "monte_carlo": common["monte_carlo"], "patient_id": pid, "psf_fwhm_mm": psf_fwhm,
                             "recon": common["recon"], "camera": common["camera"], **figures},
                            stage_quantify, [lay.relative(lay.lesions_json(pid))]))
    stages.append(Stage("statistics", [f"quantify_{pid}" for pid in ids] + ["calibration"],
                        {"version": PIPELINE_VERSION, "analysis": analysis, "patient_ids": ids,
                         "study_name": cfg.study.name, "seed": int(cfg.study.seed), "mc_seed": int(cfg.mc_seed),
                         "config": json.loads(to_json(cfg.to_dict())), **figures},
                        stage_statistics, ["results/summary.json"]))
    stages.append(Stage("report", ["statistics"], {"version": PIPELINE_VERSION, "format": cfg.output.report},
                        stage_report, ["report.html" if cfg.output.report == "html" else "report.md"]))
    if cfg.output.dicom:
        stages.append(Stage("dicom", [f"recon_{pid}" for pid in ids],
                            {"version": PIPELINE_VERSION, **_non_default(ct=(cfg.phantom.ct, True))},
                            stage_dicom, ["dicom/series.json", "dicom"]))  # the folder: every DICOM file
    return stages


def available_memory_bytes() -> int:
    """Memory the OS can give this process now (``MemAvailable`` of /proc/meminfo; physical memory
    when that is unreadable)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


#: share of the available memory one batched reconstruction may plan to use
MEMORY_FRACTION = 0.8


def check_noise_realisations(cfg: StudyConfig, available_bytes: int | None = None) -> int:
    """``monte_carlo.noise_realisations`` N as an int, or a one-line ConfigError when N < 1 or when the
    batched reconstruction of N realisations of one scan (:func:`her2sim.recon.osem.batch_memory_bytes`)
    would not fit in :data:`MEMORY_FRACTION` of the available memory. Runs before any stage."""

    n = cfg.monte_carlo.noise_realisations
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"monte_carlo.noise_realisations = {n!r}: give an integer >= 1 (Poisson realisations "
                          f"per scan)")
    cam = cfg.camera
    m = int(cam.protocol.matrix)
    grid_shape = (m, m, m)  # the recon grid: detector rows x matrix x matrix (recon.grid_for_geometry)
    proj_shape = (int(cam.protocol.n_views), m, m)
    threads = int(cfg.monte_carlo.threads or 0) or (os.cpu_count() or 1)
    fixed = batch_memory_bytes(grid_shape, proj_shape, len(cam.windows), 0, threads)
    per = batch_memory_bytes(grid_shape, proj_shape, len(cam.windows), 1, threads) - fixed
    need = fixed + int(n) * per
    avail = available_memory_bytes() if available_bytes is None else int(available_bytes)
    if need > MEMORY_FRACTION * avail:
        n_max = max(0, int((MEMORY_FRACTION * avail - fixed) // per))
        raise ConfigError(f"monte_carlo.noise_realisations = {n}: reconstructing them as one batch needs "
                          f"~{need / 2**30:.1f} GiB but {avail / 2**30:.1f} GiB is available (limit "
                          f"{MEMORY_FRACTION:.0%}); use at most {n_max} on this machine")
    return int(n)


def run_study(cfg: StudyConfig, study_dir=None, executor=None, progress: bool = True, workers: int = 1) -> dict:
    """Run (or resume) a study; returns the JSON summary the CLI prints.

    Parameters
    ----------
    cfg : StudyConfig
    study_dir : path-like, optional
        Defaults to ``cfg.study.output_dir``.
    executor : concurrent.futures.Executor, optional
        Where independent stages run (serial by default).
    progress : bool
    workers : int
        Worker processes of ``executor`` (sizes the memory check of :func:`her2sim.config.preflight`).

    Raises
    ------
    ConfigError
        Before any work: the study does not fit in memory, a lesion lies outside the grid, the study
        folder is a file, or the resolved copy would overwrite the study file given.
    DataError
        Another run holds the study folder (:func:`her2sim.stages.study_lock`).
    """
    check_noise_realisations(cfg)  # one-line error before any work (N < 1, or more than fits in memory)
    sd = Path(study_dir or cfg.study.output_dir)
    preflight(cfg, workers)
    stages = build_stages(cfg)
    if sd.exists() and not sd.is_dir():
        raise ConfigError(f"{sd}: the study folder path exists and is not a folder (study.output_dir / --out)")
    resolved = sd / RESOLVED_NAME
    src = Path(cfg.source_path) if cfg.source_path else None
    if src is not None and resolved.exists() and src.exists() and resolved.samefile(src):
        raise ConfigError(f"{resolved}: the study file given is the study folder's resolved copy; "
                          f"refusing to overwrite it (copy it elsewhere or choose another --out)")
    sd.mkdir(parents=True, exist_ok=True)
    with study_lock(sd):
        save_study(cfg, resolved)
        t0 = time.perf_counter()
        results = run_stages(stages, sd, executor=executor, progress=progress)
    summary_path = StudyLayout(sd).summary_json
    summary = json.loads(summary_path.read_text())
    stage_seconds = {}
    for name, r in results.items():
        kind = name.split("_")[0]
        stage_seconds[kind] = stage_seconds.get(kind, 0.0) + r.seconds
    n_scans = len([1 for s in stages if s.name.startswith("simulate_")]) * len(cfg.tracer.time_points_h)
    summary.update({
        "patients": summary.get("patients"), "scans": n_scans, "stage_seconds": stage_seconds,
        "stage_status": {n: r.status for n, r in results.items()}, "wall_seconds": time.perf_counter() - t0,
        "outputs": {"study_dir": str(sd), "summary": str(summary_path), "lesions_csv": str(StudyLayout(sd).lesions_csv),
                    "dicom": json.loads((sd / "dicom" / "series.json").read_text())
                    if (sd / "dicom" / "series.json").exists() and cfg.output.dicom else [],
                    "report": str(sd / ("report.html" if cfg.output.report == "html" else "report.md")),
                    "figures": summary.get("figures", []),
                    "hdf5": sorted(str(p) for p in sd.glob("patients/*/**/*.h5"))},
    })
    return summary
