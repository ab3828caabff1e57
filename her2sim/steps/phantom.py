"""The ``phantom_<id>`` step: one patient's phantom (activity per time point, CT, labels, truth) and its figure."""
from __future__ import annotations

from her2sim.phantoms import build_patient_phantom, plot_phantom
from her2sim.stages import StageTask
from her2sim.study_layout import StudyLayout

from .common import fault_injection_delay
from .params import StepParams


def stage_phantom(task: StageTask) -> None:
    """Build one patient's phantom (activity per time point, CT, labels, truth) and its figure."""
    fault_injection_delay(task.stage)

    step = StepParams.from_params(task.params, task.stage)
    ph = build_patient_phantom(step.patient, step.grid, seed=step.patient_seed)
    ph.meta["patient_id"] = step.patient["id"]
    ph.save(task.outputs[0])
    if step.figures:
        plot_phantom(ph, StudyLayout(task.study_dir).figures_dir / f"phantom_{step.patient['id']}.png")
