"""Threshold statistics (her2sim.analysis.threshold) and seed-paper tests (her2sim.analysis.stats)."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from her2sim.core.errors import ConfigError, DataError
from her2sim.analysis import stats as hstats
from her2sim.analysis import threshold as th

# hand-made cohort: 4 HER2+ and 6 HER2- lesions
TRUTH = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
VALUES = np.array([2.0, 1.6, 1.5, 1.2, 1.7, 1.4, 1.0, 0.8, 0.5, 1.49])


def test_binary_metrics_hand_computed():
    r = th.binary_metrics(TRUTH, VALUES, 1.5)
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (3, 1, 1, 5)  # 1.5 >= 1.5 is positive
    assert r["sensitivity"] == pytest.approx(0.75)
    assert r["specificity"] == pytest.approx(5 / 6)
    assert r["ppv"] == pytest.approx(0.75)
    assert r["npv"] == pytest.approx(5 / 6)
    assert r["accuracy"] == pytest.approx(0.8)
    # Wilson 95 % interval of 8/10 = (0.4902, 0.9434) (Newcombe 1998 formula, by hand)
    assert r["accuracy_ci"] == pytest.approx((0.4902, 0.9434), abs=1e-4)
    cp = th.binary_metrics(TRUTH, VALUES, 1.5, ci_method="clopper-pearson")
    assert cp["accuracy_ci"] == pytest.approx((0.4439, 0.9748), abs=1e-4)  # exact binomial 8/10
    assert r["undefined"] == {}


def test_wilson_limits_and_errors():
    assert th.wilson_interval(0, 10)[0] == 0.0
    assert th.wilson_interval(10, 10)[1] == 1.0
    # Wilson lower bound at k = n: n / (n + z^2)
    assert th.wilson_interval(10, 10)[0] == pytest.approx(10 / (10 + 1.959964 ** 2), rel=1e-6)
    assert th.clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    with pytest.raises(ConfigError, match="k"):
        th.wilson_interval(11, 10)
    with pytest.raises(ConfigError, match="ci_method"):
        th.binary_metrics(TRUTH, VALUES, ci_method="exact")


def test_known_roc_table_sklearn_example():
    # the scikit-learn roc_curve documentation example: AUC 0.75
    r = th.roc_table([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert r["auc"] == pytest.approx(0.75)
    assert r["fpr"].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert r["tpr"].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert r["thresholds"][1:].tolist() == [0.8, 0.4, 0.35, 0.1]


def test_auc_and_youden_hand_computed():
    # 19 of the 24 (positive, negative) pairs are ordered correctly
    assert th.auc(TRUTH, VALUES) == pytest.approx(19 / 24)
    y = th.youden_threshold(TRUTH, VALUES)
    assert y["threshold"] == 1.5
    assert y["j"] == pytest.approx(0.75 + 5 / 6 - 1)


def test_fast_bootstrap_path_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(4, 40))
        t = rng.random(n) < 0.5
        t[0], t[1] = True, False
        v = np.round(rng.normal(size=n) + t, 1)
        a, cut = th._auc_and_youden_fast(t, v)
        assert a == pytest.approx(th.auc(t, v), abs=1e-12)
        assert cut == th.youden_threshold(t, v)["threshold"]


def test_single_class_is_reported_not_nan():
    t = np.ones(5, bool)
    v = np.array([1.0, 2.0, 3.0, 0.5, 1.6])
    with pytest.raises(DataError, match="HER2-positive"):
        th.auc(t, v)
    r = th.evaluate_threshold(t, v, np.arange(5), n_boot=50)
    assert r["specificity"] is None and "specificity" in r["undefined"]
    assert r["auc"] is None and "auc" in r["undefined"]
    assert r["sensitivity"] == pytest.approx(3 / 5)


def test_bootstrap_resamples_patients_and_is_seeded():
    rng = np.random.default_rng(5)
    n_pat = 20
    t = np.r_[np.ones(8, bool), np.zeros(12, bool)]
    v = rng.normal(1.0, 0.5, n_pat) + 1.0 * t
    pid = np.arange(n_pat)
    one = th.bootstrap_roc(t, v, pid, n_boot=300, seed=3)
    # every patient with two identical lesions: AUC, Youden and the patient bootstrap are unchanged
    two = th.bootstrap_roc(np.repeat(t, 2), np.repeat(v, 2), np.repeat(pid, 2), n_boot=300, seed=3)
    assert two["auc"] == pytest.approx(one["auc"])
    assert two["auc_ci"] == pytest.approx(one["auc_ci"])
    assert two["youden_ci"] == pytest.approx(one["youden_ci"])
    # a lesion-level bootstrap would treat the duplicates as independent and shrink the interval
    lesion = th.bootstrap_roc(np.repeat(t, 2), np.repeat(v, 2), np.arange(2 * n_pat), n_boot=300, seed=3)
    assert (lesion["auc_ci"][1] - lesion["auc_ci"][0]) < (one["auc_ci"][1] - one["auc_ci"][0])
    again = th.bootstrap_roc(t, v, pid, n_boot=300, seed=3)
    assert again["auc_ci"] == one["auc_ci"]
    assert one["auc_ci"][0] <= one["auc"] <= one["auc_ci"][1]


def test_visual_read_rose_criterion():
    r = th.visual_read([1.5, 1.5, 1.2], [1.0, 1.0, 1.0], [0.1, 0.2, 0.1])
    assert np.allclose(r["cnr"], [5.0, 2.5, 2.0])
    assert r["positive"].tolist() == [True, False, False]
    r2 = th.visual_read(1.25, 1.0, 0.125, k=2.0)  # CNR exactly 2 meets k = 2
    assert r2["positive"] is True
    with pytest.raises(DataError, match="background_sd"):
        th.visual_read(1.2, 1.0, 0.0)


def _write_csv(path):
    rows = ["patient_id,lesion_id,her2_positive,ihc,suvmax,suvmean"]
    for i, (t, v) in enumerate(zip(TRUTH, VALUES)):
        rows.append(f"P{i // 2},{i},{int(t)},{3 if t else 0},{v},{v / 2}")
    path.write_text("\n".join(rows) + "\n")


def test_cli_json(tmp_path, capsys):
    p = tmp_path / "lesions.csv"
    _write_csv(p)
    assert th.main([str(p), "--threshold", "1.5", "--metric", "suvmax", "--seed", "1", "--json",
                    "--n-boot", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "auc", "auc_ci", "youden_threshold",
              "youden_ci", "threshold", "n_lesions", "n_patients", "sensitivity_ci"):
        assert k in out
    assert out["n_lesions"] == 10 and out["n_patients"] == 5
    assert out["sensitivity"] == pytest.approx(0.75)
    assert out["auc"] == pytest.approx(19 / 24)
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,suvmax\nP1,2.0\n")
    assert th.main([str(bad), "--json"]) == 2
    assert "her2_positive" in capsys.readouterr().err


def test_module_help_runs():
    r = subprocess.run([sys.executable, "-m", "her2sim.analysis.threshold", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "--threshold" in r.stdout


# ----------------------------------------------------------------------------- stats
def test_student_welch_mannwhitney_hand_values():
    r = hstats.compare_groups([4, 5, 6], [1, 2, 3])
    # pooled variance 1, SE sqrt(2/3): t = 3 / 0.8165 = 3.674, df 4
    assert r["student"]["t"] == pytest.approx(3 / math.sqrt(2 / 3))
    assert r["student"]["df"] == 4
    assert r["welch"]["t"] == pytest.approx(3 / math.sqrt(2 / 3))
    assert r["welch"]["df"] == pytest.approx(4.0)
    # complete separation, n = 3 + 3: U = 9 and exact two-sided p = 2 / C(6, 3) = 0.1
    assert r["mann_whitney"]["u"] == 9
    assert r["mann_whitney"]["p"] == pytest.approx(0.1)
    assert r["positive"]["mean"] == 5 and r["positive"]["sd"] == pytest.approx(1.0)
    with pytest.raises(DataError):
        hstats.compare_groups([1, 1], [1, 1])


def test_spearman_and_group_means():
    ihc = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    suv = np.array([0.7, 0.9, 1.1, 1.3, 1.9, 2.1, 3.3, 3.7])
    r = hstats.spearman_ihc(suv, ihc)
    # Spearman = Pearson correlation of mid-ranks; IHC ranks 1.5, 1.5, 3.5, 3.5, ... and SUV ranks 1..8
    rx, ry = np.repeat([1.5, 3.5, 5.5, 7.5], 2), np.arange(1.0, 9.0)
    rho = np.sum((rx - rx.mean()) * (ry - ry.mean())) / math.sqrt(np.sum((rx - rx.mean()) ** 2) * np.sum((ry - ry.mean()) ** 2))
    assert r["rho"] == pytest.approx(rho)
    g = hstats.group_mean_sd(suv, ihc)
    assert g[2]["mean"] == pytest.approx(2.0) and g[2]["sd"] == pytest.approx(math.sqrt(0.02))
    # group means 0.8, 1.2, 2.0, 3.5 vs IHC 0..3: r^2 of the straight-line fit by hand
    x, y = np.arange(4.0), np.array([0.8, 1.2, 2.0, 3.5])
    sxy = np.sum((x - x.mean()) * (y - y.mean()))
    r2 = sxy ** 2 / (np.sum((x - x.mean()) ** 2) * np.sum((y - y.mean()) ** 2))
    assert r["r2_group_means"] == pytest.approx(r2)
    with pytest.raises(DataError, match="ihc"):
        hstats.spearman_ihc([1, 2, 3], [0, 1, 5])


def test_bias_rmse_and_paired():
    b = hstats.bias_rmse([1.1, 1.8, 3.3], [1.0, 2.0, 3.0])
    assert b["bias"] == pytest.approx((0.1 - 0.2 + 0.3) / 3)
    assert b["rmse"] == pytest.approx(math.sqrt((0.01 + 0.04 + 0.09) / 3))
    assert b["relative_bias_pct"] == pytest.approx(100 * (0.1 - 0.1 + 0.1) / 3)
    p = hstats.paired_test([1, 2, 3, 4], [2, 4, 5, 7])
    # differences 1, 2, 2, 3: mean 2, SD sqrt(2/3), t = 2 / (SD / 2)
    assert p["mean_difference"] == 2.0
    assert p["t"] == pytest.approx(2 / (math.sqrt(2 / 3) / 2))
    ba = hstats.bland_altman([2, 4, 5, 7], [1, 2, 3, 4])
    assert ba["mean_difference"] == 2.0
    assert ba["loa"] == pytest.approx((2 - 1.96 * math.sqrt(2 / 3), 2 + 1.96 * math.sqrt(2 / 3)))
    with pytest.raises(DataError, match="zero"):
        hstats.paired_test([1, 2], [1, 2])


def test_fast_roc_points_match_sklearn():
    rng = np.random.default_rng(2)
    t = rng.random(30) < 0.4
    t[:2] = [True, False]
    v = np.round(rng.normal(size=30) + t, 1)
    r = th.roc_table(t, v)
    fpr, tpr, thr = th._roc_points_fast(t, v)
    assert np.allclose(fpr, r["fpr"][1:]) and np.allclose(tpr, r["tpr"][1:]) and np.allclose(thr, r["thresholds"][1:])


def test_write_then_read_lesion_csv(tmp_path):
    rows = [{"patient_id": "P1", "lesion_id": 1, "her2_positive": True, "ihc": 3, "suvmax": 2.5, "suvpeak": 2.1},
            {"patient_id": "P2", "lesion_id": 1, "her2_positive": False, "ihc": 1, "suvmax": 0.9, "suvpeak": 0.7}]
    p = th.write_lesion_csv(rows, tmp_path / "l.csv")
    t = th.read_lesion_csv(p)
    assert t["her2_positive"].tolist() == [True, False]
    assert t["suvpeak"].tolist() == [2.1, 0.7]
    assert t["ihc"].tolist() == [3, 1]


def test_call_rate_by_group_hand_counts():
    r = th.call_rate_by_group([1.6, 1.4, 1.5, 2.0, 0.9], ["small", "small", "large", "large", "large"], 1.5)
    assert r["small"]["n_positive"] == 1 and r["small"]["rate"] == 0.5
    assert r["large"]["rate"] == pytest.approx(2 / 3)
    assert r["large"]["ci"] == pytest.approx(th.wilson_interval(2, 3))


def test_lesion_rows_join_truth_and_feed_the_cli(tmp_path, capsys):
    from her2sim.core.grid import Grid
    from her2sim.analysis import voi
    from her2sim.analysis.lesion_table import lesion_rows
    from her2sim.analysis.lesion_truth import lesions_on_grid
    g = Grid.centered((20, 30, 40), 2.0)
    frac = np.zeros(g.shape, np.float32)
    owner = np.zeros(g.shape, np.int16)
    for lid, c, d in ((1, (0, 0, -15), 14.0), (2, (0, 0, 15), 14.0), (3, (0, 10, 0), 6.0)):
        f = voi.sphere_mask(g, c, d).astype(np.float32)
        owner[f > 0] = lid
        frac += f
    lab = np.where(frac >= 0.5, owner, 0)
    img = np.where(lab == 1, 3.5, np.where(lab == 2, 0.8, 0.3))
    own = np.stack([frac * np.where(owner == 1, 3.5, 0.8)] * 2)
    truth = [{"id": 1, "type": "primary", "ihc": 3, "her2_positive": True, "suv_intrinsic_mean": [3.5, 3.6],
              "diameter_mm": 14},
             {"id": 2, "type": "primary", "ihc": 0, "her2_positive": False, "suv_intrinsic_mean": [0.8, 0.7],
              "diameter_mm": 14},
             {"id": 3, "type": "inflammation", "ihc": None, "her2_positive": False},
             {"id": 4, "type": "node", "ihc": 2, "her2_positive": True, "in_fov": False}]
    lesions = lesions_on_grid(g, g, frac, owner, own, truth)
    rows = lesion_rows(img, g, lesions, truth, "P7", time_index=1)
    assert [r["lesion_id"] for r in rows] == [1, 2, 4]
    assert rows[2]["measured"] is False and rows[2]["unmeasured_reason"] == "outside_phantom"
    assert rows[0]["suvmax"] == 3.5 and rows[0]["true_suv_intrinsic"] == 3.6 and rows[1]["suvmean"] == pytest.approx(0.8)
    p = th.write_lesion_csv(rows, tmp_path / "rows.csv")
    assert th.main([str(p), "--json", "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sensitivity"] == 1.0 and out["specificity"] == 1.0
    # one patient holding both classes: every patient resample is that patient, so the CI collapses
    assert out["auc"] == 1.0 and out["auc_ci"] == [1.0, 1.0] and out["n_patients"] == 1
    assert out["n_missing"] == 1          # the unmeasured lesion's row has no SUVmax
