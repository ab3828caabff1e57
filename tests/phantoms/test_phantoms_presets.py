"""Study-file presets: demo / torso / iec / cylinder / point and the [phantom.lesions] table."""
import pytest

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.phantoms import lesions_from_options, preset_phantom

G = Grid.centered((32, 48, 48), 8.84)


def test_lesion_table_gives_one_lesion_per_entry():
    specs = lesions_from_options({"ihc": ["3+", "0"], "diameter_mm": [20.0, 15.0], "heterogeneity": True})
    assert [s["ihc"] for s in specs] == ["3+", "0"] and [s["side"] for s in specs] == ["left", "right"]
    assert specs[1]["diameter_mm"] == 15.0 and specs[0]["heterogeneity"]["cv"] == 0.3
    with pytest.raises(ConfigError, match="phantom.lesions.diameter_mm"):
        lesions_from_options({"ihc": ["3+", "0"], "diameter_mm": [20.0]})
    with pytest.raises(ConfigError, match="phantom.lesions.colour"):
        lesions_from_options({"colour": "red"})


def test_demo_preset_has_positive_and_negative_primary():
    ph = preset_phantom("demo", G, seed=1)
    assert [r["her2_positive"] for r in ph.truth] == [True, False]
    assert ph.meta["preset"] == "demo" and ph.time_points_h == (1.0, 2.0)


@pytest.mark.parametrize("name", ["iec", "cylinder", "point"])
def test_test_objects_hold_the_requested_activity(name):
    ph = preset_phantom(name, Grid.centered((32, 48, 48), 8.0), activity_mbq=150.0, time_points_h=(0.0,))
    assert ph.total_activity_bq(0) == pytest.approx(150e6, rel=0.01)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="phantom.preset"):
        preset_phantom("jaszczak", G)
