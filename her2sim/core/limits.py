"""One table of limits, used both when a study file is validated and when the work runs.

Every integer setting that sizes the work (photons, noise realisations, grid and detector
sizes, views, worker processes...) has its allowed range here, so a value accepted by
``her2sim run``'s config check is never refused later by a stage (and the reverse). The
names are the study-file key paths; the CLI options that set the same quantity use the
same entry. (The acquisition protocol's own ranges, views, matrix, pixel size and radius, live
with :class:`her2sim.sim.camera.Protocol`, which checks them wherever a protocol is built.)

The memory model of :func:`estimate_peak_memory_bytes` is a deliberately rough upper
estimate (documented per term) that is compared with the RAM the operating system reports
as available (:func:`available_memory_bytes`), so a grid that cannot fit is refused before
any work starts instead of being killed hours later.
"""
from __future__ import annotations

import argparse
import math
import os

from .errors import ConfigError

#: key path -> (lowest, highest) allowed value, both inclusive
LIMITS: dict[str, tuple] = {
    "monte_carlo.photons": (1, 10 ** 10),            # also MonteCarloSettings.n_histories
    "monte_carlo.noise_realisations": (1, 10_000),   # also poisson_realisations(n)
    "monte_carlo.threads": (0, 1024),
    "recon.iterations": (1, 1000),
    "recon.subsets": (1, 1024),
    "recon.scatter_histories": (1000, 10 ** 9),
    "phantom.shape": (4, 1024),                      # voxels per axis
    "phantom.spacing_mm": (0.1, 50.0),               # mm
    "cohort.n_patients": (1, 100_000),               # further limited by the cohort preset's size
    "workers": (1, 256),                             # --workers
    "seed": (0, 2 ** 63 - 1),
}


def limit(key: str) -> tuple:
    """The ``(lo, hi)`` range of ``key`` (KeyError for an unknown key: a programming error)."""
    return LIMITS[key]


def available_memory_bytes() -> int | None:
    """RAM the OS reports as available to new allocations (bytes), or ``None`` when unknown.

    Linux: ``MemAvailable`` of ``/proc/meminfo``, capped by a cgroup v2 ``memory.max`` limit when one
    is set; elsewhere ``SC_AVPHYS_PAGES x SC_PAGE_SIZE``.
    """
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            avail = None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            text = fh.read().strip()
        if text and text != "max":
            cap = int(text)
            try:
                with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
                    cap -= int(fh.read().strip())
            except (OSError, ValueError):
                pass
            avail = cap if avail is None else min(avail, cap)
    except (OSError, ValueError):
        pass
    return avail


#: bytes per phantom voxel while a patient is built: activity float32 per time point (counted apart), CT
#: float32, labels int16, materials uint8, density float32, lesion ids int16, plus float64 coordinate and
#: distance temporaries of the analytic torso (about 6 x 8 bytes) -> 64 bytes (rounded up)
PHANTOM_BYTES_PER_VOXEL = 64
#: bytes per reconstructed voxel: image, sensitivity, update, mu map, PSF-blurred copies (float32, about 12)
#: plus float64 work arrays of the projector (about 4) -> 80 bytes
RECON_BYTES_PER_VOXEL = 80
#: bytes per projection bin: counts, variance and five scatter-order components (float32) -> 32, times two
#: for the Monte Carlo tallies held per thread while a run is merged
PROJECTION_BYTES_PER_BIN = 64
#: the Python interpreter, numpy/numba/scipy and the compiled kernels (bytes)
BASELINE_BYTES = 400 * 2 ** 20


def estimate_peak_memory_bytes(shape, n_time_points: int = 1, n_views: int = 60, matrix: int = 64,
                               n_windows: int = 2) -> int:
    """Rough upper estimate of the peak memory of one patient (phantom, Monte Carlo, recon), in bytes.

    Parameters
    ----------
    shape : sequence of 3 int
        Phantom grid (nz, ny, nx) in voxels.
    n_time_points : int
        Activity frames of the phantom.
    n_views, matrix, n_windows : int
        Views, detector pixels per side and energy windows of the acquisition.

    Returns
    -------
    int
        ``BASELINE_BYTES`` plus the largest of the phantom build, the projection tallies and the
        reconstruction (they do not coexist in full); see the per-term constants of this module.
    """
    nz, ny, nx = (int(s) for s in shape)
    voxels = nz * ny * nx
    phantom = voxels * (PHANTOM_BYTES_PER_VOXEL + 4 * int(n_time_points))
    bins = int(n_windows) * int(n_views) * int(matrix) * int(matrix)
    projections = bins * PROJECTION_BYTES_PER_BIN
    recon_voxels = int(matrix) * int(matrix) * max(nz, int(matrix))
    recon = recon_voxels * RECON_BYTES_PER_VOXEL + bins * 16
    # the phantom stays loaded while projections / recon are computed
    return BASELINE_BYTES + phantom + max(projections, recon)


def check_memory(what: str, estimate: int, available: int | None = None, workers: int = 1) -> None:
    """Refuse work whose estimated peak memory exceeds the available RAM.

    Parameters
    ----------
    what : str
        The settings that size the work (named in the message), e.g. ``"phantom.shape = [1024, 1024, 1024]"``.
    estimate : int
        Estimated peak of one worker (bytes), :func:`estimate_peak_memory_bytes`.
    available : int or None
        Available RAM (bytes); ``None`` asks the OS; unknown -> no check.
    workers : int
        Worker processes running patients side by side (each needs ``estimate``).

    Raises
    ------
    ConfigError
        With the estimate and the available memory in GiB.
    """
    if available is None:
        available = available_memory_bytes()
    if available is None:
        return
    need = int(estimate) * max(1, int(workers))
    if need > available:
        per = f" ({workers} workers x {estimate / 2 ** 30:.2f} GiB)" if workers > 1 else ""
        raise ConfigError(f"{what} needs an estimated {need / 2 ** 30:.2f} GiB of memory{per} but only "
                          f"{available / 2 ** 30:.2f} GiB is available; use a smaller grid/matrix"
                          f"{' or fewer workers' if workers > 1 else ''}")


# ---------------------------------------------------------------------------- argparse types
def int_range(lo: int | None = None, hi: int | None = None):
    """argparse ``type`` accepting an integer in ``[lo, hi]`` (zeros and negatives are never defaulted)."""
    def parse(text: str) -> int:
        rng = f"[{'-inf' if lo is None else lo}, {'+inf' if hi is None else hi}]"
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer in {rng}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is outside the allowed range {rng}")
        return v
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """argparse ``type`` accepting a finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        rng = f"{'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, {'+inf' if hi is None else f'{hi:g}'}]"
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number in {rng}") from None
        if (not math.isfinite(v) or (lo is not None and (v < lo or (lo_open and v == lo)))
                or (hi is not None and v > hi)):
            raise argparse.ArgumentTypeError(f"{text} is outside the allowed range {rng}")
        return v
    return parse


__all__ = ["int_range", "float_range", "LIMITS", "limit", "available_memory_bytes", "estimate_peak_memory_bytes", "check_memory"]
