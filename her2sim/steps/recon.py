"""The ``recon_<id>`` step: OSEM (AC, PSF, scatter) of every noisy realisation, calibrated to Bq/mL."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from her2sim.core.acquisition import Acquisition
from her2sim.core.containers import Phantom, Projections
from her2sim.stages import StageTask
from her2sim.study_layout import StudyLayout

from .common import derive_seed, fault_injection_delay
from .params import StepParams
from .scan import attenuation_map, recon_grid, reconstruct_realisations, reconstruct_scan


def stage_recon(task: StageTask) -> None:
    """OSEM (AC, PSF, scatter) of every noisy realisation, calibrated to Bq/mL."""
    fault_injection_delay(task.stage)
    step = StepParams.from_params(task.params, task.stage)
    lay, pid = StudyLayout(task.study_dir), step.patient_id
    ph = Phantom.load(lay.phantom(pid))
    grid = recon_grid(step.camera, ph.grid)
    mu = attenuation_map(ph, grid, step.recon)
    cal = json.loads(lay.calibration_json.read_text())
    n_real = step.monte_carlo.noise_realisations
    for t_h in ph.time_points_h:
        projs = [Projections.load(lay.noisy(pid, t_h, k)) for k in range(n_real)]
        if step.recon.scatter == "mc":
            imgs = []
            for k, proj in enumerate(projs):
                est: list = []
                imgs.append(reconstruct_scan(proj, mu, grid, step.recon, step.camera, cps_per_bq=cal["cps_per_bq"],
                                             phantom=ph, seed=derive_seed(step.seed, step.index, 4,
                                                                          int(round(t_h * 3600)), k),
                                             scatter_out=est))
                # kept for PVC with the reconstruction's response (analysis.pvc_response)
                pk = [w.name for w in proj.windows].index("photopeak")
                Projections(est[0][None].astype(np.float32), (proj.windows[pk],), proj.geometry, is_expected=True,
                            meta={"content": "Monte Carlo scatter estimate of the photopeak window (counts)"}
                            ).save(lay.mc_scatter(pid, t_h, k))
        else:  # one batched OSEM over the realisations of this scan
            imgs = reconstruct_realisations(projs, mu, grid, step.recon, step.camera, cps_per_bq=cal["cps_per_bq"])
        for k, img in enumerate(imgs):
            # the phantom is the patient record: its injection and body data, the time point the scan start
            patient = Acquisition.from_meta({key: ph.meta.get(key) for key in ("injected_mbq", "injection_time",
                                                                               "weight_kg", "height_cm", "sex")})
            img.acquisition = replace(patient or Acquisition(), scan_start_s=t_h * 3600.0).filled_from(img.acquisition)
            img.meta.update({"injected_mbq": ph.meta.get("injected_mbq"), "weight_kg": ph.meta.get("weight_kg"),
                             "height_cm": ph.meta.get("height_cm"), "scan_start_s": t_h * 3600.0,
                             "patient_id": step.patient_id, "time_h": t_h, "realisation": k})
            img.save(lay.recon(pid, t_h, k))
