"""Energy spectra plots and the SIMIND-like text summary of a Monte Carlo run."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .transport import COMPONENTS, MonteCarloResult


def plot_spectra(result: MonteCarloResult, path, log: bool = True) -> Path:
    """Detected-energy spectra (total, primary, scatter orders) with the energy windows shaded; PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    e = result.spectrum_kev
    for name in ("total",) + COMPONENTS:
        y = result.spectra.get(name)
        if y is None or not np.any(y > 0):
            continue
        ax.plot(e, y, lw=2.0 if name == "total" else 1.2, label=name)
    for w in result.projections.windows:
        ax.axvspan(w.lower_kev, w.upper_kev, alpha=0.12, color="grey")
        ax.text(w.center_kev, 1.0, w.name, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8)
    cut = result.stats.get("e_cut_kev")
    if cut:
        ax.axvline(cut, color="k", ls=":", lw=1)
        ax.text(cut, 0.02, " tracking cut-off\n (no window below)", transform=ax.get_xaxis_transform(), fontsize=7)
    ax.set_xlim(80, 170)
    if log:
        ax.set_yscale("log")
        top = max(float(np.max(result.spectra["total"])), 1e-30)
        ax.set_ylim(top * 1e-4, top * 2)
    ax.set_xlabel("detected energy (keV)")
    ax.set_ylabel("counts per keV (all views)")
    ax.set_title("99mTc spectrum by scatter order in the patient (fast mode)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_text(result: MonteCarloResult) -> str:
    """A SIMIND-like per-window summary: counts, cps/MBq, S/T, S/P, scatter-order fractions."""
    s = result.summary()
    st = result.stats
    lines = ["her2sim Monte Carlo summary (fast mode: forced detection + depth-dependent CDR)",
             f"  histories {st.get('n_histories')}, interaction vertices {st.get('n_vertices')}, "
             f"threads {st.get('threads')}, {st.get('seconds_total', 0):.1f} s",
             f"  {'window':<12}{'keV':>15}{'counts':>14}{'cps/MBq':>10}{'S/T':>8}{'S/P':>8}{'1st':>7}{'2nd':>7}"
             f"{'3rd+':>7}{'MC err':>9}"]
    for name, w in s.items():
        f = w["scatter_order_fractions"]
        err = w.get("relative_mc_error")
        lines.append(f"  {name:<12}{w['lower_kev']:>7.2f}-{w['upper_kev']:<7.2f}{w['counts']:>14.4g}"
                     f"{w['cps_per_mbq']:>10.3g}{w['scatter_to_total']:>8.3f}{w['scatter_to_primary']:>8.3f}"
                     f"{f['scatter1']:>7.3f}{f['scatter2']:>7.3f}{f['scatter3plus']:>7.3f}"
                     f"{(err if err is not None else float('nan')):>9.2e}")
    return "\n".join(lines)
