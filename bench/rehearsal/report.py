"""Per-phase figures, as a table for a person or one JSON document, each latency beside the quiet
window of the same run."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .traffic import Sample

QUIET = "quiet"


@dataclass
class Phase:
    name: str
    step: str = ""  # the operator's command, or "" for traffic alone
    outcome: str = ""  # e.g. "exit 0" or "refused (exit 1)"
    as_expected: bool = True
    rows_checked: int = 0
    rows_lost: int = 0
    keys_checked: int = 0
    keys_lost: int = 0
    note: str = ""
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    slowest: str = ""  # the kind of request that took max_ms
    failed: dict[str, int] = field(default_factory=dict)  # "SQLSTATE kind of request" -> count

    def measure(self, samples: list[Sample]) -> None:
        mine = sorted((s for s in samples if s.phase == self.name), key=lambda s: s.seconds)
        self.requests = len(mine)
        self.errors = dict(Counter(s.error for s in mine if s.error))
        self.failed = dict(Counter(f"{s.error} {s.op}" for s in mine if s.error))
        if mine:
            self.p50_ms = _pick(mine, 0.50) * 1000
            self.p99_ms = _pick(mine, 0.99) * 1000
            self.max_ms = mine[-1].seconds * 1000
            self.slowest = mine[-1].op

    @property
    def clean(self) -> bool:
        return self.as_expected and not self.errors and not self.rows_lost and not self.keys_lost


def _pick(ordered: list[Sample], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))].seconds


def _ratio(value: float, base: float) -> float:
    return value / base if base and not math.isnan(base) and not math.isnan(value) else math.nan


def as_json(phases: list[Phase], context: dict[str, Any]) -> str:
    quiet = next(p for p in phases if p.name == QUIET)
    doc = {
        **context,
        "ok": all(p.clean for p in phases),
        "phases": [
            {
                **{k: v for k, v in vars(p).items() if not isinstance(v, float)},
                **{k: _num(getattr(p, k)) for k in ("p50_ms", "p99_ms", "max_ms")},
                "vs_quiet": {k: _num(_ratio(getattr(p, k), getattr(quiet, k))) for k in ("p50_ms", "p99_ms", "max_ms")},
            }
            for p in phases
        ],
    }
    return json.dumps(doc, indent=2)


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 2)


def as_table(phases: list[Phase], context: dict[str, Any]) -> str:
    quiet = next(p for p in phases if p.name == QUIET)
    lines = [
        ", ".join(f"{k} {v}" for k, v in context.items()),
        f"{'phase':<12} {'step':<38} {'outcome':<18} {'requests':>8} {'errors':<14} "
        f"{'p50 ms (x quiet)':>17} {'p99 ms (x quiet)':>17} {'max ms (x quiet)':>17} {'rows lost':>10} {'keys lost':>10}",
    ]
    for p in phases:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(p.errors.items())) or "0"
        cells = [
            f"{getattr(p, k):>7.1f} ({_ratio(getattr(p, k), getattr(quiet, k)):>5.2f}x)"
            for k in ("p50_ms", "p99_ms", "max_ms")
        ]
        lines.append(
            f"{p.name:<12} {p.step:<38} {p.outcome:<18} {p.requests:>8} {errors:<14} "
            f"{cells[0]:>17} {cells[1]:>17} {cells[2]:>17} "
            f"{f'{p.rows_lost}/{p.rows_checked}':>10} {f'{p.keys_lost}/{p.keys_checked}':>10}"
        )
        detail = [p.note] if p.note else []
        if p.failed:
            detail.append("failed: " + ", ".join(f"{k} x{v}" for k, v in sorted(p.failed.items())))
        if p.slowest:
            detail.append(f"slowest: {p.slowest}")
        lines.extend(f"{'':<12} {d}" for d in detail)
    verdict = "every phase clean" if all(p.clean for p in phases) else "NOT CLEAN: see errors, losses or outcomes above"
    lines.append(f"rows lost and keys lost: lost/checked. {verdict}")
    return "\n".join(lines)
