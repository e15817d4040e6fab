"""The Pulumi program under Pulumi's own mocks, for both targets: resources, inputs, order,
secrets, protect and exports, exactly as the engine would receive them.

Kept beside the real engine: it needs no Go and pins the exact registrations in seconds."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from itertools import pairwise

import dill
import pytest

from tests.utils.pulumi_mocks import by_name, plain, run_program, short
from x402db import ROOT
from x402db.iac import config as stack_config
from x402db.iac.sql_migration import MigrationProvider

PASSWORD = "s3cret-db-password"
BACKEND_PASSWORD = "s3cret-backend-password"
SUPABASE = {"target": "supabase", "host": "db.abcd.supabase.co", "password": PASSWORD}
POSTGRES = {
    "target": "postgres",
    "host": "127.0.0.1",
    "port": "54329",
    "database": "x402",
    "sslmode": "disable",
    "password": PASSWORD,
    "backendRole": "x402_backend",
    "backendRolePassword": BACKEND_PASSWORD,
    "fleetEvidence": '{"release": "0123456789abcdef", "smoke": "ok", "at": "2026-12-07T19:00:00Z"}',
}
GRANTS = [
    "openrouter-usage-public-authenticated",
    "openrouter-usage-public-service_role",
    "openrouter-grant-anon-user_openrouter_integrations",
    "openrouter-grant-authenticated-user_openrouter_integrations",
    "openrouter-grant-service_role-user_openrouter_integrations",
]


@pytest.fixture(scope="module")
def supabase():
    return run_program(SUPABASE)


@pytest.fixture(scope="module")
def postgres():
    return run_program(POSTGRES)


def test_exact_resources_supabase(supabase):
    assert [(r["type"], r["name"]) for r in supabase["resources"]] == [
        ("pulumi:providers:postgresql", "x402-postgres"),
        ("x402:database:OpenRouterIntegration", "openrouter"),
        ("pulumi-python:dynamic/x402:Preflight", "openrouter-preflight"),
        ("pulumi-python:dynamic/x402:SqlMigration", "openrouter-migration-005"),
        *[("postgresql:index/grant:Grant", g) for g in GRANTS],
        ("pulumi-python:dynamic/x402:DestroyGuard", "openrouter-destroy-guard"),
    ]


def test_exact_resources_postgres(postgres):
    assert [(r["type"], r["name"]) for r in postgres["resources"]] == [
        ("pulumi:providers:postgresql", "x402-postgres"),
        ("x402:database:OpenRouterIntegration", "openrouter"),
        ("pulumi-python:dynamic/x402:Preflight", "openrouter-preflight"),
        ("postgresql:index/role:Role", "openrouter-backend-role"),
        ("pulumi-python:dynamic/x402:SqlMigration", "openrouter-migration-000"),
        ("pulumi-python:dynamic/x402:SqlMigration", "openrouter-migration-001"),
        ("pulumi-python:dynamic/x402:SqlMigration", "openrouter-migration-005"),
        *[("postgresql:index/grant:Grant", g) for g in GRANTS],
        ("pulumi-python:dynamic/x402:DestroyGuard", "openrouter-destroy-guard"),
    ]


# How an unknown value reaches the engine (pulumi.runtime.rpc.UNKNOWN).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def test_inputs(supabase, postgres):
    prov = by_name(supabase)["x402-postgres"]["inputs"]
    assert plain(prov) == {
        "host": "db.abcd.supabase.co",
        "port": "5432",
        "database": "postgres",
        "username": "postgres",
        "password": "<redacted>",
        "sslmode": "require",
        "superuser": "false",
        "connectTimeout": "15",
    }
    res = by_name(postgres)
    # The membership is the Role's own `roles`: a separate GrantRole would be revoked by the
    # Role's next update (provider_sql.role_update; tests/database/test_provider_sql.py shows it).
    assert plain(res["openrouter-backend-role"]["inputs"]) == {
        "name": "x402_backend",
        "login": True,
        "inherit": True,
        "roles": ["service_role"],
        "password": "<redacted>",
    }
    assert plain(res["openrouter-preflight"]["inputs"])["backend_role"] == "x402_backend"
    assert "<secret>" in res["openrouter-preflight"]["inputs"]["dsn"]
    grants = {n: res[n]["inputs"] for n in GRANTS}
    assert grants["openrouter-grant-anon-user_openrouter_integrations"] == {
        "database": "x402",
        "role": "anon",
        "schema": "public",
        "objectType": "table",
        "objects": ["user_openrouter_integrations"],
        "privileges": [],
    }
    assert grants["openrouter-grant-authenticated-user_openrouter_integrations"]["privileges"] == [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
    ]
    # ALL, as the server spells it (MAINTAIN on 17+): read from the server when the program runs,
    # so a preview with no server to ask (this one) leaves it unknown, never a guessed list.
    assert grants["openrouter-grant-service_role-user_openrouter_integrations"]["privileges"] == UNKNOWN
    assert grants["openrouter-usage-public-authenticated"] == {
        "database": "x402",
        "role": "authenticated",
        "schema": "public",
        "objectType": "schema",
        "privileges": ["USAGE"],
    }
    mig = plain(res["openrouter-migration-005"]["inputs"])
    assert (
        mig["version"] == "005"
        and mig["target"] == "postgres"
        and mig["allow_data_loss"] is False
        and mig["lock_timeout"] == "1s"
    )
    assert "CREATE TABLE IF NOT EXISTS public.user_openrouter_integrations" in mig["up_sql"]
    assert "DROP TABLE IF EXISTS public.user_openrouter_integrations" in mig["down_sql"]


def test_order_preflight_then_roles_then_migrations_then_grants(postgres, supabase):
    res = by_name(postgres)
    assert short(res["openrouter-preflight"]["dependencies"]) == []
    assert short(res["openrouter-backend-role"]["dependencies"]) == ["openrouter-preflight"]
    # Every migration also reads the deployment id the preflight gives the stack.
    assert sorted(short(res["openrouter-migration-000"]["dependencies"])) == [
        "openrouter-backend-role",
        "openrouter-preflight",
    ]
    assert sorted(short(res["openrouter-migration-001"]["dependencies"])) == [
        "openrouter-migration-000",
        "openrouter-preflight",
    ]
    assert sorted(short(res["openrouter-migration-005"]["dependencies"])) == [
        "openrouter-migration-001",
        "openrouter-preflight",
    ]
    assert short(by_name(supabase)["openrouter-migration-005"]["dependencies"]) == ["openrouter-preflight"]
    chain = ["openrouter-migration-005", *GRANTS]
    for before, after in pairwise(chain):  # one at a time: each grant waits for the previous one
        assert short(res[after]["dependencies"]) == [before]
    assert short(by_name(supabase)[GRANTS[0]]["dependencies"]) == ["openrouter-migration-005"]
    for r in postgres["resources"][2:]:
        assert r["urn_parent"].endswith("::openrouter"), r["name"]


def test_secrets_stay_secret(postgres, supabase):
    assert postgres["is_secret"] == {"dsn": True, "password": True, "backendRolePassword": True}
    res = by_name(postgres)
    for v in ("000", "001", "005"):
        r = res[f"openrouter-migration-{v}"]
        assert "<secret>" in r["inputs"]["dsn"] and "dsn" in r["additional_secret_outputs"]
        assert "<secret>" in r["inputs"]["__provider"]
    assert "<secret>" in res["x402-postgres"]["inputs"]["password"]
    assert "password" in res["openrouter-backend-role"]["additional_secret_outputs"]
    for report in (postgres, supabase):
        visible = json.dumps([plain(r["inputs"]) for r in report["resources"]]) + json.dumps(report["exports"])
        assert PASSWORD not in visible and BACKEND_PASSWORD not in visible


def test_protect_default_and_override(supabase):
    assert by_name(supabase)["openrouter-migration-005"]["protect"] is True
    off = run_program({**SUPABASE, "protect": "false"})
    assert by_name(off)["openrouter-migration-005"]["protect"] is False
    # Schema USAGE is shared by the whole API: destroy must never revoke it.
    assert by_name(supabase)[GRANTS[0]]["retain_on_delete"] is True
    # Table grants too: the down drops the table, and a refused destroy must have revoked nothing.
    assert all(by_name(supabase)[g]["retain_on_delete"] is True for g in GRANTS)


def test_exports(supabase, postgres):
    assert supabase["exports"] == {
        "migrations": {"value": ["005"], "secret": False},
        "roles": {"value": ["anon", "authenticated", "authenticator", "service_role"], "secret": False},
        "host": {"value": "db.abcd.supabase.co", "secret": False},
        "port": {"value": 5432, "secret": False},
        "database": {"value": "postgres", "secret": False},
    }
    assert postgres["exports"]["migrations"]["value"] == ["000", "001", "005"]
    assert postgres["exports"]["roles"]["value"][-1] == "x402_backend"
    # The fleet's evidence, as the object it recorded; a stack without any exports none (above).
    assert postgres["exports"]["fleetEvidence"] == {
        "value": {"release": "0123456789abcdef", "smoke": "ok", "at": "2026-12-07T19:00:00Z"},
        "secret": False,
    }


def test_bad_config_is_one_clear_error_per_value():
    with pytest.raises(RuntimeError) as err:
        run_program({"target": "mysql", "host": "h", "port": "6543x", "lockTimeout": "soon", "backendRole": "anon"})
    # The harness surfaces the program's exception; each bad value is named.
    msg = str(err.value)
    for words in (
        "invalid stack config",
        "target must be",
        "port must be",
        "lockTimeout must",
        "platform role 'anon'",
        "backendRolePassword is required",
    ):
        assert words in msg


@pytest.mark.parametrize(
    "config, words",
    [
        ({**SUPABASE, "password": ""}, "password is empty: set it with `pulumi config set --secret password`"),
        ({**SUPABASE, "password": "  \n"}, "password is empty"),
        ({**POSTGRES, "backendRolePassword": ""}, "backendRolePassword is empty"),
        (
            {**POSTGRES, "__plaintext__": ["backendRolePassword"]},
            "backendRolePassword is stored in plaintext in the stack file: `pulumi config rm backendRolePassword`",
        ),
        ({**SUPABASE, "__plaintext__": ["password"]}, "password is stored in plaintext"),
    ],
)
def test_an_empty_or_plaintext_password_is_refused_naming_its_key(config, words):
    """Under the SDK's own config runtime, which knows the keys set with --secret: an empty secret
    would otherwise surface at connect time as libpq's `no password supplied`."""
    with pytest.raises(RuntimeError) as err:
        run_program(config)
    msg = str(err.value)
    assert f"invalid stack config: {words}" in msg, msg
    assert PASSWORD not in msg and BACKEND_PASSWORD not in msg


class FakeConfig:
    def __init__(self, values):
        self.values = values

    def get(self, key):
        return self.values.get(key)

    def get_secret(self, key):
        return self.values.get(key)


@pytest.mark.parametrize(
    "values, words",
    [
        ({"target": "mysql", "host": "h"}, "target must be one of supabase, postgres"),
        ({}, "host is required"),
        ({"host": "h", "port": "70000"}, "port must be an integer"),
        ({"host": "h", "port": "6543"}, "transaction pooler"),
        ({"host": "h", "sslmode": "on"}, "sslmode must be one of"),
        ({"host": "h", "superuser": "true"}, "superuser must be false on Supabase"),
        ({"host": "h", "superuser": "yes"}, "superuser must be true or false"),
        ({"host": "h", "protect": "maybe"}, "protect must be true or false"),
        ({"host": "h", "lockTimeout": "5 seconds"}, "lockTimeout must look like"),
        (
            {"host": "h", "backendRole": "Bad-Name", "backendRolePassword": "x"},
            "backendRole must be a lowercase identifier",
        ),
        ({"host": "h", "backendRole": "service_role", "backendRolePassword": "x"}, "must not be the platform role"),
        ({"host": "h", "backendRole": "be"}, "backendRolePassword is required"),
        ({"host": "h", "fleetEvidence": "{not json"}, "fleetEvidence must be the JSON object scripts/fleet.py writes"),
        ({"host": "h", "fleetEvidence": "[1]"}, "fleetEvidence must be the JSON object"),
    ],
)
def test_config_validation(values, words):
    with pytest.raises(stack_config.ConfigError, match=words):
        stack_config.load(FakeConfig(values))


def test_config_collects_every_error_at_once():
    with pytest.raises(stack_config.ConfigError) as err:
        stack_config.load(FakeConfig({"target": "x", "port": "0", "sslmode": "no"}))
    assert str(err.value).count("\n  - ") == 4  # target, host, port, sslmode


def test_config_defaults():
    cfg = stack_config.load(FakeConfig({"host": "h"}))
    assert (cfg.target, cfg.port, cfg.sslmode, cfg.superuser, cfg.protect, cfg.allow_data_loss, cfg.lock_timeout) == (
        "supabase",
        5432,
        "require",
        False,
        True,
        False,
        "1s",
    )


def test_provider_pickles_cleanly(supabase):
    blob = base64.b64decode(by_name(supabase)["openrouter-migration-005"]["inputs"]["__provider"]["<secret>"])
    assert PASSWORD.encode() not in blob and b"psycopg" not in blob and b"Connection" not in blob
    assert len(blob) < 400  # a class reference and an empty state, nothing captured
    assert vars(MigrationProvider()) == {}
    code = (
        "import base64,dill,sys; p = dill.loads(base64.b64decode(sys.stdin.read())); "
        "print(type(p).__module__, type(p).__name__, vars(p))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=base64.b64encode(blob).decode(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "x402db.iac.sql_migration MigrationProvider {}"
    assert dill.loads(dill.dumps(MigrationProvider(), recurse=True)).__class__ is MigrationProvider


def test_optional_secrets_are_documented_and_not_declared():
    """Our rule, not the engine's: a secret the program reads but Pulumi.yaml must not declare
    (a declared key without a default is required by every stack) is documented instead."""
    import yaml

    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    reference, runbook = (
        (ROOT / "docs/reference/pulumi-config.md").read_text(),
        (ROOT / "docs/runbooks/deploy.md").read_text(),
    )
    for key in stack_config.OPTIONAL_SECRETS:
        assert key not in declared
        assert f"`{key}`" in reference and key in runbook
    for key, decl in declared.items():
        if isinstance(decl, dict) and decl.get("secret"):
            assert decl.get("default") is None, f"{key}: a default is merged in as plaintext"
    # The reference's table is Pulumi.yaml's declarations, rendered: one source, no second copy to drift.
    table = config_reference_table(declared)
    assert table in reference, (
        "docs/reference/pulumi-config.md's table is not Pulumi.yaml's; replace it with:\n" + table
    )


def config_reference_table(declared: dict) -> str:
    def default(decl: dict) -> str:
        if "default" not in decl:
            return "(none: required)"
        value = decl["default"]
        return f"`{str(value).lower() if isinstance(value, bool) else value if value != '' else chr(34) * 2}`"

    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, decl in declared.items():
        kind = decl["type"] + (", secret" if decl.get("secret") else "")
        rows.append(
            f"| `{key}` | {kind} | {default(decl)} | {' '.join(decl['description'].split()).replace('<', '&lt;')} |"
        )
    return "\n".join(rows) + "\n"
