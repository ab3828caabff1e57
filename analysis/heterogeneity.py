"""First-order heterogeneity of uptake inside a VOI.

The seed trial (Zhao et al. 2024) reports uneven uptake within single lesions
in 9 of 30 patients. These first-order (histogram) metrics quantify it: the
coefficient of variation, skewness, kurtosis and the fraction of the VOI above a
level (e.g. SUV 1.5). Moments are weighted by the VOI's partial-volume weights
(equal weights for a boolean mask), so a supersampled sphere VOI counts its
boundary voxels by the fraction inside.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import DataError, check_range

from .voi import _check_pair


def _weighted(image, mask):
    img, m = _check_pair(image, mask)
    w = m.astype(np.float64)
    sel = w > 0
    return img[sel].astype(np.float64), w[sel]


def _moments(image, mask):
    v, w = _weighted(image, mask)
    mean = np.sum(w * v) / np.sum(w)
    d = v - mean
    m2 = np.sum(w * d ** 2) / np.sum(w)
    m3 = np.sum(w * d ** 3) / np.sum(w)
    m4 = np.sum(w * d ** 4) / np.sum(w)
    return mean, m2, m3, m4


def coefficient_of_variation(image, mask) -> float:
    """CV = SD / mean inside the VOI (population SD, weighted).

    Raises
    ------
    DataError
        When the VOI mean is 0 (CV undefined).
    """
    mean, m2, _, _ = _moments(image, mask)
    if mean == 0:
        raise DataError("coefficient_of_variation is undefined: the VOI mean is 0")
    return float(np.sqrt(m2) / abs(mean))


def skewness(image, mask) -> float:
    """Population skewness m3 / m2^1.5 in the VOI (0 for a symmetric histogram).

    Raises
    ------
    DataError
        When the VOI is uniform (variance 0, skewness undefined).
    """
    _, m2, m3, _ = _moments(image, mask)
    if m2 <= 0:
        raise DataError("skewness is undefined: the VOI values have zero variance")
    return float(m3 / m2 ** 1.5)


def kurtosis(image, mask, *, excess: bool = True) -> float:
    """Population kurtosis m4 / m2^2 in the VOI; minus 3 (Fisher, 0 for a Gaussian) when ``excess``.

    Raises
    ------
    DataError
        When the VOI is uniform (variance 0).
    """
    _, m2, _, m4 = _moments(image, mask)
    if m2 <= 0:
        raise DataError("kurtosis is undefined: the VOI values have zero variance")
    k = m4 / m2 ** 2
    return float(k - 3.0 if excess else k)


def fraction_above(image, mask, threshold: float) -> float:
    """Weighted fraction of the VOI whose value is >= ``threshold`` (same units as the image)."""
    t = check_range("threshold", threshold, None, None)
    v, w = _weighted(image, mask)
    return float(np.sum(w[v >= t]) / np.sum(w))


def heterogeneity_metrics(image, mask, threshold: float = 1.5) -> dict:
    """CV, skewness, excess kurtosis and fraction above ``threshold``; undefined metrics are ``None``."""
    out = {"fraction_above": fraction_above(image, mask, threshold), "threshold": float(threshold)}
    for name, fn in (("cv", coefficient_of_variation), ("skewness", skewness), ("kurtosis", kurtosis)):
        try:
            out[name] = fn(image, mask)
        except DataError:
            out[name] = None
    return out
