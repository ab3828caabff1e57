"""The distant sites the seed-trial cohort draws (brain, bone, liver) lie inside the anatomy-v2 whole-body patient,
as every site does for v1 (``test_cohort_in_whole_body.py``): lesion placement reads v2's landmarks and analytic
outline. Only the patients with such metastases are built (a v2 whole-body build takes about 20 s; breast and
nodal sites are checked on the v2 torso in ``test_torso_v2.py``)."""
from her2sim.phantoms import build_patient_phantom, generate_cohort
from her2sim.phantoms.whole_body import whole_body_grid


def test_every_seed_trial_lesion_is_inside_the_v2_whole_body_patient():
    cohort = generate_cohort("seed-trial", seed=2024)
    kinds, outside = set(), []
    distant = {"brain", "bone", "liver"}
    for p in cohort["patients"]:
        if not distant & {les.get("type") for les in p.get("lesions") or []}:
            continue
        spec = dict(p, extent="whole_body", anatomy="v2")
        spec.pop("grid", None)
        ph = build_patient_phantom(spec, whole_body_grid(8.84, spec["height_cm"]), seed=p.get("seed", 0))
        for t in ph.truth:
            kinds.add(t["type"])
            if t["type"] == "primary":          # fit = "shift" found a place clear of the chest wall and skin
                assert "chest_wall_overlap" not in t["shape_params"], p["id"]
            if not t.get("in_fov") or not t.get("n_voxels"):
                outside.append((p["id"], t["type"], t.get("site")))
    assert distant <= kinds
    assert outside == []
