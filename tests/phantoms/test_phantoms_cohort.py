"""Cohort generator: exact seed-trial marginals (Zhao et al., Breast Cancer Res 26:40, 2024), determinism,
spec handling, phantom summary / plots / HDF5 round trip."""
import json

import numpy as np
import pytest

from her2sim.core.containers import Phantom
from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.phantoms import (build_patient_phantom, cohort_summary, generate_cohort, load_cohort_spec,
                              phantom_summary, plot_phantom)

# The trial's table (biodistribution.md): 30 patients, 24 new + 6 treated, 32 primaries, IHC 6/10/6/10,
# metastases LN 17 / bone 3 / brain 1 / liver 2 patients, 3 inflammation, 9 heterogeneous.
SEED_TRIAL = {"patients": 30, "newly_diagnosed": 24, "treated": 6, "primaries": 32,
              "ihc_counts": {"0": 6, "1+": 10, "2+": 6, "3+": 10},
              "metastases": {"lymph_node": 17, "bone": 3, "brain": 1, "liver": 2},
              "inflammation": 3, "heterogeneous": 9}
TINY = Grid.centered((24, 40, 40), 10.0)


@pytest.mark.parametrize("seed", [0, 1, 2024])
def test_seed_trial_marginals_exact(seed):
    c = generate_cohort("seed-trial", seed)
    assert cohort_summary(c) == SEED_TRIAL
    treated = [ls["ihc"] for p in c["patients"] if p["group"] == "treated" for ls in p["lesions"]
               if ls["type"] == "primary"]
    assert sorted(treated) == ["0", "2+", "2+", "3+", "3+", "3+"]
    bil = [p for p in c["patients"] if sum(ls["type"] == "primary" for ls in p["lesions"]) == 2]
    assert len(bil) == 2
    for p in bil:
        a, b = [ls for ls in p["lesions"] if ls["type"] == "primary"]
        assert a["ihc"] != b["ihc"] and a["side"] != b["side"]
    for p in c["patients"]:
        for ls in p["lesions"]:
            if ls.get("ihc") == "2+":
                assert ls["fish"] in ("amplified", "not_amplified")
        assert p["time_points_h"] == [1.0, 2.0]


def test_cohort_is_deterministic_and_seed_dependent():
    a = generate_cohort("seed-trial", 5)
    b = generate_cohort("seed-trial", 5)
    c = generate_cohort("seed-trial", 6)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(a, sort_keys=True) != json.dumps(c, sort_keys=True)


def test_every_seed_trial_patient_builds_and_same_seed_same_phantom():
    c = generate_cohort("seed-trial", 3)
    for p in c["patients"]:
        ph = build_patient_phantom(p, grid=TINY)
        assert sum(r["type"] == "primary" for r in ph.truth) >= 1
    p0 = c["patients"][0]
    x, y = build_patient_phantom(p0, grid=TINY), build_patient_phantom(p0, grid=TINY)
    for name in ("activity_bq_per_ml", "ct_hu", "labels", "density_g_cm3", "lesion_ids"):
        assert np.array_equal(getattr(x, name), getattr(y, name))
    assert x.truth == y.truth


def test_demo_preset_and_custom_probabilities(tmp_path):
    d = generate_cohort("demo", 1)
    assert cohort_summary(d)["patients"] == 1 and d["patients"][0]["grid"]["shape"] == [64, 64, 64]
    spec = {"n_patients": 40, "n_treated": 0, "n_bilateral": 0, "treated_ihc_counts": None, "ihc_counts": None,
            "ihc_probs": {"0": 0.25, "1+": 0.25, "2+": 0.25, "3+": 0.25}, "fish_amplified_2plus": 3,
            "metastasis_counts": None, "metastasis_probs": {"lymph_node": 0.5}, "n_inflammation": 0,
            "n_heterogeneous": 4}
    s = cohort_summary(generate_cohort(spec, 2))
    assert s["ihc_counts"] == {"0": 10, "1+": 10, "2+": 10, "3+": 10}
    assert s["metastases"]["lymph_node"] == 20 and s["heterogeneous"] == 4
    toml = tmp_path / "c.toml"
    toml.write_text('[cohort]\npreset = "seed-trial"\nn_inflammation = 5\n')
    assert cohort_summary(generate_cohort(str(toml), 0))["inflammation"] == 5
    assert load_cohort_spec({"preset": "demo"})["n_patients"] == 1


def test_bad_cohort_specs():
    with pytest.raises(ConfigError, match="ihc_counts"):
        generate_cohort({"preset": "seed-trial", "ihc_counts": {"0": 1, "1+": 1, "2+": 1, "3+": 1}}, 0)
    with pytest.raises(ConfigError, match="cohort.preset"):
        generate_cohort({"preset": "nope"}, 0)
    with pytest.raises(ConfigError, match="n_heterogeneous"):
        generate_cohort({"preset": "seed-trial", "n_heterogeneous": 1}, 0)


def test_summary_plot_and_hdf5_round_trip(tmp_path):
    p = generate_cohort("seed-trial", 8)["patients"][0]
    ph = build_patient_phantom(p, grid=Grid.centered((24, 48, 48), 8.0))
    s = phantom_summary(ph)
    json.dumps(s)
    assert s["organs"]["liver"]["volume_ml"] > 500.0
    assert s["total_activity_mbq"][0] == pytest.approx(ph.total_activity_bq(0) / 1e6)
    assert len(s["lesions"]) == len(ph.truth)
    png = plot_phantom(ph, tmp_path / "p.png")
    assert png.stat().st_size > 10000
    ph.save(tmp_path / "p.h5")
    back = Phantom.load(tmp_path / "p.h5")
    assert np.array_equal(back.activity_bq_per_ml, ph.activity_bq_per_ml)
    assert back.truth == json.loads(json.dumps(ph.truth))


def test_larger_cohort_keeps_seed_trial_proportions():
    s = cohort_summary(generate_cohort({"preset": "seed-trial", "n_patients": 300}, 1))
    assert s["patients"] == 300 and s["treated"] == 60 and s["primaries"] == 320
    assert s["metastases"] == {"lymph_node": 170, "bone": 30, "brain": 10, "liver": 20}
    assert s["inflammation"] == 30 and s["heterogeneous"] == 90
    assert sum(s["ihc_counts"].values()) == 320
