"""Standardised uptake values: SUVbw, SUL (lean body mass) and SUVbsa.

Definitions (``shared/reference/validation_targets.md``, QIBA SUV pseudocode):

* ``SUVbw = C [Bq/mL] / (A_inj [Bq] / BW [g])``, dimensionless under the stated
  assumption that tissue density is 1 g/mL;
* ``SUL`` replaces body weight by lean body mass from Janmahasatian et al.
  (Clin Pharmacokinet 44:1051, 2005), recommended over James by Tahari et al.
  (J Nucl Med 55:1481, 2014): female ``LBM = 9270 W / (8780 + 244 BMI)``,
  male ``LBM = 9270 W / (6680 + 216 BMI)`` (W in kg, BMI in kg/m^2);
* ``SUVbsa = C [Bq/mL] * BSA [cm^2] / A_inj [Bq]`` (units cm^2/mL), with the
  Du Bois body surface area ``BSA [m^2] = 0.007184 W^0.425 H^0.725``
  (W kg, H cm; Du Bois & Du Bois, Arch Intern Med 17:863, 1916).

The injected activity is decay-corrected to the image's reference time: for an
image whose voxels hold the concentration at scan start (the default, as a
reconstruction without decay correction to injection), ``A_inj`` is multiplied by
``exp(-lambda t)`` with ``t`` the time from injection to scan start; for an image
already decay-corrected to the injection time nothing is decayed.
Decay uses :data:`her2sim.core.radionuclide.TC99M` (T1/2 = 6.0067 h).

Everything works on plain arrays in Bq/mL, so a real SPECT reconstruction
(calibrated to Bq/mL) goes through the same code as a simulated one.
"""
from __future__ import annotations

import numpy as np

from her2sim.core.acquisition import Acquisition
from her2sim.core.containers import Image
from her2sim.core.errors import ConfigError, DataError, check_choice, check_range
from her2sim.core.radionuclide import DECAY_REFERENCES, TC99M, Radionuclide  # noqa: F401 - re-exported

#: Assumed tissue density used to turn grams of body weight into millilitres (g/mL).
TISSUE_DENSITY_G_PER_ML = 1.0

SUV_NORMALISATIONS = ("bw", "lbm", "bsa")


def decay_corrected_activity_bq(injected_bq: float, elapsed_s: float,
                                nuclide: Radionuclide = TC99M) -> float:
    """Injected activity decayed to a later time.

    Parameters
    ----------
    injected_bq : float
        Activity at injection time in Bq (> 0).
    elapsed_s : float
        Time from injection to the reference time (scan start) in s (>= 0).
    nuclide : Radionuclide
        Emitter; 99mTc by default.

    Returns
    -------
    float
        ``injected_bq * exp(-ln2 t / T1/2)`` in Bq.
    """
    a = check_range("injected_bq", injected_bq, 0.0, None, lo_open=True)
    t = check_range("elapsed_s", elapsed_s, 0.0, 10 * 24 * 3600.0)
    return a * float(nuclide.decay_factor(t))


def bmi_kg_m2(weight_kg: float, height_cm: float) -> float:
    """Body-mass index ``W / H^2`` in kg/m^2 (W kg, H cm)."""
    w = check_range("weight_kg", weight_kg, 1.0, 500.0)
    h = check_range("height_cm", height_cm, 30.0, 260.0)
    return w / (h / 100.0) ** 2


def lean_body_mass_kg(weight_kg: float, height_cm: float, sex: str) -> float:
    """Lean body mass (kg) by the Janmahasatian formula.

    ``female: 9270 W / (8780 + 244 BMI)``; ``male: 9270 W / (6680 + 216 BMI)``
    (Janmahasatian 2005; Tahari et al., J Nucl Med 55:1481, 2014).

    Parameters
    ----------
    weight_kg : float
    height_cm : float
    sex : {'female', 'male', 'F', 'M'}
    """
    s = _normalise_sex(sex)
    w = check_range("weight_kg", weight_kg, 1.0, 500.0)
    bmi = bmi_kg_m2(w, height_cm)
    if s == "female":
        return 9270.0 * w / (8780.0 + 244.0 * bmi)
    return 9270.0 * w / (6680.0 + 216.0 * bmi)


def body_surface_area_m2(weight_kg: float, height_cm: float) -> float:
    """Du Bois body surface area ``0.007184 W^0.425 H^0.725`` in m^2 (W kg, H cm)."""
    w = check_range("weight_kg", weight_kg, 1.0, 500.0)
    h = check_range("height_cm", height_cm, 30.0, 260.0)
    return 0.007184 * w ** 0.425 * h ** 0.725


def _normalise_sex(sex) -> str:
    if not isinstance(sex, str):
        raise ConfigError(f"sex = {sex!r} is not allowed; choose one of ['F', 'M', 'female', 'male']")
    s = sex.strip().lower()
    mapping = {"f": "female", "female": "female", "m": "male", "male": "male"}
    if s not in mapping:
        raise ConfigError(f"sex = {sex!r} is not allowed; choose one of ['F', 'M', 'female', 'male']")
    return mapping[s]


def suv_scale_factor(injected_bq: float, weight_kg: float, *, elapsed_s: float = 0.0,
                     normalisation: str = "bw", height_cm: float | None = None, sex: str | None = None,
                     decay_reference: str = "scan_start", duration_s: float = 0.0,
                     nuclide: Radionuclide = TC99M) -> float:
    """Factor that turns a concentration in Bq/mL into an SUV.

    ``SUV = C [Bq/mL] * factor``.

    Parameters
    ----------
    injected_bq : float
        Injected activity at injection time (Bq), net of residual in the syringe.
    weight_kg : float
        Body weight (kg).
    elapsed_s : float
        Time from injection to the image reference time (scan start) in s.
    normalisation : {'bw', 'lbm', 'bsa'}
        Body weight (SUVbw, g/mL -> dimensionless with 1 g/mL), lean body mass (SUL)
        or body surface area (SUVbsa, cm^2/mL).
    height_cm : float, optional
        Needed for 'lbm' and 'bsa'.
    sex : str, optional
        'F'/'M'; needed for 'lbm'.
    decay_reference : {'scan_start', 'injection', 'acquisition_mean'}
        Time to which the image voxels are decay-corrected
        (:data:`her2sim.core.radionuclide.DECAY_REFERENCES`). 'scan_start' decays the injected
        activity by ``elapsed_s``; 'injection' uses it as is; 'acquisition_mean' (voxels hold the
        mean concentration during the scan, no decay correction) uses its mean over
        ``[elapsed_s, elapsed_s + duration_s]``.
    duration_s : float
        Scan duration (s), used by 'acquisition_mean' (0: the instant ``elapsed_s``).
    nuclide : Radionuclide

    Returns
    -------
    float
        mL/Bq times the normaliser (g for bw/lbm, cm^2 for bsa).
    """
    if injected_bq is None:
        raise ConfigError("injected_bq is missing; SUV needs the injected activity in Bq (> 0)")
    if weight_kg is None:
        raise ConfigError("weight_kg is missing; SUV needs the patient body weight in kg, allowed range (0, 1000]")
    check_choice("normalisation", normalisation, SUV_NORMALISATIONS)
    check_choice("decay_reference", decay_reference, DECAY_REFERENCES)
    if decay_reference == "scan_start":
        activity = decay_corrected_activity_bq(injected_bq, elapsed_s, nuclide)
    elif decay_reference == "acquisition_mean":
        dur = check_range("duration_s", duration_s, 0.0, 10 * 24 * 3600.0)
        activity = decay_corrected_activity_bq(injected_bq, elapsed_s, nuclide)
        if dur > 0:  # mean of A(t) over the scan = A(start) x mean of exp(-lambda t) over [0, dur]
            activity *= nuclide.decays_in_interval(1.0, 0.0, dur) / dur
    else:
        activity = check_range("injected_bq", injected_bq, 0.0, None, lo_open=True)
    # phantoms (a 0.5 L cylinder "weighs" 0.5 kg) are allowed, hence the open lower bound
    w = check_range("weight_kg", weight_kg, 0.0, 1000.0, lo_open=True)
    if normalisation == "bw":
        norm = w * 1000.0 / TISSUE_DENSITY_G_PER_ML  # g -> mL at 1 g/mL
    elif normalisation == "lbm":
        if height_cm is None:
            raise ConfigError("height_cm is missing; SUL (lean body mass) needs the height in cm, allowed range [30, 260]")
        if sex is None:
            raise ConfigError("sex is missing; SUL (Janmahasatian lean body mass) needs 'F' or 'M'")
        norm = lean_body_mass_kg(w, height_cm, sex) * 1000.0 / TISSUE_DENSITY_G_PER_ML
    else:
        if height_cm is None:
            raise ConfigError("height_cm is missing; SUVbsa needs the height in cm, allowed range [30, 260]")
        norm = body_surface_area_m2(w, height_cm) * 1.0e4  # m^2 -> cm^2
    return norm / activity


def suv_from_concentration(concentration_bq_per_ml, injected_bq: float, weight_kg: float, **kwargs):
    """SUV of an array (or scalar) of concentrations in Bq/mL.

    Keyword arguments are those of :func:`suv_scale_factor`.

    Returns
    -------
    numpy.ndarray or float
        SUV values (dimensionless for 'bw'/'lbm', cm^2/mL for 'bsa').
    """
    factor = suv_scale_factor(injected_bq, weight_kg, **kwargs)
    c = np.asarray(concentration_bq_per_ml, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise DataError("concentration_bq_per_ml contains NaN or infinite values")
    out = c * factor
    return float(out) if out.ndim == 0 else out


def suv_image(image: Image, *, normalisation: str = "bw", nuclide: Radionuclide = TC99M) -> Image:
    """Convert a calibrated :class:`Image` (units 'Bq/mL') into an SUV image.

    The patient and timing data come from the typed fields:

    * ``image.acquisition`` (:class:`~her2sim.core.acquisition.Acquisition`): ``injected_mbq`` (MBq at
      injection time) and ``weight_kg`` - required; ``scan_start_s`` (injection to scan start, s) -
      required unless the image is decay-corrected to injection; ``height_cm`` / ``sex`` for SUL and SUVbsa;
    * ``image.corrections.decay_reference`` ('injection', 'scan_start' or 'acquisition_mean');
    * ``image.meta['scan_duration_s']`` - scan duration (s) the calibration recorded, for
      'acquisition_mean' (absent: 0).

    Back-compat (kept while images built by hand or by older code carry only ``meta``): an image without
    ``acquisition`` is read through :meth:`Acquisition.from_meta` of its meta, and one without
    ``corrections`` through ``meta['decay_corrected_to']`` (absent: 'scan_start', the rule before the
    typed fields). A typed field, when present, is used as a whole; the meta copy is then not read.

    Returns
    -------
    Image
        Same grid, ``units='SUV'``, the same acquisition and corrections, meta extended with
        ``suv_normalisation`` and ``suv_scale_factor`` (mL/Bq times g or cm^2).
    """
    if not isinstance(image, Image):
        raise DataError(f"image must be a her2sim Image, got {type(image).__name__}")
    if image.units != "Bq/mL":
        raise DataError(f"Image.units = {image.units!r}; SUV needs a calibrated image in 'Bq/mL'")
    meta = image.meta or {}
    acq = image.acquisition if image.acquisition is not None else (Acquisition.from_meta(meta) or Acquisition())
    for key, what in (("injected_mbq", "injected activity in MBq"), ("weight_kg", "body weight in kg")):
        if getattr(acq, key) is None:
            raise DataError(f"Image.acquisition.{key} is missing; SUV needs it ({what})")
    if image.corrections is not None:
        ref, ref_name = image.corrections.decay_reference, "Image.corrections.decay_reference"
    else:
        ref, ref_name = meta.get("decay_corrected_to", "scan_start"), "Image.meta['decay_corrected_to']"
        check_choice(ref_name, ref, DECAY_REFERENCES)
    if ref != "injection" and acq.scan_start_s is None:
        raise DataError("Image.acquisition.scan_start_s is missing; it is the time from injection to scan start "
                        f"in s, needed to decay-correct the injected activity to {ref_name} = {ref!r}")
    factor = suv_scale_factor(acq.injected_mbq * 1e6, acq.weight_kg, elapsed_s=float(acq.scan_start_s or 0.0),
                              normalisation=normalisation, height_cm=acq.height_cm, sex=acq.sex,
                              decay_reference=ref, duration_s=float(meta.get("scan_duration_s") or 0.0),
                              nuclide=nuclide)
    new_meta = dict(meta)
    new_meta.update({"suv_normalisation": normalisation, "suv_scale_factor": factor})
    arr = np.asarray(image.array, dtype=np.float32) * np.float32(factor)
    return Image(array=arr, grid=image.grid, units="SUV", meta=new_meta, acquisition=image.acquisition,
                 corrections=image.corrections)


def counts_per_suv(image: Image, suv_meta: dict) -> float:
    """Counts per voxel per view time of one SUV in a calibrated reconstruction (the inverse of its calibration).

    Parameters
    ----------
    image : Image
        A reconstruction in Bq/mL whose ``meta`` holds ``calibration_cps_per_bq`` (cps/Bq), ``time_per_view_s``
        (s) and, when decay-corrected, ``decay_factor_applied``.
    suv_meta : dict
        The ``meta`` of its :func:`suv_image`, holding ``suv_scale_factor`` (SUV per Bq/mL).

    Returns
    -------
    float
        ``cps/Bq x s/view x mL/voxel x decay factor / (SUV per Bq/mL)``: counts per voxel per view for SUV 1.
    """
    m = image.meta
    return (float(m["calibration_cps_per_bq"]) * float(m["time_per_view_s"]) * image.grid.voxel_volume_ml
            * float(m.get("decay_factor_applied", 1.0)) / float(suv_meta["suv_scale_factor"]))
