"""StudyLayout: the one place that names the files of a study folder (issue 16)."""
from pathlib import Path

import pytest

from her2sim.core.errors import DataError
from her2sim.study_layout import StudyLayout, find_scans, time_tag


def test_layout_names_every_file_the_pipeline_writes(tmp_path):
    lay = StudyLayout(tmp_path)
    assert lay.relative(lay.phantom("P001")) == "patients/P001/phantom.h5"
    assert lay.relative(lay.noisy("P001", 2.0, 3)) == "patients/P001/t2h/noisy_r3.h5"
    assert lay.relative(lay.recon("P001", 1.5)) == "patients/P001/t1.5h/recon_r0.h5"
    assert lay.relative(lay.mc_scatter("P001", 1.0, 1)) == "patients/P001/t1h/mc_scatter_r1.h5"
    assert lay.relative(lay.lesions_csv) == "results/lesions.csv"
    assert lay.relative(lay.calibration_json) == "calibration/calibration.json"
    assert time_tag(1.0) == "t1h" and time_tag(0.25) == "t0.25h"


def test_find_scans_reads_the_layout_and_names_what_is_missing(tmp_path):
    lay = StudyLayout(tmp_path)
    for t in (1.0, 2.0):
        lay.scan_dir("P002", t).mkdir(parents=True)
        lay.recon("P002", t, 1).write_bytes(b"")
    lay.phantom("P002").write_bytes(b"")
    scans = find_scans(tmp_path)
    assert [(s.patient_id, s.time_h, s.realisation) for s in scans] == [("P002", 1.0, 1), ("P002", 2.0, 1)]
    assert scans[0].recon == lay.recon("P002", 1.0, 1) and scans[0].projections is None
    with pytest.raises(DataError, match="--time-h = 3 has no folder"):
        find_scans(tmp_path, time_h=3.0)
    with pytest.raises(DataError, match="no patient folders"):
        find_scans(Path(tmp_path) / "nothing")
