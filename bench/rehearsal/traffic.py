"""The application's traffic, sent the way PostgREST sends it: one transaction per request that
switches to the API role and sets the caller's JWT claims, then runs the query.

Each worker owns a share of the users and of the models (index modulo the worker count), so a
user's key and a model's life are written by one connection only: "the last value written" is
then well defined, and a lost or wrong key is the database's doing, never a race of ours."""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from x402db.access import INTEGRATIONS, MODELS, RESOURCES
from x402db.keys.crypto import DecryptError, Keyring

from .fixture import Cloner

SERVICE = "service_role"
AUTHENTICATED = "authenticated"
KEY_MISMATCH = "key-mismatch"  # the app read back another key than it wrote (not a SQLSTATE)
RESOURCES_T = sql.Identifier(*RESOURCES.split("."))
MODELS_T = sql.Identifier(*MODELS.split("."))
KEYS_T = sql.Identifier(*INTEGRATIONS.split("."))

# Relative frequency of each kind of request. Key requests need 005's table; without it (before
# up, after down) the app does not make them, and reads its resources instead.
MIX = {
    "read_any_resource": 20,
    "read_own_resources": 18,
    "insert_own_resource": 12,
    "update_own_resource": 8,
    "upsert_own_key": 5,
    "read_own_key": 10,
    "read_key_as_service": 5,
    "upsert_key_as_service": 2,
    "update_model": 8,
    "replace_model": 3,
}
NEEDS_KEYS = {"upsert_own_key", "read_own_key", "read_key_as_service", "upsert_key_as_service"}


def api_key() -> str:
    return "sk-or-v1-" + secrets.token_hex(32)


@dataclass
class Sample:
    phase: str
    op: str  # which request of the mix
    seconds: float
    error: str | None  # SQLSTATE, KEY_MISMATCH, or None


@dataclass
class AppConfig:
    """What the deployed application does; the rehearsal switches it as an operator would."""

    keys: bool = False  # 005 is applied and the app stores keys
    openrouter: bool = False  # the app writes openrouter_instant resources
    secret: str = ""
    previous: tuple[str, ...] = ()


@dataclass
class Shared:
    resources: Cloner
    models: Cloner
    sample_ids: list[str]  # existing resources anyone may read
    workers: int
    interval: float  # seconds between two requests of one worker
    config: AppConfig = field(default_factory=AppConfig)
    phase: str = "setup"
    samples: list[Sample] = field(default_factory=list)
    written: set[str] = field(default_factory=set)  # resources the traffic inserted (committed)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Worker(threading.Thread):
    def __init__(self, shared: Shared, dsn: str, users: list[str], models: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.shared, self.dsn, self.users, self.models = shared, dsn, users, models
        self.rand = random.Random(seed)
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="rehearsal-app")
        self.keys: dict[str, str] = {}  # user -> the plaintext of the key last written
        self.own: list[tuple[str, str]] = []  # (resource id, user) inserted by this worker
        self.busy = threading.Lock()  # held during a request: a switch waits for the one in flight
        self.stopping = threading.Event()
        self.serial = seed * 10_000_000
        self.keyring = Keyring("unset")
        self._plain_insert = shared.resources.insert(
            sql.SQL("%(user)s::uuid"),
            sql.SQL("%(serial)s::bigint"),
            sql.SQL("(SELECT 1) s"),
            {},
            sql.SQL("%(tpl)s::jsonb"),
        )
        self._openrouter_insert: sql.Composed | None = None
        self._models_insert = shared.models.insert(
            sql.SQL("NULL"), sql.SQL("%(serial)s::bigint"), sql.SQL("(SELECT 1) s"), {}, sql.SQL("%(tpl)s::jsonb")
        )
        self._resource_cols = sql.SQL(", ").join(sql.Identifier(c) for c in shared.resources.template)
        self._resource_plain = sql.Identifier(shared.resources.plain_column())
        self._model_plain = sql.Identifier(shared.models.plain_column())
        self.configure()

    def configure(self) -> None:
        """Take the app's configuration; only between two requests, so that each request sees
        one configuration whole (a key written under one secret is read under the same ring)."""
        c = self.shared.config
        self.config = AppConfig(c.keys, c.openrouter, c.secret, c.previous)
        if c.secret:
            self.keyring = Keyring(c.secret, c.previous)
        if c.openrouter and self._openrouter_insert is None:
            self._openrouter_insert = self.shared.resources.insert(
                sql.SQL("%(user)s::uuid"),
                sql.SQL("%(serial)s::bigint"),
                sql.SQL("(SELECT 1) s"),
                {
                    "resource_type": sql.Literal("openrouter_instant"),
                    "openrouter_model_id": sql.SQL("%(model)s::uuid"),
                    "openrouter_config": sql.SQL("%(config)s::jsonb"),
                },
                sql.SQL("%(tpl)s::jsonb"),
            )

    # -- one request ------------------------------------------------------------------------
    def request(self, role: str, user: str | None, body: Callable[[psycopg.Cursor], Any]) -> Any:
        claims = {"sub": user, "role": role} if user else {"role": role}
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            cur.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
            return body(cur)

    def run(self) -> None:
        ops = list(MIX)
        weights = list(MIX.values())
        next_at = time.perf_counter()
        while not self.stopping.is_set():
            next_at += self.shared.interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:  # far behind (a stall): restart the schedule rather than burst
                next_at = time.perf_counter()
            with self.busy:
                op = self.rand.choices(ops, weights)[0]
                if op in NEEDS_KEYS and not self.config.keys:
                    op = "read_own_resources"
                if op == "replace_model":  # the app retires a model and lists a new one: the count stays
                    self.timed(self.retire_model)
                    self.timed(self.list_model)
                else:
                    self.timed(getattr(self, op))

    def timed(self, op: Callable[[], object]) -> None:
        phase = self.shared.phase
        error = None
        t0 = time.perf_counter()
        try:
            op()
        except psycopg.Error as exc:
            error = exc.sqlstate or "connection"
            if self.conn.closed:
                self.conn = psycopg.connect(self.dsn, autocommit=True, application_name="rehearsal-app")
        except KeyMismatch:
            error = KEY_MISMATCH
        self.shared.samples.append(Sample(phase, op.__name__, time.perf_counter() - t0, error))

    # -- the mix ------------------------------------------------------------------------------
    def user(self) -> str:
        return self.rand.choice(self.users)

    def read_any_resource(self) -> None:
        rid = self.rand.choice(self.shared.sample_ids)
        q = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(self._resource_cols, RESOURCES_T)
        self.request(SERVICE, None, lambda cur: cur.execute(q, (rid,)).fetchall())

    def read_own_resources(self) -> None:
        q = sql.SQL("SELECT {} FROM {} WHERE user_id = (select auth.uid()) LIMIT 20").format(
            self._resource_cols, RESOURCES_T
        )
        self.request(AUTHENTICATED, self.user(), lambda cur: cur.execute(q).fetchall())

    def insert_own_resource(self) -> None:
        user = self.user()
        self.serial += 1
        params: dict[str, Any] = {
            "user": user,
            "serial": self.serial,
            "tpl": json.dumps(self.shared.resources.template),
        }
        stmt = self._plain_insert
        if self.config.openrouter and self._openrouter_insert is not None and self.serial % 2:
            model = self.rand.choice(self.models)
            stmt = self._openrouter_insert
            params |= {"model": model, "config": json.dumps({"modelId": model, "params": {"temperature": 0.7}})}
        row = self.request(AUTHENTICATED, user, lambda cur: cur.execute(stmt, params).fetchone())
        rid = str(row[0])
        with self.shared.lock:
            self.shared.written.add(rid)
        self.own.append((rid, user))
        del self.own[:-200]

    def update_own_resource(self) -> None:
        if not self.own:
            return self.read_own_resources()
        rid, user = self.rand.choice(self.own)
        q = sql.SQL("UPDATE {} SET {c} = {c} WHERE id = %s").format(RESOURCES_T, c=self._resource_plain)
        self.request(AUTHENTICATED, user, lambda cur: cur.execute(q, (rid,)))

    def _upsert_key(self, role: str, user: str) -> None:
        plaintext = api_key()
        token = self.keyring.encrypt(plaintext)
        q = sql.SQL(
            "INSERT INTO {} (user_id, encrypted_api_key) VALUES (%s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET encrypted_api_key = EXCLUDED.encrypted_api_key, is_valid = true"
        ).format(KEYS_T)
        self.request(role, user if role == AUTHENTICATED else None, lambda cur: cur.execute(q, (user, token)))
        self.keys[user] = plaintext

    def upsert_own_key(self) -> None:
        self._upsert_key(AUTHENTICATED, self.user())

    def upsert_key_as_service(self) -> None:
        self._upsert_key(SERVICE, self.user())

    def _read_key(self, role: str, user: str) -> None:
        q = sql.SQL("SELECT encrypted_api_key FROM {} WHERE user_id = %s AND is_enabled").format(KEYS_T)
        row = self.request(
            role, user if role == AUTHENTICATED else None, lambda cur: cur.execute(q, (user,)).fetchone()
        )
        expected = self.keys.get(user)
        if expected is None:
            return
        try:
            got = self.keyring.decrypt(row[0]) if row else None
        except DecryptError:
            got = None
        if got != expected:
            raise KeyMismatch

    def read_own_key(self) -> None:
        self._read_key(AUTHENTICATED, self.user())

    def read_key_as_service(self) -> None:
        self._read_key(SERVICE, self.user())

    def update_model(self) -> None:
        if not self.models:
            return self.read_any_resource()
        q = sql.SQL("UPDATE {} SET {c} = {c} WHERE id = %s").format(MODELS_T, c=self._model_plain)
        model = self.rand.choice(self.models)
        self.request(SERVICE, None, lambda cur: cur.execute(q, (model,)))

    def retire_model(self) -> None:
        if len(self.models) > 1:
            model = self.rand.choice(self.models)
            q = sql.SQL("DELETE FROM {} WHERE id = %s").format(MODELS_T)
            self.request(SERVICE, None, lambda cur: cur.execute(q, (model,)))
            self.models.remove(model)

    def list_model(self) -> None:
        self.serial += 1
        params = {"serial": self.serial, "tpl": json.dumps(self.shared.models.template)}
        row = self.request(SERVICE, None, lambda cur: cur.execute(self._models_insert, params).fetchone())
        self.models.append(str(row[0]))


class KeyMismatch(Exception):
    pass


class Player:
    """The workers, the switches an operator makes to the app, and what the app wrote."""

    def __init__(self, dsn: str, shared: Shared, users: list[str], models: list[str]) -> None:
        self.shared = shared
        n = shared.workers
        self.workers = [Worker(shared, dsn, users[i::n], models[i::n], i + 1) for i in range(n)]

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for w in self.workers:
            w.stopping.set()
        for w in self.workers:
            w.join()
            w.conn.close()

    def switch(self, **changes: Any) -> None:
        """Change what the app does, then wait until no request started before the change is in
        flight (as a deploy of the app waits for its old instances to drain)."""
        for name, value in changes.items():
            setattr(self.shared.config, name, value)
        for w in self.workers:
            with w.busy:
                w.configure()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No request in flight, and none starts, until the block ends."""
        with ExitStack() as stack:
            for w in self.workers:
                stack.enter_context(w.busy)
            yield

    def expected_keys(self) -> dict[str, str]:
        return {u: k for w in self.workers for u, k in w.keys.items()}

    def forget_keys(self) -> int:
        n = sum(len(w.keys) for w in self.workers)
        for w in self.workers:
            w.keys.clear()
        return n

    def forget_resources(self, ids: set[str]) -> None:
        with self.shared.lock:
            self.shared.written -= ids
        for w in self.workers:
            with w.busy:
                w.own = [(r, u) for r, u in w.own if r not in ids]
