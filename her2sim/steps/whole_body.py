"""The ``whole_body_<id>`` step: one patient's planar whole-body sweeps, beside her local SPECT.

The seed trial imaged the whole body at 1 h and 2 h besides the local SPECT/CT (Supplementary Fig. S2). With
``[whole_body] enabled = true`` each patient is also built from head to mid-thigh
(``extent = "whole_body"``, :mod:`her2sim.phantoms.whole_body`; the same patient spec and seed as her local
phantom, so the same lesions) and swept anterior/posterior at every time point by the same Monte Carlo
(:func:`her2sim.sim.whole_body.simulate_whole_body`; the study's camera, its photopeak window, continuous bed
motion at ``speed_cm_per_min``, Poisson counts). Written:

* ``patients/<id>/whole_body.h5``: per time point a group ``t<H>h`` with ``anterior`` / ``posterior`` (int32
  counts, (v, u)), ``expected_anterior`` / ``expected_posterior`` (float32, noise-free counts), ``z_mm`` (world z
  of each row) and ``u_mm`` (column centres; the anterior view's +u is the patient's left, the posterior image
  is in its own head's frame), and attributes ``pixel_mm``, ``speed_cm_per_min``, ``dwell_s``,
  ``sweep_seconds``, ``time_point_h``, ``noise_seed``, ``radii_mm``, ``meta_json``;
* ``results/figures/whole_body_<id>.png`` (``output.figures``): the sweeps beside the local SPECT's anterior
  SUV MIP at the same time point, with the SPECT's axial field of view marked on the sweep.

The step follows ``recon_<id>`` (the figure shows her reconstruction).
"""
from __future__ import annotations

import h5py
import numpy as np

from her2sim.analysis.figures import plot_whole_body_beside_spect
from her2sim.analysis.suv import suv_image
from her2sim.core.atomic import atomic_path
from her2sim.core.containers import Image, Phantom
from her2sim.core.errors import DataError
from her2sim.core.jsonio import to_json
from her2sim.phantoms import build_patient_phantom
from her2sim.phantoms.whole_body import whole_body_grid
from her2sim.sim.transport import MonteCarloSettings
from her2sim.sim.whole_body import WholeBodyProtocol, WholeBodyScan, simulate_whole_body
from her2sim.stages import StageTask
from her2sim.study_layout import StudyLayout, time_tag

from .common import derive_seed, fault_injection_delay
from .params import StepParams

#: schema tag of ``whole_body.h5``
SCHEMA = "her2sim.whole_body/1"
#: deterministic-primary sub-positions per voxel axis: the 4.42 mm phantom on 2.21 mm pixels
PRIMARY_SUPERSAMPLE = 2


def stage_whole_body(task: StageTask) -> None:
    """Simulate the patient's whole-body sweeps at every time point, save them and draw them beside her SPECT."""
    fault_injection_delay(task.stage)
    step = StepParams.from_params(task.params, task.stage)
    wb = step.whole_body
    pid = step.patient_id
    patient = dict(step.patient, extent="whole_body")
    grid = whole_body_grid(wb.spacing_mm, float(patient.get("height_cm", 160.0)))
    ph = build_patient_phantom(patient, grid, seed=step.patient_seed)
    protocol = WholeBodyProtocol(speed_cm_per_min=wb.speed_cm_per_min, matrix=tuple(wb.matrix))
    scans = []
    for fi in range(len(ph.time_points_h)):
        settings = MonteCarloSettings(n_histories=int(wb.histories), seed=derive_seed(step.seed, step.index, 7, fi),
                                      primary_supersample=PRIMARY_SUPERSAMPLE)
        scans.append(simulate_whole_body(ph, fi, protocol, camera=step.camera, settings=settings,
                                         noise_seed=derive_seed(step.seed, step.index, 8, fi)))
    write_whole_body(task.outputs[0], scans, pid)
    if step.figures:
        lay = StudyLayout(task.study_dir)
        shift = body_frame_shift_mm(Phantom.load(lay.phantom(pid)), ph)
        mips = [spect_mip(lay, pid, s.time_point_h, shift) for s in scans]
        plot_whole_body_beside_spect(
            [sweep_panel(s) for s in scans], mips, lay.figures_dir / f"whole_body_{pid}.png",
            title=f"{pid}: whole-body sweep ({protocol.speed_cm_per_min:g} cm/min) and local SPECT")


def write_whole_body(path, scans: list, patient_id: str) -> None:
    """Save the sweeps of one patient (see the module docstring for the layout) atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["schema"] = SCHEMA
        f.attrs["patient_id"] = str(patient_id)
        f.attrs["units"] = "counts"
        for s in scans:
            g = f.create_group(time_tag(s.time_point_h))
            for name in ("anterior", "posterior", "expected_anterior", "expected_posterior"):
                g.create_dataset(name, data=getattr(s, name), compression="gzip", compression_opts=4)
            g.create_dataset("z_mm", data=np.asarray(s.v_z_mm, np.float64))
            g.create_dataset("u_mm", data=np.asarray(s.u_mm, np.float64))
            g.attrs.update({"pixel_mm": list(s.pixel_mm), "speed_cm_per_min": s.speed_cm_per_min,
                            "dwell_s": s.dwell_s, "sweep_seconds": s.seconds, "time_point_h": s.time_point_h,
                            "noise_seed": str(s.noise_seed), "radii_mm": list(s.radii_mm),
                            "scan_range_z_mm": list(s.scan_range_z_mm),
                            "meta_json": to_json(s.meta)})


def read_whole_body(path) -> dict:
    """``{time_point_h: {"anterior", "posterior", "expected_anterior", "expected_posterior", "z_mm", "u_mm",
    **attributes}}`` from a ``whole_body.h5``."""
    out = {}
    with h5py.File(path, "r") as f:
        if f.attrs.get("schema") != SCHEMA:
            raise DataError(f"{path}: schema = {f.attrs.get('schema')!r}, expected {SCHEMA!r}")
        for name, g in f.items():
            d = {k: g[k][()] for k in g}
            d.update({k: v for k, v in g.attrs.items()})
            out[float(g.attrs["time_point_h"])] = d
    return out


def sweep_panel(scan: WholeBodyScan) -> dict:
    """The figure's view of one sweep."""
    return {"anterior": scan.anterior, "posterior": scan.posterior, "z_mm": scan.v_z_mm, "u_mm": scan.u_mm,
            "label": f"{scan.time_point_h:g} h"}


def body_frame_shift_mm(local: Phantom, whole_body: Phantom) -> float:
    """World z (mm) to add to a point of the local phantom's frame to find it in the whole-body phantom's frame.

    Both phantoms place the same body (body level 0 = breast centres) on grids centred differently:
    world z = body z + grid centre z - ``body_z_at_grid_center_mm`` (their ``meta["anatomy"]``).
    """
    def offset(ph: Phantom) -> float:
        return float(ph.grid.center_mm[0]) - float(ph.meta["anatomy"]["body_z_at_grid_center_mm"])
    return offset(whole_body) - offset(local)


def spect_mip(lay: StudyLayout, patient_id: str, time_h: float, shift_mm: float = 0.0) -> dict | None:
    """Anterior SUV MIP (z, x) of the patient's first reconstruction at ``time_h`` (``None`` when absent), its
    rows at the whole-body frame's z (``shift_mm`` added, :func:`body_frame_shift_mm`)."""
    path = lay.recon(patient_id, time_h)
    if not path.is_file():
        return None
    img = suv_image(Image.load(path))
    g = img.grid
    return {"suv": np.asarray(img.array, float).max(axis=1), "z_mm": g.axis_mm(0) + shift_mm, "x_mm": g.axis_mm(2)}
