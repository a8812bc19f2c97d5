"""How an API method names the authorization it needs (table: ``service/access_table.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cloudburst.auth.engine import Operation

#: A by-name object kind: the parameter is a user name, not an id.
USER_BY_NAME: Final = "USER_BY_NAME"


@dataclass(frozen=True, slots=True)
class Check:
    """One authorization a method needs.

    Attributes:
        operation: the operation, or a function of the parameters giving it.
        kind: the ACL resource type (``ACL``/``AUDIT``/``QUOTA``: oneadmin only).
        param: the position of the object's id, or None.
        skip: an id at ``param`` that means "no object" (the check is skipped).
        when: a predicate on the parameters; the check applies only when it holds.
        stage: checks are asked stage by stage (0 first); a refusal names every
            failing check of its stage (oned's "...; Not authorized to ..."), and
            later stages are not asked.
    """

    operation: Operation | Callable[[Sequence[object]], Operation]
    kind: str
    param: int | None = None
    skip: int | None = None
    when: Callable[[Sequence[object]], bool] | None = None
    stage: int = 0

    def operation_for(self, params: Sequence[object]) -> Operation:
        return self.operation if isinstance(self.operation, Operation) else self.operation(
            params)
