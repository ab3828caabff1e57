"""her2sim.recon: SPECT reconstruction (projector, OSEM, scatter, attenuation, calibration).

Public API
----------
reconstruct(projections, mu_map_per_cm, grid, ...) -> Image
SpectSystemMatrix(grid, geometry, mu_map_per_cm, camera, psf) with ``forward`` / ``backward``
grid_for_geometry(geometry, n_xy=None) -> Grid matching the detector pixels
osem(system, counts, ...), make_subsets, subset_order
reconstruct_batch(realisations, ...) / osem_batch(system, counts_batch, ...): the Poisson realisations of
    one scan through one system matrix, every projector pass shared by the batch
post_filter(image, grid, fwhm_mm, butterworth)
ReconstructionResponse / scan_response: the protocol's reconstruction of a model image (for PVC)
dew_scatter, tew_scatter; MonteCarloScatter / monte_carlo_scatter (``reconstruct(scatter="mc")``)
sensitivity_cps_per_bq, counts_to_bq_per_ml, calibrate_image, mean_decay_factor
gaussian_filter_fwhm, butterworth_filter, mu_map_from_ct
"""
from .attenuation import mu_map_from_ct
from .calibration import calibrate_image, counts_to_bq_per_ml, mean_decay_factor, sensitivity_cps_per_bq
from .filters import butterworth_filter, gaussian_filter_fwhm
from .mc_scatter import MonteCarloScatter, monte_carlo_scatter
from .osem import (SCATTER_METHODS, make_subsets, osem, osem_batch, post_filter, reconstruct, reconstruct_batch,
                   subset_order)
from .projector import SpectSystemMatrix, grid_for_geometry
from .response import ReconstructionResponse, scan_response
from .scatter import dew_scatter, tew_scatter

__all__ = ["MonteCarloScatter", "ReconstructionResponse", "SCATTER_METHODS", "SpectSystemMatrix", "butterworth_filter",
           "calibrate_image", "counts_to_bq_per_ml", "dew_scatter", "gaussian_filter_fwhm", "grid_for_geometry",
           "make_subsets", "mean_decay_factor", "monte_carlo_scatter", "mu_map_from_ct", "osem", "osem_batch",
           "post_filter", "reconstruct", "reconstruct_batch", "scan_response", "sensitivity_cps_per_bq",
           "subset_order", "tew_scatter"]
