"""Peer reconstruction for ``recon_peer_config.py``: PyTomography OSEM on the same data.

PyTomography (L. Polson et al., "PyTomography: A Python library for medical image
reconstruction", SoftwareX 2025; https://github.com/PyTomography/PyTomography, PyPI
``pytomography``) is the PyTorch SPECT reconstruction library the recon issue names as the
peer. This script runs under its own interpreter (``make peer-env`` builds ``.venv-peer``
with the pinned torch and pytomography; her2sim does not depend on torch), reads the files
``recon_peer_config.py --out-dir DIR`` writes, and reconstructs exactly the same projections
with the same system model:

* attenuation: ``SPECTAttenuationTransform`` with the same mu map (1/cm);
* collimator-detector response: ``SPECTPSFTransform`` with her2sim's own depth-dependent
  Gaussian sigma(d) = sqrt((a d + b)^2 + c^2) (``geometry.json`` carries a, b, c in mm),
  PyTomography's default separable 2D kernel cut at 3 sigma;
* OSEM (``pytomography.algorithms.OSEM``) with PyTomography's own subset order and a
  uniform initial image, the given iterations x subsets.

Conventions (measured, not assumed: a forward projection of an asymmetric phantom by both
codes correlates at 0.99999 with this mapping and at -0.06 with the z axis flipped):
her2sim arrays are (z, y, x) and projections (view, v, u); PyTomography objects are
(x, y, z) and projections (angle, r, z), so images are transposed (2, 1, 0), projections
(0, 2, 1), and her2sim's gantry angle theta is PyTomography's (360 - theta) mod 360.

Usage (normally called by ``recon_peer_config.py --peer-python .venv-peer/bin/python``)::

    .venv-peer/bin/python bench/_peer_pytomography.py DIR [--iterations 4 --subsets 10 --threads 2]

writes ``DIR/peer_recon_zyx.npy`` and prints one JSON object (``osem_seconds``,
``peak_rss_mib``, ``version``, ``torch_version``, ``threads``).
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def _xyz(a: np.ndarray):
    import torch

    return torch.tensor(np.ascontiguousarray(np.transpose(a, (2, 1, 0))), dtype=torch.float32)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("in_dir", type=Path, help="directory written by recon_peer_config.py --out-dir")
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--subsets", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import pytomography
    import torch
    from pytomography.algorithms import OSEM
    from pytomography.likelihoods import PoissonLogLikelihood
    from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform

    torch.set_num_threads(args.threads)
    geo = json.loads((args.in_dir / "geometry.json").read_text())
    mu = np.load(args.in_dir / "mu_map_per_cm_zyx.npy")
    counts = np.load(args.in_dir / "projections_view_v_u.npy")
    voxel_cm = geo["voxel_mm"] / 10.0
    pixel_cm = [p / 10.0 for p in geo["pixel_mm"]]
    a, b, c = geo["sigma_model_mm"]  # sigma(d) = sqrt((a d + b)^2 + c^2), d and sigma in mm

    t0 = time.perf_counter()
    object_meta = SPECTObjectMeta(dr=(voxel_cm,) * 3, shape=tuple(mu.shape[::-1]))
    angles = (360.0 - np.asarray(geo["angles_deg"], dtype=float)) % 360.0
    proj_meta = SPECTProjMeta(projection_shape=(counts.shape[2], counts.shape[1]), dr=(pixel_cm[1], pixel_cm[0]),
                              angles=angles, radii=np.asarray(geo["radii_mm"], dtype=float) / 10.0)
    # the same model in cm: sigma_cm = sqrt((a d_cm + b/10)^2 + (c/10)^2)
    psf_meta = SPECTPSFMeta(sigma_fit_params=[a, b / 10.0, c / 10.0],
                            sigma_fit=lambda r, a_, b_, c_: np.sqrt((a_ * r + b_) ** 2 + c_ ** 2))
    system = SPECTSystemMatrix(obj2obj_transforms=[SPECTAttenuationTransform(attenuation_map=_xyz(mu)),
                                                   SPECTPSFTransform(psf_meta)],
                               proj2proj_transforms=[], object_meta=object_meta, proj_meta=proj_meta)
    proj = torch.tensor(np.ascontiguousarray(np.transpose(counts, (0, 2, 1))), dtype=torch.float32)
    likelihood = PoissonLogLikelihood(system, proj)
    rec = OSEM(likelihood)(n_iters=args.iterations, n_subsets=args.subsets)
    seconds = time.perf_counter() - t0
    rec_zyx = np.transpose(rec.cpu().numpy(), (2, 1, 0)).astype(np.float32)
    np.save(args.in_dir / "peer_recon_zyx.npy", rec_zyx)
    result = {
        "name": "PyTomography",
        "version": pytomography.__version__ if hasattr(pytomography, "__version__") else _dist_version("pytomography"),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "osem_seconds": round(seconds, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "iterations": args.iterations,
        "subsets": args.subsets,
    }
    print(json.dumps(result))
    return result


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
