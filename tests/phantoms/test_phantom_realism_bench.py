"""bench/phantom_realism.py measures the body outline correctly (analytic disc) and organ masses by label."""

import numpy as np
import pytest

from bench_modules import load_bench



@pytest.fixture(scope="module")
def bench():
    return load_bench("phantom_realism")


def test_outline_of_a_disc_matches_its_diameter_and_perimeter(bench):
    d = 2.0
    y, x = np.mgrid[-150:150, -150:150] * d
    disc = x ** 2 + (y / 0.7) ** 2 <= 100.0 ** 2          # ellipse, semi-axes 100 (lateral) and 70 mm (AP)
    o = bench._outline(disc, d)
    assert o["lateral_mm"] == pytest.approx(200.0, abs=2 * d) and o["ap_mm"] == pytest.approx(140.0, abs=2 * d)
    a, b = 100.0, 70.0   # Ramanujan's perimeter of an ellipse
    perimeter = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    assert o["circumference_mm"] == pytest.approx(perimeter, rel=0.05)


def test_icrp_reference_masses_are_the_published_ones(bench):
    # ICRP Publication 89, reference adult female (g)
    assert bench.ICRP89_FEMALE_G["liver"] == 1400.0 and bench.ICRP89_FEMALE_G["kidneys"] == 275.0
    assert bench.ICRP89_FEMALE_G["thyroid"] == 17.0


def test_midline_depth_skips_the_breasts(bench):
    # a 200 x 140 mm trunk with two 60 mm breast mounds off the midline: the midline depth is the trunk's
    from types import SimpleNamespace
    from her2sim.core.grid import Grid
    g = Grid.centered((1, 150, 150), 2.0)
    y, x = np.mgrid[0:150, 0:150] * 2.0 - 149.0
    trunk = x ** 2 / 100.0 ** 2 + y ** 2 / 70.0 ** 2 <= 1.0
    breasts = ((x - 50.0) ** 2 + (y + 70.0) ** 2 <= 30.0 ** 2) | ((x + 50.0) ** 2 + (y + 70.0) ** 2 <= 30.0 ** 2)
    depth = bench._midline_depth_mm(trunk | breasts, SimpleNamespace(grid=g))
    assert depth == pytest.approx(140.0, abs=2 * 2.0)
