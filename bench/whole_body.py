"""Planar whole-body sweep of the demo patient at 1 h and 2 h (issue 17, part 3).

Builds the patient of ``her2sim demo`` (the demo preset: 70 kg, 160 cm, its two lesions) with ``extent = "whole_body"``
(head to mid-thigh, :mod:`her2sim.phantoms.whole_body`; ``--anatomy v1`` (default) or ``v2``,
:mod:`her2sim.phantoms.torso_v2`) on a 4.42 mm grid, simulates an anterior/posterior
sweep at each time point with the fast-mode Monte Carlo (:mod:`her2sim.sim.whole_body`: NM670 LEHR,
photopeak window, 256 x 1024 at 2.21 mm, 12 cm/min unless told otherwise, Poisson counts with a fixed
seed) and measures, on the geometric-mean image sqrt(A P), the mean counts per pixel over each structure's
projected footprint (the pixels where the structure's antero-posterior path length is at least half its
maximum, :func:`her2sim.sim.whole_body.organ_footprint`).

Prints (``--json``: one object; keys stable):

* ``hottest_structures`` - per time point (``"1h"``, ``"2h"``), the structures of :data:`STRUCTURES` ranked
  by that mean, hottest first;
* ``organ_counts`` - per time point and structure: ``mean_counts_per_pixel`` (geometric mean, Poisson image),
  ``expected_mean_counts_per_pixel`` (noise-free), ``pixels`` of the footprint;
* ``total_counts`` - anterior / posterior Poisson counts per time point; ``bladder_activity_mbq`` (decayed,
  at the scan start) per time point;
* ``anatomy`` - the anatomy version the patient was built on (``"v1"`` or ``"v2"``);
* ``seconds_sim`` (Monte Carlo + phantom, per time point and total), ``matrix`` [rows, columns],
  ``pixel_mm``, ``speed_cm_per_min``, ``dwell_s``, ``sweep_seconds``, ``n_histories``;
* ``meets_targets`` - {"liver_kidneys_bladder_hottest": the three hottest structures of the geometric-mean
  image are the liver, the kidneys and the bladder at both time points} (issue 17's target: "the whole-body
  image of the demo patient shows the liver, kidneys and bladder as the hottest structures"; the seed trial's
  Supplementary Fig. S2 shows liver and kidneys hottest with renal excretion into the bladder).

``--out DIR`` also writes ``DIR/whole_body.png`` (anterior | posterior at 1 h and 2 h, head up, each image
scaled to its own 99.5th percentile).

Usage: ``python bench/whole_body.py --json [--out DIR] [--speed-cm-per-min 12] [--histories 400000]
[--matrix 1024x256] [--anatomy v1]``.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from her2sim.core.errors import ConfigError
from her2sim.core.jsonio import print_json
from her2sim.phantoms.torso_v2 import ANATOMIES, check_anatomy
from her2sim.config import load_study, preset_path
from her2sim.phantoms import build_patient_phantom
from her2sim.pipeline import patient_specs
from her2sim.phantoms.whole_body import whole_body_grid
from her2sim.sim.transport import MonteCarloSettings
from her2sim.sim.whole_body import (WholeBodyProtocol, geometric_mean, organ_footprint, simulate_whole_body)

#: structures compared (name -> phantom labels)
STRUCTURES = {
    "liver": ("liver",), "kidneys": ("kidney_cortex", "kidney_medulla"), "bladder": ("bladder",),
    "spleen": ("spleen",), "heart": ("heart_wall", "heart_blood", "heart_lv", "heart_rv", "heart_la", "heart_ra"), "intestine": ("intestine", "mesentery"),
    "stomach": ("stomach",), "thyroid": ("thyroid",), "salivary_glands": ("salivary_glands",),
    "brain": ("brain",), "lungs": ("lungs",), "breasts": ("breast_adipose", "breast_gland"),
    "bone_marrow": ("spine_marrow", "pelvis_marrow"), "thighs": ("femur_cortical", "femur_marrow"),
}
TARGET_TOP3 = {"liver", "kidneys", "bladder"}


def demo_patient() -> dict:
    """The patient of ``her2sim demo`` (the demo preset's study: its weight, height and lesions)."""
    return patient_specs(load_study(preset_path("demo")))[0]


def demo_whole_body_phantom(spacing_mm: float = 4.42, anatomy: str = "v1"):
    """The demo patient with the whole-body extent of ``anatomy`` (``"v1"`` or ``"v2"``) on a grid that holds
    her (vertex to mid-thigh, ``spacing_mm`` mm voxels)."""
    pat = dict(demo_patient(), extent="whole_body")
    if anatomy != "v1":
        pat["anatomy"] = anatomy
    grid = whole_body_grid(spacing_mm, pat.get("height_cm", 160.0))
    return build_patient_phantom(pat, grid, seed=int(pat.get("seed", 0)))  # the study's patient_seed


def _stats(ph, scan) -> dict:
    gm = geometric_mean(scan.anterior, scan.posterior)
    gm_exp = geometric_mean(scan.expected_anterior, scan.expected_posterior)
    out = {}
    for name, labels in STRUCTURES.items():
        fp = organ_footprint(ph, scan, labels)
        n = int(fp.sum())
        out[name] = {"mean_counts_per_pixel": round(float(gm[fp].mean()), 2) if n else None,
                     "expected_mean_counts_per_pixel": round(float(gm_exp[fp].mean()), 2) if n else None,
                     "pixels": n}
    return out


def _bladder_mbq(ph, frame: int) -> float:
    ids = [k for k, v in ph.label_names.items() if v == "bladder"]
    m = np.isin(ph.labels, ids)
    return float(ph.activity_bq_per_ml[frame][m].sum(dtype=np.float64) * ph.grid.voxel_volume_ml / 1e6)


def _png(path, scans: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(10, 9))
    for ax, (tp, scan) in zip((axes[:2], axes[2:]), scans.items()):
        lo, hi = scan.meta["simulated_rows"]
        for a, (view, img) in zip(ax, (("anterior", scan.anterior), ("posterior", scan.posterior))):
            im = img[lo:hi][::-1]
            a.imshow(im, cmap="gray_r", vmin=0, vmax=max(float(np.percentile(im, 99.5)), 1.0), aspect="equal",
                     interpolation="nearest")
            a.set_title(f"{view} {tp}\n{int(img.sum()) / 1e6:.2f} Mcounts", fontsize=9)
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(f"99mTc-NM-02 whole-body sweep, demo patient ({scans[next(iter(scans))].speed_cm_per_min:g} cm/min)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _matrix(text: str) -> tuple:
    try:
        v, u = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--matrix = {text!r} must be ROWSxCOLUMNS, e.g. 1024x256") from None
    return (v, u)


def run(speed_cm_per_min: float = 12.0, histories: int = 400_000, matrix=(1024, 256), out_dir=None,
        anatomy: str = "v1") -> dict:
    t0 = time.perf_counter()
    protocol = WholeBodyProtocol(speed_cm_per_min=speed_cm_per_min, matrix=tuple(matrix))
    settings = MonteCarloSettings(n_histories=histories, seed=1, primary_supersample=2)
    ph = demo_whole_body_phantom(anatomy=check_anatomy(anatomy))
    t_phantom = time.perf_counter() - t0
    scans, stats, sim_s = {}, {}, {}
    for k, tp in enumerate(ph.time_points_h):
        key = f"{tp:g}h"
        t1 = time.perf_counter()
        scans[key] = simulate_whole_body(ph, k, protocol, settings=settings, noise_seed=100 + k)
        sim_s[key] = round(time.perf_counter() - t1, 1)
        stats[key] = _stats(ph, scans[key])
    hottest = {key: [n for n, _ in sorted(((n, s["mean_counts_per_pixel"]) for n, s in st.items()
                                           if s["mean_counts_per_pixel"] is not None), key=lambda x: -x[1])]
               for key, st in stats.items()}
    any_scan = next(iter(scans.values()))
    res = {"anatomy": anatomy, "hottest_structures": hottest, "organ_counts": stats,
           "total_counts": {k: s.total_counts() for k, s in scans.items()},
           "bladder_activity_mbq": {f"{tp:g}h": round(_bladder_mbq(ph, i), 2) for i, tp in enumerate(ph.time_points_h)},
           "seconds_sim": {**sim_s, "phantom": round(t_phantom, 1), "total": round(time.perf_counter() - t0, 1)},
           "matrix": list(any_scan.matrix), "pixel_mm": any_scan.pixel_mm[0],
           "speed_cm_per_min": protocol.speed_cm_per_min, "dwell_s": round(any_scan.dwell_s, 1),
           "sweep_seconds": round(any_scan.seconds, 1), "n_histories": histories,
           "grid": {"shape": list(ph.grid.shape), "spacing_mm": ph.grid.spacing_mm[0]},
           "meets_targets": {"liver_kidneys_bladder_hottest": all(set(h[:3]) == TARGET_TOP3 for h in hottest.values())}}
    if out_dir is not None:
        from pathlib import Path
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        _png(d / "whole_body.png", scans)
        res["png"] = str(d / "whole_body.png")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--out", default=None, help="folder for whole_body.png")
    ap.add_argument("--speed-cm-per-min", type=float, default=12.0)
    ap.add_argument("--histories", type=int, default=400_000)
    ap.add_argument("--matrix", default="1024x256", help="ROWSxCOLUMNS: 1024x256 (2.21 mm) or 512x128 (4.42 mm)")
    ap.add_argument("--anatomy", choices=ANATOMIES, default="v2", help="anatomy version of the patient (default v2)")
    args = ap.parse_args(argv)
    try:
        res = run(args.speed_cm_per_min, args.histories, _matrix(args.matrix), args.out, args.anatomy)
    except ConfigError as exc:
        print(f"whole_body: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print_json(res)
    else:
        for key, order in res["hottest_structures"].items():
            print(f"{key}: hottest {', '.join(order[:5])}")
        print("meets_targets:", res["meets_targets"], " seconds:", res["seconds_sim"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
