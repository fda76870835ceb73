"""How requests reach the workers and results reach the writer, within one event loop.

Both hand-offs cost a ``deque`` or ``list`` append when nobody has to wait: a task only
parks on an event when the queue is empty (a worker) or full (the producer, a worker
whose results the writer has not caught up with). At thousands of requests a second the
general-purpose memory streams spent more CPU per item than the rest of the pipeline.
Every task that uses them runs in the same event loop; neither is thread-safe.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


class WorkQueue(Generic[T]):
    """A bounded first-in first-out queue: one producer, many consumers.

    ``get`` raises ``anyio.EndOfStream`` once the queue is closed and empty. A producer
    that finds it full waits until the consumers have taken half of it, so it refills in
    runs rather than waking for every item.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._items: deque[T] = deque()
        self._capacity = capacity
        self._refill_at = capacity // 2
        self._getters: deque[anyio.Event] = deque()
        self._space: anyio.Event | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        while len(self._items) >= self._capacity:
            space = self._space = anyio.Event()
            await space.wait()
            if self._closed:
                raise anyio.ClosedResourceError
        self._items.append(item)
        self._wake_one()

    async def get(self) -> T:
        items = self._items
        while not items:
            if self._closed:
                raise anyio.EndOfStream
            ready = anyio.Event()
            self._getters.append(ready)
            try:
                await ready.wait()
            except BaseException:
                if ready.is_set():
                    self._wake_one()  # pass on the wake-up this task will not use
                else:
                    self._getters.remove(ready)
                raise
        item = items.popleft()
        if self._space is not None and len(items) <= self._refill_at:
            self._space.set()
            self._space = None
        return item

    def close(self) -> None:
        """No more items will come; waiting consumers get what is left, then EndOfStream."""
        self._closed = True
        while self._getters:
            self._getters.popleft().set()
        if self._space is not None:
            self._space.set()
            self._space = None

    def _wake_one(self) -> None:
        if self._getters:
            self._getters.popleft().set()


class ResultBuffer(Generic[T]):
    """Results waiting for the writer: many producers, one consumer taking them in batches.

    ``add`` appends without waiting while fewer than ``limit`` results are pending and
    returns False when the buffer is full; ``add_wait`` then waits for the writer.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._items: list[T] = []
        self._limit = limit
        self._want = 1
        self._ready: anyio.Event | None = None
        self._space: anyio.Event | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> bool:
        items = self._items
        if len(items) >= self._limit:
            return False
        items.append(item)
        if self._ready is not None and len(items) >= self._want:
            self._ready.set()
            self._ready = None
        return True

    async def add_wait(self, item: T) -> None:
        while not self.add(item):
            if self._closed:
                raise anyio.ClosedResourceError
            if self._space is None:
                self._space = anyio.Event()
            await self._space.wait()

    async def take(self, at_least: int = 1, within_s: float = 0.0) -> list[T] | None:
        """Everything pending, once there is any; None when closed and drained.

        With fewer than ``at_least`` pending, waits up to ``within_s`` seconds more for
        that many, so that a busy run is written in a few large batches.
        """
        if not self._items and not self._closed:
            await self._wait_for(1)
        want = min(at_least, self._limit)
        if len(self._items) < want and within_s > 0 and not self._closed:
            with anyio.move_on_after(within_s):
                await self._wait_for(want)
        if not self._items:
            return None
        batch, self._items = self._items, []
        if self._space is not None:
            self._space.set()
            self._space = None
        return batch

    def close(self) -> None:
        """No more results will be added; the writer takes what is left."""
        self._closed = True
        if self._ready is not None:
            self._ready.set()
            self._ready = None
        if self._space is not None:
            self._space.set()
            self._space = None

    async def _wait_for(self, count: int) -> None:
        self._want = count
        ready = self._ready = anyio.Event()
        try:
            await ready.wait()
        finally:
            if self._ready is ready:
                self._ready = None
