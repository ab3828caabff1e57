"""The ``dicom`` step: every scan (NM projections, NM reconstruction in Bq/mL, CT) as DICOM series."""
from __future__ import annotations

from her2sim.core.jsonio import write_json
from her2sim.stages import StageTask
from her2sim.study_dicom import export_study_dicom
from her2sim.study_layout import StudyLayout

from .common import fault_injection_delay
from .params import StepParams


def stage_dicom(task: StageTask) -> None:
    """Export every scan (NM projections, NM reconstruction in Bq/mL, CT) as DICOM series."""
    fault_injection_delay(task.stage)
    step = StepParams.from_params(task.params, task.stage)
    _, series = export_study_dicom(task.study_dir, StudyLayout(task.study_dir).dicom_dir, ct=step.ct)
    write_json(task.outputs[0], [str(x) for x in series])
