"""A rollout in waves: for each wave, promotion, every target's plan and preview, the lock gate,
then the changes under the wave's caps, halting on failures. Everything that happens is written
to the journal first, so that `resume` after a kill -9 at any instant finishes the same run: it
waits for the workers still alive, clears a dead worker's stack lock and pending create as the
deploy runbook does by hand, leaves every target that reached a result alone, and decides what
is left exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import ROOT, db
from ..errors import BundleError, UsageError
from . import endpoint, gates, release
from .caps import startable
from .fleetfile import Fleet, WaveSpec
from .journal import FINAL, Journal, now
from .stacks import Stacks

# How long resume waits for a dead run's migration session (the dynamic provider outlives the CLI
# and finishes its statement) before it clears the stack and runs the target again.
LEFTOVER_WAIT_SECONDS = 600
FAILING = ("failed", "refused", "unreachable")


@dataclass
class Rollout:
    fleet: Fleet
    journal: Journal
    release: str
    say: Callable[[str], None]
    stacks: Stacks
    # (targets with a result, all targets, what runs now): a terminal's progress bar, or nothing
    progress: Callable[[int, int, str], None] | None = None

    def _tell(self, message: str) -> None:
        self.say(message)
        if self.progress is not None:
            names = [n for _, members in self.fleet.wave_targets() for n in members]
            records = [self.journal.target(n) for n in names]
            done = sum(1 for r in records if r.get("result") in FINAL)
            now_running = ", ".join(
                f"{r['name']} {r.get('phase', '')}".strip()
                for r in records
                if r.get("result") is None and r.get("phase")
            )
            self.progress(done, len(names), now_running)

    # --- the run ------------------------------------------------------------------------------
    def run(self, resume: bool) -> dict[str, Any]:
        previous = self.journal.run()
        unfinished = previous is not None and not previous.get("finished")
        if resume and previous is None:
            raise UsageError("there is no run of this fleet file to resume: start one with `fleet.py up`")
        if resume and previous is not None and previous["release"] != self.release:
            # Resuming it from this checkout would roll out another release, without up's question.
            raise UsageError(
                f"the last run rolled out release {previous['release']}, and this checkout is release "
                f"{self.release}: check that release out to resume it, or roll this one out with `fleet.py up`"
            )
        if unfinished or resume:
            assert previous is not None
            if previous["release"] != self.release:
                self._settle_all()  # another release's run: nothing of it is kept but what the databases hold
                self._new_run()
            else:
                self._tell(f"resuming the run started {previous['started']} (release {self.release})")
        else:
            self._new_run()
        halted_by = (self.journal.run() or {}).get("halted_by")
        for wave, names in self.fleet.wave_targets():
            if halted_by:
                self._skip(wave, names, f"not started: wave {halted_by} halted the rollout")
                continue
            status = self._wave(wave, names)
            # A failed wave halts the rollout only past its maxFailures; a refused one always does.
            if status == "refused" or (status != "ok" and self._failures(names) > wave.max_failures):
                halted_by = wave.name
                self._update_run(halted_by=halted_by)
        self._update_run(finished=now())
        return self.report()

    def _failures(self, names: list[str]) -> int:
        return sum(1 for n in names if self.journal.target(n).get("result") in FAILING)

    def _new_run(self) -> None:
        self.journal.start_new_run(
            {
                "fleet": str(self.fleet.path.resolve()),
                "release": self.release,
                "started": now(),
                "waves": {},
                "halted_by": None,
                "finished": None,
            }
        )

    def _update_run(self, **fields: Any) -> None:
        run = self.journal.run() or {}
        run.update(fields)
        self.journal.write_run(run)

    def _wave_status(self, wave: str, status: str, reason: str = "") -> None:
        run = self.journal.run() or {}
        run.setdefault("waves", {})[wave] = {"status": status, "reason": reason}
        self.journal.write_run(run)

    # --- one wave -----------------------------------------------------------------------------
    def _wave(self, wave: WaveSpec, names: list[str]) -> str:
        recorded = (self.journal.run() or {}).get("waves", {}).get(wave.name, {})
        if recorded.get("status") in ("ok", "failed", "refused", "skipped"):
            return recorded["status"]
        if recorded.get("status") != "running":
            refused = self._gate(wave, names)
            if refused:
                self._wave_status(wave.name, "refused", refused)
                return "refused"
            self._wave_status(wave.name, "running")
        status = self._change(wave, names)
        self._wave_status(wave.name, status)
        return status

    def _gate(self, wave: WaveSpec, names: list[str]) -> str:
        """The wave's gates, with plans and previews between them; the refusal, or "" to go on.
        Promotion is judged first: a wave that may not run yet is neither planned nor previewed."""
        problem = ""
        if wave.promoted_from:
            source = {w.name: t for w, t in self.fleet.wave_targets()}[wave.promoted_from]
            evidence = {t: self.stacks.evidence(t) if self.stacks.exists(t) else None for t in source}
            problem = gates.evidence_problem(self.release, wave.promoted_from, evidence) or ""
            if problem:
                problem = f"promotion refused: {problem}"
        if not problem:
            self._tell(f"wave {wave.name}: plan and preview of {', '.join(names)}")
            with ThreadPoolExecutor(max_workers=max(1, min(len(names), wave.parallel))) as pool:
                plans = dict(zip(names, pool.map(self._plan_and_preview, names), strict=True))
            ready = {t: p for t, p in plans.items() if p is not None}
            lock_refusals = gates.lock_gate(ready, self.fleet.lock_gate.max_rows)
            if lock_refusals:
                problem = "lock gate: " + "; ".join(lock_refusals)
        if problem:
            for name in names:
                record = self.journal.target(name)
                if record.get("result") not in FAILING:  # a target refused on its own keeps its reason
                    record.setdefault("endpoint", endpoint.label(self.fleet.targets[name]))
                    self.journal.write_target(name, record)
                    self._final(name, "refused", problem)
            self._tell(f"wave {wave.name} refused, nothing changed: {problem}")
        return problem

    def _plan_and_preview(self, name: str) -> gates.TargetPlan | None:
        """The target's read-only plan and preview; None when the target is refused or unreachable
        (its journal record says which and why)."""
        spec = self.fleet.targets[name]
        record: dict[str, Any] = {
            "name": name,
            "endpoint": endpoint.label(spec),
            "phases": {},
            "result": None,
            "reason": "",
        }
        self.journal.write_target(name, record)
        started = time.monotonic()
        plan = gates.plan_target(spec)
        record.update(server_version=plan.server_version, ledger=plan.ledger, locks=gates.locks_summary(plan))
        record["phases"]["plan"] = {
            "status": plan.verdict,
            "detail": plan.reason or (f"apply {', '.join(plan.pending)}" if plan.pending else "nothing to apply"),
            "seconds": round(time.monotonic() - started, 1),
        }
        self.journal.write_target(name, record)
        if plan.verdict in ("unreachable", "refused", "failed"):
            self._final(name, plan.verdict, plan.reason)
            self._tell(f"  {name}: {plan.verdict}: {plan.reason}")
            return None
        started = time.monotonic()
        try:
            stacks = Stacks()
            stacks.ensure(name)
            stacks.configure(spec)
        except BundleError as exc:  # this target's stack (or secret) is broken: the others go on
            record["phases"]["preview"] = {
                "status": "failed",
                "detail": str(exc),
                "seconds": round(time.monotonic() - started, 1),
            }
            self.journal.write_target(name, record)
            self._final(name, "failed", str(exc))
            self._tell(f"  {name}: failed: {exc}")
            return None
        preview = stacks.preview(name)
        record["phases"]["preview"] = {
            "status": "passed" if preview.ok else "refused",
            "detail": preview.summary,
            "seconds": round(time.monotonic() - started, 1),
        }
        self.journal.write_target(name, record)
        if not preview.ok:
            self._final(name, "refused", f"preview: {preview.summary}")
            self._tell(f"  {name}: refused by its preview: {preview.summary}")
            return None
        self._tell(f"  {name}: plan {plan.verdict}, preview passed")
        return plan

    def _change(self, wave: WaveSpec, names: list[str]) -> str:
        """Start the wave's targets under its caps; halt when its failures exceed maxFailures."""
        server_of = {n: (self.fleet.targets[n].host, self.fleet.targets[n].port) for n in names}
        records = {n: self.journal.target(n) for n in names}
        failures = sum(1 for r in records.values() if r.get("result") in FAILING)
        waiting = [n for n in names if records[n].get("result") is None]
        running: dict[str, subprocess.Popen | None] = {}
        for name in list(waiting):  # a resumed run: a worker of the killed orchestrator may still live
            if self.journal.worker_alive(name):
                self._tell(f"  {name}: waiting for the worker the interrupted run started")
                running[name] = None
                waiting.remove(name)
        halted = failures > wave.max_failures
        while waiting or running:
            if not halted:
                for name in startable(waiting, running, server_of, wave.parallel, wave.max_per_host):
                    waiting.remove(name)
                    running[name] = self._start(name)
            time.sleep(0.2)
            for name, proc in list(running.items()):
                alive = proc.poll() is None if proc is not None else self.journal.worker_alive(name)
                if alive:
                    continue
                del running[name]
                result = self._finished(name)
                if result in FAILING:
                    failures += 1
            if failures > wave.max_failures and not halted:
                halted = True
                self._tell(
                    f"wave {wave.name}: {failures} failed (maxFailures {wave.max_failures}): no new target starts, "
                    "running ones finish"
                )
            if halted and not running:
                break
        for name in waiting:
            self._final(name, "skipped", f"not started: wave {wave.name} halted after {failures} failure(s)")
        return "ok" if failures == 0 and not waiting else "failed"

    def _start(self, name: str) -> subprocess.Popen:
        record = self.journal.target(name)
        interrupted = record.get("phases", {}).get("up") or record.get("phase") in ("up", "smoke", "evidence", "after")
        # A dead process's lock refuses every up until cancelled, whatever the journal remembers: a
        # worker killed alone (its pulumi dies with it) leaves one, and a new run starts afresh.
        if interrupted or self.stacks.stale_holders(name):
            self._settle(name)
        fd = self.journal.worker_lock(name)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the worker exits: it inherits the descriptor
        log = open(self.journal.log_file(name), "ab")
        self._tell(f"  {name}: up")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "x402db.fleet.worker", str(self.journal.dir), name, str(fd)],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                start_new_session=True,  # a killed orchestrator, or its terminal's Ctrl-C, never reaches it
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        finally:
            log.close()
            os.close(fd)

    def _finished(self, name: str) -> str:
        record = self.journal.target(name)
        result = record.get("result")
        if result not in FINAL:
            # The worker died without a result (killed, or a crash its own handler missed).
            phase = record.get("phase", "start")
            result = "failed"
            self._final(
                name, result, f"the worker ended during {phase} without a result (see {self.journal.log_file(name)})"
            )
        self._tell(
            f"  {name}: {result}{': ' + record.get('reason', '') if result != 'ok' and record.get('reason') else ''}"
        )
        return result

    # --- what a dead run leaves ---------------------------------------------------------------
    def _settle(self, name: str) -> None:
        """Clear what a killed run of this target left, the way the deploy runbook does by hand:
        wait until its migration session has ended, then cancel the stack's lock and drop the
        interrupted create from state. The database is not touched; the next up reads the ledger."""
        self._tell(f"  {name}: clearing what the interrupted run left (stack lock, pending create)")
        self._wait_for_sessions(name)
        # A lock whose process still runs here is a live up (another fleet file's, or one typed by
        # hand): wait for it, and never cancel it, or two ups of one stack would run at once.
        deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
        while (running := self.stacks.running_holders(name)) and time.monotonic() < deadline:
            time.sleep(1)
        if running:
            self._tell(f"  {name}: its stack is locked by a live process ({'; '.join(running)}): not cleared")
            return
        if foreign := self.stacks.foreign_holders(name):
            # Another machine's run may be alive: only its operator can say it is not.
            self._tell(
                f"  {name}: its stack is locked from another host ({'; '.join(foreign)}): not cleared; once that "
                f"run is known dead, `pulumi cancel --stack {name}`"
            )
            return
        holders = self.stacks.lock_holders(name)
        if holders is None or holders:
            self.stacks.cancel(name)
        self.stacks.clear_pending(name)

    def _settle_all(self) -> None:
        for name in self.fleet.targets:
            if self.journal.worker_alive(name):
                self.journal.wait_for_worker(name)
            record = self.journal.target(name)
            if record.get("result") is None and record.get("phase") in ("up", "smoke", "evidence", "after"):
                self._settle(name)

    def _wait_for_sessions(self, name: str) -> None:
        spec = self.fleet.targets[name]
        deadline = time.monotonic() + LEFTOVER_WAIT_SECONDS
        try:
            with db.connect(endpoint.dsn(spec), application_name="x402db-fleet") as conn:
                while time.monotonic() < deadline:
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name LIKE 'x402db-pulumi%' AND pid <> pg_backend_pid()"
                    ).fetchone()
                    if not row or not row[0]:
                        return
                    time.sleep(0.5)
        except Exception:  # unreachable now: the up that follows says so
            return

    # --- records ------------------------------------------------------------------------------
    def _final(self, name: str, result: str, reason: str) -> None:
        record = self.journal.target(name)
        record.update(result=result, reason=reason, finished=now())
        self.journal.write_target(name, record)

    def _skip(self, wave: WaveSpec, names: list[str], reason: str) -> None:
        for name in names:
            record = self.journal.target(name)
            if record.get("result") is None:
                self.journal.write_target(
                    name,
                    {
                        "name": name,
                        "endpoint": endpoint.label(self.fleet.targets[name]),
                        "phases": {},
                        "result": "skipped",
                        "reason": reason,
                    },
                )
        self._wave_status(wave.name, "skipped", reason)

    def report(self) -> dict[str, Any]:
        run = self.journal.run() or {}
        waves = []
        for wave, names in self.fleet.wave_targets():
            targets = []
            for name in names:
                r = self.journal.target(name)
                targets.append(
                    {
                        "name": name,
                        "result": r.get("result") or "skipped",
                        "reason": r.get("reason", ""),
                        "endpoint": r.get("endpoint") or endpoint.label(self.fleet.targets[name]),
                        "server_version": r.get("server_version", ""),
                        "locks": r.get("locks", ""),
                        "phases": r.get("phases", {}),
                        "ledger": r.get("ledger", []),
                        # The target's own time: its phases', as the table's time column adds them.
                        "seconds": round(sum(p.get("seconds") or 0.0 for p in r.get("phases", {}).values()), 1),
                    }
                )
            status = run.get("waves", {}).get(wave.name, {}).get("status", "skipped")
            waves.append({"name": wave.name, "status": status, "targets": targets})
        ok = all(t["result"] == "ok" for w in waves for t in w["targets"])
        return {"result": "ok" if ok else "failed", "release": self.release, "waves": waves}


def rollout(
    fleet: Fleet,
    *,
    resume: bool,
    say: Callable[[str], None],
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    journal = Journal.for_fleet(fleet.path)
    if resume and journal.run() is None:
        raise UsageError("there is no run of this fleet file to resume: start one with `fleet.py up`")
    lock = journal.hold_run_lock()
    try:
        r = Rollout(fleet, journal, release.digest(), say, Stacks(), progress)
        report = r.run(resume)
    finally:
        os.close(lock)
    # The ledger as it is now, after every change: what the report's reader will find. Read at
    # once, so that servers gone down since (each costs a connect timeout) do not add up.
    rows = [t for wave in report["waves"] for t in wave["targets"] if t["result"] != "unreachable"]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(rows)))) as pool:
        ledgers = list(pool.map(lambda t: gates.ledger_now(fleet.targets[t["name"]]), rows))
    for target, ledger in zip(rows, ledgers, strict=True):
        target["ledger"] = ledger or target["ledger"]
    return report
