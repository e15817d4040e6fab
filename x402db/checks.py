"""The check record shared by the smoke verifier's catalog and behaviour suites."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Checklist:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, failure: str = "", success: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), success if ok else failure))
        return bool(ok)

    def as_dicts(self) -> list[dict]:
        return [asdict(c) for c in self.checks]
