"""Seeded generator of virtual-patient cohorts.

A cohort spec fixes the marginal counts; the generator assigns them to patients at random (seeded) and
draws every continuous parameter, so the same ``(spec, seed)`` always gives the same cohort and, through
:func:`build_patient_phantom`, the same phantoms.

Preset ``seed-trial`` mirrors Zhao et al., Breast Cancer Res 26:40 (2024) exactly in its marginals
(``../shared/reference/biodistribution.md``): 30 patients (24 newly diagnosed, 6 treated), 32 primaries
(2 patients with bilateral primaries of different HER2 level), IHC 0/1+/2+/3+ = 6/10/6/10 (treated group
0: 1, 2+: 2, 3+: 3), FISH for every IHC 2+, metastases lymph node 17 / bone 3 / brain 1 /
liver 2 patients, 3 with chest inflammation, 9 with heterogeneous uptake, imaging at 1 h and 2 h.

The IHC counts 6 + 10 + 6 + 10 add up to 32, the number of primary tumours, not to the 30 patients: they
are counted here **per primary tumour** (``ihc_counts`` in a spec and in :func:`cohort_summary`), the only
reading under which the trial's table is consistent. Treated patients have one primary each (their counts
6 = 1 + 2 + 3 match the 6 treated patients); the two bilateral patients are newly diagnosed.

Assumptions (configurable, not reported by the trial): 2 of the 6 IHC 2+ patients FISH-amplified;
patient weight 60 +/- 8 kg and height 158 +/- 5 cm; injected activity 458 +/- 37 MBq (406-510, the
first-in-human study); per-lesion log-normal uptake factor with CV 0.35; treated lesions scaled by 0.3
(HER2-positive) or 0.8 (HER2-negative), i.e. toward the IHC 0-1+ level; distant-metastasis patients also
have nodal disease; a patient's own ``ihc`` field is that of her first (highest-IHC) primary; heterogeneous patients carry
either a bilateral primary of lower IHC, an intratumoral pattern (log-normal field CV 0.5 + necrosis or
sub-clones), a multifocal primary whose satellite foci take 30-60 % of the main focus' uptake, or
metastases whose HER2 level differs from the primary (the seed trial's three kinds of heterogeneity).

A spec may give *probabilities* (``ihc_probs``, ``metastasis_probs``, ``p_treated``, ``p_bilateral``,
``p_inflammation``, ``p_heterogeneous``, ``p_fish_amplified_2plus``) instead of counts; they are turned into
exact counts by rounding, so marginals are still deterministic. Overriding ``n_patients`` of a preset turns
the preset's counts into such proportions (a 300-patient cohort of the seed-trial type keeps its mix).
"""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import numpy as np

from her2sim.core.containers import Phantom
from her2sim.core.errors import ConfigError, check_int, check_range
from her2sim.core.grid import Grid

from .clinical_grid import clinical_grid
from .lesions import IHC_SCORES, her2_positive
from .patient import patient_phantom

MET_TYPES = ("lymph_node", "bone", "brain", "liver")

SEED_TRIAL_SPEC = {
    "name": "seed-trial",
    "n_patients": 30,
    "n_treated": 6,
    "ihc_counts": {"0": 6, "1+": 10, "2+": 6, "3+": 10},
    "treated_ihc_counts": {"0": 1, "1+": 0, "2+": 2, "3+": 3},
    "fish_amplified_2plus": 2,
    "n_bilateral": 2,
    "metastasis_counts": {"lymph_node": 17, "bone": 3, "brain": 1, "liver": 2},
    "n_inflammation": 3,
    "n_heterogeneous": 9,
    "time_points_h": [1.0, 2.0],
    "injected_mbq": {"mean": 458.0, "sd": 37.0, "min": 406.0, "max": 510.0},
    "weight_kg": {"mean": 60.0, "sd": 8.0, "min": 42.0, "max": 95.0},
    "height_cm": {"mean": 158.0, "sd": 5.0, "min": 145.0, "max": 175.0},
    "breast_volume_ml": {"mean": 350.0, "sd": 80.0, "min": 200.0, "max": 600.0},
    "breast_density_probs": {"A": 0.1, "B": 0.4, "C": 0.4, "D": 0.1},
    "primary_diameter_mm": {"median": 22.0, "cv": 0.35, "min": 8.0, "max": 40.0},
    "patient_factor_cv": 0.35,
    "treatment_factor": {"her2_positive": 0.3, "her2_negative": 0.8},
    "grid": {"shape": [128, 128, 128], "spacing_mm": 4.42},
}

DEMO_SPEC = {
    "name": "demo",
    "n_patients": 1,
    "n_treated": 0,
    "ihc_counts": {"0": 0, "1+": 0, "2+": 0, "3+": 1},
    "fish_amplified_2plus": 0,
    "n_bilateral": 0,
    "metastasis_counts": {"lymph_node": 1, "bone": 0, "brain": 0, "liver": 0},
    "n_inflammation": 0,
    "n_heterogeneous": 0,
    "time_points_h": [1.0, 2.0],
    "grid": {"shape": [64, 64, 64], "spacing_mm": 8.84},
}

PRESETS = {"seed-trial": SEED_TRIAL_SPEC, "demo": DEMO_SPEC}
_DEFAULTS = {k: v for k, v in SEED_TRIAL_SPEC.items() if k not in ("name",)}


# ----------------------------------------------------------------------------------------------- spec handling
def load_cohort_spec(spec="seed-trial") -> dict:
    """Resolve a cohort spec: a preset name, a path to a TOML file, or a dict.

    A dict / TOML table may name ``preset = "..."`` and override any of its keys; a TOML file may hold the
    spec at top level or under ``[cohort]``. Missing keys take the seed-trial values.
    """
    if isinstance(spec, (str, Path)) and str(spec) in PRESETS:
        return copy.deepcopy(PRESETS[str(spec)])
    if isinstance(spec, (str, Path)):
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"cohort spec = {str(spec)!r} is neither a preset ({sorted(PRESETS)}) nor a TOML file")
        with open(p, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"cohort spec file {p}: {exc}") from None
        spec = data.get("cohort", data)
    if not isinstance(spec, dict):
        raise ConfigError(f"cohort spec must be a preset name, a TOML path or a dict, got {type(spec).__name__}")
    base = copy.deepcopy(_DEFAULTS)
    preset = spec.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"cohort.preset = {preset!r} is not known; choose one of {sorted(PRESETS)}")
        base.update(copy.deepcopy(PRESETS[preset]))
    else:
        base["name"] = "custom"
    n_base = base.get("n_patients")
    over = {k: copy.deepcopy(v) for k, v in spec.items() if k != "preset"}
    if "n_patients" in over and n_base and over["n_patients"] != n_base:
        base = _rescaled(base, over)
    base.update(over)
    return base


def _rescaled(base: dict, over: dict) -> dict:
    """Turn the base spec's counts into proportions when ``n_patients`` is overridden.

    Counts the override does not give itself become probabilities (count / base total), so a 300-patient
    cohort of the seed-trial type keeps the trial's proportions.
    """
    out = dict(base)
    n0 = float(base["n_patients"])
    n_prim0 = n0 + float(base.get("n_bilateral") or 0)
    if "ihc_counts" not in over and base.get("ihc_counts"):
        out["ihc_probs"] = {k: v / n_prim0 for k, v in base["ihc_counts"].items()}
        out["ihc_counts"] = None
    if "treated_ihc_counts" not in over:
        out["treated_ihc_counts"] = None
    if "metastasis_counts" not in over and base.get("metastasis_counts"):
        out["metastasis_probs"] = {k: v / n0 for k, v in base["metastasis_counts"].items()}
        out["metastasis_counts"] = None
    for key in ("n_treated", "n_bilateral", "n_inflammation", "n_heterogeneous"):
        if key not in over and base.get(key) is not None:
            out["p_" + key[2:]] = base[key] / n0
            out[key] = None
    if "fish_amplified_2plus" not in over and base.get("fish_amplified_2plus") is not None and base.get("ihc_counts"):
        twos = base["ihc_counts"].get("2+", 0)
        out["p_fish_amplified_2plus"] = base["fish_amplified_2plus"] / twos if twos else 0.0
        out["fish_amplified_2plus"] = None
    return out


def _round_counts(probs: dict, n: int, field: str) -> dict:
    """Largest-remainder rounding of ``n * p`` so that the counts sum to ``n``."""
    keys = list(probs)
    p = np.asarray([check_range(f"{field}.{k}", probs[k], 0.0, 1.0) for k in keys], float)
    if p.sum() <= 0:
        raise ConfigError(f"{field} probabilities sum to 0; give at least one positive value")
    p = p / p.sum()
    raw = n * p
    base = np.floor(raw).astype(int)
    order = np.argsort(-(raw - base), kind="stable")
    for i in order[: n - int(base.sum())]:
        base[i] += 1
    return {k: int(v) for k, v in zip(keys, base)}


def _counts(spec: dict, key: str, prob_key: str, n: int, keys) -> dict:
    if spec.get(key) is not None:
        c = {str(k): check_int(f"{key}.{k}", v, 0, n) for k, v in spec[key].items()}
        for k in c:
            if k not in keys:
                raise ConfigError(f"{key}.{k} is not a known category; choose among {list(keys)}")
        return {k: c.get(k, 0) for k in keys}
    if spec.get(prob_key) is not None:
        return _round_counts({k: spec[prob_key].get(k, 0.0) for k in keys}, n, prob_key)
    raise ConfigError(f"cohort spec needs {key} (counts) or {prob_key} (probabilities)")


def _scalar_count(spec, key, prob_key, n):
    if spec.get(key) is not None:
        return check_int(key, spec[key], 0, n)
    if spec.get(prob_key) is not None:
        return int(round(check_range(prob_key, spec[prob_key], 0.0, 1.0) * n))
    return 0


def _truncnorm(rng, d: dict, field: str) -> float:
    mean = check_range(f"{field}.mean", d["mean"], -1e6, 1e6)
    sd = check_range(f"{field}.sd", d.get("sd", 0.0), 0.0, 1e6)
    lo, hi = d.get("min", -np.inf), d.get("max", np.inf)
    for _ in range(1000):
        v = rng.normal(mean, sd)
        if lo <= v <= hi:
            return float(v)
    return float(np.clip(mean, lo, hi))


def _lognormal_factor(rng, cv: float) -> float:
    s = np.sqrt(np.log1p(cv * cv))
    return float(np.exp(rng.normal(-0.5 * s * s, s)))


# ----------------------------------------------------------------------------------------------- generation
def generate_cohort(spec="seed-trial", seed: int = 0) -> dict:
    """Draw a cohort of patient specs.

    Parameters
    ----------
    spec : str, Path or dict
        Preset name (``seed-trial``, ``demo``), TOML path or dict (:func:`load_cohort_spec`).
    seed : int
        Master seed; patient ``k`` gets its own phantom seed drawn from it.

    Returns
    -------
    dict
        ``{"name", "seed", "spec", "patients": [patient spec, ...]}``; each patient spec is accepted by
        :func:`build_patient_phantom` and carries ``id``, ``group``, ``ihc``, ``fish``, ``her2_positive``,
        ``heterogeneous``, ``heterogeneity_kind``, ``lesions``, ``seed`` and the grid.
    """
    sp = load_cohort_spec(spec)
    seed = check_int("seed", seed, 0, 2 ** 63 - 1)
    rng = np.random.default_rng(seed)
    n = check_int("n_patients", sp.get("n_patients", 30), 1, 100000)
    n_tr = _scalar_count(sp, "n_treated", "p_treated", n)
    n_bil = _scalar_count(sp, "n_bilateral", "p_bilateral", n)
    if n_bil > n - n_tr:
        raise ConfigError(f"n_bilateral = {n_bil} exceeds the {n - n_tr} newly diagnosed patients (bilateral "
                          "primaries are drawn among them)")
    n_prim = n + n_bil
    ihc = _counts(sp, "ihc_counts", "ihc_probs", n_prim, IHC_SCORES)
    if sum(ihc.values()) != n_prim:
        raise ConfigError(f"ihc_counts = {ihc} sum to {sum(ihc.values())}; they count primary tumours and must sum "
                          f"to n_patients + n_bilateral = {n_prim}")
    if sp.get("treated_ihc_counts") is not None:
        tr_ihc = _counts(sp, "treated_ihc_counts", "", n_tr, IHC_SCORES)
        if sum(tr_ihc.values()) != n_tr:
            raise ConfigError(f"treated_ihc_counts = {tr_ihc} sum to {sum(tr_ihc.values())}, not n_treated = {n_tr}")
    else:
        pool = [k for k in IHC_SCORES for _ in range(ihc[k])]
        pick = rng.choice(len(pool), n_tr, replace=False) if n_tr else []
        tr_ihc = {k: 0 for k in IHC_SCORES}
        for i in pick:
            tr_ihc[pool[int(i)]] += 1
    for k in IHC_SCORES:
        if tr_ihc[k] > ihc[k]:
            raise ConfigError(f"treated_ihc_counts.{k} = {tr_ihc[k]} exceeds ihc_counts.{k} = {ihc[k]}")
    if sp.get("fish_amplified_2plus") is not None:
        n_fish = check_int("fish_amplified_2plus", sp["fish_amplified_2plus"], 0, ihc["2+"])
    else:
        n_fish = int(round(check_range("p_fish_amplified_2plus", sp.get("p_fish_amplified_2plus", 0.0), 0.0, 1.0)
                           * ihc["2+"]))
    if sp.get("metastasis_counts") is not None:
        mets = _counts(sp, "metastasis_counts", "metastasis_probs", n, MET_TYPES)
    else:
        mets = {k: int(round(check_range(f"metastasis_probs.{k}", sp.get("metastasis_probs", {}).get(k, 0.0),
                                         0.0, 1.0) * n)) for k in MET_TYPES}
    n_inf = _scalar_count(sp, "n_inflammation", "p_inflammation", n)
    n_het = _scalar_count(sp, "n_heterogeneous", "p_heterogeneous", n)
    tps = [check_range(f"time_points_h[{i}]", t, 0.0, 100.0) for i, t in enumerate(sp.get("time_points_h", [1, 2]))]
    grid_spec = sp.get("grid", {"shape": [128, 128, 128], "spacing_mm": 4.42})

    # --- groups and per-primary IHC (treated patients: one primary; bilateral patients are newly diagnosed)
    order = rng.permutation(n)
    treated = set(int(i) for i in order[:n_tr])
    nd = [i for i in range(n) if i not in treated]
    nd_ihc = {k: ihc[k] - tr_ihc[k] for k in IHC_SCORES}
    tr_list = [k for k in IHC_SCORES for _ in range(tr_ihc[k])]
    nd_list = [k for k in IHC_SCORES for _ in range(nd_ihc[k])]
    rng.shuffle(tr_list)
    rng.shuffle(nd_list)
    bilateral = set(int(i) for i in rng.choice(nd, n_bil, replace=False)) if n_bil else set()
    primary_ihc: dict[int, list] = {}
    for i, k in zip(sorted(treated), tr_list):
        primary_ihc[i] = [k]
    for i in sorted(bilateral):          # two primaries of different HER2 level, higher one first
        a = nd_list.pop(0)
        j = next((j for j, v in enumerate(nd_list) if v != a), None)
        if j is None:
            raise ConfigError(f"n_bilateral = {n_bil}: not enough IHC variety left in ihc_counts to give bilateral "
                              "primaries different HER2 levels")
        b = nd_list.pop(j)
        primary_ihc[i] = sorted([a, b], key=IHC_SCORES.index, reverse=True)
    for i, k in zip([j for j in nd if j not in bilateral], nd_list):
        primary_ihc[i] = [k]
    twos = [(i, j) for i in range(n) for j, v in enumerate(primary_ihc[i]) if v == "2+"]
    amp = set(tuple(twos[int(t)]) for t in rng.choice(len(twos), n_fish, replace=False)) if n_fish else set()
    primary_fish = {i: [("amplified" if (i, j) in amp else "not_amplified") if v == "2+" else None
                        for j, v in enumerate(primary_ihc[i])] for i in range(n)}
    patient_ihc = [primary_ihc[i][0] for i in range(n)]
    fish = [primary_fish[i][0] for i in range(n)]

    # --- metastases: distant sites first, nodal disease includes them
    met_sets = {}
    for k in ("brain", "liver", "bone"):
        met_sets[k] = set(int(i) for i in rng.choice(n, mets[k], replace=False)) if mets[k] else set()
    distant = met_sets["brain"] | met_sets["liver"] | met_sets["bone"]
    n_ln = mets["lymph_node"]
    base_ln = sorted(distant)[:n_ln]
    rest = [i for i in rng.permutation(n) if int(i) not in distant]
    met_sets["lymph_node"] = set(base_ln) | set(int(i) for i in rest[: max(n_ln - len(base_ln), 0)])
    inflam = set(int(i) for i in rng.choice(n, n_inf, replace=False)) if n_inf else set()

    # --- heterogeneity: bilateral patients first, then others
    het = set(bilateral)
    if n_het < len(het):
        raise ConfigError(f"n_heterogeneous = {n_het} is smaller than n_bilateral = {n_bil}; bilateral primaries of "
                          "different HER2 level count as heterogeneous")
    others = [int(i) for i in rng.permutation(n) if int(i) not in het]
    het |= set(others[: n_het - len(het)])

    tf = sp.get("treatment_factor", {"her2_positive": 0.3, "her2_negative": 0.8})
    tf_pos = check_range("treatment_factor.her2_positive", tf.get("her2_positive", 0.3), 0.0, 1.5, lo_open=True)
    tf_neg = check_range("treatment_factor.her2_negative", tf.get("her2_negative", 0.8), 0.0, 1.5, lo_open=True)
    pf_cv = check_range("patient_factor_cv", sp.get("patient_factor_cv", 0.35), 0.0, 3.0)
    diam = sp.get("primary_diameter_mm", {"median": 22.0, "cv": 0.35, "min": 8.0, "max": 40.0})
    dens_probs = sp.get("breast_density_probs", {"A": 0.1, "B": 0.4, "C": 0.4, "D": 0.1})
    dkeys = sorted(dens_probs)
    dp = np.asarray([check_range(f"breast_density_probs.{k}", dens_probs[k], 0.0, 1.0) for k in dkeys])

    patients = []
    for i in range(n):
        prng = np.random.default_rng([seed, i])
        grp = "treated" if i in treated else "newly_diagnosed"
        pihc = patient_ihc[i]
        pos = her2_positive(pihc, fish[i])
        tfac = (tf_pos if pos else tf_neg) if grp == "treated" else 1.0
        het_kind = None
        if i in bilateral:
            het_kind = "bilateral"
        elif i in het:
            has_mets = any(i in met_sets[k] for k in MET_TYPES)
            u = prng.uniform()
            if has_mets and u < 0.4:
                het_kind = "primary_vs_metastasis"
            elif u < 0.7:
                het_kind = "intratumoral"
            else:
                het_kind = "multifocal"

        def primary(side, score, fish_res, kind):
            d = float(np.clip(diam["median"] * np.exp(prng.normal(0.0, np.sqrt(np.log1p(diam["cv"] ** 2)))),
                              diam["min"], diam["max"]))
            lesion = {"type": "primary", "side": side, "clock": float(prng.choice([1, 2, 3, 9, 10, 11, 12])),
                      "distance_mm": float(prng.uniform(5.0, 18.0)), "depth_mm": float(d / 2 + prng.uniform(4, 10)),
                      "diameter_mm": d, "shape": str(prng.choice(["sphere", "ellipsoid", "lobulated", "spiculated"])),
                      "ihc": score, "fish": fish_res, "patient_factor": _lognormal_factor(prng, pf_cv),
                      "treatment_factor": tfac if (grp == "treated") else 1.0,
                      # the drawn depth is a wish: placement moves the lesion the least distance that keeps it
                      # out of the chest wall and under the skin (phantoms.lesions._breast_fit)
                      "fit": "shift"}
            if grp == "treated":
                lesion["treatment_factor"] = tf_pos if her2_positive(score, fish_res) else tf_neg
            if kind == "intratumoral":
                h = {"cv": 0.5, "correlation_length_mm": float(prng.uniform(3.0, 6.0))}
                if prng.uniform() < 0.5:
                    h["necrosis"] = {"radius_fraction": float(prng.uniform(0.25, 0.45)),
                                     "residual_uptake": float(prng.uniform(0.0, 0.2))}
                else:
                    h["subclones"] = {"n_clusters": int(prng.integers(1, 4)), "cluster_radius_mm": 4.0,
                                      "uptake_ratio": 2.5}
                lesion["heterogeneity"] = h
            if kind == "multifocal":
                lesion["satellites"] = {"n": int(prng.integers(1, 3)), "diameter_mm": float(prng.uniform(6.0, 10.0)),
                                        "gap_mm": 4.0, "uptake_ratio": float(prng.uniform(0.3, 0.6))}
                lesion["diameter_mm"] = min(lesion["diameter_mm"], 24.0)
                lesion["depth_mm"] = float(lesion["diameter_mm"] / 2 + 14.0)
            return lesion

        side = str(prng.choice(["left", "right"]))
        lesions = [primary(side, pihc, fish[i], het_kind)]
        if i in bilateral:
            lesions.append(primary("right" if side == "left" else "left", primary_ihc[i][1], primary_fish[i][1], None))
        met_ihc, met_fish = pihc, fish[i]
        if het_kind == "primary_vs_metastasis":
            choices = [k for k in IHC_SCORES if k != pihc]
            met_ihc = str(prng.choice(choices))
            met_fish = "amplified" if met_ihc == "2+" else None
        mfac = (tf_pos if her2_positive(met_ihc, met_fish) else tf_neg) if grp == "treated" else 1.0

        def met(kind, **kw):
            d = kw.pop("diameter_mm")
            out = {"type": kind, "diameter_mm": d, "shape": "sphere", "ihc": met_ihc, "fish": met_fish,
                   "patient_factor": _lognormal_factor(prng, pf_cv), "treatment_factor": mfac}
            out.update(kw)
            return out

        if i in met_sets["lymph_node"]:
            for k in range(int(prng.integers(1, 3))):
                lesions.append(met("lymph_node", site="axillary", side=side, index=k,
                                   diameter_mm=float(prng.uniform(8.0, 18.0))))
            if prng.uniform() < 0.3:
                lesions.append(met("lymph_node", site="mediastinal", index=0, diameter_mm=float(prng.uniform(8, 15))))
        if i in met_sets["bone"]:
            for k in range(int(prng.integers(1, 3))):
                lesions.append(met("bone", index=k, diameter_mm=float(prng.uniform(12.0, 22.0))))
        if i in met_sets["liver"]:
            for k in range(int(prng.integers(1, 3))):
                lesions.append(met("liver", index=k, diameter_mm=float(prng.uniform(12.0, 28.0))))
        if i in met_sets["brain"]:
            lesions.append(met("brain", index=0, diameter_mm=float(prng.uniform(10.0, 20.0))))
        if i in inflam:
            lesions.append({"type": "inflammation", "site": "lung", "side": "right", "index": 0,
                            "diameter_mm": float(prng.uniform(25.0, 40.0))})
            lesions.append({"type": "inflammation", "site": "lung", "side": "left", "index": 1,
                            "diameter_mm": float(prng.uniform(20.0, 30.0))})
            lesions.append({"type": "inflammation", "site": "mediastinal", "index": 2,
                            "diameter_mm": float(prng.uniform(10.0, 16.0))})
        inj = sp.get("injected_mbq", 458.0)
        patients.append({
            "id": f"P{i + 1:03d}", "group": grp, "ihc": pihc, "fish": fish[i], "her2_positive": bool(pos),
            "heterogeneous": i in het, "heterogeneity_kind": het_kind,
            "metastases": [k for k in MET_TYPES if i in met_sets[k]], "inflammation": i in inflam,
            "weight_kg": round(_truncnorm(prng, sp.get("weight_kg", {"mean": 60.0, "sd": 8.0}), "weight_kg"), 1),
            "height_cm": round(_truncnorm(prng, sp.get("height_cm", {"mean": 158.0, "sd": 5.0}), "height_cm"), 1),
            "injected_mbq": round(_truncnorm(prng, inj, "injected_mbq") if isinstance(inj, dict) else float(inj), 1),
            "breast_volume_ml": round(_truncnorm(prng, sp.get("breast_volume_ml", {"mean": 350.0, "sd": 80.0}),
                                                 "breast_volume_ml"), 0),
            "breast_density": str(prng.choice(dkeys, p=dp / dp.sum())),
            "breast_shape": "supine", "time_points_h": list(tps), "lesions": lesions,
            "seed": int(np.random.default_rng([seed, i, 1]).integers(2 ** 31)),
            "grid": {"shape": list(grid_spec["shape"]), "spacing_mm": grid_spec["spacing_mm"]},
        })
    return {"name": sp.get("name", "custom"), "seed": seed, "spec": sp, "patients": patients}


def cohort_summary(cohort: dict) -> dict:
    """Marginal counts of a cohort (keys fixed; compare with the seed trial's table).

    Returns
    -------
    dict
        ``patients``, ``newly_diagnosed``, ``treated``, ``primaries``, ``ihc_counts`` ({"0","1+","2+","3+"}),
        ``metastases`` ({"lymph_node","bone","brain","liver"}: patients with >= 1 such lesion),
        ``inflammation`` (patients), ``heterogeneous`` (patients).
    """
    pts = cohort["patients"]
    ihc = {k: 0 for k in IHC_SCORES}
    mets = {k: 0 for k in MET_TYPES}
    for p in pts:
        for ls in p["lesions"]:
            if ls["type"] == "primary":
                ihc[ls["ihc"]] += 1
        types = {ls["type"] for ls in p["lesions"]}
        for k in MET_TYPES:
            mets[k] += int(k in types)
    return {"patients": len(pts),
            "newly_diagnosed": sum(p["group"] == "newly_diagnosed" for p in pts),
            "treated": sum(p["group"] == "treated" for p in pts),
            "primaries": sum(ls["type"] == "primary" for p in pts for ls in p["lesions"]),
            "ihc_counts": ihc, "metastases": mets,
            "inflammation": sum(any(ls["type"] == "inflammation" for ls in p["lesions"]) for p in pts),
            "heterogeneous": sum(bool(p["heterogeneous"]) for p in pts)}


def patient_grid(patient_spec: dict) -> Grid:
    """The grid named in a patient spec (``grid.shape``, ``grid.spacing_mm``), centred on the origin."""
    g = patient_spec.get("grid")
    if not g:
        return clinical_grid()
    return Grid.centered(tuple(g["shape"]), g["spacing_mm"])


def build_patient_phantom(patient_spec: dict, grid: Grid | None = None, seed: int | None = None) -> Phantom:
    """Phantom of one cohort patient (``grid``/``seed`` default to the spec's own)."""
    g = grid if grid is not None else patient_grid(patient_spec)
    sd = patient_spec.get("seed", 0) if seed is None else seed
    keep = {k: v for k, v in patient_spec.items() if k not in ("grid", "seed")}
    ph = patient_phantom(g, keep, int(sd))
    ph.meta["patient_id"] = patient_spec.get("id")
    ph.meta["group"] = patient_spec.get("group")
    return ph
