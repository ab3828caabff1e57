"""What every stage step shares: the fault-injection delay, seed derivation and the scan-start time."""
from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from her2sim.core.acquisition import Acquisition


def fault_injection_delay(stage: str) -> None:
    """Sleep at the start of ``stage`` when ``HER2SIM_STAGE_DELAY_S="stage=seconds,..."`` is set.

    Used by the kill-and-resume reliability tests to stop a run inside a given stage.
    """
    spec = os.environ.get("HER2SIM_STAGE_DELAY_S", "")
    for item in filter(None, spec.split(",")):
        name, _, secs = item.partition("=")
        if name.strip() == stage:
            time.sleep(float(secs))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (study seed, patient index, stage code)."""
    return int(np.random.SeedSequence([int(p) % (2 ** 32) for p in parts]).generate_state(2, np.uint32).view(np.uint64)[0]
               >> np.uint64(1))


def at_scan_start(acq: Acquisition | None, scan_start_s: float) -> Acquisition:
    """``acq`` (None: nothing known) with the scan starting ``scan_start_s`` (s) after injection."""
    return replace(acq or Acquisition(), scan_start_s=scan_start_s)
