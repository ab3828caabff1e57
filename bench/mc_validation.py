"""Monte Carlo validation figures against published numbers (issue 4).

Prints one JSON object (``--json``) with:

* ``sensitivity_cps_per_mbq`` / ``sensitivity_per_photon``: point source at 100 mm in air,
  20 % photopeak window, explicit camera mode (target 72-90 cps/MBq; 7.6e-5 - 9.0e-5 per photon);
* ``fwhm_mm``: system FWHM keyed by distance "0".."200" mm, explicit mode (7.1-7.4 mm at 100 mm);
* ``penetration_fraction``: photopeak counts whose straight path crossed any lead;
* ``scatter_to_total``: point at the centre of a 22 cm x 16.6 cm water cylinder, 20 % window,
  8.8 % energy resolution (SIMIND v8 benchmark 0.393);
* ``transmission_rel_error_max``: narrow-beam transmission through 5/10/20 cm water vs exp(-mu x);
* ``fast_vs_explicit``: total photopeak counts of a point in the cylinder, both modes, with MC errors;
* ``seconds``.

Run: ``python bench/mc_validation.py --json`` (``--quick`` for a short smoke run).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from her2sim.core.grid import Grid  # noqa: E402
from her2sim.sim.analog import simulate_explicit  # noqa: E402
from her2sim.sim.camera import Camera, Detector, Protocol  # noqa: E402
from her2sim.sim.camera_validation import validation_figures  # noqa: E402
from her2sim.sim.transport import MonteCarloSettings, pencil_beam_transmission, simulate_projections  # noqa: E402
from her2sim.sim.xsections import mass_attenuation_cm2_g  # noqa: E402
from mc_phantoms import point_in_cylinder, water_phantom  # noqa: E402


def transmission_errors(n_photons: int, seed: int) -> dict:
    out = {}
    mu = mass_attenuation_cm2_g("water", 140.5)
    for cm in (5, 10, 20):
        g = Grid((3, 3, cm * 5), (2.0, 2.0, 2.0), (-2.0, -2.0, 1.0))
        ph = water_phantom(g, np.ones(g.shape, bool), np.ones(g.shape))
        t = pencil_beam_transmission(ph, 0.0, 0.0, n_photons, seed=seed + cm)
        ref = math.exp(-mu * cm)
        out[str(cm)] = {"measured": t, "expected": ref, "rel_error": abs(t - ref) / ref}
    return out


def scatter_to_total(n_histories: int, seed: int) -> dict:
    cam = Camera(detector=Detector(energy_resolution=0.088),
                 protocol=Protocol(n_views=4, radius_mm=200.0, matrix=64, time_per_view_s=1.0))
    res = simulate_projections(point_in_cylinder(), cam, MonteCarloSettings(n_histories=n_histories, seed=seed))
    return res.summary()["photopeak"]


def fast_vs_explicit(n_fast: int, n_explicit: int, seed: int) -> dict:
    cam = Camera(protocol=Protocol(n_views=4, radius_mm=200.0, matrix=64, time_per_view_s=1.0))
    ph = point_in_cylinder(shape=(24, 48, 48))
    f = simulate_projections(ph, cam, MonteCarloSettings(n_histories=n_fast, seed=seed)).projections
    e = simulate_explicit(ph, cam, MonteCarloSettings(n_histories=n_explicit, seed=seed)).projections
    out = {}
    for wi, w in enumerate(cam.windows):
        cf, ce = float(f.counts[wi].sum()), float(e.counts[wi].sum())
        sf, se = math.sqrt(float(f.variance[wi].sum())), math.sqrt(float(e.variance[wi].sum()))
        out[w.name] = {"fast": cf, "fast_sigma": sf, "explicit": ce, "explicit_sigma": se,
                       "z_score": (cf - ce) / math.sqrt(sf ** 2 + se ** 2),
                       "components_fast": {k: float(v[wi].sum()) for k, v in f.components.items()},
                       "components_explicit": {k: float(v[wi].sum()) for k, v in e.components.items()}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer photons (smoke run)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cam = validation_figures(Camera(), seed=a.seed, quick=a.quick)
    trans = transmission_errors(100_000 if a.quick else 1_000_000, a.seed)
    st = scatter_to_total(50_000 if a.quick else 400_000, a.seed)
    fve = fast_vs_explicit(20_000 if a.quick else 200_000, 1_000_000 if a.quick else 8_000_000, a.seed)
    out = {
        "sensitivity_cps_per_mbq": cam["sensitivity_cps_per_mbq"],
        "sensitivity_per_photon": cam["sensitivity_per_photon"],
        "geometric_sensitivity_per_photon": cam.get("geometric_sensitivity_per_photon"),
        "fwhm_mm": cam["fwhm_mm"],
        "penetration_fraction": cam["penetration_fraction"],
        "photopeak_efficiency": cam.get("photopeak_efficiency"),
        "energy_fwhm_percent": cam.get("energy_fwhm_percent"),
        "scatter_to_total": st["scatter_to_total"],
        "scatter_order_fractions": st["scatter_order_fractions"],
        "transmission": trans,
        "transmission_rel_error_max": max(v["rel_error"] for v in trans.values()),
        "fast_vs_explicit": fve,
        "seconds": time.perf_counter() - t0,
    }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"sensitivity           {out['sensitivity_cps_per_mbq']:.1f} cps/MBq ({out['sensitivity_per_photon']:.3e}/photon)")
        print("FWHM mm               " + ", ".join(f"{k}: {v:.2f}" for k, v in out["fwhm_mm"].items()))
        print(f"penetration fraction  {out['penetration_fraction']:.4f}")
        print(f"scatter-to-total      {out['scatter_to_total']:.3f} (SIMIND 0.393)")
        print(f"transmission error    {100 * out['transmission_rel_error_max']:.2f} % max")
        pk = fve["photopeak"]
        print(f"fast vs explicit      {pk['fast']:.2f} +/- {pk['fast_sigma']:.2f} vs {pk['explicit']:.2f} +/- "
              f"{pk['explicit_sigma']:.2f} (z = {pk['z_score']:.2f})")
        print(f"seconds               {out['seconds']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
