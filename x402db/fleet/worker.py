"""One target's change, in a process of its own: `python -m x402db.fleet.worker RUN_DIR TARGET FD`.

The orchestrator starts it in a new session, so a kill of the orchestrator (or of its process
group, as a terminal's Ctrl-C does) never reaches a `pulumi up` in the middle of a CREATE INDEX
CONCURRENTLY. FD is the target's worker lock, taken by the orchestrator before this process
started and held here until it exits: while it is held, no other run touches this target.

Phases, each recorded in the journal as it ends: configure, up, smoke (read only), evidence (for
a wave that records it), after (a preview that must find no change). The target is ok only when
up, smoke and after all pass. No secret is on this process's argv: the worker reads the password
from the fleet file's source itself, and hands it to `pulumi config set --secret` on stdin.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import db
from ..errors import BundleError
from ..local.scratch import expected_state
from ..verify.smoke import run_checks
from . import endpoint, fleetfile
from .journal import Journal, now
from .stacks import Outcome, Stacks


class Phases:
    """The target's journal record, written after every phase."""

    def __init__(self, journal: Journal, name: str):
        self.journal, self.name = journal, name
        self.record = journal.target(name)
        self.record.setdefault("phases", {})

    def save(self, **fields: Any) -> None:
        self.record.update(fields)
        self.journal.write_target(self.name, self.record)

    def run(self, phase: str, action: Callable[[], tuple[bool, str]]) -> bool:
        self.save(phase=phase)
        started = time.monotonic()
        try:
            ok, detail = action()
        except BundleError as exc:
            ok, detail = False, str(exc)
        self.record["phases"][phase] = {
            "status": "passed" if ok else "failed",
            "detail": detail,
            "seconds": round(time.monotonic() - started, 1),
        }
        self.save()
        return ok


def work(journal: Journal, name: str) -> str:
    run = journal.run()
    if run is None:
        raise BundleError(f"no run in {journal.dir}")
    fleet = fleetfile.load(Path(run["fleet"]))
    spec = fleet.targets[name]
    wave = next(w for w, targets in fleet.wave_targets() if name in targets)
    stacks = Stacks()
    phases = Phases(journal, name)
    phases.save(worker={"pid": os.getpid(), "started": now()}, result=None, reason="")

    def smoke() -> tuple[bool, str]:
        result = run_checks(endpoint.dsn(spec), read_only=True, keyring=None, expectation=expected_state)
        return result.passed, result.summary() + (
            "" if result.passed else ": " + "; ".join(c.name for c in result.checks if c.status == "failed")
        )

    def evidence() -> tuple[bool, str]:
        record = {"release": run["release"], "smoke": "passed", "time": now(), "wave": wave.name}
        out = stacks.record_evidence(name, record)
        return out.ok, out.summary or f"release {run['release']} recorded in the stack's outputs"

    def outcome(out: Outcome) -> tuple[bool, str]:
        return out.ok, out.summary

    steps: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
        *([("configure", lambda: outcome(stacks.clear_evidence(name)))] if wave.evidence else []),
        ("up", lambda: outcome(stacks.up(name, on_output=_echo))),
        ("smoke", smoke),
        *([("evidence", evidence)] if wave.evidence else []),
        ("after", lambda: outcome(stacks.preview(name, expect_no_changes=True))),
    ]
    for phase, action in steps:
        if not phases.run(phase, action):
            reason = f"{phase}: {phases.record['phases'][phase]['detail']}"
            phases.save(result="failed", reason=reason, phase="done", finished=now())
            return "failed"
    phases.save(result="ok", reason="", phase="done", finished=now())
    return "ok"


def _echo(line: str) -> None:
    sys.stdout.write(line if line.endswith("\n") else line + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    run_dir, name, fd = Path(argv[0]), argv[1], int(argv[2])
    del fd  # held open (and so locked) until this process exits, however it exits
    journal = Journal(run_dir)
    try:
        return 0 if work(journal, name) == "ok" else 1
    except Exception as exc:  # the journal must say why, not only the log
        record = journal.target(name)
        secrets = _secrets(journal, name)
        print(db.scrub(traceback.format_exc(), secrets), flush=True)  # into the target's log
        reason = db.scrub(f"worker error: {type(exc).__name__}: {exc}", secrets)
        record.update(result="failed", reason=reason, phase="done", finished=now())
        journal.write_target(name, record)
        return 1


def _secrets(journal: Journal, name: str) -> list[str]:
    """The target's secrets, to scrub from an error's text; none when they cannot be read."""
    try:
        spec = fleetfile.load(Path((journal.run() or {})["fleet"])).targets[name]
        return [source.read() for source in spec.secrets.values()]
    except Exception:
        return []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
