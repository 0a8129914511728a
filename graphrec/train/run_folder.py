"""The run folder of ``graphrec fit``: its name, its lock, its status file, its logs and the overwrite swap.

A run folder holds (docs/architecture.md, "Run folders")::

    run.json        {"status": "running" | "interrupted" | "failed" | "finished", "pid", "host", "model",
                     "dataset", "epoch", "best_epoch", "best_valid", "started", "updated", ...}
    config.yaml     the resolved config
    history.jsonl   one JSON object per trained epoch (losses, seconds, validation metric)
    train.log       the plain evaluation lines (graphrec.train.loggers) and run events
    model.pt        the best-so-far checkpoint (the best epoch's once the run finished)
    resume.pt       what ``graphrec fit --resume`` needs (graphrec.train.resume)
    metrics.json    the final result (finished runs only)
    .lock           the pid and host of the process writing the folder

Every file except ``train.log`` (appended line by line) is replaced atomically. A folder is
locked by the ``.lock`` file (created exclusively); a lock whose process is gone on this host is
stale and taken over. ``--overwrite`` of an existing run folder trains into a staging folder
beside it (``<name>.new-<pid>``) and swaps it in only when the run finishes, so the folder never
holds old and new files at once; an interrupted overwrite leaves the old folder untouched and the
staging folder resumable. Default names (``runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>``) get a
``-2``, ``-3``... suffix when taken: folders are created with an exclusive ``mkdir``, so two runs
started in the same second never share one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from graphrec.data.interactions import atomic_write_bytes, atomic_write_json
from graphrec.errors import GraphrecError, check_writable_dir

LOCK = ".lock"
STATUS = "run.json"
HISTORY = "history.jsonl"
LOG = "train.log"
#: files whose presence marks a folder as a graphrec run (``--overwrite`` replaces only those)
RUN_MARKERS = ("run.json", "config.yaml", "metrics.json", "model.pt")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(folder: Path) -> dict[str, Any] | None:
    """The ``.lock`` of ``folder`` (``{"pid", "host"}``), or ``None`` when there is none or it is unreadable."""
    try:
        data = json.loads((Path(folder) / LOCK).read_text())
        return {"pid": int(data["pid"]), "host": str(data.get("host", ""))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_lock(folder: Path) -> dict[str, Any] | None:
    """The lock of ``folder`` when a live process (on this host, or on another host: assumed live) holds it."""
    lock = read_lock(folder)
    if lock is None:
        return None
    if lock["host"] and lock["host"] != socket.gethostname():
        return lock
    return lock if _pid_alive(lock["pid"]) and lock["pid"] != os.getpid() else None


def _in_use_error(folder: Path, lock: dict[str, Any]) -> GraphrecError:
    where = f" on {lock['host']}" if lock["host"] and lock["host"] != socket.gethostname() else ""
    return GraphrecError(
        f"run folder '{folder}' is in use by a live run (pid {lock['pid']}{where}); wait for it to end or choose another "
        f"--out (if that process is gone, delete {Path(folder) / LOCK})"
    )


def is_run_folder(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in RUN_MARKERS)


class RunFolder:
    """A locked run folder being written by this process.

    Args:
        path: the folder training writes into.
        target: where the folder is swapped to when the run finishes (``--overwrite`` staging), else ``None``.
    """

    def __init__(self, path: Path, target: Path | None = None) -> None:
        self.path = Path(path)
        self.target = Path(target) if target is not None else None
        self.status: dict[str, Any] = {}
        self._locked = False

    # ----------------------------------------------------------------------------- creation
    @classmethod
    def create(cls, out: Path | None, model: str, dataset: str, overwrite: bool) -> "RunFolder":
        """Make and lock a fresh run folder (``out`` or a unique default name); see the module docstring."""
        try:
            return cls._create(out, model, dataset, overwrite)
        except OSError as exc:  # unwritable, not a folder, disk full: one line, not a traceback
            where = exc.filename or out or "runs"
            raise GraphrecError(f"cannot create the run folder '{where}': {exc.strerror or exc}") from None

    @classmethod
    def _create(cls, out: Path | None, model: str, dataset: str, overwrite: bool) -> "RunFolder":
        if out is None:
            base = Path("runs") / f"{model}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
            check_writable_dir(base.parent, "runs folder")
            for i in range(1, 1000):
                path = base if i == 1 else base.with_name(f"{base.name}-{i}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                return cls(path)._lock()
            raise GraphrecError(f"could not create a run folder beside '{base}' (999 names taken)")
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise GraphrecError(f"--out '{out}' is a file, not a folder")
        if out.is_dir():
            lock = live_lock(out)
            if lock is not None:
                raise _in_use_error(out, lock)
            content = [p.name for p in out.iterdir() if p.name != LOCK]
            if content and not overwrite:
                raise GraphrecError(f"output folder '{out}' is not empty; choose another --out or pass --overwrite")
            for sibling in out.parent.glob(f"{out.name}.new-*"):  # another --overwrite of the same folder
                lock = live_lock(sibling)
                if lock is not None:
                    raise _in_use_error(out, lock)
            if content:
                if not is_run_folder(out):
                    raise GraphrecError(
                        f"--overwrite replaces only a graphrec run folder, and '{out}' holds other files "
                        f"({', '.join(sorted(content)[:3])}); choose another --out"
                    )
                if Path.cwd().resolve().is_relative_to(out.resolve()):
                    raise GraphrecError(f"--overwrite cannot replace '{out}': it holds the current directory")
                staging = out.with_name(f"{out.name}.new-{os.getpid()}")
                if staging.exists():
                    shutil.rmtree(staging)
                check_writable_dir(staging)
                return cls(staging, target=out)._lock()
        check_writable_dir(out)
        return cls(out)._lock()

    @classmethod
    def reopen(cls, folder: Path) -> "RunFolder":
        """Lock an existing run folder to continue it (``--resume``); refuses finished and live runs."""
        folder = Path(folder)
        if not folder.is_dir():
            raise GraphrecError(f"--resume '{folder}' is not a folder (pass the run folder of an interrupted 'graphrec fit')")
        lock = live_lock(folder)
        if lock is not None:
            raise _in_use_error(folder, lock)
        status = read_status(folder)
        if status.get("status") == "finished":
            raise GraphrecError(f"run '{folder}' has already finished (see its metrics.json); nothing to resume")
        run = cls(folder, target=Path(status["target"]) if status.get("target") else None)
        run.status = status
        return run._lock()

    def _lock(self) -> "RunFolder":
        path = self.path / LOCK
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}).encode()
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                lock = live_lock(self.path)
                if lock is not None:
                    raise _in_use_error(self.path, lock) from None
                try:  # stale (its process is gone) or our own: take it over
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            except OSError as exc:
                raise GraphrecError(f"cannot write to run folder '{self.path}': {exc.strerror}") from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            self._locked = True
            return self
        raise GraphrecError(f"could not lock run folder '{self.path}'; another run keeps taking it")

    def release(self) -> None:
        """Remove our lock (if it is still ours)."""
        if not self._locked:
            return
        lock = read_lock(self.path)
        if lock is not None and lock["pid"] == os.getpid():
            try:
                (self.path / LOCK).unlink()
            except FileNotFoundError:
                pass
        self._locked = False

    # ----------------------------------------------------------------------------- contents
    @property
    def final_path(self) -> Path:
        """Where the folder will be once the run finishes."""
        return self.target or self.path

    def write_status(self, status: str, **fields: Any) -> None:
        """Update ``run.json`` atomically (``status`` plus any fields; earlier fields are kept)."""
        self.status.update(fields)
        self.status.update({"status": status, "pid": os.getpid(), "host": socket.gethostname(), "updated": _now()})
        self.status.setdefault("started", self.status["updated"])
        if self.target is not None:
            self.status["target"] = str(self.target)
        atomic_write_json(self.path / STATUS, self.status)

    def write_history(self, records: list[dict[str, Any]]) -> None:
        """Replace ``history.jsonl`` (one JSON object per epoch) atomically."""
        text = "".join(json.dumps(r, sort_keys=False) + "\n" for r in records)
        atomic_write_bytes(self.path / HISTORY, text.encode())

    def log(self, line: str) -> None:
        """Append one line to ``train.log``."""
        with open(self.path / LOG, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")

    def finish(self) -> Path:
        """Swap a staging folder into its target (``--overwrite``); return the final folder."""
        if self.target is None:
            return self.path
        old = self.target.with_name(f"{self.target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        if self.target.exists():
            lock = live_lock(self.target)
            if lock is not None:
                raise GraphrecError(f"the finished run is in '{self.path}': '{self.target}' was taken by a live run "
                                    f"(pid {lock['pid']}) meanwhile, so it was not replaced")
            os.replace(self.target, old)
        os.replace(self.path, self.target)
        self.path, self.target = self.target, None
        self.status.pop("target", None)
        shutil.rmtree(old, ignore_errors=True)
        return self.path


def read_status(folder: Path) -> dict[str, Any]:
    """``run.json`` of ``folder``; an error when the folder is not a resumable run."""
    p = Path(folder) / STATUS
    if not p.is_file():
        raise GraphrecError(f"'{folder}' has no run.json: it was not written by a 'graphrec fit' that can be resumed")
    try:
        status = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise GraphrecError(f"{p}: not a graphrec run status ({type(exc).__name__})") from None
    if not isinstance(status, dict) or "status" not in status:
        raise GraphrecError(f"{p}: not a graphrec run status (no 'status' field)")
    return status
