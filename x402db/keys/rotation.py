"""Key rotation: re-encrypt every stored API key under the new secret, under live traffic.

Short transactions of `batch_size` rows with keyset pagination on user_id; each new ciphertext
is decrypted back before it is written; the write is a compare-and-set on the ciphertext that
was read, so a concurrent write by the app is never overwritten (that row is re-read and
handled); rows already under the new key are skipped, so a re-run after a crash resumes.
Rows that no key decrypts are reported and never touched. Rotation bumps updated_at through
the table's trigger: the row really is rewritten, and the audit row says by which run.

Speed, on two cores: a thread reads ahead, the main thread does a batch's crypto in one library
call per step (decrypt, encrypt, verify), and writer threads write earlier batches, each on its
own connection: the batches are disjoint user_id ranges, so the writers never wait on each other.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

import psycopg
from psycopg import sql

from .. import private
from ..access import INTEGRATIONS
from ..errors import BundleError, UsageError
from .crypto import OPENROUTER_KEY, Context, DecryptError, Keyring, Shape

AUDIT = sql.Identifier(private.PRIVATE_SCHEMA, "key_rotation_runs")
ROTATION_LOCK_KEY = 402_005_000_002
MAX_CAS_ROUNDS = 5
MAX_BATCH = 100_000  # a batch is one short transaction; more rows would hold row locks for long
# Writer connections the command opens. Consecutive batches are disjoint user_id ranges, so
# two writers never wait on each other's row locks; with two, the server writes on both cores
# while this process decrypts the next batch.
WRITERS = 2

_AUDIT_DDL = sql.SQL("""
    CREATE TABLE IF NOT EXISTS {t} (
      id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      started_at       timestamptz NOT NULL DEFAULT now(),
      finished_at      timestamptz,
      run_by           text NOT NULL DEFAULT current_user,
      to_format        text NOT NULL,
      new_fingerprint  text NOT NULL,
      old_fingerprints text[] NOT NULL,
      status           text NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'completed', 'incomplete', 'interrupted', 'failed')),
      summary          jsonb
    );
    REVOKE ALL ON {t} FROM PUBLIC;
""").format(t=AUDIT)


# What to do about rows that could not be decrypted, by DecryptError.reason.
REASON_HINTS = {
    "wrong-key": "no secret given decrypts them: pass the secret they were written with "
    "(INTEGRATION_ENCRYPTION_SECRET_PREVIOUS or --old-secret-file)",
    "not-a-key": "a secret decrypts them, but not to an API key of the expected shape: if your keys look "
    "different pass --key-pattern or --any-key-shape; else the stored value is not an API key",
    "malformed": "not a ciphertext of a known shape (iv_hex:ciphertext_hex, or canonical v2): "
    "inspect these rows and fix or delete them by hand",
    "unknown-format": "written in a newer format than this bundle reads: upgrade the bundle",
    "tampered": "v2 authentication failed: the value was altered, or copied from another user's row",
    "no-context": "a v2 ciphertext without its user_id",
}


@dataclass
class Report:
    mode: str  # dry-run | apply
    to_format: str
    new_fingerprint: str
    old_fingerprints: list[str]
    total: int = 0
    by_key: Counter = field(default_factory=Counter)  # fingerprint -> rows it decrypts
    already_current: int = 0
    rotated: int = 0  # written (apply) or would be written (dry run)
    conflicts: int = 0  # compare-and-set misses: the app wrote the row meanwhile
    undecryptable: list[str] = field(default_factory=list)
    undecryptable_reasons: Counter = field(default_factory=Counter)  # DecryptError.reason -> rows
    run_id: int | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None
    status: str = "running"

    @property
    def ok(self) -> bool:
        return not self.undecryptable and self.status in ("completed", "dry-run")

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "status": self.status,
            "run_id": self.run_id,
            "to_format": self.to_format,
            "new_key": self.new_fingerprint,
            "old_keys": self.old_fingerprints,
            "total": self.total,
            "rows_by_key": dict(self.by_key),
            "already_current": self.already_current,
            ("rotated" if self.mode == "apply" else "to_rotate"): self.rotated,
            "conflicts_rehandled": self.conflicts,
            "undecryptable": len(self.undecryptable),
            "undecryptable_by_reason": dict(self.undecryptable_reasons),
            "undecryptable_user_ids": self.undecryptable,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def _value(conn: psycopg.Connection, query: str | sql.Composed, params: tuple[object, ...]) -> Any:
    """The first column of a statement that returns one row (a SELECT without FROM, an INSERT of one row)."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _is_format(token: str, fmt: str) -> bool:
    return token.startswith("v2:") == (fmt == "v2")


class Rotator:
    def __init__(
        self,
        conn: psycopg.Connection,
        keyring: Keyring,
        to_format: str = "legacy",
        batch_size: int = 1000,
        shape: Shape = OPENROUTER_KEY,
        progress: Callable[[int], object] = lambda n: None,
        on_batch_read: Callable[[list[tuple]], None] | None = None,
        write_conn: psycopg.Connection | None = None,
        more_writers: Sequence[psycopg.Connection] = (),
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise UsageError(f"--batch-size must be from 1 to {MAX_BATCH}")
        self.conn, self.keyring, self.to_format, self.batch_size, self.shape = (
            conn,
            keyring,
            to_format,
            batch_size,
            shape,
        )
        self.progress = progress
        self.on_batch_read = on_batch_read  # test seam: runs between a batch's read and its write
        self.new_fp = keyring.primary_fingerprint
        # With writer connections, batch N is written while batch N+1 is decrypted and N+2 read:
        # the server's work and ours overlap on two cores instead of taking turns.
        self.write_conn = write_conn
        self.writers = [write_conn, *more_writers] if write_conn is not None else []
        self._lock = threading.Lock()

    # -- batches ------------------------------------------------------------------------------

    def _read(self, after: str | None) -> list[tuple[str, str]]:
        # One statement is its own transaction on an autocommit connection: no BEGIN and COMMIT
        # round trips, each a wait for the GIL while the main thread decrypts.
        with self.conn.transaction() if not self.conn.autocommit else nullcontext():
            if after is None:
                # ORDER BY the uuid column, not the text output column of the same name.
                cur = self.conn.execute(
                    f"SELECT t.user_id::text AS uid, t.encrypted_api_key FROM {INTEGRATIONS} t ORDER BY t.user_id LIMIT %s",
                    (self.batch_size,),
                )
            else:
                cur = self.conn.execute(
                    f"SELECT t.user_id::text AS uid, t.encrypted_api_key FROM {INTEGRATIONS} t"
                    f" WHERE t.user_id > %s::uuid ORDER BY t.user_id LIMIT %s",
                    (after, self.batch_size),
                )
            return cur.fetchall()

    def _write(self, planned: list[tuple[str, str, str]], conn: psycopg.Connection | None = None) -> set[str]:
        """Compare-and-set the batch in one statement; returns the user_ids actually updated."""
        if not planned:
            return set()
        conn = conn or self.conn
        ids, olds, news = zip(*planned, strict=True)
        # Three comma-joined strings split server-side: psycopg dumps list elements one by
        # one in Python, which cost more than the crypto on this path. Ciphertexts and uuids
        # never contain a comma (planned rows all decrypted), and the check below keeps it so.
        joined_olds, joined_news = ",".join(olds), ",".join(news)
        if joined_olds.count(",") + joined_news.count(",") != 2 * (len(planned) - 1):
            raise BundleError("a ciphertext contains a comma; refusing to build the batch")
        # One statement, so one round trip and, on an autocommit connection, its own
        # transaction: no BEGIN and COMMIT to wait for, each a turn for the GIL. It sends back
        # only the rows it did not write (usually none) instead of every user_id.
        with conn.transaction() if not conn.autocommit else nullcontext():
            missed = conn.execute(
                f"""WITH v AS MATERIALIZED (
                      SELECT * FROM unnest(string_to_array(%s, ',')::uuid[], string_to_array(%s, ','),
                                           string_to_array(%s, ',')) AS v(user_id, old, new)),
                    u AS (UPDATE {INTEGRATIONS} t SET encrypted_api_key = v.new FROM v
                          WHERE t.user_id = v.user_id AND t.encrypted_api_key = v.old
                          RETURNING t.user_id)
                    SELECT v.user_id::text FROM v WHERE NOT EXISTS (SELECT FROM u WHERE u.user_id = v.user_id)""",
                (",".join(ids), joined_olds, joined_news),
            ).fetchall()
        return set(ids).difference(r[0] for r in missed)

    def _reread(self, user_ids: list[str]) -> list[tuple[str, str]]:
        with self.conn.transaction():
            return self.conn.execute(
                f"SELECT t.user_id::text AS uid, t.encrypted_api_key FROM {INTEGRATIONS} t WHERE t.user_id = ANY(%s::uuid[]) ORDER BY t.user_id",
                (user_ids,),
            ).fetchall()

    def _classify(
        self, rows: list[tuple[str, str]], report: Report
    ) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
        """Records current and undecryptable rows; returns the writes to make and their old keys.
        Every new ciphertext is decrypted back before it is written. A batch of uniform legacy
        rows is decrypted, encrypted and verified in one library call each."""
        olds = [old for _, old in rows]
        # A context is v2's associated data: a legacy batch needs none, and one per row costs
        # about as much as the row's AES work.
        needs_context = self.to_format == "v2" or any(isinstance(o, str) and o.startswith("v2:") for o in olds)
        contexts = [Context(uid) for uid, _ in rows] if needs_context else [None] * len(rows)
        results = self.keyring.decrypt_many(list(zip(olds, contexts, strict=True)), self.shape)
        planned, fps, plaintexts, planned_contexts, undecryptable, current = [], {}, [], [], [], []
        for (uid, old), ctx, result in zip(rows, contexts, results, strict=True):
            if isinstance(result, DecryptError):
                undecryptable.append((uid, result.reason))
                continue
            plaintext, fp = result
            if fp == self.new_fp and _is_format(old, self.to_format):
                current.append(fp)
                continue
            planned.append((uid, old))
            plaintexts.append(plaintext)
            planned_contexts.append(ctx)
            fps[uid] = fp
        news = self.keyring.encrypt_many(plaintexts, self.to_format, planned_contexts)
        verified = self.keyring.verify_many(list(zip(news, plaintexts, planned_contexts, strict=True)))
        if not all(verified):
            uid = next(uid for (uid, _), ok in zip(planned, verified, strict=True) if not ok)
            raise BundleError(
                f"verification of the new ciphertext failed for user {uid}; nothing of this batch was written"
            )
        with self._lock:  # the writer threads account their writes into the same report
            for uid, reason in undecryptable:
                report.undecryptable.append(uid)
                report.undecryptable_reasons[reason] += 1
            report.by_key.update(current)
            report.already_current += len(current)
        return [(uid, old, new) for (uid, old), new in zip(planned, news, strict=True)], fps

    def _account(
        self, planned: list[tuple[str, str, str]], fps: dict[str, str], written: set[str], report: Report
    ) -> list[str]:
        with self._lock:
            report.rotated += len(written)
            report.by_key.update(fps[uid] for uid in written)
            missed = [uid for uid, _, _ in planned if uid not in written]
            report.conflicts += len(missed)
        return missed

    def _handle(self, rows: list[tuple[str, str]], report: Report, apply: bool) -> None:
        for round_ in range(MAX_CAS_ROUNDS):
            planned, fps = self._classify(rows, report)
            if not apply:
                report.rotated += len(planned)
                report.by_key.update(fps.values())
                return
            if self.on_batch_read is not None and round_ == 0:
                self.on_batch_read(planned)
            missed = self._account(planned, fps, self._write(planned), report)
            if not missed:
                return
            # The app changed these rows after we read them: handle their current value next
            # round (a deleted row simply vanishes from the re-read).
            rows = self._reread(missed)
        raise BundleError(f"{len(rows)} rows kept changing under rotation after {MAX_CAS_ROUNDS} attempts; run again")

    def _batches(self) -> Iterator[list[tuple[str, str]]]:
        after = None
        while rows := self._read(after):
            yield rows
            after = rows[-1][0]

    @contextmanager
    def _read_ahead(self) -> Iterator[Iterator[list[tuple[str, str]]]]:
        """The batches, read by a thread of their own on the reading connection, up to two ahead:
        the main thread decrypts batch N while the server reads N+1, instead of waiting for it.
        A failed read (or the test seam's interrupt) is raised in the main thread, in its turn.
        On leaving, the reader is stopped and joined: the reading connection is free again."""
        ahead: queue.Queue[list[tuple[str, str]] | BaseException | None] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def offer(item: list[tuple[str, str]] | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    ahead.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def read() -> None:
            try:
                for rows in self._batches():
                    if not offer(rows):
                        return
                offer(None)
            except BaseException as exc:  # noqa: BLE001  # handed over, raised by the main thread
                offer(exc)

        def batches() -> Iterator[list[tuple[str, str]]]:
            while (item := ahead.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item

        reader = threading.Thread(target=read, name="rotation-reader", daemon=True)
        reader.start()
        try:
            yield batches()
        finally:
            stop.set()
            reader.join()

    def _run_pipelined(self, report: Report) -> None:
        missed: list[str] = []
        free: queue.SimpleQueue[psycopg.Connection] = queue.SimpleQueue()
        for conn in self.writers:
            free.put(conn)

        def write_and_account(planned: list[tuple[str, str, str]], fps: dict[str, str], n: int) -> None:
            # Accounted by the writer thread itself, right after its commit: Ctrl-C reaches only
            # the main thread, so no interrupt can fall between a committed batch and its count.
            conn = free.get()
            try:
                written = self._write(planned, conn)
            finally:
                free.put(conn)
            found = self._account(planned, fps, written, report)
            with self._lock:
                missed.extend(found)
                self.progress(n)

        # The reader and the writers hold the GIL only for moments between round trips; at the
        # default 5 ms switch interval each of those moments could wait behind the crypto.
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, 0.0005))
        try:
            self._pipeline(report, write_and_account)
        finally:
            sys.setswitchinterval(switch)
        if missed:
            # Conflicted rows: their accounting so far counted them as misses only.
            self._handle(self._reread(missed), report, apply=True)

    def _pipeline(
        self,
        report: Report,
        write_and_account: Callable[[list[tuple[str, str, str]], dict[str, str], int], None],
    ) -> None:
        """Read ahead, decrypt here, write on the pool. On any exit, the pool's shutdown waits for
        the writes in flight, which count themselves before the audit is written; then the
        reader stops."""
        in_flight: deque[Future[None]] = deque()
        with (
            self._read_ahead() as batches,
            ThreadPoolExecutor(max_workers=len(self.writers), thread_name_prefix="rotation-writer") as pool,
        ):
            for rows in batches:
                with self._lock:
                    report.total += len(rows)
                planned, fps = self._classify(rows, report)
                # One write in flight per writer connection; a failed write stops the run.
                while in_flight and (len(in_flight) >= len(self.writers) or in_flight[0].done()):
                    in_flight.popleft().result()
                if self.on_batch_read is not None:
                    self.on_batch_read(planned)
                in_flight.append(pool.submit(write_and_account, planned, fps, len(rows)))
            while in_flight:
                in_flight.popleft().result()

    def run(self, apply: bool) -> Report:
        report = Report(
            "apply" if apply else "dry-run",
            self.to_format,
            self.new_fp,
            [fp for fp in self.keyring.fingerprints if fp != self.new_fp],
        )
        if not _value(self.conn, "SELECT to_regclass(%s) IS NOT NULL", (INTEGRATIONS,)):
            raise BundleError(f"{INTEGRATIONS} does not exist: deploy migration 005 first")
        if apply:
            self._begin_audit(report)
        failing = False
        try:
            if apply and self.writers:
                self._run_pipelined(report)
            else:
                # A dry run writes nothing, so its reads can run ahead on their own thread; an
                # apply on one connection writes where it reads, so it reads in turn.
                with self._read_ahead() if not apply else nullcontext(self._batches()) as batches:
                    for rows in batches:
                        report.total += len(rows)
                        self._handle(rows, report, apply)
                        self.progress(len(rows))
            report.status = "completed" if apply else "dry-run"
            if apply and report.undecryptable:
                report.status = "incomplete"
        except KeyboardInterrupt:
            report.status, failing = "interrupted", True
            raise
        except BaseException:
            report.status, failing = "failed", True
            raise
        finally:
            report.finished_at = datetime.now(UTC).isoformat()
            if apply:
                try:
                    self._end_audit(report)
                except psycopg.Error:
                    if not failing:
                        raise
                    # The run's own error is the one to report; the next run marks this one
                    # interrupted, as after kill -9.
        return report

    # -- audit --------------------------------------------------------------------------------

    def _begin_audit(self, report: Report) -> None:
        if not _value(self.conn, "SELECT pg_try_advisory_lock(%s)", (ROTATION_LOCK_KEY,)):
            raise BundleError("another key rotation is running on this database; wait for it to finish")
        with self.conn.transaction():
            private.ensure(self.conn)
            self.conn.execute(_AUDIT_DDL)
            # We hold the rotation lock, so any run still marked running was killed.
            self.conn.execute(sql.SQL("UPDATE {} SET status = 'interrupted' WHERE status = 'running'").format(AUDIT))
            report.run_id = _value(
                self.conn,
                sql.SQL(
                    "INSERT INTO {} (to_format, new_fingerprint, old_fingerprints) VALUES (%s, %s, %s) RETURNING id"
                ).format(AUDIT),
                (report.to_format, report.new_fingerprint, report.old_fingerprints),
            )

    @staticmethod
    def _usable(conn: psycopg.Connection | None) -> TypeGuard[psycopg.Connection]:
        # After Ctrl-C in the middle of a query, libpq may still be busy with it (ACTIVE).
        return (
            conn is not None
            and not conn.closed
            and not conn.broken
            and conn.info.transaction_status != psycopg.pq.TransactionStatus.ACTIVE
        )

    def _end_audit(self, report: Report) -> None:
        """Record the outcome, on the reading connection or, if an interrupt left that one busy,
        on the writer's: the counts must reach the audit even then."""
        update = sql.SQL("UPDATE {} SET finished_at = now(), status = %s, summary = %s WHERE id = %s").format(AUDIT)
        conns = [c for c in (self.conn, *self.writers) if self._usable(c)]
        try:
            for i, conn in enumerate(conns):
                try:
                    with conn.transaction():
                        conn.execute(update, (report.status, json.dumps(report.as_dict()), report.run_id))
                    break
                except psycopg.Error:
                    if i == len(conns) - 1:
                        raise
        finally:
            # The session lock ends with the session anyway; release it early when we can.
            if self._usable(self.conn):
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (ROTATION_LOCK_KEY,))
