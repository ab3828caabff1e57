"""Malformed inputs across every entry point: one clear line naming the field, exit code 2, no traceback.

Each case runs the ``her2sim`` command line in-process (``her2sim.cli.main``) on a tiny input: a study
TOML or ``--set`` override, an HDF5 container given to ``simulate`` / ``recon``, a lesion CSV given to
``analyze``, or a bad argument. Every case must be refused before any work starts (no Monte Carlo runs
here) and, for ``run``, before the study folder is created. The available memory is pinned to 2 GiB so
the memory-estimate cases behave the same on every machine.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from her2sim.cli import main
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.grid import Grid
from her2sim.core.projection_geometry import EnergyWindow, ProjectionGeometry

TINY = Path(__file__).parents[1] / "data" / "tiny_study.toml"
GIB = 2 ** 30


@pytest.fixture(autouse=True)
def _two_gib(monkeypatch):
    import her2sim.core.limits as limits
    monkeypatch.setattr(limits, "available_memory_bytes", lambda: 2 * GIB)


def cli(argv, capsys):
    """Run the CLI in-process; (exit code, stderr)."""
    capsys.readouterr()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    return rc, capsys.readouterr().err


def assert_one_line(rc, err, *expected):
    assert rc == 2, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for e in expected:
        assert re.search(e, lines[0]), f"{e!r} not in {lines[0]!r}"


# ---------------------------------------------------------------------------- study TOML (lesion table edits)
LESION = "[[phantom.lesions]]\ntype = \"primary\"\nside = \"left\"\nihc = \"0\"\ndiameter_mm = 25.0\n"


def _study_with_lesion(tmp_path, body: str) -> Path:
    text = TINY.read_text()
    assert LESION in text
    path = tmp_path / "study.toml"
    path.write_text(text.replace(LESION, "[[phantom.lesions]]\n" + body + "\n"))
    return path


LESION_CASES = {
    "misspelt_key": ('type = "primary"\nside = "left"\ndiamter_mm = 20.0', r"lesions\[1\]\.diamter_mm .*did you mean 'diameter_mm'"),
    "diameter_string": ('side = "left"\ndiameter_mm = "20"', r"lesions\[1\]\.diameter_mm = '20' must be a number"),
    "diameter_nan": ('side = "left"\ndiameter_mm = nan', r"lesions\[1\]\.diameter_mm = nan"),
    "diameter_inf": ('side = "left"\ndiameter_mm = inf', r"lesions\[1\]\.diameter_mm = inf"),
    "diameter_neg_inf": ('side = "left"\ndiameter_mm = -inf', r"lesions\[1\]\.diameter_mm = -inf"),
    "diameter_zero": ('side = "left"\ndiameter_mm = 0.0', r"lesions\[1\]\.diameter_mm = 0.*\[5, 50\]"),
    "diameter_huge": ('side = "left"\ndiameter_mm = 100.0', r"lesions\[1\]\.diameter_mm = 100.*\[5, 50\]"),
    "diameter_bool": ('side = "left"\ndiameter_mm = true', r"lesions\[1\]\.diameter_mm = True must be a number"),
    "ihc_unknown": ('side = "left"\nihc = "4+"', r"lesions\[1\]\.ihc = '4\+' is not an IHC score"),
    "ihc_float": ('side = "left"\nihc = 2.5', r"lesions\[1\]\.ihc = 2.5 is not an IHC score"),
    "ihc2_without_fish": ('side = "left"\nihc = "2+"', r"lesions\[1\]\.fish = None: IHC 2\+ needs a FISH"),
    "fish_unknown": ('side = "left"\nihc = "2+"\nfish = "yes"', r"lesions\[1\]\.fish = 'yes'"),
    "type_unknown": ('type = "tumour"', r"lesions\[1\]\.type = 'tumour'"),
    "shape_unknown": ('side = "left"\nshape = "cube"', r"lesions\[1\]\.shape = 'cube'"),
    "side_unknown": ('side = "up"', r"lesions\[1\]\.side = 'up'"),
    "site_unknown": ('type = "lymph_node"\nsite = "lungs"', r"lesions\[1\]\.site = 'lungs'"),
    "clock_13": ('side = "left"\nclock = 13.0', r"lesions\[1\]\.clock = 13.*\[0, 12\]"),
    "clock_string": ('side = "left"\nclock = "3"', r"lesions\[1\]\.clock = '3' must be a number"),
    "location_two_values": ('side = "left"\nlocation_mm = [0.0, 0.0]', r"lesions\[1\]\.location_mm .*3 entries"),
    "location_outside_grid": ('side = "left"\nlocation_mm = [0.0, 0.0, 900.0]',
                              r"lesions\[1\]\.location_mm = \[0.0, 0.0, 900.0\] lies outside the phantom grid"),
    "heterogeneity_bool": ('side = "left"\nheterogeneity = true', r"lesions\[1\]\.heterogeneity = True must be a table"),
    "heterogeneity_misspelt": ('side = "left"\nheterogeneity = {cvv = 0.3}', r"heterogeneity\.cvv .*did you mean 'cv'"),
    "heterogeneity_cv_nan": ('side = "left"\nheterogeneity = {cv = nan}', r"heterogeneity\.cv = nan"),
    "necrosis_fraction": ('side = "left"\nheterogeneity = {cv = 0.3, necrosis = {radius_fraction = 2.0}}',
                          r"necrosis\.radius_fraction = 2.*\[0, 0.9\]"),
    "necrosis_unknown": ('side = "left"\nheterogeneity = {cv = 0.3, necrosis = {radius = 0.3}}',
                         r"necrosis\.radius .*did you mean 'radius_fraction'"),
    "subclones_n_float": ('side = "left"\nheterogeneity = {cv = 0.3, subclones = {n_clusters = 2.5}}',
                          r"subclones\.n_clusters = 2.5 must be an integer"),
    "satellites_n_zero": ('side = "left"\nsatellites = {n = 0}', r"satellites\.n = 0 .*\[1, 10\]"),
    "satellites_unknown": ('side = "left"\nsatellites = {count = 2}', r"satellites\.count is not a known lesion key"),
    "patient_factor_zero": ('side = "left"\npatient_factor = 0.0', r"lesions\[1\]\.patient_factor = 0"),
    "treatment_factor_2": ('side = "left"\ntreatment_factor = 2.0', r"lesions\[1\]\.treatment_factor = 2.*1.5"),
    "suv_mean_negative": ('side = "left"\nsuv_mean = -1.0', r"lesions\[1\]\.suv_mean = -1"),
    "fdg_string": ('side = "left"\nfdg_suv = "hot"', r"lesions\[1\]\.fdg_suv = 'hot' must be a number"),
    "index_negative": ('type = "bone"\nindex = -1', r"lesions\[1\]\.index = -1 .*\[0, 1000\]"),
    "axis_ratios_two": ('side = "left"\nshape = "ellipsoid"\naxis_ratios = [1.0, 1.0]', r"lesions\[1\]\.axis_ratios"),
    "n_lobes_zero": ('side = "left"\nshape = "lobulated"\nn_lobes = 0', r"lesions\[1\]\.n_lobes = 0"),
}


@pytest.mark.parametrize("case", sorted(LESION_CASES))
def test_malformed_lesion_spec(case, tmp_path, capsys):
    body, expected = LESION_CASES[case]
    study = _study_with_lesion(tmp_path, body)
    out = tmp_path / "out"
    rc, err = cli(["run", study, "--out", out, "--quiet"], capsys)
    assert_one_line(rc, err, r"phantom\.lesions\[1\]", expected)
    assert not out.exists(), "nothing may be written before every check has passed"


# ---------------------------------------------------------------------------- --set overrides
SET_CASES = {
    "cohort_too_many": (["cohort.n_patients=100000", "phantom.lesions=[]"], r"cohort\.n_patients = 100000 .*\[1, 30\]"),
    "cohort_31": (["cohort.n_patients=31", "phantom.lesions=[]"], r"cohort\.n_patients = 31 .*\[1, 30\]"),
    "cohort_zero": (["cohort.n_patients=0", "phantom.lesions=[]"], r"cohort\.n_patients = 0 .*\[1, 100000\]"),
    "cohort_preset_typo": (["cohort.preset=seed_trial", "phantom.lesions=[]"], r"cohort\.preset = 'seed_trial' .*did you mean 'seed-trial'"),
    "cohort_seed_negative": (["cohort.n_patients=2", "cohort.seed=-1"], r"cohort\.seed = -1"),
    "photons_float": (["monte_carlo.photons=1e13"], r"monte_carlo\.photons = 1e\+13 must be an integer in \[1, 10000000000\]"),
    "photons_too_many": (["monte_carlo.photons=10000000000000"], r"monte_carlo\.photons = 10000000000000 .*\[1, 10000000000\]"),
    "photons_string": (["monte_carlo.photons=many"], r"monte_carlo\.photons = 'many' must be an integer"),
    "realisations_too_many": (["monte_carlo.noise_realisations=20000"], r"monte_carlo\.noise_realisations = 20000 .*\[1, 10000\]"),
    "realisations_zero": (["monte_carlo.noise_realisations=0"], r"monte_carlo\.noise_realisations = 0"),
    "threads_negative": (["monte_carlo.threads=-1"], r"monte_carlo\.threads = -1"),
    "iterations_zero": (["recon.iterations=0"], r"recon\.iterations = 0 .*\[1, 1000\]"),
    "subsets_more_than_views": (["recon.subsets=9"], r"recon\.subsets = 9 exceeds the number of views"),
    "scatter_unknown": (["recon.scatter=dw"], r"recon\.scatter = 'dw' .*did you mean 'dew'"),
    "unknown_key": (["recon.iteration=3"], r"recon\.iteration is not a known key; did you mean 'iterations'"),
    "unknown_section": (["recn.iterations=3"], r"recn is not a known section; did you mean 'recon'"),
    "no_equals": (["recon.iterations"], r"override 'recon\.iterations' must look like section\.key=value"),
    "no_section": (["iterations=3"], r"key 'iterations' must be section\.key"),
    "shape_two_values": (["phantom.shape=[20,48]"], r"phantom\.shape = \[20, 48\] must be a list of 3 integers"),
    "shape_zero": (["phantom.shape=[0,48,48]"], r"phantom\.shape\[0\] = 0 .*\[4, 1024\]"),
    "shape_float": (["phantom.shape=[20.5,48,48]"], r"phantom\.shape\[0\] = 20.5 must be an integer"),
    "memory_1024": (["phantom.shape=[1024,1024,1024]", "phantom.spacing_mm=0.4", "camera.protocol.matrix=1024"],
                    r"needs an estimated \d+\.\d+ GiB of memory but only 2\.00 GiB is available"),
    "memory_512_matrix": (["phantom.shape=[64,512,512]", "phantom.spacing_mm=0.8", "camera.protocol.matrix=512",
                           "camera.protocol.n_views=120"], r"phantom\.shape = \[64, 512, 512\] .* GiB of memory"),
    "spacing_zero": (["phantom.spacing_mm=0"], r"phantom\.spacing_mm = 0 .*\[0\.1, 50\]"),
    "spacing_nan": (["phantom.spacing_mm=nan"], r"phantom\.spacing_mm = nan"),
    "weight_string": (["phantom.weight_kg=seventy"], r"phantom\.weight_kg = 'seventy' must be a number"),
    "time_points_decreasing": (["tracer.time_points_h=[2.0,1.0]"], r"tracer\.time_points_h = \[2\.0, 1\.0\] must be strictly increasing"),
    "time_points_negative": (["tracer.time_points_h=[-1.0]"], r"tracer\.time_points_h\[0\] = -1"),
    "time_points_empty": (["tracer.time_points_h=[]"], r"tracer\.time_points_h = \[\] must be a non-empty list"),
    "injected_zero": (["tracer.injected_mbq=0"], r"tracer\.injected_mbq = 0"),
    "name_with_space": (["study.name=\"bad name\""], r"study\.name = 'bad name'"),
    "output_dir_empty": (["study.output_dir=\"\""], r"study\.output_dir = '' must be a non-empty path"),
    "matrix_zero": (["camera.protocol.matrix=0"], r"protocol\.matrix = 0"),
    "views_odd": (["camera.protocol.n_views=7", "recon.subsets=1"], r"protocol\.n_views = 7 must be even"),
    "window_unknown_key": (["camera.windows=[{name=\"photopeak\", lower_kev=126.0, upper=154.0}]"],
                           r"camera\.windows\[0\]\.upper is not a known key"),
    "threshold_zero": (["analysis.threshold=0"], r"analysis\.threshold = 0"),
    "metric_unknown": (["analysis.metrics=[\"suvmx\"]"], r"analysis\.metrics\[0\] = 'suvmx' .*did you mean 'suvmax'"),
    "pvc_rc_without_iec": (["analysis.pvc_methods=[\"rc\"]", "calibration.phantom=cylinder"], r"analysis\.pvc_methods includes 'rc'"),
    "report_format": (["output.report=pdf"], r"output\.report = 'pdf'"),
    "voi_unknown": (["analysis.voi=sphere"], r"analysis\.voi = 'sphere' is not allowed"),
    "voi_threshold_fraction": (["analysis.voi_threshold_fraction=0.7"], r"analysis\.voi_threshold_fraction = 0\.7"),
    "min_voi_voxels_zero": (["analysis.min_voi_voxels=0"], r"analysis\.min_voi_voxels = 0"),
    "voi_margin_negative": (["analysis.voi_margin_mm=-1"], r"analysis\.voi_margin_mm = -1"),
}


@pytest.mark.parametrize("case", sorted(SET_CASES))
def test_malformed_override(case, tmp_path, capsys):
    sets, expected = SET_CASES[case]
    out = tmp_path / "out"
    argv = ["run", TINY, "--out", out, "--quiet"]
    for s in sets:
        argv += ["--set", s]
    rc, err = cli(argv, capsys)
    assert_one_line(rc, err, expected)
    assert not out.exists()


# ---------------------------------------------------------------------------- study files
def _bytes(name):
    return {
        "toml_syntax": b'[study]\nname = "x"\nseed = \n',
        "missing_study_section": b'[phantom]\npreset = "demo"\n',
        "not_utf8": b'[study]\nname = "caf\xe9"\n[phantom]\npreset = "demo"\n',
        "unknown_section": b'[study]\nname = "x"\n[phantom]\npreset = "demo"\n[reconstruction]\niterations = 2\n',
        "lesions_for_test_object": b'[study]\nname = "x"\n[phantom]\npreset = "iec"\n[phantom.lesions]\nspheres = 6\n',
    }[name]


FILE_CASES = {
    "toml_syntax": r"invalid TOML in line 3",
    "missing_study_section": r"\[study\] section is required",
    "not_utf8": r"study file cannot be read",
    "unknown_section": r"reconstruction is not a known section; did you mean 'recon'",
    "lesions_for_test_object": r"phantom\.lesions\.spheres is not a known key",
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_malformed_study_file(case, tmp_path, capsys):
    path = tmp_path / "study.toml"
    path.write_bytes(_bytes(case))
    rc, err = cli(["run", path, "--out", tmp_path / "out"], capsys)
    assert_one_line(rc, err, re.escape(str(path)), FILE_CASES[case])


def test_missing_and_folder_study_file(tmp_path, capsys):
    rc, err = cli(["run", tmp_path / "nope.toml"], capsys)
    assert_one_line(rc, err, r"nope\.toml: study file does not exist")
    rc, err = cli(["run", tmp_path], capsys)
    assert_one_line(rc, err, re.escape(str(tmp_path)), r"(cannot be read|Is a directory)")


# ---------------------------------------------------------------------------- HDF5 containers
def _grid():
    return Grid((4, 6, 6), (10.0, 10.0, 10.0))


def _phantom(path):
    g = _grid()
    act = np.ones((2,) + g.shape, np.float32)
    z = np.zeros(g.shape, np.float32)
    Phantom(g, act, (1.0, 2.0), z, z.astype(np.int16), z.astype(np.uint8), z + 1.0, {0: "air"}, ["water"],
            [], None, {"weight_kg": 70.0}).save(path)
    return path


def _projections(path):
    geo = ProjectionGeometry(np.arange(4) * 90.0, np.full(4, 200.0), (6, 6), (10.0, 10.0), (0.0, 0.0), 0.0,
                             np.array([0, 1, 0, 1]))
    counts = np.ones((1, 4, 6, 6), np.float32)
    Projections(counts, (EnergyWindow("photopeak", 126.45, 154.55),), geo, False, {}, None,
                {"time_per_view_s": 20.0}).save(path)
    return path


def _set_attr(path, name, value):
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value


def _edit_meta(path, edit):
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs["meta_json"])
        edit(meta)
        f.attrs["meta_json"] = json.dumps(meta)


def _del_attr(path, name):
    with h5py.File(path, "r+") as f:
        del f.attrs[name]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


H5_CASES = {
    # (container, mutation, expected)
    "schema_version_string": ("phantom", lambda p: _set_attr(p, "schema_version", "1"), r"'schema_version' = '1' must be an integer"),
    "schema_version_3": ("phantom", lambda p: _set_attr(p, "schema_version", 3), r"schema_version 3 is not supported"),
    "kind_missing": ("phantom", lambda p: _del_attr(p, "her2sim_kind"), r"'her2sim_kind' is missing"),
    "kind_wrong": ("phantom", lambda p: _set_attr(p, "her2sim_kind", "Image"), r"holds a her2sim Image, expected a Phantom"),
    "kind_number": ("phantom", lambda p: _set_attr(p, "her2sim_kind", 3), r"'her2sim_kind' = 3 must be a string"),
    "meta_json_null": ("phantom", lambda p: _set_attr(p, "meta_json", "null"), r"'meta_json' must hold a JSON object, got NoneType"),
    "meta_json_list": ("phantom", lambda p: _set_attr(p, "meta_json", "[1, 2]"), r"'meta_json' must hold a JSON object"),
    "meta_json_garbage": ("phantom", lambda p: _set_attr(p, "meta_json", "{not json"), r"'meta_json' is not valid JSON"),
    "meta_json_number": ("phantom", lambda p: _set_attr(p, "meta_json", 5), r"'meta_json' = 5 must be a JSON text"),
    "truncated": ("phantom", _truncate, r"not a readable HDF5 file"),
    "not_hdf5": ("phantom", lambda p: p.write_text("hello"), r"not a readable HDF5 file"),
    "empty_file": ("phantom", lambda p: p.write_bytes(b""), r"not a readable HDF5 file"),
    "negative_time_point": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(time_points_h=[-1.0, 2.0])),
                            r"'time_points_h\[0\]' = -1.0 must be a finite number >= 0"),
    "time_points_string": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(time_points_h="1,2")),
                           r"'time_points_h' = \"1,2\" must be a list"),
    "time_points_empty": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(time_points_h=[])),
                          r"'time_points_h' = \[\] must list at least one"),
    "time_points_count": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(time_points_h=[1.0])),
                          r"2 time frames but time_points_h has 1"),
    "grid_missing_key": ("phantom", lambda p: _edit_meta(p, lambda m: m["grid"].pop("spacing_mm_zyx")),
                         r"'grid\.spacing_mm_zyx' is missing"),
    "grid_shape_string": ("phantom", lambda p: _edit_meta(p, lambda m: m["grid"].update(shape_zyx="4,6,6")),
                          r"'grid\.shape_zyx' = \"4,6,6\" must be a list of 3"),
    "grid_null": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(grid=None)), r"'grid' = null must be an object"),
    "label_names_values": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(label_names={"0": 5})),
                           r"'label_names' entry '0': 5 must map"),
    "material_names_numbers": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(material_names=[1])),
                               r"'material_names\[0\]' = 1 must be a string"),
    "nested_meta_null": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(meta=None)), r"'meta' = null must be an object"),
    "truth_dict": ("phantom", lambda p: _edit_meta(p, lambda m: m.update(truth={})), r"'truth' = \{\} must be a list"),
    "window_unknown_key": ("projections", lambda p: _edit_meta(p, lambda m: m["windows"][0].update(centre_kev=140.5)),
                           r"'windows\[0\]' has unknown key\(s\) \['centre_kev'\]"),
    "window_bound_string": ("projections", lambda p: _edit_meta(p, lambda m: m["windows"][0].update(lower_kev="126")),
                            r"'windows\[0\]\.lower_kev' = \"126\" must be a finite number"),
    "windows_not_list": ("projections", lambda p: _edit_meta(p, lambda m: m.update(windows={"name": "x"})),
                         r"'windows' = .* must be a list of objects"),
    "windows_empty": ("projections", lambda p: _edit_meta(p, lambda m: m.update(windows=[])),
                      r"'windows' = \[\] must describe at least one"),
    "angles_string": ("projections", lambda p: _edit_meta(p, lambda m: m["geometry"].update(angles_deg="0,90")),
                      r"'geometry\.angles_deg' = \"0,90\" must be a list"),
    "radii_negative": ("projections", lambda p: _edit_meta(p, lambda m: m["geometry"].update(radii_mm=[-1.0] * 4)),
                       r"radii_mm must be > 0"),
    "shape_vu_one": ("projections", lambda p: _edit_meta(p, lambda m: m["geometry"].update(shape_vu=[6])),
                     r"'geometry\.shape_vu' = \[6\] must be a list of 2"),
    "geometry_views_mismatch": ("projections", lambda p: _edit_meta(p, lambda m: m["geometry"].update(
        angles_deg=[0.0, 90.0], radii_mm=[200.0, 200.0], heads=[0, 1])), r"does not match geometry"),
    "is_expected_string": ("projections", lambda p: _edit_meta(p, lambda m: m.update(is_expected="no")),
                           r"'is_expected' = \"no\" must be true or false"),
    "components_string": ("projections", lambda p: _edit_meta(p, lambda m: m.update(components="primary")),
                          r"'components' = \"primary\" must be a list"),
    "component_dataset_missing": ("projections", lambda p: _edit_meta(p, lambda m: m.update(components=["primary"])),
                                  r"required dataset 'component_primary' is missing"),
    "projections_as_phantom": ("projections_for_simulate", None, r"holds a her2sim Projections, expected a Phantom"),
}


@pytest.mark.parametrize("case", sorted(H5_CASES))
def test_malformed_hdf5(case, tmp_path, capsys):
    kind, mutate, expected = H5_CASES[case]
    if kind == "phantom":
        path = _phantom(tmp_path / "phantom.h5")
        argv = ["simulate", path, "--out", tmp_path / "sim", "--histories", 1000, "--json"]
    elif kind == "projections_for_simulate":
        path = _projections(tmp_path / "noisy_r0.h5")
        argv = ["simulate", path, "--out", tmp_path / "sim", "--histories", 1000, "--json"]
    else:
        path = _projections(tmp_path / "noisy_r0.h5")
        argv = ["recon", path, "--out", tmp_path / "recon.h5", "--iterations", 1, "--subsets", 1, "--json"]
    if mutate is not None:
        mutate(path)
    rc, err = cli(argv, capsys)
    assert_one_line(rc, err, re.escape(str(path)), expected)
    assert not (tmp_path / "sim" / "expected.h5").exists() and not (tmp_path / "recon.h5").exists()


def test_image_with_mistyped_units_and_a_good_image_loads(tmp_path):
    from her2sim.core.errors import DataError
    g = _grid()
    path = Image(np.zeros(g.shape, np.float32), g, "Bq/mL", {"a": 1}).save(tmp_path / "img.h5")
    assert Image.load(path).meta == {"a": 1}
    _edit_meta(path, lambda m: m.update(units=5))
    with pytest.raises(DataError, match=r"'units' = 5 must be a string"):
        Image.load(path)


# ---------------------------------------------------------------------------- lesion CSV
HEADER = "patient_id,lesion_id,her2_positive,ihc,suvmax\n"
GOOD_ROWS = "P1,1,1,3,2.5\nP2,1,0,0,0.9\nP3,1,1,2,1.8\nP4,1,0,1,1.1\n"
CSV_CASES = {
    "ragged_row": (HEADER + "P1,1,1,3,2.5\nP2,1,0,0\n", r"line 3: 4 field\(s\) but the header has 5"),
    "extra_field": (HEADER + "P1,1,1,3,2.5,9\n", r"line 2: 6 field\(s\) but the header has 5"),
    "duplicate_column": ("patient_id,lesion_id,her2_positive,ihc,suvmax,suvmax\nP1,1,1,3,2.5,2.6\n",
                         r"line 1: column 'suvmax' appears twice"),
    "not_utf8": ((HEADER + "P\xe9,1,1,3,2.5\n").encode("latin-1"), r"line 2: byte 0xe9 is not UTF-8"),
    "suvmax_text": (HEADER + "P1,1,1,3,high\n", r"line 2: suvmax = 'high' is not a number"),
    "suvmax_comma_decimal": (HEADER + "P1,1,1,3,\"2,5\"\n", r"line 2: suvmax = '2,5' is not a number"),
    "ihc_five": (HEADER + "P1,1,1,5,2.5\n", r"line 2: ihc = '5' must be an integer 0-3"),
    "ihc_text": (HEADER + "P1,1,1,2+,2.5\n", r"line 2: ihc = '2\+' must be an integer 0-3"),
    "ihc_fraction": (HEADER + "P1,1,1,1.5,2.5\n", r"line 2: ihc = '1.5' must be an integer 0-3"),
    "her2_maybe": (HEADER + "P1,1,maybe,3,2.5\n", r"line 2: her2_positive = 'maybe' is not a boolean"),
    "missing_column": ("patient_id,lesion_id,ihc,suvmax\nP1,1,3,2.5\n", r"lacks column\(s\) \['her2_positive'\]"),
    "empty_file": ("", r"is empty; required columns"),
    "header_only": (HEADER, r"has no data rows"),
    "empty_patient_id": (HEADER + ",1,1,3,2.5\n", r"line 2: patient_id is empty"),
    "blank_header_name": ("patient_id,lesion_id,her2_positive,ihc,suvmax,\nP1,1,1,3,2.5,\n", r"column 6 of the header has no name"),
    "nul_byte": (HEADER + "P1,1,1,3,2.5\x00\n", r"line 2: (not valid CSV|suvmax)"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_malformed_lesion_csv(case, tmp_path, capsys):
    content, expected = CSV_CASES[case]
    path = tmp_path / "lesions.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    rc, err = cli(["analyze", path], capsys)
    assert_one_line(rc, err, re.escape(str(path)), expected)


def test_csv_with_bom_is_read_and_dropped_nan_rows_are_counted(tmp_path, capsys):
    path = tmp_path / "lesions.csv"
    path.write_bytes("\ufeff".encode("utf-8") + (HEADER + GOOD_ROWS + "P5,1,1,3,nan\nP6,1,0,0,\nP7,1,0,0,inf\n").encode())
    rc = main(["analyze", str(path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "4 lesions in 4 patients" in out and "3 row(s) dropped: suvmax empty, NaN or infinite" in out
    assert main(["analyze", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_missing"] == 3


# ---------------------------------------------------------------------------- CLI arguments
@pytest.fixture()
def files(tmp_path):
    ph = _phantom(tmp_path / "phantom.h5")
    pr = _projections(tmp_path / "noisy_r0.h5")
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    return {"PH": ph, "PR": pr, "FILE": a_file, "DIR": tmp_path, "CSV": tmp_path / "x.csv", "TMP": tmp_path}


ARG_CASES = {
    "simulate_views_0": (["simulate", "PH", "--out", "TMP/s", "--views", "0"], r"argument --views: 0 is outside the allowed range \[1,"),
    "simulate_views_negative": (["simulate", "PH", "--out", "TMP/s", "--views", "-2"], r"argument --views: -2"),
    "simulate_views_text": (["simulate", "PH", "--out", "TMP/s", "--views", "ten"], r"argument --views: 'ten' is not an integer"),
    "simulate_views_odd": (["simulate", "PH", "--out", "TMP/s", "--views", "3"], r"--views \(protocol\.n_views\) = 3 must be even"),
    "simulate_matrix_0": (["simulate", "PH", "--out", "TMP/s", "--matrix", "0"], r"argument --matrix: 0"),
    "simulate_matrix_small": (["simulate", "PH", "--out", "TMP/s", "--matrix", "2"], r"--matrix \(protocol\.matrix\) = 2 .*\[8, 1024\]"),
    "simulate_radius_0": (["simulate", "PH", "--out", "TMP/s", "--radius-mm", "0"], r"argument --radius-mm: 0"),
    "simulate_radius_nan": (["simulate", "PH", "--out", "TMP/s", "--radius-mm", "nan"], r"argument --radius-mm: nan"),
    "simulate_pixel_negative": (["simulate", "PH", "--out", "TMP/s", "--pixel-mm", "-1"], r"argument --pixel-mm: -1"),
    "simulate_histories_0": (["simulate", "PH", "--out", "TMP/s", "--histories", "0"], r"argument --histories: 0 .*\[1, 10000000000\]"),
    "simulate_histories_huge": (["simulate", "PH", "--out", "TMP/s", "--histories", "10000000000000"], r"argument --histories"),
    "simulate_realisations_0": (["simulate", "PH", "--out", "TMP/s", "--realisations", "0"], r"argument --realisations: 0 .*\[1, 10000\]"),
    "simulate_realisations_huge": (["simulate", "PH", "--out", "TMP/s", "--realisations", "20000"], r"argument --realisations: 20000"),
    "simulate_threads_0": (["simulate", "PH", "--out", "TMP/s", "--threads", "0"], r"argument --threads: 0"),
    "simulate_frame_negative": (["simulate", "PH", "--out", "TMP/s", "--frame", "-1"], r"argument --frame: -1"),
    "simulate_frame_too_big": (["simulate", "PH", "--out", "TMP/s", "--frame", "5"], r"--frame = 5 is outside the allowed range \[0, 1\]"),
    "simulate_out_is_file": (["simulate", "PH", "--out", "FILE"], r"--out .*a_file\.txt: exists and is not a folder"),
    "simulate_phantom_missing": (["simulate", "TMP/none.h5", "--out", "TMP/s"], r"none\.h5: file does not exist"),
    "simulate_phantom_is_folder": (["simulate", "DIR", "--out", "TMP/s"], r"not a readable HDF5 file"),
    "simulate_camera_missing": (["simulate", "PH", "--out", "TMP/s", "--camera", "TMP/cam.toml"], r"camera file .*cam\.toml does not exist"),
    "recon_slices_0": (["recon", "PR", "--out", "TMP/r.h5", "--slices", "0"], r"argument --slices: 0 is outside the allowed range \[1, 1024\]"),
    "recon_iterations_0": (["recon", "PR", "--out", "TMP/r.h5", "--iterations", "0"], r"argument --iterations: 0"),
    "recon_subsets_0": (["recon", "PR", "--out", "TMP/r.h5", "--subsets", "0"], r"argument --subsets: 0"),
    "recon_cps_0": (["recon", "PR", "--out", "TMP/r.h5", "--cps-per-bq", "0"], r"argument --cps-per-bq: 0"),
    "recon_scatter_histories": (["recon", "PR", "--out", "TMP/r.h5", "--scatter-histories", "10"], r"argument --scatter-histories: 10"),
    "recon_scatter_unknown": (["recon", "PR", "--out", "TMP/r.h5", "--scatter", "dw"], r"argument --scatter: invalid choice"),
    "recon_out_is_dir": (["recon", "PR", "--out", "DIR"], r"--out .*: is a folder; give the path of the file"),
    "recon_out_under_file": (["recon", "PR", "--out", "FILE/r.h5"], r"a_file\.txt is a file, so the folder cannot be created"),
    "recon_mc_without_phantom": (["recon", "PR", "--out", "TMP/r.h5", "--scatter", "mc"], r"--scatter mc .* give --phantom"),
    "phantom_patient_negative": (["phantom", "--patient", "-1"], r"argument --patient: -1 is outside the allowed range \[0,"),
    "phantom_patient_99": (["phantom", "--patient", "99"], r"--patient = 99 is outside the allowed range \[0, 0\]"),
    "phantom_shape_4000": (["phantom", "--shape", "4000", "4000", "4000"], r"argument --shape: 4000 .*\[4, 1024\]"),
    "phantom_shape_0": (["phantom", "--shape", "0", "64", "64"], r"argument --shape: 0"),
    "phantom_shape_memory": (["phantom", "--shape", "1024", "1024", "1024"], r"--shape 1024 1024 1024 needs an estimated .* GiB .* 2\.00 GiB"),
    "phantom_spacing_0": (["phantom", "--spacing-mm", "0"], r"argument --spacing-mm: 0"),
    "phantom_out_is_file": (["phantom", "--out", "FILE"], r"--out .*a_file\.txt: exists and is not a folder"),
    "phantom_preset_unknown": (["phantom", "--preset", "seed_trial"], r"cohort spec = 'seed_trial'"),
    "run_workers_0": (["run", TINY, "--workers", "0"], r"argument --workers: 0 is outside the allowed range \[1, 256\]"),
    "run_workers_negative": (["run", TINY, "--workers", "-1"], r"argument --workers: -1"),
    "run_workers_text": (["run", TINY, "--workers", "two"], r"argument --workers: 'two'"),
    "run_workers_and_dask": (["run", TINY, "--out", "TMP/st", "--workers", "2", "--dask", "tcp://127.0.0.1:1"], r"--workers = 2 and --dask"),
    "run_log_is_dir": (["run", TINY, "--out", "TMP/st", "--log", "DIR"], r"--log .*: is a folder"),
    "run_out_is_file": (["run", TINY, "--out", "FILE"], r"--out .*a_file\.txt: exists and is not a folder"),
    "run_out_under_file": (["run", TINY, "--out", "FILE/study"], r"a_file\.txt is a file, so the folder cannot be created"),
    "run_set_garbage": (["run", TINY, "--out", "TMP/st", "--set", "recon.iterations=[1"], r"recon\.iterations = '\[1' must be an integer"),
    "materials_energy_0": (["materials", "--energy-kev", "0"], r"argument --energy-kev: 0"),
    "cohort_seed_negative": (["cohort", "--seed", "-1"], r"argument --seed: -1"),
    "cohort_spec_missing": (["cohort", "--spec", "TMP/nope.toml"], r"nope\.toml"),
    "status_missing_folder": (["status", "TMP/nope"], r"nope: study folder does not exist"),
    "status_on_a_file": (["status", "FILE"], r"a_file\.txt: study folder does not exist"),
    "report_missing_folder": (["report", "TMP/nope"], r"nope: study folder does not exist"),
    "export_realisation_negative": (["export-dicom", "DIR", "--out", "TMP/d", "--realisation", "-1"], r"argument --realisation: -1"),
    "export_time_zero": (["export-dicom", "DIR", "--out", "TMP/d", "--time-h", "0"], r"argument --time-h: 0"),
    "export_out_is_file": (["export-dicom", "DIR", "--out", "FILE"], r"--out .*a_file\.txt: exists and is not a folder"),
    "import_missing": (["import-dicom", "TMP/none.dcm", "--out", "TMP/x.h5"], r"none\.dcm: DICOM file or folder does not exist"),
    "import_not_dicom": (["import-dicom", "FILE", "--out", "TMP/x.h5"], r"a_file\.txt: not a readable DICOM file"),
    "import_out_is_dir": (["import-dicom", "FILE", "--out", "DIR", "--kind", "image"], r"--out .*: is a folder"),
    "init_unknown_preset": (["init", "seed_trial", "--out", "TMP/x.toml"], r"preset = 'seed_trial' .*did you mean 'seed-trial'"),
    "init_no_overwrite": (["init", "demo", "--out", "FILE"], r"a_file\.txt: file already exists"),
    "camera_config_missing": (["camera", "--config", "TMP/cam.toml"], r"camera file .*cam\.toml does not exist"),
    "analyze_threshold_nan": (["analyze", "CSV", "--threshold", "nan"], r"argument --threshold: nan"),
    "analyze_threshold_0": (["analyze", "CSV", "--threshold", "0"], r"argument --threshold: 0"),
    "analyze_missing_csv": (["analyze", "CSV"], r"x\.csv'? does not exist"),
    "unknown_command": (["simulat"], r"invalid choice: 'simulat'"),
}


@pytest.mark.parametrize("case", sorted(ARG_CASES))
def test_malformed_cli_argument(case, files, capsys):
    argv, expected = ARG_CASES[case]
    argv = [str(a) for a in argv]
    for key, value in files.items():
        argv = [str(value) if a == key else (str(value) + a[len(key):] if a.startswith(key + "/") else a) for a in argv]
    rc, err = cli(argv, capsys)
    assert_one_line(rc, err, expected)
    assert not (files["TMP"] / "s" / "expected.h5").exists() and not (files["TMP"] / "st").exists()


def test_unreachable_dask_scheduler_is_one_line_within_seconds(tmp_path, capsys):
    import time
    t0 = time.monotonic()
    rc, err = cli(["run", TINY, "--out", tmp_path / "st", "--dask", "tcp://127.0.0.1:1"], capsys)
    assert time.monotonic() - t0 < 30
    assert_one_line(rc, err, r"--dask = 'tcp://127\.0\.0\.1:1': cannot reach the Dask scheduler within 5 s")
    assert not (tmp_path / "st").exists()


def test_debug_shows_the_traceback(tmp_path):
    from her2sim.core.errors import ConfigError
    with pytest.raises(ConfigError, match="monte_carlo.photons"):
        main(["run", str(TINY), "--out", str(tmp_path / "st"), "--set", "monte_carlo.photons=0", "--debug"])


def test_unexpected_error_is_one_line_without_traceback(monkeypatch, capsys):
    import her2sim.cli as cli_mod

    def boom(args):
        raise KeyError("surprise")
    monkeypatch.setattr(cli_mod, "cmd_materials", boom)
    rc, err = cli(["materials"], capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "internal error: KeyError" in err and "--debug" in err and "Traceback" not in err


def test_status_on_manifest_with_wrong_types_names_the_field(tmp_path, capsys):
    (tmp_path / ".stages").mkdir()
    (tmp_path / ".stages" / "phantom_P001.json").write_text(json.dumps({"key": 5, "outputs": "phantom.h5"}))
    (tmp_path / ".stages" / "simulate_P001.json").write_text(json.dumps(
        {"key": "abc", "outputs": [{"path": "x.h5", "sha256": "0", "size": "big"}]}))
    rc = main(["status", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "phantom_P001.json: 'key' = 5 must be a string" in out
    assert "simulate_P001.json: 'outputs[0].size' = 'big' must be an integer >= 0" in out
    assert main(["status", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"phantom_P001": "missing", "simulate_P001": "missing"}


def test_number_of_malformed_cases():
    n = (len(LESION_CASES) + len(SET_CASES) + len(FILE_CASES) + 2 + len(H5_CASES) + 1 + len(CSV_CASES)
         + len(ARG_CASES) + 1 + 1)
    assert n >= 100, n
