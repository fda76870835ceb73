"""The aiohttp wire against a real server on loopback: answers, stalls, and who cancelled."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from aiohttp import web

from batchrunner.endpoint.wire import AiohttpWire
from batchrunner.errors import RequestError

pytestmark = pytest.mark.anyio

ANSWER = b'{"id":"x","choices":[]}'


class Server:
    """Answers /ok at once; /stall never answers; /trickle streams one event a second."""

    def __init__(self) -> None:
        self.arrived = anyio.Event()
        self.url = ""
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def ok(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        return web.Response(body=ANSWER, content_type="application/json")

    async def stall(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived.set()
        await anyio.sleep(60)
        return web.Response(body=ANSWER)

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(60):
            await response.write(b'data: {"choices":[]}\n\n')
            await anyio.sleep(1)
        return response


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    app = web.Application()
    app.router.add_post("/ok", state.ok)
    app.router.add_post("/stall", state.stall)
    app.router.add_post("/trickle", state.trickle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def wire(allowance_s: float) -> AiohttpWire:
    return AiohttpWire(connections=4, connect_timeout_s=5.0, read_timeout_s=allowance_s)


async def test_an_answer_comes_back_whole(server: Server) -> None:
    w = wire(5.0)
    try:
        status, _, body = await w.fetch(server.url + "/ok", {}, b"{}")
    finally:
        await w.aclose()
    assert (status, body) == (200, ANSWER)


async def test_the_request_goes_out_with_the_callers_headers_and_body(server: Server) -> None:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    headers = {"Content-Type": "application/json", "Authorization": "Bearer t"}
    w = wire(5.0)
    try:
        await w.fetch(server.url + "/ok", headers, body)
        async with w.post(server.url + "/ok", headers, body) as response:
            assert await response.read() == ANSWER
    finally:
        await w.aclose()
    assert len(server.received) == 2
    for got_headers, got_body in server.received:
        assert got_body == body
        assert got_headers["Content-Type"] == "application/json"
        assert got_headers["Authorization"] == "Bearer t"
        assert got_headers["Content-Length"] == str(len(body))


async def test_a_stalled_answer_is_abandoned_at_its_deadline_and_the_task_goes_on(
    server: Server,
) -> None:
    w = wire(0.3)
    try:
        started = time.monotonic()
        with pytest.raises(RequestError) as caught:
            await w.fetch(server.url + "/stall", {}, b"{}")
        elapsed = time.monotonic() - started
        assert caught.value.error_type == "timeout" and caught.value.retryable
        assert "0.3 s" in caught.value.message
        assert 0.3 <= elapsed < 3.0
        # The deadline's cancellation was taken back: the task awaits and fetches as before.
        await anyio.sleep(0.01)
        status, _, body = await w.fetch(server.url + "/ok", {}, b"{}")
        assert (status, body) == (200, ANSWER)
    finally:
        await w.aclose()


async def test_a_stream_that_never_ends_is_abandoned_mid_body(server: Server) -> None:
    w = wire(0.5)
    chunks = 0

    async def read_all() -> None:
        nonlocal chunks
        async with w.post(server.url + "/trickle", {}, b"{}") as response:
            assert response.status == 200
            async for _ in response.iter_chunks():
                chunks += 1

    try:
        with pytest.raises(RequestError) as caught:
            await read_all()
    finally:
        await w.aclose()
    assert caught.value.error_type == "timeout"
    assert chunks >= 1  # it was abandoned while answering, not before


async def test_cancelling_the_caller_is_a_cancellation_not_a_timeout(server: Server) -> None:
    w = wire(30.0)
    try:
        with anyio.move_on_after(0.2) as scope:
            await w.fetch(server.url + "/stall", {}, b"{}")
        assert scope.cancelled_caught
    finally:
        await w.aclose()


class _LoopAtFarFuture:
    """Stands in for the loop in a sweep: every deadline has passed."""

    def time(self) -> float:
        return 1e12

    def call_later(self, *args: Any) -> None:
        return None


async def test_a_deadline_coinciding_with_the_run_stopping_lets_the_stop_through(
    server: Server,
) -> None:
    w = wire(30.0)
    outcome: list[str] = []

    async def attempt() -> None:
        try:
            await w.fetch(server.url + "/stall", {}, b"{}")
        except RequestError:
            outcome.append("timeout")
            raise
        outcome.append("answered")

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(attempt)
            await server.arrived.wait()
            group.cancel_scope.cancel()  # the run stops ...
            w._deadlines._sweep(_LoopAtFarFuture())  # type: ignore[arg-type]  # ... as the deadline passes
    finally:
        await w.aclose()
    assert outcome == []  # cancelled: neither a timeout row nor an answer
