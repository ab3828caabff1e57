"""The ``simulate_<id>`` step: expected projections per time point by Monte Carlo, then Poisson realisations."""
from __future__ import annotations

import math

import numpy as np

from her2sim.core.containers import Phantom
from her2sim.sim.camera import Camera
from her2sim.sim.transport import body_reach_mm, poisson_realisations
from her2sim.stages import StageTask
from her2sim.study_layout import StudyLayout

from .common import at_scan_start, derive_seed, fault_injection_delay
from .params import StepParams
from .scan import mc_settings, simulate_expected

#: histories of the pilot run used to size a run for ``monte_carlo.target_relative_noise``
PILOT_HISTORIES = 100_000
MAX_HISTORIES = 100_000_000
#: clearance between the body outline and the collimator face on a body-contour orbit (mm, assumption)
CONTOUR_MARGIN_MM = 20.0


def stage_simulate(task: StageTask) -> None:
    """Expected projections per time point by fast Monte Carlo, then Poisson realisations."""
    fault_injection_delay(task.stage)

    step = StepParams.from_params(task.params, task.stage)
    lay, pid = StudyLayout(task.study_dir), step.patient_id
    ph = Phantom.load(lay.phantom(pid))
    cam = step.camera
    geometry = orbit(ph, cam)
    for fi, t_h in enumerate(ph.time_points_h):
        res = simulate_to_target(ph, cam, step, derive_seed(step.seed, step.index, 2, fi), fi, geometry)
        proj = res.projections
        proj.meta.update({"scan_start_s": t_h * 3600.0, "patient_id": step.patient_id, "mc_summary": res.summary(),
                          "mc_stats": res.stats})
        proj.acquisition = at_scan_start(proj.acquisition, t_h * 3600.0)
        proj.save(lay.expected(pid, t_h))
        for k, noisy in enumerate(poisson_realisations(proj, step.monte_carlo.noise_realisations,
                                                       seed=derive_seed(step.seed, step.index, 3, fi))):
            noisy.save(lay.noisy(pid, t_h, k))


def orbit(ph: Phantom, cam: Camera):
    """The acquisition orbit: circular, or body contour + :data:`CONTOUR_MARGIN_MM` when
    ``protocol.orbit = "contour"`` (radii in mm, at least 50 mm)."""
    geo = cam.projection_geometry(axis_z_mm=ph.grid.center_mm[0])
    if cam.protocol.orbit != "contour":
        return geo
    radii = np.maximum(body_reach_mm(ph, geo) + CONTOUR_MARGIN_MM, 50.0)
    return cam.projection_geometry(axis_z_mm=ph.grid.center_mm[0], radii_mm=radii)


def simulate_to_target(ph: Phantom, cam: Camera, step: StepParams, seed: int, frame: int, geometry=None):
    """MC (``monte_carlo.mode``) with ``monte_carlo.histories``, or, when a ``target_relative_noise`` is set, a
    pilot run of ``PILOT_HISTORIES`` followed (if needed) by a run sized so that the relative MC standard error of
    the photopeak total, sqrt(var)/counts, reaches the target (it falls as 1/sqrt(histories))."""
    mc = step.monte_carlo
    if mc.photons:
        return simulate_expected(ph, cam, mc, mc_settings(mc, seed), frame=frame, geometry=geometry)
    target = mc.target_relative_noise
    res = simulate_expected(ph, cam, mc, mc_settings(mc, seed, PILOT_HISTORIES), frame=frame, geometry=geometry)
    err = res.summary()["photopeak" if "photopeak" in [w.name for w in cam.windows] else cam.windows[0].name][
        "relative_mc_error"] or 0.0
    if err <= target:
        return res
    n = int(min(MAX_HISTORIES, math.ceil(PILOT_HISTORIES * (err / target) ** 2 * 1.1)))
    return simulate_expected(ph, cam, mc, mc_settings(mc, seed, n), frame=frame, geometry=geometry)
