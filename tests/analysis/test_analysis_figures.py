"""Smoke tests: every figure function writes a non-empty PNG (her2sim.analysis.figures)."""
import numpy as np

from her2sim.analysis import figures, pvc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_all_figures_write_png(tmp_path):
    rng = np.random.default_rng(0)
    ihc = np.repeat([0, 1, 2, 3], 6)
    pos = ihc == 3
    suv = np.array([0.8, 1.2, 2.0, 3.5])[ihc] * rng.lognormal(0, 0.3, ihc.size)
    pid = np.arange(ihc.size) // 2
    d = np.array([10, 13, 17, 22, 28, 37.0])
    rc = pvc.analytic_rc_mean(d, 12.0)
    paths = [
        figures.plot_suv_vs_ihc(suv, ihc, pos, tmp_path / "ihc.png"),
        figures.plot_recovery_curves(d, rc, tmp_path / "rc.png", rc_corrected=np.minimum(rc * 1.6, 1.05),
                                     rc_analytic=rc),
        figures.plot_roc(pos, suv, tmp_path / "roc.png", patient_ids=pid, n_boot=100),
        figures.plot_measured_vs_true(suv, suv * 0.8, tmp_path / "mvt.png"),
        figures.plot_bias_vs_size(np.linspace(8, 40, ihc.size), suv, suv * 0.8, tmp_path / "bias.png"),
        figures.plot_bland_altman(suv, suv * 0.9 + 0.05, tmp_path / "ba.png", label_a="1 h", label_b="2 h"),
    ]
    for p in paths:
        assert _is_png(p), p
