"""What the behaviour checks and the backend-contract checks share: one run's connection, its
checklist, its test users and how it makes a test resource. Both import this module and neither
imports the other's, so the two can grow apart without an import circle.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import psycopg

from ..access import RESOURCES
from ..keys.crypto import Keyring
from .checks import Checklist
from .rows import RowMaker

# Constraints 005 defines on x402_resources: if one refuses a test row, that is a defect.
OWN_RESOURCE_CONSTRAINTS = ("x402_resources_resource_type_check", "x402_resources_openrouter_model_id_fkey")


@dataclass
class SmokeRun:
    """One run of the behaviour checks, inside the smoke's rolled-back transaction: the connection,
    the checklist it fills, and four test users, a to d (d belongs to the backend contract)."""

    conn: psycopg.Connection
    checks: Checklist
    keyring: Keyring | None
    rows: RowMaker
    users: dict[str, str] = field(default_factory=lambda: {k: str(uuid.uuid4()) for k in "abcd"})
    no_users: str | None = None  # why test users could not be created, if so

    @property
    def user_a(self) -> str:
        return self.users["a"]

    @property
    def user_b(self) -> str:
        return self.users["b"]

    @property
    def user_c(self) -> str:
        return self.users["c"]

    def resource_config(self, nonce: str, model: str | None) -> str:
        # The nonce identifies the test row through a column 005 defines (x402_resources has
        # no id we may assume).
        return json.dumps(
            {
                "modelId": model or "none",
                "systemPrompt": "",
                "params": {"temperature": 0.5, "maxTokens": 16},
                "smoke": nonce,
            }
        )

    def make_resource(self, user: str, model: str | None) -> tuple[str, str]:
        """An openrouter_instant resource owned by `user`; returns (nonce, how it was made)."""
        nonce = str(uuid.uuid4())
        _, how = self.rows.make(
            RESOURCES,
            {
                "resource_type": "openrouter_instant",
                "openrouter_model_id": model,
                "openrouter_config": json.loads(self.resource_config(nonce, model)),
            },
            user=user,
            update_existing=True,
            owned=OWN_RESOURCE_CONSTRAINTS,
        )
        return nonce, how
