"""The SUVmax = 1.5 threshold on the virtual seed trial, per scatter correction.

Runs the ``seed-trial`` preset (30 patients, 1 h and 2 h; Zhao et al., Breast Cancer Res
26:40, 2024) on the coarse ``--quick`` grids of ``e2e_seed_trial.py`` (32 x 64 x 64 voxels of
8.84 mm, 64 x 64 detector, 30 views, 5e4 photons) once per ``recon.scatter`` method, with the
same seeds (same patients, same noisy projections), and prints per method and time point the
lesion-level threshold statistics the pipeline computes (``her2sim.analysis.threshold``):
``sensitivity``, ``specificity``, ``auc``, ``youden_threshold`` and ``tp/fp/fn/tn`` at 1.5,
for ``suvmax`` and ``suvmean``; plus ``seconds`` per method and, per method and time point,
``suvmax_calls``: HER2-negative and HER2-positive lesions counted by (lesion type, IHC score)
with their true SUVmax (the lesion's own partial-volume truth on the recon grid, ``true_suvmax_pv``) and measured SUVmax above / below 1.5, which separates the
threshold's own misclassifications (biology as modelled) from those imaging adds.

``--full`` runs the preset's own resolution instead (64 x 128 x 128 voxels of 4.42 mm, 120
views, 1 % Monte Carlo noise target; about 35 min per method with DEW).

Usage: ``python bench/threshold_by_scatter.py [--json] [--methods dew,mc] [--full] [--out-dir DIR]``
(about 3 min per method on 2 cores).
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e_seed_trial  # noqa: E402

from her2sim.config import SCATTER_METHODS, override_study  # noqa: E402
from her2sim.core.errors import ConfigError  # noqa: E402
from her2sim.pipeline import run_study  # noqa: E402

KEYS = ("sensitivity", "specificity", "auc", "youden_threshold", "tp", "fp", "fn", "tn", "n_lesions")


def suvmax_calls(lesions_csv: Path, threshold: float) -> dict:
    """{time h: {"HER2-" / "HER2+": {"<type> IHC <score>: true <above|below>, measured <above|below>": n}}}."""
    out: dict = {}
    with open(lesions_csv, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("measured", "True") != "True":
                continue
            status = "HER2+" if int(r["her2_positive"]) else "HER2-"
            key = (f"{r['type']} IHC {r['ihc']}: true {'above' if float(r['true_suvmax_pv']) >= threshold else 'below'}, "
                   f"measured {'above' if float(r['suvmax']) >= threshold else 'below'}")
            out.setdefault(f"{float(r['time_h']):g}", {}).setdefault(status, Counter())[key] += 1
    return {t: {s: dict(sorted(c.items())) for s, c in d.items()} for t, d in out.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--methods", default="dew,mc", help=f"comma-separated of {list(SCATTER_METHODS)}")
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the study folders here")
    ap.add_argument("--full", action="store_true", help="the preset's full resolution instead of the quick grids")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in SCATTER_METHODS or m == "tew":
            raise ConfigError(f"--methods: {m!r} is not one of {[x for x in SCATTER_METHODS if x != 'tew']} "
                              "(the preset has no TEW windows)")
    tmp = None
    root = args.out_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="her2sim_threshold_")
        root = Path(tmp.name)
    result = {"threshold": 1.5, "patients": 30, "grid": "full" if args.full else "quick", "methods": {}, "seconds": {}}
    for m in methods:
        cfg = override_study(e2e_seed_trial.study_config(30, 1, not args.full), [f"recon.scatter={m}"])
        t0 = time.perf_counter()
        summary = run_study(cfg, root / m, progress=False)
        result["seconds"][m] = round(time.perf_counter() - t0, 1)
        result["methods"][m] = {k: {f: (round(v[f], 4) if isinstance(v[f], float) else v[f]) for f in KEYS}
                                for k, v in summary["threshold"].items() if k.split("@")[0] in ("suvmax", "suvmean")}
        result.setdefault("suvmax_calls", {})[m] = suvmax_calls(root / m / "results" / "lesions.csv",
                                                                result["threshold"])
    if tmp is not None:
        tmp.cleanup()
    if args.json:
        print(json.dumps(result))
    else:
        for m, rows in result["methods"].items():
            print(f"recon.scatter = {m} ({result['seconds'][m]} s)")
            for k, r in rows.items():
                print(f"  {k:12s} Se {r['sensitivity']:.2f}  Sp {r['specificity']:.2f}  AUC {r['auc']:.3f}  "
                      f"Youden cut-off {r['youden_threshold']:.2f}  (TP {r['tp']} FP {r['fp']} FN {r['fn']} "
                      f"TN {r['tn']} of {r['n_lesions']})")
    return result


if __name__ == "__main__":
    main()
