"""Pulumi state keeps loading after the code moves. The state of every dynamic resource holds
its provider serialized by dill *by reference* (module path and class name), and Pulumi's
dynamic-provider host unpickles it on each call. State written before x402db/ had subpackages
names `x402db.pulumi_migration` and `x402db.pulumi_preflight`; state written since names
`x402db.iac.sql_migration` and `x402db.iac.preflight`. Both must load and behave."""

from __future__ import annotations

import base64

from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import proto

from tests.utils.dynamic_host import Host
from x402db.iac.preflight import PreflightProvider
from x402db.iac.sql_migration import MigrationProvider
from x402db.migrate.files import checksum

# `__provider` exactly as `pulumi up` stored it at 751bb62, before the move.
OLD_MIGRATION = "gASVNAAAAAAAAACMF3g0MDJkYi5wdWx1bWlfbWlncmF0aW9ulIwRTWlncmF0aW9uUHJvdmlkZXKUk5QpgZQu"
OLD_PREFLIGHT = "gASVNAAAAAAAAACMF3g0MDJkYi5wdWx1bWlfcHJlZmxpZ2h0lIwRUHJlZmxpZ2h0UHJvdmlkZXKUk5QpgZQu"
UP = "CREATE TABLE public.t (id int);"


def _migration(provider: str, **override) -> dict:
    return {
        "__provider": provider,
        "dsn": "postgresql://unused",
        "version": "900",
        "name": "t",
        "checksum": checksum(UP),
        "up_sql": UP,
        "down_sql": "DROP TABLE public.t;",
        "target": "postgres",
        **override,
    }


def _loads_and_behaves(stub, migration_blob: str, preflight_blob: str) -> None:
    h = Host(stub)
    # check: the provider's own validation runs, so the class it unpickled is ours.
    assert h.check(_migration(migration_blob))[1] == []
    _, failures = h.check(_migration(migration_blob, checksum="0" * 64))
    assert [f.property for f in failures] == ["checksum"]
    # diff: an edited applied migration is refused with our sentence.
    olds = _migration(migration_blob, checksum="a" * 64)
    try:
        h.diff("900", olds, _migration(migration_blob))
    except Exception as exc:  # grpc.RpcError
        assert "immutable" in exc.details()
    else:
        raise AssertionError("the provider did not refuse an edited applied migration")
    props = {"__provider": preflight_blob, "dsn": "postgresql://unused", "database": "postgres"}
    assert h.diff("preflight", props, props).changes == proto.DiffResponse.DIFF_NONE


def test_state_written_before_the_move_loads(host):  # noqa: F811
    assert b"x402db.pulumi_migration" in base64.b64decode(OLD_MIGRATION)
    assert b"x402db.pulumi_preflight" in base64.b64decode(OLD_PREFLIGHT)
    _loads_and_behaves(host, OLD_MIGRATION, OLD_PREFLIGHT)


def test_state_written_since_the_move_loads(host):  # noqa: F811
    migration, preflight = serialize_provider(MigrationProvider()), serialize_provider(PreflightProvider())
    assert b"x402db.iac.sql_migration" in base64.b64decode(migration)
    assert b"x402db.iac.preflight" in base64.b64decode(preflight)
    _loads_and_behaves(host, migration, preflight)
