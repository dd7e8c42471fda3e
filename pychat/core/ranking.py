"""A list kept in order as its items change, for bounded listings.

``/list`` shows the busiest rooms first and ``/users`` the first names in
order, each bounded. Sorting thousands of rooms for every request would let
anyone who repeats the command make the server pay for it, so the order is
kept up to date instead: an item whose sort key changes is moved with two
binary searches and a memmove, and a listing reads a slice.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Ranking(Generic[T]):
    """ITEMS ordered by ``key(item)``; keys must be unique.

    An item's key may change only between :meth:`before_change` and
    :meth:`after_change`, so that its old position can still be found.
    """

    __slots__ = ("key", "_keys", "_items")

    def __init__(self, key: Callable[[T], Any]) -> None:
        self.key = key
        self._keys: list[Any] = []
        self._items: list[T] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def keyed(self) -> Iterator[tuple[Any, T]]:
        """(key, item) pairs in order: the keys are computed already."""
        return zip(self._keys, self._items)

    def first(self, count: int) -> list[T]:
        return self._items[:count]

    def add(self, item: T) -> None:
        key = self.key(item)
        index = bisect.bisect_left(self._keys, key)
        self._keys.insert(index, key)
        self._items.insert(index, item)

    def remove(self, item: T) -> None:
        self._pop(item, self.key(item))

    def before_change(self, item: T) -> Any:
        """Call before ITEM's key changes; pass the result to :meth:`after_change`."""
        return self.key(item)

    def after_change(self, item: T, old_key: Any) -> None:
        if self.key(item) != old_key:
            self._pop(item, old_key)
            self.add(item)

    def _pop(self, item: T, key: Any) -> None:
        index = bisect.bisect_left(self._keys, key)
        if index >= len(self._items) or self._items[index] is not item:
            raise KeyError(item)
        del self._keys[index]
        del self._items[index]
