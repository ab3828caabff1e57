"""Log-normal Gaussian random fields: measured CV and correlation length match the request."""
import numpy as np
import pytest

from her2sim.core.errors import ConfigError
from her2sim.phantoms import field_statistics, lognormal_field
from her2sim.phantoms.heterogeneity import necrotic_core_factor, rim_factor, subclone_factor


@pytest.mark.parametrize("cv,length_mm,spacing", [(0.35, 4.0, 1.0), (0.8, 5.0, 1.0), (0.3, 6.0, 1.5)])
def test_lognormal_field_statistics_match_request(cv, length_mm, spacing):
    f = lognormal_field((64, 64, 64), spacing, cv, length_mm, np.random.default_rng(11))
    st = field_statistics(f, spacing)
    assert np.all(f > 0)
    assert st["mean"] == pytest.approx(1.0, abs=0.04)
    assert st["cv"] == pytest.approx(cv, rel=0.10)
    for measured in st["correlation_length_mm"]:
        assert measured == pytest.approx(length_mm, rel=0.12)


def test_anisotropic_voxels_give_isotropic_field():
    f = lognormal_field((96, 48, 48), (1.0, 2.0, 2.0), 0.4, 6.0, np.random.default_rng(2))
    st = field_statistics(f, (1.0, 2.0, 2.0))
    assert np.allclose(st["correlation_length_mm"], 6.0, rtol=0.15)


def test_field_is_seeded():
    a = lognormal_field((16, 16, 16), 1.0, 0.3, 3.0, np.random.default_rng(5))
    b = lognormal_field((16, 16, 16), 1.0, 0.3, 3.0, np.random.default_rng(5))
    c = lognormal_field((16, 16, 16), 1.0, 0.3, 3.0, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_patterns():
    rho = np.linspace(0.0, 1.0, 11)
    n = necrotic_core_factor(rho, 0.3, 0.1)
    assert np.all(n[rho < 0.3] == np.float32(0.1)) and np.all(n[rho >= 0.3] == 1.0)
    r = rim_factor(rho, 0.2, 2.0)
    assert r[0] == pytest.approx(0.2) and r[-1] == pytest.approx(1.0) and np.all(np.diff(r) >= 0)
    z, y, x = np.ogrid[-20:21, -20:21, -20:21]
    fac, centres = subclone_factor(z, y, x, (0, 0, 0), 15.0, 2, 3.0, 2.5, np.random.default_rng(0))
    assert len(centres) == 2 and fac.max() == pytest.approx(2.5)
    assert all(np.linalg.norm(c) <= 12.0 + 1e-9 for c in centres)


def test_bad_parameters_name_the_field():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="cv"):
        lognormal_field((8, 8, 8), 1.0, -0.1, 3.0, rng)
    with pytest.raises(ConfigError, match="correlation_length_mm"):
        lognormal_field((8, 8, 8), 1.0, 0.3, 0.0, rng)
    with pytest.raises(ConfigError, match="radius_fraction"):
        necrotic_core_factor(np.zeros(3), 0.95, 0.1)
