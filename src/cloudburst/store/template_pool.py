"""The VM template pool (``onetemplate``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from cloudburst.errors import NotFoundError
from cloudburst.model.records import TemplateRecord
from cloudburst.store.schema import vm_templates
from cloudburst.template import Template


def _record(row: Row[Any]) -> TemplateRecord:
    return TemplateRecord(
        id=row.id, name=row.name, uid=row.uid, gid=row.gid, regtime=row.regtime,
        template=Template.from_stored_json(json.loads(row.template)), perms=row.perms,
    )


def insert_template(connection: Connection, record: TemplateRecord) -> None:
    """Store a new template (id already reserved)."""
    connection.execute(insert(vm_templates).values(
        id=record.id, name=record.name, uid=record.uid, gid=record.gid, regtime=record.regtime,
        template=json.dumps(record.template.to_json()),
    ))


def get_template(connection: Connection, template_id: int) -> TemplateRecord:
    """The template ``template_id``.

    Raises:
        NotFoundError: no such template.
    """
    row = connection.execute(select(vm_templates).where(vm_templates.c.id == template_id)).first()
    if row is None:
        raise NotFoundError(f"TEMPLATE {template_id} does not exist")
    return _record(row)


def list_templates(
    connection: Connection, *, uid: int | None = None, first_id: int | None = None,
    last_id: int | None = None, offset: int = 0, limit: int | None = None,
    descending: bool = False,
) -> list[TemplateRecord]:
    """Templates ordered by id (``descending``: highest first), filtered like the VM pool."""
    query = select(vm_templates).order_by(
        vm_templates.c.id.desc() if descending else vm_templates.c.id)
    if uid is not None:
        query = query.where(vm_templates.c.uid == uid)
    if first_id is not None:
        query = query.where(vm_templates.c.id >= first_id)
    if last_id is not None:
        query = query.where(vm_templates.c.id <= last_id)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [_record(row) for row in connection.execute(query)]


def update_template(connection: Connection, template_id: int, *, name: str | None = None,
                    template: Template | None = None) -> None:
    """Change a template's name and/or contents."""
    values: dict[str, Any] = {}
    if name is not None:
        values["name"] = name
    if template is not None:
        values["template"] = json.dumps(template.to_json())
    if values:
        connection.execute(
            update(vm_templates).where(vm_templates.c.id == template_id).values(**values)
        )


def delete_template(connection: Connection, template_id: int) -> None:
    """Remove a template."""
    get_template(connection, template_id)
    connection.execute(delete(vm_templates).where(vm_templates.c.id == template_id))


def find_template_id(connection: Connection, name: str, uid: int) -> int | None:
    """The id of user ``uid``'s template named ``name`` (names are unique per owner)."""
    return connection.execute(select(vm_templates.c.id).where(
        vm_templates.c.name == name, vm_templates.c.uid == uid)).scalar()
