"""Counts -> Bq/mL calibration of reconstructed SPECT images.

The system matrix of :class:`~her2sim.recon.projector.SpectSystemMatrix` is geometric,
so OSEM of raw counts returns ``x = S t V C`` per voxel, with ``S`` the planar system
sensitivity (counts per second per Bq in the photopeak window, one head, in air),
``t`` the time per view (s), ``V`` the voxel volume (mL) and ``C`` the mean activity
concentration (Bq/mL) during the acquisition. Hence

    C = x / (S t V)   and, from a phantom of known total activity A,   S = sum(x) / (t A).

This follows the uniform-cylinder / point-source calibration used clinically (Okuda et
al., J Nucl Med Technol 49:138, 2021; ``validation_targets.md``). Decay during and before
the scan uses :data:`her2sim.core.radionuclide.TC99M` (T1/2 = 6.0067 h). Dead time is
neglected (count rates in 99mTc SPECT of a few hundred MBq are far below the camera's
20 % loss rate), so the calibration is linear in counts.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from her2sim.core.acquisition import Acquisition
from her2sim.core.containers import Image
from her2sim.core.errors import ConfigError, DataError, check_choice, check_range
from her2sim.core.radionuclide import DECAY_REFERENCES, TC99M  # noqa: F401 - DECAY_REFERENCES re-exported

#: objects a study's counts -> Bq/mL calibration can scan (``calibration.phantom``): the IEC body phantom
#: (recovery coefficients too), a uniform cylinder, a point source in air (total counts of its
#: reconstruction, :func:`sensitivity_cps_per_bq`), or ``none``: no scan, the camera's analytic planar
#: sensitivity (:meth:`her2sim.sim.camera.Camera.sensitivity_cps_per_mbq`)
CALIBRATION_PHANTOMS = ("iec", "cylinder", "point", "none")


def mean_decay_factor(start_s: float, duration_s: float, nuclide=TC99M) -> float:
    """Mean of ``exp(-lambda t)`` over ``[start_s, start_s + duration_s]`` (t from the reference, s).

    ``duration_s = 0`` gives the instantaneous factor at ``start_s``.
    """
    t0 = check_range("scan_start_s", start_s, 0.0, None)
    dur = check_range("scan_duration_s", duration_s, 0.0, None)
    if dur == 0.0:
        return float(nuclide.decay_factor(t0))
    return nuclide.decays_in_interval(1.0, t0, dur) / dur


def sensitivity_cps_per_bq(image_counts: Image, activity_bq: float, time_per_view_s: float,
                           scan_start_s: float = 0.0, scan_duration_s: float = 0.0, voi_mask=None,
                           nuclide=TC99M) -> float:
    """Calibration factor S (counts per second per Bq) from a reconstruction of a known source.

    Parameters
    ----------
    image_counts : Image
        Uncalibrated reconstruction (units ``"counts"``) of a uniform cylinder or point source.
    activity_bq : float
        Total activity in the phantom (Bq) at the calibration reference time.
    time_per_view_s : float
        Acquisition time per view (s).
    scan_start_s, scan_duration_s : float
        Scan start after the reference time and total scan duration (s) for decay.
    voi_mask : numpy.ndarray or None
        Voxels (z, y, x) summed; the whole image when ``None`` (recommended for a point source
        and for a cylinder with a margin, so that partial-volume spill is included).

    Returns
    -------
    float
        S = sum(x) / (t A_mean) with A_mean the activity averaged over the scan.
    """
    if image_counts.units != "counts":
        raise DataError(f"image_counts.units = {image_counts.units!r}; the calibration needs an uncalibrated "
                        f"reconstruction in 'counts'")
    a = check_range("activity_bq", activity_bq, 0.0, 1e13, lo_open=True)
    t = check_range("time_per_view_s", time_per_view_s, 0.0, 3600.0, lo_open=True)
    x = np.asarray(image_counts.array, dtype=np.float64)
    if voi_mask is not None:
        image_counts.grid.check_array("voi_mask", voi_mask)
        x = x[np.asarray(voi_mask, dtype=bool)]
    total = float(x.sum())
    if not np.isfinite(total) or total <= 0:
        raise DataError(f"image_counts sums to {total} counts in the VOI; a calibration needs a positive total")
    return total / (t * a * mean_decay_factor(scan_start_s, scan_duration_s, nuclide))


def counts_to_bq_per_ml(image_counts: np.ndarray, grid, cps_per_bq: float, time_per_view_s: float,
                        scan_start_s: float | None = None, scan_duration_s: float = 0.0,
                        decay_reference: str = "injection", nuclide=TC99M) -> tuple:
    """Convert an uncalibrated reconstruction (counts per voxel) to Bq/mL.

    Parameters
    ----------
    image_counts : numpy.ndarray
        OSEM image (z, y, x) of ``grid`` in counts per voxel per view time.
    cps_per_bq : float
        Planar sensitivity S (counts/s per Bq), e.g. from :func:`sensitivity_cps_per_bq`
        or ``Camera().sensitivity_cps_per_mbq() / 1e6``.
    time_per_view_s : float
        Acquisition time per view (s).
    scan_start_s : float or None
        Scan start after injection (s); required for ``decay_reference="injection"``.
    scan_duration_s : float
        Total scan duration (s).
    decay_reference : str
        ``"injection"`` (activity at injection time), ``"scan_start"`` or
        ``"acquisition_mean"`` (no decay correction: the mean during the scan).

    Returns
    -------
    (numpy.ndarray, dict)
        Image in Bq/mL and the metadata describing the calibration.
    """
    s = check_range("calibration_cps_per_bq", cps_per_bq, 0.0, 1.0, lo_open=True)
    t = check_range("time_per_view_s", time_per_view_s, 0.0, 3600.0, lo_open=True)
    check_choice("decay_reference", decay_reference, DECAY_REFERENCES)
    dur = check_range("scan_duration_s", scan_duration_s, 0.0, None)
    if decay_reference == "injection":
        if scan_start_s is None:
            raise ConfigError("scan_start_s (projections.meta['scan_start_s'], seconds after injection) is required "
                              "for decay_reference='injection'")
        f = mean_decay_factor(scan_start_s, dur, nuclide)
    elif decay_reference == "scan_start":
        f = mean_decay_factor(0.0, dur, nuclide)
    else:
        f = 1.0
    conc = np.asarray(image_counts, dtype=np.float64) / (s * t * grid.voxel_volume_ml * f)
    meta = {"calibration_cps_per_bq": s, "time_per_view_s": t, "decay_corrected_to": decay_reference,
            "decay_factor_applied": f, "scan_duration_s": dur,
            "scan_start_s": None if scan_start_s is None else float(scan_start_s),
            "dead_time": "neglected"}
    return conc, meta


def calibrate_image(image_counts: Image, cps_per_bq: float, time_per_view_s: float,
                    scan_start_s: float | None = None, scan_duration_s: float = 0.0,
                    decay_reference: str = "injection") -> Image:
    """:class:`Image` version of :func:`counts_to_bq_per_ml` (returns units ``"Bq/mL"``).

    The result's ``acquisition`` is the input's (or :meth:`Acquisition.from_meta` of its meta) with the
    ``time_per_view_s`` and ``scan_start_s`` used here; its ``corrections`` are the input's with
    ``decay_reference`` (None stays None: the reconstruction's corrections are unknown).
    """
    if image_counts.units != "counts":
        raise DataError(f"image_counts.units = {image_counts.units!r}, expected 'counts'")
    conc, meta = counts_to_bq_per_ml(image_counts.array, image_counts.grid, cps_per_bq, time_per_view_s,
                                     scan_start_s, scan_duration_s, decay_reference)
    acq = image_counts.acquisition or Acquisition.from_meta(image_counts.meta) or Acquisition()
    acq = replace(acq, time_per_view_s=meta["time_per_view_s"],
                  scan_start_s=acq.scan_start_s if scan_start_s is None else meta["scan_start_s"])
    cor = None if image_counts.corrections is None else replace(image_counts.corrections,
                                                                decay_reference=decay_reference)
    return Image(conc.astype(np.float32), image_counts.grid, "Bq/mL", {**image_counts.meta, **meta},
                 acquisition=acq, corrections=cor)
