"""Breasts from published statistics (issue 17): volumes by size class and per breast, volumetric glandular
fraction (Yaffe et al. 2009), bad input."""
import math

import numpy as np
import pytest

from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.phantoms.breast_statistics import (BREAST_SIZE_CLASSES, breast_volumes, glandular_fraction_by_density,
                                                glandular_lognormal)


def test_glandular_lognormal_reproduces_yaffe_2009():
    median, sigma = glandular_lognormal()
    # fitted to the 80th (27 %) and 95th (45 %) percentiles; the published mean 19.3 % is not fitted, it must follow
    assert median * math.exp(sigma ** 2 / 2) == pytest.approx(0.193, abs=0.002)
    g = glandular_fraction_by_density()
    assert list(g) == ["A", "B", "C", "D"]
    assert g["A"] < g["B"] < g["C"] < g["D"]
    assert g["D"] == pytest.approx(0.45, rel=1e-9)          # the 95th percentile, D's band middle, is published
    # BI-RADS-weighted mean of the class values lies near the population mean (a coarse 4-point quadrature)
    share = {"A": 0.1, "B": 0.4, "C": 0.4, "D": 0.1}
    assert sum(share[k] * g[k] for k in g) == pytest.approx(0.193, abs=0.02)


def test_breast_volume_forms_and_refusals():
    assert breast_volumes(300) == {"right": 300.0, "left": 300.0}
    assert breast_volumes("large") == {"right": 1250.0, "left": 1250.0}
    assert breast_volumes({"left": 250, "right": 400}) == {"right": 400.0, "left": 250.0}
    with pytest.raises(ConfigError, match=r"breast_volume_ml = 3000 is outside the allowed range \[50, 2000\]"):
        breast_volumes(3000)
    with pytest.raises(ConfigError, match=r"breast_volume_ml.left = 20 is outside the allowed range \[50, 2000\]"):
        breast_volumes({"left": 20, "right": 300})
    with pytest.raises(ConfigError, match=r"breast_volume_ml = 'huge' is not a size class.*small.*\[50, 2000\]"):
        breast_volumes("huge")
    with pytest.raises(ConfigError, match=r"must give both 'left' and 'right'"):
        breast_volumes({"left": 300})
    with pytest.raises(ConfigError, match=r"breast_volume_ml = True"):
        breast_volumes(True)


def _breast_ml(anat):
    lv = anat.params["label_volume_ml"]
    return lv["breast_gland"] + lv["breast_adipose"], lv["breast_gland"]


def test_v2_builds_each_breast_to_its_volume_and_glandular_fraction():
    from her2sim.phantoms.torso_v2 import GLANDULAR_FRACTION_V2, torso_anatomy_v2

    g = Grid.centered((64, 64, 64), 8.84)
    a = torso_anatomy_v2(g, 60.0, 163.0, "supine", {"left": 250.0, "right": 500.0}, "C", -60.0, seed=1)
    total, gland = _breast_ml(a)
    assert total == pytest.approx(750.0, rel=0.02)            # mound volumes from the sub-voxel fractions
    assert gland / total == pytest.approx(GLANDULAR_FRACTION_V2["C"], rel=0.02)
    rl = np.asarray(a.landmarks["breasts"]["right"]["ellipsoid_radii_mm"])
    ll = np.asarray(a.landmarks["breasts"]["left"]["ellipsoid_radii_mm"])
    assert rl / ll == pytest.approx(np.full(3, 2.0 ** (1 / 3)), rel=0.06)   # same shape, twice the volume
    assert a.params["breast_volume_ml"] == {"right": 500.0, "left": 250.0}
    big = torso_anatomy_v2(g, 60.0, 163.0, "supine", "large", "B", -60.0, seed=1)
    assert _breast_ml(big)[0] == pytest.approx(2 * BREAST_SIZE_CLASSES["large"], rel=0.02)


def test_v1_takes_per_breast_volumes_too():
    from her2sim.phantoms.torso import torso_anatomy

    g = Grid.centered((48, 64, 64), 6.0)
    a = torso_anatomy(g, 60.0, 163.0, "supine", {"left": 250.0, "right": 500.0}, "B", -60.0, seed=1)
    rl = np.asarray(a.landmarks["breasts"]["right"]["radii_mm"])
    ll = np.asarray(a.landmarks["breasts"]["left"]["radii_mm"])
    assert rl / ll == pytest.approx(np.full(3, 2.0 ** (1 / 3)), rel=1e-9)
    assert a.params["breast_volume_ml"] == {"right": 500.0, "left": 250.0}
