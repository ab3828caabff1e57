"""The numpy helpers of the PyTomography peer (``bench/_peer_dicom_pytomography.py``), without torch.

The peer matches two reconstruction settings to her2sim's (``bench/dicom_interop.py``):

* the PSF kernel: PyTomography samples exp(-x^2 / 2 sigma^2) at whole-pixel offsets, which loses
  variance when sigma is below about 0.6 pixel; the peer hands it the sigma whose *sampled* kernel has
  the wanted variance. Checked here against a kernel summed in the test;
* the OSEM subsets: her2sim's view groups, passed as her2sim gantry angles, mapped to PyTomography's
  angle-sorted projections through phi = (360 - theta) mod 360. Checked here on a dual-head orbit
  written in the test, and an incomplete partition is refused.
"""
from __future__ import annotations


import numpy as np
import pytest

from bench_modules import load_bench

from her2sim.recon.osem import make_subsets



@pytest.fixture(scope="module")
def peer():
    return load_bench("_peer_dicom_pytomography")


def _sampled_variance(sigma_px: float) -> float:
    x = np.arange(-40, 41, dtype=float)
    k = np.exp(-x ** 2 / (2.0 * sigma_px ** 2))
    return float((k * x ** 2).sum() / k.sum())


def test_sampled_kernel_loses_variance_below_a_pixel(peer):
    # 8.84 mm pixels, 7.05 mm FWHM (GI-LEHR at 100 mm): sigma 0.34 pixel keeps about a fifth of its variance
    s = 7.05 / 2.3548 / 8.84
    assert _sampled_variance(s) / s ** 2 == pytest.approx(0.22, abs=0.03)
    assert peer.sampled_variance_px2(s)[0] == pytest.approx(_sampled_variance(s), rel=1e-9)
    # and it is exact for wide kernels
    assert _sampled_variance(3.0) == pytest.approx(9.0, rel=1e-6)


@pytest.mark.parametrize("sigma_px", [0.05, 0.2, 0.34, 0.5, 0.8, 1.5, 4.0])
def test_matched_sigma_gives_the_wanted_variance(peer, sigma_px):
    m = float(peer.matched_sigma_px(sigma_px)[0])
    assert _sampled_variance(m) == pytest.approx(sigma_px ** 2, rel=1e-6, abs=1e-9)
    assert m >= sigma_px - 1e-9  # never narrower than the Gaussian it stands for


def test_her2sim_subsets_map_to_pytomography_projections(peer):
    # dual-head orbit: head 1 from 0 deg, head 2 from 180 deg, 6 deg steps (her2sim angles, view order)
    theta = np.concatenate([np.arange(30) * 6.0, 180.0 + np.arange(30) * 6.0]) % 360.0
    groups = make_subsets(theta, 6)
    text = ";".join(",".join(f"{theta[v]:.6f}" for v in g) for g in groups)
    # PyTomography sorts its projections by its own angle phi = (360 - theta) mod 360
    phi = np.sort((360.0 - theta) % 360.0)
    mapped = peer.subsets_from_angles(text, phi, 6)
    assert len(mapped) == 6
    assert sorted(i for g in mapped for i in g) == list(range(60))
    for g_h, g_p in zip(groups, mapped):  # same views, same visiting order
        assert sorted((360.0 - phi[g_p]) % 360.0) == pytest.approx(sorted(theta[g_h]))


def test_incomplete_subsets_are_refused(peer):
    phi = np.arange(8) * 45.0
    with pytest.raises(SystemExit, match="each of the 8 projections once"):
        peer.subsets_from_angles("0,90;180,270", phi, 2)
    with pytest.raises(SystemExit, match="no PyTomography projection"):
        peer.subsets_from_angles("0,90,180,270;45,135,225,10", phi, 2)


def test_psf_table_interpolates_and_holds_its_ends(peer, tmp_path):
    path = tmp_path / "psf_table.json"
    path.write_text('{"distance_cm": [5.0, 15.0, 25.0], "sigma_cm": [0.4, 0.5, 0.7]}')
    sigma = peer.read_psf_table(path)
    assert sigma(np.array([0.0, 5.0, 10.0, 20.0, 40.0])) == pytest.approx([0.4, 0.4, 0.45, 0.6, 0.7])


@pytest.mark.parametrize("text", ['{"distance_cm": [5.0], "sigma_cm": [0.4]}',
                                  '{"distance_cm": [5.0, 4.0], "sigma_cm": [0.4, 0.5]}',
                                  '{"distance_cm": [5.0, 6.0], "sigma_cm": [0.4, -0.1]}',
                                  '{"distance_cm": [5.0, 6.0, 7.0], "sigma_cm": [0.4, 0.5]}',
                                  '{"distance_cm": [5.0, 6.0]}', '{"distance_cm": ["a", 6.0], "sigma_cm": [0.4, 0.5]}',
                                  'not json', '[1, 2]'])
def test_bad_psf_tables_are_refused(peer, tmp_path, text):
    path = tmp_path / "psf_table.json"
    path.write_text(text)
    with pytest.raises(SystemExit, match="--psf-table"):
        peer.read_psf_table(path)


def test_peer_butterworth_scales_a_sinusoid_by_the_transfer_function(peer):
    # a plane wave along x at f cycles/cm keeps amplitude B(f) = 1 / sqrt(1 + (f / fc)^(2n)) away from the edges
    n, d_cm, fc, order = 128, 0.442, 0.48, 10
    x = np.arange(n) * d_cm
    for f in (0.3, 0.48, 0.55, 0.6):
        img = 2.0 + np.cos(2 * np.pi * f * x)[:, None, None] * np.ones((1, 32, 32))  # (x, y, z), like the peer's
        mid = peer.post_filter(img, (d_cm, d_cm, d_cm), 0.0, (fc, order))[40:88, 16, 16]
        assert (mid.max() - mid.min()) / 2.0 == pytest.approx(1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order)), abs=0.01)


def test_peer_post_filter_matches_her2sims_filter(peer):
    from her2sim.core.grid import Grid
    from her2sim.recon.filters import butterworth_filter

    img = np.zeros((24, 30, 30))
    img[6:18, 8:22, 8:22] = np.random.default_rng(3).gamma(4.0, 1.0, (12, 14, 14))
    ours = np.maximum(butterworth_filter(img, Grid.centered(img.shape, 8.84), 0.48, 10), 0.0)
    theirs = peer.post_filter(img.transpose(2, 1, 0), (0.884, 0.884, 0.884), 0.0, (0.48, 10)).transpose(2, 1, 0)
    assert np.abs(theirs - ours).max() <= 2e-3 * ours.max()
    assert np.array_equal(peer.post_filter(img, (0.884,) * 3, 0.0, None), img)
