"""The anthropometric reference against the numbers its source publishes."""
import pytest

from her2sim.core.errors import ConfigError
from her2sim.phantoms.anthropometry import female_body_dimensions_mm

# Heinz et al., J Stat Educ 11(2), 2003: means of the 260 women (cm, kg)
PUBLISHED_MEANS = {"height_cm": 164.87, "weight_kg": 60.60, "chest_depth": 17.72, "chest_diameter": 26.10,
                   "chest_girth": 86.06, "waist_girth": 69.80}


def test_fit_passes_through_the_published_sample_means():
    # an OLS fit with an intercept returns the sample mean at the mean height and weight
    dims = female_body_dimensions_mm(PUBLISHED_MEANS["height_cm"], PUBLISHED_MEANS["weight_kg"])
    for name in ("chest_depth", "chest_diameter", "chest_girth", "waist_girth"):
        assert dims[name]["mean_mm"] == pytest.approx(10.0 * PUBLISHED_MEANS[name], abs=1.0), name
        assert 5.0 < dims[name]["sd_mm"] < 40.0


def test_heavier_women_have_larger_chests():
    light, heavy = female_body_dimensions_mm(163, 55), female_body_dimensions_mm(163, 85)
    for name in ("chest_depth", "chest_diameter", "chest_girth", "waist_girth"):
        assert heavy[name]["mean_mm"] > light[name]["mean_mm"]


@pytest.mark.parametrize("h, w, field", [(140.0, 60.0, "height_cm"), (165.0, 120.0, "weight_kg"),
                                          (float("nan"), 60.0, "height_cm")])
def test_outside_the_fitted_sample_is_refused_with_the_range(h, w, field):
    with pytest.raises(ConfigError, match=field):
        female_body_dimensions_mm(h, w)
