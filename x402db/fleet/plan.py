"""`fleet.py validate` and `fleet.py plan`: what a rollout would do, changing nothing (no
database, no stack, no journal). Plan answers with the rollout's own shape: per wave, per target,
the plan's verdict and locks, and the gates' verdicts, with the result `up` would start from."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import endpoint, gates, release
from .fleetfile import Fleet
from .stacks import Stacks


def validate(fleet: Fleet) -> dict[str, Any]:
    """Every target's config judged by the program's own rules, and every secret source read (and
    dropped): a rollout must not stop at its fifth target for a missing file."""
    targets = []
    for name, spec in fleet.targets.items():
        endpoint.stack_config(spec, with_secrets=True)
        targets.append(
            {
                "name": name,
                "endpoint": endpoint.label(spec),
                "target": spec.kind,
                "labels": dict(spec.labels),
                "secrets": {key: f"{s.kind} {s.ref}" for key, s in spec.secrets.items()},
            }
        )
    waves = [{"name": w.name, "targets": names} for w, names in fleet.wave_targets()]
    return {"result": "ok", "fleet": str(fleet.path), "release": release.digest(), "targets": targets, "waves": waves}


def render_validate(doc: dict[str, Any]) -> list[str]:
    lines = [f"{doc['fleet']}: {len(doc['targets'])} targets, {len(doc['waves'])} waves, release {doc['release']}"]
    for wave in doc["waves"]:
        lines.append(f"  wave {wave['name']}: {', '.join(wave['targets']) or '(no target)'}")
    return lines


def plan(fleet: Fleet) -> dict[str, Any]:
    digest = release.digest()
    names = list(fleet.targets)
    with ThreadPoolExecutor(max_workers=4) as pool:
        plans = dict(zip(names, pool.map(lambda n: gates.plan_target(fleet.targets[n]), names), strict=True))
    stacks = Stacks()
    waves: list[dict[str, Any]] = []
    for wave, members in fleet.wave_targets():
        problem = ""
        if wave.promoted_from:
            source = dict((w.name, t) for w, t in fleet.wave_targets())[wave.promoted_from]
            evidence = {t: stacks.evidence(t) if stacks.exists(t) else None for t in source}
            problem = gates.evidence_problem(digest, wave.promoted_from, evidence) or ""
            # Within one rollout the earlier wave records its evidence first: say so, do not refuse.
            if problem:
                problem = f"promotion needs wave {wave.promoted_from}'s evidence for this release ({problem})"
        ready = {t: plans[t] for t in members if plans[t].verdict in ("ready", "nothing-to-do")}
        refusals = gates.lock_gate(ready, fleet.lock_gate.max_rows)
        targets: list[dict[str, Any]] = []
        for name in members:
            p = plans[name]
            result = "ok" if p.verdict in ("ready", "nothing-to-do") else p.verdict
            reason = p.reason
            if refusals and result == "ok":
                result, reason = "refused", "lock gate: " + "; ".join(refusals)
            targets.append(
                {
                    "name": name,
                    "result": result,
                    "reason": reason,
                    "endpoint": endpoint.label(fleet.targets[name]),
                    "server_version": p.server_version,
                    "locks": gates.locks_summary(p),
                    "phases": {"plan": {"status": p.verdict, "detail": reason or ", ".join(p.pending)}},
                    "ledger": p.ledger,
                    "blocking": p.blocking,
                    **({"promotion": problem} if problem else {}),
                }
            )
        status = "refused" if refusals else ("ok" if all(t["result"] == "ok" for t in targets) else "failed")
        waves.append({"name": wave.name, "status": status, "targets": targets})
    ok = all(t["result"] == "ok" for w in waves for t in w["targets"])
    return {"result": "ok" if ok else "failed", "release": digest, "waves": waves}
