"""Material catalogue: elemental composition (mass fractions) and nominal density.

Sources
-------
* ICRU Report 44 (1989), *Tissue substitutes in radiation dosimetry and measurement*:
  water, air, adipose, soft tissue, skeletal muscle, lung, liver, kidney, spleen,
  blood, skin, breast, cortical bone, red marrow.
* ICRU Report 46 (1992): spongiosa (trabecular bone + marrow) at 1.18 g/cm^3.
* Hammerstein et al., Radiology 130:485 (1979): breast adipose and glandular
  tissue; densities 0.92 / 1.035 g/cm^3 as used by the FDA VICTRE phantoms.
* NIST material compositions: NaI, lead, aluminium, PMMA, Pyrex glass.

The catalogue order defines the material ids used in every ``Phantom.material_ids``
map; ids are stable (new materials are appended).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import PhysicsError


@dataclass(frozen=True)
class Material:
    """A material: name, nominal density (g/cm^3) and mass fractions by element symbol."""

    name: str
    density_g_cm3: float
    mass_fractions: tuple  # ((symbol, fraction), ...), normalised to 1
    source: str

    def fractions(self) -> dict:
        return dict(self.mass_fractions)


def _m(name, density, source, **fr):
    total = sum(fr.values())
    return Material(name, density, tuple((k, v / total) for k, v in fr.items()), source)


_CATALOGUE = (
    _m("air", 0.001205, "ICRU-44 dry air", C=0.000124, N=0.755268, O=0.231781, Ar=0.012827),
    _m("water", 1.000, "ICRU-44", H=0.111894, O=0.888106),
    _m("adipose", 0.95, "ICRU-44 adipose tissue", H=0.114, C=0.598, N=0.007, O=0.278, Na=0.001, S=0.001, Cl=0.001),
    _m("breast_adipose", 0.92, "Hammerstein 1979; VICTRE density", H=0.112, C=0.619, N=0.017, O=0.251, P=0.001),
    _m("breast_gland", 1.035, "Hammerstein 1979; VICTRE density", H=0.102, C=0.184, N=0.032, O=0.677, P=0.005),
    _m("breast", 1.02, "ICRU-44 mammary gland 2", H=0.106, C=0.332, N=0.030, O=0.527, Na=0.001, P=0.001, S=0.002, Cl=0.001),
    _m("soft_tissue", 1.06, "ICRU-44 soft tissue", H=0.102, C=0.143, N=0.034, O=0.708, Na=0.002, P=0.003, S=0.003, Cl=0.002, K=0.003),
    _m("muscle", 1.05, "ICRU-44 skeletal muscle", H=0.102, C=0.143, N=0.034, O=0.710, Na=0.001, P=0.002, S=0.003, Cl=0.001, K=0.004),
    _m("lung", 0.26, "ICRU-44 lung tissue (1.05) inflated to 0.26", H=0.103, C=0.105, N=0.031, O=0.749, Na=0.002, P=0.002, S=0.003, Cl=0.003, K=0.002),
    _m("liver", 1.06, "ICRU-44 liver", H=0.102, C=0.139, N=0.030, O=0.716, Na=0.002, P=0.003, S=0.003, Cl=0.002, K=0.003),
    _m("kidney", 1.05, "ICRU-44 kidney", H=0.103, C=0.132, N=0.030, O=0.724, Na=0.002, P=0.002, S=0.002, Cl=0.002, K=0.002, Ca=0.001),
    _m("spleen", 1.06, "ICRU-44 spleen", H=0.103, C=0.113, N=0.032, O=0.741, Na=0.001, P=0.003, S=0.002, Cl=0.002, K=0.003),
    _m("blood", 1.06, "ICRU-44 whole blood", H=0.102, C=0.110, N=0.033, O=0.745, Na=0.001, P=0.001, S=0.002, Cl=0.003, K=0.002, Fe=0.001),
    _m("skin", 1.09, "ICRU-44 skin", H=0.100, C=0.204, N=0.042, O=0.645, Na=0.002, P=0.001, S=0.002, Cl=0.003, K=0.001),
    _m("red_marrow", 1.03, "ICRU-44 red marrow", H=0.105, C=0.414, N=0.034, O=0.439, P=0.001, S=0.002, Cl=0.002, K=0.002, Fe=0.001),
    _m("spongiosa", 1.18, "ICRU-46 spongiosa", H=0.085, C=0.404, N=0.028, O=0.367, Na=0.001, Mg=0.001, P=0.034, S=0.002, Cl=0.002, K=0.001, Ca=0.074, Fe=0.001),
    _m("cortical_bone", 1.92, "ICRU-44 cortical bone", H=0.034, C=0.155, N=0.042, O=0.435, Na=0.001, Mg=0.002, P=0.103, S=0.003, Ca=0.225),
    _m("nai", 3.667, "NIST sodium iodide", Na=0.153373, I=0.846627),
    _m("lead", 11.35, "NIST lead", Pb=1.0),
    _m("aluminium", 2.699, "NIST aluminium", Al=1.0),
    _m("pmma", 1.19, "NIST PMMA (C5H8O2)", H=0.080538, C=0.599848, O=0.319614),
    _m("glass", 2.23, "NIST Pyrex glass", B=0.040064, O=0.539562, Na=0.028191, Al=0.011644, Si=0.377220, K=0.003321),
)

#: name -> Material
MATERIALS = {m.name: m for m in _CATALOGUE}
#: material names in id order (id = index)
MATERIAL_NAMES = tuple(m.name for m in _CATALOGUE)
#: name -> stable integer id used in material maps
MATERIAL_IDS = {name: i for i, name in enumerate(MATERIAL_NAMES)}


def get_material(name: str) -> Material:
    """Look up a material by (lower-case) name; unknown names raise :class:`PhysicsError`."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise PhysicsError(f"material = {name!r} is not in the table; known materials: {list(MATERIAL_NAMES)}") from None
