"""Lesion truth and lesion VOIs on the image (reconstruction) grid.

The phantom keeps, for every lesion, its partial-volume *fraction* per voxel and its *own* share of the
SUV (fraction x the lesion's own uptake, no surrounding tissue), on the phantom grid. This module puts
both on the grid of a reconstructed image with the conservative :func:`her2sim.core.grid.resample`
(activity and volume kept when coarsening), and from them builds:

* the lesion VOI on the image grid: voxels at least half filled by the lesion (the single fullest
  voxel for a lesion smaller than that);
* the three truths a lesion row quotes (see the README's "Truth you can quote"):

  - ``true_suv_intrinsic``: the lesion's own uptake, fraction-weighted (no partial volume, no neighbour);
  - ``true_suvmean_pv``: mean over the lesion VOI of the lesion's own SUV on the image grid - what a
    perfect camera would read with this voxel size if nothing else were radioactive;
  - ``true_suvmax_pv``: the maximum of the same map inside the VOI;

* the reason a lesion cannot be measured (:data:`UNMEASURED_REASONS`).

It works on arrays, grids and the phantom's truth rows (plain dicts); no simulator code is imported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from her2sim.core.errors import ConfigError, DataError, check_range
from her2sim.core.grid import Grid, resample

#: why a lesion of the truth has no measurement
UNMEASURED_REASONS = ("outside_phantom", "outside_camera_fov", "below_n_voxels", "not_visible_on_ct")
#: labels a VOI margin may extend into: tissue with background uptake. Every other labelled structure
#: (liver, kidney, spleen, marrow and bone, heart wall and blood pool, aorta, vena cava, stomach, thyroid,
#: glands, lungs, brain ...) is another organ whose uptake must not enter a lesion's VOI.
MARGIN_TISSUES = ("fat", "muscle", "soft_tissue", "skin", "breast_adipose", "breast_gland", "mesentery",
                  "lesion", "inflammation")
#: labels the phantom paints over a lesion's (or an inflammation's) own voxels
LESION_LABEL_NAMES = ("lesion", "inflammation")
#: fraction of the lesion's volume that must lie on the image grid to be measured
MIN_VOLUME_ON_GRID = 0.5


@dataclass
class LesionOnGrid:
    """One lesion of the truth on the image grid.

    Attributes
    ----------
    id : int
        Lesion id (phantom ``lesion_ids`` / truth ``id``).
    fraction : numpy.ndarray or None
        Partial-volume fraction (z, y, x), 0-1, of each image voxel occupied by this lesion.
    own_suv : numpy.ndarray or None
        The lesion's own SUV (time, z, y, x) on the image grid (fraction x own uptake).
    voi : numpy.ndarray or None
        bool (z, y, x): the lesion VOI (fraction >= 0.5, or the fullest voxel).
    volume_ml : float
        Lesion volume on the image grid (sum of fractions x voxel volume, mL).
    reason : str or None
        One of :data:`UNMEASURED_REASONS` when the lesion cannot be measured, else None.
    """

    id: int
    fraction: np.ndarray | None
    own_suv: np.ndarray | None
    voi: np.ndarray | None
    volume_ml: float
    reason: str | None = None

    def true_pv(self, time_index: int) -> tuple:
        """(``true_suvmean_pv``, ``true_suvmax_pv``) at a time index; (None, None) when unmeasured."""
        if self.voi is None or self.own_suv is None or not self.voi.any():
            return None, None
        own = self.own_suv[time_index][self.voi]
        return float(own.mean(dtype=np.float64)), float(own.max())


def _box(mask: np.ndarray):
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        return None
    return tuple(slice(int(a.min()), int(a.max()) + 1) for a in idx)


def _sub_grid(grid: Grid, box) -> Grid:
    origin = tuple(o + s.start * d for o, s, d in zip(grid.origin_mm, box, grid.spacing_mm))
    return Grid(tuple(s.stop - s.start for s in box), grid.spacing_mm, origin)


def _dst_box(src: Grid, box, dst: Grid):
    """Slices of ``dst`` covering the world extent of ``box`` on ``src`` (plus one voxel), or None if disjoint."""
    out = []
    for a in range(3):
        lo = src.origin_mm[a] + (box[a].start - 0.5) * src.spacing_mm[a]
        hi = src.origin_mm[a] + (box[a].stop - 0.5) * src.spacing_mm[a]
        i0 = int(np.floor((lo - dst.origin_mm[a]) / dst.spacing_mm[a] + 0.5)) - 1
        i1 = int(np.ceil((hi - dst.origin_mm[a]) / dst.spacing_mm[a] - 0.5)) + 2
        i0, i1 = max(i0, 0), min(i1, dst.shape[a])
        if i1 <= i0:
            return None
        out.append(slice(i0, i1))
    return tuple(out)


def lesions_on_grid(grid: Grid, phantom_grid: Grid, lesion_fraction, lesion_owner, lesion_own_suv, truth: list, *,
                    min_voxels: float = 1.0, exclude_types=("inflammation",)) -> dict:
    """Put every lesion of ``truth`` on ``grid``; returns ``{id: LesionOnGrid}`` (excluded types left out).

    Parameters
    ----------
    grid : Grid
        The image grid.
    phantom_grid : Grid
        The grid of the three phantom arrays.
    lesion_fraction : array (z, y, x)
        Lesion partial-volume fraction on the phantom grid (``Phantom.lesion_fraction``).
    lesion_owner : int array (z, y, x)
        Lesion id per phantom voxel (``Phantom.lesion_owner``).
    lesion_own_suv : array (time, z, y, x)
        The lesions' own SUV on the phantom grid (``Phantom.lesion_own_suv``).
    truth : list of dict
        Truth rows (``id``, ``type``, ``in_fov``).
    min_voxels : float
        A lesion whose volume is below ``min_voxels`` image voxels is ``below_n_voxels`` (0.1-1000).
    """
    mv = check_range("min_voxels", min_voxels, 0.1, 1000.0)
    frac = np.asarray(lesion_fraction, dtype=np.float32)
    owner = np.asarray(lesion_owner)
    own = np.asarray(lesion_own_suv, dtype=np.float32)
    phantom_grid.check_array("lesion_fraction", frac)
    phantom_grid.check_array("lesion_owner", owner)
    phantom_grid.check_array("lesion_own_suv", own)
    vox_src, vox_dst = phantom_grid.voxel_volume_ml, grid.voxel_volume_ml
    out = {}
    for t in truth:
        if t.get("type") in exclude_types:
            continue
        lid = int(t["id"])
        mine = owner == lid
        box = _box(mine & (frac > 0))
        if box is None or not t.get("in_fov", True):
            out[lid] = LesionOnGrid(lid, None, None, None, 0.0, "outside_phantom")
            continue
        f_src = np.where(mine[box], frac[box], 0.0).astype(np.float32)
        vol_src = float(f_src.sum(dtype=np.float64)) * vox_src
        dbox = _dst_box(phantom_grid, box, grid)
        if dbox is None:
            out[lid] = LesionOnGrid(lid, None, None, None, 0.0, "outside_camera_fov")
            continue
        sg, dg = _sub_grid(phantom_grid, box), _sub_grid(grid, dbox)
        f = np.zeros(grid.shape, np.float32)
        f[dbox] = np.clip(resample(f_src, sg, dg, order=1), 0.0, 1.0)
        own_dst = np.zeros((own.shape[0],) + grid.shape, np.float32)
        for k in range(own.shape[0]):
            own_dst[k][dbox] = np.maximum(resample(np.where(mine[box], own[k][box], 0.0).astype(np.float32),
                                                   sg, dg, order=1), 0.0)
        vol = float(f.sum(dtype=np.float64)) * vox_dst
        if vol < MIN_VOLUME_ON_GRID * vol_src or vol <= 0:
            out[lid] = LesionOnGrid(lid, f, own_dst, None, vol, "outside_camera_fov")
            continue
        voi = f >= 0.5
        if not voi.any():
            voi = np.zeros(grid.shape, bool)
            voi[np.unravel_index(int(np.argmax(f)), grid.shape)] = True
        reason = "below_n_voxels" if vol < mv * vox_dst else None
        out[lid] = LesionOnGrid(lid, f, own_dst, voi, vol, reason)
    return out


# ----------------------------------------------------------------------------- organ labels for VOIs and PVC
def host_labels(labels, label_names: dict) -> np.ndarray:
    """Organ labels with every lesion/inflammation voxel given the label of the nearest other tissue.

    The phantom paints a lesion's own voxels ``lesion``; a lesion's host organ (breast gland, liver,
    marrow ...) is what lies around it.
    """
    lab = np.asarray(labels)
    ids = [int(k) for k, v in label_names.items() if v in LESION_LABEL_NAMES]
    les = np.isin(lab, ids)
    if not les.any():
        return lab.copy()
    if les.all():
        raise DataError("labels: every voxel is a lesion; no host tissue to assign")
    _, idx = ndimage.distance_transform_edt(les, return_indices=True)
    out = lab.copy()
    out[les] = lab[tuple(i[les] for i in idx)]
    return out


def margin_allowed(labels, label_names: dict, tissues=MARGIN_TISSUES) -> np.ndarray:
    """bool (z, y, x): voxels a lesion VOI's margin may include (background tissues, see :data:`MARGIN_TISSUES`)."""
    unknown = [t for t in tissues if t not in set(label_names.values())]
    if len(unknown) == len(tuple(tissues)):
        raise ConfigError(f"margin tissues {list(tissues)}: none is among the label names "
                          f"{sorted(set(label_names.values()))}")
    ids = [int(k) for k, v in label_names.items() if v in set(tissues)]
    return np.isin(np.asarray(labels), ids)


def search_region(voi, spacing_mm, margin_mm: float, allowed, other_lesions=None) -> np.ndarray:
    """The lesion VOI grown by ``margin_mm`` into ``allowed`` voxels only, never into another lesion.

    Parameters
    ----------
    voi : bool array (z, y, x)
        The lesion VOI (always part of the result).
    spacing_mm : (z, y, x) mm
    margin_mm : float
        Growth distance (mm, 0-100).
    allowed : bool array (z, y, x)
        Voxels the margin may enter (:func:`margin_allowed`).
    other_lesions : bool array (z, y, x), optional
        VOIs of the other lesions.
    """
    m = check_range("margin_mm", margin_mm, 0.0, 100.0)
    v = np.asarray(voi, bool)
    if m == 0 or not v.any():
        return v.copy()
    box = _box(v)
    pad = [int(np.ceil(m / d)) + 1 for d in spacing_mm]
    big = tuple(slice(max(s.start - p, 0), min(s.stop + p, n)) for s, p, n in zip(box, pad, v.shape))
    dist = ndimage.distance_transform_edt(~v[big], sampling=spacing_mm)
    grown = np.zeros_like(v)
    grown[big] = dist <= m
    ok = np.asarray(allowed, bool)
    if other_lesions is not None:
        ok = ok & ~np.asarray(other_lesions, bool)
    return v | (grown & ok)


def ct_voi(ct_hu, voi, search, *, min_contrast_hu: float = 20.0):
    """CT-defined lesion VOI: the connected CT region around the lesion, as drawn on the CT.

    The level is half-way between the median HU inside the lesion VOI and the median HU of the ring
    of ``search`` voxels around it; voxels of ``search`` on the lesion's side of that level, connected to
    the lesion's centre voxel, form the VOI.

    Returns
    -------
    numpy.ndarray or None
        bool VOI, or None when the lesion is not visible on CT (contrast below ``min_contrast_hu``).
    """
    hu = np.asarray(ct_hu, dtype=np.float64)
    v = np.asarray(voi, bool)
    s = np.asarray(search, bool) | v
    ring = ndimage.binary_dilation(v, iterations=2) & ~v
    if not ring.any() or not v.any():
        return None
    inner, outer = float(np.median(hu[v])), float(np.median(hu[ring]))
    if abs(inner - outer) < check_range("min_contrast_hu", min_contrast_hu, 0.0, 2000.0):
        return None
    level = 0.5 * (inner + outer)
    cand = s & ((hu >= level) if inner > outer else (hu <= level))
    lab, _ = ndimage.label(cand, structure=np.ones((3, 3, 3), bool))
    core = lab[v & cand]
    if core.size == 0:
        return None
    keep = np.bincount(core[core > 0]).argmax() if np.any(core > 0) else 0
    return (lab == keep) if keep > 0 else None
