"""Writes to the integrations table (access.INTEGRATIONS), shared by encrypt_key.py --store and rotation."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import errors as pgerr

from ..access import INTEGRATIONS
from ..errors import Refused, UsageError


def parse_user_id(value: str, what: str = "user_id") -> str:
    """The canonical UUID; `what` names the value in the error (the CLI passes its option)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise UsageError(f"{what} must be a UUID like 6c0d6f4e-3a0e-4b7e-9f4b-5b0a7d2f1c11") from None


def store(conn: psycopg.Connection, user_id: str, ciphertext: str) -> str:
    """Upsert the user's key; returns 'inserted' or 'updated'. A new key is not yet verified."""
    try:
        with conn.transaction():
            row = conn.execute(
                f"""INSERT INTO {INTEGRATIONS} (user_id, encrypted_api_key) VALUES (%s, %s)
                    ON CONFLICT (user_id) DO UPDATE
                      SET encrypted_api_key = EXCLUDED.encrypted_api_key, is_valid = true, last_verified_at = NULL
                    RETURNING (xmax = 0)""",
                (user_id, ciphertext),
            ).fetchone()
    except pgerr.ForeignKeyViolation:
        raise Refused(f"user {user_id} does not exist in auth.users; nothing was stored") from None
    except pgerr.UndefinedTable:
        raise Refused(f"{INTEGRATIONS} does not exist; deploy migration 005 first") from None
    assert row is not None  # an upsert of one row returns it
    return "inserted" if row[0] else "updated"
