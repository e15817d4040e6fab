"""One rehearsal on a given server: build, play, step, account."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from tests.utils.db import drop_database
from x402db.access import MODELS, RESOURCES
from x402db.local.server import LocalServer

from .fixture import Cloner, Volume, build
from .report import Phase
from .steps import Rehearsal
from .traffic import Player, Shared


@dataclass(frozen=True)
class Load:
    connections: int
    rate: float  # requests per second, all connections together
    seconds: float  # the least length of each phase
    active_users: int  # users the traffic acts as; the others' keys are seeded


def rehearse(
    server: LocalServer,
    volume: Volume,
    load: Load,
    progress: Callable[[str, float, float], None] = lambda *a: None,
    say: Callable[[str], None] = lambda line: None,
) -> list[Phase]:
    say(f"building: {volume.resources:,} resources, {volume.models:,} models, {volume.users:,} users")
    dsn = build(server, volume)
    with psycopg.connect(dsn, autocommit=True) as conn:
        resources, models = Cloner.of(conn, RESOURCES), Cloner.of(conn, MODELS)
        users = [str(r[0]) for r in conn.execute("SELECT id FROM auth.users ORDER BY random()")]
        model_ids = [str(r[0]) for r in conn.execute("SELECT id FROM public.ai_models")]
        sample = [str(r[0]) for r in conn.execute("SELECT id FROM public.x402_resources ORDER BY random() LIMIT 1000")]
    active = min(load.active_users, len(users))
    shared = Shared(resources, models, sample, load.connections, load.connections / load.rate)
    player = Player(dsn, shared, users[:active], model_ids)
    rehearsal = Rehearsal(
        dsn,
        player,
        users[active:],
        load.seconds,
        secrets.token_urlsafe(32),
        secrets.token_urlsafe(32),
        progress,
        say,
    )
    player.start()
    try:
        phases = rehearsal.run()
    finally:
        player.stop()
        drop_database(server, dsn)
    # Requests between two windows (while the rehearsal seeds keys) are reported only if one failed.
    between = Phase("between")
    for p in [*phases, between]:
        p.measure(shared.samples)
    return phases + ([between] if between.errors else [])
