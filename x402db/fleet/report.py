"""The rollout's report for a human: one table row per target, one line per result class, and the
next command. `--json` prints the same content (orchestrator.Rollout.report) as one document."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

RESULTS = ("ok", "failed", "refused", "unreachable", "skipped")
COLUMNS = ("wave", "target", "host/database", "pg", "plan", "locks", "up", "smoke", "after", "time", "result")


def _phase(target: dict[str, Any], name: str) -> str:
    phase = target["phases"].get(name)
    return phase["status"] if phase else "-"


def rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for wave in report["waves"]:
        for t in wave["targets"]:
            seconds = sum(p.get("seconds") or 0 for p in t["phases"].values())
            out.append(
                (
                    wave["name"],
                    t["name"],
                    t.get("endpoint", ""),
                    t.get("server_version", "") or "-",
                    _phase(t, "plan"),
                    t.get("locks", "") or "-",
                    _phase(t, "up"),
                    _phase(t, "smoke"),
                    _phase(t, "after"),
                    f"{seconds:.1f}s" if seconds else "-",
                    t["result"],
                )
            )
    return out


def table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in (header, *body)]


def render(report: dict[str, Any], fleet_arg: str) -> str:
    lines = [f"release {report['release']}", *table(COLUMNS, rows(report)), ""]
    by_result: dict[str, list[str]] = defaultdict(list)
    reasons = []
    for wave in report["waves"]:
        for t in wave["targets"]:
            by_result[t["result"]].append(t["name"])
            if t["result"] != "ok" and t.get("reason"):
                reasons.append(f"  {t['name']}: {t['reason']}")
    for result in RESULTS:
        if by_result[result]:
            lines.append(f"{result}: {len(by_result[result])} ({', '.join(by_result[result])})")
    if reasons:
        lines += ["why:", *reasons]
    lines.append(next_command(report, fleet_arg))
    return "\n".join(lines)


def next_command(report: dict[str, Any], fleet_arg: str) -> str:
    where = f" --fleet {fleet_arg}" if fleet_arg != "fleet.yaml" else ""
    if report["result"] == "ok":
        return f"next: scripts/fleet.py status{where} shows each target's ledger, drift and lock"
    return (
        f"next: fix what the reasons say, then scripts/fleet.py up{where} (a target already deployed is a "
        "no-op for it); scripts/fleet.py status" + where + " shows where each target stands"
    )
