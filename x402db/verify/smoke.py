"""The post-deploy verifier: catalog checks (read-only), then behaviour checks (rolled back)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree import ElementTree as ET

import psycopg

from .. import db
from ..keys.crypto import Keyring
from ..migrate import files as migrations
from . import behaviour, catalog, scripts
from .checks import FAILED, SKIPPED, STATUSES, WARN, Check, Checklist
from .expected import checks as expected_checks
from .expected.derive import Expectation


@dataclass
class SmokeResult:
    checks: list[Check]
    duration_ms: int

    @property
    def passed(self) -> bool:
        """No check failed (skipped and warn do not fail smoke, but are reported)."""
        return bool(self.checks) and not any(c.failed for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "counts": self.counts(),
            "checks": [c.as_dict() for c in self.checks],
            "duration_ms": self.duration_ms,
        }

    def junit(self) -> bytes:
        """Failed checks are <failure>; skipped ones <skipped message=reason>; a warn is also a
        <skipped>, its message prefixed "warn: ", so that every CI dashboard shows it."""
        counts = self.counts()
        suite = ET.Element(
            "testsuite",
            name="x402db.smoke",
            tests=str(len(self.checks)),
            failures=str(counts[FAILED]),
            skipped=str(counts[SKIPPED] + counts[WARN]),
            time=f"{self.duration_ms / 1000:.3f}",
        )
        for c in self.checks:
            case = ET.SubElement(suite, "testcase", classname="x402db.smoke", name=c.name)
            if c.status == FAILED:
                ET.SubElement(case, "failure", message=c.detail).text = c.detail
            elif c.status == SKIPPED:
                ET.SubElement(case, "skipped", message=c.detail)
            elif c.status == WARN:
                ET.SubElement(case, "skipped", message=f"warn: {c.detail}")
        return ET.tostring(suite, encoding="utf-8", xml_declaration=True)

    def summary(self) -> str:
        n = self.counts()
        extra = "".join(f", {n[s]} {s}" for s in (FAILED, SKIPPED, WARN) if n[s])
        return f"smoke: {n['passed']}/{len(self.checks)} checks passed{extra} in {self.duration_ms} ms"


def run_checks(
    dsn: str,
    read_only: bool = False,
    keyring: Keyring | None = None,
    expectation: Expectation | Callable[[], Expectation] | None = None,
) -> SmokeResult:
    """Catalog checks, then each applied migration judged against `expectation` (what its own SQL
    makes, derived by the caller), then, unless read_only, the rolled-back behaviour checks.
    Given as a callable, the expectation is derived only once the database answered: deriving may
    start a scratch server, which an unreachable DSN must not cost."""
    started = time.monotonic()
    c = Checklist()
    with db.connect(dsn, autocommit=True, application_name="x402db-smoke") as conn:
        if callable(expectation):
            expectation = expectation()
        # Never wait behind a production lock: fail the check instead.
        conn.execute("SET lock_timeout = '2s'; SET statement_timeout = '10s'")
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION READ ONLY")
            since = len(c.checks)
            catalog.run(conn, c)
            if expectation is not None:
                expected_checks.defer_hand_written(c, since, expected_checks.later_owners(conn, expectation))
                expected_checks.run(conn, c, expectation)
        if not read_only and c.checks and c.checks[0].passed:
            try:
                behaviour.run(conn, c, keyring)
            except psycopg.Error as exc:
                c.add(
                    "behaviour.completed",
                    False,
                    f"behaviour checks stopped: {exc.diag.message_primary or type(exc).__name__}",
                )
            # Each applied migration's own verify file; 005's checks stay in behaviour.py, since
            # they need the backend's keyring and the application tables' discovered shapes.
            scripts.run(conn, c, migrations.load())
    return SmokeResult(c.checks, int((time.monotonic() - started) * 1000))
