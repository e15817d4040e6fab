"""Connections: DSN resolution, the one redaction function, and errors that never echo a
credential. Every DSN that is printed, logged or put in JSON goes through `redact`."""

from __future__ import annotations

import os
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConnectError, UsageError
from .pgpass import password_over_environment

# libpq parameters whose value is itself a credential (not a path to one): never printed.
CREDENTIAL_PARAMS = frozenset({"password", "sslpassword", "oauth_client_secret"})
# SQLSTATE classes that mean "the connection, not the statement, failed".
_CONNECTION_CLASSES = ("08", "57P")


# Poolers that hand each transaction to whichever server session is free, by the port they listen
# on: the engine's advisory lock, its SET lock_timeout and the no-transaction steps need one session.
TRANSACTION_POOLER_PORTS = {6543: "Supabase's transaction pooler"}


def session_port_problem(port: int) -> str | None:
    """Why a migration must not run through this port, or None; the Pulumi config and the CLI share it."""
    pooler = TRANSACTION_POOLER_PORTS.get(port)
    if not pooler:
        return None
    return f"port {port} is {pooler}; use the direct connection or the session pooler, both on 5432: migrations need a session"


def require_session(dsn: str) -> None:
    """Refuse, before connecting, a DSN whose port (or PGPORT, which libpq falls back to) is a transaction pooler's."""
    ports = (parse(dsn).get("port") or os.environ.get("PGPORT") or "").split(",")
    for port in ports:
        problem = session_port_problem(int(port)) if port.strip().isdigit() else None
        if problem:
            raise UsageError(f"the database's {problem}; nothing changed")


def resolve_dsn(explicit: str | None) -> str:
    dsn = explicit or os.environ.get("DATABASE_URL")
    if not dsn:
        raise UsageError("no database given: set DATABASE_URL or pass --dsn")
    return dsn


def parse(dsn: str) -> dict[str, str]:
    """The DSN's parameters, or a UsageError that does not repeat the DSN (it may hold a password)."""
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    except (psycopg.ProgrammingError, TypeError, ValueError):
        raise UsageError(
            "the DSN (--dsn or DATABASE_URL) is not a valid PostgreSQL URL or key=value "
            "connection string; it is not shown, since it may hold a password"
        ) from None
    if "@" in (params.get("host") or ""):
        # postgresql://user:p@ss@host parses as host "ss@host": libpq would then print part of
        # the password in its own error message.
        raise UsageError(
            "the DSN's host contains '@': write an @ in the password as %40, "
            "or keep the password in ~/.pgpass or PGPASSWORD"
        )
    if "@" in (params.get("dbname") or "") and "://" in dsn:
        # postgresql://user:pa/ss@host: libpq ends the password at the '/', so the rest of the
        # password would become the database name, and be printed as such.
        raise UsageError(
            "the DSN's database name contains '@': write a / in the password as %2F "
            "(and @ as %40), or keep the password in ~/.pgpass or PGPASSWORD"
        )
    return params


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else quote(host, safe=".-_~")


def redact(dsn: str) -> str:
    """The DSN as a postgresql:// URL without any credential, fit for output, logs and JSON.

    Paths to credentials (passfile, sslkey) stay: they name a file only its owner can read, and
    the URL keeps working for that owner."""
    try:
        params = parse(dsn)
    except UsageError:
        return "<a DSN that could not be parsed>"
    params = {k: v for k, v in params.items() if k not in CREDENTIAL_PARAMS}
    user = params.pop("user", "")
    dbname = params.pop("dbname", "")
    hosts = params.pop("host", "")
    ports = params.pop("port", "")
    netloc = quote(user, safe="") + "@" if user else ""
    if hosts and not any(h.startswith("/") or h.startswith("@") for h in hosts.split(",")):
        host_list = hosts.split(",")
        port_list = ports.split(",") if ports else []
        if len(port_list) == 1:
            port_list = port_list * len(host_list)
        if port_list and len(port_list) != len(host_list):
            params.update(host=hosts, port=ports)  # not expressible in the authority: keep as query
        else:
            netloc += ",".join(
                _url_host(h) + (f":{p}" if p else "")
                for h, p in zip(host_list, port_list or [""] * len(host_list), strict=True)
            )
    else:
        if hosts:
            params["host"] = hosts  # a Unix-socket directory
        if ports:
            params["port"] = ports
    query = f"?{urlencode(params, quote_via=quote, safe='/')}" if params else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


def secret_values(dsn: str) -> list[str]:
    """The credential values a DSN carries, so that a message can be scrubbed of them."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return []
    return [str(params[k]) for k in CREDENTIAL_PARAMS if params.get(k)]


def scrub(text: str, secrets: list[str]) -> str:
    for s in sorted(secrets, key=len, reverse=True):
        if s:
            text = text.replace(s, "***")
    return text


def libpq_reason(exc: BaseException, dsn: str | None = None) -> str:
    """libpq's own words for a failure, on one line, without any credential of `dsn`."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # The first line says what failed; libpq's further lines are hints ("Is the server running...").
    reason = primary or (lines[0] if lines else "") or "no reason given by libpq"
    return scrub(reason, secret_values(dsn) if dsn else []).rstrip(".")


def is_connection_failure(exc: BaseException) -> bool:
    """A dropped or refused connection, as opposed to a statement the server rejected."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(getattr(exc, "diag", None), "sqlstate", None)
    return state is None or state.startswith(_CONNECTION_CLASSES)


def connect_timeout() -> int:
    raw = os.environ.get("PGCONNECT_TIMEOUT", "10")
    if not raw.strip().isdigit():
        raise UsageError("PGCONNECT_TIMEOUT must be a whole number of seconds")
    return int(raw)


def conninfo(dsn: str, **extra: str) -> str:
    """What libpq is given for `dsn`: with the named passfile's password where an exported
    PGPASSWORD would otherwise win over it (x402db/pgpass.py). Never printed."""
    password = password_over_environment(parse(dsn))
    return make_conninfo(dsn, **extra, **({"password": password} if password else {}))


def connect(dsn: str, *, autocommit: bool = True, application_name: str = "x402db") -> psycopg.Connection:
    libpq_dsn = conninfo(dsn, application_name=application_name)
    timeout = connect_timeout()
    try:
        return psycopg.connect(libpq_dsn, autocommit=autocommit, connect_timeout=timeout)
    except psycopg.OperationalError as exc:
        raise ConnectError(f"cannot connect to {redact(dsn)}: {libpq_reason(exc, libpq_dsn)}") from None
