"""her2sim.phantoms: digital patients and test objects as :class:`her2sim.core.containers.Phantom`.

* calibration objects: :func:`iec_body_phantom`, :func:`uniform_cylinder_phantom`, :func:`point_source_phantom`,
  :func:`line_source_phantom`, :func:`iec_sphere_centres_mm`;
* the analytic female torso: :func:`torso_anatomy`, :func:`torso_phantom`, :func:`patient_phantom`; its opt-in
  whole-body extent (``extent = "whole_body"``, :mod:`her2sim.phantoms.whole_body`) and :func:`whole_body_grid`;
  the opt-in anatomy v2 (``anatomy = "v2"``: sub-voxel edges, shoulder girdle, four-chamber heart):
  :func:`torso_anatomy_v2`, :data:`ANATOMIES`;
* 99mTc-NM-02 biodistribution: :data:`DEFAULT_SUV`, :func:`suv_to_bq_per_ml`, :func:`fdg_suv_map`;
* HER2 lesions and heterogeneity: :func:`her2_positive`, :func:`lognormal_field`, :func:`field_statistics`;
* cohorts: :func:`generate_cohort`, :func:`cohort_summary`, :func:`build_patient_phantom`;
* study-file presets: :func:`preset_phantom` (demo, torso, iec, cylinder, point);
* reporting: :func:`phantom_summary`, :func:`plot_phantom`, :func:`body_radius_mm`.
"""
from .biodistribution import (DEFAULT_BIO_RATIO_PER_H, DEFAULT_FDG_SUV, DEFAULT_SUV, bq_per_ml_to_suv, fdg_suv_map,
                              organ_suv_maps, suv_to_bq_per_ml)
from .calibration import (IEC_SPHERE_DIAMETERS_MM, IEC_SPHERE_VOLUMES_ML, iec_body_phantom, iec_sphere_centres_mm,
                          line_source_phantom, point_source_phantom, uniform_cylinder_phantom)
from .cohort import PRESETS, build_patient_phantom, cohort_summary, generate_cohort, load_cohort_spec, patient_grid
from .clinical_grid import clinical_grid
from .contours import body_mask, body_radius_mm
from .heterogeneity import field_statistics, gaussian_random_field, lognormal_field
from .lesions import DEFAULT_IHC_SUV, her2_positive, validate_lesion_spec
from .patient import patient_phantom, torso_phantom
from .phantom_presets import PRESET_NAMES, lesions_from_options, preset_phantom
from .plots import plot_phantom
from .summary import phantom_summary
from .torso import torso_anatomy
from .torso_v2 import ANATOMIES, torso_anatomy_v2
from .whole_body import EXTENTS, whole_body_grid

__all__ = [
    "DEFAULT_BIO_RATIO_PER_H", "DEFAULT_FDG_SUV", "DEFAULT_SUV", "bq_per_ml_to_suv", "fdg_suv_map", "organ_suv_maps",
    "suv_to_bq_per_ml", "IEC_SPHERE_DIAMETERS_MM", "IEC_SPHERE_VOLUMES_ML", "iec_body_phantom",
    "iec_sphere_centres_mm", "line_source_phantom", "point_source_phantom", "uniform_cylinder_phantom", "PRESETS",
    "build_patient_phantom", "cohort_summary", "generate_cohort", "load_cohort_spec", "patient_grid", "body_mask",
    "body_radius_mm", "field_statistics", "gaussian_random_field", "lognormal_field", "DEFAULT_IHC_SUV",
    "her2_positive", "validate_lesion_spec", "patient_phantom", "torso_phantom", "plot_phantom", "phantom_summary",
    "torso_anatomy", "PRESET_NAMES", "lesions_from_options", "preset_phantom", "clinical_grid", "EXTENTS",
    "whole_body_grid", "ANATOMIES", "torso_anatomy_v2",
]
