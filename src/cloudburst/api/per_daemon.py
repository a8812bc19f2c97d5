"""One object per daemon served, made on first use and dropped with the daemon."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from cloudburst.service.facade import Services

__all__ = ["PerDaemon"]

T = TypeVar("T")


class PerDaemon(Generic[T]):
    """``of(daemon)``: the object ``make()`` made for ``daemon`` (made at the first call)."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[Services, T] = weakref.WeakKeyDictionary()

    def __call__(self, daemon: Services) -> T:
        made = self._made.get(daemon)
        if made is None:
            made = self._made[daemon] = self._make()
        return made
