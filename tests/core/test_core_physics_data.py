"""Physics data against numbers from outside the code (NIST/xraydb, ICRP-107, kinematics, Bai 2003)."""
import numpy as np
import pytest

from her2sim.core.errors import PhysicsError
from her2sim.core.hu import hu_to_mu_per_cm
from her2sim.core.materials import get_material
from her2sim.core.radionuclide import TC99M
from her2sim.sim.xsections import (COH, INCOH, PHOTO, build_table, linear_attenuation_per_cm,
                                   mass_attenuation_cm2_g)


def test_water_mu_rho_nist():
    # NIST XCOM / physics.md: 0.1537 cm^2/g at 140.5 keV (1 %)
    assert mass_attenuation_cm2_g("water", 140.5) == pytest.approx(0.1537, rel=0.01)
    # split: photo 0.00090, Rayleigh 0.00277, Compton 0.14997 cm^2/g
    assert mass_attenuation_cm2_g("water", 140.5, "incoh") == pytest.approx(0.14997, rel=0.01)
    assert mass_attenuation_cm2_g("water", 140.5, "coh") == pytest.approx(0.00277, rel=0.03)


@pytest.mark.parametrize("name,mu,tol", [("lead", 26.9, 0.02), ("nai", 2.62, 0.02),
                                         ("soft_tissue", 0.1614, 0.01), ("cortical_bone", 0.2931, 0.01),
                                         ("adipose", 0.1453, 0.01), ("muscle", 0.1599, 0.01)])
def test_linear_attenuation_reference_notes(name, mu, tol):
    assert linear_attenuation_per_cm(name, 140.5) == pytest.approx(mu, rel=tol)


def test_lung_mu_in_reference_range():
    # physics.md: inflated lung 0.26-0.38 g/cm^3 -> 0.04-0.06 1/cm, mu/rho 0.1525
    assert mass_attenuation_cm2_g("lung", 140.5) == pytest.approx(0.1525, rel=0.01)
    assert 0.038 <= linear_attenuation_per_cm("lung", 140.5) <= 0.06


def test_table_lookup_matches_direct_and_nist_at_100_150kev():
    tb = build_table()
    for e in (100.0, 140.5, 150.0):
        direct = mass_attenuation_cm2_g("lead", e)
        assert tb.mu_rho("lead", e)[0] == pytest.approx(direct, rel=2e-3)
    # NIST XCOM: water 0.1707 / 0.1505, lead 5.549 / 2.015 cm^2/g at 100 / 150 keV
    assert tb.mu_rho("water", 100.0)[0] == pytest.approx(0.1707, rel=0.005)
    assert tb.mu_rho("water", 150.0)[0] == pytest.approx(0.1505, rel=0.005)
    assert tb.mu_rho("lead", 100.0)[0] == pytest.approx(5.549, rel=0.005)
    assert tb.mu_rho("lead", 150.0)[0] == pytest.approx(2.015, rel=0.005)
    # the channels add up
    s = sum(tb.mu_rho("water", 140.5, c)[0] for c in (PHOTO, INCOH, COH))
    assert s == pytest.approx(tb.mu_rho("water", 140.5)[0], rel=1e-9)


def test_rayleigh_form_factor_cdf_monotone():
    tb = build_table()
    assert np.all(np.diff(tb.ff_cdf, axis=1) >= 0)
    assert np.allclose(tb.ff_cdf[:, -1], 1.0)


def test_energy_outside_table_and_unknown_material():
    tb = build_table()
    with pytest.raises(PhysicsError, match="energy_kev"):
        tb.mu_rho("water", 300.0)
    with pytest.raises(PhysicsError, match="unobtainium"):
        get_material("unobtainium")


def test_tc99m_decay_factors():
    # physics.md: 0.891 at 1 h, 0.794 at 2 h
    assert TC99M.decay_factor(3600.0) == pytest.approx(0.891, abs=0.001)
    assert TC99M.decay_factor(7200.0) == pytest.approx(0.794, abs=0.001)
    assert TC99M.half_life_s == pytest.approx(21624.0, abs=1.0)
    assert TC99M.gamma_yield == pytest.approx(0.8906)


def test_decays_in_interval_integrates_exponential():
    # short interval: A * T
    assert TC99M.decays_in_interval(1e6, 0.0, 1.0) == pytest.approx(1e6, rel=1e-4)
    # one half-life from t=0 decays half of A/lambda
    n = TC99M.decays_in_interval(1e6, 0.0, TC99M.half_life_s)
    assert n == pytest.approx(0.5 * 1e6 / TC99M.decay_constant_per_s, rel=1e-9)


def test_hu_to_mu_bilinear():
    mu = hu_to_mu_per_cm([-1000.0, 0.0, 1000.0], kvp=120)
    # Bai 2003 / GE CT540 at 120 kVp: mu_w 0.1538, slopes 1.658e-4 and 1.039e-4 per HU
    assert mu[0] == pytest.approx(max(0.0, 0.1538 - 0.1658), abs=1e-6)
    assert mu[1] == pytest.approx(0.1538)
    assert mu[2] == pytest.approx(0.1538 + 0.1039, rel=1e-5)


def test_compton_kinematics():
    from her2sim.sim.kinematics import compton_energy_kev
    assert compton_energy_kev(140.5, np.pi / 2) == pytest.approx(110.2, abs=0.1)
    assert compton_energy_kev(140.5, np.pi) == pytest.approx(90.65, abs=0.1)
    assert compton_energy_kev(140.5, np.deg2rad(53.4)) == pytest.approx(126.45, abs=0.2)


def test_hu_to_material_and_density():
    from her2sim.core.errors import DataError
    from her2sim.core.hu import hu_to_material_density
    from her2sim.core.materials import MATERIAL_IDS
    ids, rho = hu_to_material_density([-1000.0, -750.0, -100.0, 0.0, 40.0, 1500.0])
    names = {v: k for k, v in MATERIAL_IDS.items()}
    assert [names[i] for i in ids] == ["air", "lung", "adipose", "soft_tissue", "soft_tissue", "cortical_bone"]
    # inflated lung 0.26 g/cm^3 at about -750 HU (physics.md), water 1.0, ICRU-44 cortical bone 1.92
    assert rho[1] == pytest.approx(0.25, abs=0.02)
    assert rho[3] == pytest.approx(1.0) and rho[5] == pytest.approx(1.92, rel=1e-4)
    with pytest.raises(DataError, match="ct_hu"):
        hu_to_material_density([np.nan])
