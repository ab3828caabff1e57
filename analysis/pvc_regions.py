"""Partial-volume correction with anatomy: organ regions plus lesions with sub-voxel edges.

GTM (Rousset 1998), RBV (Thomas 2011) and iterative Yang (Erlandsson 2012) all model the true image as
piecewise constant over regions. Lumping every non-lesion voxel into one background region (as a
two-compartment model does) puts the liver, marrow and blood pool into the lesion's surroundings and
makes corrected lesion values worse. Here the regions are

* one per organ label (the phantom's labels or a CT segmentation), with its template ``(1 - F) [label == k]``
  where ``F`` is the lesions' partial-volume fraction, and
* one per lesion, with its partial-volume fraction map as template (sub-voxel edges, as PETPVC's
  probabilistic region maps),

so the model image is ``S = sum_j c_j T_j`` and a lesion's coefficient ``c_j`` is its own mean uptake,
free of the tissue sharing its edge voxels. Each region j also has a hard VOI: the lesion VOI for a
lesion, the organ's voxels outside every lesion VOI for an organ.

* GTM: ``W[i, j] = mean over VOI_i of blur(T_j)``, ``c = W^-1 m`` with ``m`` the observed VOI means.
* RBV: ``x = image * S / blur(S)`` with S from the GTM coefficients.
* iterative Yang: ``x_0 = image``; ``c_k`` = least-squares fit of the templates to ``x_k``;
  ``x_{k+1} = image * S(c_k) / blur(S(c_k))``.

For RBV and iterative Yang a lesion's corrected mean is the template fit of the corrected image
(its own-uptake estimate); its corrected maximum is the voxel maximum inside the lesion VOI.

The blur is the reconstructed image's point response: an isotropic Gaussian FWHM (mm), or any callable
``psf(image) -> image``, e.g. the reconstruction's Gaussian resolution followed by the clinical
post-filter (a Butterworth filter is not a Gaussian: modelling it as one of the same FWHM over-corrects
lesions, because it keeps the low frequencies that carry a lesion's mean).

OSEM with resolution recovery is not a blur at all for a cold lesion in a hot organ: at a clinical iteration
count it fills the lesion with the organ's activity far beyond what the point response predicts.
:meth:`RegionModel.gtm_response` and :meth:`RegionModel.rbv_response` therefore take the reconstruction
itself as the response (any callable mapping model images to their reconstructions, e.g.
:class:`her2sim.recon.response.ReconstructionResponse`; this module does not import ``recon``), on slabs of
whole slices (:func:`lesion_slab_models`), since a reconstruction mixes activity along projection rays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from her2sim.core.errors import DataError, check_int, check_range

from .pvc import gaussian_blur


def _blur(image, psf, spacing_mm) -> np.ndarray:
    """Apply ``psf``: a FWHM in mm (scalar or (z, y, x)) for a Gaussian, or a callable image -> image."""
    if callable(psf):
        out = np.asarray(psf(np.asarray(image, dtype=np.float64)), dtype=np.float64)
        if out.shape != np.shape(image):
            raise DataError(f"psf callable returned shape {out.shape} for an image of shape {np.shape(image)}")
        return out
    return gaussian_blur(image, psf, spacing_mm)

#: region id offset of lesions (organ labels are below it)
LESION_REGION_OFFSET = 100_000


@dataclass
class RegionModel:
    """Regions of a piecewise-constant PVC model on the image grid.

    Attributes
    ----------
    organ_labels : int array (z, y, x)
        Organ label per voxel (0 = air outside the body is a region too). Lesion voxels carry their host
        organ's label (:func:`her2sim.analysis.lesion_truth.host_labels`).
    lesion_fractions : dict of int -> float array (z, y, x)
        Partial-volume fraction of each lesion (0-1).
    lesion_vois : dict of int -> bool array (z, y, x)
        Each lesion's hard VOI.
    valid : bool array (z, y, x), optional
        Voxels whose observed value may be used (organ VOIs and template fits are restricted to them);
        a box cut from a larger image (:func:`lesion_box_models`) excludes its rim, where a blur computed
        inside the box misses the activity outside it.
    """

    organ_labels: np.ndarray
    lesion_fractions: dict
    lesion_vois: dict
    valid: np.ndarray | None = None
    ids: list = field(init=False)

    def __post_init__(self):
        lab = np.asarray(self.organ_labels)
        if lab.ndim != 3 or not np.issubdtype(lab.dtype, np.integer):
            raise DataError(f"organ_labels must be a 3-D integer label map, got {lab.dtype} {lab.shape}")
        if set(self.lesion_fractions) != set(self.lesion_vois):
            raise DataError("lesion_fractions and lesion_vois must name the same lesions")
        self.organ_labels = lab
        F = np.zeros(lab.shape, np.float64)
        any_voi = np.zeros(lab.shape, bool)
        for lid, f in self.lesion_fractions.items():
            f = np.asarray(f, dtype=np.float64)
            if f.shape != lab.shape:
                raise DataError(f"lesion {lid}: fraction shape {f.shape} does not match labels {lab.shape}")
            F += f
            any_voi |= np.asarray(self.lesion_vois[lid], bool)
        self._rest = np.clip(1.0 - F, 0.0, 1.0)
        self._any_voi = any_voi
        self._valid = np.ones(lab.shape, bool) if self.valid is None else np.asarray(self.valid, bool)
        if self._valid.shape != lab.shape:
            raise DataError(f"valid mask shape {self._valid.shape} does not match labels {lab.shape}")
        organs = [int(v) for v in np.unique(lab)]
        self._organ_index = {o: i for i, o in enumerate(organs)}
        self._flat_index = np.searchsorted(np.asarray(organs), lab.ravel()).reshape(lab.shape)
        self.organs = organs
        self.lesions = sorted(int(k) for k in self.lesion_fractions)
        self.ids = organs + [LESION_REGION_OFFSET + k for k in self.lesions]
        self._voi_idx, self._voi_counts = self._voi_index()
        self._gtm_matrix_cache: dict = {}
        # organ VOIs: organ voxels outside every lesion VOI; a region with an empty VOI cannot be measured

    # ------------------------------------------------------------------ templates
    def template(self, j: int) -> np.ndarray:
        """Template of region index ``j`` (float64, z, y, x)."""
        n_org = len(self.organs)
        if j < n_org:
            return np.where(self.organ_labels == self.organs[j], self._rest, 0.0)
        return np.asarray(self.lesion_fractions[self.lesions[j - n_org]], dtype=np.float64)

    def synthesize(self, coeffs: np.ndarray) -> np.ndarray:
        """Model image ``sum_j c_j T_j``."""
        c = np.asarray(coeffs, dtype=np.float64)
        n_org = len(self.organs)
        s = c[:n_org][self._flat_index] * self._rest
        for k, lid in enumerate(self.lesions):
            s += c[n_org + k] * np.asarray(self.lesion_fractions[lid], dtype=np.float64)
        return s

    def fit(self, image) -> np.ndarray:
        """Least-squares coefficients ``c`` of ``image ~ sum_j c_j T_j`` (normal equations, exact for hard regions)."""
        img = np.where(self._valid, np.asarray(image, dtype=np.float64), 0.0)
        n_org, n = len(self.organs), len(self.ids)
        flat = self._flat_index.ravel()
        rest = (self._rest * self._valid).ravel()
        A = np.zeros((n, n))
        b = np.zeros(n)
        A[np.arange(n_org), np.arange(n_org)] = np.bincount(flat, weights=rest * rest, minlength=n_org)
        b[:n_org] = np.bincount(flat, weights=rest * img.ravel(), minlength=n_org)
        fr = [(np.asarray(self.lesion_fractions[lid], dtype=np.float64) * self._valid).ravel() for lid in self.lesions]
        for a, fa in enumerate(fr):
            ia = n_org + a
            A[ia, :n_org] = A[:n_org, ia] = np.bincount(flat, weights=rest * fa, minlength=n_org)
            b[ia] = float(fa @ img.ravel())
            for c_, fc in enumerate(fr[: a + 1]):
                A[ia, n_org + c_] = A[n_org + c_, ia] = float(fa @ fc)
        used = np.diag(A) > 0
        c = np.zeros(n)
        c[used] = np.linalg.lstsq(A[np.ix_(used, used)], b[used], rcond=None)[0]
        return c

    def _voi_index(self) -> tuple:
        """Region index of each voxel's VOI (len(ids) = none) and the VOI sizes."""
        n_org, n = len(self.organs), len(self.ids)
        idx = np.where(self._any_voi | ~self._valid, n, self._flat_index)
        for k, lid in enumerate(self.lesions):
            idx[np.asarray(self.lesion_vois[lid], bool)] = n_org + k
        counts = np.bincount(idx.ravel(), minlength=n + 1)[:n]
        return idx.ravel(), counts

    # ------------------------------------------------------------------ methods
    def gtm_matrix(self, psf, spacing_mm) -> tuple:
        """``(W, keep)``: the GTM matrix over the regions with a non-empty VOI (indices ``keep``).

        It depends only on the regions and the point response, so it is computed once per ``psf`` (a
        callable is keyed by identity) and reused for every image of the same scan geometry.
        """
        key = (id(psf) if callable(psf) else tuple(np.atleast_1d(psf).tolist()),
               tuple(float(d) for d in spacing_mm))
        if key not in self._gtm_matrix_cache:
            idx, counts = self._voi_idx, self._voi_counts
            n = len(self.ids)
            keep = np.nonzero(counts > 0)[0]
            W = np.zeros((keep.size, keep.size))
            for col, j in enumerate(keep):
                bt = _blur(self.template(int(j)), psf, spacing_mm)
                W[:, col] = (np.bincount(idx, weights=bt.ravel(), minlength=n + 1)[:n] / np.maximum(counts, 1))[keep]
            cond = np.linalg.cond(W)
            if not np.isfinite(cond) or cond > 1e12:
                raise DataError(f"GTM matrix is singular (condition number {cond:.3g}); regions too small for the PSF")
            self._gtm_matrix_cache[key] = (W, keep, psf)   # psf kept alive so its id stays unique
        W, keep, _ = self._gtm_matrix_cache[key]
        return W, keep

    def gtm(self, image, psf, spacing_mm) -> np.ndarray:
        """GTM coefficients (one per region, image units) with the sub-voxel lesion templates."""
        img = np.asarray(image, dtype=np.float64)
        W, keep = self.gtm_matrix(psf, spacing_mm)
        n = len(self.ids)
        m = (np.bincount(self._voi_idx, weights=img.ravel(), minlength=n + 1)[:n] / np.maximum(self._voi_counts, 1))
        c = np.zeros(n)
        c[keep] = np.linalg.solve(W, m[keep])
        return c

    def rbv(self, image, psf, spacing_mm, *, gtm_coeffs=None) -> tuple:
        """RBV-corrected image and its template fit: ``(x, c)`` (``gtm_coeffs`` reuses a GTM already solved)."""
        img = np.asarray(image, dtype=np.float64)
        s = self.synthesize(self.gtm(img, psf, spacing_mm) if gtm_coeffs is None else gtm_coeffs)
        x = img * _ratio(s, _blur(s, psf, spacing_mm))
        return x, self.fit(x)

    def iterative_yang(self, image, psf, spacing_mm, *, n_iter: int = 10, tol: float = 1e-4) -> tuple:
        """Iterative-Yang-corrected image and its template fit: ``(x, c)``."""
        n = check_int("n_iter", n_iter, 1, 500)
        check_range("tol", tol, 0.0, 1.0)
        img = np.asarray(image, dtype=np.float64)
        x = img
        c = self.fit(x)
        for _ in range(n):
            s = self.synthesize(c)
            x = img * _ratio(s, _blur(s, psf, spacing_mm))
            c_new = self.fit(x)
            change = np.max(np.abs(c_new - c)) / max(np.max(np.abs(c_new)), 1e-30)
            c = c_new
            if change < tol:
                break
        return x, c

    # ------------------------------------------------------------------ with the reconstruction's own response
    def voi_means(self, image) -> np.ndarray:
        """Mean of ``image`` over each region's VOI (0 for a region with an empty VOI)."""
        n = len(self.ids)
        img = np.asarray(image, dtype=np.float64)
        return np.bincount(self._voi_idx, weights=img.ravel(), minlength=n + 1)[:n] / np.maximum(self._voi_counts, 1)

    def gtm_response(self, image, response, psf, spacing_mm, *, multipliers=(0.5, 1.0, 1.5)) -> "ResponseFit":
        """GTM through the reconstruction itself: each lesion's ``c_j`` with ``VOI mean_j(response(S(c))) = VOI mean_j(image)``.

        ``response`` maps a batch of model images (B, z, y, x) to their reconstructions, e.g.
        :class:`her2sim.recon.response.ReconstructionResponse`. It is non-linear (OSEM), so it is evaluated
        on whole model images near the solution, not region by region:

        1. the Gaussian GTM (``psf``) gives every region's coefficient ``g``; organs (large regions, where a
           Gaussian and the reconstruction nearly agree) are then refined by one Newton step with the
           Gaussian GTM block, from the response at ``g``;
        2. one batch of model images with every lesion at ``multipliers`` x ``g_j`` (``g_j`` floored at 20 % of
           its VOI mean) gives each lesion's VOI mean as a function of its own coefficient; a straight-line
           fit solves it for the observed mean (lesions far apart do not see each other's change);
        3. one more model image at that solution refines it by a Newton step (slope from the secant with the
           nearest trial when that is at least 10 % of the coefficient away and within a factor 4 of the
           fitted slope) and is the pair RBV uses.

        Two response calls in all, the first a batch of ``len(multipliers)`` images.

        Returns
        -------
        ResponseFit
            ``coeffs``, and the last evaluated pair ``synthetic`` / ``response`` (for RBV).
        """
        mult = np.asarray(multipliers, dtype=np.float64)
        if mult.ndim != 1 or mult.size < 2 or np.any(mult < 0) or np.unique(mult).size != mult.size:
            raise DataError(f"multipliers = {multipliers!r}: give at least two distinct values >= 0")
        img = np.asarray(image, dtype=np.float64)
        W, keep = self.gtm_matrix(psf, spacing_mm)
        n, n_org = len(self.ids), len(self.organs)
        m = self.voi_means(img)
        g = np.zeros(n)
        g[keep] = np.linalg.solve(W, m[keep])
        g = np.maximum(g, 0.0)
        les = [int(j) for j in keep if j >= n_org]
        if not les:
            s_img = self.synthesize(g)
            return ResponseFit(g, s_img, np.asarray(response(s_img[None]))[0], 1, 0.0)
        base = {j: max(g[j], 0.2 * abs(m[j]), 1e-12) for j in les}
        trials = []
        for f in mult:
            c = g.copy()
            for j in les:
                c[j] = f * base[j]
            trials.append(c)
        resp = np.asarray(response(np.stack([self.synthesize(c) for c in trials])))
        r = np.array([self.voi_means(x) for x in resp])           # (trial, region)
        # organs: a Newton step with the Gaussian GTM block, from the trial nearest the Gaussian solution
        org = [int(j) for j in keep if j < n_org]
        rows_o = [pos_ for pos_, j in enumerate(keep) if j < n_org]
        mid = int(np.argmin(np.abs(mult - 1.0)))
        d_org = np.zeros(n)
        if org:
            d_org[org] = np.linalg.solve(W[np.ix_(rows_o, rows_o)], (m - r[mid])[org])
        c_new = g + d_org
        c_new[org] = np.maximum(c_new[org], 0.0)
        slope = {}
        for j in les:
            x = np.array([t[j] for t in trials])
            b, a = np.polyfit(x, r[:, j], 1)
            slope[j] = max(b, 1e-3)
            row = int(np.flatnonzero(keep == j)[0])
            spill = float(W[row, rows_o] @ d_org[org]) if org else 0.0   # the organ step's spill into the VOI
            c_new[j] = float(np.clip((m[j] - a - spill) / slope[j], 0.0, 4.0 * mult.max() * base[j]))
        s_img = self.synthesize(c_new)
        r_img = np.asarray(response(s_img[None]))[0]
        r1 = self.voi_means(r_img)
        out = c_new.copy()
        change = 0.0
        for j in les:
            x = np.array([t[j] for t in trials])
            k = int(np.argmin(np.abs(x - c_new[j])))                 # secant with the nearest trial
            row = int(np.flatnonzero(keep == j)[0])
            spill = float(W[row, rows_o] @ d_org[org]) if org else 0.0   # the trials had the organs at g
            if abs(c_new[j] - x[k]) >= 0.1 * base[j]:
                secant = (r1[j] - r[k, j] - spill) / (c_new[j] - x[k])
                if 0.25 * slope[j] <= secant <= 4.0 * slope[j]:      # a far-off secant is not trusted
                    slope[j] = secant
            out[j] = float(np.clip(c_new[j] + (m[j] - r1[j]) / slope[j], 0.0, 4.0 * mult.max() * base[j]))
            change = max(change, abs(out[j] - c_new[j]) / max(c_new[j], 0.1 * abs(m[j]), 1e-12))
        return ResponseFit(out, s_img, r_img, mult.size + 1, change)

    def rbv_response(self, image, fit: "ResponseFit") -> tuple:
        """RBV with the reconstruction's response: ``x = image * S / response(S)`` at the GTM-response fit."""
        img = np.asarray(image, dtype=np.float64)
        x = img * _ratio(fit.synthetic, fit.response)
        return x, self.fit(x)

    def lesion_value(self, coeffs, lesion_id: int) -> float:
        """A lesion's coefficient (its own mean uptake estimate)."""
        return float(coeffs[len(self.organs) + self.lesions.index(int(lesion_id))])


@dataclass
class ResponseFit:
    """Result of :meth:`RegionModel.gtm_response`.

    Attributes
    ----------
    coeffs : numpy.ndarray
        Region coefficients (image units).
    synthetic, response : numpy.ndarray
        The last model image evaluated and its reconstruction.
    evaluations : int
        Model images reconstructed.
    last_change : float
        Largest relative change of a lesion coefficient in the last step.
    """

    coeffs: np.ndarray
    synthetic: np.ndarray
    response: np.ndarray
    evaluations: int
    last_change: float


def _ratio(num, den) -> np.ndarray:
    floor = 1e-9 * max(float(np.max(np.abs(num))), 1e-30)
    out = np.zeros_like(num)
    ok = np.abs(den) > floor
    out[ok] = num[ok] / den[ok]
    return out


def lesion_box_models(organ_labels, lesion_fractions: dict, lesion_vois: dict, spacing_mm, *,
                      margin_mm: float = 60.0, rim_mm: float = 25.0) -> dict:
    """One small :class:`RegionModel` per lesion: a box around it, so PVC costs FFTs of a few cm, not the body.

    The box is the lesion VOI's bounding box grown by ``margin_mm``; every lesion reaching into the box is a
    region of it, and so is every organ present. Voxels within ``rim_mm`` of the box faces are not ``valid``
    (their blurred templates lack the activity outside the box), so organ VOIs and template fits use the
    inner part only. The lesion VOI lies ``margin_mm - rim_mm`` inside that.

    Returns
    -------
    dict of int -> (tuple of slices, RegionModel)
        The box (slices of the full image) and its model, per lesion id.
    """
    lab = np.asarray(organ_labels)
    m = check_range("margin_mm", margin_mm, 0.0, 1000.0)
    r = check_range("rim_mm", rim_mm, 0.0, m)
    out = {}
    for lid, voi in lesion_vois.items():
        idx = np.nonzero(np.asarray(voi, bool))
        if idx[0].size == 0:
            raise DataError(f"lesion {lid}: empty VOI")
        box = tuple(slice(max(int(a.min()) - int(np.ceil(m / d)), 0), min(int(a.max()) + 1 + int(np.ceil(m / d)), n))
                    for a, d, n in zip(idx, spacing_mm, lab.shape))
        valid = np.zeros(tuple(s.stop - s.start for s in box), bool)
        inner = []
        for s_, d, n in zip(box, spacing_mm, lab.shape):
            rv = int(np.ceil(r / d))
            lo = 0 if s_.start == 0 else rv           # the image edge is a true edge: nothing lies beyond it
            hi = (s_.stop - s_.start) - (0 if s_.stop == n else rv)
            inner.append(slice(lo, max(hi, lo)))
        valid[tuple(inner)] = True
        fr, vo = {}, {}
        for other, f in lesion_fractions.items():
            sub = np.asarray(f)[box]
            if np.any(sub > 0):
                fr[other] = sub
                vo[other] = np.asarray(lesion_vois[other], bool)[box] & valid
        out[int(lid)] = (box, RegionModel(lab[box], fr, vo, valid=valid))
    return out


#: Responses a region PVC can use for the reconstructed image: the reconstruction's own (non-linear OSEM,
#: :class:`her2sim.recon.response.ReconstructionResponse`) or a Gaussian of the point-source FWHM plus the
#: protocol's post-filter.
PVC_RESPONSES = ("reconstruction", "gaussian")


def lesion_slab_models(organ_labels, lesion_fractions: dict, lesion_vois: dict, spacing_mm, *,
                       margin_mm: float = 60.0, rim_mm: float = 25.0) -> list:
    """:class:`RegionModel` s on slabs of whole slices around the lesions, for the reconstruction's response.

    The reconstruction mixes activity along each projection ray, so its response cannot be cut to a box;
    it can be cut to slices. Each lesion's VOI slice range is grown by ``margin_mm``; overlapping ranges
    merge into one slab. Slices within ``rim_mm`` of a slab face (not at the image edge) are not ``valid``
    (activity beyond the face is missing from the model there).

    Returns
    -------
    list of (slice, RegionModel)
        Slab (slices of axis 0) and its model, in slice order; every lesion of ``lesion_vois`` lies in
        exactly one slab's valid part.
    """
    lab = np.asarray(organ_labels)
    m = check_range("margin_mm", margin_mm, 0.0, 1000.0)
    r = check_range("rim_mm", rim_mm, 0.0, m)
    dz, nz = float(spacing_mm[0]), lab.shape[0]
    grow, rim = int(np.ceil(m / dz)), int(np.ceil(r / dz))
    spans = []
    for lid, voi in lesion_vois.items():
        zs = np.flatnonzero(np.asarray(voi, bool).any(axis=(1, 2)))
        if zs.size == 0:
            raise DataError(f"lesion {lid}: empty VOI")
        spans.append([max(int(zs[0]) - grow, 0), min(int(zs[-1]) + 1 + grow, nz), [int(lid)]])
    spans.sort()
    merged = []
    for s in spans:
        if merged and s[0] < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], s[1])
            merged[-1][2] += s[2]
        else:
            merged.append(s)
    out = []
    for lo, hi, _ in merged:
        sl = slice(lo, hi)
        valid = np.zeros((hi - lo,) + lab.shape[1:], bool)
        valid[(0 if lo == 0 else rim):(hi - lo) - (0 if hi == nz else rim)] = True
        fr, vo = {}, {}
        for other, f in lesion_fractions.items():
            sub = np.asarray(f)[sl]
            if np.any(sub > 0):
                fr[int(other)] = sub
                vo[int(other)] = np.asarray(lesion_vois[other], bool)[sl] & valid
        out.append((sl, RegionModel(lab[sl], fr, vo, valid=valid)))
    return out
