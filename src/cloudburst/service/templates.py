"""VM template use cases (``onetemplate``): register, read, change, instantiate."""

from __future__ import annotations

import time

from sqlalchemy import Connection

from cloudburst.model.records import TemplateRecord
from cloudburst.service.vms import VmService
from cloudburst.store import template_pool
from cloudburst.store.database import Database
from cloudburst.store.sequences import next_ids
from cloudburst.template import Template
from cloudburst.template.limits import check_name, check_template, parse_submitted


class TemplateService:
    """Registered VM templates."""

    def __init__(self, db: Database, vms: VmService) -> None:
        self.db = db
        self.vms = vms

    async def allocate(self, text: str, *, uid: int = 0, gid: int = 0) -> int:
        template = parse_submitted(text)
        given_name = _template_name(template)
        now = int(time.time())

        def write(connection: Connection) -> int:
            template_id = next_ids(connection, "template")
            name = given_name or f"template-{template_id}"
            template_pool.insert_template(connection, TemplateRecord(
                id=template_id, name=name, uid=uid, gid=gid, regtime=now, template=template))
            return template_id

        return await self.db.write(write)

    async def info(self, template_id: int) -> TemplateRecord:
        return await self.db.read(
            lambda connection: template_pool.get_template(connection, template_id))

    async def pool(self, *, uid: int | None = None, first_id: int | None = None,
                   last_id: int | None = None, offset: int = 0,
                   limit: int | None = None) -> list[TemplateRecord]:
        def read(connection: Connection) -> list[TemplateRecord]:
            return template_pool.list_templates(connection, uid=uid, first_id=first_id,
                                                last_id=last_id, offset=offset, limit=limit)

        return await self.db.read(read)

    async def delete(self, template_id: int) -> int:
        await self.db.write(lambda connection: template_pool.delete_template(connection,
                                                                             template_id))
        return template_id

    async def update(self, template_id: int, text: str, *, merge: bool) -> int:
        new = parse_submitted(text)

        def write(connection: Connection) -> None:
            record = template_pool.get_template(connection, template_id)
            template = record.template.copy() if merge else Template()
            template.merge(new, replace=True)
            check_template(template)
            name = _template_name(template)
            template_pool.update_template(connection, template_id, template=template, name=name)

        await self.db.write(write)
        return template_id

    async def rename(self, template_id: int, name: str) -> int:
        """Give the template a new name.

        Raises:
            NotFoundError: no such template.
            ValidationError: the name is empty or spans lines.
        """
        name = check_name("template", name)

        def write(connection: Connection) -> None:
            template_pool.get_template(connection, template_id)
            template_pool.update_template(connection, template_id, name=name)

        await self.db.write(write)
        return template_id

    async def instantiate(self, template_id: int, name: str = "", *, hold: bool = False,
                          extra: str = "", uid: int = 0, gid: int = 0) -> int:
        """Create a VM from a registered template plus optional extra attributes."""
        record = await self.info(template_id)
        template = record.template.copy()
        if extra.strip():
            template.merge(parse_submitted(extra), replace=True)
        template.set("TEMPLATE_ID", str(template_id))
        return await self.vms.allocate_template(template, hold=hold, uid=uid, gid=gid,
                                                name=name.strip() or None)


def _template_name(template: Template) -> str | None:
    """The template's ``NAME``, checked, or None when it has none."""
    raw = template.get("NAME") or ""
    return check_name("template", raw) if raw.strip() else None
