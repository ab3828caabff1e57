"""Published breast statistics the anatomy-v2 breasts are built from: volumes by size class, glandular fraction.

Volumes (per breast, mL)
------------------------
:data:`BREAST_SIZE_CLASSES` names three sizes, each a published population figure:

* ``small`` 250 mL: the 5th percentile of breast volume at normal BMI (18.5-24.9) in an MRI cohort of 400 women
  (MRI segmentation; "Definitions of abnormal breast size and asymmetry: a cohort study of 400 women", the
  micromastia limit), and the ICRP 89 reference female (500 g both breasts, ICRP Publication 89, 2002);
* ``medium`` 564 mL: the mean of left (561 mL) and right (567 mL) breast volumes by MRI stereology in 15 healthy
  women (Hussain et al., Br J Radiol 72:236, 1999);
* ``large`` 1250 mL: the 95th percentile at normal BMI of the 400-women MRI cohort (the macromastia limit).

:data:`BREAST_VOLUME_RANGE_ML` is what the model builds (50-2000 mL per breast; a volume outside it is a ConfigError
naming the range). A patient's breasts can differ: ``breast_volume_ml = {"left": L, "right": R}`` (the MRI
cohort's bidirectional asymmetry ratio spans -19 % to +26 % from its 5th to 95th percentile,
:data:`ASYMMETRY_RATIO_P5_P95`).

Glandular fraction (volumetric, skin excluded)
----------------------------------------------
Yaffe et al., Med Phys 36:5437 (2009), breast CT and calibrated mammograms of 2831 women: mean volumetric
glandular fraction 19.3 %, 80 % of women below 27 %, 95 % below 45 %. A log-normal through the two percentiles
(:func:`glandular_lognormal`) has median 15.8 % and sigma 0.636, and its mean is 19.3 %, the published mean,
which it was not fitted to. BI-RADS density classes cover about 10 / 40 / 40 / 10 % of women (A / B / C / D;
ACR BI-RADS Atlas, 5th ed., 2013); :func:`glandular_fraction_by_density` gives each class the log-normal's value
at the middle percentile of its band (5th, 30th, 70th, 95th): A 5.5 %, B 11.3 %, C 22.1 %, D 45.0 %. Anatomy v2
uses these. Anatomy v1 keeps 12.5 / 37.5 / 62.5 / 87.5 %, the middles of the BI-RADS 4th-edition quartiles of
*mammographic area* density, which are not volume fractions (kept so v1's published figures hold).
"""
from __future__ import annotations

import math

from scipy.stats import norm

from her2sim.core.errors import ConfigError, check_range

#: per-breast volume (mL) of each size class (module docstring for the sources)
BREAST_SIZE_CLASSES = {"small": 250.0, "medium": 564.0, "large": 1250.0}
#: volumes (mL per breast) the breast model builds
BREAST_VOLUME_RANGE_ML = (50.0, 2000.0)
#: 400-women MRI cohort: 5th and 95th percentile of the bidirectional breast-volume asymmetry ratio
ASYMMETRY_RATIO_P5_P95 = (-0.19, 0.26)
#: Yaffe et al. 2009: mean volumetric glandular fraction and two percentiles (percentile, fraction)
YAFFE_2009 = {"mean": 0.193, "percentiles": ((0.80, 0.27), (0.95, 0.45))}
#: BI-RADS (5th ed.) share of women per density class
BIRADS_SHARE = {"A": 0.10, "B": 0.40, "C": 0.40, "D": 0.10}


def glandular_lognormal() -> tuple:
    """(median, sigma) of the log-normal volumetric glandular fraction through Yaffe et al.'s 80th and 95th
    percentiles."""
    (p1, f1), (p2, f2) = YAFFE_2009["percentiles"]
    z1, z2 = norm.ppf(p1), norm.ppf(p2)
    sigma = math.log(f2 / f1) / (z2 - z1)
    median = f1 / math.exp(sigma * z1)
    return median, sigma


def glandular_fraction_by_density() -> dict:
    """Volumetric glandular fraction of each BI-RADS class: the log-normal's value at the middle percentile of the
    class's band of women (A 0-10 %, B 10-50 %, C 50-90 %, D 90-100 %)."""
    median, sigma = glandular_lognormal()
    out, lo = {}, 0.0
    for k, share in BIRADS_SHARE.items():
        mid = lo + share / 2.0
        out[k] = float(median * math.exp(sigma * norm.ppf(mid)))
        lo += share
    return out


def breast_volumes(value, field: str = "breast_volume_ml") -> dict:
    """``{"right": mL, "left": mL}`` from a number (both breasts), a ``{"left", "right"}`` table, or a size class
    name of :data:`BREAST_SIZE_CLASSES`; ConfigError naming ``field`` and the allowed range otherwise."""
    lo, hi = BREAST_VOLUME_RANGE_ML
    if isinstance(value, str):
        if value not in BREAST_SIZE_CLASSES:
            raise ConfigError(f"{field} = {value!r} is not a size class; choose one of {list(BREAST_SIZE_CLASSES)} "
                              f"or a volume in [{lo:g}, {hi:g}] mL per breast")
        v = BREAST_SIZE_CLASSES[value]
        return {"right": v, "left": v}
    if isinstance(value, dict):
        if set(value) != {"left", "right"}:
            raise ConfigError(f"{field} = {value!r} must give both 'left' and 'right' (mL per breast), nothing else")
        return {s: check_range(f"{field}.{s}", value[s], lo, hi) for s in ("right", "left")}
    if isinstance(value, bool):
        raise ConfigError(f"{field} = {value!r} must be a volume in [{lo:g}, {hi:g}] mL per breast")
    v = check_range(field, value, lo, hi)
    return {"right": v, "left": v}
