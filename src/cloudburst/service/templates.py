"""VM template use cases (``onetemplate``): register, read, change, clone, instantiate.

Names follow oned 6.10: the ``NAME`` given at registration becomes the
template's name and is not kept inside its body (an ``update`` keeps any
``NAME`` as a plain attribute); a template needs a name; names are unique per
owner (registration: "NAME is already taken by TEMPLATE 3.", 0x2000; clone:
the same wrapped as an allocation error, 0x4000; rename: "... collides with
virtual machine template 3", 0x0800). A VM instantiated without a name is
named ``<template name>-<VM id>``; ``persistent`` first clones the template
(named as the VM, else ``<template name>-copy``) and instantiates the copy: the
VM's ``TEMPLATE_ID`` is the copy, ``CLONING_TEMPLATE_ID`` the template it was cloned from.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection

from cloudburst.errors import (
    IllegalActionError,
    PoolNameError,
    ValidationError,
)
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
        """Register a template; its id.

        Raises:
            ValidationError: no ``NAME``, or a template that cannot be registered.
            PoolNameError: the owner has a template of that name.
        """
        template = parse_submitted(text)
        name = _template_name(template)
        if name is None:
            raise PoolNameError("Invalid NAME, it cannot be empty")
        template.remove("NAME")
        return await self._insert(name, template, uid=uid, gid=gid)

    async def _insert(self, name: str, template: Template, *, uid: int, gid: int,
                      clone: bool = False) -> int:
        now = int(time.time())

        def write(connection: Connection) -> int:
            taken = template_pool.find_template_id(connection, name, uid)
            if taken is not None:
                message = f"NAME is already taken by TEMPLATE {taken}."
                if clone:
                    raise ValidationError("Error allocating a new virtual machine template. "
                                          + message)
                raise PoolNameError(message)
            template_id = next_ids(connection, "template")
            template_pool.insert_template(connection, TemplateRecord(
                id=template_id, name=name, uid=uid, gid=gid, regtime=now, template=template))
            return template_id

        return await self.db.write(write)

    async def clone(self, template_id: int, name: str, *, uid: int = 0, gid: int = 0) -> int:
        """A copy of the template named ``name``, owned by the caller; its id.

        Raises:
            NotFoundError: no such template.
            ValidationError: the caller has a template of that name, or a bad name.
        """
        name = check_name("template", name)
        record = await self.info(template_id)
        return await self._insert(name, record.template.copy(), uid=uid, gid=gid, clone=True)

    async def info(self, template_id: int) -> TemplateRecord:
        return await self.db.read(
            lambda connection: template_pool.get_template(connection, template_id))

    async def pool(self, *, uid: int | None = None, first_id: int | None = None,
                   last_id: int | None = None, offset: int = 0,
                   limit: int | None = None, descending: bool = False) -> list[TemplateRecord]:
        def read(connection: Connection) -> list[TemplateRecord]:
            return template_pool.list_templates(connection, uid=uid, first_id=first_id,
                                                last_id=last_id, offset=offset, limit=limit,
                                                descending=descending)

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
            template_pool.update_template(connection, template_id, template=template)

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
            record = template_pool.get_template(connection, template_id)
            taken = template_pool.find_template_id(connection, name, record.uid)
            if taken is not None and taken != template_id:
                raise IllegalActionError(
                    f"virtual machine template cannot be renamed to {name} because it "
                    f"collides with virtual machine template {taken}")
            template_pool.update_template(connection, template_id, name=name)

        await self.db.write(write)
        return template_id

    async def instantiate(self, template_id: int, name: str = "", *, hold: bool = False,
                          extra: str = "", persistent: bool = False, uid: int = 0,
                          gid: int = 0) -> int:
        """Create a VM from a registered template plus optional extra attributes; its id.

        ``persistent`` instantiates a copy of the template made for this VM
        (see the module docstring).
        """
        record = await self.info(template_id)
        name = name.strip()
        cloned_from: int | None = None
        if persistent:
            cloned_from = template_id
            template_id = await self.clone(template_id, name or f"{record.name}-copy", uid=uid,
                                           gid=gid)
            record = await self.info(template_id)
        template = record.template.copy()
        template.remove("NAME")
        if extra.strip():
            template.merge(parse_submitted(extra), replace=True)
        template.set("TEMPLATE_ID", str(template_id))
        if cloned_from is not None:
            template.set("CLONING_TEMPLATE_ID", str(cloned_from))
        return await self.vms.allocate_template(template, hold=hold, uid=uid, gid=gid,
                                                name=name or None, name_prefix=record.name)


def _template_name(template: Template) -> str | None:
    """The template's ``NAME``, checked, or None when it has none."""
    raw = template.get("NAME") or ""
    return check_name("template", raw) if raw.strip() else None
