"""Connections: DSN resolution, redaction, and errors that never echo a password."""
from __future__ import annotations

import os

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConnectError, UsageError


def resolve_dsn(explicit: str | None) -> str:
    dsn = explicit or os.environ.get("DATABASE_URL")
    if not dsn:
        raise UsageError("no database given: set DATABASE_URL or pass --dsn")
    return dsn


def redact(dsn: str) -> str:
    """The DSN without its password, fit for logs and messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable dsn>"
    if "password" in params:
        params["password"] = "***"
    host = params.get("host", "localhost")
    return f"{params.get('user', '')}@{host}:{params.get('port', 5432)}/{params.get('dbname', '')}"


def connect(dsn: str, *, autocommit: bool = True, application_name: str = "x402db") -> psycopg.Connection:
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise UsageError("the DSN is not a valid PostgreSQL connection string or URL") from None
    try:
        return psycopg.connect(
            make_conninfo(dsn, application_name=application_name),
            autocommit=autocommit,
            connect_timeout=int(os.environ.get("PGCONNECT_TIMEOUT", "10")),
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no reason given"
        raise ConnectError(f"cannot connect to {redact(dsn)}: {reason}") from None
