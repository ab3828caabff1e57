"""99mTc decay data and decay-factor helpers.

Values (``../shared/reference/physics.md``):

* half-life 6.0067 h = 21624 s (NNDC / DDEP evaluation), used everywhere in her2sim;
* 140.511 keV gamma, 0.8906 photons per decay (ICRP Publication 107, 2008).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import check_range

#: Time the voxels of a calibrated image are decay-corrected to (``Image.meta["decay_corrected_to"]``), the
#: one list of the producer (:func:`her2sim.recon.calibration.counts_to_bq_per_ml`) and of its readers
#: (:func:`her2sim.analysis.suv.suv_image`, :mod:`her2sim.dicom_io`): ``"injection"`` (activity at injection),
#: ``"scan_start"`` (at the start of the scan) or ``"acquisition_mean"`` (no decay correction: the mean
#: concentration during the scan).
DECAY_REFERENCES = ("injection", "scan_start", "acquisition_mean")


@dataclass(frozen=True)
class Radionuclide:
    """A single-gamma emitter as seen by a SPECT simulation.

    Attributes
    ----------
    name : str
    half_life_s : float
        Physical half-life in seconds.
    gamma_kev : float
        Energy of the imaged gamma line in keV.
    gamma_yield : float
        Photons of that line per decay.
    """

    name: str
    half_life_s: float
    gamma_kev: float
    gamma_yield: float

    @property
    def half_life_h(self) -> float:
        """Half-life in hours."""
        return self.half_life_s / 3600.0

    @property
    def decay_constant_per_s(self) -> float:
        """lambda = ln 2 / T1/2 in 1/s."""
        return np.log(2.0) / self.half_life_s

    def decay_factor(self, elapsed_s):
        """Fraction of activity left after ``elapsed_s`` seconds (``exp(-lambda t)``)."""
        t = np.asarray(elapsed_s, dtype=float)
        if np.any(~np.isfinite(t)) or np.any(t < 0):
            check_range("elapsed_s", float(np.min(t)) if t.size else t, 0.0, None)
        out = np.exp(-self.decay_constant_per_s * t)
        return float(out) if out.ndim == 0 else out

    def decays_in_interval(self, activity_bq: float, start_s: float, duration_s: float) -> float:
        """Number of decays of a source of ``activity_bq`` (at t=0) between ``start_s`` and ``start_s+duration_s``.

        Integrates the exponential exactly: A0 / lambda * (exp(-lambda t0) - exp(-lambda (t0 + T))).
        """
        check_range("start_s", start_s, 0.0, None)
        check_range("duration_s", duration_s, 0.0, None, lo_open=True)
        lam = self.decay_constant_per_s
        return float(activity_bq / lam * (np.exp(-lam * start_s) - np.exp(-lam * (start_s + duration_s))))


#: 99mTc with the NNDC half-life and ICRP-107 yield (see module docstring).
TC99M = Radionuclide(name="Tc-99m", half_life_s=6.0067 * 3600.0, gamma_kev=140.511, gamma_yield=0.8906)
