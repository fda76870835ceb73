"""Lanes: each model of a run flows at its own pace, and every (id, model) is written once."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.config import RunConfig, Secret
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.limits.local import LimitConfig, LocalLimiter
from batchrunner.pipeline.counters import Counters
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator

pytestmark = pytest.mark.anyio

TOKEN = "ya29.test-token-value-lanes"
GEMINI = "google/gemini-2.5-flash-lite"
GPT_OSS = "openai/gpt-oss-120b-maas"  # the simulator holds it to its published 650 RPM


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    config = SimulatorConfig(static_tokens=(TOKEN,), keep_records=True, **overrides)
    async with open_simulator(config) as simulator:
        yield simulator


def write_rows(path: Path, n: int) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": f"question {i}?", "max_tokens": 16, "reasoning_effort": "minimal"}
        for i in range(n)
    ]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def runner(sim: Simulator, config: RunConfig, **kwargs: Any) -> Runner:
    limiter = LocalLimiter(
        LimitConfig(max_concurrency=config.concurrency, pause_base_s=0.01, pause_cap_s=0.05)
    )
    return Runner(
        config,
        url=kwargs.pop("url", sim.base_url()),
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy(max_attempts=20, base_s=0.05, cap_s=0.5),
        limiter=limiter,
        **kwargs,
    )


async def run(sim: Simulator, tmp_path: Path, n: int, **kwargs: Any) -> RunSummary:
    on_progress = kwargs.pop("on_progress", None)
    config = RunConfig(
        input=write_rows(tmp_path / "in.jsonl", n),
        output=tmp_path / "out.jsonl",
        concurrency=kwargs.pop("concurrency", 8),
        fail_on=frozenset(),  # gpt-oss may think through a short cap: flow, not answers
        **kwargs,
    )
    return await runner(sim, config, on_progress=on_progress).run()


@pytest.mark.parametrize("sim", [{"latency": "fast"}], indirect=True)
async def test_a_free_model_finishes_before_a_quota_bound_one_reaches_its_last_third(
    sim: Simulator, tmp_path: Path
) -> None:
    seen: list[dict[str, str | None]] = []

    def on_progress(counters: Counters) -> None:
        seen.append({m: lane.waiting_on for m, lane in counters.lanes.items()})

    summary = await run(sim, tmp_path, 60, models=(GEMINI, GPT_OSS), on_progress=on_progress)
    rows = read_rows(tmp_path / "out.jsonl")
    assert Counter((r["id"], r["model"]) for r in rows) == Counter(
        {(f"q{i}", m): 1 for i in range(60) for m in (GEMINI, GPT_OSS)}
    )
    assert {r["status"] for r in rows} == {"ok"}
    quota_bound = sorted(r["finished_at"] for r in rows if r["model"] == GPT_OSS)
    free = max(r["finished_at"] for r in rows if r["model"] == GEMINI)
    # gpt-oss's 650 RPM lets about 11 rows a second through: 60 take ~5 s. The free lane
    # must not wait behind those: all its rows are done before gpt-oss's last third starts.
    assert free < quota_bound[40]
    assert summary.stats.model(GPT_OSS).retries_by_cause.get("rate_limited", 0) >= 1
    assert summary.stats.model(GEMINI).retries == 0
    # The live progress said what held gpt-oss back, and never blamed the free lane.
    held = {view[GPT_OSS] for view in seen} - {None}
    assert held and held <= {"rpm", "429 backoff"} | {h for h in held if h.startswith("window")}
    assert all(view[GEMINI] is None for view in seen[len(seen) // 2 :])


async def test_lanes_resume_per_model_and_keep_input_order_when_asked(
    sim: Simulator, tmp_path: Path
) -> None:
    first = await run(sim, tmp_path, 30, models=(GEMINI, GPT_OSS), ordered=True)
    assert first.sent == 60 and first.exit_status == 0
    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["row"] for r in rows] == sorted(r["row"] for r in rows)
    served = len(sim.records)
    again = await run(sim, tmp_path, 30, models=(GEMINI, GPT_OSS), ordered=True)
    assert (again.sent, again.skipped) == (0, 60)
    assert len(sim.records) == served  # nothing was sent twice
    assert len(read_rows(tmp_path / "out.jsonl")) == 60


async def test_duplicate_ids_and_bad_rows_are_counted_once_with_several_lanes(
    sim: Simulator, tmp_path: Path
) -> None:
    lines = [b'{"id": "a", "prompt": "x"}', b'{"id": "a", "prompt": "y"}', b"{not json"]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = RunConfig(
        input=tmp_path / "in.jsonl",
        output=tmp_path / "out.jsonl",
        models=(GEMINI, GPT_OSS),
        fail_on=frozenset(),
    )
    summary = await runner(sim, config).run()
    assert (summary.duplicates, summary.bad_rows) == (1, 2)
    rows = read_rows(tmp_path / "out.jsonl")
    assert Counter((r["model"], r["status"]) for r in rows) == {
        (GEMINI, "ok"): 1,
        (GPT_OSS, "ok"): 1,
        (GEMINI, "error"): 1,
        (GPT_OSS, "error"): 1,
    }
