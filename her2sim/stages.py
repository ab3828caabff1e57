"""A small resumable stage runner for studies.

A :class:`Stage` is a named step with parameters, upstream stages (``inputs``), a
function and the files it must produce (``outputs``). Its *key* is the sha256 of
the canonical JSON of ``(name, params, items, keys of its upstream stages)``, so
changing a parameter changes the key of that stage and of every stage downstream
of it, and of nothing else.

After a stage completes, a manifest ``<study_dir>/.stages/<name>.json`` (written
atomically) records the key and each output path with its size and sha256: the
outputs the stage declares *and* every other file its function wrote through the
atomic writers (:func:`atomic_path`, :func:`write_text_atomic`, the HDF5 writers
of :mod:`her2sim.core.hdf5io`), so a truncated ``noisy_r0.h5`` is caught even when
a stage declares only ``expected.h5``. A later run skips the stage when the
manifest key equals the current key and every recorded output still exists with
the recorded size and hash; a stage redone because an output was missing or
corrupt also redoes every stage downstream of it. The manifest is deleted *before* a stage
starts, so a run killed in the middle of a stage leaves no manifest and the
stage is redone by the next run. Outputs should be written with
:func:`atomic_path` (temporary file + :func:`os.replace`; the HDF5 writers of
:mod:`her2sim.core.hdf5io` already are atomic), so a killed run never leaves a
half-written file under a final name.

Stages whose inputs are complete run concurrently, and a stage may split its
work into independent ``items`` (e.g. one per patient); every piece of work goes
through a :class:`concurrent.futures.Executor` (serial by default; a
``ProcessPoolExecutor`` for local workers; ``distributed.Client.get_executor()``
for a Dask cluster). Stage functions must therefore be importable module-level
functions and communicate only through files.

A stage with ``items`` is redone as a whole after an interruption; for work that
should resume patient by patient, declare one stage per patient (independent
stages run concurrently through the same executor).

Output hashes are of file bytes: HDF5 containers carry a creation time, so a
recomputed stage has new hashes even with identical arrays. Keys depend on
parameters, not on output bytes: a stage rerun with ``force`` leaves its
downstream stages skipped, while a stage redone because its manifest or one of
its outputs was missing or damaged redoes its downstream stages as well.

One run at a time writes a study folder: :func:`run_stages` holds
:func:`study_lock` (``<study_dir>/.her2sim.lock``, holding the PID and host of the
writer) while it runs, and removes stale temporary files (``.<name>.*.tmp``) left
by a killed run before it starts.

Code changes are not detected: put a ``"version"`` entry in ``params`` and bump it
when a stage's function changes what it writes.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import errno
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from her2sim.core.jsonio import canonical_json
from her2sim.core.atomic import atomic_path, savefig_atomic, write_bytes_atomic, write_text_atomic  # noqa: F401
from her2sim.core.errors import ConfigError, DataError
from her2sim.core.hdf5io import recording_writes

MANIFEST_DIR = ".stages"
#: lock file of the run that writes a study folder (one writer per study)
LOCK_NAME = ".her2sim.lock"
LOG = logging.getLogger("her2sim.stages")
STATUS_DONE, STATUS_STALE, STATUS_MISSING = "done", "stale", "missing"


# ---------------------------------------------------------------------------- atomic files
# (one implementation, in her2sim.core.atomic; re-exported here for the stage functions)


def remove_stale_temporaries(path) -> int:
    """Delete leftover ``.<name>.*.tmp`` files of an interrupted atomic write of ``path``; return how many."""
    path = Path(path)
    if not path.parent.is_dir():
        return 0
    n = 0
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            n += 1
    return n


_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def remove_stale_temporaries_under(folders, recursive=()) -> list:
    """Delete leftover temporary files (``.<name>.<random>.tmp``) of interrupted atomic writes.

    Parameters
    ----------
    folders : iterable of path-like
        Folders whose own files are checked (not their subfolders).
    recursive : iterable of path-like
        Folders checked with all their subfolders (folder outputs such as ``dicom``).

    Returns
    -------
    list of Path
        The files removed. Only call this while holding :func:`study_lock`: a temporary file of a
        running writer looks the same.
    """
    removed = []
    cands = [f for d in folders if Path(d).is_dir() for f in Path(d).glob(".*.tmp")]
    cands += [f for d in recursive if Path(d).is_dir() for f in Path(d).rglob(".*.tmp")]
    for tmp in sorted(set(cands)):
        if _TMP_NAME.match(tmp.name) and (tmp.is_file() or tmp.is_symlink()):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def file_sha256(path) -> str:
    """sha256 (hex) of a file, or of a folder (sorted relative paths and file hashes of its files)."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(b"\0")
            h.update(file_sha256(f).encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- one writer per study
_HELD_LOCKS: dict = {}  # resolved lock path -> [fd, depth] held by this process


def _proc_start_ticks(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_lock(study_dir) -> dict | None:
    """The holder recorded in ``<study_dir>/.her2sim.lock`` (``pid``, ``host``, ``started_utc``) or None."""
    try:
        info = json.loads((Path(study_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _holder_text(info: dict | None) -> str:
    if not info:
        return "another her2sim run (holder unknown)"
    return (f"another her2sim run (PID {info.get('pid')} on host {info.get('host')}, "
            f"started {info.get('started_utc', '?')})")


@contextlib.contextmanager
def study_lock(study_dir):
    """Hold the study folder's lock file for the duration of the block (one writer per study).

    The lock is ``<study_dir>/.her2sim.lock``: an exclusive :func:`fcntl.flock` on it (released by
    the kernel when the holder dies, so the lock of a killed run is taken over by the next run),
    and inside it the holder's PID, host and start time for the message a second run prints.
    Where ``flock`` is not supported the PID (and, on Linux, the process start time) decides
    whether the recorded holder is still alive. Re-entrant within one process.

    Raises
    ------
    DataError
        Another live run holds the lock (the message names its PID and host and the lock file).
    """
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / LOCK_NAME
    key = str(path.resolve())
    held = _HELD_LOCKS.get(key)
    if held is not None:
        held[1] += 1
        try:
            yield path
        finally:
            held[1] -= 1
        return
    fd = _acquire_lock(path)
    _HELD_LOCKS[key] = [fd, 1]
    try:
        yield path
    finally:
        del _HELD_LOCKS[key]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the flock is released: a waiting run then makes a fresh file
        os.close(fd)


def _acquire_lock(path: Path) -> int:
    """Open, lock and fill ``path``; return the open descriptor (see :func:`study_lock`)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        fcntl = None
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": _proc_start_ticks(os.getpid()),
          "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise DataError(f"{path.parent}: study folder is in use by {_holder_text(read_lock(path.parent))}; "
                                        f"wait for it to finish (lock file {path})") from None
                    _check_recorded_holder(path)  # flock unsupported here (e.g. some network file systems)
            else:
                _check_recorded_holder(path)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our lock: retry
                os.close(fd)
                continue
            previous = read_lock(path.parent)
            if previous and previous.get("pid") != me["pid"]:
                LOG.warning("taking over the stale lock %s of %s", path, _holder_text(previous))
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(me).encode("utf-8"))
            os.fsync(fd)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
    raise DataError(f"{path}: could not take the study lock (the file kept changing); try again")


def _check_recorded_holder(path: Path) -> None:
    """Without flock: refuse when the recorded holder is a live process on this host (or any other host)."""
    info = read_lock(path.parent)
    if not info or info.get("pid") == os.getpid():
        return
    if info.get("host") != socket.gethostname():
        raise DataError(f"{path.parent}: study folder is in use by {_holder_text(info)}; if that run is no longer "
                        f"running, delete {path}")
    pid = info.get("pid")
    if isinstance(pid, int) and _pid_alive(pid):
        ticks = info.get("start_ticks")
        if ticks is None or _proc_start_ticks(pid) in (None, ticks):  # same process, not a reused PID
            raise DataError(f"{path.parent}: study folder is in use by {_holder_text(info)}; "
                            f"wait for it to finish (lock file {path})")


# ---------------------------------------------------------------------------- stages
@dataclass(frozen=True)
class StageTask:
    """What a stage function receives (one per stage, or one per item).

    Attributes
    ----------
    stage : str
        Stage name.
    params : dict
        The stage's parameters.
    outputs : tuple of Path
        All output paths of the stage (absolute).
    inputs : dict of str -> tuple of Path
        Output paths of each upstream stage.
    study_dir : Path
    item : Any
        The work item (``None`` for a stage without items).
    index : int or None
        Position of ``item`` in ``Stage.items``; a per-item function usually writes
        ``outputs[index]`` when the stage declares one output per item.
    """

    stage: str
    params: dict
    outputs: tuple
    inputs: dict
    study_dir: Path
    item: Any = None
    index: int | None = None


@dataclass
class Stage:
    """One step of a study.

    Attributes
    ----------
    name : str
        Unique name (also the manifest file name).
    inputs : list of str
        Names of the upstream stages this one reads from.
    params : dict
        JSON-serialisable parameters; part of the key.
    func : callable
        ``func(task: StageTask)``; a module-level function (it may run in another process).
    outputs : list of Path
        Files or folders the stage must produce; relative paths are relative to the study folder.
    items : list or None
        Independent work items (JSON-serialisable, part of the key); ``func`` is called once per item.
    """

    name: str
    inputs: list
    params: dict
    func: Callable
    outputs: list
    items: list | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name.startswith("."):
            raise ConfigError(f"stage.name = {self.name!r} must be a non-empty file-safe name")
        self.inputs = list(self.inputs)
        self.outputs = [Path(p) for p in self.outputs]
        if not self.outputs:
            raise ConfigError(f"stage[{self.name}].outputs is empty; a stage must declare at least one output")
        if not callable(self.func):
            raise ConfigError(f"stage[{self.name}].func = {self.func!r} is not callable")
        try:
            canonical_json(self.params)
            canonical_json(self.items)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"stage[{self.name}].params/items must be JSON-serialisable: {exc}") from None

    def key(self, upstream_keys: dict) -> str:
        """sha256 of canonical JSON of name, params, items and the upstream keys."""
        payload = {"name": self.name, "params": self.params, "items": self.items,
                   "inputs": {n: upstream_keys[n] for n in self.inputs}}
        return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


@dataclass
class StageResult:
    """Outcome of one stage in :func:`run_stages`: ``"ran"`` or ``"skipped"``, key and seconds spent."""

    name: str
    status: str
    key: str
    seconds: float = 0.0
    outputs: list = field(default_factory=list)


def manifest_path(study_dir, name: str) -> Path:
    """``<study_dir>/.stages/<name>.json``."""
    return Path(study_dir) / MANIFEST_DIR / f"{name}.json"


def read_manifest(study_dir, name: str) -> dict | None:
    """The manifest of stage ``name`` or ``None`` if absent, unreadable or of the wrong types (not done).

    A valid manifest is a JSON object whose ``key`` is a string, whose ``outputs`` is a list of
    ``{"path": str, "sha256": str, "size": int (optional)}`` and whose ``inputs`` (optional) maps
    stage names to key strings.
    """
    p = manifest_path(study_dir, name)
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return m if manifest_problem(m) is None else None


def manifest_problem(m) -> str | None:
    """What is wrong with the types of a decoded manifest, or ``None`` when it is well formed."""
    if not isinstance(m, dict):
        return f"is a JSON {type(m).__name__}, not an object"
    if not isinstance(m.get("key"), str):
        return f"'key' = {m.get('key')!r} must be a string"
    outs = m.get("outputs")
    if not isinstance(outs, list):
        return f"'outputs' = {outs!r} must be a list"
    for i, rec in enumerate(outs):
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str) or not isinstance(rec.get("sha256"), str):
            return f"'outputs[{i}]' = {rec!r} must be an object with string 'path' and 'sha256'"
        size = rec.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            return f"'outputs[{i}].size' = {size!r} must be an integer >= 0"
    inputs = m.get("inputs", {})
    if not isinstance(inputs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
        return f"'inputs' = {inputs!r} must map stage names to key strings"
    for k in ("seconds",):
        v = m.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"'{k}' = {v!r} must be a number"
    if m.get("finished_utc") is not None and not isinstance(m.get("finished_utc"), str):
        return f"'finished_utc' = {m.get('finished_utc')!r} must be a string"
    return None


def _resolve(study_dir: Path, p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else study_dir / p


def _stored(study_dir: Path, p: Path) -> str:
    try:
        return p.resolve().relative_to(study_dir.resolve()).as_posix()
    except ValueError:
        return str(p.resolve())


def output_state(study_dir, rec: dict) -> str:
    """``"ok"``, ``"missing"`` or ``"corrupt"`` (size or sha256 differs from the manifest record)."""
    p = _resolve(Path(study_dir), rec["path"])
    if not p.exists():
        return "missing"
    size = rec.get("size")
    if size is not None and p.is_file() and p.stat().st_size != size:
        return "corrupt"
    try:
        return "ok" if file_sha256(p) == rec["sha256"] else "corrupt"
    except OSError:
        return "corrupt"


def _outputs_intact(study_dir: Path, manifest: dict) -> bool:
    return all(output_state(study_dir, rec) == "ok" for rec in manifest.get("outputs", []))


def _order(stages: list) -> list:
    """Topological order (stable); errors for duplicate names, unknown inputs and cycles."""
    by_name = {}
    for s in stages:
        if s.name in by_name:
            raise ConfigError(f"stage name {s.name!r} is used twice; stage names must be unique")
        by_name[s.name] = s
    owner: dict = {}
    for s in stages:
        for p in s.outputs:
            key = str(p)
            if key in owner:
                raise ConfigError(f"output {key} is declared by stages {owner[key]!r} and {s.name!r}; "
                                  f"each output must belong to one stage")
            owner[key] = s.name
    for s in stages:
        for n in s.inputs:
            if n not in by_name:
                raise ConfigError(f"stage[{s.name}].inputs names {n!r}, which is not a stage; "
                                  f"known stages {sorted(by_name)}")
    order, state = [], {}

    def visit(s, chain):
        st = state.get(s.name)
        if st == "done":
            return
        if st == "visiting":
            raise ConfigError(f"stages form a cycle: {' -> '.join(chain + [s.name])}")
        state[s.name] = "visiting"
        for n in s.inputs:
            visit(by_name[n], chain + [s.name])
        state[s.name] = "done"
        order.append(s)

    for s in stages:
        visit(s, [])
    return order


def stage_keys(stages: list) -> dict:
    """Key of every stage (dict name -> sha256 hex)."""
    keys = {}
    for s in _order(list(stages)):
        keys[s.name] = s.key(keys)
    return keys


class SerialExecutor(cf.Executor):
    """An executor that runs each call immediately in the calling process."""

    def submit(self, fn, /, *args, **kwargs):
        fut = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(exc)
        return fut


def _call(func, task):
    """Run one piece of a stage where the executor puts it.

    Returns
    -------
    (float, list of str)
        Its own busy time (s) and the absolute paths of the files it wrote through the atomic writers.
    """
    t0 = time.perf_counter()
    with recording_writes() as written:
        func(task)
    return time.perf_counter() - t0, list(written)


def _write_manifest(study_dir: Path, stage: Stage, key: str, upstream: dict, started: float,
                    written=(), claimed=frozenset()) -> list:
    """Write the manifest of a finished stage: declared outputs first, then the other files it wrote.

    ``claimed`` holds the stored paths declared by other stages; a file another stage owns is not
    recorded here (its owner verifies it).
    """
    outs, seen = [], set()
    for p in stage.outputs:
        path = _resolve(study_dir, p)
        if not path.exists():
            raise DataError(f"stage {stage.name!r} finished without writing its declared output {path}")
        rel = _stored(study_dir, path)
        seen.add(rel)
        outs.append({"path": rel, "sha256": file_sha256(path), "size": _size(path)})
    manifest_dir = (study_dir / MANIFEST_DIR).resolve()
    for w in sorted(set(written)):
        path = Path(w)
        rel = _stored(study_dir, path)
        if rel in seen or rel in claimed or Path(rel).is_absolute() or not path.is_file():
            continue  # outside the study folder, declared elsewhere, or replaced/removed since
        if manifest_dir in path.resolve().parents:
            continue
        seen.add(rel)
        outs.append({"path": rel, "sha256": file_sha256(path), "size": _size(path)})
    from her2sim import __version__
    manifest = {"name": stage.name, "key": key, "params": stage.params, "items": stage.items,
                "inputs": {n: upstream[n] for n in stage.inputs}, "outputs": outs,
                "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 3), "her2sim_version": __version__}
    write_text_atomic(manifest_path(study_dir, stage.name), json.dumps(manifest, indent=1, sort_keys=True))
    return [o["path"] for o in outs]


def _size(path: Path) -> int:
    """Bytes of a file, or the sum over the files of a folder."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def run_stages(stages: Iterable[Stage], study_dir, executor: cf.Executor | None = None,
               progress: bool = True, force: Iterable[str] = ()) -> dict:
    """Run the stages that are not up to date, in dependency order.

    Parameters
    ----------
    stages : iterable of Stage
    study_dir : path-like
        Study folder; relative outputs and the ``.stages`` manifests live here.
    executor : concurrent.futures.Executor or None
        Where the work items run (``None``: serially in this process).
    progress : bool
        Show a tqdm bar of work items.
    force : iterable of str
        Stage names to rerun even when up to date. Keys do not depend on output bytes, so
        their downstream stages are not rerun by this (outputs of deterministic stages are
        identical anyway). A stage redone because one of its recorded outputs is missing or
        corrupt, by contrast, also redoes every stage downstream of it.

    Raises
    ------
    DataError
        Another run holds the study folder's lock (:func:`study_lock`).

    Returns
    -------
    dict of str -> StageResult
        ``status`` is ``"ran"`` or ``"skipped"`` for every stage.
    """
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    with study_lock(study_dir):
        return _run_stages_locked(stages, study_dir, executor, progress, force)


def _run_stages_locked(stages, study_dir: Path, executor, progress: bool, force) -> dict:
    """:func:`run_stages` once the study lock is held."""
    from tqdm import tqdm

    ordered = _order(list(stages))
    keys = stage_keys(ordered)
    force = set(force)
    unknown = force - set(keys)
    if unknown:
        raise ConfigError(f"force = {sorted(unknown)} names no stage; known stages {sorted(keys)}")
    executor = executor or SerialExecutor()
    # stale temporaries of a killed run: in the folders of every declared or recorded output (the
    # study folder may be the user's working directory: nothing else there is touched)
    folders, folder_outputs = {study_dir}, set()
    for s in ordered:
        recorded = [rec["path"] for rec in (read_manifest(study_dir, s.name) or {}).get("outputs", [])]
        for p in list(s.outputs) + recorded:
            path = _resolve(study_dir, p)
            folders.add(path.parent)
            if path.is_dir():
                folder_outputs.add(path)
    for tmp in remove_stale_temporaries_under(folders, folder_outputs):
        LOG.info("removed stale temporary file %s", tmp)

    results, to_run = {}, []
    redone: set = set()  # stages redone for any reason but `force` alone: their downstream is redone too
    for s in ordered:
        m = read_manifest(study_dir, s.name)
        bad_outputs = [] if m is None else [(rec["path"], output_state(study_dir, rec)) for rec in m["outputs"]]
        bad_outputs = [(p, st) for p, st in bad_outputs if st != "ok"]
        upstream_redone = [n for n in s.inputs if n in redone]
        current = m is not None and m["key"] == keys[s.name] and not bad_outputs and not upstream_redone
        if current and s.name not in force:
            results[s.name] = StageResult(s.name, "skipped", keys[s.name], 0.0, [o["path"] for o in m["outputs"]])
            LOG.info("stage %s: up to date, skipped", s.name)
            continue
        if not current:
            redone.add(s.name)
        if m is not None and m["key"] == keys[s.name] and (bad_outputs or upstream_redone):
            why = (", ".join(f"{p} {st}" for p, st in bad_outputs) if bad_outputs
                   else f"upstream {upstream_redone} redone")
            LOG.warning("stage %s: redone (%s)", s.name, why)
        to_run.append(s)
    n_tasks = sum(len(s.items) if s.items is not None else 1 for s in to_run)
    bar = tqdm(total=n_tasks, desc="stages", unit="task", disable=not progress or n_tasks == 0)

    by_name = {s.name: s for s in ordered}
    claimed = {_stored(study_dir, _resolve(study_dir, p)): s.name for s in ordered for p in s.outputs}
    written: dict = {}     # stage name -> files its function(s) wrote
    pending = {s.name: s for s in to_run}
    running: dict = {}     # future -> stage name
    remaining: dict = {}   # stage name -> open futures
    started: dict = {}
    busy: dict = {}        # stage name -> seconds spent in its function(s)

    def launch(s: Stage):
        mp = manifest_path(study_dir, s.name)
        with contextlib.suppress(FileNotFoundError):
            mp.unlink()
        for p in s.outputs:
            remove_stale_temporaries(_resolve(study_dir, p))
        inputs = {n: tuple(_resolve(study_dir, p) for p in by_name[n].outputs) for n in s.inputs}
        outs = tuple(_resolve(study_dir, p) for p in s.outputs)
        items = [(None, None)] if s.items is None else list(zip(s.items, range(len(s.items))))
        started[s.name] = time.perf_counter()
        LOG.info("stage %s: started", s.name)
        remaining[s.name] = set()
        for item, idx in items:
            task = StageTask(s.name, s.params, outs, inputs, study_dir, item, idx)
            fut = executor.submit(_call, s.func, task)
            running[fut] = s.name
            remaining[s.name].add(fut)
        bar.set_postfix_str(s.name)

    def collect(done) -> None:
        """Book finished pieces of work; a stage whose last piece finished gets its manifest now."""
        for fut in done:
            name = running.pop(fut)
            exc = fut.exception()
            if exc is not None:
                for other in running:
                    other.cancel()
                exc.add_note(f"in her2sim stage {name!r}")
                LOG.error("stage %s: failed: %s", name, exc)
                raise exc
            bar.update(1)
            secs, files = fut.result()
            busy[name] = busy.get(name, 0.0) + secs
            written.setdefault(name, []).extend(files)
            remaining[name].discard(fut)
            if not remaining[name]:
                s = by_name[name]
                others = {p for p, owner in claimed.items() if owner != name}
                outs = _write_manifest(study_dir, s, keys[name], keys, started[name], written.get(name, ()),
                                       others)
                # seconds = time spent in the stage's own function(s), not wall time since launch
                # (which would include stages running beside it and executor queueing)
                results[name] = StageResult(name, "ran", keys[name], busy[name], outs)
                LOG.info("stage %s: done in %.1f s", name, results[name].seconds)

    try:
        while pending or running:
            for name in list(pending):
                s = pending[name]
                if all(n in results for n in s.inputs):
                    del pending[name]
                    launch(s)
                    # work already finished (the serial executor runs a stage inside submit) is booked
                    # before the next stage starts, so a run killed later keeps this stage's manifest
                    collect([f for f in list(running) if f.done()])
            if not running:
                if pending:  # unreachable with a valid order; guards against a silent hang
                    raise ConfigError(f"stages {sorted(pending)} cannot start: their inputs never completed")
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            collect(done)
    finally:
        bar.close()
    return {s.name: results[s.name] for s in ordered}


def stage_status(study_dir, stages: Iterable[Stage] | None = None) -> dict:
    """Status of each stage: ``"done"``, ``"stale"`` or ``"missing"``.

    With ``stages`` a stage is *done* when its manifest key equals its current key and
    its outputs are intact, *stale* when a manifest exists but the key differs, an
    output changed/disappeared or an upstream stage is not done, and *missing* without
    a manifest. Without ``stages`` the manifests in ``<study_dir>/.stages`` are judged
    on their own: outputs intact and every upstream key recorded equal to that
    upstream's current manifest key.
    """
    study_dir = Path(study_dir)
    status: dict = {}
    if stages is not None:
        ordered = _order(list(stages))
        keys = stage_keys(ordered)
        for s in ordered:
            m = read_manifest(study_dir, s.name)
            if m is None:
                status[s.name] = STATUS_MISSING
            elif (m["key"] == keys[s.name] and _outputs_intact(study_dir, m)
                  and all(status[n] == STATUS_DONE for n in s.inputs)):
                status[s.name] = STATUS_DONE
            else:
                status[s.name] = STATUS_STALE
        return status
    folder = study_dir / MANIFEST_DIR
    manifests = {}
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        m = read_manifest(study_dir, p.stem)
        if m is not None:
            manifests[p.stem] = m

    def judge(name, seen=()):
        if name in status:
            return status[name]
        m = manifests.get(name)
        if m is None:
            return STATUS_MISSING
        ok = _outputs_intact(study_dir, m)
        for up, up_key in m.get("inputs", {}).items():
            um = manifests.get(up)
            if up in seen or um is None or um["key"] != up_key or judge(up, seen + (name,)) != STATUS_DONE:
                ok = False
        status[name] = STATUS_DONE if ok else STATUS_STALE
        return status[name]

    for name in manifests:
        judge(name)
    return status


__all__ = ["Stage", "StageTask", "StageResult", "run_stages", "stage_status", "stage_keys", "atomic_path",
           "write_bytes_atomic", "write_text_atomic", "file_sha256", "manifest_path", "read_manifest",
           "SerialExecutor", "remove_stale_temporaries", "remove_stale_temporaries_under", "savefig_atomic", "study_lock",
           "read_lock", "output_state", "manifest_problem", "LOCK_NAME"]
