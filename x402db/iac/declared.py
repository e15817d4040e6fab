"""What the Pulumi program declares to pulumi-postgresql, in the provider's own terms
(iac/provider_sql.py): the backend role, and the access model as Grant resources.

The backend role gets its service_role membership through Role.roles and not a GrantRole: the
Role update runs `revokeRoles` (REVOKE every role it is a member of) then grants only its own
`roles`, so a separate GrantRole membership silently disappears on the first update of the Role
(a password rotation); upstream documents that the two "fight".
"""

from __future__ import annotations

from dataclasses import replace

from .. import access
from .provider_sql import GrantArgs, RoleArgs

BACKEND_MEMBER_OF = ("service_role",)


def backend_role(name: str, password: str | None = None) -> RoleArgs:
    # inherit: so the service_role policy and grants apply to its sessions
    return RoleArgs(name=name, password=password, login=True, inherit=True, roles=BACKEND_MEMBER_OF)


def grants(database: str) -> list[GrantArgs]:
    """The access model as the program's Grant resources, in creation order. A grant of ALL is
    left as ALL, which the provider also takes (GRANT ALL); the program spells it out per server
    (spelled_out), since the provider reads a table's privileges back one by one."""
    out = [
        GrantArgs(database, u.role, u.schema, "schema", ("USAGE",), retain_on_delete=u.retain_on_delete)
        for u in access.SCHEMA_USAGE
    ]
    # Destroy never revokes a table grant: the migration's down drops the table and its grants
    # with it. Revoking first left the backend without access whenever a later step refused
    # (a key stored after the destroy guard had checked), so a refused destroy changed something.
    out += [
        GrantArgs(database, g.role, g.schema, "table", tuple(g.privileges), (g.table,), retain_on_delete=True)
        for g in access.TABLE_GRANTS
    ]
    return out


def needs_server(g: GrantArgs) -> bool:
    return access.ALL in g.privileges


def spelled_out(g: GrantArgs, table_privileges: tuple[str, ...]) -> GrantArgs:
    """The grant with ALL as the privileges a table has on the server (access.table_privileges):
    declared as ALL with the list of an older server, a refresh on 17+ would read MAINTAIN back
    as a change, and the next up would revoke it."""
    return replace(g, privileges=access.resolved(g.privileges, table_privileges))


def server_table_privileges(dsn: str) -> tuple[str, ...]:
    """Every privilege a table has on the stack's server; raises ConnectError when unreachable."""
    from .. import db

    with db.connect(dsn, application_name="x402db-pulumi-program") as conn:
        return access.table_privileges(conn)
