"""Shared fakes for the tests."""

from __future__ import annotations

from types import MappingProxyType

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from batchrunner.auth.tokens import AuthHeaders


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """A monotonic clock for one task: sleeping records the wait and moves time forward."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


class RotatingAuth:
    """An authenticator that hands out ``tok-0``, then ``tok-1`` after each 401."""

    def __init__(self) -> None:
        self.generation = 0
        self.refreshes = 0

    def _current(self) -> AuthHeaders:
        return AuthHeaders(
            MappingProxyType({"Authorization": f"Bearer tok-{self.generation}"}),
            self.generation,
        )

    async def headers(self) -> AuthHeaders:
        return self._current()

    async def unauthorized(self, used: AuthHeaders) -> AuthHeaders:
        if used.generation == self.generation:
            self.generation += 1
            self.refreshes += 1
        return self._current()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()

    def describe(self) -> str:
        return "rotating test tokens"
