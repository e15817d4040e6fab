"""Where each target stands, read from the databases and the stacks (the journal only for what
nothing else keeps: the last run's result and smoke). Changes nothing: the drift column is a
`preview --refresh`, which reads the database and writes no state."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import endpoint, gates
from .fleetfile import Fleet
from .journal import Journal
from .stacks import Stacks


def target_status(fleet: Fleet, journal: Journal, name: str) -> dict[str, Any]:
    spec = fleet.targets[name]
    record = journal.target(name)
    ledger = gates.ledger_now(spec)
    stacks = Stacks()
    row: dict[str, Any] = {
        "name": name,
        "endpoint": endpoint.label(spec),
        "result": record.get("result") or "not run",
        "reason": record.get("reason", ""),
        "phases": record.get("phases", {}),
        "ledger": ledger if ledger is not None else [],
        "reachable": ledger is not None,
    }
    if not stacks.exists(name):
        row.update(stack="none", agrees=None, deployed_release=None, smoke=None, drift=None, lock=None, locked=False)
        return row
    outputs = stacks.outputs(name)
    applied = sorted(e["version"] for e in ledger or [] if e["state"] == "applied")
    in_state = sorted(outputs.get("migrations") or [])
    evidence = outputs.get("fleetEvidence") if isinstance(outputs.get("fleetEvidence"), dict) else None
    smoke = (record.get("phases", {}).get("smoke") or {}).get("status") or (evidence or {}).get("smoke")
    holders = stacks.lock_holders(name)
    stale = stacks.stale_holders(name)
    if holders:  # a dead run's lock refuses every up until `fleet.py resume` (or `pulumi cancel`) clears it
        holders = [f"{h} (not running: stale)" if h in stale else h for h in holders]
    if ledger is None:
        drift = "unreachable"
    else:
        preview = stacks.preview(name, refresh=True, expect_no_changes=True)
        drift = "none" if preview.ok else f"drift: {preview.summary}"
    row.update(
        stack="exists",
        agrees=None if ledger is None else applied == in_state,
        deployed_release=(evidence or {}).get("release") or journal_release(journal, record),
        smoke=smoke,
        drift=drift,
        lock="unknown (not a file backend)" if holders is None else ("; ".join(holders) or "none"),
        locked=bool(holders),  # a backend whose locks cannot be read is not taken for a locked stack
    )
    return row


def journal_release(journal: Journal, record: dict[str, Any]) -> str | None:
    run = journal.run() or {}
    return run.get("release") if record.get("result") == "ok" else None


def status(fleet: Fleet) -> dict[str, Any]:
    journal = Journal.for_fleet(fleet.path)
    waves = fleet.wave_targets()
    in_waves = [n for _, names in waves for n in names]
    groups = [(w.name, names) for w, names in waves]
    rest = [n for n in fleet.targets if n not in in_waves]
    if rest:
        groups.append(("(in no wave)", rest))
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = dict(
            zip(
                [n for _, names in groups for n in names],
                pool.map(lambda n: target_status(fleet, journal, n), [n for _, names in groups for n in names]),
                strict=True,
            )
        )
    run = journal.run() or {}
    out_waves = [
        {
            "name": name,
            "status": run.get("waves", {}).get(name, {}).get("status", "not run"),
            "targets": [rows[n] for n in names],
        }
        for name, names in groups
    ]
    healthy = all(
        t["reachable"] and t["agrees"] and t["drift"] == "none" and not t["locked"]
        for w in out_waves
        for t in w["targets"]
    )
    return {"result": "ok" if healthy else "failed", "release": run.get("release"), "waves": out_waves}


STATUS_COLUMNS = ("wave", "target", "host/database", "ledger", "agrees", "release", "smoke", "drift", "lock")


def status_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    def show(value: Any) -> str:
        return "-" if value is None else ("yes" if value is True else "no" if value is False else str(value))

    return [
        (
            w["name"],
            t["name"],
            t["endpoint"],
            " ".join(f"{e['version']}:{e['state']}" for e in t["ledger"])
            or ("unreachable" if not t["reachable"] else "-"),
            show(t["agrees"]),
            show(t["deployed_release"]),
            show(t["smoke"]),
            show(t["drift"]),
            show(t["lock"]),
        )
        for w in report["waves"]
        for t in w["targets"]
    ]
