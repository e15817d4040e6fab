"""The operator's side: the steps of a release and its revert, each run as an operator runs it
(scripts/migrate.py and scripts/rotate_keys.py in a fresh process, secrets in the environment),
each inside a window of the application's traffic; after each window, every row and key the
application wrote is looked for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from x402db import ROOT
from x402db.access import INTEGRATIONS, RESOURCES
from x402db.keys.crypto import DecryptError, Keyring
from x402db.keys.source import PREVIOUS_ENV, SECRET_ENV

from .report import QUIET, Phase
from .traffic import Player, api_key

KEYS_T = sql.Identifier(*INTEGRATIONS.split("."))
RESOURCES_T = sql.Identifier(*RESOURCES.split("."))


@dataclass
class Ran:
    command: str
    code: int
    seconds: float
    last_line: str


@dataclass
class Rehearsal:
    dsn: str  # as postgres, the role the operator's scripts connect as
    player: Player
    passive_users: list[str]  # users the traffic never touches: their keys are seeded
    seconds: float  # the least length of each window
    old_secret: str
    new_secret: str
    progress: Callable[[str, float, float], None]  # (phase, elapsed, planned)
    say: Callable[[str], None]
    phases: list[Phase] = field(default_factory=list)
    seeded: dict[str, str] = field(default_factory=dict)  # user -> plaintext, for passive users

    # -- operator commands --------------------------------------------------------------------
    def script(self, name: str, *args: str, secrets: dict[str, str] | None = None) -> Ran:
        env = {k: v for k, v in os.environ.items() if k not in (SECRET_ENV, PREVIOUS_ENV)}
        # The scripts import this checkout's x402db, whatever the interpreter's installed one is.
        env |= {"DATABASE_URL": self.dsn, "PYTHONPATH": str(ROOT), **(secrets or {})}
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / name), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while proc.poll() is None:
            self.progress(self.current.name, time.perf_counter() - self.t0, self.seconds)
            time.sleep(0.1)
        out, err = proc.communicate()
        lines = [line for line in (err + out).splitlines() if line.strip()]
        return Ran(
            " ".join([name.removesuffix(".py"), *args]),
            proc.returncode,
            time.perf_counter() - t0,
            lines[-1] if lines else "",
        )

    # -- windows ------------------------------------------------------------------------------
    def window(
        self, name: str, step: Callable[[], tuple[Ran | None, bool]] | None = None, check_keys: Keyring | None = None
    ) -> Phase:
        self.current = Phase(name)
        self.t0 = time.perf_counter()
        self.player.shared.phase = name
        self.say(f"{name}: started")
        if step is not None:
            ran, expected = step()
            if ran is not None:
                self.current.step = ran.command
                self.current.outcome = f"exit {ran.code} in {ran.seconds:.1f}s"
                self.current.as_expected = expected
                if not expected or ran.code not in (0,):
                    self.current.note = ran.last_line
        while (elapsed := time.perf_counter() - self.t0) < self.seconds:
            self.progress(name, elapsed, self.seconds)
            time.sleep(min(0.1, self.seconds - elapsed))
        self.player.shared.phase = "between"
        self.account(check_keys)
        self.phases.append(self.current)
        self.say(f"{name}: done ({self.current.outcome or 'traffic only'})")
        return self.current

    def account(self, keyring: Keyring | None) -> None:
        """Every resource the traffic inserted is there; every key it (or the seed) wrote decrypts
        to what was written, with `keyring` (None: the keys were dropped on purpose, or never
        written)."""
        p = self.current
        with self.player.shared.lock:
            ids = list(self.player.shared.written)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            found = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE id = ANY(%s::uuid[])").format(RESOURCES_T), (ids,)
            ).fetchone()
            p.rows_checked, p.rows_lost = len(ids), len(ids) - (found[0] if found else 0)
            if keyring is None:
                return
            # The app is paused while the two are read, so that what it wrote and what is stored
            # are of the same instant; the comparison runs after it resumes.
            with self.player.paused():
                expected = self.seeded | self.player.expected_keys()
                stored: dict[str, str] = dict(
                    conn.execute(
                        sql.SQL(
                            "SELECT user_id::text, encrypted_api_key FROM {} WHERE user_id = ANY(%s::uuid[])"
                        ).format(KEYS_T),
                        (list(expected),),
                    ).fetchall()
                )
        users = [u for u in expected if u in stored]
        decrypted = keyring.decrypt_many([(stored[u], None) for u in users])
        good = sum(
            1 for u, d in zip(users, decrypted, strict=True) if not isinstance(d, DecryptError) and d[0] == expected[u]
        )
        p.keys_checked, p.keys_lost = len(expected), len(expected) - good

    # -- the release and its revert -------------------------------------------------------------
    def seed_keys(self, secret: str) -> None:
        """Keys for the users the traffic does not touch, so that the refused revert has keys to
        protect and the rotation has volume."""
        ring = Keyring(secret)
        self.seeded = {u: api_key() for u in self.passive_users}
        with (
            psycopg.connect(self.dsn) as conn,
            conn.cursor().copy(sql.SQL("COPY {} (user_id, encrypted_api_key) FROM STDIN").format(KEYS_T)) as cp,
        ):
            for user, plaintext in self.seeded.items():
                cp.write_row((user, ring.encrypt(plaintext)))

    def run(self) -> list[Phase]:
        old_ring = Keyring(self.old_secret)
        self.window(QUIET)

        def up() -> tuple[Ran, bool]:
            ran = self.script("migrate.py", "up")
            if ran.code == 0:  # the release: the app starts using 005
                self.player.switch(keys=True, openrouter=True, secret=self.old_secret)
            return ran, ran.code == 0

        self.window("up", up, old_ring)
        self.seed_keys(self.old_secret)

        def refused_down() -> tuple[Ran, bool]:
            ran = self.script("migrate.py", "down")
            return ran, ran.code == 1  # keys are stored: without --allow-data-loss, down refuses

        self.window("down refused", refused_down, old_ring)

        def down() -> tuple[Ran, bool]:
            # The app is rolled back first (it stops writing what 005 adds), then the rows the old
            # constraint would reject are removed, as the refusal says; the keys go with the table.
            self.player.switch(keys=False, openrouter=False)
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                gone = {
                    str(r[0])
                    for r in conn.execute(
                        sql.SQL("DELETE FROM {} WHERE resource_type = 'openrouter_instant' RETURNING id").format(
                            RESOURCES_T
                        )
                    )
                }
            self.player.forget_resources(gone)
            dropped = self.player.forget_keys() + len(self.seeded)
            self.seeded = {}
            ran = self.script("migrate.py", "down", "--to", "1", "--allow-data-loss")
            self.current.note = f"before it: {len(gone)} openrouter_instant rows deleted; {dropped} keys dropped with the table, as allowed"
            return ran, ran.code == 0

        self.window("down", down)
        self.window("up again", up, old_ring)
        self.seed_keys(self.old_secret)

        def rotate() -> tuple[Ran, bool]:
            # The app is deployed with the new secret first, the old one kept for reading
            # (runbook, key rotation, 3b step 2); then every stored key is rotated.
            self.player.switch(secret=self.new_secret, previous=(self.old_secret,))
            ran = self.script(
                "rotate_keys.py", "--apply", secrets={SECRET_ENV: self.new_secret, PREVIOUS_ENV: self.old_secret}
            )
            return ran, ran.code == 0

        self.window("rotation", rotate, Keyring(self.new_secret))  # the new secret alone reads every key
        return self.phases
