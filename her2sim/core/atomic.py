"""Atomic file writes: a temporary file beside the target, renamed onto it only when complete.

Every writer of study products uses these (stage manifests, JSON, CSV, TOML, figures), so a killed run never
leaves a half-written file, and the stage runner sees each written file (:func:`record_written`). The HDF5
containers, the DICOM files and the penetration cache are written through :func:`atomic_path` too.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

# ---------------------------------------------------------------------------- written-file recorder
_RECORDER = threading.local()


@contextmanager
def recording_writes():
    """Collect the absolute paths of every file the atomic writers finish inside the block.

    Yields a list that :func:`record_written` appends to (per thread, so concurrent stage tasks
    in one process keep separate lists). The stage runner uses it to put every file a stage
    writes into the stage's manifest, not only the outputs it declares.
    """
    prev = getattr(_RECORDER, "paths", None)
    paths: list = []
    _RECORDER.paths = paths
    try:
        yield paths
    finally:
        _RECORDER.paths = prev


def record_written(path) -> None:
    """Note that ``path`` was just written (no-op outside :func:`recording_writes`)."""
    paths = getattr(_RECORDER, "paths", None)
    if paths is not None:
        paths.append(str(Path(path).absolute()))


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name is ``.<name>.<random>.tmp`` in the same folder (same pattern as
    :mod:`her2sim.core.hdf5io`), so :func:`os.replace` is atomic and stale leftovers of a
    killed run can be recognised and removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):  # mkstemp makes 0600 files: give the result the usual permissions
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
        record_written(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


#: False inside :func:`figures_off` (a study with ``output.figures = false``)
_WRITE_FIGURES = contextvars.ContextVar("her2sim_write_figures", default=True)


@contextlib.contextmanager
def figures_off():
    """Inside this block :func:`savefig_atomic` writes nothing (``output.figures = false``)."""
    token = _WRITE_FIGURES.set(False)
    try:
        yield
    finally:
        _WRITE_FIGURES.reset(token)


def savefig_atomic(fig, path, **kwargs) -> Path:
    """``fig.savefig(path, **kwargs)`` through :func:`atomic_path` (the format from the file suffix).

    A killed run leaves no half-written image, and the stage runner records the figure among the
    stage's outputs (size and sha256). Inside :func:`figures_off` nothing is written (``path`` is returned).
    """
    path = Path(path)
    if not _WRITE_FIGURES.get():
        return path
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kwargs)
    return path
