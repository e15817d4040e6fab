"""An in-memory `Catalog` (x402db.plan.lockmap's protocol): the database as a few dicts, so each
lock rule is checked in milliseconds without a server. Unqualified names resolve to `public`."""

from __future__ import annotations

from dataclasses import dataclass, field

from x402db.plan.lockmap import CatalogChanges
from x402db.plan.rules.prediction import IndexShape


@dataclass
class FakeCatalog:
    relations: set[str] = field(default_factory=set)
    indexes: dict[str, str] = field(default_factory=dict)  # index -> its table
    fks: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = field(default_factory=dict)
    sequences_of: dict[str, dict[str, str]] = field(default_factory=dict)
    referencing_keys_of: dict[str, list[tuple[str, str, str, tuple[str, ...]]]] = field(default_factory=dict)
    volatile_functions: set[str] = field(default_factory=lambda: {"random", "gen_random_uuid", "clock_timestamp"})
    domains: set[str] = field(default_factory=set)
    invalid: set[tuple[str, str]] = field(default_factory=set)  # constraints added NOT VALID
    objects: set[tuple[str, str, str]] = field(default_factory=set)  # kind, table, name
    version: int = 180000
    parts: dict[str, list[str]] = field(default_factory=dict)  # direct partitions
    keys: dict[str, set[str]] = field(default_factory=dict)
    user_functions: set[str] = field(default_factory=set)
    code: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (table, event) -> functions
    depends: dict[tuple[str, str], list[tuple[str, bool]]] = field(default_factory=dict)
    created: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)
    index_shapes_of: dict[str, list[IndexShape]] = field(default_factory=dict)

    def qualify(self, schema: str | None, name: str) -> str:
        return f"{schema or 'public'}.{name}"

    def exists(self, relation: str) -> bool:
        return relation not in self.dropped and (relation in self.relations or relation in self.created)

    def is_new(self, relation: str) -> bool:
        return relation in self.created

    def index_table(self, schema: str | None, index: str) -> str | None:
        table = self.indexes.get(self.qualify(schema, index))
        return table if table and self.exists(table) else None

    def foreign_keys(self, table: str) -> dict[str, tuple[str, tuple[str, ...]]]:
        return {n: fk for n, fk in self.fks.get(table, {}).items() if fk[0] not in self.dropped}

    def referencing(self, table: str) -> list[str]:
        return sorted({t for t, keys in self.fks.items() for ref, _ in keys.values() if ref == table and t != table})

    def sequences(self, table: str) -> dict[str, str]:
        return dict(self.sequences_of.get(table, {}))

    def referencing_keys(self, table: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
        return list(self.referencing_keys_of.get(table, []))

    def volatile(self, function: str) -> bool:
        return function.rpartition(".")[2] in self.volatile_functions or function in self.user_functions

    def constrained_domain(self, type_name: str) -> bool:
        return type_name in self.domains or type_name.rpartition(".")[2] in self.domains

    def constraint_valid(self, table: str, name: str) -> bool:
        return (table, name) not in self.invalid

    def has_object(self, kind: str, table: str, name: str) -> bool:
        return (kind, table, name) in self.objects

    def server_version(self) -> int:
        return self.version

    def partitions(self, table: str) -> list[str]:
        out, todo = [], [table]
        while todo:
            for child in self.parts.get(todo.pop(), []):
                out.append(child)
                todo.append(child)
        return out

    def key_columns(self, table: str) -> set[str]:
        return set(self.keys.get(table, set()))

    def builtin(self, function: str) -> bool:
        schema, _, name = function.rpartition(".")
        return schema in ("", "pg_catalog") and function not in self.user_functions and name not in self.user_functions

    def user_code(self, table: str, event: str) -> list[str]:
        return list(self.code.get((table, event), []))

    def dependents(self, kind: str, name: str) -> list[tuple[str, bool]] | None:
        return self.depends.get((kind, name))

    def index_shapes(self, table: str) -> list[IndexShape]:
        return list(self.index_shapes_of.get(table, []))

    def apply(self, changes: CatalogChanges) -> None:
        self.created |= set(changes.created)
        self.dropped |= set(changes.dropped)
        self.created -= set(changes.dropped)
        self.invalid |= set(changes.not_valid_added)
        self.invalid -= set(changes.validated)
        self.objects |= set(changes.objects_added)
        self.objects -= set(changes.objects_dropped)
        for table, name, ref, cols in changes.fk_added:
            self.fks.setdefault(table, {})[name] = (ref, cols)
        for table, name, _cols in changes.fk_dropped:
            self.fks.get(table, {}).pop(name, None)
        self.user_functions |= set(changes.functions)
        self.domains |= set(changes.domains)
        for table, shape in changes.indexes_added:
            self.index_shapes_of.setdefault(table, []).append(shape)
        for parent, part in changes.attached:
            self.parts.setdefault(parent, []).append(part)
        for parent, part in changes.detached:
            self.parts.get(parent, []).remove(part)
