"""Spatial heterogeneity of tracer uptake: random fields and intratumoral patterns.

Random fields
-------------
:func:`gaussian_random_field` filters white noise in Fourier space (Gaussian filter) to give a stationary
zero-mean, unit-variance Gaussian field with covariance ``exp(-(r / l_G)^2)`` (isotropic in mm, so
anisotropic voxels are handled). This is the filtered-Gaussian-noise family of random backgrounds
(Abbey & Barrett, JOSA A 18:473, 2001; lumpy backgrounds: Rolland & Barrett, JOSA A 9:649, 1992).

:func:`lognormal_field` returns ``M = exp(sigma G - sigma^2 / 2)``: mean 1, coefficient of variation
``CV = sqrt(exp(sigma^2) - 1)``. Its autocorrelation is
``rho_M(r) = (exp(sigma^2 rho_G(r)) - 1) / (exp(sigma^2) - 1)``. The *correlation length* ``L`` of the
multiplier is defined as the lag where ``rho_M`` falls to ``1/e``; ``l_G`` is solved from it, so the
measured CV and correlation length of the output match the request (checked by the tests with
:func:`field_statistics`). Suggested tumour model (``../shared/reference/biodistribution.md``): CV about
0.2-0.5, correlation length 2-5 mm, multiplying the class mean uptake.

Intratumoral patterns
---------------------
Functions of the normalised radius ``rho`` (0 at the lesion centre, 1 at its surface): necrotic core
(radius fraction 0-0.5, residual uptake 0-20 % of the rim per the reference note), rim-enhancing
gradient, and HER2-positive sub-clone clusters (small spheres of raised uptake).
"""
from __future__ import annotations

import numpy as np

from her2sim.core.errors import ConfigError, check_int, check_range


def _freq_sq(shape, spacing_mm) -> np.ndarray:
    """|k|^2 (cycles/mm)^2 on the FFT lattice of ``shape`` with ``spacing_mm``."""
    ks = [np.fft.fftfreq(n, d=d) for n, d in zip(shape, spacing_mm)]
    k2 = np.zeros(shape, np.float64)
    for a, k in enumerate(ks):
        sh = [1] * len(shape)
        sh[a] = len(k)
        k2 = k2 + (k.reshape(sh)) ** 2
    return k2


def gaussian_random_field(shape, spacing_mm, gauss_length_mm: float, rng: np.random.Generator,
                          pad: bool = True) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with covariance ``exp(-(r / l)^2)``.

    Parameters
    ----------
    shape : tuple of int
        Output shape (z, y, x) (any dimensionality >= 1 works).
    spacing_mm : tuple of float
        Voxel size per axis in mm.
    gauss_length_mm : float
        ``l`` of the Gaussian covariance (mm, > 0).
    rng : numpy.random.Generator
    pad : bool
        Generate on a volume padded by ``3 l`` per side and crop, so the periodic FFT does not
        correlate opposite faces.

    Returns
    -------
    numpy.ndarray
        float64 field of ``shape``; its expected variance is exactly 1 (normalised by the filter's power).
    """
    ell = check_range("correlation_length_mm", gauss_length_mm, 0.0, 1e4, lo_open=True)
    shape = tuple(int(s) for s in shape)
    sp = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing_mm, float), (len(shape),)))
    padn = [int(np.ceil(3.0 * ell / d)) if pad else 0 for d in sp]
    full = tuple(n + 2 * p for n, p in zip(shape, padn))
    k2 = _freq_sq(full, sp)
    # Gaussian kernel of std s = l / 2 (h * h has covariance exp(-r^2 / (4 s^2)) = exp(-(r/l)^2)).
    H = np.exp(-0.5 * np.pi ** 2 * ell ** 2 * k2)
    norm = np.sqrt(np.mean(H ** 2))
    white = rng.standard_normal(full)
    field = np.fft.ifftn(np.fft.fftn(white) * (H / norm)).real
    crop = tuple(slice(p, p + n) for p, n in zip(padn, shape))
    return field[crop]


def lognormal_sigma(cv: float) -> float:
    """Log-space standard deviation ``sigma`` giving a log-normal of coefficient of variation ``cv``."""
    c = check_range("cv", cv, 0.0, 5.0)
    return float(np.sqrt(np.log1p(c * c)))


def gauss_length_for(correlation_length_mm: float, cv: float) -> float:
    """``l_G`` of the underlying Gaussian so that the log-normal multiplier's autocorrelation is 1/e at L."""
    L = check_range("correlation_length_mm", correlation_length_mm, 0.0, 1e4, lo_open=True)
    s2 = lognormal_sigma(cv) ** 2
    if s2 < 1e-10:
        c = np.exp(-1.0)
    else:
        c = np.log1p((np.expm1(s2)) / np.e) / s2
    return float(L / np.sqrt(-np.log(c)))


def lognormal_field(shape, spacing_mm, cv: float, correlation_length_mm: float, rng: np.random.Generator,
                    pad: bool = True) -> np.ndarray:
    """Log-normal multiplicative field: mean 1, coefficient of variation ``cv``, correlation length L (mm).

    Parameters
    ----------
    cv : float
        Coefficient of variation of the multiplier (0-5; 0 returns ones).
    correlation_length_mm : float
        Lag (mm) at which the multiplier's autocorrelation falls to 1/e.

    Returns
    -------
    numpy.ndarray
        float32 multiplier (> 0) of ``shape``.
    """
    sigma = lognormal_sigma(cv)
    if sigma == 0.0:
        check_range("correlation_length_mm", correlation_length_mm, 0.0, 1e4, lo_open=True)
        return np.ones(tuple(shape), np.float32)
    g = gaussian_random_field(shape, spacing_mm, gauss_length_for(correlation_length_mm, cv), rng, pad)
    return np.exp(sigma * g - 0.5 * sigma ** 2).astype(np.float32)


def field_statistics(field: np.ndarray, spacing_mm) -> dict:
    """Measured mean, CV and 1/e correlation length (mm, per axis) of a stationary field.

    The autocorrelation is estimated with zero-padded FFTs (unbiased: divided by the overlap count);
    the correlation length per axis is the linearly interpolated lag where it first drops below 1/e.

    Returns
    -------
    dict
        ``mean``, ``cv``, ``correlation_length_mm`` (list, one per axis, NaN if never below 1/e).
    """
    f = np.asarray(field, np.float64)
    sp = np.broadcast_to(np.asarray(spacing_mm, float), (f.ndim,))
    mean = float(f.mean())
    d = f - mean
    var = float(d.var())
    if var <= 0:
        raise ConfigError("field_statistics: the field is constant (variance 0)")
    full = tuple(2 * n for n in f.shape)
    axes = tuple(range(f.ndim))
    F = np.fft.fftn(d, full, axes=axes)
    ac = np.fft.ifftn(np.abs(F) ** 2).real
    ones = np.fft.fftn(np.ones_like(d), full, axes=axes)
    cnt = np.fft.ifftn(np.abs(ones) ** 2).real
    lengths = []
    for a in range(f.ndim):
        idx = [0] * f.ndim
        n = f.shape[a] // 2
        vals = []
        for lag in range(n):
            idx[a] = lag
            vals.append(ac[tuple(idx)] / max(cnt[tuple(idx)], 1.0))
        rho = np.asarray(vals) / vals[0]
        below = np.nonzero(rho < np.exp(-1.0))[0]
        if below.size == 0:
            lengths.append(float("nan"))
            continue
        j = int(below[0])
        r0, r1 = rho[j - 1], rho[j]
        frac = (r0 - np.exp(-1.0)) / (r0 - r1)
        lengths.append(float((j - 1 + frac) * sp[a]))
    return {"mean": mean, "cv": float(np.sqrt(var) / mean) if mean != 0 else float("inf"),
            "correlation_length_mm": lengths}


def necrotic_core_factor(rho: np.ndarray, radius_fraction: float, residual_uptake: float) -> np.ndarray:
    """Multiplier 1 outside the core and ``residual_uptake`` inside ``rho < radius_fraction``.

    Parameters
    ----------
    rho : numpy.ndarray
        Normalised radius (0 centre, 1 surface).
    radius_fraction : float
        Core radius / lesion radius (0-0.9).
    residual_uptake : float
        Core uptake as a fraction of the viable rim (0-1).
    """
    rf = check_range("necrosis.radius_fraction", radius_fraction, 0.0, 0.9)
    ru = check_range("necrosis.residual_uptake", residual_uptake, 0.0, 1.0)
    out = np.ones(np.shape(rho), np.float32)
    out[np.asarray(rho) < rf] = ru
    return out


def rim_factor(rho: np.ndarray, centre_fraction: float, exponent: float = 2.0) -> np.ndarray:
    """Rim-enhancing gradient ``c + (1 - c) rho^p`` (1 at the surface, ``c`` at the centre)."""
    c = check_range("rim.centre_fraction", centre_fraction, 0.0, 1.0)
    p = check_range("rim.exponent", exponent, 0.1, 10.0)
    r = np.clip(np.asarray(rho, np.float32), 0.0, 1.0)
    return (c + (1.0 - c) * r ** p).astype(np.float32)


def subclone_factor(z, y, x, centre_mm, radius_mm: float, n_clusters: int, cluster_radius_mm: float,
                    uptake_ratio: float, rng: np.random.Generator):
    """Multiplier with ``n_clusters`` spheres of raised uptake (HER2-positive sub-clones) inside a lesion.

    Cluster centres are drawn uniformly in the ball of radius ``radius_mm - cluster_radius_mm`` around
    ``centre_mm`` (z, y, x mm). Returns ``(factor, centres)`` where ``factor`` is ``uptake_ratio`` inside
    any cluster and 1 elsewhere (float32, broadcast shape of z, y, x).
    """
    n = check_int("subclones.n_clusters", n_clusters, 0, 50)
    rc = check_range("subclones.cluster_radius_mm", cluster_radius_mm, 0.0, 100.0, lo_open=True)
    k = check_range("subclones.uptake_ratio", uptake_ratio, 0.0, 100.0, lo_open=True)
    R = max(float(radius_mm) - rc, 0.0)
    shape = np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x))
    out = np.ones(shape, np.float32)
    centres = []
    for _ in range(n):
        v = rng.normal(size=3)
        v /= np.linalg.norm(v)
        c = np.asarray(centre_mm, float) + v * R * rng.uniform() ** (1.0 / 3.0)
        centres.append([float(t) for t in c])
        inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= rc ** 2
        out[np.broadcast_to(inside, shape)] = k
    return out, centres
