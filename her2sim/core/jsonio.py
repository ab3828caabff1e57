"""JSON text of her2sim values: the one encoder every writer and printer uses.

numpy arrays and scalars, paths, tuples and sets are converted; any other non-JSON value is a
``TypeError`` (never silently stringified), so a result that cannot round-trip is caught where it is written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def json_default(obj):
    """``default=`` hook of :func:`json.dumps`: numpy arrays/scalars, paths, sets (sorted) and tuples."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):  # numpy bool, integer, floating, str scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj, indent: int | None = None) -> str:
    """JSON text of ``obj`` (numpy values converted), keys sorted."""
    return json.dumps(obj, default=json_default, sort_keys=True, indent=indent)


def to_plain(obj):
    """``obj`` as plain JSON values (dicts, lists, str, int, float, bool, None)."""
    return json.loads(to_json(obj))


def canonical_json(obj) -> str:
    """Canonical JSON text: keys sorted, no whitespace, numpy values converted, NaN refused."""
    return json.dumps(obj, default=json_default, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON (the CLI's output format)."""
    print(to_json(obj, indent=2))


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (:mod:`her2sim.core.atomic`)."""
    from .atomic import write_text_atomic
    return write_text_atomic(path, to_json(obj, indent=2))


__all__ = ["json_default", "to_json", "to_plain", "canonical_json", "print_json", "write_json"]
