"""The check record shared by the smoke verifier's catalog and behaviour suites.

A check ends in one of four statuses; only `failed` fails smoke:
- passed:  verified;
- failed:  a defect;
- skipped: could not be verified here (the reason says why); never counted as passed;
- warn:    verified, and the database is as the bundle defines it, but a known hazard for a
           client of it was found (the detail names the fix).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PASSED, FAILED, SKIPPED, WARN = "passed", "failed", "skipped", "warn"
STATUSES = (PASSED, FAILED, SKIPPED, WARN)


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown check status {self.status!r}")

    @property
    def passed(self) -> bool:
        """Verified and fine; a skipped or warned check is not `passed`."""
        return self.status == PASSED

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def as_dict(self) -> dict:
        # `passed` is kept for consumers written before statuses existed; `status` is the truth.
        return {"name": self.name, "status": self.status, "passed": self.passed, "detail": self.detail}


@dataclass
class Checklist:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, failure: str = "", success: str = "") -> bool:
        self.checks.append(Check(name, PASSED if ok else FAILED, success if ok else failure))
        return bool(ok)

    def skip(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, SKIPPED, reason))

    def warn(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, WARN, detail))

    def names(self) -> set[str]:
        return {c.name for c in self.checks}
