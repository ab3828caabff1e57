"""her2sim.analysis - SUV, VOIs, partial-volume correction and threshold statistics.

Works on plain numpy arrays in Bq/mL (or SUV) plus metadata (voxel size in mm,
patient weight/height, injected activity, times), so real SPECT reconstructions
and simulated ones go through the same code. Imports only ``her2sim.core``.

Modules
-------
suv            SUVbw, SUL (Janmahasatian LBM), SUVbsa (Du Bois), decay correction, counts per SUV
voi            sphere/ellipsoid/label/threshold VOIs; SUVmax, SUVmean, SUVpeak, volume, TLU
heterogeneity  CV, skewness, kurtosis, fraction above a level inside a VOI
pvc            package, one module per method (registry ``pvc.METHODS``): Gaussian PSF, RC correction,
               GTM, RBV, iterative Yang, Muller-Gartner, RL, Van Cittert
pvc_phantom    PETPVC-style piecewise-constant validation phantom
lesion_table   measured lesion uptake joined with phantom truth rows (rows for the threshold CSV)
threshold      Se/Sp/PPV/NPV with Wilson/Clopper-Pearson CIs, ROC/AUC, Youden, patient bootstrap,
               visual-read model; CLI ``python -m her2sim.analysis.threshold``
stats          seed-paper tests (Student, Welch, Mann-Whitney, Spearman, paired), bias/RMSE, Bland-Altman
call_rates     P(SUVmax >= threshold) by HER2 class, size and time; a lesion's call across its scans
robustness     threshold robustness under image noise (realisation spread, nested bootstrap, P(positive))
figures        matplotlib PNG figures (import ``her2sim.analysis.figures`` explicitly)

The main functions are re-exported here and loaded on first use, so
``import her2sim.analysis`` stays cheap (scikit-learn is imported only when a
threshold function is used).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "suv": ("suv_scale_factor", "suv_from_concentration", "suv_image", "decay_corrected_activity_bq",
            "lean_body_mass_kg", "body_surface_area_m2", "bmi_kg_m2"),
    "voi": ("sphere_mask", "ellipsoid_mask", "label_mask", "threshold_voi", "mask_to_bool", "suv_max",
            "suv_mean", "suv_peak", "voi_volume_ml", "total_lesion_uptake", "voi_statistics",
            "dilate_mask_mm", "measure_lesions",
            "SUVPEAK_DIAMETER_MM"),
    "heterogeneity": ("coefficient_of_variation", "skewness", "kurtosis", "fraction_above",
                      "heterogeneity_metrics"),
    "pvc": ("gaussian_blur", "sigma_voxels", "psf_from_point_source", "analytic_rc_max", "analytic_rc_mean",
            "pvc_recovery_coefficient", "equivalent_sphere_diameter_mm", "gtm_matrix", "gtm_regional_means",
            "pvc_gtm", "pvc_rbv", "pvc_iterative_yang", "pvc_muller_gartner", "pvc_richardson_lucy",
            "pvc_van_cittert", "pvc_rc", "regional_means", "apply_pvc", "measure_recovery_coefficients",
            "fit_effective_fwhm_mm", "PVC_METHODS"),
    "pvc_phantom": ("pvc_validation_phantom",),
    "lesion_table": ("lesion_rows",),
    "threshold": ("binary_metrics", "confusion_counts", "wilson_interval", "clopper_pearson_interval",
                  "roc_table", "auc", "youden_threshold", "bootstrap_roc", "evaluate_threshold", "visual_read",
                  "read_lesion_csv", "write_lesion_csv", "call_rate_by_group", "SEED_THRESHOLD_SUV"),
    "stats": ("mean_sd", "group_mean_sd", "compare_groups", "spearman_ihc", "bias_rmse", "bland_altman",
              "paired_test"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'her2sim.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
