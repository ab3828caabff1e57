"""The ``report`` step: the study's HTML or Markdown report."""
from __future__ import annotations

from her2sim.report import write_report
from her2sim.stages import StageTask

from .common import fault_injection_delay
from .params import StepParams


def stage_report(task: StageTask) -> None:
    """HTML/Markdown report of the study."""
    fault_injection_delay(task.stage)
    step = StepParams.from_params(task.params, task.stage)
    write_report(task.study_dir, fmt=step.report_format)
