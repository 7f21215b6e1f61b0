"""The in-memory object store, indexed so lists stay flat as it grows to 100k+ objects.

Each object type is a `Collection`: a dict by id, a creation sequence number per object, the
alive sequence numbers in order, and secondary indexes (`field value -> sorted seqs`) for the
list filters Stripe offers (`product`, `active`, `lookup_key`, `type`, ...). A list call picks
the smallest candidate index (a filter on several values is the lazy merge of their index
lists), walks it newest-first from the cursor and stops after `limit + 1` matches, so its cost
depends on the page, not on the store size.

Objects are stored as the JSON dicts Stripe returns. Keys starting with `_` are private to the
emulator (a webhook secret, a meter event's customer) and never rendered.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

StripeObject = dict[str, Any]
Predicate = Callable[[StripeObject], bool]

# Per object type, the fields with a secondary index. Values are read with `obj.get(field)`;
# `None` is not indexed (`lookup_key: null` is not a key).
INDEXED_FIELDS: dict[str, tuple[str, ...]] = {
    "product": ("active",),
    "price": ("product", "active", "lookup_key", "currency", "type"),
    "customer": ("email", "test_clock"),
    "customer_balance_transaction": ("customer",),
    "billing.meter": ("status", "event_name"),
    "billing.meter_event": ("event_name", "identifier"),
    "entitlements.feature": ("lookup_key", "active"),
    "product_feature": ("_product",),
    "webhook_endpoint": (),
    "event": ("type",),
    "test_helpers.test_clock": (),
}


# Object types whose lists are ordered by a field, then by creation: Stripe lists events
# newest `created` first, and an event emitted by a test clock's walk carries the clock's
# time. The sequence number of such an object is `field << ORDER_SHIFT | creation seq`, so
# pages and cursors stay index walks (flat), and a cursor stays valid.
ORDERED_BY: dict[str, str] = {"event": "created"}
ORDER_SHIFT = 40


@dataclass(slots=True)
class Page:
    """One page of a list call."""

    objects: list[StripeObject]
    has_more: bool


@dataclass(slots=True)
class Collection:
    """All objects of one type, with their creation order and secondary indexes."""

    kind: str
    indexed: tuple[str, ...]
    objects: dict[str, StripeObject] = field(default_factory=dict)
    seq_of: dict[str, int] = field(default_factory=dict)
    id_at: dict[int, str] = field(default_factory=dict)
    alive: list[int] = field(default_factory=list)
    indexes: dict[str, dict[Hashable, list[int]]] = field(default_factory=dict)

    def reindex(self, indexed: tuple[str, ...]) -> None:
        """Index exactly the fields `indexed` (rebuilt from the objects, in place: a caller
        holding this collection keeps a valid one)."""
        self.indexed = indexed
        self.indexes = {}
        for seq in self.alive:
            obj = self.objects[self.id_at[seq]]
            for name in indexed:
                value = obj.get(name)
                if value is not None:
                    self.indexes.setdefault(name, {}).setdefault(_key(value), []).append(seq)

    def get(self, object_id: str) -> StripeObject | None:
        """The stored object (mutable: callers go through `replace` to keep indexes right)."""
        return self.objects.get(object_id)

    def __len__(self) -> int:
        return len(self.objects)

    def insert(self, obj: StripeObject, seq: int) -> None:
        """Add a new object with sequence `seq` (usually the largest so far; an event on a test
        clock whose time is behind others sorts among them: `ORDERED_BY`)."""
        object_id = obj["id"]
        self.objects[object_id] = obj
        self.seq_of[object_id] = seq
        self.id_at[seq] = object_id
        if not self.alive or seq > self.alive[-1]:
            self.alive.append(seq)
        else:
            bisect.insort(self.alive, seq)
        for name in self.indexed:
            self._index_add(name, obj.get(name), seq)

    def replace(self, obj: StripeObject) -> None:
        """Store a new version of an existing object, moving it between index entries."""
        object_id = obj["id"]
        old = self.objects[object_id]
        seq = self.seq_of[object_id]
        for name in self.indexed:
            before, after = old.get(name), obj.get(name)
            if before != after:
                self._index_remove(name, before, seq)
                self._index_add(name, after, seq)
        self.objects[object_id] = obj

    def delete(self, object_id: str) -> StripeObject:
        """Remove an object and its index entries."""
        obj = self.objects.pop(object_id)
        seq = self.seq_of.pop(object_id)
        del self.id_at[seq]
        _remove_sorted(self.alive, seq)
        for name in self.indexed:
            self._index_remove(name, obj.get(name), seq)
        return obj

    def lookup(self, name: str, value: Hashable) -> list[StripeObject]:
        """Objects whose indexed field `name` equals `value`, oldest first."""
        seqs = self.indexes.get(name, {}).get(_key(value), [])
        return [self.objects[self.id_at[s]] for s in seqs]

    def page(
        self,
        *,
        equals: Mapping[str, Iterable[Any]],
        predicate: Predicate | None,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> Page:
        """A newest-first page, filtered by indexed fields (`equals`) and a predicate.

        Each filter is a union of sorted index lists (`status` in several values is one list
        per value). The smallest union drives the walk, merged lazily from the cursor
        (`heapq.merge` of the parts, each read from its bisected start), and the others are
        membership tests by bisection: a page reads about `limit + 1` candidates plus a few
        bisections per part, never a whole index."""
        unions = [self._union(name, values) for name, values in equals.items()]
        if not unions:
            unions = [[self.alive]]
        driver = min(unions, key=lambda parts: sum(len(p) for p in parts))
        others = [parts for parts in unions if parts is not driver]

        def accepts(seq: int) -> bool:
            return all(_contains_any(parts, seq) for parts in others)

        if ending_before is not None:
            before = self.seq_of[ending_before]
            walk = _ascending(driver, before)
            found = self._take(walk, accepts, predicate, limit + 1)
            # Stripe returns the page nearest the cursor, still newest first.
            return Page(list(reversed(found[:limit])), len(found) > limit)
        start = self.seq_of[starting_after] if starting_after is not None else None
        found = self._take(_descending(driver, start), accepts, predicate, limit + 1)
        return Page(found[:limit], len(found) > limit)

    def _take(
        self,
        seqs: Iterator[int],
        accepts: Callable[[int], bool],
        predicate: Predicate | None,
        count: int,
    ) -> list[StripeObject]:
        found: list[StripeObject] = []
        for seq in seqs:
            if not accepts(seq):
                continue
            obj = self.objects[self.id_at[seq]]
            if predicate is None or predicate(obj):
                found.append(obj)
                if len(found) == count:
                    break
        return found

    def _union(self, name: str, values: Iterable[Any]) -> list[list[int]]:
        """The sorted seq lists whose union is the filter `name in values` (not merged)."""
        if name == "id":
            # Every collection is indexed by id already: `ids[]` filters need no scan.
            return [
                sorted({self.seq_of[v] for v in values if isinstance(v, str) and v in self.seq_of})
            ]
        index = self.indexes.get(name, {})
        keys = dict.fromkeys(_key(v) for v in values)
        return [part for part in (index.get(k) for k in keys) if part]

    def _index_add(self, name: str, value: Any, seq: int) -> None:
        if value is None:
            return
        bisect.insort(self.indexes.setdefault(name, {}).setdefault(_key(value), []), seq)

    def _index_remove(self, name: str, value: Any, seq: int) -> None:
        if value is None:
            return
        seqs = self.indexes[name][_key(value)]
        _remove_sorted(seqs, seq)
        if not seqs:
            del self.indexes[name][_key(value)]


def _key(value: Any) -> Hashable:
    # Expanded references are stored as ids; dict values (never indexed today) are skipped.
    return value if isinstance(value, Hashable) else repr(value)


def _descending(parts: list[list[int]], start: int | None) -> Iterator[int]:
    """The seqs of the union of `parts` below `start` (all when None), largest first."""
    walks: list[Iterator[int]] = []
    for part in parts:
        end = len(part) if start is None else bisect.bisect_left(part, start)
        walks.append(_read(part, range(end - 1, -1, -1)))
    if len(walks) == 1:
        return walks[0]
    return heapq.merge(*walks, reverse=True) if walks else iter(())


def _ascending(parts: list[list[int]], after: int) -> Iterator[int]:
    """The seqs of the union of `parts` above `after`, smallest first."""
    walks: list[Iterator[int]] = []
    for part in parts:
        begin = bisect.bisect_right(part, after)
        walks.append(_read(part, range(begin, len(part))))
    if len(walks) == 1:
        return walks[0]
    return heapq.merge(*walks) if walks else iter(())


def _read(part: list[int], positions: range) -> Iterator[int]:
    for position in positions:
        yield part[position]


def _contains_any(parts: list[list[int]], seq: int) -> bool:
    for part in parts:
        position = bisect.bisect_left(part, seq)
        if position < len(part) and part[position] == seq:
            return True
    return False


def _remove_sorted(seqs: list[int], seq: int) -> None:
    position = bisect.bisect_left(seqs, seq)
    if position < len(seqs) and seqs[position] == seq:
        del seqs[position]


class Store:
    """Every collection, the global creation sequence, and an id-prefix -> type map."""

    def __init__(self) -> None:
        self.collections: dict[str, Collection] = {}
        self.next_seq = 1
        self.type_of_id: dict[str, str] = {}

    def collection(self, kind: str) -> Collection:
        """The collection for `kind` (created on first use)."""
        existing = self.collections.get(kind)
        if existing is not None:
            declared = INDEXED_FIELDS.get(kind, ())
            if existing.indexed is not declared and existing.indexed != declared:
                # Restored (or created) before the module declaring its indexes was imported.
                existing.reindex(declared)
            return existing
        created = Collection(kind=kind, indexed=INDEXED_FIELDS.get(kind, ()))
        self.collections[kind] = created
        return created

    def insert(self, kind: str, obj: StripeObject) -> StripeObject:
        """Add an object; returns it."""
        seq = self.next_seq
        field_name = ORDERED_BY.get(kind)
        if field_name is not None:
            seq |= max(int(obj.get(field_name) or 0), 0) << ORDER_SHIFT
        self.collection(kind).insert(obj, seq)
        self.next_seq += 1
        self.type_of_id[obj["id"]] = kind
        return obj

    def get(self, kind: str, object_id: str) -> StripeObject | None:
        """One object of `kind`, or None."""
        return self.collection(kind).get(object_id)

    def find(self, object_id: str) -> StripeObject | None:
        """Any object by id (for `expand`)."""
        kind = self.type_of_id.get(object_id)
        return None if kind is None else self.collection(kind).get(object_id)

    def replace(self, kind: str, obj: StripeObject) -> None:
        """Store a new version of an object."""
        self.collection(kind).replace(obj)

    def delete(self, kind: str, object_id: str) -> StripeObject:
        """Remove an object."""
        self.type_of_id.pop(object_id, None)
        return self.collection(kind).delete(object_id)

    def reindex(self) -> None:
        """Bring every collection's secondary indexes to what `INDEXED_FIELDS` declares now
        (a state file is restored before the resource modules register their indexes)."""
        for kind in list(self.collections):
            self.collection(kind)

    def clear(self) -> None:
        """Forget everything."""
        self.collections.clear()
        self.type_of_id.clear()
        self.next_seq = 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view (shares the objects: serialize it at once), in creation order."""
        return {
            "next_seq": self.next_seq,
            "collections": {
                kind: [[c.seq_of[i], o] for i, o in _in_order(c)]
                for kind, c in self.collections.items()
            },
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the contents with a `snapshot()`."""
        self.clear()
        for kind, rows in data.get("collections", {}).items():
            for seq, obj in rows:
                self.collection(kind).insert(obj, int(seq))
                self.type_of_id[obj["id"]] = kind
        self.next_seq = int(data.get("next_seq", 1))
        self.reindex()


def _in_order(collection: Collection) -> Iterator[tuple[str, StripeObject]]:
    for seq in collection.alive:
        object_id = collection.id_at[seq]
        yield object_id, collection.objects[object_id]
