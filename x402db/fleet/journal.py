"""The rollout's journal under `.fleet/`: what every target has been through, written so that a
kill -9 of the orchestrator at any instant leaves a journal the next `resume` can finish from.

Every file is replaced whole (write, fsync, rename), so a reader never sees half a record. The
orchestrator owns `run.json`; a target's file is written by the orchestrator while no worker runs
for it, and by that target's worker while one does. Who is alive is never guessed from a pid: the
run's `lock` is flock'ed by the live orchestrator, and each target's `<name>.lock` by its live
worker (the orchestrator takes it before the worker starts and hands the descriptor over), so the
kernel answers, and a dead process's lock is released the moment it dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import ROOT
from ..errors import UsageError

FINAL = ("ok", "failed", "refused", "unreachable", "skipped")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Journal:
    dir: Path

    @classmethod
    def for_fleet(cls, fleet_path: Path, root: Path = ROOT) -> Journal:
        """One journal per fleet file: two fleet files never share (or resume) each other's run."""
        key = hashlib.sha256(str(fleet_path.resolve()).encode()).hexdigest()[:12]
        journal = cls(root / ".fleet" / key)
        (journal.dir / "targets").mkdir(parents=True, exist_ok=True)
        (journal.dir / "logs").mkdir(exist_ok=True)
        return journal

    # --- the run, owned by the orchestrator -------------------------------------------------
    @property
    def run_file(self) -> Path:
        return self.dir / "run.json"

    def run(self) -> dict[str, Any] | None:
        return _read(self.run_file)

    def write_run(self, data: dict[str, Any]) -> None:
        _write(self.run_file, data)

    def hold_run_lock(self) -> int:
        """The orchestrator's lock for the whole run; a second orchestrator is refused at once."""
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"another fleet run of this fleet file is in progress (its journal: {self.dir}); "
                "wait for it, or run `fleet.py status`"
            ) from None
        return fd

    def start_new_run(self, data: dict[str, Any]) -> None:
        """Forget the previous run's targets: a new `up` judges every target afresh."""
        for f in (self.dir / "targets").glob("*.json"):
            f.unlink()
        self.write_run(data)

    # --- targets ------------------------------------------------------------------------------
    def target_file(self, name: str) -> Path:
        return self.dir / "targets" / f"{name}.json"

    def target(self, name: str) -> dict[str, Any]:
        return _read(self.target_file(name)) or {"name": name, "phases": {}}

    def write_target(self, name: str, data: dict[str, Any]) -> None:
        _write(self.target_file(name), data)

    def log_file(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def worker_lock(self, name: str) -> int:
        """An open descriptor on the target's worker lock, not yet locked."""
        return os.open(self.dir / "targets" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def worker_alive(self, name: str) -> bool:
        fd = self.worker_lock(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing releases a lock this call took
        return False

    def wait_for_worker(self, name: str) -> None:
        """Block until the target's worker, if any, has exited (however it ended)."""
        fd = self.worker_lock(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            os.close(fd)
