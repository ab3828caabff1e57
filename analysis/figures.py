"""Report figures (matplotlib, Agg backend): each function saves one PNG and returns its path.

* :func:`plot_suv_vs_ihc` - SUVmax against IHC score 0-3 coloured by HER2 status with
  the 1.5 threshold line (style of Fig. 1 of Zhao et al., Breast Cancer Res 26:40, 2024);
* :func:`plot_recovery_curves` - recovery coefficient against sphere diameter with and
  without PVC (optionally the analytic Gaussian curve);
* :func:`plot_roc` - ROC curve with a pointwise bootstrap band (patient resampling);
* :func:`plot_measured_vs_true` - scatter with the identity line;
* :func:`plot_bias_vs_size` - relative bias against lesion diameter;
* :func:`plot_bland_altman` - difference against mean with 95 % limits of agreement;
* :func:`plot_true_vs_reconstructed` - anterior MIPs and a coronal slice of the true and the
  reconstructed SUV side by side;
* :func:`plot_whole_body_beside_spect` - anterior / posterior whole-body sweeps beside the local SPECT's
  anterior MIP, one row per time point.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from her2sim.core.errors import DataError  # noqa: E402

from . import stats as _stats  # noqa: E402
from . import threshold as _threshold  # noqa: E402

HER2_COLOURS = {True: "#c0392b", False: "#2e86c1"}


def _save(fig, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    from her2sim.core.atomic import savefig_atomic
    savefig_atomic(fig, p, dpi=120)
    plt.close(fig)
    return p


def _arr(name, x, n=None) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if a.size == 0:
        raise DataError(f"{name} is empty")
    if n is not None and a.size != n:
        raise DataError(f"{name} has {a.size} values, expected {n}")
    return a


def plot_suv_vs_ihc(suv, ihc, her2_positive, path, *, threshold: float = _threshold.SEED_THRESHOLD_SUV,
                    ylabel: str = "SUVmax", seed: int = 0) -> Path:
    """SUV against IHC score with group mean +/- SD and a dashed threshold line."""
    v = _arr("suv", suv)
    s = _arr("ihc", ihc, v.size).astype(int)
    pos = np.asarray(her2_positive, dtype=bool).ravel()
    if pos.size != v.size:
        raise DataError(f"her2_positive has {pos.size} values, expected {v.size}")
    rng = np.random.default_rng(seed)  # horizontal jitter only
    fig, ax = plt.subplots(figsize=(5, 4))
    jitter = rng.uniform(-0.12, 0.12, v.size)
    for flag, label in ((True, "HER2-positive"), (False, "HER2-negative")):
        m = pos == flag
        if np.any(m):
            ax.scatter(s[m] + jitter[m], v[m], c=HER2_COLOURS[flag], s=22, label=label, alpha=0.8)
    for k in np.unique(s):
        g = v[s == k]
        sd = g.std(ddof=1) if g.size > 1 else 0.0
        ax.errorbar(k + 0.3, g.mean(), yerr=sd, fmt="s", color="k", ms=4, capsize=3)
    ax.axhline(threshold, color="red", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xticks([0, 1, 2, 3], ["0", "1+", "2+", "3+"])
    ax.set_xlabel("HER2 IHC score")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_recovery_curves(diameters_mm, rc_uncorrected, path, *, rc_corrected=None, rc_analytic=None,
                         labels=("no PVC", "PVC", "analytic Gaussian")) -> Path:
    """Recovery coefficient vs sphere diameter (mm), without and with PVC."""
    d = _arr("diameters_mm", diameters_mm)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(d, _arr("rc_uncorrected", rc_uncorrected, d.size), "o-", label=labels[0])
    if rc_corrected is not None:
        ax.plot(d, _arr("rc_corrected", rc_corrected, d.size), "s-", label=labels[1])
    if rc_analytic is not None:
        ax.plot(d, _arr("rc_analytic", rc_analytic, d.size), "k--", label=labels[2])
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("sphere diameter (mm)")
    ax.set_ylabel("recovery coefficient")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_roc(truth, values, path, *, patient_ids=None, n_boot: int = 500, seed: int = 1,
             threshold: float | None = _threshold.SEED_THRESHOLD_SUV) -> Path:
    """ROC curve; with ``patient_ids`` a 95 % pointwise bootstrap band of TPR (patient resampling).

    The operating point of ``threshold`` is marked.
    """
    r = _threshold.roc_table(truth, values)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if patient_ids is not None:
        t = np.asarray(truth, dtype=bool)
        v = np.asarray(values, dtype=float)
        pid = np.asarray(patient_ids)
        patients, inv = np.unique(pid, return_inverse=True)
        members = [np.flatnonzero(inv == i) for i in range(patients.size)]
        grid = np.linspace(0, 1, 101)
        rng = np.random.default_rng(seed)
        curves = []
        for _ in range(n_boot):
            idx = np.concatenate([members[i] for i in rng.integers(0, patients.size, patients.size)])
            tb, vb = t[idx], v[idx]
            if tb.all() or not tb.any():
                continue
            fpr, tpr, _ = _threshold._roc_points_fast(tb, vb)
            # best sensitivity reachable at each false-positive rate (upper step envelope)
            fpr, tpr = np.r_[0.0, fpr], np.r_[0.0, tpr]
            curves.append(tpr[np.searchsorted(fpr, grid, side="right") - 1])
        if curves:
            lo, hi = np.percentile(np.asarray(curves), [2.5, 97.5], axis=0)
            ax.fill_between(grid, lo, hi, color="C0", alpha=0.25, label="95 % bootstrap band")
    ax.plot(r["fpr"], r["tpr"], "C0-", label=f"AUC {r['auc']:.3f}")
    if threshold is not None:
        m = _threshold.binary_metrics(truth, values, threshold)
        if m["sensitivity"] is not None and m["specificity"] is not None:
            ax.plot(1 - m["specificity"], m["sensitivity"], "ro", label=f"cut-off {threshold:g}")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_measured_vs_true(true, measured, path, *, xlabel: str = "true SUV", ylabel: str = "measured SUV") -> Path:
    """Scatter of measured against true values with the identity line."""
    t = _arr("true", true)
    m = _arr("measured", measured, t.size)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(t, m, s=18, alpha=0.8)
    lim = [min(t.min(), m.min(), 0.0), max(t.max(), m.max()) * 1.05]
    ax.plot(lim, lim, "k--", lw=0.8, label="identity")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_bias_vs_size(diameter_mm, true, measured, path) -> Path:
    """Relative bias 100 (measured - true) / true (%) against lesion diameter (mm)."""
    d = _arr("diameter_mm", diameter_mm)
    t = _arr("true", true, d.size)
    m = _arr("measured", measured, d.size)
    if np.any(t == 0):
        raise DataError("true values must be non-zero for a relative bias")
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(d, 100 * (m - t) / t, s=18)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("lesion diameter (mm)")
    ax.set_ylabel("bias (%)")
    return _save(fig, path)


def plot_bland_altman(a, b, path, *, label_a: str = "A", label_b: str = "B") -> Path:
    """Bland-Altman plot: (a - b) against (a + b) / 2 with mean and 95 % limits of agreement."""
    r = _stats.bland_altman(a, b)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(r["means"], r["differences"], s=18)
    ax.axhline(r["mean_difference"], color="k", lw=1, label=f"mean {r['mean_difference']:.3g}")
    for y in r["loa"]:
        ax.axhline(y, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"mean of {label_a} and {label_b}")
    ax.set_ylabel(f"{label_a} - {label_b}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_true_vs_reconstructed(true_suv, recon_suv, spacing_mm, path, *, title: str = "",
                               lesion_mask=None, vmax: float | None = None) -> Path:
    """Anterior maximum-intensity projections and coronal slices of true and reconstructed SUV (z, y, x).

    Both volumes must be on the same grid; ``spacing_mm`` is (dz, dy, dx). The coronal slice
    passes through the hottest lesion voxel when ``lesion_mask`` is given, else the centre.
    """
    t = np.asarray(true_suv, dtype=float)
    r = np.asarray(recon_suv, dtype=float)
    if t.shape != r.shape or t.ndim != 3:
        raise DataError(f"true and reconstructed volumes must share one 3-D shape, got {t.shape} and {r.shape}")
    dz, dy, dx = spacing_mm
    if lesion_mask is not None and np.any(lesion_mask):
        iy = int(np.argwhere(lesion_mask)[np.argmax(r[lesion_mask > 0])][1])
    else:
        iy = t.shape[1] // 2
    top = vmax if vmax is not None else float(np.percentile(t[t > 0], 99.0)) if np.any(t > 0) else 1.0
    extent_cor = (0, t.shape[2] * dx, 0, t.shape[0] * dz)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.9), constrained_layout=True)
    panels = [(t.max(axis=1), "true SUV, anterior MIP"), (r.max(axis=1), "reconstructed SUV, anterior MIP"),
              (t[:, iy, :], f"true SUV, coronal y={iy}"), (r[:, iy, :], f"reconstructed SUV, coronal y={iy}")]
    for ax, (img, name) in zip(axes, panels):
        im = ax.imshow(img, origin="lower", cmap="hot", vmin=0, vmax=top, extent=extent_cor, aspect="equal")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x (mm)")
    axes[0].set_ylabel("z (mm)")
    fig.colorbar(im, ax=axes, shrink=0.9, label="SUV")
    if title:
        fig.suptitle(title, fontsize=10)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    from her2sim.core.atomic import savefig_atomic
    savefig_atomic(fig, p, dpi=110)
    plt.close(fig)
    return p


def plot_lesion_truths(truth_suv, own_suv, measured_suv, voi, centre_index, spacing_mm, path, *, numbers: dict,
                       half_width_mm: float = 40.0, title: str = "") -> Path:
    """The three truths of one lesion beside its measurement: axial slices through the lesion centre.

    Panels: (1) the phantom's SUV (lesion mixed with the tissue around it), (2) the lesion's own SUV on the
    recon grid (``true_suvmean_pv`` / ``true_suvmax_pv`` are its mean / max inside the VOI), (3) the
    reconstructed SUV with the VOI outlined. All three arrays are on the recon grid (z, y, x).

    Parameters
    ----------
    truth_suv, own_suv, measured_suv : arrays (z, y, x)
        SUV maps on the recon grid.
    voi : bool array (z, y, x)
        The lesion VOI.
    centre_index : (int, int, int)
        Voxel (z, y, x) the slices pass through.
    spacing_mm : (z, y, x) mm
    numbers : dict
        ``true_suv_intrinsic``, ``true_suvmean_pv``, ``true_suvmax_pv``, ``suvmean``, ``suvmax`` for the titles.
    """
    maps = [np.asarray(a, dtype=float) for a in (truth_suv, own_suv, measured_suv)]
    v = np.asarray(voi, bool)
    if any(m.shape != v.shape for m in maps):
        raise DataError("plot_lesion_truths: truth, own, measured and voi must share one (z, y, x) shape")
    z, y, x = (int(c) for c in centre_index)
    hy, hx = (max(2, int(round(half_width_mm / float(spacing_mm[a])))) for a in (1, 2))
    sl = (z, slice(max(y - hy, 0), y + hy + 1), slice(max(x - hx, 0), x + hx + 1))
    vmax = max(float(m[sl].max()) for m in maps) or 1.0
    n = numbers
    titles = [f"phantom SUV (lesion + surroundings)\nintrinsic uptake {n['true_suv_intrinsic']:.2f}",
              f"lesion's own SUV on the recon grid\nPV truth: mean {n['true_suvmean_pv']:.2f}, max {n['true_suvmax_pv']:.2f}",
              f"reconstructed SUV, VOI outlined\nmeasured: mean {n['suvmean']:.2f}, max {n['suvmax']:.2f}"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    ext = [0, maps[0][sl].shape[1] * float(spacing_mm[2]), maps[0][sl].shape[0] * float(spacing_mm[1]), 0]
    for ax, m, t in zip(axes, maps, titles):
        im = ax.imshow(m[sl], cmap="inferno", vmin=0, vmax=vmax, extent=ext, interpolation="nearest")
        ax.set_title(t, fontsize=9)
        ax.set_xlabel("x (mm, patient left)")
    axes[0].set_ylabel("y (mm, posterior)")
    vs = v[sl].astype(float)
    xc = (np.arange(vs.shape[1]) + 0.5) * float(spacing_mm[2])
    yc = (np.arange(vs.shape[0]) + 0.5) * float(spacing_mm[1])
    axes[2].contour(xc, yc, vs, levels=[0.5], colors="cyan", linewidths=1.0)
    fig.colorbar(im, ax=axes, shrink=0.8, label="SUV")
    if title:
        fig.suptitle(title, fontsize=10)
    from her2sim.core.atomic import savefig_atomic
    p = savefig_atomic(fig, path, dpi=110)   # no tight_layout: the colour bar spans the three panels
    plt.close(fig)
    return p


def plot_whole_body_beside_spect(sweeps: list, spect_mips: list, path, *, title: str = "",
                                 spect_vmax_suv: float = 4.0) -> Path:
    """Planar whole-body sweeps beside the local SPECT, one row per time point (as the seed trial shows them).

    Parameters
    ----------
    sweeps : list of dict
        Per time point: ``anterior`` and ``posterior`` counts (v, u), ``z_mm`` (world z of each row, mm),
        ``u_mm`` (column centres, mm; the anterior view's +u is the patient's left), ``label`` (e.g. ``"1 h"``).
        The posterior image is shown in its own head's frame (seen from behind).
    spect_mips : list of dict or None
        Per time point (same order): ``suv`` anterior maximum-intensity projection (z, x) of the SUV image,
        ``z_mm`` and ``x_mm`` (voxel centres, mm); ``None`` leaves the panel out. The SPECT's axial field of view
        is marked on the anterior sweep with dashed lines, and the panel shares the sweeps' z axis (mm).
    path : str or Path
        PNG to write.
    title : str
    spect_vmax_suv : float
        Top of the SPECT colour scale (SUV; the kidneys would otherwise hide the lesions; as the recon figure).

    Returns
    -------
    Path
    """
    if not sweeps:
        raise DataError("sweeps is empty")
    n = len(sweeps)
    with_spect = any(m is not None for m in spect_mips)
    ncol = 3 if with_spect else 2
    fig, axes = plt.subplots(n, ncol, figsize=(3.0 * ncol + 0.6, 6.2 * n), squeeze=False)

    def extent(u, z):
        du, dz = abs(u[1] - u[0]), abs(z[1] - z[0])
        return (u.min() - du / 2, u.max() + du / 2, z.min() - dz / 2, z.max() + dz / 2)

    for row, (sw, mip) in enumerate(zip(sweeps, spect_mips)):
        z, u = np.asarray(sw["z_mm"], float), np.asarray(sw["u_mm"], float)
        order = np.argsort(z)
        z_lim = None
        for col, view in enumerate(("anterior", "posterior")):
            img = np.asarray(sw[view], float)[order]
            keep = np.flatnonzero(img.sum(axis=1) > 0)
            ax = axes[row, col]
            top = max(float(np.percentile(img[keep], 99.5)) if keep.size else 1.0, 1.0)
            ax.imshow(img, origin="lower", cmap="gray_r", vmin=0, vmax=top, extent=extent(u, z[order]),
                      aspect="equal", interpolation="nearest")
            if keep.size:
                zs = z[order][keep]
                z_lim = (zs.min() - 10.0, zs.max() + 10.0)
                ax.set_ylim(*z_lim)
            ax.set_title(f"{view} sweep {sw.get('label', '')}\n{img.sum() / 1e6:.2f} Mcounts", fontsize=9)
            ax.set_xticks([])
            if col == 0:
                ax.set_ylabel("z (mm)")
                if mip is not None:
                    for zz in (float(np.min(mip["z_mm"])), float(np.max(mip["z_mm"]))):
                        ax.axhline(zz, color="tab:red", lw=0.8, ls="--")
            else:
                ax.set_yticks([])
        if with_spect:
            ax = axes[row, 2]
            if mip is None:
                ax.axis("off")
                continue
            s = np.asarray(mip["suv"], float)
            im = ax.imshow(s, origin="lower", cmap="hot", vmin=0, vmax=spect_vmax_suv,
                           extent=extent(np.asarray(mip["x_mm"], float), np.asarray(mip["z_mm"], float)),
                           aspect="equal", interpolation="nearest")
            if z_lim is not None:
                ax.set_ylim(*z_lim)
            ax.set_title(f"local SPECT {sw.get('label', '')}\nSUV, anterior MIP", fontsize=9)
            ax.set_xlabel("x (mm)")
            fig.colorbar(im, ax=ax, shrink=0.5, label="SUV")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
