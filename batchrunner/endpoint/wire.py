"""How request bytes reach the server: a direct aiohttp session, or any httpx transport.

Real traffic goes over ``AiohttpWire``: at thousands of requests in flight the httpx
client layers (URL merging, cookie jar, request and response models) cost several times
what the HTTP exchange itself costs. ``HttpxWire`` carries the same exchange over any
``httpx.AsyncBaseTransport`` — ``MockTransport`` and ``ASGITransport`` in tests, or a
transport with proxies or custom TLS. Both turn transport failures into ``RequestError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import aiohttp
import anyio
import httpx
from aiohttp.payload import BytesPayload

from batchrunner.endpoint.http_errors import error_from_exception
from batchrunner.errors import RequestError


class WireResponse(Protocol):
    """The status, headers and body of one response, read once."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...


class Wire(Protocol):
    """Posts a body: ``fetch`` reads the whole answer, ``post`` hands it over as it arrives."""

    async def fetch(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The status, headers and complete body of the response."""
        ...

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AbstractAsyncContextManager[WireResponse]: ...

    async def aclose(self) -> None: ...


def _untrusted_certificate(exc: aiohttp.ClientConnectorCertificateError) -> str:
    """Why the server's certificate was refused, and how to trust a private CA."""
    reason = getattr(exc.certificate_error, "verify_message", None) or "verification failed"
    return (
        f"the TLS certificate of {exc.host}:{exc.port} is not trusted ({reason}); "
        "behind a private CA or a TLS-inspecting proxy, set SSL_CERT_FILE to a PEM file "
        "that holds its CA certificate"
    )


def _connection_error(exc: BaseException) -> RequestError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        message = _untrusted_certificate(exc)
    else:
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    # No connection was made at all (refused, no such host): reason "connect". A connection
    # that was made and then dropped has no reason.
    connect = isinstance(exc, aiohttp.ClientConnectorError)
    return RequestError(
        f"connection failed: {message}",
        error_type="connection",
        retryable=True,
        reason="connect" if connect else None,
    )


class _AiohttpResponse:
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        return await self._response.read()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.content.iter_any():
            yield chunk


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("AiohttpWire must be used from an asyncio task")
    return task


class _Deadlines:
    """Abandons attempts that outlive their deadline, with one timer for all of them.

    aiohttp's own ``total`` timeout arms a loop timer per request; at thousands of
    requests a second that timer is a tenth of the client's CPU. Here every attempt gets
    the same allowance, so deadlines fall in start order: a sweep every ``tick_s`` cancels
    the overdue ones at the front of an insertion-ordered dict and stops at the first one
    still in time. An attempt is abandoned between ``allowance_s`` and ``allowance_s +
    tick_s`` after it started. The sweep runs only while attempts are in flight.
    """

    __slots__ = ("_allowance_s", "_expired", "_handle", "_in_flight", "_tick_s")

    def __init__(self, allowance_s: float) -> None:
        self._allowance_s = allowance_s
        self._tick_s = min(1.0, max(allowance_s / 10, 0.001))
        self._in_flight: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any]) -> None:
        loop = task.get_loop()
        self._in_flight[task] = loop.time() + self._allowance_s
        if self._handle is None:
            self._handle = loop.call_later(self._tick_s, self._sweep, loop)

    def finish(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``'s attempt; True when the deadline cancelled it.

        The deadline's own cancellation request is taken back (``uncancel``), so a
        cancellation still pending afterwards came from elsewhere (the run stopping).
        """
        del self._in_flight[task]
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._in_flight.items():
            if deadline > now:
                break
            if task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._handle = loop.call_later(self._tick_s, self._sweep, loop) if self._in_flight else None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class AiohttpWire:
    """One aiohttp session with a keep-alive connection for every request in flight."""

    def __init__(
        self, *, connections: int, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        self._connections = connections
        # The whole attempt, body included, is bounded by ``_Deadlines``, so a stalled
        # stream is abandoned; aiohttp itself only bounds opening a connection.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
        self._total_s = read_timeout_s
        self._deadlines = _Deadlines(read_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running event loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections, limit_per_host=0, keepalive_timeout=60.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def fetch(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        # The common case, without a context manager of our own around aiohttp's.
        session = self._open()
        task = _current_task()
        self._deadlines.start(task)
        overdue = False
        try:
            try:
                # A payload, not bytes: aiohttp's registry would take 2 µs to choose one.
                async with session.post(url, data=BytesPayload(body), headers=headers) as response:
                    return response.status, response.headers, await response.read()
            finally:
                overdue = self._deadlines.finish(task)
        except asyncio.CancelledError:
            if overdue and not task.cancelling():
                raise self._timed_out() from None
            raise
        except aiohttp.ClientError as exc:
            raise _connection_error(exc) from None

    @asynccontextmanager
    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[WireResponse]:
        session = self._open()
        task = _current_task()
        self._deadlines.start(task)
        overdue = False
        try:
            try:
                async with session.post(url, data=BytesPayload(body), headers=headers) as response:
                    yield _AiohttpResponse(response)
            finally:
                overdue = self._deadlines.finish(task)
        except asyncio.CancelledError:
            if overdue and not task.cancelling():
                raise self._timed_out() from None
            raise
        except aiohttp.ClientError as exc:
            raise _connection_error(exc) from None

    def _timed_out(self) -> RequestError:
        return RequestError(
            f"no complete answer within {self._total_s:g} s",
            error_type="timeout",
            retryable=True,
        )

    async def aclose(self) -> None:
        self._deadlines.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


class _HttpxResponse:
    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        return await self._response.aread()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():
            yield chunk


class HttpxWire:
    """The same exchange over any httpx transport."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        connect_timeout_s: float = 20.0,
        read_timeout_s: float = 600.0,
    ) -> None:
        self._transport = transport
        self._total_s = read_timeout_s
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=None)
        self._extensions = {"timeout": timeout.as_dict()}

    async def fetch(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        async with self.post(url, headers, body) as response:
            return response.status, response.headers, await response.read()

    @asynccontextmanager
    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[WireResponse]:
        request = httpx.Request(
            "POST", url, content=body, headers=headers, extensions=self._extensions
        )
        try:
            with anyio.fail_after(self._total_s):
                response = await self._transport.handle_async_request(request)
                response.request = request
                try:
                    yield _HttpxResponse(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise RequestError(
                f"no complete answer within {self._total_s:g} s",
                error_type="timeout",
                retryable=True,
            ) from None
        except httpx.HTTPError as exc:
            raise error_from_exception(exc) from None

    async def aclose(self) -> None:
        await self._transport.aclose()
