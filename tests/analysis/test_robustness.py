"""Threshold robustness from noise realisations (issue 13): wCV, P(positive), call stability,
realisation-nested patient bootstrap, the figure, the pipeline product and the bad-input errors."""
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from her2sim.analysis.robustness import (call_stability, median_wcv_pct, nested_bootstrap_threshold,
                                         p_positive_table, plot_p_positive, realisation_spread, size_bin)
from her2sim.config import load_study, override_study, preset_path
from her2sim.core.errors import ConfigError, DataError


def _row(pid, lid, t, k, suvmax, pos=True, true_suv=1.0, d=20.0, **kw):
    return {"patient_id": pid, "lesion_id": lid, "time_h": t, "realisation": k, "suvmax": suvmax,
            "suvmean": kw.pop("suvmean", suvmax * 0.6), "her2_positive": pos, "true_suv": true_suv,
            "diameter_mm": d, **kw}


def test_wcv_is_sd_over_mean_of_the_realisations():
    rows = [_row("P1", 1, 1.0, k, v) for k, v in enumerate([1.0, 1.2, 1.4])]
    rows += [_row("P1", 2, 1.0, k, v) for k, v in enumerate([2.0, 2.0, 2.6])]
    sp = realisation_spread(rows, "suvmax")
    assert [e["n"] for e in sp] == [3, 3]
    assert sp[0]["wcv_pct"] == pytest.approx(100 * 0.2 / 1.2)  # sd of (1.0, 1.2, 1.4) = 0.2
    assert sp[1]["wcv_pct"] == pytest.approx(100 * math.sqrt(0.12) / 2.2)  # var = (0.04*2 + 0.16)/2
    assert median_wcv_pct(rows, "suvmax") == pytest.approx(np.median([100 * 0.2 / 1.2, 100 * math.sqrt(0.12) / 2.2]))


def test_p_positive_counts_the_threshold_itself_and_each_pvc_column():
    vals = [1.4, 1.6, 1.5, 1.2]
    rows = [_row("P1", 1, 2.0, k, v, pvc_rbv_suvmax=v + 0.2) for k, v in enumerate(vals)]
    (e,) = p_positive_table(rows, 1.5)
    assert e["p_positive"] == {"suvmax": 0.5, "pvc_rbv_suvmax": 0.75}
    assert e["n_realisations"] == 4 and e["size_bin"] == "<30 mm"
    assert [size_bin(d) for d in (9.9, 10.0, 14.9, 25.0, 30.0)] == ["<10 mm", "<15 mm", "<15 mm", "<30 mm", ">=30 mm"]


def test_p_positive_matches_the_normal_tail_probability():
    """SUVmax ~ N(1.4, 0.2) over 4000 realisations: P(>= 1.5) = 1 - Phi(0.5) = 0.3085 within 4 binomial SE."""
    rng = np.random.default_rng(11)
    rows = [_row("P1", 1, 1.0, k, float(v)) for k, v in enumerate(rng.normal(1.4, 0.2, 4000))]
    p = p_positive_table(rows, 1.5)[0]["p_positive"]["suvmax"]
    exact = 1.0 - norm.cdf(0.5)
    assert abs(p - exact) <= 4 * math.sqrt(exact * (1 - exact) / 4000)


def test_call_stability_flip_probability_and_time_agreement():
    rows = [_row("P1", 1, 1.0, k, v) for k, v in enumerate([1.0, 1.0, 2.0, 2.0])]   # p = 0.5
    rows += [_row("P1", 1, 2.0, k, v) for k, v in enumerate([2.0, 2.0, 2.0, 2.0])]  # p = 1
    cs = call_stability(rows, 1.5)
    assert cs["scans_lesions"] == 2 and cs["unanimous_fraction"] == 0.5
    assert cs["mean_flip_probability"] == pytest.approx((2 * 0.5 * 0.5 + 0.0) / 2)
    assert cs["agreement_1h_vs_2h"] == 0.5  # realisations 2, 3 agree; 0, 1 do not
    assert [u["lesion_id"] for u in cs["unstable"]] == [1]
    assert "undefined" in call_stability([_row("P1", 1, 1.0, 0, 1.0)], 1.5)


def _cohort(n_pat=12, n_real=10, noise=0.0, seed=0):
    """Patients with one HER2+ (true 1.8) and one HER2- (true 1.2) lesion, SUVmax = truth + N(0, noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_pat):
        for k in range(n_real):
            rows.append(_row(f"P{i:02d}", 1, 1.0, k, 1.8 + noise * rng.normal(), pos=True))
            rows.append(_row(f"P{i:02d}", 2, 1.0, k, 1.2 + noise * rng.normal(), pos=False))
    return rows


def test_nested_bootstrap_perfect_separation_and_determinism():
    rows = _cohort(noise=0.0)
    a = nested_bootstrap_threshold(rows, 1.5, n_boot=300, seed=4)["1h"]
    assert a["se"]["estimate"] == 1.0 and a["sp"]["estimate"] == 1.0 and a["auc"]["estimate"] == 1.0
    assert a["se"]["ci"] == [1.0, 1.0] and a["auc"]["ci"] == [1.0, 1.0]
    assert a["n_patients"] == 12 and a["n_realisations"] == 10
    noisy = _cohort(noise=0.3)
    assert nested_bootstrap_threshold(noisy, 1.5, n_boot=200, seed=4) == \
        nested_bootstrap_threshold(noisy, 1.5, n_boot=200, seed=4)


def test_nested_bootstrap_interval_includes_the_noise():
    """Identical patients, so all spread is image noise: SUVmax = 1.8 + N(0, 0.3) for HER2+ lesions. Without
    noise the Se interval is [1, 1]; with it, the estimate is the analytic P(N(1.8, 0.3) >= 1.5) = Phi(1) = 0.841
    (within 3 SE over 15 x 20 draws) and the 95 % interval is that of a binomial proportion over the 15 lesions a
    replicate holds, width 2 x 1.96 x sqrt(p (1 - p) / 15) = 0.37 (within 35 %)."""
    rows = _cohort(n_pat=15, n_real=20, noise=0.3, seed=2)
    nested = nested_bootstrap_threshold(rows, 1.5, n_boot=2000, seed=1)["1h"]
    se_true = norm.cdf(1.0)
    assert abs(nested["se"]["estimate"] - se_true) <= 3 * math.sqrt(se_true * (1 - se_true) / (15 * 20))
    width = nested["se"]["ci"][1] - nested["se"]["ci"][0]
    expected = 2 * 1.96 * math.sqrt(se_true * (1 - se_true) / 15)
    assert abs(width - expected) <= 0.35 * expected
    assert nested["se"]["ci"][0] <= se_true <= nested["se"]["ci"][1]
    lo, hi = nested["noise_only"]["se"]
    assert lo < nested["se"]["estimate"] < hi
    with pytest.raises(DataError, match="n_boot"):
        nested_bootstrap_threshold(rows, 1.5, n_boot=0)


def test_plot_p_positive_writes_a_png(tmp_path):
    rows = []
    for lid, (t_suv, d) in enumerate([(0.8, 8.0), (1.5, 12.0), (2.5, 25.0), (3.5, 35.0)], 1):
        for k in range(5):
            rows.append(_row("P1", lid, 1.0, k, t_suv + 0.1 * k, true_suv=t_suv, d=d, pvc_rbv_suvmax=t_suv + 0.3))
    p = plot_p_positive(p_positive_table(rows, 1.5), tmp_path / "p.png")
    assert p.exists() and p.stat().st_size > 5000
    with pytest.raises(DataError):
        plot_p_positive([], tmp_path / "q.png")


# ------------------------------------------------------------------------------------------ bad input
def test_noise_realisations_below_one_and_too_many_for_memory_are_one_line_errors():
    from her2sim.pipeline import check_noise_realisations
    cfg = load_study(preset_path("seed-trial"))
    bad = dataclasses.replace(cfg, monte_carlo=dataclasses.replace(cfg.monte_carlo, noise_realisations=0))
    with pytest.raises(ConfigError, match=r"noise_realisations = 0") as e:
        check_noise_realisations(bad)
    assert "\n" not in str(e.value)
    ten = override_study(cfg, ["monte_carlo.noise_realisations=10"])
    assert check_noise_realisations(ten, available_bytes=64 * 2**30) == 10
    with pytest.raises(ConfigError, match=r"noise_realisations = 10: .* GiB .* use at most \d+") as e:
        check_noise_realisations(ten, available_bytes=2**30)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="noise_realisations"):
        override_study(cfg, ["monte_carlo.noise_realisations=0"])  # the config loader rejects it too


def test_run_study_refuses_too_many_realisations_before_any_work(tmp_path, monkeypatch):
    import her2sim.pipeline as pl
    cfg = override_study(load_study(preset_path("seed-trial")), ["monte_carlo.noise_realisations=50"])
    monkeypatch.setattr(pl, "available_memory_bytes", lambda: 2 * 2**30)
    with pytest.raises(ConfigError, match="noise_realisations = 50"):
        pl.run_study(cfg, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()


def test_batch_memory_estimate_grows_linearly_with_the_batch():
    from her2sim.recon.osem import batch_memory_bytes
    one = batch_memory_bytes((128, 128, 128), (120, 128, 128), 2, 1, 2)
    two = batch_memory_bytes((128, 128, 128), (120, 128, 128), 2, 2, 2)
    ten = batch_memory_bytes((128, 128, 128), (120, 128, 128), 2, 10, 2)
    assert ten - one == pytest.approx(9 * (two - one))
    # a realisation holds at least its two windows of float32 counts and a float64 image
    assert two - one >= 2 * 120 * 128 * 128 * 4 + 128 ** 3 * 8


# ------------------------------------------------------------------------------------------ pipeline
STUDY = Path(__file__).parents[1] / "data" / "tiny_study.toml"


@pytest.fixture(scope="module")
def three_realisations(tmp_path_factory):
    from her2sim.pipeline import run_study
    out = tmp_path_factory.mktemp("noise3")
    cfg = override_study(load_study(STUDY), ["monte_carlo.noise_realisations=3"])
    return out, run_study(cfg, out, progress=False)


def test_pipeline_reconstructs_every_realisation_and_reports_robustness(three_realisations):
    from her2sim.core.containers import Image
    out, s = three_realisations
    imgs = [Image.load(out / "patients" / "P001" / "t1h" / f"recon_r{k}.h5") for k in range(3)]
    assert imgs[0].meta["batch"] == 3 and imgs[0].units == "Bq/mL"
    assert not np.allclose(imgs[0].array, imgs[1].array)  # independent noise
    # same expected projections: the realisations' means agree within Poisson noise (5 % of the total)
    tot = [float(im.array.sum()) for im in imgs]
    assert max(tot) / min(tot) < 1.05
    rob = s["robustness"]
    assert rob["noise_realisations"] == 3
    assert {e["n_realisations"] for e in rob["p_positive"]} == {3}
    assert Path(rob["figure"]).exists()
    assert "undefined" in rob["threshold_with_noise"]["suvmax"]["1h"]  # one patient: no patient bootstrap
    html = Path(s["outputs"]["report"]).read_text()
    assert "Threshold robustness under image noise" in html and "P(suvmax &gt;= thr)" in html


def test_one_realisation_says_robustness_is_undefined(tmp_path):
    from her2sim.analysis.robustness import study_robustness_summary
    rows = [_row("P1", 1, 1.0, 0, 1.7)]
    r = study_robustness_summary(rows, 1.5, 10, 0, tmp_path)
    assert "noise_realisations" in r["undefined"]


def test_seed_trial_preset_uses_the_clinical_butterworth_protocol():
    cfg = load_study(preset_path("seed-trial"))
    assert cfg.recon.butterworth_cutoff_cycles_per_cm == 0.48 and cfg.recon.butterworth_order == 10
    assert cfg.recon.psf and cfg.recon.attenuation and cfg.recon.scatter == "dew"
    off = override_study(cfg, ["recon.butterworth_cutoff_cycles_per_cm=0"])
    from her2sim.steps.scan import recon_kwargs
    assert recon_kwargs(off.recon, None, None, False)["butterworth"] is None
    assert recon_kwargs(cfg.recon, None, None, False)["butterworth"] == (0.48, 10)
    with pytest.raises(ConfigError, match="butterworth_order"):
        override_study(cfg, ["recon.butterworth_order=0"])
