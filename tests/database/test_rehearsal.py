"""The release rehearsal (bench/bench_rehearsal.py), short and small: PostgREST-style traffic as
service_role and as authenticated users runs through up, a refused down, down, up again and a key
rotation on a Supabase-built PostgreSQL 15, and every phase must be clean: no failed request, no
resource or key the traffic wrote missing or unreadable, and each step ending as it should (the
down without --allow-data-loss refused, the others done)."""

from __future__ import annotations

import sys

import pytest

from x402db import ROOT

sys.path.insert(0, str(ROOT / "bench"))  # the rehearsal lives with the benches, which run as scripts

from rehearsal.fixture import Volume  # noqa: E402
from rehearsal.report import as_table  # noqa: E402
from rehearsal.run import Load, rehearse  # noqa: E402

# Supabase runs 15 where the rehearsal was first made; the steps themselves run on both servers
# in the engine's own tests.
pytestmark = pytest.mark.parametrize("server", ["pg15"], indirect=True)

PHASES = ["quiet", "up", "down refused", "down", "up again", "rotation"]


def test_a_release_and_its_revert_under_load_fail_no_request_and_lose_nothing(server):
    phases = rehearse(
        server,
        Volume(resources=2_000, models=12, users=80),
        Load(connections=3, rate=90, seconds=1.5, active_users=24),
    )
    table = as_table(phases, {"short": "test"})
    assert [p.name for p in phases] == PHASES, table
    assert all(p.requests > 0 for p in phases), table
    assert all(p.clean for p in phases), table
    # The accounting looked at something: rows every phase, keys wherever 005's table stood.
    assert all(p.rows_checked > 0 for p in phases[1:]), table
    by_name = {p.name: p for p in phases}
    assert by_name["down refused"].keys_checked > 0 and by_name["rotation"].keys_checked > 0, table
