"""Study-file validation: presets load, malformed files fail with one-line errors naming the key."""
from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from pathlib import Path

import pytest
import tomli_w

from her2sim.config import (StudyConfig, canonical_json, config_hash, init_preset, list_presets, load_study,
                            loads_study, override_study, preset_path, save_study)
from her2sim.core.errors import ConfigError

MALFORMED = sorted((Path(__file__).parents[1] / "malformed_configs").glob("*.toml"))

TINY = """
[study]
name = "tiny"
seed = 3
[phantom]
preset = "point"
shape = [8, 16, 16]
spacing_mm = 4.0
[camera.protocol]
n_views = 8
matrix = 16
pixel_mm = 4.0
[recon]
subsets = 4
"""


def _expectations(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect:"), f"{path.name} must start with '# expect: a | b'"
    return [e.strip() for e in first.split(":", 1)[1].split("|") if e.strip()]


def test_corpus_is_large_enough():
    assert len(MALFORMED) >= 50
    kinds = {p.name.split("_")[0] for p in MALFORMED}
    assert {"type", "range", "unknown", "missing", "contra", "toml", "choice"} <= kinds


@pytest.mark.parametrize("path", MALFORMED, ids=[p.stem for p in MALFORMED])
def test_malformed_config_gives_one_line_error_naming_the_key(path):
    with pytest.raises(ConfigError) as info:
        load_study(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for expected in _expectations(path):
        assert expected in msg, f"{expected!r} not in {msg!r}"


@pytest.mark.parametrize("name", ["demo", "iec", "seed-trial", "pvc-study"])
def test_every_preset_loads_and_round_trips(name, tmp_path):
    assert name in list_presets()
    dest = init_preset(name, tmp_path)
    cfg = load_study(dest)
    assert cfg.study.name == name
    again = StudyConfig.from_dict(tomllib.loads(tomli_w.dumps(cfg.to_dict())))
    assert again.to_dict() == cfg.to_dict()
    assert again.hash() == cfg.hash()


def test_seed_trial_preset_matches_the_clinical_protocol():
    cfg = load_study(preset_path("seed-trial"))
    p = cfg.camera.protocol
    # NM670 clinical 99mTc protocol (camera_nm670.md): 120 views, 128 x 128, 4.42 mm
    assert (p.n_views, p.matrix, p.pixel_mm) == (120, 128, 4.42)
    assert cfg.cohort.n_patients == 30  # Zhao et al. 2024: 30 patients
    assert cfg.tracer.time_points_h == (1.0, 2.0)
    names = [w.name for w in cfg.camera.windows]
    assert names == ["photopeak", "scatter"]
    pk = cfg.camera.windows[0]
    assert pk.lower_kev == pytest.approx(126.45) and pk.upper_kev == pytest.approx(154.55)


def test_defaults_follow_the_reference_notes():
    cfg = loads_study(TINY)
    # biodistribution.md: 458 MBq, imaging at 1 h and 2 h; seed trial threshold SUVmax 1.5; 70 kg / 160 cm
    assert cfg.tracer.injected_mbq == 458.0
    assert cfg.tracer.time_points_h == (1.0, 2.0)
    assert cfg.analysis.threshold == 1.5
    assert (cfg.phantom.weight_kg, cfg.phantom.height_cm) == (70.0, 160.0)
    assert cfg.cohort is None
    assert cfg.monte_carlo.effective_photons == 10_000_000
    assert cfg.phantom.grid().shape == (8, 16, 16)
    assert cfg.phantom.grid().spacing_mm == (4.0, 4.0, 4.0)


def test_sections_are_frozen():
    cfg = loads_study(TINY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.recon.iterations = 9  # type: ignore[misc]


def test_camera_section_reaches_camera_and_protocol_shortcut_works():
    cfg = loads_study(TINY + "[camera.collimator]\nhole_mm = 1.2\n")
    assert cfg.camera.collimator.hole_mm == 1.2
    assert cfg.camera.protocol.n_views == 8
    short = loads_study(TINY.replace("[camera.protocol]", "[protocol]"))
    assert short.camera.protocol == cfg.camera.protocol


def test_phantom_lesions_are_checked_then_passed_through_unchanged():
    cfg = loads_study(TINY + '[phantom.lesions]\nposition_mm = [0.0, 0.0, 10.0]\nmedium = "water"\n')
    assert cfg.phantom.lesions == {"position_mm": [0.0, 0.0, 10.0], "medium": "water"}
    # an option the phantom does not know is refused, never carried along silently
    with pytest.raises(ConfigError, match=r"phantom.lesions.nested is not a known key .*'position_mm'"):
        loads_study(TINY + '[phantom.lesions]\nnested = {a = 1}\n')


def test_config_hash_is_sha256_of_canonical_json():
    d = {"b": 1, "a": [1, 2.5], "c": {"y": True, "x": "s"}}
    text = '{"a":[1,2.5],"b":1,"c":{"x":"s","y":true}}'
    assert canonical_json(d) == text
    assert config_hash(d) == hashlib.sha256(text.encode()).hexdigest()
    assert config_hash({"c": {"x": "s", "y": True}, "a": [1, 2.5], "b": 1}) == config_hash(d)
    assert config_hash({"a": [1, 2.5], "b": 2, "c": {"y": True, "x": "s"}}) != config_hash(d)


def test_section_hash_changes_only_for_the_edited_section():
    a = loads_study(TINY).section_hashes()
    b = loads_study(TINY + "[analysis]\nthreshold = 2.0\n").section_hashes()
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {"analysis"}


def test_mc_seed_is_derived_and_reproducible():
    a, b = loads_study(TINY), loads_study(TINY)
    assert a.mc_seed == b.mc_seed
    assert loads_study(TINY.replace("seed = 3", "seed = 4")).mc_seed != a.mc_seed
    assert loads_study(TINY + "[monte_carlo]\nseed = 11\n").mc_seed == 11


def test_init_preset_refuses_to_overwrite(tmp_path):
    dest = tmp_path / "study.toml"
    init_preset("demo", dest)
    dest.write_text("# edited\n")
    with pytest.raises(ConfigError, match="already exists"):
        init_preset("demo", dest)
    assert dest.read_text() == "# edited\n"
    init_preset("demo", dest, force=True)
    assert load_study(dest).study.name == "demo"


def test_unknown_preset_suggests_a_name(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'seed-trial'"):
        init_preset("seed_trial", tmp_path / "x.toml")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "nope.toml")


def test_overrides_are_validated_and_change_only_their_key(tmp_path):
    base = loads_study(TINY)
    cfg = override_study(base, ["recon.iterations=8"])
    assert cfg.recon.iterations == 8 and cfg.recon.subsets == base.recon.subsets
    cfg = override_study(base, ["recon.scatter=none", "tracer.time_points_h=[0.5, 3.0]"])
    assert cfg.recon.scatter == "none" and cfg.tracer.time_points_h == (0.5, 3.0)
    with pytest.raises(ConfigError, match="recon.subsets = 99"):
        override_study(base, ["recon.subsets=99"])
    with pytest.raises(ConfigError, match="did you mean 'iterations'"):
        override_study(base, ["recon.iteration=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        override_study(base, ["recon.iterations"])


def test_saved_study_reloads_identically(tmp_path):
    cfg = load_study(preset_path("demo"))
    path = save_study(cfg, tmp_path / "resolved.toml")
    assert load_study(path).hash() == cfg.hash()


def test_demo_reads_suv_with_the_clinical_protocols_post_filter():
    """The demo reconstructs like the seed-trial preset's clinic (README "Clinical reconstruction protocol"):
    the same Butterworth filter, so its SUVmax has the clinic's noise (and the DICOM interop bench compares
    SUVmax on the images a clinic reads)."""
    demo, trial = load_study(preset_path("demo")).recon, load_study(preset_path("seed-trial")).recon
    assert demo.butterworth_cutoff_cycles_per_cm == trial.butterworth_cutoff_cycles_per_cm == 0.48
    assert demo.butterworth_order == trial.butterworth_order == 10
    assert demo.post_filter_fwhm_mm == trial.post_filter_fwhm_mm == 0.0


def test_lesion_arrays_of_tables_reach_the_phantom_specs():
    """The demo's [[phantom.lesions]] are valid lesion specs of the phantom builder."""
    from her2sim.phantoms.lesions import validate_lesion_spec

    cfg = load_study(preset_path("demo"))
    assert isinstance(cfg.phantom.lesions, list) and len(cfg.phantom.lesions) == 2
    specs = [validate_lesion_spec(spec, i) for i, spec in enumerate(cfg.phantom.lesions)]
    # HER2 rule of the seed trial: IHC 2+ with FISH amplification is positive, IHC 0 negative
    assert [s["her2_positive"] for s in specs] == [True, False]
    with pytest.raises(ConfigError, match="phantom.lesions"):
        loads_study(TINY.replace('preset = "point"', 'preset = "point"\nlesions = [1, 2]'))


def test_fixed_lesions_reach_every_patient_and_table_form_is_used():
    """[[phantom.lesions]] beside [cohort] are added to every drawn patient (as pvc-study.toml documents), and
    the table form (one list entry per lesion) reaches the pipeline instead of being dropped."""
    from her2sim.pipeline import patient_specs

    tiny = Path(__file__).parents[1] / "data" / "tiny_study.toml"
    base = load_study(tiny)
    alone = override_study(base, ["cohort.n_patients=2", "phantom.lesions=[]"])
    both = override_study(base, ["cohort.n_patients=2"])
    n_alone = [len(p["lesions"]) for p in patient_specs(alone)]
    specs = patient_specs(both)
    assert [len(p["lesions"]) for p in specs] == [n + 2 for n in n_alone]
    assert all(p["lesions"][-1]["diameter_mm"] == 25.0 and p["lesions"][-1]["ihc"] == "0" for p in specs)
    table = override_study(base, ['phantom.lesions={ihc = ["3+", "0"], diameter_mm = [22.0, 18.0]}'])
    (pat,) = patient_specs(table)
    assert [(x["ihc"], x["diameter_mm"]) for x in pat["lesions"]] == [("3+", 22.0), ("0", 18.0)]


def test_breast_volume_override_reaches_every_patient_and_round_trips(tmp_path):
    """phantom.breast_volume_ml (issue 17): a volume, a {left, right} table or a size class, for every patient."""
    from her2sim.pipeline import patient_specs

    base = load_study(Path(__file__).parents[1] / "data" / "tiny_study.toml")
    assert base.phantom.breast_volume_ml is None
    own = [p.get("breast_volume_ml") for p in patient_specs(base)]       # the patient's own by default
    for value, expect in (("'large'", "large"), ("300", 300.0), ("{left = 250, right = 400}",
                                                                  {"left": 250.0, "right": 400.0})):
        cfg = override_study(base, [f"phantom.breast_volume_ml={value}"])
        assert all(p["breast_volume_ml"] == expect for p in patient_specs(cfg)) and expect not in own
        again = load_study(save_study(cfg, tmp_path / "resolved.toml"))
        assert again.phantom.breast_volume_ml == expect and again.hash() == cfg.hash()
    for value, msg in (("'huge'", r"phantom.breast_volume_ml = 'huge' is not a size class.*\[50, 2000\]"),
                       ("5000", r"phantom.breast_volume_ml = 5000.* \[50, 2000\]"),
                       ("{left = 20, right = 300}", r"phantom.breast_volume_ml.left = 20 .*\[50, 2000\]"),
                       ("{left = 300}", r"phantom.breast_volume_ml = .* must give both 'left' and 'right'")):
        with pytest.raises(ConfigError, match=msg):
            override_study(base, [f"phantom.breast_volume_ml={value}"])
