"""A small resumable stage runner for studies.

A :class:`Stage` is a named step with parameters, upstream stages (``inputs``), a
function and the files it must produce (``outputs``). Its *key* is the sha256 of
the canonical JSON of ``(name, params, items, keys of its upstream stages)``, so
changing a parameter changes the key of that stage and of every stage downstream
of it, and of nothing else.

After a stage completes, a manifest ``<study_dir>/.stages/<name>.json`` (written
atomically) records the key and each output path with its sha256. A later run
skips the stage when the manifest key equals the current key and every output
still exists with the recorded hash. The manifest is deleted *before* a stage
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
recomputed stage has new hashes even with identical arrays; downstream stages are
still skipped because keys depend on parameters, not on output bytes.

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
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from her2sim.config import canonical_json
from her2sim.core.errors import ConfigError, DataError

MANIFEST_DIR = ".stages"
LOG = logging.getLogger("her2sim.stages")
STATUS_DONE, STATUS_STALE, STATUS_MISSING = "done", "stale", "missing"


# ---------------------------------------------------------------------------- atomic files
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
    """The manifest of stage ``name`` or ``None`` if absent or unreadable (treated as not done)."""
    p = manifest_path(study_dir, name)
    try:
        m = json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) and "key" in m and "outputs" in m else None


def _resolve(study_dir: Path, p) -> Path:
    p = Path(p)
    return p if p.is_absolute() else study_dir / p


def _stored(study_dir: Path, p: Path) -> str:
    try:
        return p.resolve().relative_to(study_dir.resolve()).as_posix()
    except ValueError:
        return str(p.resolve())


def _outputs_intact(study_dir: Path, manifest: dict) -> bool:
    for rec in manifest.get("outputs", []):
        p = _resolve(study_dir, rec["path"])
        if not p.exists() or file_sha256(p) != rec["sha256"]:
            return False
    return True


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
    """Run one piece of a stage where the executor puts it; return its own busy time (s)."""
    t0 = time.perf_counter()
    func(task)
    return time.perf_counter() - t0


def _write_manifest(study_dir: Path, stage: Stage, key: str, upstream: dict, started: float) -> list:
    outs = []
    for p in stage.outputs:
        path = _resolve(study_dir, p)
        if not path.exists():
            raise DataError(f"stage {stage.name!r} finished without writing its declared output {path}")
        outs.append({"path": _stored(study_dir, path), "sha256": file_sha256(path)})
    from her2sim import __version__
    manifest = {"name": stage.name, "key": key, "params": stage.params, "items": stage.items,
                "inputs": {n: upstream[n] for n in stage.inputs}, "outputs": outs,
                "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 3), "her2sim_version": __version__}
    write_text_atomic(manifest_path(study_dir, stage.name), json.dumps(manifest, indent=1, sort_keys=True))
    return [o["path"] for o in outs]


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
        identical anyway).

    Returns
    -------
    dict of str -> StageResult
        ``status`` is ``"ran"`` or ``"skipped"`` for every stage.
    """
    from tqdm import tqdm

    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    ordered = _order(list(stages))
    keys = stage_keys(ordered)
    force = set(force)
    unknown = force - set(keys)
    if unknown:
        raise ConfigError(f"force = {sorted(unknown)} names no stage; known stages {sorted(keys)}")
    executor = executor or SerialExecutor()

    results, to_run = {}, []
    for s in ordered:
        m = read_manifest(study_dir, s.name)
        if s.name not in force and m is not None and m["key"] == keys[s.name] and _outputs_intact(study_dir, m):
            results[s.name] = StageResult(s.name, "skipped", keys[s.name], 0.0, [o["path"] for o in m["outputs"]])
            LOG.info("stage %s: up to date, skipped", s.name)
        else:
            to_run.append(s)
    n_tasks = sum(len(s.items) if s.items is not None else 1 for s in to_run)
    bar = tqdm(total=n_tasks, desc="stages", unit="task", disable=not progress or n_tasks == 0)

    by_name = {s.name: s for s in ordered}
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

    try:
        while pending or running:
            for name in list(pending):
                s = pending[name]
                if all(n in results for n in s.inputs):
                    del pending[name]
                    launch(s)
            if not running:
                if pending:  # unreachable with a valid order; guards against a silent hang
                    raise ConfigError(f"stages {sorted(pending)} cannot start: their inputs never completed")
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
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
                busy[name] = busy.get(name, 0.0) + fut.result()
                remaining[name].discard(fut)
                if not remaining[name]:
                    s = by_name[name]
                    outs = _write_manifest(study_dir, s, keys[name], keys, started[name])
                    # seconds = time spent in the stage's own function(s), not wall time since launch
                    # (which would include stages running beside it and executor queueing)
                    results[name] = StageResult(name, "ran", keys[name], busy[name], outs)
                    LOG.info("stage %s: done in %.1f s", name, results[name].seconds)
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
           "SerialExecutor", "remove_stale_temporaries"]
