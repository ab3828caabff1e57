"""Quantitation error budget: scatter correction x attenuation map on the demo patient.

Runs the built-in ``demo`` study (one patient, bilateral primaries IHC 2+ / IHC 0, 1 h and
2 h, IEC calibration) through :func:`her2sim.pipeline.run_study` once per configuration,
each in a fresh folder with the same seed, hence the same noisy projections:

* ``recon.scatter``: ``dew`` (dual energy window, Jaszczak 1984) or ``mc`` (Monte Carlo
  scatter correction, :mod:`her2sim.recon.mc_scatter`);
* ``recon.mu_map``: ``ct`` (the scanner's bilinear HU -> mu map of the CT) or ``materials``
  (the ideal map: mu of the materials the Monte Carlo transports).

Per configuration (``configs`` keyed ``"<scatter>/<mu_map>"``):

* ``calibration_cps_per_mbq``: the IEC calibration of the study (the camera model's planar
  sensitivity, 77.5 cps/MBq, is what a scatter-free calibration should approach);
* ``total_activity_error``: {time h: reconstructed total activity (sum of Bq/mL x voxel mL,
  decay-corrected to injection) / the phantom's true total - 1};
* ``lesions``: per lesion and time point ``suvmax``, ``true_suvmax`` (the lesion's own partial-volume truth on
  the recon grid, ``true_suvmax_pv`` of ``lesions.csv``; ``true_suvmean`` likewise), ``suvmean``,
  ``true_suvmean`` (true mean over the lesion), ``pvc_gtm_suvmean``.

Plus ``seconds`` per configuration and ``planar_sensitivity_cps_per_mbq``.

Usage: ``python bench/quantitation_budget.py [--json] [--out-dir DIR] [--configs dew/ct,mc/ct]``
(about 2.5 min for the four configurations on 2 cores).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from her2sim.config import load_study, override_study, preset_path
from her2sim.core.containers import Image, Phantom
from her2sim.core.errors import ConfigError
from her2sim.core.radionuclide import TC99M
from her2sim.pipeline import run_study

CONFIGS = ("dew/ct", "dew/materials", "mc/ct", "mc/materials")


def measure(study_dir: Path) -> dict:
    """Calibration, total-activity error per time point and lesion SUVs of a finished demo study."""
    cal = json.loads((study_dir / "calibration" / "calibration.json").read_text())
    pdir = study_dir / "patients" / "P001"
    ph = Phantom.load(pdir / "phantom.h5")
    totals = {}
    for i, t in enumerate(ph.time_points_h):
        img = Image.load(pdir / f"t{t:g}h" / "recon_r0.h5")
        rec_bq = float(img.array.sum(dtype=np.float64) * img.grid.voxel_volume_ml)
        true_bq = ph.total_activity_bq(i) / math.exp(-math.log(2.0) * t * 3600.0 / TC99M.half_life_s)
        totals[f"{t:g}"] = round(rec_bq / true_bq - 1.0, 4)
    lesions = []
    with open(study_dir / "results" / "lesions.csv", newline="") as f:
        for r in csv.DictReader(f):
            lesions.append({"lesion_id": int(r["lesion_id"]), "ihc": int(r["ihc"]), "time_h": float(r["time_h"]),
                            "suvmax": round(float(r["suvmax"]), 3), "true_suvmax": round(float(r["true_suvmax_pv"]), 3),
                            "suvmean": round(float(r["suvmean"]), 3), "true_suvmean": round(float(r["true_suvmean_pv"]), 3),
                            "pvc_gtm_suvmean": round(float(r["pvc_gtm_suvmean"]), 3)})
    return {"calibration_cps_per_mbq": round(float(cal["sensitivity_cps_per_mbq"]), 2),
            "total_activity_error": totals, "lesions": lesions}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the study folders here")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated of {list(CONFIGS)}")
    args = ap.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            raise ConfigError(f"--configs: {c!r} is not one of {list(CONFIGS)}")
    tmp = None
    root = args.out_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="her2sim_budget_")
        root = Path(tmp.name)
    base = load_study(preset_path("demo"))
    result = {"planar_sensitivity_cps_per_mbq": round(base.camera.sensitivity_cps_per_mbq(), 2),
              "configs": {}, "seconds": {}}
    for c in configs:
        scatter, mu_map = c.split("/")
        cfg = override_study(base, [f"recon.scatter={scatter}", f"recon.mu_map={mu_map}"])
        out = root / c.replace("/", "_")
        t0 = time.perf_counter()
        run_study(cfg, out, progress=False)
        result["seconds"][c] = round(time.perf_counter() - t0, 1)
        result["configs"][c] = measure(out)
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"planar sensitivity of the camera model: {result['planar_sensitivity_cps_per_mbq']} cps/MBq")
        print(f"{'scatter/mu map':16s} {'cal cps/MBq':>11s}  total activity error per time point   lesion SUVmax "
              "(true)")
        for c, r in result["configs"].items():
            tot = " / ".join(f"{t} h {100 * v:+.1f} %" for t, v in r["total_activity_error"].items())
            les = ", ".join(f"L{x['lesion_id']} {x['time_h']:g} h {x['suvmax']:.2f} ({x['true_suvmax']:.2f})"
                            for x in r["lesions"])
            print(f"{c:16s} {r['calibration_cps_per_mbq']:11.2f}  {tot:36s} {les}")
    return result


if __name__ == "__main__":
    main()
