"""The plan in words: the compact table for a human at 2 a.m. (`--json` prints the same content),
its one-line summary, and the sentence each statement's step carries about concurrent writers.
Depends on the plan's model and the lock modes only, never on what opens a transaction."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .locks import SAME_KEY_INSERT, blocked_by, blocks_reads, blocks_writes, row_writers_waiting, strongest
from .model import Plan, RowLock

if TYPE_CHECKING:
    from .lockmap import Prediction


class Sizes(Protocol):
    def of(self, relation: str) -> tuple[int | None, int | None]: ...  # (rows estimate, bytes)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "?"


def _how(effect: str, rel: str, sizes: Sizes) -> str:
    rows, size = sizes.of(rel)
    figures = f"~{rows:,} rows, {human_bytes(size)}" if rows is not None else human_bytes(size)
    return {
        "catalog": "catalog-only",
        "create": "catalog-only",
        "drop": "drops it",
        "scan": f"reads every row of {rel} ({figures})",
        "rewrite": f"rewrites {rel} ({figures})",
    }.get(effect, effect)


_WHICH = {
    "all": "every row of {rel}{figures}",
    "where": "every row of {rel} its WHERE matches",
    "returned": "every row of {rel} it returns",
    "conflicting": "every row of {rel} a new row conflicts with",
    "matched": "every row of {rel} its ON condition matches",
    "referenced": "every row of {rel} its rows reference",
    "referencing": "every row of {rel} that references a row it deletes or re-keys",
    "inserted": "every row it inserts into {rel}",
}


def row_locks(p: Prediction, phase: str, new: set[str], sizes: Sizes) -> list[RowLock]:
    """The row locks on relations other sessions see, and which of their writes wait for them
    (from the row-level conflict table)."""
    out = []
    for rel, (mode, rows) in p.row_locks.items():
        if rel in new:
            continue
        n = sizes.of(rel)[0]
        figures = f" (~{n:,} rows)" if n is not None else ""
        which = _WHICH[rows].format(rel=rel, figures=figures)
        waits = [SAME_KEY_INSERT] if rows == "inserted" else row_writers_waiting(mode)
        out.append(RowLock(rel, mode, rows, which, "COMMIT" if phase == "transaction" else "end of statement", waits))
    return out


def _row_part(r: RowLock) -> str:
    if r.rows == "inserted":
        return f"another session's INSERT of one of the unique keys it inserts into {r.relation} waits until {r.until}"
    waits = ", ".join(r.waits)
    return f"locks {r.which} {r.mode} until {r.until}: another session's {waits} of one of those rows waits until then"


def unindexed_fk_sentence(table: str, columns: tuple[str, ...], ref: str, phase: str, sizes: Sizes) -> str:
    """What a foreign key no index serves costs the referenced table's writers, from the moment
    it is in force: PostgreSQL looks up the referencing rows of each row deleted (or re-keyed)
    with `WHERE col = $1`, and without an index that lookup reads the whole table."""
    rows, size = sizes.of(table)
    figures = f"~{rows:,} rows, {human_bytes(size)}" if rows is not None else human_bytes(size)
    since = "from COMMIT on" if phase == "transaction" else "from the end of this step on"
    return (
        f"{since}, until an index on {table} ({', '.join(columns)}) exists, each DELETE from {ref} (and each "
        f"UPDATE of its key) reads every row of {table} ({figures}) to find the rows that reference it"
    )


def writers_sentence(
    p: Prediction, phase: str, new: set[str], held: dict[str, str], sizes: Sizes, lock_timeout: str
) -> str:
    """What a concurrent writer feels, now and, for a foreign key no index serves, afterwards.
    `held`: write-blocking locks earlier statements of the same transaction already hold (they
    last until COMMIT)."""
    later = [unindexed_fk_sentence(t, cols, ref, phase, sizes) for t, cols, ref in p.unindexed_fks]
    return "; ".join([_writers_now(p, phase, new, held, sizes, lock_timeout), *later])


def _writers_now(
    p: Prediction, phase: str, new: set[str], held: dict[str, str], sizes: Sizes, lock_timeout: str
) -> str:
    if not p.known:
        return f"unknown statement ({p.note}): assume it blocks reads and writes of every table it touches"
    old = {rel: mode for rel, mode in p.locks.items() if rel not in new}
    rows = [_row_part(r) for r in row_locks(p, phase, new, sizes)]
    # A lock that blocks more than what the transaction already holds on that table is news,
    # such as AccessExclusiveLock (reads too) after the guards' ShareRowExclusiveLock.
    blocking = {
        rel: mode
        for rel, mode in old.items()
        if blocks_writes(mode) and (rel not in held or (blocks_reads(mode) and not blocks_reads(held[rel])))
    }
    still = sorted(rel for rel in old if rel in held and rel not in blocking)
    parts = [
        f"blocks {'reads and writes' if blocks_reads(mode) else 'writes'} of {rel}" for rel, mode in blocking.items()
    ]
    if still:
        parts.append(f"{', '.join(still)} still {'locked' if len(still) == 1 else 'locked'} by an earlier statement")
    if not parts:
        if p.effect in ("scan", "rewrite") and old:
            rel = max(old, key=lambda r: (sizes.of(r)[0] or 0, r))
            lock = f"it {_how(p.effect, rel, sizes)} under {old[rel]}, which blocks only {', '.join(blocked_by(old[rel]))} on that table"
            return "; ".join(rows + [lock]) if rows else f"no writer waits; {lock}"
        if rows:
            return "; ".join(rows)
        return (
            "no writer waits (new relations stay invisible to other sessions until COMMIT)"
            if p.changes.created
            else "no writer waits"
        )
    rel = max(list(blocking) + still, key=lambda r: sizes.of(r)[0] or 0)
    how = _how(p.effect, rel, sizes)
    until = " until COMMIT" if phase == "transaction" else ""
    bound = f", waiting for its lock bounded by lock_timeout {lock_timeout}" if blocking else ""
    return "; ".join([f"{'; '.join(parts)}{until}", *rows, f"{how}{bound}"])


_PHASE = {"transaction": "tx", "no-transaction": "step"}
_INDENT = " " * 19


def _first_line(sql: str, width: int = 78) -> str:
    line = " ".join(sql.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _size(rows: int | None, size: int | None, new: bool) -> str:
    if new:
        return "new"
    if rows is None and size is None:
        return ""
    return f"~{rows:,} rows  {human_bytes(size)}" if rows is not None else human_bytes(size)


def summary(plan: Plan) -> str:
    """One line: the migrations, the strongest lock per table and the largest table touched."""
    if not plan.migrations:
        return f"plan: {plan.direction} on {plan.target}: nothing to do"
    held: dict[str, str] = {}
    largest = None  # (rows, bytes, relation); rows unknown (never analysed) ranks by bytes
    for m in plan.migrations:
        for st in m.statements:
            for lock in st.locks:
                held[lock.relation] = strongest([held.get(lock.relation, lock.mode), lock.mode])
                if lock.bytes is not None or lock.rows_estimate is not None:
                    key = (lock.rows_estimate if lock.rows_estimate is not None else -1, lock.bytes or 0, lock.relation)
                    largest = max(largest or key, key)
    versions = ", ".join(f"{m.version} {m.action}" for m in plan.migrations)
    locks = ", ".join(f"{rel} {mode}" for rel, mode in sorted(held.items())) or "none"
    big = ""
    if largest:
        rows = "" if largest[0] < 0 else f"~{largest[0]:,} rows, "
        big = f"; largest table touched: {largest[2]} ({rows}{human_bytes(largest[1])})"
    return f"plan: {plan.direction} {versions} on {plan.target}: {plan.verdict}; strongest locks: {locks}{big}"


def print_plan(plan: Plan, out: Callable[[str], None] = print) -> None:
    e = plan.engine
    extra = ""
    if plan.verdict_with_allow_data_loss and plan.verdict_with_allow_data_loss != plan.verdict:
        extra = f" (with --allow-data-loss: {plan.verdict_with_allow_data_loss.upper()})"
    out(f"plan: {plan.direction} on target {plan.target}: {plan.verdict.upper()}{extra}")
    out(
        f"engine: lock_timeout {e['lock_timeout']} per statement, retried {e['retries']} times "
        f"(backoff {e['backoff_s']:g}s doubling to {e['backoff_max_s']:g}s); statement_timeout "
        f"{e['statement_timeout']} in the transaction, {e['step_timeout']} (none) for no-transaction steps"
    )
    for note in plan.blocked_reads:
        out(f"note: {note}")
    if not plan.migrations:
        out(summary(plan))
        return
    for m in plan.migrations:
        out("")
        out(
            f"{m.version}_{m.name}: {m.action}, {m.verdict.upper()}"
            + (
                f" (with --allow-data-loss: {m.verdict_with_allow_data_loss.upper()})"
                if m.verdict_with_allow_data_loss and m.verdict_with_allow_data_loss != m.verdict
                else ""
            )
        )
        for reason in m.reasons:
            out(f"  refused: {reason}")
        if m.reasons and m.action == "revert":
            out("  refused: the down stops by the guards' first count, before any lock that blocks writers")
        for r in m.requires:
            mark = {True: "ok", False: "FAILS", None: "not read"}[r["holds"]]
            out(f"  require {mark:<8} {r['sql']}" + ("" if r["holds"] else f"  ({r['message']})"))
        for g in m.guards:
            count = "?" if g.count is None else g.count
            out(f"  guard   {g.verdict:<8} {g.kind:<9} {count:>9}  {g.message}")
        if m.action in ("adopt", "forget"):
            out(
                "  runs nothing: "
                + (
                    "already present, only recorded in the ledger"
                    if m.action == "adopt"
                    else "it was adopted, so only its ledger row is removed"
                )
            )
            continue
        out(f"  {'#':>3} {'phase':<5} {'effect':<8} statement / lock, relation, size")
        for i, st in enumerate(m.statements, 1):
            tag = "" if st.source == "file" else f"[{st.source}] "
            out(f"  {i:>3} {_PHASE[st.phase]:<5} {st.effect:<8} {tag}{_first_line(st.sql)}")
            for lock in st.locks:
                out(f"{_INDENT}{lock.mode:<25} {lock.relation:<40} {_size(lock.rows_estimate, lock.bytes, lock.new)}")
            for row in st.row_locks:
                out(f"{_INDENT}{'rows ' + row.mode:<25} {row.relation:<40} {row.rows}, until {row.until}")
            if st.locks or st.writers != "no writer waits":
                for line in textwrap.wrap(f"writers: {st.writers}", 96):
                    out(f"{_INDENT}{line}")
    # The one line `make deploy` and `pulumi preview` print too: the same words everywhere.
    out("")
    out(summary(plan))
