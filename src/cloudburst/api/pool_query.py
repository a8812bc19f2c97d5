"""oned's pool arguments (``filter, start, end`` and vmpool's query) as store filters."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cloudburst.errors import ApiArgumentError
from cloudburst.model.records import UserRecord

__all__ = ["PoolQuery", "name_filter", "pool_query"]

T = TypeVar("T")

#: A listed object's ``(id, uid, gid, perms, name)``.
Owned = tuple[int, int, int, int, str]
#: May the caller see object ``(id, uid, gid, perms)``?
Visible = Callable[[int, int, int, int | None], bool]


@dataclass(frozen=True, slots=True)
class PoolQuery:
    """oned's pool arguments turned into store filters.

    ``uid`` is applied by the store; ``keep`` (owner and group tests the store
    cannot express, what the caller may see, and the name query) by Python, in
    which case the offset and limit are applied after it too.
    """

    uid: int | None
    first_id: int | None
    last_id: int | None
    offset: int
    limit: int | None
    keep: Callable[[Owned], bool] | None

    def select(self, records: Sequence[T], owner: Callable[[T], Owned]) -> list[T]:
        """Apply the Python-side part of the query to what the store returned.

        Args:
            records: what the store returned for :attr:`store_offset` and
                :attr:`store_limit`.
            owner: a record's ``(id, uid, gid, perms, name)``.
        """
        if self.keep is None:
            return list(records)
        keep = self.keep
        kept = [record for record in records if keep(owner(record))]
        end = None if self.limit is None else self.offset + self.limit
        return kept[self.offset:end]

    @property
    def store_offset(self) -> int:
        """The offset to ask the store for (0 when Python filters afterwards)."""
        return self.offset if self.keep is None else 0

    @property
    def store_limit(self) -> int | None:
        """The limit to ask the store for (None when Python filters afterwards)."""
        return self.limit if self.keep is None else None


def pool_query(user: UserRecord, flag: int, start: int, end: int, name_part: str = "", *,
               visible: Visible | None = None) -> PoolQuery:
    """Translate ``filter, start, end`` (spec/pyone.md section 5).

    filter: -2 all, -3 the caller's, -1 the caller's and its groups', -4 its
    group's, >= 0 that user's; always only objects ``visible`` accepts (what
    the caller may USE; None: everything). start/end: -1,-1 everything;
    ``end < -1`` is a page of ``-end`` objects from offset ``start``;
    otherwise ids from ``start`` (when not -1) to ``end`` (when not -1).

    Raises:
        ApiArgumentError: filter < -4 or start < -1.
    """
    if flag < -4:
        raise ApiArgumentError("Incorrect filter_flag")
    if start < -1:
        raise ApiArgumentError(f"Incorrect start index {start}")
    uid: int | None = None
    tests: list[Callable[[Owned], bool]] = []
    groups = frozenset(user.groups or (user.gid,))
    if flag >= 0:
        uid = flag
    elif flag == -3:
        uid = user.id
    elif flag == -1:
        tests.append(lambda owned: owned[1] == user.id or owned[2] in groups)
    elif flag == -4:
        tests.append(lambda owned: owned[2] == user.gid)
    if visible is not None:
        can_see = visible
        tests.append(lambda owned: can_see(owned[0], owned[1], owned[2], owned[3]))
    if name_part:
        tests.append(lambda owned: name_part in owned[4])
    first_id = last_id = limit = None
    offset = 0
    if end < -1:
        offset, limit = max(start, 0), -end
    elif start != -1:
        first_id = start
        last_id = None if end == -1 else end
    keep = None
    if tests:
        keep = lambda owned: all(test(owned) for test in tests)  # noqa: E731
    return PoolQuery(uid=uid, first_id=first_id, last_id=last_id, offset=offset, limit=limit,
                     keep=keep)


def name_filter(query: str) -> str:
    """The NAME substring a vmpool ``KEY=VAL&...`` query asks for ("" when none).

    ``NAME`` and ``VM.NAME`` keys (any case) are honoured; other keys are
    ignored, as they would need oned's JSON body search.
    """
    wanted = ""
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        if equals and key.strip().upper() in ("NAME", "VM.NAME"):
            wanted = value
    return wanted
