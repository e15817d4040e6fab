"""The engine's settings and the one rule for timeouts, wherever they are read: the CLI, the
stack config, the Pulumi provider and the engine itself check a duration here, without loading
the engine. A timeout is what PostgreSQL accepts for lock_timeout / statement_timeout, in ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError

# ASCII digits and blanks only: PostgreSQL rejects the other Unicode digits and spaces that \d and \s take.
_INTERVAL = re.compile(r"^(?P<n>[0-9]+)[ \t]*(?P<unit>ms|s|min|h)?$")
_UNIT_MS = {None: 1, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000}
MAX_LOCK_TIMEOUT_MS = 60_000  # writers queue behind our DDL for up to this long; more is an outage
MAX_TIMEOUT_MS = 2_147_483_647  # PostgreSQL's own bound for both settings (INT_MAX milliseconds)


def is_interval(value: str) -> bool:
    """A timeout PostgreSQL accepts for lock_timeout / statement_timeout (unitless = ms)."""
    return interval_ms(value) is not None


def interval_ms(value: str) -> int | None:
    m = _INTERVAL.match(str(value).strip())
    return int(m["n"]) * _UNIT_MS[m["unit"]] if m else None


def timeout_problems(
    *,
    lock_timeout: str | None = None,
    statement_timeout: str | None = None,
    label: Callable[[str], str | None] = lambda name: name,
) -> list[str]:
    """The one rule for the timeouts, wherever they are read (CLI, Pulumi config, the engine):
    lock_timeout above 0 and at most 1 min (0 would switch the protection off: writers would
    queue behind our DDL without limit), statement_timeout above 0 and at most PostgreSQL's
    maximum (INT_MAX ms, about 24 days), so a value the server would refuse never connects."""
    problems = []
    for name, value, limit, bound in (
        ("lock_timeout", lock_timeout, MAX_LOCK_TIMEOUT_MS, " and at most 1min"),
        (
            "statement_timeout",
            statement_timeout,
            MAX_TIMEOUT_MS,
            f" and at most {MAX_TIMEOUT_MS}ms (PostgreSQL's maximum)",
        ),
    ):
        if value is None:
            continue
        ms = interval_ms(value)
        if ms is None or ms <= 0 or ms > limit:
            problems.append(f"{label(name) or name} must look like 500ms, 1s or 30s: a duration above 0{bound}")
    return problems


@dataclass(frozen=True)
class Settings:
    lock_timeout: str = "1s"  # how long writers may queue behind one of our DDL statements
    statement_timeout: str = "60s"  # for the transactional DDL, which only touches the catalog
    step_timeout: str = "0"  # VALIDATE / CREATE INDEX CONCURRENTLY scan the table; no writer waits
    retries: int = 6
    backoff_s: float = 1.0
    lock_wait_s: float = 300.0  # how long to wait for another migration run to finish

    def __post_init__(self) -> None:
        problems = timeout_problems(lock_timeout=self.lock_timeout, statement_timeout=self.statement_timeout)
        if not is_interval(self.step_timeout):
            problems.append("step_timeout must be a duration like 0 (none), 10min or 1h")
        if self.retries < 0:
            problems.append("retries must be 0 or more")
        if problems:
            raise UsageError("; ".join(problems))
