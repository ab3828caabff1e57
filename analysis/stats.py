"""Seed-paper statistics and measured-vs-true accuracy figures.

The seed trial (Zhao et al., Breast Cancer Res 26:40, 2024) reports mean +/- SD,
Student's t-test between HER2-positive and -negative lesions, Spearman correlation
of SUVmax with the IHC score (0-3) and r^2 of group means (0.992 at 1 h, 0.996 at
2 h); ``validation_targets.md`` adds Welch, Mann-Whitney and a paired 1 h vs 2 h
test. Tests come from :mod:`scipy.stats`; this module validates inputs, names
each result and refuses degenerate input (empty groups, constant values) with a
:class:`~her2sim.core.errors.DataError` instead of returning NaN.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from her2sim.core.errors import DataError, Her2simError


def _vector(name: str, x, min_n: int = 1) -> np.ndarray:
    v = np.asarray(x, dtype=float).ravel()
    if v.size < min_n:
        raise DataError(f"{name} has {v.size} values; at least {min_n} needed")
    if not np.all(np.isfinite(v)):
        raise DataError(f"{name} contains NaN or infinite values")
    return v


def result_or_undefined(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or ``{"undefined": reason}`` when it refuses its sample (a too-small or one-class
    sample raises a :class:`~her2sim.core.errors.Her2simError`): a study summary reports, it does not crash."""
    try:
        return fn(*args, **kwargs)
    except Her2simError as exc:
        return {"undefined": str(exc)}


def mean_sd(values) -> dict:
    """n, mean and sample SD (ddof = 1; SD is ``None`` for a single value)."""
    v = _vector("values", values)
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else None}


def group_mean_sd(values, groups) -> dict:
    """Mean +/- SD of ``values`` per group label (e.g. IHC 0, 1, 2, 3): group -> {n, mean, sd}."""
    v = _vector("values", values)
    g = np.asarray(groups).ravel()
    if g.shape != v.shape:
        raise DataError(f"groups {g.shape} must have one entry per value {v.shape}")
    return {(k.item() if hasattr(k, "item") else k): mean_sd(v[g == k]) for k in np.unique(g)}


def compare_groups(positive, negative) -> dict:
    """HER2-positive vs -negative: Student t, Welch t (two-sided) and Mann-Whitney U (two-sided).

    Returns
    -------
    dict
        ``positive`` / ``negative`` (mean_sd), ``student`` / ``welch`` (t, p, df),
        ``mann_whitney`` (u, p; exact p for small samples without ties).
    """
    a = _vector("positive", positive, 2)
    b = _vector("negative", negative, 2)
    if np.ptp(np.r_[a, b]) == 0:
        raise DataError("compare_groups: all values are identical, the tests are undefined")
    st = stats.ttest_ind(a, b, equal_var=True)
    we = stats.ttest_ind(a, b, equal_var=False)
    mw = stats.mannwhitneyu(a, b, alternative="two-sided")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df_welch = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)) if va + vb > 0 else float("inf")
    return {"positive": mean_sd(a), "negative": mean_sd(b),
            "student": {"t": float(st.statistic), "p": float(st.pvalue), "df": int(a.size + b.size - 2)},
            "welch": {"t": float(we.statistic), "p": float(we.pvalue), "df": float(df_welch)},
            "mann_whitney": {"u": float(mw.statistic), "p": float(mw.pvalue)}}


def spearman_ihc(values, ihc) -> dict:
    """Spearman rank correlation of uptake with the IHC score (0-3).

    Also returns the seed paper's figure: r^2 of a straight line through the IHC
    group means (``r2_group_means``, needs >= 3 IHC groups, else ``None``).
    """
    v = _vector("values", values, 3)
    s = np.asarray(ihc).ravel()
    if s.shape != v.shape:
        raise DataError(f"ihc {s.shape} must have one entry per value {v.shape}")
    s = s.astype(float)
    if np.any((s < 0) | (s > 3)) or np.any(s != np.round(s)):
        raise DataError("ihc scores must be integers in [0, 3]")
    if np.ptp(s) == 0 or np.ptp(v) == 0:
        raise DataError("spearman_ihc: IHC scores or values are constant, the correlation is undefined")
    r = stats.spearmanr(v, s)
    groups = np.unique(s)
    r2 = None
    if groups.size >= 3:
        means = np.array([v[s == k].mean() for k in groups])
        r2 = float(stats.pearsonr(groups, means).statistic ** 2)
    return {"rho": float(r.statistic), "p": float(r.pvalue), "n": int(v.size), "r2_group_means": r2}


def bias_rmse(measured, true) -> dict:
    """Bias and RMSE of measured vs true values (absolute and relative to the truth).

    Returns
    -------
    dict
        ``bias`` = mean(m - t), ``rmse`` = sqrt(mean((m - t)^2)), ``relative_bias_pct``
        = 100 mean((m - t) / t), ``relative_rmse_pct``, ``n``.
    """
    m = _vector("measured", measured)
    t = _vector("true", true)
    if m.shape != t.shape:
        raise DataError(f"measured {m.shape} and true {t.shape} must have equal length")
    d = m - t
    out = {"n": int(m.size), "bias": float(d.mean()), "rmse": float(np.sqrt(np.mean(d ** 2)))}
    if np.any(t == 0):
        out["relative_bias_pct"] = None
        out["relative_rmse_pct"] = None
    else:
        rel = d / t
        out["relative_bias_pct"] = float(100 * rel.mean())
        out["relative_rmse_pct"] = float(100 * np.sqrt(np.mean(rel ** 2)))
    return out


def bland_altman(a, b) -> dict:
    """Bland-Altman agreement: mean difference (a - b) and 95 % limits (mean +/- 1.96 SD)."""
    x = _vector("a", a, 2)
    y = _vector("b", b, 2)
    if x.shape != y.shape:
        raise DataError(f"a {x.shape} and b {y.shape} must have equal length")
    d = x - y
    sd = float(d.std(ddof=1))
    return {"mean_difference": float(d.mean()), "sd": sd,
            "loa": (float(d.mean() - 1.96 * sd), float(d.mean() + 1.96 * sd)),
            "means": (x + y) / 2, "differences": d}


def paired_test(first, second) -> dict:
    """Paired comparison (e.g. SUVmax at 1 h vs 2 h of the same lesions): paired t and Wilcoxon.

    Returns
    -------
    dict
        ``mean_difference`` (second - first), ``t``, ``p_t``, ``wilcoxon`` (statistic, p)
        or ``None`` when all differences are zero.
    """
    x = _vector("first", first, 2)
    y = _vector("second", second, 2)
    if x.shape != y.shape:
        raise DataError(f"first {x.shape} and second {y.shape} must be paired (equal length)")
    d = y - x
    if np.all(d == 0):
        raise DataError("paired_test: all paired differences are zero, the tests are undefined")
    tt = stats.ttest_rel(y, x)
    w = stats.wilcoxon(y, x)
    return {"n": int(x.size), "mean_difference": float(d.mean()), "sd_difference": float(d.std(ddof=1)),
            "t": float(tt.statistic), "p_t": float(tt.pvalue),
            "wilcoxon": {"statistic": float(w.statistic), "p": float(w.pvalue)}}
