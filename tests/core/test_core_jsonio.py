"""One JSON encoder (her2sim.core.jsonio) and one package-version helper (her2sim.core.versions)."""
import json
from pathlib import Path

import numpy as np
import pytest

from her2sim.core import hdf5io, jsonio
from her2sim.core.versions import VERSION_PACKAGES, package_versions


def test_numpy_paths_sets_tuples_are_converted():
    obj = {"f": np.float32(1.5), "i": np.int64(3), "b": np.bool_(True), "a": np.arange(3), "p": Path("x/y"),
           "s": {3, 1, 2}, "t": (1, 2)}
    assert json.loads(jsonio.to_json(obj)) == {"f": 1.5, "i": 3, "b": True, "a": [0, 1, 2], "p": "x/y",
                                               "s": [1, 2, 3], "t": [1, 2]}
    assert jsonio.canonical_json({"b": 1, "a": np.float64(0.5)}) == '{"a":0.5,"b":1}'


def test_unknown_objects_are_refused_not_stringified():
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        jsonio.to_json({"x": object()})


def test_printed_and_written_json_is_sorted_and_indented(tmp_path, capsys):
    obj = {"b": np.float32(2.0), "a": [np.int32(1)]}
    jsonio.print_json(obj)
    text = capsys.readouterr().out
    assert text == json.dumps({"a": [1], "b": 2.0}, indent=2) + "\n"
    p = jsonio.write_json(tmp_path / "o.json", obj)
    assert p.read_text() == text.rstrip("\n")
    assert hdf5io.to_json is jsonio.to_json  # the HDF5 metadata uses the same encoder


def test_package_versions_name_her2sim_and_keep_or_drop_missing():
    v = package_versions()
    assert v["her2sim"] and set(VERSION_PACKAGES) <= set(v)
    assert package_versions(("no-such-package-her2sim",)) == {"her2sim": v["her2sim"], "no-such-package-her2sim": None}
    assert "no-such-package-her2sim" not in package_versions(("no-such-package-her2sim",), keep_missing=False)
