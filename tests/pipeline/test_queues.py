"""The pool's hand-offs: no request lost or taken twice, no result dropped, bounded memory."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from batchrunner.pipeline.queues import ResultBuffer, WorkQueue

pytestmark = pytest.mark.anyio


async def test_many_consumers_take_every_item_once_in_order() -> None:
    queue = WorkQueue[int](8)
    taken: list[int] = []

    async def consume() -> None:
        while True:
            try:
                item = await queue.get()
            except anyio.EndOfStream:
                return
            taken.append(item)
            await anyio.lowlevel.checkpoint()

    async def produce() -> None:
        for i in range(1000):
            await queue.put(i)
        queue.close()

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(consume)
        tg.start_soon(produce)

    assert sorted(taken) == list(range(1000))
    assert taken[:5] == [0, 1, 2, 3, 4]  # first in, first out


async def test_a_full_queue_holds_the_producer_until_half_is_taken() -> None:
    queue = WorkQueue[int](4)
    put = 0

    async def produce() -> None:
        nonlocal put
        for i in range(10):
            await queue.put(i)
            put += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(produce)
        await anyio.wait_all_tasks_blocked()
        assert put == 4 and len(queue) == 4
        await queue.get()
        await anyio.wait_all_tasks_blocked()
        assert put == 4  # one free slot is not enough to wake it
        await queue.get()
        await anyio.wait_all_tasks_blocked()
        assert put == 6 and len(queue) == 4
        tg.cancel_scope.cancel()


async def test_an_item_is_not_stranded_when_the_consumer_woken_for_it_is_cancelled() -> None:
    queue = WorkQueue[str](4)
    got: list[str] = []

    async def consume(scope_out: list[anyio.CancelScope]) -> None:
        with anyio.CancelScope() as scope:
            scope_out.append(scope)
            with contextlib.suppress(anyio.EndOfStream):
                got.append(await queue.get())

    first: list[anyio.CancelScope] = []
    second: list[anyio.CancelScope] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, first)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(consume, second)
            await anyio.wait_all_tasks_blocked()
            first[0].cancel()  # the first waiter is being cancelled…
            await queue.put("only")  # …when the item arrives and wakes it
            await anyio.wait_all_tasks_blocked()
            # Whichever consumer took it, it was taken once, before the queue closed.
            assert got == ["only"]
            queue.close()


async def test_closing_ends_waiting_consumers_after_what_is_left() -> None:
    queue = WorkQueue[int](4)
    await queue.put(1)
    queue.close()
    assert await queue.get() == 1
    with pytest.raises(anyio.EndOfStream):
        await queue.get()
    with pytest.raises(anyio.ClosedResourceError):
        await queue.put(2)


async def test_the_writer_gets_every_result_once_in_batches() -> None:
    buffer = ResultBuffer[int](16)
    batches: list[list[int]] = []

    async def write() -> None:
        while (batch := await buffer.take()) is not None:
            batches.append(batch)
            await anyio.lowlevel.checkpoint()

    async def work(start: int) -> None:
        for i in range(start, start + 100):
            if not buffer.add(i):
                await buffer.add_wait(i)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        async with anyio.create_task_group() as workers:
            for start in range(0, 400, 100):
                workers.start_soon(work, start)
        buffer.close()

    assert sorted(x for batch in batches for x in batch) == list(range(400))
    assert max(len(batch) for batch in batches) <= 16
    assert len(batches) < 400  # results were gathered, not handed over one by one


async def test_a_full_buffer_makes_workers_wait_for_the_writer() -> None:
    buffer = ResultBuffer[int](3)
    assert all(buffer.add(i) for i in range(3))
    assert not buffer.add(3)
    added = False

    async def add_late() -> None:
        nonlocal added
        await buffer.add_wait(3)
        added = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(add_late)
        await anyio.wait_all_tasks_blocked()
        assert not added
        assert await buffer.take() == [0, 1, 2]
        await anyio.wait_all_tasks_blocked()
        assert added
    buffer.close()
    assert await buffer.take() == [3]
    assert await buffer.take() is None


async def test_the_writer_waits_a_little_for_a_fuller_batch_but_not_past_a_full_buffer() -> None:
    buffer = ResultBuffer[int](4)
    buffer.add(0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def fill() -> None:
                await anyio.wait_all_tasks_blocked()
                for i in range(1, 4):
                    buffer.add(i)

            tg.start_soon(fill)
            # Asked for 100 within an hour: returns as soon as the buffer is full.
            assert await buffer.take(at_least=100, within_s=3600) == [0, 1, 2, 3]
