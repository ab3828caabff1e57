"""Anthropometric reference: adult female chest and waist size for a given height and weight.

Used to check the digital patient's body outline against people (``bench/phantom_realism.py``,
``body_dims_mm``), as ICRP 89 masses check its organs.

Source: Heinz G, Peterson LJ, Johnson RW, Kerk CJ, "Exploring relationships in body dimensions",
Journal of Statistics Education 11(2), 2003 (the ``bdims`` data: 260 physically active women,
18-67 years, 42.0-105.2 kg, 147.2-182.9 cm; sample means chest depth 17.72 cm, chest diameter
26.10 cm, chest girth 86.06 cm, waist girth 69.80 cm, weight 60.60 kg, height 164.87 cm). Their
measurement definitions:

* chest depth: between spine and sternum at nipple level, mid-expiration (anthropometer);
* chest diameter: lateral, at nipple level, mid-expiration;
* chest girth: just above the breast tissue in women, mid-expiration;
* waist girth: the narrowest part of the torso below the rib cage.

The coefficients below are an ordinary least-squares fit, computed here from those 260 women, of each
dimension (cm) on height (cm) and weight (kg): ``dim = a + b * height_cm + c * weight_kg``, with the
residual standard deviation (cm) and R^2 of the fit. An OLS fit with an intercept passes through the
sample means, which is what ``tests/phantoms/test_anthropometry.py`` checks against the published means.
"""
from __future__ import annotations

from dataclasses import dataclass

from her2sim.core.errors import check_range

#: range of the fitted sample (Heinz et al. 2003, women); outside it the fit would extrapolate
HEIGHT_RANGE_CM = (147.2, 182.9)
WEIGHT_RANGE_KG = (42.0, 105.2)


@dataclass(frozen=True)
class DimensionFit:
    """``value_cm = intercept + per_height * height_cm + per_weight * weight_kg`` (+/- residual_sd_cm)."""

    intercept_cm: float
    per_height_cm_per_cm: float
    per_weight_cm_per_kg: float
    residual_sd_cm: float
    r2: float
    definition: str


#: OLS fits on the 260 women of Heinz et al. (2003); see the module docstring
FEMALE_CHEST_FITS = {
    "chest_depth": DimensionFit(18.605, -0.0540, 0.1323, 1.420, 0.404,
                                "AP, spine to sternum at nipple level"),
    "chest_diameter": DimensionFit(20.3947, -0.0111, 0.1244, 1.401, 0.411,
                                   "lateral, at nipple level"),
    "chest_girth": DimensionFit(81.4449, -0.1904, 0.5943, 3.175, 0.737,
                                "circumference just above the breasts"),
    "waist_girth": DimensionFit(77.3616, -0.3302, 0.7737, 3.392, 0.802,
                                "circumference at the narrowest part below the rib cage"),
}


def female_body_dimensions_mm(height_cm: float, weight_kg: float) -> dict:
    """Expected adult female chest and waist dimensions for a height and weight.

    Parameters
    ----------
    height_cm : float
        Standing height (cm), within the fitted sample's range 147.2-182.9 cm.
    weight_kg : float
        Body mass (kg), within 42.0-105.2 kg.

    Returns
    -------
    dict
        Per dimension (``chest_depth``, ``chest_diameter``, ``chest_girth``, ``waist_girth``):
        ``{"mean_mm", "sd_mm", "definition"}``, the fitted population mean and the residual standard
        deviation of individuals of that height and weight (mm).

    Raises
    ------
    ConfigError
        When height or weight lies outside the fitted sample (the field and the range are named).
    """
    h = check_range("height_cm", height_cm, *HEIGHT_RANGE_CM)
    w = check_range("weight_kg", weight_kg, *WEIGHT_RANGE_KG)
    out = {}
    for name, fit in FEMALE_CHEST_FITS.items():
        mean_cm = fit.intercept_cm + fit.per_height_cm_per_cm * h + fit.per_weight_cm_per_kg * w
        out[name] = {"mean_mm": round(10.0 * mean_cm, 1), "sd_mm": round(10.0 * fit.residual_sd_cm, 1),
                     "definition": fit.definition}
    return out
