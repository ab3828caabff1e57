"""The ``calibration`` step: counts -> Bq/mL, the IEC recovery curve and the reconstructed resolution."""
from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import OptimizeWarning

from her2sim.analysis.pvc import fit_effective_fwhm_mm, measure_recovery_coefficients, psf_from_point_source
from her2sim.core.errors import DataError
from her2sim.core.grid import Grid
from her2sim.core.jsonio import write_json
from her2sim.phantoms import (iec_body_phantom, iec_sphere_centres_mm, point_source_phantom,
                              uniform_cylinder_phantom)
from her2sim.recon.calibration import calibrate_image, sensitivity_cps_per_bq
from her2sim.sim.camera import Camera
from her2sim.stages import StageTask

from .common import at_scan_start, derive_seed, fault_injection_delay
from .params import StepParams
from .scan import attenuation_map, mc_settings, recon_grid, reconstruct_scan, simulate_expected

#: point sources of the reconstructed-resolution measurement (z, y, x mm): the centre of a 216 mm water
#: cylinder and 75 mm off the axis, as NEMA NU 1 measures SPECT reconstructed resolution with scatter
PSF_POINTS_MM = ((0.0, 0.0, 0.0), (0.0, 0.0, 75.0))


def stage_calibration(task: StageTask) -> None:
    """Simulate and reconstruct a calibration object; derive cps/Bq (and IEC recovery coefficients).

    ``calibration.phantom``: ``iec``, ``cylinder`` or ``point`` (a point source in air at the centre) is
    simulated and reconstructed like a patient scan; ``none`` scans nothing and uses the camera's analytic
    planar sensitivity. The reconstructed resolution for PVC is measured with point sources in every case.
    """
    fault_injection_delay(task.stage)

    step = StepParams.from_params(task.params, task.stage)
    out = Path(task.outputs[0]).parent
    grid = step.grid
    kind = step.calibration.phantom
    act_bq = step.calibration.activity_mbq * 1e6
    cam = step.camera
    if kind == "none":
        cps = cam.sensitivity_cps_per_mbq() / 1e6
        cal = {"phantom": kind, "activity_mbq": None, "cps_per_bq": cps, "sensitivity_cps_per_mbq": cps * 1e6,
               "source": "analytic planar sensitivity of the camera (Camera.sensitivity_cps_per_mbq)"}
        cal["recon_fwhm_mm"] = point_source_fwhm_mm(step, grid, cam)
        write_json(task.outputs[0], cal)
        return
    if kind == "iec":
        ph = iec_body_phantom(grid, background_bq_per_ml=1000.0, sphere_to_background=step.calibration_ratio)
    elif kind == "point":
        ph = point_source_phantom(grid, step.calibration.activity_mbq, medium="air")
    else:
        ph = uniform_cylinder_phantom(grid, concentration_bq_per_ml=1000.0)
    scale = act_bq / ph.total_activity_bq(0)
    ph.activity_bq_per_ml *= np.float32(scale)
    ph.save(out / "phantom.h5")
    settings = mc_settings(step.monte_carlo, derive_seed(step.seed, 0, 1), step.calibration_histories)
    res = simulate_expected(ph, cam, step.monte_carlo, settings)
    proj = res.projections
    proj.meta["scan_start_s"] = 0.0
    proj.acquisition = at_scan_start(proj.acquisition, 0.0)
    proj.save(out / "expected.h5")
    rgrid = recon_grid(cam, grid)
    img = reconstruct_scan(proj, attenuation_map(ph, rgrid, step.recon), rgrid, step.recon, cam, phantom=ph,
                           seed=derive_seed(step.seed, 0, 4))
    tpv = cam.protocol.time_per_view_s
    duration = tpv * proj.geometry.n_views / 2
    cps = sensitivity_cps_per_bq(img, act_bq, tpv, 0.0, duration)
    img.save(out / "recon.h5")
    cal = {"phantom": kind, "activity_mbq": step.calibration.activity_mbq, "cps_per_bq": cps,
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
                rc = measure_recovery_coefficients(bq.array, rgrid, [c], [d], bg * step.calibration_ratio,
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
    cal["recon_fwhm_mm"] = point_source_fwhm_mm(step, grid, cam)
    write_json(task.outputs[0], cal)


def point_source_fwhm_mm(step: StepParams, grid: Grid, cam: Camera) -> float | None:
    """Reconstructed resolution of the study's protocol without its post-filter (mm FWHM).

    A 10 MBq point source in a 216 mm water cylinder, at each of :data:`PSF_POINTS_MM` (NEMA NU 1: central
    and 75 mm peripheral), is simulated with the study's camera and reconstructed with its OSEM (iterations,
    subsets, resolution recovery, AC, scatter correction) but no post-filter; a 3-D Gaussian is fitted to
    each (:func:`her2sim.analysis.pvc.psf_from_point_source`) and the FWHMs (z, y, x, both points) are
    averaged. Partial-volume correction models the image's point response as this Gaussian followed by the
    protocol's post-filter, which is known exactly (:func:`her2sim.steps.quantify.pvc_psf`). None when no
    fit succeeds.
    """
    # no post-filter, and an unsmoothed Monte Carlo scatter estimate (smoothing suits diffuse uptake, not a point:
    # 40 mm of it turned the demo's 5.9 mm point response into 10.3 mm)
    unfiltered = replace(step.recon, post_filter_fwhm_mm=0.0, butterworth_cutoff_cycles_per_cm=0.0,
                         scatter_smooth_fwhm_mm=0.0)
    rgrid = recon_grid(cam, grid)
    fwhms = []
    for i, pos in enumerate(PSF_POINTS_MM):
        ph = point_source_phantom(grid, 10.0, position_mm=pos, medium="water", medium_diameter_mm=216.0)
        settings = mc_settings(step.monte_carlo, derive_seed(step.seed, 0, 5, i), step.calibration_histories)
        res = simulate_expected(ph, cam, step.monte_carlo, settings)
        img = reconstruct_scan(res.projections, attenuation_map(ph, rgrid, step.recon), rgrid, unfiltered, cam,
                               phantom=ph, seed=derive_seed(step.seed, 0, 6, i))
        try:
            with warnings.catch_warnings():   # a coarse grid leaves the fit's covariance undetermined: not an error
                warnings.simplefilter("ignore", OptimizeWarning)
                fwhms.extend(psf_from_point_source(img.array, rgrid)["fwhm_mm"])
        except (DataError, RuntimeError, ValueError):   # no Gaussian fits (e.g. a grid too coarse for a point)
            continue
    fwhms = [f for f in fwhms if np.isfinite(f) and f > 0]
    return float(np.mean(fwhms)) if fwhms else None
