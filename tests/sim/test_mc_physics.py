"""Interaction sampling against the analytic cross-sections (Klein-Nishina 1929, form factors)."""
import math

import numpy as np
import pytest
from numba import njit

from her2sim.sim import _transport_kernels as K
from her2sim.sim.xsections import build_table


@njit(cache=True)
def _sample_kn(seed, e, n):
    np.random.seed(seed)
    out = np.empty(n)
    for i in range(n):
        out[i] = K.sample_klein_nishina(e)[1]
    return out


@njit(cache=True)
def _sample_ray(seed, e, m, ff_q, ff2_total, n):
    np.random.seed(seed)
    out = np.empty(n)
    for i in range(n):
        out[i] = K.sample_rayleigh_cos(e, ff_q, ff2_total[m], K.HC_KEV_A)
    return out


def test_klein_nishina_total_cross_section_thomson_limit_and_140kev():
    # sigma_KN -> 8 pi / 3 r_e^2 at low energy; at 140.5 keV sigma_KN / sigma_T = 0.7598 (tabulated KN)
    assert K.kn_total_re2(1.0) == pytest.approx(8 * math.pi / 3, rel=5e-3)
    ratio = K.kn_total_re2(140.5) / (8 * math.pi / 3)
    k = 140.5 / 510.99895
    l = math.log(1 + 2 * k)
    exact = 0.75 * ((1 + k) / k ** 3 * (2 * k * (1 + k) / (1 + 2 * k) - l) + l / (2 * k) - (1 + 3 * k) / (1 + 2 * k) ** 2)
    assert ratio == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("energy", [140.5, 110.0])
def test_kn_pdf_integrates_to_one_and_sampler_matches(energy):
    c = np.linspace(-1, 1, 4001)
    pdf = np.array([K.kn_pdf_per_sr(energy, x) for x in c])
    assert 2 * np.pi * np.trapezoid(pdf, c) == pytest.approx(1.0, rel=1e-6)
    samples = _sample_kn(11, energy, 400_000)
    hist, edges = np.histogram(samples, bins=20, range=(-1, 1))
    cc = np.linspace(-1, 1, 20001)
    pc = np.array([K.kn_pdf_per_sr(energy, x) for x in cc]) * 2 * np.pi
    cdf = np.concatenate([[0], np.cumsum(0.5 * (pc[1:] + pc[:-1]) * np.diff(cc))])
    expect = np.diff(np.interp(edges, cc, cdf)) * samples.size
    chi2 = np.sum((hist - expect) ** 2 / expect)
    assert chi2 < 45  # 19 dof: p ~ 1e-3


def test_rayleigh_pdf_normalised_and_sampler_matches():
    tb = build_table()
    m = tb.index("water")
    e = 140.5
    c = np.linspace(-1, 1, 20001)
    pdf = np.array([K.rayleigh_pdf_per_sr(e, x, m, tb.ff_q, tb.ff2, tb.rayleigh_norm, tb.energies_kev[0], 0.25)
                    for x in c])
    assert 2 * np.pi * np.trapezoid(pdf, c) == pytest.approx(1.0, rel=5e-3)
    samples = _sample_ray(5, e, m, tb.ff_q, tb.ff2_total, 200_000)
    # Rayleigh at 140 keV is strongly forward: compare the sampled and analytic mean cosine
    mean_pdf = 2 * np.pi * np.trapezoid(pdf * c, c)
    assert samples.mean() == pytest.approx(mean_pdf, abs=0.01)
    assert mean_pdf > 0.9


#: Bohr radius (Angstrom, CODATA 2018)
A0_ANGSTROM = 0.529177210903


def _hydrogen_f2(x):
    """Analytic form factor of the hydrogen 1s atom squared, F(x) = (1 + (2 pi a0 x)^2)^-2 with
    x = sin(theta/2)/lambda (Hubbell et al., J Phys Chem Ref Data 4:471, 1975, eq. for H)."""
    return (1.0 + (2.0 * np.pi * A0_ANGSTROM * x) ** 2) ** -4


def test_rayleigh_sampler_inverts_in_x_squared_against_the_analytic_hydrogen_form_factor():
    """The one Rayleigh sampler (patient transport and camera heads) against an outside distribution.

    The cumulative C(x) = int F^2 d(x^2) of hydrogen is analytic, (1 - (1 + b x^2)^-3) / (3 b) with
    b = (2 pi a0)^2, and is tabulated exactly at the nodes of the simulator's grid (0.02 / Angstrom).
    Reference: the exact pdf (1 + cos^2)/2 F^2 d(x^2) integrated finely. (1) The share of every grid
    interval up to x = 0.3 (and of the tail) matches it. (2) Inside an interval [k dq, (k+1) dq] near
    x = 0, where F^2 is flat to < 2 %, the density is proportional to x: (k + 1/4) / (2k + 1) of the
    photons lie below the midpoint (0.25 for k = 0). Interpolating x instead of x^2 puts 0.5 there.
    """
    b = (2.0 * np.pi * A0_ANGSTROM) ** 2
    q = build_table().ff_q  # the simulator's grid
    dq = q[1] - q[0]
    cdf = (1.0 - (1.0 + b * q ** 2) ** -3) / (3.0 * b)
    e = 140.5
    xmax = e / K.HC_KEV_A
    cos_t = _sample_ray(7, e, 0, q, cdf[None, :], 400_000)
    x = xmax * np.sqrt(0.5 * (1.0 - cos_t))
    xf = np.linspace(0.0, xmax, 400_001)
    cf = 1.0 - 2.0 * (xf / xmax) ** 2
    dens = 0.5 * (1.0 + cf ** 2) * _hydrogen_f2(xf) * 2.0 * xf
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(xf))])
    cum /= cum[-1]
    edges = np.concatenate([q[q <= 0.3 + 1e-9], [xmax]])
    expect = np.diff(np.interp(edges, xf, cum)) * x.size
    hist = np.histogram(x, bins=edges)[0]
    chi2 = float(np.sum((hist - expect) ** 2 / expect))
    dof = edges.size - 2
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)
    # inside the first intervals: the x^2 inversion against the exact split, and the x inversion failing it
    k = np.floor(x / dq)
    w = (x ** 2 - (k * dq) ** 2) / (((k + 1) * dq) ** 2 - (k * dq) ** 2)
    x_lin = (k + w) * dq  # what interpolating x (same uniform draw) would have returned
    for i in (0, 1):
        lo, mid, hi = i * dq, (i + 0.5) * dq, (i + 1) * dq
        exact = (np.interp(mid, xf, cum) - np.interp(lo, xf, cum)) / (np.interp(hi, xf, cum) - np.interp(lo, xf, cum))
        assert exact == pytest.approx((i + 0.25) / (2 * i + 1), abs=0.01)
        sel = (x >= lo) & (x < hi)
        assert sel.sum() > 3000
        assert float(np.mean(x[sel] < mid)) == pytest.approx(exact, abs=0.03)
        assert abs(float(np.mean(x_lin[sel] < mid)) - exact) > 0.06


def test_rayleigh_form_factors_and_cross_section_against_outside_values():
    """xraydb f0 of hydrogen against the analytic form factor, and the coherent cross-section of water
    integrated from the tabulated form factors (r_e^2 N_A N(E)) against the Elam/XCOM coherent table."""
    import xraydb
    xs = np.array([0.1, 0.2, 0.5])
    assert np.asarray(xraydb.f0("H", xs)) == pytest.approx(np.sqrt(_hydrogen_f2(xs)), rel=2e-3)
    tb = build_table()
    m = tb.index("water")
    j = int(round((140.5 - tb.energies_kev[0]) / 0.25))
    r_e_cm, n_a = 2.8179403262e-13, 6.02214076e23
    # XCOM (Berger et al., NIST) water, coherent: 2.77e-3 cm^2/g at 140.5 keV (also tests/core/test_core_physics_data.py)
    assert r_e_cm ** 2 * n_a * tb.rayleigh_norm[m, j] == pytest.approx(2.77e-3, rel=0.01)


def test_patient_transport_and_camera_heads_share_one_rayleigh_sampler():
    from her2sim.sim import _camera_kernels as C
    assert C.sample_rayleigh_cos is K.sample_rayleigh_cos
