"""Volumes of interest (VOIs) and the uptake statistics measured inside them.

A VOI is an array on the image grid (z, y, x): either boolean or a float
partial-volume weight in [0, 1] (fraction of the voxel inside the geometric
shape, computed by supersampling). Functions follow the scikit-image style:
``suv_max(image, mask)``, ``suv_peak(image, spacing_mm, mask)``.

Relation to GE Q.Metrix (used by the seed trial, Zhao et al. 2024) and to
PERCIST (Wahl et al., J Nucl Med 50:122S, 2009):

* :func:`suv_max` - hottest single voxel in the VOI; same as Q.Metrix "SUVmax".
* :func:`suv_mean` - mean over the VOI voxels; Q.Metrix "SUVmean" averages the
  voxels of a drawn (often threshold-defined) VOI. With a fractional mask the
  mean is weighted by the partial-volume weights.
* :func:`suv_peak` - highest mean in a 1 cm^3 sphere (diameter 12.4 mm)
  placed anywhere whose centre lies inside the VOI (PERCIST 1.0). Sub-voxel
  weights make the sphere exactly 1 mL on any voxel size.
* :func:`threshold_voi` - fixed-value or %-of-max isocontour inside a search
  region (41 % / 50 % of max are common Q.Metrix / EANM choices).
* :func:`voi_volume_ml` and :func:`total_lesion_uptake` - metabolic-volume and
  TLG-like products (SUVmean x volume, in mL).
* :func:`measure_lesions` - all of the above per lesion of a label map, with a
  search VOI dilated by a margin in mm (a VOI drawn around the lesion).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from her2sim.core.errors import ConfigError, DataError, check_int, check_range, check_zyx
from her2sim.core.grid import Grid

#: PERCIST SUVpeak sphere: 1 cm^3, diameter (6 / pi)^(1/3) cm = 12.41 mm (Wahl 2009).
SUVPEAK_DIAMETER_MM = 2.0 * (3.0 / (4.0 * np.pi)) ** (1.0 / 3.0) * 10.0


# ----------------------------------------------------------------------------- helpers
def _spacing(grid_or_spacing) -> tuple:
    if isinstance(grid_or_spacing, Grid):
        return tuple(grid_or_spacing.spacing_mm)
    sp = np.atleast_1d(np.asarray(grid_or_spacing, dtype=float))
    if sp.size == 1:
        sp = np.repeat(sp, 3)
    if sp.size != 3:
        raise ConfigError(f"spacing_mm = {tuple(sp)} must be a scalar or 3 values (z, y, x) in mm")
    return tuple(check_range(f"spacing_mm[{i}]", s, 0.0, 1000.0, lo_open=True) for i, s in enumerate(sp))


def _check_pair(image, mask) -> tuple[np.ndarray, np.ndarray]:
    img = np.asarray(image)
    m = np.asarray(mask)
    if img.ndim != 3:
        raise DataError(f"image must be 3-D (z, y, x), got shape {img.shape}")
    if m.shape != img.shape:
        raise DataError(f"mask shape {m.shape} does not match image shape {img.shape} (z, y, x)")
    if m.dtype != bool:
        m = m.astype(np.float64)
        if np.any(~np.isfinite(m)) or np.any(m < 0) or np.any(m > 1 + 1e-9):
            raise DataError("mask weights must lie in [0, 1]")
    if not np.any(m):
        raise DataError("VOI is empty: the mask has no voxel with a non-zero weight")
    return img, m


def mask_to_bool(mask, min_weight: float = 0.5) -> np.ndarray:
    """Binary version of a VOI: voxels with weight >= ``min_weight`` (bool masks pass through).

    With the default 0.5 a supersampled sphere keeps the voxels whose centre is
    (about) inside the sphere.
    """
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    check_range("min_weight", min_weight, 0.0, 1.0, lo_open=True)
    return m >= min_weight


# ----------------------------------------------------------------------------- geometric VOIs
def ellipsoid_mask(grid: Grid, center_mm, semi_axes_mm, supersample: int = 5) -> np.ndarray:
    """Partial-volume weights of an axis-aligned ellipsoid on ``grid``.

    Parameters
    ----------
    grid : Grid
        Image geometry (world LPS mm).
    center_mm : sequence of 3 float
        Ellipsoid centre, world (z, y, x) in mm.
    semi_axes_mm : float or sequence of 3 float
        Semi-axes (z, y, x) in mm.
    supersample : int
        Sub-samples per voxel edge for boundary voxels (1-16); fully inside /
        outside voxels are classified exactly without sampling.

    Returns
    -------
    numpy.ndarray
        float32 (z, y, x) fraction of each voxel inside the ellipsoid.

    Raises
    ------
    DataError
        When the ellipsoid does not overlap the image.
    """
    if not isinstance(grid, Grid):
        raise ConfigError(f"grid must be a her2sim Grid, got {type(grid).__name__}")
    n = check_int("supersample", supersample, 1, 16)
    c = np.asarray(center_mm, dtype=float).reshape(-1)
    if c.size != 3 or not np.all(np.isfinite(c)):
        raise ConfigError(f"center_mm = {tuple(c)} must be 3 finite values (z, y, x) in mm")
    ax = check_zyx("semi_axes_mm", semi_axes_mm, 0.0, 1e5, lo_open=True)
    sp = np.asarray(grid.spacing_mm)
    shape = np.asarray(grid.shape)
    ci = grid.world_to_index(c)
    lo = np.floor(ci - ax / sp - 0.5).astype(int)
    hi = np.ceil(ci + ax / sp + 0.5).astype(int) + 1
    lo_c = np.clip(lo, 0, shape)
    hi_c = np.clip(hi, 0, shape)
    out = np.zeros(grid.shape, dtype=np.float32)
    if np.any(hi_c <= lo_c):
        raise DataError(f"VOI centred at {tuple(np.round(c, 2))} mm with semi-axes {tuple(ax)} mm lies outside "
                        f"the image (extent {grid.lower_corner_mm} + {grid.extent_mm} mm)")
    # scaled coordinates of voxel centres in the bounding box
    axes = [(grid.origin_mm[i] + sp[i] * np.arange(lo_c[i], hi_c[i]) - c[i]) / ax[i] for i in range(3)]
    half = sp / (2.0 * ax)
    far = [(np.abs(a) + h) ** 2 for a, h in zip(axes, half)]
    near = [np.maximum(np.abs(a) - h, 0.0) ** 2 for a, h in zip(axes, half)]
    far_sum = far[0][:, None, None] + far[1][None, :, None] + far[2][None, None, :]
    near_sum = near[0][:, None, None] + near[1][None, :, None] + near[2][None, None, :]
    box = np.zeros(far_sum.shape, dtype=np.float32)
    box[far_sum <= 1.0] = 1.0
    edge = (far_sum > 1.0) & (near_sum < 1.0)
    if np.any(edge):
        offs = (np.arange(n) + 0.5) / n - 0.5  # sub-voxel offsets in voxel units
        iz, iy, ix = np.nonzero(edge)
        frac = np.empty(iz.size, dtype=np.float32)
        chunk = max(1, 2_000_000 // n ** 3)  # bound the temporary (chunk x n^3) array
        for a in range(0, iz.size, chunk):
            b = a + chunk
            uz = axes[0][iz[a:b]][:, None] + (offs * sp[0] / ax[0])[None, :]
            uy = axes[1][iy[a:b]][:, None] + (offs * sp[1] / ax[1])[None, :]
            ux = axes[2][ix[a:b]][:, None] + (offs * sp[2] / ax[2])[None, :]
            r2 = (uz[:, :, None, None] ** 2 + uy[:, None, :, None] ** 2 + ux[:, None, None, :] ** 2)
            frac[a:b] = np.mean(r2 <= 1.0, axis=(1, 2, 3))
        box[edge] = frac
    out[lo_c[0]:hi_c[0], lo_c[1]:hi_c[1], lo_c[2]:hi_c[2]] = box
    if not np.any(out > 0):
        raise DataError(f"VOI centred at {tuple(np.round(c, 2))} mm with semi-axes {tuple(ax)} mm lies outside "
                        f"the image")
    return out


def sphere_mask(grid: Grid, center_mm, diameter_mm: float, supersample: int = 5) -> np.ndarray:
    """Partial-volume weights of a sphere of ``diameter_mm`` centred at world ``center_mm`` (z, y, x).

    See :func:`ellipsoid_mask`.
    """
    d = check_range("diameter_mm", diameter_mm, 0.0, 1e5, lo_open=True)
    return ellipsoid_mask(grid, center_mm, d / 2.0, supersample)


def label_mask(labels, label) -> np.ndarray:
    """Boolean VOI of the voxels whose label equals ``label`` (or is in a list of labels).

    Raises
    ------
    DataError
        If no voxel carries the label.
    """
    lab = np.asarray(labels)
    wanted = np.atleast_1d(label)
    m = np.isin(lab, wanted)
    if not np.any(m):
        present = np.unique(lab)
        raise DataError(f"label = {label!r} does not occur in the label map; present labels {present[:20].tolist()}")
    return m


def threshold_voi(image, search_mask, *, fraction_of_max: float | None = None, value: float | None = None,
                  connected: bool = True) -> np.ndarray:
    """Isocontour VOI inside a search region.

    Exactly one of ``fraction_of_max`` (e.g. 0.41 or 0.50 of the search-region
    maximum, the usual Q.Metrix / EANM choices) or ``value`` (fixed level in the
    image's units, e.g. SUV 1.5) must be given.

    Parameters
    ----------
    image : array (z, y, x)
    search_mask : array (z, y, x)
        Bool or weights; voxels with weight >= 0.5 are searched.
    fraction_of_max : float, optional
        In (0, 1].
    value : float, optional
        Absolute threshold.
    connected : bool
        Keep only the 26-connected component that contains the hottest voxel.

    Returns
    -------
    numpy.ndarray
        bool VOI.
    """
    img, m = _check_pair(image, search_mask)
    search = mask_to_bool(m)
    if not np.any(search):
        raise DataError("search_mask has no voxel with weight >= 0.5")
    if (fraction_of_max is None) == (value is None):
        raise ConfigError("threshold_voi needs exactly one of fraction_of_max (0-1] or value")
    vals = np.where(search, img, -np.inf)
    vmax = float(np.max(vals))
    if fraction_of_max is not None:
        f = check_range("fraction_of_max", fraction_of_max, 0.0, 1.0, lo_open=True)
        level = f * vmax
    else:
        level = check_range("value", value, None, None)
    voi = search & (img >= level)
    if not np.any(voi):
        raise DataError(f"threshold_voi: no voxel of the search region reaches {level:.6g} "
                        f"(search-region maximum {vmax:.6g})")
    if connected:
        lab, _ = ndimage.label(voi, structure=np.ones((3, 3, 3), bool))
        peak = np.unravel_index(int(np.argmax(vals)), img.shape)
        voi = lab == lab[peak]
    return voi


# ----------------------------------------------------------------------------- statistics
def suv_max(image, mask) -> float:
    """Maximum voxel value inside the VOI (voxels with weight >= 0.5); Q.Metrix SUVmax."""
    img, m = _check_pair(image, mask)
    b = mask_to_bool(m)
    if not np.any(b):
        raise DataError("VOI is empty: no voxel has a weight >= 0.5")
    return float(np.max(img[b]))


def suv_mean(image, mask) -> float:
    """Mean value in the VOI, weighted by the partial-volume weights (plain mean for bool masks)."""
    img, m = _check_pair(image, mask)
    w = m.astype(np.float64)
    return float(np.sum(w * img, dtype=np.float64) / np.sum(w))


def _sphere_kernel(spacing_mm, diameter_mm: float, offset_vox=(0.0, 0.0, 0.0), supersample: int = 7) -> np.ndarray:
    """Normalised partial-volume kernel of a sphere (sum = 1), centre shifted by ``offset_vox``."""
    sp = np.asarray(spacing_mm, dtype=float)
    half = np.ceil(diameter_mm / 2.0 / sp + 1).astype(int)
    shape = tuple(2 * half + 1)
    g = Grid(shape, tuple(sp), tuple(-half * sp))
    k = ellipsoid_mask(g, np.asarray(offset_vox) * sp, diameter_mm / 2.0, supersample).astype(np.float64)
    return k / k.sum()


def suv_peak(image, grid_or_spacing, mask, *, diameter_mm: float = SUVPEAK_DIAMETER_MM,
             subvoxel_steps: int = 1) -> float:
    """PERCIST SUVpeak: highest mean in a 1 cm^3 sphere whose centre lies in the VOI.

    The sphere (diameter 12.4 mm, PERCIST 1.0, Wahl 2009) is a partial-volume
    weighted kernel, so its volume is 1 mL on any voxel size. Candidate centres
    are the voxel centres of the VOI (weight >= 0.5); with ``subvoxel_steps = n > 1``
    the centre is also shifted by fractions ``k/n`` of a voxel along each axis.
    The sphere may extend beyond the VOI (PERCIST places it in the hottest part
    of the tumour; Q.Metrix does the same). Outside the image counts as 0.

    Parameters
    ----------
    image : array (z, y, x)
    grid_or_spacing : Grid or float or (dz, dy, dx) mm
    mask : array (z, y, x)
    diameter_mm : float
        Sphere diameter (default 12.407 mm = 1 mL).
    subvoxel_steps : int
        1-4 sub-voxel positions per axis.

    Returns
    -------
    float
    """
    img, m = _check_pair(image, mask)
    sp = _spacing(grid_or_spacing)
    d = check_range("diameter_mm", diameter_mm, 0.0, 1000.0, lo_open=True)
    n = check_int("subvoxel_steps", subvoxel_steps, 1, 4)
    centres = mask_to_bool(m)
    if not np.any(centres):
        raise DataError("VOI is empty: no voxel has a weight >= 0.5")
    img64 = img.astype(np.float64)
    # restrict the work to the VOI bounding box plus the kernel half-width
    idx = np.nonzero(centres)
    pad = np.ceil(d / 2.0 / np.asarray(sp) + 2).astype(int)
    lo = [max(int(i.min()) - p, 0) for i, p in zip(idx, pad)]
    hi = [min(int(i.max()) + p + 1, s) for i, p, s in zip(idx, pad, img.shape)]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    sub = img64[sl]
    csub = centres[sl]
    best = -np.inf
    steps = [(k / n) for k in range(n)] if n > 1 else [0.0]
    for oz in steps:
        for oy in steps:
            for ox in steps:
                k = _sphere_kernel(sp, d, (oz, oy, ox))
                mean = ndimage.correlate(sub, k, mode="constant", cval=0.0)
                best = max(best, float(np.max(mean[csub])))
    return best


def voi_volume_ml(mask, grid_or_spacing) -> float:
    """Volume of the VOI in mL (sum of weights x voxel volume)."""
    m = np.asarray(mask)
    if not np.any(m):
        raise DataError("VOI is empty: the mask has no voxel with a non-zero weight")
    sp = _spacing(grid_or_spacing)
    return float(np.sum(m, dtype=np.float64) * np.prod(sp) / 1000.0)


def total_lesion_uptake(image, mask, grid_or_spacing) -> float:
    """Total lesion uptake TLU = SUVmean x VOI volume (SUV mL), the analogue of FDG TLG."""
    return suv_mean(image, mask) * voi_volume_ml(mask, grid_or_spacing)


def voi_statistics(image, mask, grid_or_spacing, *, peak: bool = True) -> dict:
    """All VOI statistics at once: max, mean, peak, volume_ml, tlu, n_voxels."""
    img, m = _check_pair(image, mask)
    out = {"max": suv_max(img, m), "mean": suv_mean(img, m), "volume_ml": voi_volume_ml(m, grid_or_spacing),
           "n_voxels": int(np.count_nonzero(mask_to_bool(m)))}
    out["tlu"] = out["mean"] * out["volume_ml"]
    if peak:
        out["peak"] = suv_peak(img, grid_or_spacing, m)
    return out


def dilate_mask_mm(mask, grid_or_spacing, margin_mm: float) -> np.ndarray:
    """Boolean dilation of a VOI by ``margin_mm`` (Euclidean distance in mm, anisotropic voxels handled)."""
    b = mask_to_bool(np.asarray(mask))
    if not np.any(b):
        raise DataError("VOI is empty: nothing to dilate")
    mg = check_range("margin_mm", margin_mm, 0.0, 1000.0)
    if mg == 0:
        return b.copy()
    dist = ndimage.distance_transform_edt(~b, sampling=_spacing(grid_or_spacing))
    return dist <= mg


def measure_lesions(image, grid_or_spacing, lesion_labels, *, lesion_ids=None, margin_mm: float = 0.0,
                    iso_fraction: float = 0.41, peak: bool = True) -> list:
    """Per-lesion uptake figures from a lesion label map (0 = no lesion).

    For each lesion id: the search VOI is the lesion's voxels dilated by
    ``margin_mm`` (a drawn VOI around the lesion, as in Q.Metrix). Reported:

    * ``suvmax`` - maximum in the search VOI;
    * ``suvmean`` - mean over the lesion's own voxels (true extent);
    * ``suvmean_iso`` / ``volume_iso_ml`` - mean and volume of the connected
      ``iso_fraction`` x max isocontour inside the search VOI (41 % by default);
    * ``suvpeak`` - PERCIST peak with the sphere centre in the search VOI;
    * ``volume_ml`` - volume of the lesion's voxels.

    Values are in the image's units (SUV for an SUV image, Bq/mL otherwise).

    Returns
    -------
    list of dict
        One row per lesion (``lesion_id`` first).
    """
    img = np.asarray(image)
    lab = np.asarray(lesion_labels)
    if lab.shape != img.shape:
        raise DataError(f"lesion_labels shape {lab.shape} does not match image shape {img.shape} (z, y, x)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"lesion_labels must be an integer label map, got dtype {lab.dtype}")
    ids = [int(i) for i in np.unique(lab) if i != 0] if lesion_ids is None else [int(i) for i in lesion_ids]
    if not ids:
        raise DataError("lesion_labels contain no lesion (all voxels are 0)")
    rows = []
    for i in ids:
        own = label_mask(lab, i)
        search = dilate_mask_mm(own, grid_or_spacing, margin_mm)
        iso = threshold_voi(img, search, fraction_of_max=iso_fraction)
        row = {"lesion_id": i, "suvmax": suv_max(img, search), "suvmean": suv_mean(img, own),
               "suvmean_iso": suv_mean(img, iso), "volume_iso_ml": voi_volume_ml(iso, grid_or_spacing),
               "volume_ml": voi_volume_ml(own, grid_or_spacing)}
        if peak:
            row["suvpeak"] = suv_peak(img, grid_or_spacing, search)
        rows.append(row)
    return rows
