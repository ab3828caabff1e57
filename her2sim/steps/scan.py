"""One scan with the study's protocol: Monte Carlo projections, the recon grid, the attenuation map and OSEM.

The calibration, simulate, recon and quantify steps all simulate or reconstruct through these functions, so a
calibration scan, a patient scan and the PVC response share one protocol. Settings come typed: the
``[monte_carlo]`` and ``[recon]`` sections of :mod:`her2sim.config` and the study's
:class:`~her2sim.sim.camera.Camera`.
"""
from __future__ import annotations

from her2sim.config import MonteCarloSection, ReconSection
from her2sim.core.containers import Image, Phantom, Projections
from her2sim.core.errors import ConfigError
from her2sim.core.grid import Grid
from her2sim.recon import MonteCarloScatter, grid_for_geometry, reconstruct, reconstruct_batch
from her2sim.recon.attenuation import mu_map_from_ct, mu_map_from_materials
from her2sim.sim.analog import simulate
from her2sim.sim.camera import Camera
from her2sim.sim.transport import MonteCarloSettings


def simulate_expected(ph: Phantom, cam: Camera, mc: MonteCarloSection, settings: MonteCarloSettings,
                      frame: int = 0, geometry=None):
    """Expected projections of time frame ``frame`` in the study's ``monte_carlo.mode``
    (:func:`her2sim.sim.analog.simulate`; an unknown mode is its ConfigError)."""
    return simulate(ph, cam, settings, frame=frame, geometry=geometry, mode=mc.mode)


def mc_settings(mc: MonteCarloSection, seed: int, histories: int | None = None) -> MonteCarloSettings:
    """Monte Carlo settings of one run: ``histories`` (default: the stage's ``monte_carlo.histories``,
    held as ``mc.photons``), ``seed`` and ``monte_carlo.threads`` (0: all cores)."""
    return MonteCarloSettings(n_histories=int(histories or mc.photons), seed=seed, threads=mc.threads or None)


def recon_grid(camera: Camera, phantom_grid: Grid) -> Grid:
    """Reconstruction grid: slices on the detector rows, transaxial grid on the rotation axis (mm)."""
    geo = camera.projection_geometry(axis_z_mm=phantom_grid.center_mm[0])
    return grid_for_geometry(geo)


def attenuation_map(phantom: Phantom, grid: Grid, recon: ReconSection | None = None):
    """Attenuation map (1/cm at 140.5 keV) on the recon grid.

    ``recon.mu_map = "ct"`` (default, also with ``recon`` None): the scanner's bilinear HU -> mu map applied to
    the CT, as a clinic would; ``"materials"``: the ideal map, mu of the phantom's own materials and densities
    (what the Monte Carlo transports), to separate attenuation-map error from the other errors of a study.
    """
    if recon is not None and recon.mu_map == "materials":
        return mu_map_from_materials(phantom, grid)
    return mu_map_from_ct(phantom.ct_hu, phantom.grid, grid)


def scatter_method(recon: ReconSection, projections: Projections) -> str:
    """``recon.scatter``, except DEW on projections without a "scatter" window (a calibration or point-source
    scan simulated with the photopeak only), which has nothing to correct with: ``"none"``."""
    if recon.scatter == "dew" and "scatter" not in [w.name for w in projections.windows]:
        return "none"
    return recon.scatter


def recon_kwargs(recon: ReconSection, mu_map, cps_per_bq, progress: bool) -> dict:
    """Keyword arguments of :func:`her2sim.recon.reconstruct` from the study's ``recon`` section.

    ``post_filter_fwhm_mm`` (mm) is None at 0; ``butterworth`` is ``(cut-off cycles/cm, order)`` or None at
    a 0 cut-off; attenuation correction needs ``recon.attenuation`` and a ``mu_map`` (1/cm).
    """
    fc = recon.butterworth_cutoff_cycles_per_cm or 0.0
    return dict(iterations=recon.iterations, subsets=recon.subsets, psf=recon.psf, penetration=recon.penetration,
                post_filter_fwhm_mm=recon.post_filter_fwhm_mm or None, calibration_cps_per_bq=cps_per_bq,
                butterworth=(float(fc), int(recon.butterworth_order)) if fc > 0 else None,
                attenuation_correction=bool(recon.attenuation and mu_map is not None), progress=progress)


def reconstruct_scan(projections: Projections, mu_map, grid: Grid, recon: ReconSection, camera: Camera,
                     cps_per_bq=None, progress=False, phantom: Phantom | None = None, seed: int = 0,
                     scatter_out: list | None = None) -> Image:
    """One reconstruction with the study's recon settings; with ``recon.scatter = "mc"`` the Monte Carlo
    scatter estimate (view, v, u; counts) is appended to ``scatter_out`` when given."""
    scatter = scatter_method(recon, projections)
    kwargs = recon_kwargs(recon, mu_map, cps_per_bq, progress)
    mu = mu_map if recon.attenuation else None
    if scatter == "mc":
        if phantom is None:
            raise ConfigError("recon.scatter = 'mc' needs the phantom's CT for the scatter simulation")
        kwargs["mc_scatter"] = MonteCarloScatter(phantom.ct_hu, phantom.grid, n_histories=recon.scatter_histories,
                                                 seed=seed, smooth_fwhm_mm=recon.scatter_smooth_fwhm_mm)
    img, s = reconstruct(projections, mu, grid, camera, scatter=scatter, return_scatter=True, **kwargs)
    if scatter_out is not None and scatter == "mc":
        scatter_out.append(s)
    return img


def reconstruct_realisations(realisations: list, mu_map, grid: Grid, recon: ReconSection, camera: Camera,
                             cps_per_bq=None, progress=False) -> list:
    """All noise realisations of one scan in one batched OSEM (:func:`her2sim.recon.reconstruct_batch`):
    the system matrix, attenuation and sensitivity images are built once and every projector pass
    serves the whole batch. ``recon.scatter = "mc"`` is not batched (its scatter term needs a
    reconstruction per realisation); the caller loops over :func:`reconstruct_scan` then."""
    scatter = scatter_method(recon, realisations[0])
    mu = mu_map if recon.attenuation else None
    return reconstruct_batch(realisations, mu, grid, camera, scatter=scatter,
                             **recon_kwargs(recon, mu_map, cps_per_bq, progress))
