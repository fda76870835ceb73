"""Fixtures for the batch route: a simulator on an injected clock, and a route wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.batch.route import BatchRoute, Polling
from batchrunner.config import RunConfig, Secret
from batchrunner.simulator import SimulatorConfig, open_simulator
from batchrunner.simulator.server import Simulator

GEMINI = "google/gemini-2.5-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"
TURNAROUND = 600.0


class Clock:
    """The simulator's clock and the poller's: sleeping moves it on, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sim_options() -> dict[str, Any]:
    return {}


@pytest.fixture
async def sim(clock: Clock, sim_options: dict[str, Any]) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(
        static_tokens=("test-token",),
        clock=clock,
        batch_turnaround_s=TURNAROUND,
        **sim_options,
    )
    async with open_simulator(config) as simulator:
        yield simulator


def write_prompts(path: Path, count: int, **extra: Any) -> Path:
    with path.open("wb") as f:
        for i in range(count):
            f.write(orjson.dumps({"id": f"r{i}", "prompt": f"question {i}", **extra}) + b"\n")
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


RouteFactory = Callable[..., BatchRoute]


@pytest.fixture
def make_route(sim: Simulator, clock: Clock, tmp_path: Path) -> RouteFactory:
    def make(models: tuple[str, ...] = (GEMINI,), **changes: Any) -> BatchRoute:
        route_options = {k: changes.pop(k) for k in ("max_requests", "max_bytes") if k in changes}
        values: dict[str, Any] = {
            "input": tmp_path / "prompts.jsonl",
            "output": tmp_path / "out.jsonl",
            "models": models,
            "via": "batch",
            "staging": "gs://stage/runs",
            "project": "sim-project",
            **changes,
        }
        return BatchRoute(
            RunConfig(**values),
            authenticator=StaticAuthenticator(Secret("test-token")),
            api_root=sim.root_url,
            storage_url=sim.storage_url(),
            polling=Polling(first_s=30.0, max_s=300.0),
            clock=clock,
            sleep=clock.sleep,
            **route_options,
        )

    return make
