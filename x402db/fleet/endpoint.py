"""Where a target's database is, judged by the stack config's own rules: the fleet reads the
database the way the Pulumi program will reach it, never by a second reading of the config."""

from __future__ import annotations

from typing import Any

from ..iac import config
from .fleetfile import TargetSpec


class _Source:
    """A target's values, as the Pulumi program's config loader reads a stack."""

    def __init__(self, values: dict[str, str]):
        self.values = values

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def get_secret(self, key: str) -> Any:
        return self.values.get(key)


def stack_config(spec: TargetSpec, with_secrets: bool = False) -> config.StackConfig:
    """The target's stack config, validated by the program's loader. Secrets are read (from their
    env or file) only when asked: validating a fleet connects to nothing and reads no secret."""
    values = dict(spec.config)
    for key, source in spec.secrets.items():
        values[key] = source.read() if with_secrets else "unread"
    return config.load(_Source(values))


def dsn(spec: TargetSpec) -> str:
    cfg = stack_config(spec, with_secrets=True)
    return config.conninfo(cfg, cfg.password)


def label(spec: TargetSpec) -> str:
    """host:port/database: what the report shows (no user, no password)."""
    cfg = stack_config(spec)
    return f"{cfg.host}:{cfg.port}/{cfg.database}"
