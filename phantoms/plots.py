"""Figures of a phantom: orthogonal slices and maximum-intensity projections (PNG, matplotlib Agg).

Panels (rows): activity (Bq/mL, first or chosen time frame), CT (HU, soft-tissue window) and labels; columns:
axial, coronal and sagittal slices through a chosen point (default: the hottest lesion or the volume
centre) and an anterior MIP of the activity. Lesion outlines (``lesion_ids`` contours) are drawn in red
on every slice panel. Images are shown in radiological orientation: axial with anterior up and patient
right on the viewer's left; coronal and sagittal with superior up.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from her2sim.core.containers import Phantom  # noqa: E402
from her2sim.core.errors import ConfigError, check_int  # noqa: E402


def _slice_point(phantom: Phantom, point_mm):
    g = phantom.grid
    if point_mm is None:
        rows = [r for r in phantom.truth if r.get("location_mm") and None not in r["location_mm"]]
        inside = [r for r in rows if bool(g.contains_world(np.asarray(r["location_mm"], float)))]
        point_mm = inside[0]["location_mm"] if inside else g.center_mm
    idx = np.clip(np.round(g.world_to_index(np.asarray(point_mm, float))).astype(int), 0, np.asarray(g.shape) - 1)
    return tuple(int(i) for i in idx)


def _views(vol: np.ndarray, idx):
    """Axial (y down = posterior), coronal and sagittal slices with superior up."""
    iz, iy, ix = idx
    return [vol[iz], vol[:, iy, :][::-1], vol[:, :, ix][::-1]]


def plot_phantom(phantom: Phantom, path, frame: int = 0, point_mm=None, hu_window=(-160.0, 240.0),
                 dpi: int = 100) -> Path:
    """Write a 3 x 4 panel PNG (activity / CT / labels x axial / coronal / sagittal / MIP).

    Parameters
    ----------
    phantom : Phantom
    path : str or Path
        Output PNG file.
    frame : int
        Activity time frame index.
    point_mm : sequence of 3 float, optional
        World (z, y, x) point the slices pass through (default: first lesion in the FOV, else the centre).
    hu_window : (float, float)
        CT display window (HU).

    Returns
    -------
    Path
    """
    f = check_int("frame", frame, 0, phantom.activity_bq_per_ml.shape[0] - 1)
    if not hu_window[1] > hu_window[0]:
        raise ConfigError(f"hu_window = {hu_window} must be (low, high) with high > low")
    g = phantom.grid
    idx = _slice_point(phantom, point_mm)
    act = phantom.activity_bq_per_ml[f]
    les = phantom.lesion_ids if phantom.lesion_ids is not None else np.zeros(g.shape, np.int16)
    sp = g.spacing_mm
    aspects = [sp[1] / sp[2], sp[0] / sp[2], sp[0] / sp[1]]
    fig, axes = plt.subplots(3, 4, figsize=(16, 12))
    # display range: 8 x the median body concentration (about SUV 2-3), raised to show the hottest lesion
    pos = act[act > 0]
    vmax = 8.0 * float(np.median(pos)) if pos.size else 1.0
    if np.any(les > 0):
        vmax = max(vmax, float(act[les > 0].max()))
    rows = [(act, dict(cmap="hot", vmin=0.0, vmax=vmax), "activity (Bq/mL)"),
            (phantom.ct_hu, dict(cmap="gray", vmin=hu_window[0], vmax=hu_window[1]), "CT (HU)"),
            (phantom.labels, dict(cmap="tab20", vmin=0, vmax=max(int(phantom.labels.max()), 1),
                                  interpolation="nearest"), "labels")]
    titles = ["axial", "coronal", "sagittal"]
    for r, (vol, kw, name) in enumerate(rows):
        for c, (img, lab, asp) in enumerate(zip(_views(vol, idx), _views(les, idx), aspects)):
            ax = axes[r, c]
            im = ax.imshow(img, aspect=asp, **kw)
            if np.any(lab > 0):
                ax.contour(lab > 0, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{name}: {titles[c]}")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046)
    mips = [(act.max(axis=1)[::-1], "activity MIP (anterior)", dict(cmap="hot", vmin=0.0, vmax=vmax), aspects[1]),
            (act.max(axis=2)[::-1], "activity MIP (lateral)", dict(cmap="hot", vmin=0.0, vmax=vmax), aspects[2]),
            (phantom.ct_hu.max(axis=1)[::-1], "CT MIP (anterior)", dict(cmap="gray", vmin=-200, vmax=1200),
             aspects[1])]
    for r, (img, title, kw, asp) in enumerate(mips):
        ax = axes[r, 3]
        ax.imshow(img, aspect=asp, **kw)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    t = phantom.time_points_h[f]
    fig.suptitle(f"{phantom.meta.get('phantom_type', 'phantom')} {phantom.meta.get('patient_id') or ''} "
                 f"t = {t:g} h, slice index (z, y, x) = {idx}")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    from her2sim.core.atomic import savefig_atomic
    savefig_atomic(fig, out, dpi=dpi)
    plt.close(fig)
    return out
