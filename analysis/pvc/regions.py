"""Label-map helpers shared by the PVC methods: input checks, regional means, piecewise-constant images.

Region inputs are integer label maps (z, y, x); each distinct label is a region
(label 0 included unless listed in ``ignore_labels``), so the background must be
part of the label map for GTM/RBV/IY to be exact. (The region models with
fractional lesion templates and the reconstruction's own response live in
:mod:`her2sim.analysis.pvc_regions`.)
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import ConfigError, DataError


def check_regions(image, labels, ignore_labels=(), *, method: str | None = None) -> tuple[np.ndarray, np.ndarray, list]:
    """Check an image and its label map; return them and the region labels used.

    Parameters
    ----------
    image : array (z, y, x)
        Finite values (image units).
    labels : int array (z, y, x)
        Region label map, same shape as ``image``.
    ignore_labels : iterable of int
        Labels left out of the returned region list.
    method : str, optional
        Name of the calling PVC method, for the error when ``labels`` is None.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, list of int)
        The image as float64, the label map, and the region labels (sorted, ``ignore_labels`` removed).
    """
    if labels is None:
        raise ConfigError(f"pvc method = {method!r} needs a region label map (labels)")
    img = np.asarray(image, dtype=np.float64)
    lab = np.asarray(labels)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    if lab.shape != img.shape:
        raise DataError(f"labels shape {lab.shape} does not match image shape {img.shape} (z, y, x)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"labels must be an integer label map, got dtype {lab.dtype}")
    if not np.all(np.isfinite(img)):
        raise DataError("image contains NaN or infinite values")
    ids = [int(v) for v in np.unique(lab) if int(v) not in set(ignore_labels)]
    if len(ids) == 0:
        raise DataError("labels contain no region after removing ignore_labels")
    return img, lab, ids


def region_index(lab: np.ndarray, ids) -> np.ndarray:
    """Flat index 0..n-1 of each voxel's region in ``ids`` (n for voxels of other labels)."""
    ids_arr = np.asarray(ids)
    order = np.argsort(ids_arr)
    sorted_ids = ids_arr[order]
    flat = lab.ravel()
    pos = np.clip(np.searchsorted(sorted_ids, flat), 0, len(ids_arr) - 1)
    hit = sorted_ids[pos] == flat
    out = np.full(flat.shape, len(ids_arr), dtype=np.int64)
    out[hit] = order[pos[hit]]
    return out


def regional_means(image, labels, ids=None) -> dict:
    """Plain mean of ``image`` in each labelled region.

    Parameters
    ----------
    image : array (z, y, x)
        Image units (Bq/mL, SUV).
    labels : int array (z, y, x)
        Region label map.
    ids : iterable of int, optional
        Regions to report (default: every label present).

    Returns
    -------
    dict
        label -> mean (image units).
    """
    img = np.asarray(image, dtype=np.float64)
    lab = np.asarray(labels)
    if lab.shape != img.shape:
        raise DataError(f"labels shape {lab.shape} does not match image shape {img.shape} (z, y, x)")
    if ids is None:
        ids = [int(v) for v in np.unique(lab)]
    n = len(ids)
    index = region_index(lab, ids)
    sizes = np.bincount(index, minlength=n + 1)[:n]
    if np.any(sizes == 0):
        raise DataError(f"region label(s) {[i for i, c in zip(ids, sizes) if c == 0]} are empty")
    sums = np.bincount(index, weights=img.ravel(), minlength=n + 1)[:n]
    return {int(i): float(v) for i, v in zip(ids, sums / sizes)}


def piecewise_image(lab, means: dict) -> np.ndarray:
    """Image (z, y, x) holding ``means[label]`` in each region of ``means`` and 0 in other labels (float64)."""
    ids = list(means)
    lut = np.r_[np.array([means[i] for i in ids], dtype=np.float64), 0.0]
    return lut[region_index(lab, ids)].reshape(lab.shape)


def safe_ratio(num, den, floor: float) -> np.ndarray:
    """``num / den`` where ``|den| > floor``, 0 elsewhere (same shape as ``num``)."""
    out = np.zeros_like(num)
    ok = np.abs(den) > floor
    out[ok] = num[ok] / den[ok]
    return out
