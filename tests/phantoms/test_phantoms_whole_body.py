"""Whole-body extent of the patient phantom: default torso unchanged, organ masses, renal excretion, bad input."""
import hashlib
import json

import numpy as np
import pytest

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.core.radionuclide import TC99M
from her2sim.phantoms import build_patient_phantom, generate_cohort, patient_phantom, torso_anatomy
from her2sim.phantoms.whole_body import URINE_FRACTION, whole_body_grid

#: sha256 of the default patient and of the demo patient (lesions) on a 40^3 x 14.15 mm grid. The default patient's
#: is from the code of main at c629ca6, before the whole-body extent existed. The demo patient's was recomputed
#: when cohort primaries got ``fit = "shift"`` (its 38 mm spiculated primary reached into the chest wall and now
#: sits 3 mm further forward; everything else is unchanged)
DEFAULT_DIGEST = "8c2269ca0ebfe7fd0dee39a846cd652da75bc2c6fdc3234bb1677fdadc4ac92a"
DEMO_DIGEST = "b9479dbe01ed35cd208964b222d0df5f155cf0544ff4be917913d8069c7647bf"


def _digest(ph) -> str:
    h = hashlib.sha256()
    for name in ("activity_bq_per_ml", "ct_hu", "labels", "material_ids", "density_g_cm3", "lesion_ids",
                 "lesion_fraction", "lesion_owner", "lesion_own_suv"):
        a = getattr(ph, name)
        if a is not None:
            h.update(name.encode())
            h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps({"labels": ph.label_names, "truth": ph.truth, "meta": ph.meta}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()


def test_default_torso_is_bit_identical_to_before_the_whole_body_extent():
    g = Grid.centered((40, 40, 40), 14.15)
    assert _digest(patient_phantom(g, {}, seed=0)) == DEFAULT_DIGEST
    demo = dict(generate_cohort("demo", seed=2024)["patients"][0])
    assert _digest(build_patient_phantom(demo, g, seed=2024)) == DEMO_DIGEST
    # asking for the torso explicitly gives the same arrays (only meta.config records the option)
    a = patient_phantom(g, {}, seed=0)
    b = patient_phantom(g, {"extent": "torso"}, seed=0)
    assert np.array_equal(a.activity_bq_per_ml, b.activity_bq_per_ml) and np.array_equal(a.labels, b.labels)


@pytest.fixture(scope="module")
def wb():
    return patient_phantom(whole_body_grid(4.42), {"extent": "whole_body"}, seed=3)


def _mass_g(ph, *labels):
    ids = [k for k, v in ph.label_names.items() if v in labels]
    m = np.isin(ph.labels, ids)
    return float(ph.density_g_cm3[m].sum(dtype=np.float64) * ph.grid.voxel_volume_ml)


def test_whole_body_organ_masses_against_icrp89_reference_female(wb):
    # ICRP Publication 89 (2002), reference adult female: brain 1300 g, thyroid 17 g, salivary glands 70 g
    # (of which ~10 g sublingual, not modelled); bladder content 200 g (ICRP 110 reference female)
    assert _mass_g(wb, "brain") == pytest.approx(1300.0, rel=0.10)
    assert _mass_g(wb, "thyroid") == pytest.approx(17.0, rel=0.10)
    assert _mass_g(wb, "bladder") == pytest.approx(200.0, rel=0.10)
    assert _mass_g(wb, "salivary_glands") == pytest.approx(70.0 - 10.0, rel=0.15)
    for name in ("skull", "pelvis_cortical", "pelvis_marrow", "femur_cortical", "spine_marrow", "muscle"):
        assert _mass_g(wb, name) > 0, name


def test_whole_body_spans_vertex_to_mid_thigh(wb):
    g = wb.grid
    body_z = np.nonzero((wb.labels > 0).any(axis=(1, 2)))[0]
    # 1112 mm of body (vertex +482 to mid-thigh -630 mm at 160 cm) inside 20 mm of air at both ends
    assert body_z.min() > 0 and body_z.max() < g.shape[0] - 1
    assert (body_z.max() - body_z.min() + 1) * g.spacing_mm[0] == pytest.approx(1112.0, abs=3 * g.spacing_mm[0])
    names = set(wb.label_names.values())
    assert {"brain", "thyroid", "salivary_glands", "skull", "bladder", "pelvis_marrow", "femur_cortical",
            "liver", "kidney_cortex"} <= names
    assert wb.meta["phantom_type"] == "female_whole_body"


def test_bladder_activity_is_the_excreted_fraction_and_rises_from_1h_to_2h():
    g = whole_body_grid(8.84)
    spec = {"extent": "whole_body", "injected_mbq": 458.0}
    full = patient_phantom(g, spec, seed=1)
    none = patient_phantom(g, dict(spec, urine_fraction={1.0: 0.0, 2.0: 0.0}), seed=1)
    vox = g.voxel_volume_ml
    got = [(full.activity_bq_per_ml[k] - none.activity_bq_per_ml[k]).sum(dtype=np.float64) * vox for k in (0, 1)]
    for k, t in enumerate((1.0, 2.0)):
        # excreted fraction of the injected activity, decayed to the scan: 458 MBq x f(t) x exp(-lambda t)
        expect = 458e6 * URINE_FRACTION[t] * TC99M.decay_factor(t * 3600.0)
        assert got[k] == pytest.approx(expect, rel=1e-3)
    assert got[1] > got[0]
    lab = [k for k, v in full.label_names.items() if v == "bladder"][0]
    m = full.labels == lab
    assert full.activity_bq_per_ml[1][m].sum() > full.activity_bq_per_ml[0][m].sum()


def test_bad_extent_and_urine_fraction_refused():
    g = Grid.centered((16, 16, 16), 20.0)
    with pytest.raises(ConfigError, match=r"extent = 'wholebody' is not allowed; choose one of .*torso.*whole_body"):
        patient_phantom(g, {"extent": "wholebody"})
    with pytest.raises(ConfigError, match="extent"):
        torso_anatomy(g, extent="legs")
    with pytest.raises(ConfigError, match=r"urine_fraction\.1 = 1\.5 is outside the allowed range \[0, 1\]"):
        patient_phantom(whole_body_grid(17.68), {"extent": "whole_body", "urine_fraction": {1.0: 1.5}})
    with pytest.raises(ConfigError, match="spacing_mm"):
        whole_body_grid(0.0)
