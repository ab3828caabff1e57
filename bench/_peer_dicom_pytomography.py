"""Peer reader for ``dicom_interop.py``: PyTomography reconstructs her2sim's DICOM export on its own.

Runs under the ``.venv-peer`` interpreter (``make peer-env``: torch CPU + pytomography 3.4.0;
her2sim itself never imports torch). Everything comes from the DICOM files through
PyTomography's readers (``pytomography.io.SPECT.dicom``), as a clinic would use it on a GE
NM670 study:

* projections, angles, radii and the object frame: ``get_projections`` / ``get_metadata``
  (Start Angle, Angular Step, Rotation Direction, RadialPosition, detector Image Position and
  TableHeight);
* attenuation: ``get_attenuation_map_from_CT_slices`` (PyTomography's own bilinear HU -> mu
  table and its own CT -> SPECT alignment through the two series' positions);
* scatter: ``get_energy_window_scatter_estimate`` with the lower window only (DEW,
  Jaszczak k = 0.5 as weighting, scaled by the window widths);
* collimator-detector response: ``get_psfmeta_from_scanner_params("GI-LEHR", 140.5 keV)``
  (GE LEHR: 1.5 mm holes, 35 mm long) with 3.9 mm intrinsic FWHM at 140 keV;
* OSEM (``pytomography.algorithms.OSEM``) with the given iterations x subsets; with
  ``--support`` (the default of ``dicom_interop.py``) its initial object is 1 on the transaxial
  footprint of PyTomography's own mu map (mu > 0 in any slice, grown by one voxel, slices with
  mu > 0 plus one) and 0 elsewhere, so that OSEM's multiplicative updates keep activity in
  the same support her2sim's projector uses (``SpectSystemMatrix(support="auto")``); without
  it the whole field of view is reconstructed.

Usage::

    .venv-peer/bin/python bench/_peer_dicom_pytomography.py NM.dcm CT_DIR OUT_DIR [--iterations 4 --subsets 6]

With ``--points "i,j,k;..."`` it also forward-projects a unit point at each object voxel (x, y, z
indices) with PyTomography's plain projector (no attenuation, no PSF) into
``OUT_DIR/peer_points_proj.npy`` ((point, angle, r, z), angles in PyTomography's order in
``peer_angles_deg.npy``): where PyTomography believes each voxel projects.

writes ``OUT_DIR/peer_recon_xyz.npy`` (PyTomography's object, (x, y, z) order, counts per voxel),
``OUT_DIR/peer_mu_xyz.npy`` (1/cm) and ``OUT_DIR/peer_affine.json`` (4 x 4, voxel index (x, y, z)
-> LPS mm) and prints one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np

INTRINSIC_FWHM_140KEV_CM = 0.39  # NaI 9.5 mm, NM670 intrinsic resolution 3.9 mm FWHM
PHOTOPEAK_KEV = 140.5


def _window_index(ds, name: str) -> int:
    names = [str(it.get("EnergyWindowName", "")) for it in ds.EnergyWindowInformationSequence]
    if name not in names:
        raise SystemExit(f"{name!r} energy window not in EnergyWindowInformationSequence {names}")
    return names.index(name)


def support_mask(mu):
    """1 on the transaxial footprint of ``mu > 0`` (x, y, z order) grown by one voxel, on the slices
    with ``mu > 0`` plus one on each side; 0 elsewhere (a float tensor like ``mu``)."""
    import torch

    inside = (mu > 0).cpu().numpy()
    foot = inside.any(axis=2)
    grown = foot.copy()
    grown[1:, :] |= foot[:-1, :]
    grown[:-1, :] |= foot[1:, :]
    grown[:, 1:] |= foot[:, :-1]
    grown[:, :-1] |= foot[:, 1:]
    zs = np.flatnonzero(inside.any(axis=(0, 1)))
    mask = np.zeros(inside.shape, dtype=np.float32)
    if zs.size:
        mask[:, :, max(int(zs[0]) - 1, 0):int(zs[-1]) + 2] = grown[:, :, None]
    return torch.tensor(mask, dtype=mu.dtype, device=mu.device)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nm_file", type=Path)
    ap.add_argument("ct_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--subsets", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--support", action="store_true", help="restrict OSEM to the mu map's footprint")
    ap.add_argument("--points", default="", help="voxels 'i,j,k;i,j,k' (x, y, z) to forward-project")
    args = ap.parse_args(argv)

    import pydicom
    import torch
    import pytomography
    from pytomography.algorithms import OSEM
    from pytomography.io.SPECT import dicom
    from pytomography.likelihoods import PoissonLogLikelihood
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform

    torch.set_num_threads(args.threads)
    nm = str(args.nm_file)
    ds = pydicom.dcmread(nm)
    i_peak, i_scatter = _window_index(ds, "photopeak"), _window_index(ds, "scatter")
    files_ct = sorted(str(p) for p in args.ct_dir.iterdir() if p.suffix == ".dcm")
    t0 = time.perf_counter()
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # PyTomography prints its HU -> mu choice
        object_meta, proj_meta = dicom.get_metadata(nm, index_peak=i_peak)
        photopeak = dicom.get_projections(nm, index_peak=i_peak)
        scatter = dicom.get_energy_window_scatter_estimate(nm, index_peak=i_peak, index_lower=i_scatter,
                                                           weighting_lower=0.5)
        mu = dicom.get_attenuation_map_from_CT_slices(files_ct, nm, index_peak=i_peak)
    psf_meta = dicom.get_psfmeta_from_scanner_params("GI-LEHR", energy_keV=PHOTOPEAK_KEV,
                                                     intrinsic_resolution_140keV=INTRINSIC_FWHM_140KEV_CM)
    system = SPECTSystemMatrix(obj2obj_transforms=[SPECTAttenuationTransform(attenuation_map=mu),
                                                   SPECTPSFTransform(psf_meta)],
                               proj2proj_transforms=[], object_meta=object_meta, proj_meta=proj_meta)
    likelihood = PoissonLogLikelihood(system, photopeak, additive_term=scatter)
    initial = support_mask(mu) if args.support else None
    rec = OSEM(likelihood, object_initial=initial)(n_iters=args.iterations, n_subsets=args.subsets)
    seconds = time.perf_counter() - t0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.save(args.out_dir / "peer_recon_xyz.npy", rec.cpu().numpy().astype(np.float32))
    np.save(args.out_dir / "peer_mu_xyz.npy", mu.cpu().numpy().astype(np.float32))
    if args.points:
        plain = SPECTSystemMatrix(obj2obj_transforms=[], proj2proj_transforms=[], object_meta=object_meta,
                                  proj_meta=proj_meta)
        stack = []
        for text in args.points.split(";"):
            i, j, k = (int(v) for v in text.split(","))
            obj = torch.zeros(object_meta.shape, dtype=mu.dtype)
            obj[i, j, k] = 1.0
            stack.append(plain.forward(obj).cpu().numpy())
        np.save(args.out_dir / "peer_points_proj.npy", np.stack(stack).astype(np.float32))
        np.save(args.out_dir / "peer_angles_deg.npy", np.asarray(proj_meta.angles, dtype=np.float64))
    affine = np.asarray(object_meta.affine_matrix, dtype=float)
    (args.out_dir / "peer_affine.json").write_text(json.dumps(affine.tolist()))
    result = {
        "name": "PyTomography",
        "version": getattr(pytomography, "__version__", None) or _dist_version("pytomography"),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 2),
        "iterations": args.iterations,
        "subsets": args.subsets,
        "angles_deg_first": [round(float(a), 3) for a in np.asarray(proj_meta.angles)[:3]],
        "projection_counts": float(photopeak.sum()),
        "hu_to_mu": " ".join(chatter.getvalue().split())[:300],
        "support": "mu-map footprint" if args.support else "whole field of view",
    }
    print(json.dumps(result))
    return result


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
