"""What one statement does, as the plan predicts it: the locks it takes (on tables, and on rows),
and apart from them the catalog changes it leaves, against which the next statement is predicted.
`Catalog` is everything a rule may ask of the database."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Protocol

from ..locks import ACCESS_EXCLUSIVE, ANY, EFFECTS, Effect, strongest, strongest_row

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

# What a foreign key's lookup of the referencing rows needs to know of an index on their table:
# its key columns in order (None for an expression), and the columns its predicate only tests
# IS NOT NULL ("not partial" is the empty set; None: a predicate a lookup cannot be proven to meet).
IndexShape = tuple[tuple[str | None, ...], frozenset[str] | None]


def _joined(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _lockable(relation: str | None) -> bool:
    """A user relation: a system catalog's lock is PostgreSQL's business, not the plan's."""
    return relation is not None and relation.split(".", 1)[0] not in SYSTEM_SCHEMAS


@dataclass
class CatalogChanges:
    """What a statement leaves in the catalog that changes how the next one is predicted."""

    created: list[str] = field(default_factory=list)  # relations
    dropped: list[str] = field(default_factory=list)
    fk_added: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)  # table, name, referenced, cols
    fk_dropped: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)  # table, name, columns
    validated: list[tuple[str, str]] = field(default_factory=list)  # table, constraint: added valid, or validated
    not_valid_added: list[tuple[str, str]] = field(default_factory=list)
    objects_added: list[tuple[str, str, str]] = field(default_factory=list)  # kind, table, name (policies, triggers)
    objects_dropped: list[tuple[str, str, str]] = field(default_factory=list)
    attached: list[tuple[str, str]] = field(default_factory=list)  # parent, partition
    detached: list[tuple[str, str]] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)  # constrained domains
    functions: list[str] = field(default_factory=list)  # names of the functions created
    indexes_added: list[tuple[str, IndexShape]] = field(default_factory=list)  # table, shape

    def merge(self, other: CatalogChanges) -> None:
        for f in fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))


@dataclass
class Prediction:
    """The locks of one statement (`locks`: relation -> table lock mode; `row_locks`: relation ->
    (row lock mode, which rows)), its effect on existing rows, and its catalog `changes`."""

    kind: str
    effect: str
    locks: dict[str, str] = field(default_factory=dict)
    known: bool = True
    note: str = ""
    row_locks: dict[str, tuple[str, str]] = field(default_factory=dict)
    changes: CatalogChanges = field(default_factory=CatalogChanges)
    # Foreign keys it adds that no index of the referencing table serves: (referencing table,
    # columns, referenced table). Once they commit, every DELETE of a referenced row (and UPDATE
    # of its key) reads the whole referencing table to find the rows that point at it.
    unindexed_fks: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)

    def lock(self, relation: str | None, mode: str) -> None:
        if relation is None or not _lockable(relation):
            return
        held = self.locks.get(relation)
        self.locks[relation] = mode if held is None else strongest((held, mode))

    def lock_rows(self, relation: str | None, mode: str, rows: str) -> None:
        if relation is None or not _lockable(relation):
            return
        held = self.row_locks.get(relation)
        if held is None or held[1] == "inserted":
            self.row_locks[relation] = (mode, rows)
        elif rows == "inserted":
            return
        else:  # the stronger mode; "all" rows over a subset
            self.row_locks[relation] = (strongest_row((held[0], mode)), "all" if "all" in (rows, held[1]) else held[1])

    def worse(self, effect: str) -> None:
        self.effect = max(self.effect, effect, key=EFFECTS.index)

    def unknown(self, why: str, on: Iterable[str | None] = (), *, lead: bool = False) -> None:
        """It runs code the plan cannot see, so it may lock anything and do anything: the
        relations `on` names are taken AccessExclusiveLock, and with none of them any relation
        is. `lead`: the reason explains the notes already there, so it goes first."""
        self.known = False
        self.effect = Effect.UNKNOWN
        named = [rel for rel in on if rel is not None and _lockable(rel)]
        for rel in named:
            self.lock(rel, ACCESS_EXCLUSIVE)
        if not named:
            self.locks[ANY] = ACCESS_EXCLUSIVE
        self.note = _joined(why, self.note) if lead else _joined(self.note, why)

    def merge(self, other: Prediction) -> None:
        """`other` ran as part of this statement (a DO block's body, a data-modifying CTE): its
        locks are this statement's, and so are its effect and what it leaves in the catalog."""
        for rel, mode in other.locks.items():
            self.lock(rel, mode)
        for rel, (mode, rows) in other.row_locks.items():
            self.lock_rows(rel, mode, rows)
        self.worse(other.effect)
        if not other.known:
            self.known = False
            self.note = _joined(self.note, other.note)
        self.changes.merge(other.changes)
        self.unindexed_fks.extend(other.unindexed_fks)


class Catalog(Protocol):
    """What the rules need to know about the database, as it will be when the statement runs."""

    def qualify(self, schema: str | None, name: str) -> str: ...
    def exists(self, relation: str) -> bool: ...
    def is_new(self, relation: str) -> bool: ...  # created by a statement planned before this one
    def index_table(self, schema: str | None, index: str) -> str | None: ...
    # name -> (referenced table, columns)
    def foreign_keys(self, table: str) -> dict[str, tuple[str, tuple[str, ...]]]: ...
    def referencing(self, table: str) -> list[str]: ...  # tables with a foreign key to `table`
    def sequences(self, table: str) -> dict[str, str]: ...  # sequence -> the column drawing from it
    # (referencing table, on delete, on update, referenced columns)
    def referencing_keys(self, table: str) -> list[tuple[str, str, str, tuple[str, ...]]]: ...
    def volatile(self, function: str) -> bool: ...
    def constrained_domain(self, type_name: str) -> bool: ...  # a domain with CHECK or NOT NULL constraints
    def constraint_valid(self, table: str, name: str) -> bool: ...
    def has_object(self, kind: str, table: str, name: str) -> bool: ...  # a policy, trigger or rule on `table`
    def server_version(self) -> int: ...  # server_version_num
    def partitions(self, table: str) -> list[str]: ...  # every partition below `table`, recursively
    def key_columns(self, table: str) -> set[str]: ...  # columns of its unique indexes (a foreign key's target)
    def builtin(self, function: str) -> bool: ...  # can only resolve to a function of pg_catalog
    # non-builtin functions an INSERT/UPDATE/DELETE/TRUNCATE runs (triggers, defaults), or a view's query
    def user_code(self, table: str, event: str) -> list[str]: ...
    # (relation, dropped) a DROP ... CASCADE reaches; None when the object cannot be resolved
    def dependents(self, kind: str, name: str) -> list[tuple[str, bool]] | None: ...
    def index_shapes(self, table: str) -> list[IndexShape]: ...  # its valid indexes, and those planned so far
    def apply(self, changes: CatalogChanges) -> None: ...  # the statement ran
