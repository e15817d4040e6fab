"""Which waiting targets may start now: at most `parallel` of the wave at once, and at most
`maxPerHost` on one server (host and port), so that a fleet of tenants on one server never puts
more DDL on it at once than its operator allowed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def startable(
    waiting: list[str],
    running: Iterable[str],
    server_of: dict[str, tuple[str, int]],
    parallel: int,
    max_per_host: int | None,
) -> list[str]:
    """The waiting targets to start now, in the fleet file's order."""
    running = list(running)
    per_server = Counter(server_of[name] for name in running)
    chosen: list[str] = []
    for name in waiting:
        if len(running) + len(chosen) >= parallel:
            break
        server = server_of[name]
        if max_per_host is not None and per_server[server] >= max_per_host:
            continue
        chosen.append(name)
        per_server[server] += 1
    return chosen
