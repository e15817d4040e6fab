"""Migration files: discovery, checksums and the `-- x402:` directives they carry.

A migration is `sql/NNN_name.up.sql` plus `sql/NNN_name.down.sql`, and optionally
`sql/NNN_name.verify.sql`: statements that full smoke runs in a rolled-back transaction, each one
check that passes when it runs and fails with the exception it raises. Directives are SQL comments,
so the files stay valid SQL that any client can run:

    -- x402:targets: postgres             only on these targets (default: all)
    -- x402:adopt-if: <boolean SQL>       already present: record it, run nothing
    -- x402:require: <boolean SQL> | why  refuse up unless true
    -- x402:guard data-loss: <count SQL> | what   refuse down if > 0, unless data loss is allowed
    -- x402:guard always: <count SQL> | what      refuse down if > 0, always
    -- x402:lock: schema.table, ...       lock these against writes: an up before its statements,
                                          a down once its guards' first count passes (then it
                                          counts again). The engine adds the referenced tables of
                                          the foreign keys the script adds or drops, and takes
                                          them all in the order the database's own foreign keys
                                          imply, referenced tables first (lock_order.py)
    -- x402:no-transaction                statements below run one by one, each in its own
                                          transaction (or none, for what cannot run in one); a
                                          step that adds or drops a foreign key first locks the
                                          tables it references, in the same order as above
    -- x402:supersedes: <sha256> pin <sha256> | why
                                          an earlier text of this file whose applied result this
                                          text leaves as it is: a ledger row with that checksum is
                                          not drift (Sqitch's "rework", without a new version). The
                                          pin is the SHA-256 of this file without its supersedes
                                          lines (pin_checksum): an edit after the directive was
                                          written voids it, so the edit is drift everywhere

Each statement after the marker is its own transaction, in file order, so a step may be short
transactional DDL too, not only what cannot run in a transaction: 005 builds an index
CONCURRENTLY, then adds the foreign key that index serves (NOT VALID, in a DO block that tests the
catalog first), then validates it. A foreign key added in the transactional part would be in
force before any step builds its index, and every DELETE of a referenced row would read the whole
referencing table meanwhile. The ledger stays `steps-pending` until the last step has run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from .. import SQL_DIR
from ..errors import UsageError
from . import sqlparse

_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.up\.sql$")
_DIRECTIVE = re.compile(r"^--\s*x402:(?P<key>[a-z-]+(?: [a-z-]+)?):?\s*(?P<value>.*)$")
NO_TRANSACTION = "-- x402:no-transaction"


class Direction(StrEnum):
    """Which of a migration's two scripts runs: its up (apply) or its down (revert). The values
    are the commands' names and appear in the plan's JSON."""

    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Condition:
    sql: str
    message: str


@dataclass(frozen=True)
class Guard:
    sql: str
    message: str
    always: bool  # True: not even --allow-data-loss overrides it


@dataclass(frozen=True)
class Script:
    transactional: str
    steps: tuple[str, ...]
    statements: tuple[str, ...] = ()  # the transactional part, split by PostgreSQL's parser
    requires: tuple[Condition, ...] = ()
    guards: tuple[Guard, ...] = ()
    adopt_if: str | None = None
    targets: frozenset[str] | None = None
    lock_tables: tuple[str, ...] = ()
    supersedes: tuple[str, ...] = ()
    supersedes_pinned: bool = True  # every supersedes pin matches the text: the directive vouches for this text


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    up: Script
    down: Script
    checksum: str
    up_path: Path = field(compare=False)
    up_text: str = field(default="", compare=False, repr=False)
    down_text: str = field(default="", compare=False, repr=False)
    verify_text: str = field(default="", compare=False, repr=False)

    @property
    def down_checksum(self) -> str:
        # Recorded at apply time: the down holds the data-loss guards, so an edit to it is drift too.
        return checksum(self.down_text)

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"

    def matches(self, recorded_checksum: str) -> bool:
        """Whether a ledger row with this checksum records this migration (not drift)."""
        return recorded_checksum == self.checksum or self.superseded(recorded_checksum)

    def superseded(self, recorded_checksum: str) -> bool:
        """Whether the row records an earlier text that this text's x402:supersedes accepts."""
        return (
            recorded_checksum != self.checksum and recorded_checksum in self.up.supersedes and self.up.supersedes_pinned
        )

    @property
    def stale_supersedes(self) -> bool:
        """The file was edited after its x402:supersedes was written: the directive is void."""
        return bool(self.up.supersedes) and not self.up.supersedes_pinned

    def script(self, direction: Direction) -> Script:
        return self.up if direction == Direction.UP else self.down

    def applies_to(self, target: str) -> bool:
        return self.up.targets is None or target in self.up.targets


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_supersedes(line: str) -> bool:
    m = _DIRECTIVE.match(line.strip())
    return m is not None and m["key"] == "supersedes"


def pin_checksum(text: str) -> str:
    """What an x402:supersedes pin names: the SHA-256 of the file without its supersedes lines
    (each a whole-line comment, so leaving them out changes no SQL)."""
    return checksum("".join(line for line in text.splitlines(keepends=True) if not _is_supersedes(line)))


def _split_condition(value: str, path: Path) -> tuple[str, str]:
    sql, sep, message = value.partition(" | ")
    if not sep or not sql.strip() or not message.strip():
        raise UsageError(f"{path.name}: directive needs '<sql> | <message>': {value[:80]}")
    return sql.strip(), message.strip()


def parse_script(text: str, path: Path) -> Script:
    requires: list[Condition] = []
    guards: list[Guard] = []
    adopt_if: str | None = None
    targets: frozenset[str] | None = None
    lock_tables: tuple[str, ...] = ()
    supersedes: list[str] = []
    pins: list[str] = []
    for line in text.splitlines():
        m = _DIRECTIVE.match(line.strip())
        if not m or line.strip() == NO_TRANSACTION:
            continue
        key, value = m["key"], m["value"].strip()
        if key == "targets":
            targets = frozenset(t.strip() for t in value.split(",") if t.strip())
        elif key == "lock":
            lock_tables = tuple(t.strip() for t in value.split(",") if t.strip())
        elif key == "adopt-if":
            adopt_if = value
        elif key == "require":
            requires.append(Condition(*_split_condition(value, path)))
        elif key == "supersedes":
            what, _why = _split_condition(value, path)
            m2 = re.fullmatch(r"(?P<old>[0-9a-f]{64})\s+pin\s+(?P<pin>[0-9a-f]{64})", what)
            if not m2:
                raise UsageError(
                    f"{path.name}: x402:supersedes takes '<sha256 of the earlier text> pin <sha256 of this "
                    "text without its supersedes lines> | why', each 64 lowercase hex digits"
                )
            supersedes.append(m2["old"])
            pins.append(m2["pin"])
        elif key in ("guard data-loss", "guard always"):
            guards.append(Guard(*_split_condition(value, path), always=key == "guard always"))
        else:
            raise UsageError(f"{path.name}: unknown directive x402:{key}")
    head, marker, tail = text.partition(NO_TRANSACTION)
    in_tx = sqlparse.statements(head, path.name)
    steps = sqlparse.statements(tail, f"{path.name} (after {NO_TRANSACTION})") if marker else ()
    for s in (*in_tx, *steps):
        if sqlparse.controls_transaction(s):
            raise UsageError(
                f"{path.name}: {s.sql.split()[0].upper()} controls the transaction the engine runs the "
                f"migration in; remove it (the part before {NO_TRANSACTION} is already one transaction, "
                "each statement after it runs on its own)"
            )
    for s in in_tx:
        if sqlparse.outside_transaction_only(s):
            raise UsageError(
                f"{path.name}: {' '.join(s.sql.split()[:4])}... cannot run inside a transaction block; "
                f"move it after {NO_TRANSACTION}"
            )
    return Script(
        transactional=head,
        statements=tuple(s.sql for s in in_tx),
        steps=tuple(s.sql for s in steps),
        requires=tuple(requires),
        guards=tuple(guards),
        adopt_if=adopt_if,
        targets=targets,
        lock_tables=lock_tables,
        supersedes=tuple(supersedes),
        supersedes_pinned=all(p == pin_checksum(text) for p in pins),
    )


def _check_verify(path: Path) -> None:
    """Smoke runs a verify file inside a transaction it rolls back against the live database: a
    COMMIT (or BEGIN, SAVEPOINT...) would end that transaction and commit what came before it."""
    for s in sqlparse.statements(path.read_text(encoding="utf-8"), path.name):
        if sqlparse.controls_transaction(s):
            raise UsageError(
                f"{path.name}: {s.sql.split()[0].upper()} would end the transaction smoke rolls back and "
                "commit to the database; remove it (the whole file already runs in one transaction)"
            )


def load(sql_dir: Path = SQL_DIR) -> list[Migration]:
    found = []
    for up_path in sorted(sql_dir.glob("*.up.sql")):
        m = _NAME.match(up_path.name)
        if not m:
            raise UsageError(f"{up_path.name}: migration files are named NNN_name.up.sql")
        down_path = up_path.with_name(up_path.name.replace(".up.sql", ".down.sql"))
        verify_path = up_path.with_name(up_path.name.replace(".up.sql", ".verify.sql"))
        if not down_path.exists():
            raise UsageError(f"{up_path.name} has no {down_path.name}; every migration needs a revert")
        found.append(
            from_texts(
                m["version"],
                m["name"],
                up_path.read_text(encoding="utf-8"),
                down_path.read_text(encoding="utf-8"),
                up_path,
                verify_path.read_text(encoding="utf-8") if verify_path.exists() else "",
            )
        )
    for verify_path in sorted(sql_dir.glob("*.verify.sql")):
        if not verify_path.with_name(verify_path.name.replace(".verify.sql", ".up.sql")).exists():
            raise UsageError(f"{verify_path.name} has no up file beside it; name it after its migration's up file")
        _check_verify(verify_path)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise UsageError(f"duplicate migration versions in {sql_dir}")
    return found


def from_texts(
    version: str, name: str, up_text: str, down_text: str, up_path: Path | None = None, verify_text: str = ""
) -> Migration:
    """A migration from its texts: the Pulumi resource keeps them in state, so `destroy` runs
    the down script that belongs to what was applied, whatever the checkout holds then."""
    path = up_path or Path(f"{version}_{name}.up.sql")
    return Migration(
        version=version,
        name=name,
        up=parse_script(up_text, path),
        down=parse_script(down_text, path.with_name(path.name.replace(".up.sql", ".down.sql"))),
        checksum=checksum(up_text),
        up_path=path,
        up_text=up_text,
        down_text=down_text,
        verify_text=verify_text,
    )


SHIPPED_DOWNS_FILE = Path(__file__).with_name("shipped_downs.json")


def shipped_downs() -> dict[str, tuple[str, ...]]:
    """version -> the SHA-256 of every down file this bundle ever shipped, oldest first: data kept
    in the package (shipped_downs.json), never computed from the checkout's sql/, which may be edited."""
    data = json.loads(SHIPPED_DOWNS_FILE.read_text(encoding="utf-8"))
    return {v: tuple(sums) for v, sums in data.items() if re.fullmatch(r"[0-9]{3}", v)}


BASE = "base"  # `down --to base` reverts every migration


def resolve_version(migrations: list[Migration], text: str, *, allow_base: bool = False) -> str:
    """The canonical version (`1` -> `001`) of a known migration, or BASE; UsageError otherwise.

    Versions are compared as numbers, never as strings, so `--to 1` cannot match `005`."""
    known = ", ".join(m.version for m in migrations) + (f" or {BASE}" if allow_base else "")
    value = str(text).strip()
    if allow_base and value == BASE:
        return BASE
    number = value.split("_", 1)[0]
    if re.fullmatch(r"[0-9]+", number):  # not str.isdigit(): it takes '²' and '٥' too
        for m in migrations:
            if int(m.version) == int(number) and (number == value or m.label == value):
                return m.version
    raise UsageError(f"--to must be a known migration version ({known})")


def find(migrations: list[Migration], version: str) -> Migration:
    for m in migrations:
        if m.version == version or m.label == version:
            return m
    raise UsageError(f"no migration {version!r}; known: {', '.join(m.version for m in migrations)}")
