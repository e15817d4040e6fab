"""OpenRouterIntegration: the whole bundle as one Pulumi component.

Order, as destroy needs it reversed: the preflight (which tries the provider's statements in a
rolled-back transaction at preview time, see preflight.py), the backend role (a member of
service_role through its own `roles`), then the migrations (each after the one before), then the
grants (one at a time, after the migration that creates their table), so destroy revokes before
down drops the table, and last the destroy guard, so destroy's data-loss refusal comes before
any revoke (destroy_guard.py). At preview the program prints the plan's one-line summary. The platform roles are not Pulumi resources: on target postgres the compat
migration owns them (it also creates auth.* which depends on them), and on Supabase the platform
does. The provider resources' arguments come from declared.py; the statements they make the
provider run (provider_sql.py) are what the preflight and the tests run for real.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_postgresql as postgresql

from ..errors import BundleError
from ..migrate import files as migrations
from ..migrate.target import API_ROLES
from . import declared
from .config import StackConfig, conninfo
from .destroy_guard import DestroyGuard
from .preflight import Preflight
from .preview import log_plan_summary
from .provider_sql import GrantArgs
from .sql_migration import SqlMigration

PLATFORM_ROLES = (*API_ROLES, "authenticator")


@dataclass
class OpenRouterIntegrationArgs:
    config: StackConfig
    provider: postgresql.Provider


def dsn_output(cfg: StackConfig) -> pulumi.Output[str]:
    """The engine's DSN, always a secret, since it may carry the password."""
    return pulumi.Output.secret(pulumi.Output.from_input(cfg.password).apply(lambda pw: conninfo(cfg, pw)))


def identity(cfg: StackConfig) -> str:
    """Where a migration resource lives: changing it deploys anew there (a replace)."""
    return f"{cfg.host}:{cfg.port}/{cfg.database}"


def build_provider(name: str, cfg: StackConfig) -> postgresql.Provider:
    return postgresql.Provider(
        name,
        host=cfg.host,
        port=cfg.port,
        database=cfg.database,
        username=cfg.username,
        password=cfg.password,
        sslmode=cfg.sslmode,
        superuser=cfg.superuser,
        connect_timeout=15,
    )


def _done(value: object) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
    future.set_result(value)
    return future


def _spelled_out(g: GrantArgs, every: tuple[str, ...]) -> list[str]:
    return list(declared.spelled_out(g, every).privileges)


def _server_table_privileges(dsn: pulumi.Output[str], preflight: Preflight) -> pulumi.Output[tuple[str, ...]]:
    """What ALL means on the stack's server, read when the program runs (preview included).
    Unreachable, the preflight's check says so in one sentence and stops the run; waiting for the
    preflight keeps that the only message. Should it pass and the server go away just after, the
    run stops here, with the same kind of sentence."""

    def read(value: str) -> tuple[str, ...] | pulumi.Output[tuple[str, ...]]:
        try:
            return declared.server_table_privileges(value)
        except BundleError as exc:
            if pulumi.runtime.is_dry_run():
                # A preview shows them as unknown, as any value it cannot compute.
                return pulumi.Output(set(), _done(()), _done(False))
            message = f"the table privileges of the server are unknown, so nothing was changed: {exc}"

            def stop(_id: str) -> tuple[str, ...]:
                raise pulumi.RunError(message)

            return preflight.id.apply(stop)

    # Read through the secret DSN, but no secret itself: a secret list would hide the diff.
    return pulumi.Output.unsecret(dsn.apply(read))


class OpenRouterIntegration(pulumi.ComponentResource):
    def __init__(self, name: str, args: OpenRouterIntegrationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("x402:database:OpenRouterIntegration", name, None, opts)
        cfg = args.config
        pg = pulumi.ResourceOptions(parent=self, provider=args.provider)
        dsn = dsn_output(cfg)

        stack = {"project": pulumi.get_project(), "stack": pulumi.get_stack(), "take_over_from": cfg.take_over_from}
        self.preflight = Preflight(
            f"{name}-preflight",
            {
                "dsn": dsn,
                "database": cfg.database,
                "backend_role": cfg.backend_role or "",
                "target": cfg.target,
                "owner": stack,
            },
            pulumi.ResourceOptions(parent=self),
        )
        owner = self.preflight.deployment.apply(lambda deployment: {**stack, "deployment": deployment})
        previous: list[pulumi.Resource] = [self.preflight]

        self.backend_role = None
        if cfg.backend_role:
            role = declared.backend_role(cfg.backend_role)
            self.backend_role = postgresql.Role(
                f"{name}-backend-role",
                name=role.name,
                login=role.login,
                inherit=role.inherit,
                roles=list(role.roles),
                password=pulumi.Output.secret(cfg.backend_role_password),
                opts=pulumi.ResourceOptions.merge(
                    pg, pulumi.ResourceOptions(depends_on=previous, additional_secret_outputs=["password"])
                ),
            )
            previous = [self.backend_role]

        self.migrations: list[SqlMigration] = []
        for m in migrations.load():
            if not m.applies_to(cfg.target):
                continue
            resource = SqlMigration(
                f"{name}-migration-{m.version}",
                {
                    "dsn": dsn,
                    "version": m.version,
                    "name": m.name,
                    "checksum": m.checksum,
                    "up_sql": m.up_text,
                    "down_sql": m.down_text,
                    "target": cfg.target,
                    "allow_data_loss": cfg.allow_data_loss,
                    "lock_timeout": cfg.lock_timeout,
                    "identity": identity(cfg),
                    "owner": owner,
                },
                pulumi.ResourceOptions(parent=self, protect=cfg.protect, depends_on=previous),
            )
            self.migrations.append(resource)
            previous = [resource]

        table_privileges = _server_table_privileges(dsn, self.preflight)
        self.grants: list[pulumi.Resource] = []
        for g in declared.grants(cfg.database):
            privileges: pulumi.Input[list[str]] = list(g.privileges)
            if declared.needs_server(g):
                privileges = table_privileges.apply(functools.partial(_spelled_out, g))
            label = f"usage-{g.schema}-{g.role}" if g.object_type == "schema" else f"grant-{g.role}-{g.objects[0]}"
            self.grants.append(
                postgresql.Grant(
                    f"{name}-{label}",
                    database=g.database,
                    role=g.role,
                    schema=g.schema,
                    object_type=g.object_type,
                    privileges=privileges,
                    objects=list(g.objects) if g.objects else None,
                    opts=pulumi.ResourceOptions.merge(
                        pg, pulumi.ResourceOptions(depends_on=previous, retain_on_delete=g.retain_on_delete)
                    ),
                )
            )
            previous = [self.grants[-1]]

        # Last created, first destroyed: destroy's data-loss refusal comes before any revoke.
        self.destroy_guard = DestroyGuard(
            f"{name}-destroy-guard",
            {
                "dsn": dsn,
                "target": cfg.target,
                "allow_data_loss": cfg.allow_data_loss,
                "owner": owner,
                "migrations": [
                    {"version": m.version, "name": m.name, "up_sql": m.up_text, "down_sql": m.down_text}
                    for m in migrations.load()
                    if m.applies_to(cfg.target)
                ],
            },
            pulumi.ResourceOptions(parent=self, depends_on=previous),
        )

        if pulumi.runtime.is_dry_run():
            dsn.apply(lambda value: log_plan_summary(value, cfg.target, self))

        self.migration_versions = pulumi.Output.all(*[m.version for m in self.migrations])
        self.roles = sorted(PLATFORM_ROLES) + ([cfg.backend_role] if cfg.backend_role else [])
        self.register_outputs({"migrations": self.migration_versions, "roles": self.roles})
