"""A price-time-priority limit order book for one instrument.

Each side keeps its price levels in a dict (price -> Level) and the prices in a binary heap
(bids negated, so both sides are min-heaps): adding a level is O(log n) and the best level is
O(1) (amortised: an emptied level leaves its price in the heap until it reaches the top, where
it is dropped; the heap is rebuilt when such stale prices outnumber the live ones). A level is
a FIFO queue of resting orders in an OrderedDict, so the head is O(1), and cancelling from the
middle of a queue is O(1) too (a deque would make it O(queue)).

The book knows prices, quantities and arrival order; it does not match. The matching engine
(`matching.py`) walks it and tells it what executed. Entries are any object with the
attributes of `BookEntry` (the engine's own order objects); the book changes only `leaves`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from decimal import Decimal
from typing import Protocol

ZERO = Decimal(0)


class BookEntry(Protocol):
    """What the book needs of a resting order."""

    order_id: str
    is_buy: bool
    price: Decimal  # a limit price; market orders never rest
    leaves: Decimal  # open quantity; the book reduces it as the order executes


class Level:
    """One price of one side: its orders in time priority and their total open quantity."""

    __slots__ = ("orders", "price", "total")

    def __init__(self, price: Decimal) -> None:
        self.price = price
        self.orders: OrderedDict[str, BookEntry] = OrderedDict()
        self.total = ZERO

    def head(self) -> BookEntry:
        return next(iter(self.orders.values()))

    def __iter__(self) -> Iterator[BookEntry]:
        return iter(self.orders.values())

    def __len__(self) -> int:
        return len(self.orders)


class BookSide:
    """The bids or the asks."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self._levels: dict[Decimal, Level] = {}
        self._heap: list[Decimal] = []  # keys: -price for bids, price for asks

    def _key(self, price: Decimal) -> Decimal:
        return -price if self.is_bid else price

    def _price(self, key: Decimal) -> Decimal:
        return -key if self.is_bid else key

    def best(self) -> Level | None:
        heap = self._heap
        while heap:
            level = self._levels.get(self._price(heap[0]))
            if level is not None:
                return level
            heapq.heappop(heap)  # a stale price of an emptied level
        return None

    def best_price(self) -> Decimal | None:
        level = self.best()
        return level.price if level is not None else None

    def level(self, price: Decimal) -> Level | None:
        return self._levels.get(price)

    def add(self, entry: BookEntry) -> None:
        level = self._levels.get(entry.price)
        if level is None:
            level = self._levels[entry.price] = Level(entry.price)
            heapq.heappush(self._heap, self._key(entry.price))
            if len(self._heap) > 2 * len(self._levels) + 32:
                self._compact()
        level.orders[entry.order_id] = entry
        level.total += entry.leaves

    def remove(self, entry: BookEntry) -> None:
        level = self._levels[entry.price]
        del level.orders[entry.order_id]
        level.total -= entry.leaves
        if not level.orders:
            del self._levels[entry.price]  # its heap key goes stale; best() drops it

    def reduce(self, entry: BookEntry, quantity: Decimal) -> None:
        """Take `quantity` off a resting entry's leaves, keeping its place; an entry left
        with nothing leaves the book."""
        if quantity <= ZERO or quantity > entry.leaves:
            raise ValueError(f"cannot reduce {entry.order_id} by {quantity} (leaves {entry.leaves})")
        level = self._levels[entry.price]
        entry.leaves -= quantity
        level.total -= quantity
        if entry.leaves == ZERO:
            del level.orders[entry.order_id]
            if not level.orders:
                del self._levels[entry.price]

    def levels(self) -> Iterator[Level]:
        """Levels from the best outward, lazily: an in-order walk of the heap (a frontier heap
        of node indices), so reading the top k levels costs O(k log k), not a full sort.
        The side must not change while the walk is in progress."""
        heap = self._heap
        if not heap:
            return
        frontier = [(heap[0], 0)]
        last: Decimal | None = None
        while frontier:
            key, i = heapq.heappop(frontier)
            # Keys come out in sorted order, so a price pushed twice (a level emptied and
            # refilled before its stale key surfaced) shows up twice in a row: yield it once.
            # A stale key whose level is gone is skipped.
            if key != last:
                last = key
                level = self._levels.get(self._price(key))
                if level is not None:
                    yield level
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))

    def __len__(self) -> int:
        return len(self._levels)

    def _compact(self) -> None:
        self._heap = [self._key(p) for p in self._levels]
        heapq.heapify(self._heap)


class OrderBook:
    """Both sides of one instrument's book, and an index of its resting entries by id."""

    def __init__(self) -> None:
        self.bids = BookSide(is_bid=True)
        self.asks = BookSide(is_bid=False)
        self._entries: dict[str, BookEntry] = {}

    def side(self, is_buy: bool) -> BookSide:
        return self.bids if is_buy else self.asks

    def opposite(self, is_buy: bool) -> BookSide:
        return self.asks if is_buy else self.bids

    def add(self, entry: BookEntry) -> None:
        if entry.order_id in self._entries:
            raise ValueError(f"{entry.order_id} already rests on the book")
        if entry.leaves <= ZERO:
            raise ValueError(f"{entry.order_id} has nothing left to rest")
        self.side(entry.is_buy).add(entry)
        self._entries[entry.order_id] = entry

    def remove(self, order_id: str) -> BookEntry:
        entry = self._entries.pop(order_id)
        self.side(entry.is_buy).remove(entry)
        return entry

    def reduce(self, entry: BookEntry, quantity: Decimal) -> None:
        """Execute or cut `quantity` of a resting entry in place (time priority kept)."""
        self.side(entry.is_buy).reduce(entry, quantity)
        if entry.leaves == ZERO:
            del self._entries[entry.order_id]

    def get(self, order_id: str) -> BookEntry | None:
        return self._entries.get(order_id)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[BookEntry]:
        return list(self._entries.values())

    def best_bid(self) -> Decimal | None:
        return self.bids.best_price()

    def best_ask(self) -> Decimal | None:
        return self.asks.best_price()

    def crossed(self) -> bool:
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid >= ask

    def depth(self, levels: int = 5) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """(bids, asks) as (price, total quantity), best first, `levels` each."""
        def top(side: BookSide) -> list[tuple[Decimal, Decimal]]:
            out = []
            for level in side.levels():
                if len(out) == levels:
                    break
                out.append((level.price, level.total))
            return out
        return top(self.bids), top(self.asks)
