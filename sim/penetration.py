"""Septal-penetration tail of the collimator-detector response, tabulated from the explicit mode.

The fast mode's response to a point at distance d from the collimator face is

    (1 - f(d)) G(sigma(d)) + f(d) G(sigma_pen(d)),

a geometric Gaussian core (:meth:`her2sim.sim.camera.Camera.sigma_mm`) plus a broad
penetration tail. ``f(d)`` is the fraction of photopeak counts whose path crossed any lead
(straight septal penetration and collimator scatter, the explicit mode's definition) and
``sigma_pen(d)`` the RMS width per axis of those counts' image. Both come from
:func:`her2sim.sim.explicit_camera.run_head_kernel` for a 140.5 keV point source in air
and are cached on disk per camera (``$HER2SIM_CACHE_DIR``, default ``~/.cache/her2sim``).
The tail is applied at 140.5 keV for all energies (scattered photons, at lower energy,
penetrate somewhat less: an approximation).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from her2sim.core.atomic import atomic_path
from her2sim.core.errors import check_int

from .camera import Camera

#: tabulation distances from the collimator face (mm)
DEFAULT_DISTANCES_MM = (0.0, 100.0, 200.0, 300.0, 400.0, 500.0)
#: cone half-angle of the sampled directions: tan(theta) <= 0.4 (beyond it, < 0.5 % of counts)
MAX_TAN = 0.4
TABLE_VERSION = 1


@dataclass(frozen=True)
class PenetrationTable:
    """Penetration fraction and tail width versus source distance.

    Attributes
    ----------
    distances_mm : numpy.ndarray
        Distances from the collimator face (mm).
    fraction : numpy.ndarray
        Photopeak-window counts that crossed lead / all photopeak counts.
    sigma_mm : numpy.ndarray
        RMS width per axis (mm) of the penetration counts' image (intrinsic blur included).
    """

    distances_mm: np.ndarray
    fraction: np.ndarray
    sigma_mm: np.ndarray

    def at(self, distance_mm):
        """(fraction, sigma_mm) linearly interpolated at ``distance_mm`` (clamped to the table)."""
        d = np.asarray(distance_mm, dtype=float)
        return (np.interp(d, self.distances_mm, self.fraction), np.interp(d, self.distances_mm, self.sigma_mm))


def tabulate_penetration(camera: Camera, distances_mm=DEFAULT_DISTANCES_MM, n_photons: int = 1_000_000,
                         seed: int = 12345, pixel_mm: float = 2.0, matrix: int = 301) -> PenetrationTable:
    """Run the explicit camera mode for a point in air at each distance and measure the tail.

    A point source's penetration fraction does not depend on its distance (the angular
    acceptance of the lead does not), so the fraction is pooled over all distances; the
    tail width is fitted as a straight line in distance. Both smooth the Monte Carlo noise.
    """
    from .explicit_camera import run_head_kernel, sample_cone, score_head

    n_photons = check_int("n_photons", n_photons, 1000, 10 ** 9)
    d = np.asarray(distances_mm, dtype=float)
    pen_counts, all_counts, sig = 0.0, 0.0, []
    ss = np.random.SeedSequence(seed).spawn(2 * d.size)
    coords = (np.arange(matrix) - 0.5 * (matrix - 1)) * pixel_mm
    for k, dist in enumerate(d):
        rng = np.random.default_rng(ss[2 * k])
        cu, cv, cn, cone = sample_cone(n_photons, MAX_TAN, rng)
        w = np.full(n_photons, cone / n_photons)
        kseed = int(ss[2 * k + 1].generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        raw = run_head_kernel(camera, dist * cu / cn, dist * cv / cn, cu, cv, cn, np.full(n_photons, 140.511), kseed,
                              collimator_scatter=True)
        score = score_head(camera, raw, w, np.zeros(n_photons, np.int8), (matrix, matrix), (pixel_mm, pixel_mm))
        pen = score.components["penetration"][0]
        tot = float(score.counts[0].sum())
        pen_counts += float(pen.sum())
        all_counts += tot
        if pen.sum() > 0:
            su = math.sqrt(float((pen.sum(axis=0) * coords ** 2).sum() / pen.sum()))
            sv = math.sqrt(float((pen.sum(axis=1) * coords ** 2).sum() / pen.sum()))
            s = 0.5 * (su + sv)
        else:
            s = float(camera.sigma_mm(dist))
        sig.append(s)
    f = pen_counts / all_counts if all_counts > 0 else 0.0
    slope, intercept = np.polyfit(d, np.array(sig), 1) if d.size > 1 else (0.0, sig[0])
    sigma = np.maximum(intercept + slope * d, camera.sigma_mm(d))
    return PenetrationTable(d, np.full(d.size, f), sigma)


def _cache_dir() -> Path:
    return Path(os.environ.get("HER2SIM_CACHE_DIR", Path.home() / ".cache" / "her2sim"))


def _camera_key(camera: Camera) -> str:
    head = {"collimator": camera.to_dict()["collimator"], "detector": camera.to_dict()["detector"],
            "windows": camera.to_dict()["windows"][:1], "version": TABLE_VERSION}
    return hashlib.sha256(json.dumps(head, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=8)
def _cached(key: str, camera_json: str) -> PenetrationTable:
    path = _cache_dir() / f"penetration_{key}.npz"
    if path.exists():
        try:
            z = np.load(path)
            return PenetrationTable(z["distances_mm"], z["fraction"], z["sigma_mm"])
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: tabulate again
    table = tabulate_penetration(Camera.from_dict(json.loads(camera_json)))
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:   # a file object: savez adds no suffix
            np.savez(fh, distances_mm=table.distances_mm, fraction=table.fraction, sigma_mm=table.sigma_mm)
    except OSError:
        pass  # read-only home: keep the in-memory table
    return table


def penetration_table(camera: Camera) -> PenetrationTable:
    """The camera's penetration table (tabulated once, then read from the cache)."""
    d = camera.to_dict()
    return _cached(_camera_key(camera), json.dumps({k: d[k] for k in ("collimator", "detector", "windows")}))
