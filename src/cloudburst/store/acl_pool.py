"""The ACL rule pool (numeric rules; text forms are in ``auth/acl.py``)."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from cloudburst.auth.acl import AclError, AclRule, to_string
from cloudburst.store.prepared import Prepared
from cloudburst.store.schema import acl_rules
from cloudburst.store.sequences import next_ids

#: Read by every call of a user outside oneadmin's group (prepared: see store.prepared).
_RULES = Prepared(select(acl_rules).order_by(acl_rules.c.user, acl_rules.c.id))


def list_rules(connection: Connection) -> list[AclRule]:
    """Every rule, ordered as ``oneacl list`` shows them (by user part, then id)."""
    return [AclRule(row.id, row.user, row.resource, row.rights, row.zone)
            for row in _RULES.rows(connection)]


def add_rule(connection: Connection, user: int, resource: int, rights: int, zone: int) -> int:
    """Store a rule; its id. Raises: AclError: the same rule exists."""
    existing = connection.execute(select(acl_rules.c.id).where(
        acl_rules.c.user == user, acl_rules.c.resource == resource,
        acl_rules.c.rights == rights, acl_rules.c.zone == zone)).first()
    if existing is not None:
        raise AclError(f"Rule {to_string(user, resource, rights, zone)} already exists")
    rule_id = next_ids(connection, "acl")
    connection.execute(insert(acl_rules).values(id=rule_id, user=user, resource=resource,
                                                rights=rights, zone=zone))
    return rule_id


def delete_rule(connection: Connection, rule_id: int) -> None:
    """Raises: AclError: no such rule (oned's wording)."""
    if connection.execute(delete(acl_rules).where(acl_rules.c.id == rule_id)).rowcount != 1:
        raise AclError(f"Rule {rule_id} does not exist")


def delete_rules_of(connection: Connection, *, user: int | None = None,
                    resource: int | None = None) -> None:
    """Remove the rules about a deleted user or group (by their numeric part)."""
    if user is not None:
        connection.execute(delete(acl_rules).where(acl_rules.c.user == user))
    if resource is not None:
        connection.execute(delete(acl_rules).where(acl_rules.c.resource.op("&")(0xFFFFFFFFF)
                                                   == resource))
