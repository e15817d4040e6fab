"""The migration resource driven through Pulumi's real dynamic-provider host
(`python -m pulumi.dynamic`, over gRPC), with the serialized __provider that the program itself
produced under mocks, against a real PostgreSQL. This is what `pulumi up/destroy` calls.

Kept beside the real engine (test_pulumi_engine.py): it runs in seconds without Go, and drives
the provider operations one by one, which the CLI only reaches through whole runs."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
from pulumi.runtime import proto

from tests.utils.dynamic_host import Host, program_inputs
from x402db import db
from x402db.iac.sql_migration import _claim_applied, _engine
from x402db.migrate import ledger
from x402db.migrate import owner as owners


def _table(dsn) -> bool:
    with db.connect(dsn) as c:
        return c.execute("SELECT to_regclass('public.user_openrouter_integrations') IS NOT NULL").fetchone()[0]


def test_create_diff_update_read_delete_over_grpc(host, empty_db):
    h = Host(host)
    inputs = program_inputs(empty_db)
    assert sorted(inputs) == ["000", "001", "005"]
    outs, ids = {}, {}
    for version in ("000", "001", "005"):
        checked, failures = h.check(inputs[version])
        assert failures == []
        ids[version], outs[version] = h.create(checked)
        # One id per resource, not per version: a replacement on the same database is another holder.
        assert ids[version].startswith(f"{version}-") and outs[version]["action"] == "applied"
    assert _table(empty_db)
    with db.connect(empty_db) as c:
        assert set(ledger.entries(c)) == {"000", "001", "005"}

    # Identical inputs: no change.
    assert h.diff(ids["005"], outs["005"], inputs["005"]).changes == proto.DiffResponse.DIFF_NONE
    # A steering property (lock_timeout) changes in place, touching nothing.
    steered = {**inputs["005"], "lock_timeout": "2s"}
    assert h.diff(ids["005"], outs["005"], steered).changes == proto.DiffResponse.DIFF_SOME
    assert h.update(ids["005"], outs["005"], steered)["lock_timeout"] == "2s"
    # Read reports the ledger; a drifted ledger shows up as a different checksum.
    assert h.read(ids["005"], outs["005"])[1]["checksum"] == outs["005"]["checksum"]
    with db.connect(empty_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET checksum = repeat('a', 64) WHERE version = '005'")
    assert h.read(ids["005"], outs["005"])[1]["checksum"] == "a" * 64
    with db.connect(empty_db) as c:
        c.execute(
            "UPDATE x402_private.schema_migrations SET checksum = %s WHERE version = '005'", (outs["005"]["checksum"],)
        )

    # Changed SQL of an applied migration is refused.
    from x402db.migrate.files import checksum

    edited_sql = inputs["005"]["up_sql"] + "\n-- edited\n"
    edited = {**inputs["005"], "up_sql": edited_sql, "checksum": checksum(edited_sql)}
    with pytest.raises(grpc.RpcError) as err:
        h.diff(ids["005"], outs["005"], edited)
    assert "immutable" in err.value.details()

    # Delete with data present is refused and changes nothing.
    with db.connect(empty_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('d@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.user_openrouter_integrations (user_id, encrypted_api_key) VALUES (%s, 'x')", (uid,)
        )
    with pytest.raises(grpc.RpcError) as err:
        h.delete(ids["005"], outs["005"])
    assert "down refused" in err.value.details() and "allowDataLoss" in err.value.details()
    assert _table(empty_db)

    # Without data, delete reverts.
    with db.connect(empty_db) as c:
        c.execute("DELETE FROM public.user_openrouter_integrations")
    h.delete(ids["005"], outs["005"])
    assert not _table(empty_db)
    with db.connect(empty_db) as c:
        assert "005" not in ledger.entries(c)
    # Read of a reverted migration reports it gone.
    assert h.read(ids["005"], outs["005"])[0] == ""


def test_check_rejects_a_checksum_that_does_not_match(host, empty_db):
    h = Host(host)
    inputs = program_inputs(empty_db)["005"]
    _, failures = h.check({**inputs, "checksum": "0" * 64})
    assert [f.property for f in failures] == ["checksum"]


def test_create_and_delete_refuse_what_the_plan_refuses_with_its_reasons(host, empty_db):
    """The resource builds the plan first: a create whose precondition fails, or a delete that
    an `always` guard forbids even with allowDataLoss, is refused with the plan's reasons and
    changes nothing."""
    h = Host(host)
    inputs = program_inputs(empty_db)
    with pytest.raises(grpc.RpcError) as err:
        h.create(h.check(inputs["005"])[0])  # 000 and 001 not applied: auth.users is missing
    details = err.value.details()
    # The sentence alone: no traceback, and no exception class in front of it.
    assert details.startswith("SqlMigration 005_add_openrouter_integration create: up refused by its plan"), details
    assert "x402db" not in details and "Refused" not in details and "Traceback" not in details, details
    assert "precondition fails: auth.users is missing" in details
    assert not _table(empty_db)
    created = {v: h.create(h.check(inputs[v])[0]) for v in ("000", "001", "005")}
    ids, outs = {v: c[0] for v, c in created.items()}, {v: c[1] for v, c in created.items()}
    with db.connect(empty_db) as c:
        uid = c.execute("INSERT INTO auth.users (email) VALUES ('d@example.invalid') RETURNING id").fetchone()[0]
        c.execute(
            "INSERT INTO public.x402_resources (user_id, resource_type, name) VALUES (%s, 'openrouter_instant', 'r')",
            (uid,),
        )
    with pytest.raises(grpc.RpcError) as err:
        h.delete(ids["005"], {**outs["005"], "allow_data_loss": True})
    details = err.value.details()
    assert "delete: down refused by its plan" in details and "guard (always): 1 x402_resources row(s)" in details
    assert _table(empty_db)
    with db.connect(empty_db) as c:
        assert "005" in ledger.entries(c)


def test_refresh_reads_a_cut_off_run_and_the_next_up_finishes_or_refuses_it(host, empty_db):
    """A run killed after 005's transaction committed leaves the ledger at steps-pending; one killed
    during its down leaves reverting. `pulumi refresh` (Read) must show it, and `pulumi up` (Diff,
    then Update) must finish the steps, or refuse a half-reverted migration with the way out."""
    h = Host(host)
    inputs = program_inputs(empty_db)
    outs, ids = {}, {}
    for version in ("000", "001", "005"):
        ids[version], outs[version] = h.create(h.check(inputs[version])[0])
    assert outs["005"]["ledger_state"] == "applied"
    with db.connect(empty_db) as c:  # as a kill during CREATE INDEX CONCURRENTLY leaves it
        c.execute("DROP INDEX public.idx_x402_resources_openrouter_model")
        c.execute("UPDATE x402_private.schema_migrations SET state = 'steps-pending' WHERE version = '005'")
    _id, refreshed = h.read(ids["005"], outs["005"])
    assert refreshed["ledger_state"] == "steps-pending"
    assert h.diff(ids["005"], refreshed, inputs["005"]).changes == proto.DiffResponse.DIFF_SOME
    assert h.update(ids["005"], refreshed, inputs["005"])["ledger_state"] == "applied"
    with db.connect(empty_db) as c:
        assert ledger.entries(c)["005"].state == "applied"
        assert c.execute("SELECT to_regclass('public.idx_x402_resources_openrouter_model')").fetchone()[0] is not None
    with db.connect(empty_db) as c:
        c.execute("UPDATE x402_private.schema_migrations SET state = 'reverting' WHERE version = '005'")
    _id, refreshed = h.read(ids["005"], outs["005"])
    assert refreshed["ledger_state"] == "reverting"
    with pytest.raises(grpc.RpcError) as err:
        h.update(ids["005"], refreshed, inputs["005"])
    assert "half-reverted" in err.value.details()


def test_a_delete_reverts_only_a_migration_its_resource_holds(host, empty_db):
    """A stack the previous release deployed has no owner in state, and its ids are the versions.
    Another stack that took the database in since holds its migrations: the old stack's destroy,
    or a moved stack's delete on a database taken over from it, must revert nothing there."""
    h = Host(host)
    inputs = program_inputs(empty_db)

    def stack(name: str, deployment: str, take_over_from: str = "") -> dict:
        owner = {"project": "p", "stack": name, "deployment": deployment, "take_over_from": take_over_from}
        return {v: h.create(h.check({**inputs[v], "owner": owner})[0]) for v in ("000", "001", "005")}

    previous = {v: {k: x for k, x in inputs[v].items() if k not in ("owner", "identity")} for v in inputs}
    old = {v: h.create(h.check(previous[v])[0])[1] for v in ("000", "001", "005")}
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    taken = stack("first", first)
    h.delete("005", old["005"])
    assert _table(empty_db)
    stack("second", second, take_over_from=first)
    h.delete(taken["005"][0], taken["005"][1])  # the first stack moved away: its replace's old half
    assert _table(empty_db)
    with db.connect(empty_db) as c:
        assert set(ledger.entries(c)) == {"000", "001", "005"}


def test_two_stacks_claiming_one_database_at_once_one_owns_it_the_other_is_refused(host, empty_db):
    """Two new stacks' first `up` on a database the previous release deployed (no owner yet): each
    claims the migrations it finds applied. Whoever comes second must meet the first's owner row and
    be refused by name, not fail on the first's uncommitted insert or catalog write."""

    h = Host(host)
    inputs = program_inputs(empty_db)
    for v in ("000", "001", "005"):
        h.create(h.check({k: x for k, x in inputs[v].items() if k not in ("owner", "identity")})[0])

    def claim(stack: str, outcome: list) -> None:
        owner = {"project": "p", "stack": stack, "deployment": str(uuid.uuid4()), "take_over_from": ""}
        engine, migration = _engine({**inputs["000"], "owner": owner}, f"000-{stack}")
        with engine.conn:
            try:
                _claim_applied(engine, migration)
                outcome.append("claimed")
            except Exception as exc:  # what the provider would report
                outcome.append(f"{type(exc).__name__}: {exc}")

    with db.connect(empty_db) as c:  # as a stack destroyed before leaves them: tables, no owner
        c.execute(owners._DDL)
    with db.connect(empty_db) as blocker, blocker.transaction():
        # The first claim stops with its owner row written but not committed: the window.
        blocker.execute("LOCK TABLE x402_private.stack_holds IN EXCLUSIVE MODE")
        first, second = [], []
        a = threading.Thread(target=claim, args=("a", first))
        a.start()
        time.sleep(1)
        b = threading.Thread(target=claim, args=("b", second))
        b.start()
        time.sleep(1)
    a.join(30)
    b.join(30)
    assert first == ["claimed"], first
    assert len(second) == 1 and second[0].startswith("Refused: ") and "Pulumi stack p/a " in second[0], second
    with db.connect(empty_db) as c:
        assert c.execute("SELECT stack FROM x402_private.stack_owner").fetchall() == [("a",)]
