"""NM-02 biodistribution: SUV -> Bq/mL, activity conservation, time behaviour, bad SUV tables.

External numbers: SUVbw definition C = SUV * A_inj * D(t) / W (QIBA; validation_targets.md) with the
Tc-99m decay factors 0.8910 (1 h) and 0.7939 (2 h) of physics.md.
"""
import numpy as np
import pytest

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.phantoms import DEFAULT_SUV, fdg_suv_map, suv_to_bq_per_ml, torso_phantom
from her2sim.phantoms.biodistribution import bq_per_ml_to_suv, organ_suv_maps


def test_suv_to_concentration_matches_definition():
    # 458 MBq, 70 kg, SUV 1 at 1 h: 458e6 * 0.8910 / 70000 g
    assert float(suv_to_bq_per_ml(1.0, 458.0, 70.0, 1.0)) == pytest.approx(458e6 * 0.8910 / 70000.0, rel=2e-4)
    assert float(suv_to_bq_per_ml(40.0, 458.0, 70.0, 2.0)) == pytest.approx(40 * 458e6 * 0.7939 / 70000.0, rel=2e-4)
    assert float(bq_per_ml_to_suv(suv_to_bq_per_ml(3.5, 400.0, 55.0, 2.0), 400.0, 55.0, 2.0)) == pytest.approx(3.5)


def test_default_table_matches_reference_note():
    # biodistribution.md defaults
    expect = {"kidney_cortex": 40, "liver": 6, "spleen": 3, "intestine": 2, "thyroid": 2, "salivary_glands": 2,
              "heart_blood": 1.0, "spine_marrow": 1.0, "lungs": 0.4, "muscle": 0.3, "breast_adipose": 0.2,
              "breast_gland": 0.4}
    for k, v in expect.items():
        assert DEFAULT_SUV[k] == v


@pytest.fixture(scope="module")
def flat_phantom():
    ratios = {k: 1.0 for k in DEFAULT_SUV}
    return torso_phantom(Grid.centered((32, 48, 48), 8.0), injected_mbq=400.0, weight_kg=64.0,
                         bio_ratio_per_h=ratios, time_points_h=(1.0, 2.0))


def test_total_activity_is_sum_of_organ_suv_times_volume(flat_phantom):
    p = flat_phantom
    vox = p.grid.voxel_volume_ml
    expected = 0.0
    for i, name in p.label_names.items():
        if name in ("background", "airway"):
            continue
        expected += DEFAULT_SUV[name] * np.count_nonzero(p.labels == i) * vox
    expected *= 400e6 * 0.8910 / 64000.0
    assert p.total_activity_bq(0) == pytest.approx(expected, rel=1e-4)


def test_physical_decay_only_when_biology_is_flat(flat_phantom):
    p = flat_phantom
    assert p.total_activity_bq(1) / p.total_activity_bq(0) == pytest.approx(0.7939 / 0.8910, rel=2e-4)


def test_biological_ratios_change_organ_suv():
    labels = np.array([[[1, 2]]], np.int16)
    names = {0: "background", 1: "heart_blood", 2: "kidney_cortex"}
    s = organ_suv_maps(labels, names, (1.0, 2.0))
    assert s[0, 0, 0, 0] == pytest.approx(1.0) and s[1, 0, 0, 0] == pytest.approx(0.80)   # blood falls
    assert s[0, 0, 0, 1] == pytest.approx(40.0) and s[1, 0, 0, 1] == pytest.approx(46.0)  # kidney rises


def test_bad_suv_tables_name_the_field():
    labels = np.array([[[1]]], np.int16)
    with pytest.raises(ConfigError, match="suv.liver"):
        organ_suv_maps(labels, {0: "background", 1: "liver"}, (1.0,), suv={"liver": 0.0})
    with pytest.raises(ConfigError, match="suv.liver"):
        organ_suv_maps(labels, {0: "background", 1: "liver"}, (1.0,), suv={"liver": -2.0})
    with pytest.raises(ConfigError, match="suv.pancreas"):
        organ_suv_maps(labels, {0: "background", 1: "pancreas"}, (1.0,))
    with pytest.raises(ConfigError, match="injected_mbq"):
        suv_to_bq_per_ml(1.0, 0.0, 70.0, 1.0)


def test_fdg_map_marks_lesions_hot():
    labels = np.array([[[1, 1]]], np.int16)
    ids = np.array([[[0, 1]]], np.int16)
    m = fdg_suv_map(labels, {0: "background", 1: "muscle"}, ids, [{"id": 1, "fdg_suv": 12.0}])
    assert m[0, 0, 0] == pytest.approx(0.7) and m[0, 0, 1] == pytest.approx(12.0)
