"""Post-reconstruction filters in physical units (mm, cycles/cm)."""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from her2sim.core.errors import check_int, check_range
from her2sim.core.grid import Grid

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def gaussian_filter_fwhm(image: np.ndarray, grid: Grid, fwhm_mm: float) -> np.ndarray:
    """Isotropic 3-D Gaussian filter of ``fwhm_mm`` (mm) on an image (z, y, x) of ``grid``.

    sigma per axis = FWHM / 2.3548 / voxel size; the image border is reflected.
    """
    fwhm = check_range("post_filter_fwhm_mm", fwhm_mm, 0.0, 200.0)
    grid.check_array("image", image)
    if fwhm == 0.0:
        return np.asarray(image, dtype=np.float64).copy()
    sigma_vox = [fwhm / FWHM_PER_SIGMA / d for d in grid.spacing_mm]
    return ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), sigma_vox, mode="reflect")


def butterworth_filter(image: np.ndarray, grid: Grid, cutoff_cycles_per_cm: float, order: int = 5) -> np.ndarray:
    """3-D Butterworth low-pass filter ``B(f) = 1 / sqrt(1 + (f / fc)^(2 n))`` applied by FFT.

    ``f`` is the radial spatial frequency (cycles/cm) and ``fc`` the cut-off; the usual
    nuclear-medicine form (e.g. Gonzalez & Woods; vendor SPECT software). The image is
    zero-padded to at least twice its size (the next FFT-friendly length) to avoid wrap-around.
    The transfer function is cached per (shape, spacing, fc, n) and the FFTs use all cores
    (:mod:`scipy.fft`), since every noise realisation of a study is filtered with the same one.
    A float32 image is filtered in single precision (about 2.4x faster; relative error ~1e-7),
    anything else in float64.
    """
    fc = check_range("butterworth.cutoff_cycles_per_cm", cutoff_cycles_per_cm, 0.0, 100.0, lo_open=True)
    n = check_int("butterworth.order", order, 1, 20)
    grid.check_array("image", image)
    img = np.asarray(image)
    img = img if img.dtype == np.float32 else img.astype(np.float64)
    shape = tuple(sfft.next_fast_len(2 * s, real=True) for s in img.shape)
    h = _butterworth_transfer(shape, tuple(float(d) for d in grid.spacing_mm), float(fc), int(n), img.dtype.str)
    return _filter_padded(img, shape, h)


def _filter_padded(img: np.ndarray, shape: tuple, h: np.ndarray) -> np.ndarray:
    """``irfftn(rfftn(img, shape) * h, shape)[:img.shape]`` (z, y, x) without transforming the padding's zeros.

    The same 1-D transforms as :func:`scipy.fft.rfftn` / :func:`scipy.fft.irfftn` over axes (0, 1, 2), in
    their order (r2c along x, then z, then y; inverse along z, then y, c2r along x, normalised last), so the
    result is bit-identical to theirs; but the forward transforms skip the rows that are all padding and the
    inverse ones compute only the rows that are cropped back: about 0.6 of the work at 2x padding.
    """
    nz, ny, nx = img.shape
    a = sfft.rfft(img, n=shape[2], axis=2, workers=-1)      # nz x ny rows (the others are 0)
    a = sfft.fft(a, n=shape[0], axis=0, workers=-1)         # ny x (nx // 2 + 1) columns
    a = sfft.fft(a, n=shape[1], axis=1, workers=-1)
    a *= h
    a = sfft.ifft(a, axis=0, norm="forward", workers=-1)[:nz]
    a = sfft.ifft(a, axis=1, norm="forward", workers=-1)[:, :ny]
    out = sfft.irfft(a, n=shape[2], axis=2, norm="forward", workers=-1)[:, :, :nx]
    out *= out.dtype.type(1.0 / (shape[0] * shape[1] * shape[2]))
    return out


@functools.lru_cache(maxsize=4)
def _butterworth_transfer(shape: tuple, spacing_mm: tuple, fc: float, n: int, dtype: str = "<f8") -> np.ndarray:
    """Butterworth transfer function on the rfftn frequency grid of ``shape`` (read-only, ``dtype``)."""
    fz = np.fft.fftfreq(shape[0], d=spacing_mm[0] / 10.0)[:, None, None]
    fy = np.fft.fftfreq(shape[1], d=spacing_mm[1] / 10.0)[None, :, None]
    fx = np.fft.rfftfreq(shape[2], d=spacing_mm[2] / 10.0)[None, None, :]
    f2 = fz ** 2 + fy ** 2 + fx ** 2
    h = (1.0 / np.sqrt(1.0 + (f2 / fc ** 2) ** n)).astype(dtype)
    h.setflags(write=False)
    return h


@functools.lru_cache(maxsize=4)
def _point_response_transfer(shape: tuple, spacing_mm: tuple, fwhm_mm: float, post_fwhm_mm: float, fc: float, n: int,
                             dtype: str) -> np.ndarray:
    """Gaussian(fwhm) x Gaussian(post) x Butterworth(fc, n) on the rfftn grid of ``shape`` (read-only)."""
    fz = np.fft.fftfreq(shape[0], d=spacing_mm[0])[:, None, None]
    fy = np.fft.fftfreq(shape[1], d=spacing_mm[1])[None, :, None]
    fx = np.fft.rfftfreq(shape[2], d=spacing_mm[2])[None, None, :]
    f2 = fz ** 2 + fy ** 2 + fx ** 2                       # cycles/mm, squared
    s2 = (fwhm_mm ** 2 + post_fwhm_mm ** 2) / FWHM_PER_SIGMA ** 2
    h = np.exp(-2.0 * math.pi ** 2 * s2 * f2)
    if fc > 0:
        h = h / np.sqrt(1.0 + (f2 * 100.0 / fc ** 2) ** n)   # fc in cycles/cm: f2 * 100 is (cycles/cm)^2
    h = h.astype(dtype)
    h.setflags(write=False)
    return h


def point_response_filter(image: np.ndarray, grid: Grid, fwhm_mm: float, *, post_filter_fwhm_mm: float = 0.0,
                          butterworth=None) -> np.ndarray:
    """Blur by a reconstruction's point response: isotropic Gaussian ``fwhm_mm`` followed by the protocol's
    post-filter (Gaussian ``post_filter_fwhm_mm`` and/or Butterworth ``(cutoff cycles/cm, order)``), in one FFT.

    Zero outside the image (padded to at least twice its size, as :func:`butterworth_filter`); float32 in,
    float32 out, otherwise float64. Used as the PSF of partial-volume correction.
    """
    f = check_range("fwhm_mm", fwhm_mm, 0.0, 200.0)
    post = check_range("post_filter_fwhm_mm", post_filter_fwhm_mm, 0.0, 200.0)
    fc, n = (0.0, 1) if not butterworth else (check_range("butterworth.cutoff_cycles_per_cm", butterworth[0], 0.0, 100.0,
                                                           lo_open=True), check_int("butterworth.order", butterworth[1], 1, 20))
    grid.check_array("image", image)
    img = np.asarray(image)
    img = img if img.dtype == np.float32 else img.astype(np.float64)
    shape = tuple(sfft.next_fast_len(2 * s, real=True) for s in img.shape)
    h = _point_response_transfer(shape, tuple(float(d) for d in grid.spacing_mm), float(f), float(post), float(fc),
                                 int(n), img.dtype.str)
    spec = sfft.rfftn(img, shape, axes=(0, 1, 2), workers=-1)
    spec *= h
    return sfft.irfftn(spec, shape, axes=(0, 1, 2), workers=-1)[: img.shape[0], : img.shape[1], : img.shape[2]]
