"""The run directory: lock it, refuse to clobber one, clear it for ``--overwrite``, check it is writable, snapshot the config.

The run loop holds one :class:`RunDirectory` and asks it once per phase: :meth:`~RunDirectory.claim`
(before the model loads), :meth:`~RunDirectory.begin` (once the backend is built) and
:meth:`~RunDirectory.record` (each complete checkpoint).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from evsys.engine.resume import ResumePoint, read_latest, remove_stale_temporaries, write_latest
from evsys.logging.jsonl_writer import ORPHANED_SUFFIX, write_text_atomic
from evsys.logging.redact import Redactor
from evsys.schema.errors import ConfigError, Location, Problem
from evsys.schema.protocols import Backend
from evsys.schema.validation import ValidatedConfig
from evsys.schema.yaml_source import format_field_path

SNAPSHOT_FILE = "resolved_config.json"
LOCK_FILE = ".evsys.lock"
#: what EvSys writes in a run directory (``--overwrite`` removes exactly these; other files stay)
#: what EvSys writes in a run directory (the trackers' default stores included), which --overwrite clears
OUTPUT_FILES = ("metrics.jsonl", "summary.md", SNAPSHOT_FILE, "report.md", "mlflow.db")
OUTPUT_DIRS = ("predictions", "checkpoints", "plots", "eval", "tensorboard", "wandb", "mlartifacts")
#: entries that do not make a run directory "already used": the lock, and evaluations of the base model
NOT_A_RUN = frozenset({LOCK_FILE, "eval"})
MIN_FREE_BYTES = 1 << 20
#: algorithm params a resumed run may change
RESUMABLE_CHANGES = frozenset({"max_steps", "save_every"})


#: errno values that mean "the environment refused a write", reported as one line, not a traceback
WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOTDIR, errno.ENOENT})


def describe_write_error(exc: OSError) -> str:
    """``cannot write <file>: No space left on device``."""
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot write{where}: {exc.strerror or exc}"


def refuse_existing(run_dir: Path, *, overwrite: bool, resume: bool = False) -> None:
    """A run directory that already holds something is an error unless ``--resume`` or ``--overwrite``."""
    if overwrite and resume:
        raise ConfigError(Problem("--resume continues the run and --overwrite replaces it; pass one of them"))
    if overwrite or resume:
        return
    if run_dir.is_dir() and any(entry.name not in NOT_A_RUN for entry in run_dir.iterdir()):
        raise ConfigError(
            Problem(
                "run directory already exists; pass --resume to continue it, --overwrite to replace it, or change 'name'",
                Location(str(run_dir)),
            )
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(Problem("the run directory path is a file; change 'name' or 'output_dir'", Location(str(run_dir))))


def clear_outputs(run_dir: Path) -> None:
    """Remove what EvSys writes (files, set-aside rows, predictions, checkpoints, report, plots, evaluations); other files stay."""
    if not run_dir.is_dir():
        return
    for name in OUTPUT_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for orphan in run_dir.glob(f"*{ORPHANED_SUFFIX}*"):
        orphan.unlink(missing_ok=True)
    for name in OUTPUT_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)


class DirectoryLock:
    """An exclusive ``fcntl.flock`` on ``<directory>/.evsys.lock``, which holds the owner's pid.

    The kernel drops the lock when its process exits, however it exits, so a crashed run never
    blocks ``--resume``; while it lives, a second ``run`` / ``--resume`` / ``eval`` into the
    directory is refused with one line naming the pid. The lock file itself stays (removing it
    would let two processes lock two different files). Where ``fcntl`` does not exist (Windows)
    no lock is taken.
    """

    def __init__(self, directory: Path, what: str = "run directory") -> None:
        self.directory = directory
        self.what = what
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        """Take the lock (creating the directory); a live holder is a :class:`ConfigError` naming its pid."""
        if sys.platform == "win32":  # pragma: no cover - no fcntl
            return self
        import fcntl

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(_os_problem(f"cannot create the {self.what}", exc, self.directory)) from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(_os_problem(f"the {self.what} is not writable", exc, self.directory)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                Problem(
                    f"in use by another evsys process (pid {holder}); wait for it to end or stop it, or change 'name'",
                    Location(str(self.directory)),
                )
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file); safe to call twice."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _os_problem(action: str, exc: OSError, path: Path) -> Problem:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOTDIR:
        reason += " (a part of the path is a file)"
    return Problem(f"{action}: {reason}", Location(str(getattr(exc, "filename", None) or path)))


def prepare_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and prove it is writable and not full, before anything heavy starts."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(_os_problem("cannot create the run directory", exc, run_dir)) from None
    probe = run_dir / f".evsys-write-test-{os.getpid()}"
    try:
        with probe.open("wb") as handle:
            handle.write(b"evsys\n" * 64)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise ConfigError(_os_problem("the run directory is not writable", exc, run_dir)) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise ConfigError(Problem(f"the run directory's file system is full ({free} bytes free)", Location(str(run_dir))))


def _version() -> str:
    try:
        return metadata.version("evsys-cli")
    except metadata.PackageNotFoundError:
        return "unknown"


def config_snapshot(validated: ValidatedConfig, backend: Backend | None = None) -> dict[str, Any]:
    """The resolved config (every params model completed with its defaults), secrets redacted; with a
    ``backend``, the settings it chose itself (:meth:`Backend.resolved_settings`: the local backend's
    ``auto`` values) as ``backend_resolved``."""
    config = validated.config.model_dump(mode="json")
    config["algorithm"]["params"] = validated.algorithm_params.model_dump(mode="json")
    config["backend"]["params"] = validated.backend_params.model_dump(mode="json")
    for spec, params in zip(config.get("callbacks", []), validated.callback_params, strict=False):
        spec["params"] = params.model_dump(mode="json")
    redactor = Redactor.from_environment(config)
    from evsys.engine.overrides import override_texts

    snapshot: dict[str, Any] = {"evsys_version": _version(), "config_file": redactor.text(validated.path)}
    overrides = override_texts(validated)
    if overrides:
        snapshot["overrides"] = [redactor.text(text) for text in overrides]
    snapshot["config"] = redactor.config(config)
    resolved = backend.resolved_settings() if backend is not None else {}
    if resolved:
        snapshot["backend_resolved"] = resolved
    return snapshot


def write_snapshot(run_dir: Path, snapshot: dict[str, Any]) -> None:
    """Write ``resolved_config.json`` atomically (a refused write is a :class:`ConfigError` naming it)."""
    path = run_dir / SNAPSHOT_FILE
    try:
        write_text_atomic(path, json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise ConfigError(Problem(f"cannot write the config snapshot: {exc.strerror or exc}", Location(str(path)))) from None


def read_snapshot(run_dir: Path) -> dict[str, Any] | None:
    """The snapshot an earlier run wrote, or None."""
    try:
        data = json.loads((run_dir / SNAPSHOT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flatten(value: Any, prefix: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], Any]:
    if isinstance(value, dict):
        out: dict[tuple[str | int, ...], Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, (*prefix, key)))
        return out or {prefix: {}}
    return {prefix: value}


def _compared(config: dict[str, Any]) -> dict[tuple[str | int, ...], Any]:
    """The parts of a resolved config a resumed run must keep: model, backend kind, algorithm, data."""
    algorithm = dict(config.get("algorithm", {}))
    algorithm["params"] = {k: v for k, v in dict(algorithm.get("params", {})).items() if k not in RESUMABLE_CHANGES}
    kept = {
        "model": config.get("model"),
        "backend": {"kind": dict(config.get("backend", {})).get("kind")},
        "algorithm": algorithm,
        "data": config.get("data"),
    }
    return _flatten(kept)


def resume_conflicts(old: dict[str, Any], new: dict[str, Any], validated: ValidatedConfig) -> list[Problem]:
    """What changed between the snapshot ``old`` and ``new`` that a resumed run cannot take."""
    before, after = _compared(dict(old.get("config", {}))), _compared(dict(new.get("config", {})))
    problems = []
    for key in sorted(set(before) | set(after), key=str):
        if before.get(key) != after.get(key):
            problems.append(
                Problem(
                    f"changed since the run started ({json.dumps(before.get(key))} -> {json.dumps(after.get(key))}); "
                    "a resumed run keeps its model, algorithm and data (only max_steps and save_every may change)",
                    validated.document.locate(key),
                    format_field_path(key),
                )
            )
    return problems


DRY_RUN_SUFFIX = "-dry-run"
"""``--dry-run`` writes to ``<output_dir>/<name>-dry-run`` (replaced each time), never the real run's directory."""


class RunDirectory:
    """One run's directory, held (locked) from :meth:`claim` to the end of the ``with`` block.

    ``resume=True`` continues its last complete checkpoint; ``overwrite=True`` replaces an earlier
    run; without either, a directory that already holds a run is refused. ``dry_run`` runs go to
    ``<name>-dry-run``, replaced each time.
    """

    def __init__(self, validated: ValidatedConfig, *, overwrite: bool = False, resume: bool = False, dry_run: bool = False) -> None:
        config = validated.config
        self.validated = validated
        self.resume = resume
        self.overwrite = overwrite or (dry_run and not resume)
        self.output_dir = Path(config.output_dir)
        self.path = self.output_dir / (config.name + (DRY_RUN_SUFFIX if dry_run else ""))
        if self.overwrite and self.resume:
            refuse_existing(self.path, overwrite=True, resume=True)
        self._lock = DirectoryLock(self.path)

    def __enter__(self) -> RunDirectory:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def claim(self) -> ResumePoint | None:
        """Before the model loads: refuse a directory holding a run (unless ``resume`` / ``overwrite``),
        check a resumed config changed only what resuming takes, prove the directory writable, and
        return the checkpoint to continue from (None: start at step 0)."""
        refuse_existing(self.path, overwrite=self.overwrite, resume=self.resume)
        point = None
        if self.resume:
            old = read_snapshot(self.path)
            if old is not None:
                problems = resume_conflicts(old, config_snapshot(self.validated), self.validated)
                if problems:
                    raise ConfigError(problems)
            point = read_latest(self.path)
        prepare_run_dir(self.path)
        return point

    def begin(self, backend: Backend) -> None:
        """Once the backend is built (so a missing key or model never costs the previous run's outputs):
        clear an overwritten run's outputs, drop half-written checkpoints, snapshot the resolved config
        with the settings the backend chose."""
        if self.overwrite:
            clear_outputs(self.path)
        remove_stale_temporaries(self.path)
        write_snapshot(self.path, config_snapshot(self.validated, backend))

    def record(self, point: ResumePoint) -> None:
        """Point ``checkpoints/latest`` at a complete checkpoint."""
        write_latest(self.path, point)
