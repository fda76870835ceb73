"""Running the simulator: inside the current event loop, on its own thread, or as a
blocking foreground server for ``batchrunner simulate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from .app import SimulatorState, build_app
from .batch import BatchService
from .config import SimulatorConfig, SimulatorStatistics
from .storage import ObjectStore

logger = logging.getLogger(__name__)

# How long shutdown waits for requests still being served (stalls, slow streams).
_SHUTDOWN_TIMEOUT_S = 0.5
_BACKLOG = 8192  # the kernel caps it at net.core.somaxconn


class Simulator:
    """A running simulator: its URLs, token issuing, key files, records and statistics."""

    def __init__(self, state: SimulatorState, host: str, port: int) -> None:
        self._state = state
        self.config = state.config
        self.host = host
        self.port = port
        url_host = f"[{host}]" if ":" in host else host
        self.root_url = f"http://{url_host}:{port}"
        self.token_uri = f"{self.root_url}/token"
        self.metadata_host = f"{url_host}:{port}"

    def __repr__(self) -> str:
        return f"<Simulator {self.root_url} project={self.config.project!r}>"

    def base_url(
        self, location: str = "global", version: str = "v1", endpoint: str = "openapi"
    ) -> str:
        """The OpenAI base URL (everything before ``/chat/completions``)."""
        return (
            f"{self.root_url}/{version}/projects/{self.config.project}"
            f"/locations/{location}/endpoints/{endpoint}"
        )

    def issue_token(self, ttl: float | None = None) -> str:
        """A bearer token the simulator accepts until ``ttl`` (default: token_ttl) passes."""
        token, _ = self._state.tokens.issue(ttl)
        return token

    def issued_tokens(self) -> list[str]:
        """Every access token issued so far (ground truth for tests that hunt for leaks)."""
        return self._state.tokens.issued_tokens()

    def write_credentials(self, path: str | os.PathLike[str]) -> Path:
        """Write a service-account key file (fresh RSA key) whose token_uri is this server."""
        return self._state.keys.write_key_file(path, self.token_uri)

    @property
    def records(self) -> list[dict[str, object]]:
        """One record per chat request served (only when ``keep_records``)."""
        return self._state.recorder.records

    @property
    def storage(self) -> ObjectStore:
        """The simulated Cloud Storage (seed inputs, read predictions without HTTP)."""
        return self._state.storage

    @property
    def batch(self) -> BatchService:
        """Batch prediction jobs: ``jobs()`` and ``lines()`` are the server's record."""
        return self._state.batch

    def storage_url(self) -> str:
        """The value for ``STORAGE_EMULATOR_HOST`` (scheme included, as the client wants)."""
        return self.root_url

    def flush_log(self) -> None:
        """Write buffered request-log lines to disk now."""
        self._state.recorder.flush()

    def statistics(self) -> SimulatorStatistics:
        return self._state.statistics()


@asynccontextmanager
async def open_simulator(
    config: SimulatorConfig | None = None,
) -> AsyncIterator[Simulator]:
    """Serve the simulator inside the running asyncio loop for the duration of the block."""
    config = config if config is not None else SimulatorConfig()
    state = SimulatorState(config)
    runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        sock = _bind(config.host, config.port)
        try:
            # aiohttp listens again with its own backlog (128 unless told): thousands of
            # clients connecting at once would see dropped SYNs and a second's retransmit,
            # which a real endpoint's front end does not impose.
            site = web.SockSite(runner, sock, backlog=_BACKLOG)
            await site.start()
        except BaseException:
            sock.close()
            raise
        port = sock.getsockname()[1]
        simulator = Simulator(state, config.host, port)
        logger.info("simulator listening on %s", simulator.root_url)
        yield simulator
    finally:
        await runner.cleanup()
        state.recorder.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


@contextmanager
def start_simulator_thread(
    config: SimulatorConfig | None = None,
) -> Iterator[Simulator]:
    """Serve the simulator on its own thread and event loop, for sync code and benchmarks."""
    ready: queue.Queue[Simulator | BaseException] = queue.Queue(maxsize=1)
    loop = _new_loop()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            async with open_simulator(config) as simulator:
                ready.put(simulator)
                await stop.wait()
        except BaseException as exc:
            if ready.empty():
                ready.put(exc)
            raise

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(BaseException):
            loop.run_until_complete(main())
        loop.close()

    thread = threading.Thread(target=run, name="batchrunner-simulator", daemon=True)
    thread.start()
    outcome = ready.get()
    if isinstance(outcome, BaseException):
        thread.join()
        raise outcome
    try:
        yield outcome
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()


def serve(
    config: SimulatorConfig,
    *,
    credentials_out: str | None = None,
    ready: Callable[[Simulator], None] | None = None,
) -> None:
    """Serve in the foreground until KeyboardInterrupt or SIGTERM; ``ready(sim)`` once listening."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with open_simulator(config) as simulator:
            if credentials_out is not None:
                simulator.write_credentials(credentials_out)
            if ready is not None:
                ready(simulator)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        _run(main())


def _new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed: the simulator should never be the bottleneck."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _run(coro: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(coro)
