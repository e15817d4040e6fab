"""Stack configuration: every Pulumi config read happens here, validated into one object."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg.conninfo import make_conninfo
from pulumi.runtime import is_config_secret

from .. import db
from ..errors import UsageError
from ..migrate.settings import timeout_problems
from ..migrate.target import API_ROLES, TARGETS

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_DEPLOYMENT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED_ROLES = set(API_ROLES) | {"authenticator", "postgres", "supabase_admin", "supabase_auth_admin", "public"}


# Secrets the program reads with get_secret but Pulumi.yaml does not declare: a declared key
# without a default is required by the engine, and a default would be merged in as plaintext
# ("must be encrypted as it's secret"). Documented in the README and the deploy runbook.
OPTIONAL_SECRETS = {
    "backendRolePassword": "password of backendRole; required when backendRole is set",
}


class ConfigError(UsageError):
    """One or more stack config values are wrong; the message names each one."""


class ConfigSource(Protocol):
    def get(self, key: str) -> str | None: ...
    def get_secret(self, key: str) -> Any: ...


@dataclass(frozen=True)
class StackConfig:
    target: str
    host: str
    port: int
    database: str
    username: str
    password: Any  # a secret pulumi Output, or None when libpq finds it (PGPASSFILE, ~/.pgpass)
    sslmode: str
    superuser: bool
    protect: bool
    allow_data_loss: bool
    lock_timeout: str
    backend_role: str | None
    backend_role_password: Any
    take_over_from: str = ""  # the deployment id of another stack's database this stack takes over
    fleet_evidence: dict | None = None  # what scripts/fleet.py recorded; exported as the stack output fleetEvidence


def _bool(raw: str | None, key: str, default: bool, errors: list[str]) -> bool:
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    errors.append(f"{key} must be true or false, not {raw!r}")
    return default


def _secret(cfg: ConfigSource, key: str, errors: list[str]) -> Any:
    """The secret `key`, or None when unset. An empty value and one stored in plaintext are refused
    here, where the key can be named: an empty password otherwise surfaces much later as libpq's
    `no password supplied`, and plaintext sits readable in the stack file."""
    raw = cfg.get(key)
    if raw is None:
        return None
    if not raw.strip():
        errors.append(f"{key} is empty: set it with `pulumi config set --secret {key}` (from the prompt or stdin)")
    elif not _stored_as_secret(cfg, key):
        errors.append(
            f"{key} is stored in plaintext in the stack file: `pulumi config rm {key}`, then set it again"
            f" with `pulumi config set --secret {key}`"
        )
    return cfg.get_secret(key)


def _stored_as_secret(cfg: ConfigSource, key: str) -> bool:
    # The engine passes the keys set with --secret to the program (PULUMI_CONFIG_SECRET_KEYS,
    # which the SDK loads); a source without that bookkeeping (the unit tests' dict) is trusted.
    full_key = getattr(cfg, "full_key", None)
    return True if full_key is None else is_config_secret(full_key(key))


def load(cfg: ConfigSource) -> StackConfig:
    """Validate everything first, then raise once, naming each bad value on its own line."""
    errors: list[str] = []
    target = cfg.get("target") or "supabase"
    if target not in TARGETS:
        errors.append(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
    host = cfg.get("host") or ""
    if not host:
        errors.append("host is required: pulumi config set host <db host>")
    raw_port = cfg.get("port") or "5432"
    port = int(raw_port) if raw_port.isdigit() else -1
    if not 0 < port < 65536:
        errors.append(f"port must be an integer from 1 to 65535, not {raw_port!r}")
    if pooler := db.session_port_problem(port):
        errors.append(pooler)
    sslmode = cfg.get("sslmode") or ("require" if target == "supabase" else "prefer")
    if sslmode not in SSLMODES:
        errors.append(f"sslmode must be one of {', '.join(SSLMODES)}, not {sslmode!r}")
    superuser = _bool(cfg.get("superuser"), "superuser", False, errors)
    if target == "supabase" and superuser:
        errors.append("superuser must be false on Supabase: its postgres role is not a superuser")
    lock_timeout = cfg.get("lockTimeout") or "1s"
    errors += timeout_problems(lock_timeout=lock_timeout, label={"lock_timeout": "lockTimeout"}.get)
    protect = _bool(cfg.get("protect"), "protect", True, errors)
    allow_data_loss = _bool(cfg.get("allowDataLoss"), "allowDataLoss", False, errors)
    backend_role = cfg.get("backendRole") or None
    password = _secret(cfg, "password", errors)
    backend_password = _secret(cfg, "backendRolePassword", errors) if backend_role else None
    if backend_role:
        if not _ROLE.match(backend_role):
            errors.append(f"backendRole must be a lowercase identifier (a-z, 0-9, _), not {backend_role!r}")
        elif backend_role in RESERVED_ROLES:
            errors.append(f"backendRole must not be the platform role {backend_role!r}")
        if backend_password is None:
            errors.append(
                "backendRolePassword is required with backendRole: pulumi config set --secret backendRolePassword"
            )
    take_over_from = (cfg.get("takeOverFrom") or "").strip()
    if take_over_from and not _DEPLOYMENT.match(take_over_from):
        errors.append(
            "takeOverFrom must be the deployment id a refusal named (a UUID such as "
            "1b4e28ba-2fa1-41d2-883f-0016d3cca427), not another value"
        )
    fleet_evidence = _evidence(cfg.get("fleetEvidence") or "", errors)
    if errors:
        # One problem is one line; several are a list, each value named once.
        raise ConfigError(
            "invalid stack config: " + errors[0]
            if len(errors) == 1
            else "invalid stack config:\n  - " + "\n  - ".join(errors)
        )
    return StackConfig(
        target=target,
        host=host,
        port=port,
        database=cfg.get("database") or "postgres",
        username=cfg.get("username") or "postgres",
        password=password,
        sslmode=sslmode,
        superuser=superuser,
        protect=protect,
        allow_data_loss=allow_data_loss,
        lock_timeout=lock_timeout,
        backend_role=backend_role,
        backend_role_password=backend_password,
        take_over_from=take_over_from,
        fleet_evidence=fleet_evidence,
    )


def conninfo(cfg: StackConfig, password: str | None) -> str:
    """The libpq string of the stack's database: the program's engine and the fleet's reads use
    this one, so both reach the database the same way."""
    extra = {"password": password} if password else {}
    return make_conninfo(
        host=cfg.host, port=cfg.port, dbname=cfg.database, user=cfg.username, sslmode=cfg.sslmode, **extra
    )


def _evidence(raw: str, errors: list[str]) -> dict | None:
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        errors.append(
            "fleetEvidence must be the JSON object scripts/fleet.py writes: `pulumi config rm fleetEvidence`,"
            " and let the fleet's next evidence wave record it again"
        )
        return None
    return value
