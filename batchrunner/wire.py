"""How request bytes reach the server: a direct aiohttp session, or any httpx transport.

Real traffic goes over ``AiohttpWire``: at thousands of requests in flight the httpx
client layers (URL merging, cookie jar, request and response models) cost several times
what the HTTP exchange itself costs. ``HttpxWire`` carries the same exchange over any
``httpx.AsyncBaseTransport`` — ``MockTransport`` and ``ASGITransport`` in tests, or a
transport with proxies or custom TLS. Both turn transport failures into ``RequestError``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import aiohttp
import anyio
import httpx

from batchrunner.classify import error_from_exception
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


def _connection_error(exc: BaseException) -> RequestError:
    message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return RequestError(f"connection failed: {message}", error_type="connection", retryable=True)


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


class AiohttpWire:
    """One aiohttp session with a keep-alive connection for every request in flight."""

    def __init__(
        self, *, connections: int, connect_timeout_s: float, read_timeout_s: float
    ) -> None:
        self._connections = connections
        # ``total`` bounds the whole attempt, body included, so a stalled stream is
        # abandoned; it is aiohttp's own deadline, cheaper than a cancel scope per request.
        # No separate read timeout: it could never fire before ``total`` and would re-arm
        # a timer on every chunk received.
        self._timeout = aiohttp.ClientTimeout(total=read_timeout_s, sock_connect=connect_timeout_s)
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
        try:
            async with session.post(url, data=body, headers=headers) as response:
                return response.status, response.headers, await response.read()
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise self._timed_out() from None
        except aiohttp.ClientError as exc:
            raise _connection_error(exc) from None

    @asynccontextmanager
    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AsyncIterator[WireResponse]:
        session = self._open()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                yield _AiohttpResponse(response)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise self._timed_out() from None
        except aiohttp.ClientError as exc:
            raise _connection_error(exc) from None

    def _timed_out(self) -> RequestError:
        return RequestError(
            f"no complete answer within {self._timeout.total:g} s",
            error_type="timeout",
            retryable=True,
        )

    async def aclose(self) -> None:
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
