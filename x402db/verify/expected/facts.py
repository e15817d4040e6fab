"""The catalog as facts: one JSON-serialisable dict per object, keyed by (kind, identity).

Identities are qualified names, never OIDs, so two databases (a scratch one and a live one)
compare. Every text is rendered under `search_path = pg_catalog`, set for the transaction, so a
name outside pg_catalog is always qualified and no fact depends on who connects or on their path.
System schemas, the bookkeeping schema and extension-owned objects are left out.

A sub-object's value names its parent in "on" ([kind, identity]): compare.py uses it to find
extra facts (a policy, a column, a grant) added to an object a migration owns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from pglast.visitors import Visitor
from psycopg.pq import TransactionStatus

from ...private import PRIVATE_SCHEMA

Key = tuple[str, str]
Facts = dict[Key, dict[str, Any]]

SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", PRIVATE_SCHEMA)
# The schema filter every query shares: n is the object's pg_namespace row.
_USER_SCHEMA = "n.nspname <> ALL(%(skipped)s) AND n.nspname !~ '^pg_(toast|temp)'"


def _not_extension(catalog: str, oid: str) -> str:
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{catalog}'::regclass"
        f" AND e.objid = {oid} AND e.deptype = 'e')"
    )


RELKINDS = {
    "r": "table",
    "p": "table",
    "f": "foreign table",
    "v": "view",
    "m": "materialized view",
    "S": "sequence",
    "c": "composite type",
}
POLCMD = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
TGENABLED = {"O": "origin", "D": "disabled", "R": "replica", "A": "always"}
VOLATILITY = {"i": "immutable", "s": "stable", "v": "volatile"}
PROKIND = {"f": "function", "p": "procedure", "a": "aggregate", "w": "window"}
# pg_trigger.tgtype bits (src/include/catalog/pg_trigger.h)
TG_ROW, TG_BEFORE, TG_INSERT, TG_DELETE, TG_UPDATE, TG_TRUNCATE, TG_INSTEAD = 1, 2, 4, 8, 16, 32, 64
# acldefault()'s object types, for "every privilege of this kind of object" (ALL)
ACL_TYPES = {"table": "r", "sequence": "s", "function": "f", "schema": "n", "column": "c"}
ALL = "ALL"


def squash(text: str | None) -> str | None:
    """An expression or definition with each run of whitespace made one space: the deparser's line
    breaks and indentation are layout, not meaning. Measured: the bundle's migrations render the
    same text on PostgreSQL 15 and 18 once squashed this way (and, today, even unsquashed)."""
    return None if text is None else " ".join(text.split())


class _Relations(Visitor):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_RangeVar(self, _ancestors: Any, node: ast.RangeVar) -> None:
        if node.alias is None and node.relname:
            self.names.add(node.relname)


class _Unqualified(Visitor):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def visit_ColumnRef(self, _ancestors: Any, node: ast.ColumnRef) -> ast.ColumnRef | None:
        fields = node.fields or ()
        if len(fields) == 2 and isinstance(fields[0], ast.String) and (fields[0].sval or "") in self.names:
            return ast.ColumnRef(fields=(fields[1],), location=node.location)
        return None


def view_definition(text: str) -> str | None:
    """A view's query in one form whatever the server: PostgreSQL 15 prints `t.col` where 16 and
    later print `col` for an unaliased relation, so those qualifiers go, through the parser."""
    try:
        statements = parse_sql(text)
    except ParseError:
        return squash(text)
    relations = _Relations()
    relations(statements)
    _Unqualified(relations.names)(statements)
    return str(RawStream()(statements))


def tgtype_words(tgtype: int) -> tuple[str, list[str], str]:
    """(timing, events, level) from pg_trigger.tgtype."""
    timing = "INSTEAD OF" if tgtype & TG_INSTEAD else "BEFORE" if tgtype & TG_BEFORE else "AFTER"
    events = [
        name
        for bit, name in (
            (TG_INSERT, "INSERT"),
            (TG_UPDATE, "UPDATE"),
            (TG_DELETE, "DELETE"),
            (TG_TRUNCATE, "TRUNCATE"),
        )
        if tgtype & bit
    ]
    return timing, events, "ROW" if tgtype & TG_ROW else "STATEMENT"


def privileges(held: Iterable[str], every: frozenset[str]) -> list[str]:
    """Sorted privilege names; the whole set of the object's kind is ALL, so that PostgreSQL 17's
    MAINTAIN (part of ALL on a table there, unknown on 15) does not set two servers apart."""
    got = set(held)
    return [ALL] if len(every) > 1 and got >= every else sorted(got)


def acl_key(kind: str, obj: str, grantee: str) -> Key:
    return (kind, f"{obj} to {grantee}")


def rename_role(facts: Facts, old: str, new: str) -> Facts:
    """The facts with role `old` called `new` wherever a role is named: owners, policy roles,
    memberships and grantees (in values and in ACL identities)."""
    out: Facts = {}
    for (kind, identity), value in facts.items():
        value = dict(value)
        if value.get("owner") == old:
            value["owner"] = new
        for field in ("roles", "member_of"):
            if field in value:
                value[field] = sorted(new if r == old else r for r in value[field])
        if value.get("grantee") == old:
            value["grantee"] = new
            identity = acl_key(kind, identity.removesuffix(f" to {old}"), new)[1]
        out[(kind, identity)] = value
    return out


@contextmanager
def read_only(conn: psycopg.Connection) -> Iterator[None]:
    """The caller's transaction if it holds one, else a read-only one rolled back at the end."""
    if conn.info.transaction_status != TransactionStatus.IDLE:
        yield
        return
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ ONLY")
        yield


def snapshot(conn: psycopg.Connection, roles: Iterable[str] = ()) -> Facts:
    """The catalog of `conn`'s database as facts, and the attributes of `roles` (those that exist)."""
    with read_only(conn):
        conn.execute("SET LOCAL search_path = pg_catalog")
        facts: Facts = {}
        every = _every_privilege(conn)
        for collect in (
            _schemas,
            _relations,
            _columns,
            _constraints,
            _indexes,
            _policies,
            _triggers,
            _rules,
            _functions,
            _types,
        ):
            collect(conn, facts, every)
        _roles(conn, facts, list(roles))
        return facts


def delta(before: Facts, after: Facts) -> tuple[set[Key], set[Key]]:
    """(touched, dropped): keys new or changed in `after`, and keys gone from it."""
    touched = {k for k, v in after.items() if before.get(k) != v}
    return touched, set(before) - set(after)


def _rows(conn: psycopg.Connection, query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query, {"skipped": list(SKIPPED_SCHEMAS)}).fetchall()


def _every_privilege(conn: psycopg.Connection) -> dict[str, frozenset[str]]:
    out = {}
    for kind, code in ACL_TYPES.items():
        rows = conn.execute(
            'SELECT a.privilege_type FROM aclexplode(acldefault(%s::"char", 10)) a WHERE a.grantee = 10', (code,)
        ).fetchall()
        out[kind] = frozenset(r[0] for r in rows)
    out["column"] = frozenset({"SELECT", "INSERT", "UPDATE", "REFERENCES"})
    return out


# aclexplode of an ACL (or of the object's default ACL when NULL), grouped by grantee.
_ACL = """ARRAY(SELECT jsonb_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END,
                                         a.privilege_type, a.is_grantable)
                FROM aclexplode(coalesce({acl}, acldefault('{code}', {owner}))) a)"""
_COLUMN_ACL = """ARRAY(SELECT jsonb_build_array(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END,
                                         a.privilege_type, a.is_grantable)
                FROM aclexplode(a.attacl) a)"""


def _add_acl(facts: Facts, kind: str, obj: str, on: Key, entries: list[Any], every: frozenset[str]) -> None:
    held: dict[str, tuple[set[str], set[str]]] = {}
    for grantee, privilege, grantable in entries:
        plain, with_option = held.setdefault(grantee, (set(), set()))
        plain.add(privilege)
        if grantable:
            with_option.add(privilege)
    for grantee, (plain, with_option) in held.items():
        facts[acl_key(kind, obj, grantee)] = {
            "on": list(on),
            "grantee": grantee,
            "privileges": privileges(plain, every),
            "grantable": privileges(with_option, every),
        }


def _schemas(conn: psycopg.Connection, facts: Facts, every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT quote_ident(n.nspname), pg_get_userbyid(n.nspowner)::text, obj_description(n.oid, 'pg_namespace'),
                   {_ACL.format(acl="n.nspacl", code="n", owner="n.nspowner")}
            FROM pg_namespace n WHERE {_USER_SCHEMA} AND {_not_extension("pg_namespace", "n.oid")}""",
    )
    for name, owner, comment, acl in rows:
        facts[("schema", name)] = {"owner": owner, "comment": comment}
        _add_acl(facts, "schema_acl", name, ("schema", name), acl, every["schema"])


def _relations(conn: psycopg.Connection, facts: Facts, every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, pg_get_userbyid(c.relowner)::text,
                   c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class'),
                   CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
                   {_ACL.format(acl="c.relacl", code="r", owner="c.relowner")},
                   c.relkind = 'S',
                   ARRAY(SELECT o FROM unnest(c.reloptions) o ORDER BY o), c.relpersistence::text,
                   c.relreplident::text, s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax,
                   s.seqmin, s.seqcache, s.seqcycle,
                   (SELECT format('%%I.%%I.%%I', dn.nspname, dc.relname, da.attname)
                      FROM pg_depend d JOIN pg_class dc ON dc.oid = d.refobjid
                      JOIN pg_namespace dn ON dn.oid = dc.relnamespace
                      JOIN pg_attribute da ON da.attrelid = d.refobjid AND da.attnum = d.refobjsubid
                     WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                       AND d.refclassid = 'pg_class'::regclass AND c.relkind = 'S' LIMIT 1)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_sequence s ON s.seqrelid = c.oid
            WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S', 'c') AND {_USER_SCHEMA}
              AND {_not_extension("pg_class", "c.oid")}""",
    )
    for name, relkind, owner, rls, force, comment, viewdef, acl, is_sequence, options, persistence, *rest in rows:
        replident, seqtype, start, increment, maximum, minimum, seqcache, cycle, owned_by = rest
        kind = RELKINDS[relkind]
        # Options matter: a view's security_invoker=false runs it with its owner's rights, past RLS.
        value: dict[str, Any] = {"owner": owner, "comment": comment, "options": list(options or [])}
        value["persistence"] = {"p": "permanent", "u": "unlogged", "t": "temporary"}.get(persistence, persistence)
        if kind == "table":
            value["replica_identity"] = replident
        if is_sequence:
            value |= {
                "type": seqtype,
                "start": start,
                "increment": increment,
                "max": maximum,
                "min": minimum,
                "cache": seqcache,
                "cycle": cycle,
                "owned_by": owned_by,
            }
        if kind == "table":
            value |= {"partitioned": relkind == "p", "row_security": rls, "force_row_security": force}
        if viewdef is not None:
            value["definition"] = view_definition(viewdef)
        facts[(kind, name)] = value
        if kind != "composite type":
            acl_kind = "sequence" if is_sequence else "table"
            _add_acl(facts, "table_acl", name, (kind, name), acl, every[acl_kind])


def _columns(conn: psycopg.Connection, facts: Facts, every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT format('%%I.%%I', n.nspname, c.relname), quote_ident(a.attname), c.relkind::text,
                   format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                   nullif(a.attidentity, ''), nullif(a.attgenerated, ''),
                   CASE WHEN a.attcollation <> t.typcollation THEN format('%%I.%%I', cn.nspname, co.collname) END,
                   col_description(c.oid, a.attnum), {_COLUMN_ACL}
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            LEFT JOIN pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
            WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f') AND {_USER_SCHEMA}
              AND {_not_extension("pg_class", "c.oid")}""",
    )
    for table, column, relkind, typ, notnull, default, identity, generated, collation, comment, acl in rows:
        on = (RELKINDS[relkind], table)
        name = f"{table}.{column}"
        facts[("column", name)] = {
            "on": list(on),
            "type": typ,
            "not_null": notnull,
            "default": squash(default),
            "identity": identity,
            "generated": generated,
            "collation": collation,
            "comment": comment,
        }
        if acl:
            _add_acl(facts, "column_acl", name, on, acl, every["column"])


def _constraints(conn: psycopg.Connection, facts: Facts, _every: dict[str, frozenset[str]]) -> None:
    # contype 'n': PostgreSQL 18 records NOT NULL in pg_constraint too; attnotnull says the same
    # on every version, so those rows are left out and 15 and 18 agree.
    rows = _rows(
        conn,
        f"""SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, quote_ident(k.conname), k.contype::text,
                   pg_get_constraintdef(k.oid), k.convalidated, nullif(k.confdeltype, ' '), nullif(k.confupdtype, ' '),
                   k.condeferrable, k.condeferred, obj_description(k.oid, 'pg_constraint')
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE k.contype <> 'n' AND {_USER_SCHEMA} AND {_not_extension("pg_class", "c.oid")}""",
    )
    for (
        table,
        relkind,
        name,
        contype,
        definition,
        validated,
        on_delete,
        on_update,
        deferrable,
        deferred,
        comment,
    ) in rows:
        facts[("constraint", f"{table}.{name}")] = {
            "on": [RELKINDS[relkind], table],
            "type": contype,
            "definition": squash(definition),
            "validated": validated,
            "on_delete": on_delete,
            "on_update": on_update,
            "deferrable": deferrable,
            "deferred": deferred,
            "comment": comment,
        }


def _indexes(conn: psycopg.Connection, facts: Facts, _every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT format('%%I.%%I', n.nspname, x.relname), format('%%I.%%I', n.nspname, c.relname), c.relkind::text,
                   pg_get_indexdef(i.indexrelid), pg_get_expr(i.indpred, i.indrelid), i.indisvalid,
                   obj_description(x.oid, 'pg_class')
            FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = x.relnamespace
            WHERE {_USER_SCHEMA} AND {_not_extension("pg_class", "c.oid")}""",
    )
    for name, table, relkind, definition, predicate, valid, comment in rows:
        facts[("index", name)] = {
            "on": [RELKINDS.get(relkind, relkind), table],
            "definition": squash(definition),
            "predicate": squash(predicate),
            "valid": valid,
            "comment": comment,
        }


def _policies(conn: psycopg.Connection, facts: Facts, _every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, quote_ident(p.polname), p.polcmd::text,
                   p.polpermissive,
                   ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END
                         FROM unnest(p.polroles) r ORDER BY 1),
                   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),
                   obj_description(p.oid, 'pg_policy')
            FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_SCHEMA} AND {_not_extension("pg_class", "c.oid")}""",
    )
    for table, relkind, name, cmd, permissive, roles, using, check, comment in rows:
        facts[("policy", f"{table}.{name}")] = {
            "on": [RELKINDS[relkind], table],
            "command": POLCMD.get(cmd, cmd),
            "permissive": permissive,
            "roles": sorted(roles),
            "using": squash(using),
            "with_check": squash(check),
            "comment": comment,
        }


_WHEN = re.compile(r" WHEN \((?P<when>.*)\) EXECUTE (?:FUNCTION|PROCEDURE) ", re.S)


def _triggers(conn: psycopg.Connection, facts: Facts, _every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, quote_ident(t.tgname), t.tgtype::int,
                   t.tgenabled::text,
                   ARRAY(SELECT quote_ident(a.attname) FROM unnest(t.tgattr::int2[]) WITH ORDINALITY k(num, i)
                         JOIN pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = k.num ORDER BY k.i),
                   t.tgfoid::regprocedure::text, pg_get_triggerdef(t.oid), obj_description(t.oid, 'pg_trigger')
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE NOT t.tgisinternal AND {_USER_SCHEMA} AND {_not_extension("pg_class", "c.oid")}""",
    )
    for table, relkind, name, tgtype, enabled, columns, function, definition, comment in rows:
        timing, events, level = tgtype_words(tgtype)
        when = _WHEN.search(definition)
        facts[("trigger", f"{table}.{name}")] = {
            "on": [RELKINDS[relkind], table],
            "timing": timing,
            "events": events,
            "level": level,
            "columns": list(columns),
            "when": squash(when["when"]) if when else None,
            "function": function,
            "definition": squash(definition),
            "enabled": TGENABLED.get(enabled, enabled),
            "comment": comment,
        }


def _rules(conn: psycopg.Connection, facts: Facts, _every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT format('%%I.%%I', n.nspname, c.relname), c.relkind::text, quote_ident(r.rulename),
                   pg_get_ruledef(r.oid), r.ev_enabled::text
            FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE r.rulename <> '_RETURN' AND {_USER_SCHEMA} AND {_not_extension("pg_class", "c.oid")}""",
    )
    for table, relkind, name, definition, enabled in rows:
        facts[("rule", f"{table}.{name}")] = {
            "on": [RELKINDS[relkind], table],
            "definition": squash(definition),
            "enabled": TGENABLED.get(enabled, enabled),
        }


def _functions(conn: psycopg.Connection, facts: Facts, every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT p.oid::regprocedure::text, p.prokind::text, p.prosrc,
                   CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) END,
                   l.lanname::text, p.prosecdef, coalesce(p.proconfig, '{{}}'), p.provolatile::text, p.proisstrict,
                   pg_get_function_result(p.oid), pg_get_userbyid(p.proowner)::text,
                   obj_description(p.oid, 'pg_proc'), {_ACL.format(acl="p.proacl", code="f", owner="p.proowner")}
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
            WHERE {_USER_SCHEMA} AND {_not_extension("pg_proc", "p.oid")}""",
    )
    for name, prokind, src, sqlbody, language, definer, config, volatility, strict, result, owner, comment, acl in rows:
        facts[("function", name)] = {
            "kind": PROKIND.get(prokind, prokind),
            "body": squash(sqlbody) if sqlbody is not None else src,
            "language": language,
            "security_definer": definer,
            "config": sorted(config),
            "volatility": VOLATILITY.get(volatility, volatility),
            "strict": strict,
            "returns": result,
            "owner": owner,
            "comment": comment,
        }
        _add_acl(facts, "function_acl", name, ("function", name), acl, every["function"])


def _types(conn: psycopg.Connection, facts: Facts, _every: dict[str, frozenset[str]]) -> None:
    rows = _rows(
        conn,
        f"""SELECT format_type(t.oid, NULL), t.typtype::text, pg_get_userbyid(t.typowner)::text,
                   ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
                   CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END, t.typnotnull,
                   obj_description(t.oid, 'pg_type')
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE t.typtype IN ('e', 'd', 'r', 'm') AND {_USER_SCHEMA} AND {_not_extension("pg_type", "t.oid")}""",
    )
    for name, typtype, owner, labels, base, notnull, comment in rows:
        facts[("type", name)] = {
            "type": {"e": "enum", "d": "domain", "r": "range", "m": "multirange"}[typtype],
            "owner": owner,
            "labels": list(labels),
            "base": base,
            "not_null": notnull,
            "comment": comment,
        }


ROLE_ATTRIBUTES = (
    "rolsuper",
    "rolinherit",
    "rolcreaterole",
    "rolcreatedb",
    "rolcanlogin",
    "rolreplication",
    "rolbypassrls",
)


def _roles(conn: psycopg.Connection, facts: Facts, roles: list[str]) -> None:
    if not roles:
        return
    rows = conn.execute(
        f"""SELECT r.rolname::text, {", ".join(f"r.{a}" for a in ROLE_ATTRIBUTES)},
                   ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid ORDER BY 1)
            FROM pg_roles r WHERE r.rolname = ANY(%s)""",
        (roles,),
    ).fetchall()
    for name, *attributes, member_of in rows:
        value: dict[str, Any] = {a.removeprefix("rol"): v for a, v in zip(ROLE_ATTRIBUTES, attributes, strict=True)}
        facts[("role", name)] = value | {"member_of": sorted(member_of)}
