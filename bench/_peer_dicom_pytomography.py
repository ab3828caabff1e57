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
  (GE LEHR: 1.5 mm holes, 35 mm long) with 3.9 mm intrinsic FWHM at 140 keV: sigma(d) within
  0.3 mm FWHM of her2sim's own LEHR model at every distance. PyTomography samples that Gaussian at
  whole-pixel offsets; when sigma is below about 0.6 pixel the sampled kernel is much narrower than
  the Gaussian (8.84 mm pixels: an effective FWHM of 3.3 mm instead of 7.1 mm at 100 mm from the
  face, 0.7 instead of 5.4 at 50 mm), whereas her2sim's projector realises the variance sigma(d)^2
  exactly. ``--psf-kernel variance-matched`` (what ``dicom_interop.py`` passes) hands PyTomography,
  per distance, the sigma whose *sampled* kernel has the GI-LEHR variance, so both codes model the same
  response; ``sampled`` is PyTomography's plain use. At 4.42 mm pixels the two differ by < 0.1 mm
  FWHM beyond 100 mm. ``--psf-table`` replaces GI-LEHR's sigma(d) by a table (``dicom_interop.py``
  writes the response her2sim's projector realises, measured by point projections) and the kernel
  choice applies to it as well;
* OSEM (``pytomography.algorithms.OSEM``) with the given iterations x subsets. PyTomography's
  subset k is every n-th of its angle-sorted projections from k (the same view sets as her2sim's),
  visited 0, 1, 2, ... (neighbouring angles in turn); her2sim visits them in its
  maximal-angular-separation order (``her2sim.recon.osem.make_subsets``).
  ``--subset-angles`` (``dicom_interop.py`` passes her2sim's subsets as her2sim gantry angles, in
  her2sim's order) replaces PyTomography's; without it PyTomography keeps its own; with
  ``--support`` (the default of ``dicom_interop.py``) its initial object is 1 on the transaxial
  footprint of PyTomography's own mu map (mu > 0 in any slice, grown by one voxel, slices with
  mu > 0 plus one) and 0 elsewhere, so that OSEM's multiplicative updates keep activity in
  the same support her2sim's projector uses (``SpectSystemMatrix(support="auto")``); without
  it the whole field of view is reconstructed. ``--initial-level net-counts`` starts at her2sim's
  level instead of 1: net counts (photopeak - scatter estimate, clipped at 0) over the sum of
  PyTomography's sensitivity image H^T 1 on that support, so the first forward projection holds the
  measured net counts;
* post-filter: ``--butterworth CUTOFF ORDER`` and ``--gaussian-fwhm-mm`` apply the recon protocol's
  filter to the result with ``post_filter`` below (numpy FFT from the textbook transfer functions, not
  her2sim's code); the unfiltered image is kept in ``OUT_DIR/unfiltered``.

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
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


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


def sampled_variance_px2(sigma_px):
    """Variance (pixel^2) of PyTomography's Gaussian kernel, exp(-x^2 / 2 sigma^2) at whole-pixel x,
    normalised; untruncated (PyTomography cuts its kernels at 3 sigma of the widest, the same with or
    without matching, which only the widest kernels feel)."""
    s = np.atleast_1d(np.asarray(sigma_px, dtype=float))
    half = int(np.ceil(8.0 * max(float(s.max()), 1.0))) + 2
    x = np.arange(-half, half + 1, dtype=float)
    k = np.exp(-x[None, :] ** 2 / (2.0 * np.maximum(s[:, None], 1e-9) ** 2))
    return (k * x ** 2).sum(axis=1) / k.sum(axis=1)


def matched_sigma_px(sigma_px):
    """Per entry, the sigma (pixel) whose sampled kernel has variance ``sigma_px**2`` (bisection; the
    sampled variance grows monotonically with sigma). Never below 1e-3 pixel (a delta)."""
    target = np.atleast_1d(np.asarray(sigma_px, dtype=float)) ** 2
    lo, hi = np.full(target.shape, 1e-3), np.maximum(np.sqrt(target), 1e-3) + 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        low = sampled_variance_px2(mid) < target
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    return 0.5 * (lo + hi)


def variance_matched_psfmeta(psf_meta, pixel_cm: float):
    """A ``SPECTPSFMeta`` whose sampled Gaussian has, at every distance, the variance of ``psf_meta``'s sigma(d)."""
    from pytomography.metadata.SPECT import SPECTPSFMeta

    fit, params = psf_meta.sigma_fit, list(psf_meta.sigma_fit_params)

    def sigma_cm(r, *p):
        return matched_sigma_px(np.asarray(fit(np.asarray(r, dtype=float), *p)) / pixel_cm) * pixel_cm

    return SPECTPSFMeta(sigma_fit_params=params, sigma_fit=sigma_cm, min_sigmas=psf_meta.min_sigmas)


def read_psf_table(path: Path):
    """sigma(d) (cm -> cm) interpolated in a JSON table ``{"distance_cm": [...], "sigma_cm": [...]}``, held
    constant beyond its ends: ``dicom_interop.py`` writes her2sim's realised response there."""
    try:
        tab = json.loads(Path(path).read_text())
        d_cm, s_cm = np.asarray(tab["distance_cm"], dtype=float), np.asarray(tab["sigma_cm"], dtype=float)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SystemExit(f"--psf-table {path}: not a JSON object with numeric lists distance_cm and sigma_cm "
                         f"({type(exc).__name__}: {exc})") from None
    if d_cm.size < 2 or d_cm.shape != s_cm.shape or np.any(np.diff(d_cm) <= 0) or np.any(s_cm < 0):
        raise SystemExit(f"--psf-table {path}: needs increasing distance_cm and sigma_cm >= 0 of the same length")

    def sigma_cm(r, *p):
        return np.interp(np.asarray(r, dtype=float), d_cm, s_cm)

    return sigma_cm


def table_psfmeta(path: Path, min_sigmas: float):
    """A ``SPECTPSFMeta`` whose sigma(d) is :func:`read_psf_table` of ``path``."""
    from pytomography.metadata.SPECT import SPECTPSFMeta

    return SPECTPSFMeta(sigma_fit_params=[], sigma_fit=read_psf_table(path), min_sigmas=min_sigmas)


def post_filter(image, spacing_cm, gaussian_fwhm_cm: float = 0.0, butterworth=None):
    """The protocol's post-filter, written here from the textbook transfer functions (not her2sim's code):
    Gaussian ``exp(-2 pi^2 sigma^2 f^2)`` (sigma = FWHM / 2.3548), then Butterworth
    ``1 / sqrt(1 + (f / fc)^(2 n))`` with ``butterworth = (fc cycles/cm, n)``, f the radial spatial frequency
    (cycles/cm), by FFT on the image zero-padded to twice its size; clipped at 0 like a displayed image.
    ``image`` is any 3-D array, ``spacing_cm`` its voxel size per axis (cm)."""
    img = np.asarray(image, dtype=np.float64)
    if not gaussian_fwhm_cm and butterworth is None:
        return img
    shape = tuple(2 * n for n in img.shape)
    freqs = [np.fft.fftfreq(n, d) for n, d in zip(shape[:-1], spacing_cm[:-1])]
    freqs.append(np.fft.rfftfreq(shape[-1], spacing_cm[-1]))
    grids = np.meshgrid(*freqs, indexing="ij", sparse=True)
    f2 = sum(g ** 2 for g in grids)
    h = np.ones_like(f2)
    if gaussian_fwhm_cm:
        sigma = gaussian_fwhm_cm / FWHM_PER_SIGMA
        h = h * np.exp(-2.0 * np.pi ** 2 * sigma ** 2 * f2)
    if butterworth is not None:
        fc, order = float(butterworth[0]), int(butterworth[1])
        h = h / np.sqrt(1.0 + (np.sqrt(f2) / fc) ** (2 * order))
    axes = tuple(range(img.ndim))
    out = np.fft.irfftn(np.fft.rfftn(img, shape, axes=axes) * h, shape, axes=axes)[tuple(slice(0, n) for n in img.shape)]
    return np.maximum(out, 0.0)


def psf_fwhm_table(psf_meta, pixel_cm: float, distances_mm=(0, 50, 100, 150, 200, 300)) -> dict:
    """GI-LEHR FWHM (mm) at distances from the face: the Gaussian, and as PyTomography's sampled kernel realises it."""
    d_cm = np.asarray(distances_mm, dtype=float) / 10.0
    sig_cm = np.asarray(psf_meta.sigma_fit(d_cm, *psf_meta.sigma_fit_params), dtype=float)
    eff_cm = np.sqrt(sampled_variance_px2(sig_cm / pixel_cm)) * pixel_cm
    return {"distance_mm": [float(d) for d in distances_mm],
            "gaussian": [round(float(v) * 10.0 * FWHM_PER_SIGMA, 2) for v in sig_cm],
            "sampled": [round(float(v) * 10.0 * FWHM_PER_SIGMA, 2) for v in eff_cm]}


def subsets_from_angles(text: str, pyt_angles_deg, n_subsets: int) -> list:
    """``"0,36,...;18,54,..."`` (her2sim gantry angles, degrees, one group per subset in visiting order) ->
    PyTomography projection indices. PyTomography sorts the frames by its own angle phi, and her2sim's
    view at angle theta is PyTomography's phi = (360 - theta) mod 360 (the convention the bench's point
    projections check); every projection must be used exactly once."""
    phi = np.asarray(pyt_angles_deg, dtype=float) % 360.0
    groups = []
    for part in (p for p in text.split(";") if p.strip()):
        idx = []
        for theta in (float(v) for v in part.split(",")):
            diff = np.abs((phi - (360.0 - theta) % 360.0 + 180.0) % 360.0 - 180.0)
            k = int(np.argmin(diff))
            if diff[k] > 1e-3:
                raise SystemExit(f"--subset-angles: her2sim angle {theta} deg has no PyTomography projection")
            idx.append(k)
        groups.append(idx)
    flat = sorted(v for g in groups for v in g)
    if len(groups) != n_subsets or flat != list(range(phi.size)):
        raise SystemExit(f"--subset-angles: {len(groups)} subsets; expected {n_subsets} subsets using each of the "
                         f"{phi.size} projections once")
    return groups


def use_subsets(system, groups: list) -> None:
    """Make ``system`` (a PyTomography SPECTSystemMatrix) use the given OSEM subsets (indices of its
    projections, in visiting order) instead of its own (every n-th projection from k, k = 0, 1, ...)."""
    import torch

    tensors = [torch.tensor(sorted(g), dtype=torch.long) for g in groups]

    def set_n_subsets(n):
        if n != len(tensors):
            raise SystemExit(f"--subset-angles gives {len(tensors)} subsets, OSEM asked for {n}")
        system.subset_indices_array = tensors

    system.set_n_subsets = set_n_subsets


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("nm_file", type=Path)
    ap.add_argument("ct_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--subsets", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--support", action="store_true", help="restrict OSEM to the mu map's footprint")
    ap.add_argument("--psf-kernel", choices=("sampled", "variance-matched"), default="sampled",
                    help="GI-LEHR Gaussian as PyTomography samples it, or variance-matched (see above)")
    ap.add_argument("--psf-table", type=Path, default=None,
                    help="JSON {distance_cm, sigma_cm}: use this sigma(d) instead of GI-LEHR's (her2sim's realised "
                         "response, written by dicom_interop.py); combined with --psf-kernel as usual")
    ap.add_argument("--initial-level", choices=("one", "net-counts"), default="one",
                    help="initial object value (on the support): 1 (PyTomography's) or net counts / sum of the "
                         "sensitivity image (her2sim's: the first forward projection has the measured net counts)")
    ap.add_argument("--butterworth", nargs=2, type=float, default=None, metavar=("CUTOFF_CYCLES_PER_CM", "ORDER"),
                    help="post-filter the result (the recon protocol's filter; the unfiltered image is kept too)")
    ap.add_argument("--gaussian-fwhm-mm", type=float, default=0.0, help="Gaussian post-filter before it (mm)")
    ap.add_argument("--subset-angles", default="",
                    help="OSEM subsets as her2sim gantry angles in visiting order, 'a,b,..;c,d,..' "
                         "(default PyTomography's own)")
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
    if args.psf_table is not None:
        psf_meta = table_psfmeta(args.psf_table, psf_meta.min_sigmas)
    psf_table = psf_fwhm_table(psf_meta, object_meta.dx)
    if args.psf_kernel == "variance-matched":
        psf_meta = variance_matched_psfmeta(psf_meta, object_meta.dx)
    system = SPECTSystemMatrix(obj2obj_transforms=[SPECTAttenuationTransform(attenuation_map=mu),
                                                   SPECTPSFTransform(psf_meta)],
                               proj2proj_transforms=[], object_meta=object_meta, proj_meta=proj_meta)
    likelihood = PoissonLogLikelihood(system, photopeak, additive_term=scatter)
    initial = support_mask(mu) if args.support else None
    level = 1.0
    if args.initial_level == "net-counts":  # her2sim's rule: forward(level) has the net counts
        where = initial if initial is not None else torch.ones(tuple(object_meta.shape), dtype=mu.dtype)
        sens = system.compute_normalization_factor().reshape(where.shape) * where
        level = float((photopeak - scatter).clamp(min=0.0).sum() / sens.sum())
        initial = where * level
    if args.subset_angles:
        use_subsets(system, subsets_from_angles(args.subset_angles, proj_meta.angles, args.subsets))
    rec = OSEM(likelihood, object_initial=initial)(n_iters=args.iterations, n_subsets=args.subsets)
    seconds = time.perf_counter() - t0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    raw = rec.cpu().numpy()
    affine = np.asarray(object_meta.affine_matrix, dtype=float)
    filtered = args.butterworth is not None or args.gaussian_fwhm_mm > 0
    if filtered:  # the unfiltered image too, for comparisons of OSEM alone
        (args.out_dir / "unfiltered").mkdir(parents=True, exist_ok=True)
        np.save(args.out_dir / "unfiltered" / "peer_recon_xyz.npy", raw.astype(np.float32))
        (args.out_dir / "unfiltered" / "peer_affine.json").write_text(json.dumps(affine.tolist()))
        raw = post_filter(raw, (object_meta.dx, object_meta.dy, object_meta.dz), args.gaussian_fwhm_mm / 10.0,
                          args.butterworth)
    np.save(args.out_dir / "peer_recon_xyz.npy", raw.astype(np.float32))
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
        "psf_kernel": args.psf_kernel,
        "initial": args.initial_level,
        "initial_level": round(level, 6),
        "psf_sigma": "table " + args.psf_table.name if args.psf_table is not None else "GI-LEHR",
        "psf_fwhm_mm": psf_table,
        "post_filter": {"gaussian_fwhm_mm": args.gaussian_fwhm_mm,
                        "butterworth": None if args.butterworth is None else [args.butterworth[0], int(args.butterworth[1])]},
        "subset_choice": "her2sim" if args.subset_angles else "pytomography",
    }
    print(json.dumps(result))
    return result


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
