"""Atomic, schema-versioned HDF5 storage shared by every container.

Layout of a her2sim file::

    /                     attrs: her2sim_kind, schema_version, package_version, created_utc, meta_json
    /arrays/<name>        datasets (gzip-compressed), each with attr ``units``

Writes go to a temporary file in the destination folder and are renamed into
place only when complete, so a crash never leaves a half-written file under
the final name.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path, record_written, recording_writes  # noqa: F401 - the recorder lives with the writers
from .errors import DataError
from .jsonio import to_json  # noqa: F401 - re-exported (older imports of her2sim.core.hdf5io.to_json)

#: Version written. 2: ``acquisition`` and ``corrections`` (:mod:`her2sim.core.acquisition`) in ``meta_json``.
SCHEMA_VERSION = 2
#: Versions read: version-1 files are migrated by the containers (:mod:`her2sim.core.containers`).
READABLE_SCHEMA_VERSIONS = (1, 2)



def write_container(path, kind: str, arrays: dict, meta: dict, units: dict | None = None,
                    compression: str | None = "gzip") -> Path:
    """Write ``arrays`` and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Destination ``.h5`` file.
    kind : str
        Container kind (``"Phantom"``, ``"Projections"``, ``"Image"``).
    arrays : dict of str -> numpy.ndarray
        Datasets; ``None`` values are skipped.
    meta : dict
        JSON-serialisable metadata (geometry, provenance, seed, config).
    units : dict of str -> str
        Unit string per dataset name.
    """
    from .. import __version__

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["her2sim_kind"] = kind
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["package_version"] = __version__
            f.attrs["created_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            f.attrs["meta_json"] = to_json(meta)
            g = f.create_group("arrays")
            for name, arr in arrays.items():
                if arr is None:
                    continue
                a = np.asarray(arr)
                kw = {}
                if compression and a.size > 1024:
                    kw = {"compression": compression, "compression_opts": 4, "shuffle": True}
                ds = g.create_dataset(name, data=a, **kw)
                ds.attrs["units"] = (units or {}).get(name, "")
    return Path(path)


def _shown(v) -> str:
    """Short text of an HDF5 attribute value (numpy scalars as plain Python values)."""
    if isinstance(v, np.generic):
        v = v.item()
    elif isinstance(v, np.ndarray):
        v = v.tolist()
    return repr(v)[:60]


def read_container(path, kind: str) -> tuple[dict, dict, dict]:
    """Read a container written by :func:`write_container`: ``(arrays, meta, units)``, see
    :func:`read_container_versioned` (which also returns the file's schema version)."""
    return read_container_versioned(path, kind)[:3]


def read_container_versioned(path, kind: str) -> tuple[dict, dict, dict, int]:
    """Read a container written by :func:`write_container` (any of :data:`READABLE_SCHEMA_VERSIONS`).

    Returns
    -------
    arrays : dict of str -> numpy.ndarray
    meta : dict
    units : dict of str -> str
    schema_version : int

    Raises
    ------
    DataError
        Naming the file and what is wrong: missing file, not HDF5/truncated,
        wrong kind, wrong schema version, missing attribute.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {exc}") from None
    with f:
        for attr in ("her2sim_kind", "schema_version", "meta_json"):
            if attr not in f.attrs:
                raise DataError(f"{path}: required attribute {attr!r} is missing; not a her2sim {kind} file")
        got_kind = f.attrs["her2sim_kind"]
        if isinstance(got_kind, bytes):
            got_kind = got_kind.decode("utf-8", "replace")
        if not isinstance(got_kind, str):
            raise DataError(f"{path}: attribute 'her2sim_kind' = {_shown(got_kind)} must be a string (expected {kind!r})")
        if got_kind != kind:
            raise DataError(f"{path}: holds a her2sim {got_kind}, expected a {kind}")
        ver = f.attrs["schema_version"]
        if isinstance(ver, (bool, np.bool_)) or not isinstance(ver, (int, np.integer)):
            raise DataError(f"{path}: attribute 'schema_version' = {_shown(ver)} must be an integer "
                            f"(this her2sim reads versions {list(READABLE_SCHEMA_VERSIONS)})")
        ver = int(ver)
        if ver not in READABLE_SCHEMA_VERSIONS:
            raise DataError(f"{path}: schema_version {ver} is not supported (this her2sim reads versions "
                            f"{list(READABLE_SCHEMA_VERSIONS)}; a newer her2sim wrote it: upgrade, or re-run the "
                            "step that made it)")
        text = f.attrs["meta_json"]
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if not isinstance(text, str):
            raise DataError(f"{path}: attribute 'meta_json' = {_shown(text)} must be a JSON text (string)")
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: attribute 'meta_json' is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise DataError(f"{path}: attribute 'meta_json' must hold a JSON object, got {type(meta).__name__} "
                            f"{json.dumps(meta)[:40]}")
        if "arrays" not in f:
            raise DataError(f"{path}: group 'arrays' is missing")
        arrays, units = {}, {}
        try:
            for name, ds in f["arrays"].items():
                arrays[name] = ds[()]
                units[name] = str(ds.attrs.get("units", ""))
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: dataset could not be read (truncated or corrupt?): {exc}") from None
    return arrays, meta, units, ver


def check_meta(path, meta: dict, schema: dict, prefix: str = "") -> None:
    """Type-check decoded ``meta_json`` against ``schema``; a :class:`DataError` names the attribute.

    Parameters
    ----------
    path : path-like
        File named in the message.
    meta : dict
        Decoded metadata.
    schema : dict
        key -> kind, where kind is one of ``"str"``, ``"bool"``, ``"num"`` (finite int or float),
        ``"num>=0"``, ``"int"``, ``"dict"``, ``"list"``, ``"str_list"``, ``"num_list"``,
        ``"num>=0_list"``, ``"int_list"``, a ``(kind, length)`` tuple for lists of fixed length,
        a nested ``dict`` schema (the value must be an object holding exactly those keys) or
        ``("dict_list", schema)`` (a list of such objects). Keys of ``schema`` are required.
    """
    import math

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def fail(name, v, want):
        shown = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else repr(v)
        raise DataError(f"{path}: attribute {name!r} = {shown[:60]} must be {want}")

    for key, kind in schema.items():
        name = f"{prefix}{key}"
        if key not in meta:
            raise DataError(f"{path}: required attribute {name!r} is missing")
        v = meta[key]
        length = None
        if isinstance(kind, tuple) and kind[0] != "dict_list":
            kind, length = kind
        if isinstance(kind, dict):
            if not isinstance(v, dict):
                fail(name, v, f"an object with keys {sorted(kind)}")
            unknown = sorted(set(v) - set(kind))
            if unknown:
                raise DataError(f"{path}: attribute {name!r} has unknown key(s) {unknown}; allowed {sorted(kind)}")
            check_meta(path, v, kind, prefix=f"{name}.")
            continue
        if isinstance(kind, tuple):  # ("dict_list", schema)
            if not isinstance(v, list):
                fail(name, v, "a list of objects")
            for i, item in enumerate(v):
                if not isinstance(item, dict):
                    fail(f"{name}[{i}]", item, f"an object with keys {sorted(kind[1])}")
                unknown = sorted(set(item) - set(kind[1]))
                if unknown:
                    raise DataError(f"{path}: attribute '{name}[{i}]' has unknown key(s) {unknown}; "
                                    f"allowed {sorted(kind[1])}")
                check_meta(path, item, kind[1], prefix=f"{name}[{i}].")
            continue
        if kind == "str" and not isinstance(v, str):
            fail(name, v, "a string")
        elif kind == "bool" and not isinstance(v, bool):
            fail(name, v, "true or false")
        elif kind == "num" and not is_num(v):
            fail(name, v, "a finite number")
        elif kind == "num>=0" and not (is_num(v) and v >= 0):
            fail(name, v, "a finite number >= 0")
        elif kind == "int" and (isinstance(v, bool) or not isinstance(v, int)):
            fail(name, v, "an integer")
        elif kind == "dict" and not isinstance(v, dict):
            fail(name, v, "an object")
        elif kind.endswith("list"):
            if not isinstance(v, list):
                fail(name, v, f"a list{'' if length is None else f' of {length}'}")
            if length is not None and len(v) != length:
                fail(name, v, f"a list of {length} values")
            item = kind[:-5] if kind != "list" else None
            for i, x in enumerate(v):
                ok = (item is None or (item == "str" and isinstance(x, str))
                      or (item == "num" and is_num(x)) or (item == "num>=0" and is_num(x) and x >= 0)
                      or (item == "int" and isinstance(x, int) and not isinstance(x, bool)))
                if not ok:
                    want = {"str": "a string", "num": "a finite number", "num>=0": "a finite number >= 0",
                            "int": "an integer"}[item]
                    fail(f"{name}[{i}]", x, want)


def require(arrays_or_meta: dict, name: str, path, what: str = "dataset"):
    """Fetch ``name`` or raise a :class:`DataError` naming the file and the missing item."""
    if name not in arrays_or_meta:
        raise DataError(f"{path}: required {what} {name!r} is missing")
    return arrays_or_meta[name]
