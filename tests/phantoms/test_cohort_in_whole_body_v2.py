"""Every site the seed-trial cohort draws lies inside the anatomy-v2 whole-body patient, as for v1
(``test_cohort_in_whole_body.py``): lesion placement reads v2's landmarks and analytic outline."""
from her2sim.phantoms import build_patient_phantom, generate_cohort
from her2sim.phantoms.whole_body import whole_body_grid


def test_every_seed_trial_lesion_is_inside_the_v2_whole_body_patient():
    cohort = generate_cohort("seed-trial", seed=2024)
    kinds, outside = set(), []
    for p in cohort["patients"]:
        spec = dict(p, extent="whole_body", anatomy="v2")
        spec.pop("grid", None)
        ph = build_patient_phantom(spec, whole_body_grid(8.84, spec["height_cm"]), seed=p.get("seed", 0))
        for t in ph.truth:
            kinds.add(t["type"])
            if not t.get("in_fov") or not t.get("n_voxels"):
                outside.append((p["id"], t["type"], t.get("site")))
    assert {"brain", "bone", "liver", "lymph_node", "primary"} <= kinds
    assert outside == []
