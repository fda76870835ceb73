"""Shared fakes for the tests."""

from __future__ import annotations

from types import MappingProxyType

import anyio
import anyio.abc
import pytest

from batchrunner.auth import AuthHeaders


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
