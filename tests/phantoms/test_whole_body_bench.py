"""bench/whole_body.py: stable JSON keys, the demo patient's hottest structures, the PNG (coarse, few histories)."""

import pytest

from bench_modules import load_bench

KEYS = {"anatomy", "hottest_structures", "organ_counts", "total_counts", "bladder_activity_mbq", "seconds_sim", "matrix",
        "pixel_mm", "speed_cm_per_min", "dwell_s", "sweep_seconds", "n_histories", "grid", "meets_targets", "png"}


@pytest.fixture(scope="module")
def bench():
    return load_bench("whole_body")


def test_bench_keys_and_target_on_a_coarse_run(bench, tmp_path):
    res = bench.run(speed_cm_per_min=15.0, histories=20_000, matrix=(512, 128), out_dir=tmp_path)
    assert set(res) == KEYS and res["anatomy"] == "v1"
    assert res["matrix"] == [512, 128] and res["pixel_mm"] == 4.42 and res["speed_cm_per_min"] == 15.0
    assert res["dwell_s"] == pytest.approx(160.0)
    for key in ("1h", "2h"):
        assert set(res["hottest_structures"][key][:3]) == {"liver", "kidneys", "bladder"}
        assert set(res["organ_counts"][key]) == set(bench.STRUCTURES)
    # renal excretion: more activity in the bladder at 2 h than at 1 h, despite 1 h of physical decay
    assert res["bladder_activity_mbq"]["2h"] > res["bladder_activity_mbq"]["1h"]
    assert res["meets_targets"] == {"liver_kidneys_bladder_hottest": True}
    assert (tmp_path / "whole_body.png").stat().st_size > 10_000


def test_matrix_option_parsing(bench):
    assert bench._matrix("1024x256") == (1024, 256)
    with pytest.raises(Exception, match="ROWSxCOLUMNS"):
        bench._matrix("1024")
