"""One exception family for her2sim.

Every error names the field, the offending value and the allowed range, so a
user can fix a config or a file without reading a traceback.
"""
from __future__ import annotations

import math
from typing import Any


class Her2simError(Exception):
    """Base class of every error her2sim raises on purpose."""


class ConfigError(Her2simError, ValueError):
    """A configuration value (study file, camera, phantom, CLI option) is invalid."""


class DataError(Her2simError, ValueError):
    """A file or array is missing, corrupt, of the wrong schema or inconsistent."""


class PhysicsError(Her2simError, ValueError):
    """A request outside the tabulated physics (energy range, unknown material)."""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def check_range(field: str, value: Any, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False, hi_open: bool = False,
                error: type[Her2simError] = ConfigError) -> float:
    """Check that a scalar lies in ``[lo, hi]`` (or open ends) and is finite.

    Parameters
    ----------
    field : str
        Dotted name of the field (``"camera.collimator.hole_mm"``) used in the message.
    value : float
        Value to check.
    lo, hi : float or None
        Bounds; ``None`` means unbounded on that side.
    lo_open, hi_open : bool
        Exclude the bound itself.
    error : type
        Exception class raised.

    Returns
    -------
    float
        ``value`` converted to float.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise error(f"{field} = {_fmt(value)} is not a number; allowed range {_range_text(lo, hi, lo_open, hi_open)}") from None
    bad = not math.isfinite(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        bad = True
    if hi is not None and (v > hi or (hi_open and v == hi)):
        bad = True
    if bad:
        raise error(f"{field} = {_fmt(value)} is outside the allowed range {_range_text(lo, hi, lo_open, hi_open)}")
    return v


def check_int(field: str, value: Any, lo: int | None = None, hi: int | None = None,
              *, error: type[Her2simError] = ConfigError) -> int:
    """Check that ``value`` is an integer in ``[lo, hi]``; return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            hasattr(value, "__index__")):
        raise error(f"{field} = {_fmt(value)} must be an integer in {_range_text(lo, hi, False, False)}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise error(f"{field} = {v} is outside the allowed range {_range_text(lo, hi, False, False)}")
    return v


def check_choice(field: str, value: Any, choices) -> Any:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{field} = {_fmt(value)} is not allowed; choose one of {sorted(map(str, choices))}")
    return value


def _range_text(lo, hi, lo_open, hi_open) -> str:
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    a = "-inf" if lo is None else _fmt(lo)
    b = "+inf" if hi is None else _fmt(hi)
    return f"{left}{a}, {b}{right}"


def check_zyx(field: str, value: Any, lo: float | None = None, hi: float | None = None,
              *, lo_open: bool = False, error: type[Her2simError] = ConfigError):
    """A scalar or three values (z, y, x), each checked with :func:`check_range`; returns a float array of 3.

    A scalar is repeated for the three axes (isotropic). Messages name ``field[i]``.
    """
    import numpy as np

    v = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
    if v.size == 1:
        v = np.repeat(v, 3)
    if v.size != 3:
        raise error(f"{field} = {tuple(v)} must be a scalar or 3 values (z, y, x) in mm")
    for i, x in enumerate(v):
        check_range(f"{field}[{i}]", x, lo, hi, lo_open=lo_open, error=error)
    return v
