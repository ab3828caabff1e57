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
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from .errors import DataError

SCHEMA_VERSION = 1


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj) -> str:
    """JSON text of ``obj`` (numpy scalars/arrays converted), keys sorted."""
    return json.dumps(obj, default=_json_default, sort_keys=True)


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

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
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
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    """The process umask (mkstemp creates 0600 files; finished files get the usual permissions)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_container(path, kind: str) -> tuple[dict, dict, dict]:
    """Read a container written by :func:`write_container`.

    Returns
    -------
    arrays : dict of str -> numpy.ndarray
    meta : dict
    units : dict of str -> str

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
        got_kind = str(f.attrs["her2sim_kind"])
        if got_kind != kind:
            raise DataError(f"{path}: holds a her2sim {got_kind}, expected a {kind}")
        ver = int(f.attrs["schema_version"])
        if ver != SCHEMA_VERSION:
            raise DataError(f"{path}: schema_version {ver} is not supported (this her2sim reads version {SCHEMA_VERSION})")
        try:
            meta = json.loads(str(f.attrs["meta_json"]))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: attribute 'meta_json' is not valid JSON: {exc}") from None
        if "arrays" not in f:
            raise DataError(f"{path}: group 'arrays' is missing")
        arrays, units = {}, {}
        try:
            for name, ds in f["arrays"].items():
                arrays[name] = ds[()]
                units[name] = str(ds.attrs.get("units", ""))
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: dataset could not be read (truncated or corrupt?): {exc}") from None
    return arrays, meta, units


def require(arrays_or_meta: dict, name: str, path, what: str = "dataset"):
    """Fetch ``name`` or raise a :class:`DataError` naming the file and the missing item."""
    if name not in arrays_or_meta:
        raise DataError(f"{path}: required {what} {name!r} is missing")
    return arrays_or_meta[name]
