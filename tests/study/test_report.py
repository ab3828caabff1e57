"""Study report: lesion table, threshold statistics with intervals, embedded figures, clear errors."""
from __future__ import annotations

import base64
import csv
import json
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from her2sim.core.errors import ConfigError, DataError  # noqa: E402
from her2sim.report import (bias_summary, find_figures, load_summary, read_lesion_table,  # noqa: E402
                            threshold_table, write_report)

LESION_COLUMNS = ["patient_id", "lesion_id", "type", "time_h", "realisation", "ihc", "her2_positive",
                  "diameter_mm", "true_suvmax", "true_suvmean", "suvmax", "suvmean", "suvpeak",
                  "pvc_rc_suvmean", "lbr", "cnr", "visual_positive"]
#: Two lesions of the seed trial's bilateral example (Zhao et al. 2024): IHC 2+ FISH+ SUVmax 2.7, IHC 0 SUVmax 0.8.
LESION_ROWS = [
    ["P001", 1, "primary", 1.0, 0, "2+", True, 20.0, 3.0, 2.0, 2.7, 1.8, 2.2, 2.1, 4.1, 12.0, True],
    ["P001", 2, "primary", 1.0, 0, "0", False, 20.0, 1.0, 0.5, 0.8, 0.45, 0.6, 0.52, 1.2, 1.5, False],
    ["P002", 1, "nodal", 2.0, 0, "3+", True, 12.5, 4.0, 2.5, 3.2, 2.25, 2.9, 2.6, 5.0, 9.7, True],
]
THRESHOLD = {
    "suvmax": {"threshold": 1.5, "n_lesions": 3, "tp": 2, "fp": 0, "tn": 1, "fn": 0,
               "sensitivity": 1.0, "sensitivity_ci": [0.3424, 1.0], "specificity": 1.0,
               "specificity_ci": [0.2065, 1.0], "ppv": 1.0, "ppv_ci": [0.3424, 1.0], "npv": 1.0,
               "npv_ci": [0.2065, 1.0], "accuracy": 1.0, "accuracy_ci": [0.4385, 1.0], "auc": 0.9876,
               "auc_ci": [0.8123, 1.0], "youden_threshold": 1.754, "youden_ci": [0.9132, 2.611],
               "undefined": {}},
    "pvc_rc_suvmean": {"threshold": 1.5, "n_lesions": 3, "tp": 2, "fp": 0, "tn": 1, "fn": 0,
                       "sensitivity": 1.0, "sensitivity_ci": [0.3424, 1.0], "specificity": None,
                       "specificity_ci": None, "auc": None, "auc_ci": None, "youden_threshold": None,
                       "youden_ci": None, "undefined": {"auc": "all lesions are HER2-positive"}},
}


def _png(path: Path, title: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1.5, 1.2), dpi=40)
    ax.plot([0, 1, 2], [0, 1, 0.5])
    ax.set_title(title)
    fig.savefig(path)
    plt.close(fig)
    return path


def make_study(root: Path) -> Path:
    """A tiny study folder with the files the report reads (no simulation)."""
    study = root / "mini"
    (study / "results" / "figures").mkdir(parents=True)
    (study / "study.toml").write_text('[study]\nname = "mini"\nseed = 4242\n\n[analysis]\nthreshold = 1.5\n')
    with open(study / "results" / "lesions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(LESION_COLUMNS)
        w.writerows(LESION_ROWS)
    _png(study / "results" / "figures" / "suv_vs_ihc.png", "suv")
    _png(study / "results" / "figures" / "recovery_curves.png", "rc")
    _png(study / "results" / "figures" / "mip_recon_P001_t1h.png", "mip")
    (study / "calibration").mkdir()
    (study / "calibration" / "calibration.json").write_text(json.dumps(
        {"bq_per_ml_per_count_rate": 1234.5, "sensitivity_cps_per_mbq": 71.6,
         "rc": {"37": 0.83, "10": 0.21, "22": 0.61}, "rc_max": {"37": 1.02, "10": 0.33, "22": 0.88},
         "mc_summary": {"photopeak": {"counts": 2.2e6, "scatter_to_total": 0.2875,
                                      "scatter_order_fractions": {"scatter1": 0.8125, "scatter2": 0.1875}}}}))
    summary = {"study": "mini", "patients": ["P001", "P002"], "scans": 4,
               "stage_seconds": {"phantoms": 1.25, "simulate": 10.5, "recon": 3.0},
               "outputs": {"lesions": "results/lesions.csv", "dicom": "dicom"},
               "threshold": THRESHOLD,
               "calibration": {"bq_per_ml_per_count_rate": 1234.5},
               "mc_summary": {"photopeak": {"counts": 1.5e6, "cps_per_mbq": 71.6, "scatter_to_total": 0.312},
                              "scatter": {"counts": 4.1e5, "cps_per_mbq": 19.3, "scatter_to_total": 0.871}},
               "config": {"study": {"name": "mini", "seed": 4242}},
               "versions": {"her2sim": "0.1.0", "numpy": "1.26.4"},
               "seeds": {"study": 4242, "monte_carlo": 99},
               "statistics": {"1h": {"spearman_suvmax_ihc": {"rho": 0.8661, "p": 0.3333, "n": 3,
                                                             "r2_group_means": None}}},
               "figures": [str(study / "results" / "figures" / "suv_vs_ihc.png"), "results/figures/roc_suvmax.png"]}
    summary["outputs"]["figures"] = summary["figures"]
    (study / "results" / "summary.json").write_text(json.dumps(summary))
    return study


@pytest.fixture
def study(tmp_path):
    return make_study(tmp_path)


def _cells(html_text: str) -> list:
    return re.findall(r"<td>(.*?)</td>", html_text)


def test_html_report_holds_lesion_rows_threshold_numbers_and_embedded_images(study):
    path = write_report(study, "html")
    assert path == study / "report.html"
    text = path.read_text()
    cells = _cells(text)
    # every lesion row appears with its identity and measured values
    for pid, lid, ihc, suvmax in (("P001", "1", "2+", "2.7"), ("P001", "2", "0", "0.8"), ("P002", "1", "3+", "3.2")):
        assert re.search(rf"<tr><td>{pid}</td><td>{lid}</td><td>[a-z]+</td>.*?<td>{re.escape(ihc)}</td>", text)
        assert suvmax in cells
    # truth, measured and PVC columns are all there, grouped truth -> measured -> PVC
    header = re.findall(r"<th>(.*?)</th>", text)
    assert (header.index("true_suvmax") < header.index("suvmax") < header.index("pvc_rc_suvmean")
            < header.index("lbr"))
    # threshold statistics with their intervals
    assert "0.9876 [0.8123, 1]" in cells
    assert "1.754 [0.9132, 2.611]" in cells
    assert "1 [0.3424, 1]" in cells
    assert "2/0/1/0" in cells
    assert "all lesions are HER2-positive" in text
    # MC table per window, calibration factors and RC sorted by diameter
    assert "0.312" in cells and "0.871" in cells and "71.6" in cells
    assert cells.index("10") < cells.index("22") < cells.index("37")
    assert re.search(r"<td>22</td><td>0.61</td><td>0.88</td>", text)  # rc and rc_max side by side
    assert "scatter_order_fractions.scatter2" in text and "0.1875" in cells  # calibration-scan MC table
    assert "spearman_suvmax_ihc.rho" in text and "0.8661" in cells  # seed-paper statistics
    assert "<td>figures</td><td>2 files</td><td>1/2 present</td>" in text
    assert "1234.5" in cells  # calibration factor, 6 significant digits
    # figures embedded as data URIs, byte for byte
    for name in ("suv_vs_ihc.png", "recovery_curves.png", "mip_recon_P001_t1h.png"):
        b64 = base64.b64encode((study / "results" / "figures" / name).read_bytes()).decode()
        assert f'src="data:image/png;base64,{b64}"' in text
    assert text.count("<img ") == 3
    assert "SUVmax = 1.5" in text  # caption of the SUV vs IHC figure
    assert "results/figures/roc_suvmax.png is listed in the summary but missing" in text
    # config, versions, seeds and the reproduce command
    assert "seed = 4242" in text and "numpy" in text and "1.26.4" in text
    assert "her2sim run study.toml" in text
    assert "<td>lesions</td><td>results/lesions.csv</td><td>yes</td>" in text
    assert "<td>dicom</td><td>dicom</td><td>missing</td>" in text


def test_bias_summary_against_truth():
    cols = LESION_COLUMNS
    rows = [dict(zip(cols, map(str, r))) for r in LESION_ROWS]
    t = bias_summary(rows, cols)
    by = {r[0]: r for r in t.rows}
    # suvmax: (2.7-3)/3 = -10 %, (0.8-1)/1 = -20 %, (3.2-4)/4 = -20 % -> mean -16.67 %, RMS sqrt((1+4+4)/3)*10 %
    assert by["suvmax"][3] == "-16.7" and by["suvmax"][4] == f"{(3.0 ** 0.5) * 10:.1f}"
    # PVC column compared with true_suvmean: (2.1-2)/2 = +5 %, (0.52-0.5)/0.5 = +4 %, (2.6-2.5)/2.5 = +4 %
    assert by["pvc_rc_suvmean"][1] == "true_suvmean" and by["pvc_rc_suvmean"][3] == "+4.3"
    assert "suvpeak" not in by  # no true_suvpeak column


def test_bias_uses_true_suv_for_the_mean_and_its_pvc():
    cols = ["patient_id", "true_suv", "true_suvmax", "suvmean", "suvmax", "pvc_gtm_suvmean"]
    rows = [{"patient_id": "A", "true_suv": 2.0, "true_suvmax": 3.0, "suvmean": 1.5, "suvmax": 2.4,
             "pvc_gtm_suvmean": 2.2}]
    by = {r[0]: r for r in bias_summary(rows, cols).rows}
    assert by["suvmean"][1:4] == ["true_suv", "1", "-25.0"]
    assert by["pvc_gtm_suvmean"][1:4] == ["true_suv", "1", "+10.0"]
    assert by["suvmax"][1:4] == ["true_suvmax", "1", "-20.0"]


def test_fallbacks_without_runtime_fields(tmp_path):
    import numpy

    study = make_study(tmp_path)
    summary = json.loads((study / "results" / "summary.json").read_text())
    for k in ("versions", "seeds", "stage_seconds", "outputs", "config"):
        summary.pop(k)
    (study / "results" / "summary.json").write_text(json.dumps(summary))
    (study / ".stages").mkdir()
    (study / ".stages" / "simulate_P001.json").write_text(json.dumps({"key": "k", "outputs": [], "seconds": 12.75}))
    text = write_report(study).read_text()
    assert "Stage run times (from the .stages manifests)" in text and "<td>simulate_P001</td><td>12.75</td>" in text
    assert "<td>study</td><td>4242</td>" in text  # seed read from study.toml
    assert "installed when this report was written" in text and f"<td>numpy</td><td>{numpy.__version__}</td>" in text
    assert "The master seed 4242" in text


def test_markdown_report_links_images_relatively(study):
    path = write_report(study, "markdown")
    assert path == study / "report.md"
    text = path.read_text()
    assert "](results/figures/suv_vs_ihc.png)" in text
    assert "| P002 | 1 | nodal |" in text
    assert "0.9876 [0.8123, 1]" in text
    assert "base64" not in text


def test_report_is_reproducible_and_written_atomically(study):
    a = write_report(study, "html").read_bytes()
    b = write_report(study, "html").read_bytes()
    assert a == b
    assert not list(study.glob(".report.html.*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    assert (study / "report.html").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]"])
def test_missing_or_corrupt_summary_is_a_data_error_naming_the_file(study, content):
    summary = study / "results" / "summary.json"
    if content is None:
        summary.unlink()
    else:
        summary.write_text(content)
    with pytest.raises(DataError) as info:
        write_report(study)
    assert str(summary) in str(info.value)
    assert not (study / "report.html").exists()


def test_unknown_format_is_a_config_error(study):
    with pytest.raises(ConfigError, match="report format = 'pdf'"):
        write_report(study, "pdf")


def test_lesion_table_falls_back_to_patient_json_and_tolerates_missing_parts(tmp_path):
    study = tmp_path / "bare"
    (study / "results").mkdir(parents=True)
    (study / "results" / "summary.json").write_text(json.dumps({"study": "bare"}))
    (study / "patients" / "P9").mkdir(parents=True)
    (study / "patients" / "P9" / "lesions.json").write_text(json.dumps(
        [{"patient_id": "P9", "lesion_id": 3, "suvmax": 1.4321, "true_suvmax": 2.0}]))
    cols, rows, source = read_lesion_table(study)
    assert source == "patients/*/lesions.json" and rows[0]["lesion_id"] == 3
    text = write_report(study).read_text()
    assert "<td>P9</td><td>3</td>" in text and "1.432" in text
    assert "No threshold statistics" in text and "No figures were found" in text


def test_threshold_table_and_figure_groups(study):
    summary = load_summary(study)
    t = threshold_table(summary["threshold"])
    assert [r[0] for r in t.rows] == ["suvmax", "pvc_rc_suvmean"]
    assert t.rows[1][t.columns.index("AUC")] == "-"
    figs = {f.path.name: f.group for f in find_figures(study, summary)}
    assert figs["recovery_curves.png"] == "calibration" and figs["suv_vs_ihc.png"] == "results"
    assert figs["roc_suvmax.png"] == "results"
