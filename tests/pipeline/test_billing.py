"""Billing by what served each row: tier headers on the wire, cost per traffic type against
the simulator's own record, the Flex-unsupported stop, and a budget that holds for the job.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.config import RunConfig, Secret
from batchrunner.endpoint.client import ChatClient
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.endpoint.wire import HttpxWire
from batchrunner.limits.local import LimitConfig, LocalLimiter
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.pipeline.tiers import tier_plan
from batchrunner.results import RequestSpec
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator
from batchrunner.stats.pricing import PriceTable

pytestmark = pytest.mark.anyio

TOKEN = "ya29.test-token-value-0123456789"
FLASH = "google/gemini-2.5-flash"
GEMINI_3 = "google/gemini-3.1-pro-preview"
GPT_OSS = "openai/gpt-oss-120b-maas"
SHARED = "x-vertex-ai-llm-shared-request-type"
REQUEST_TYPE = "x-vertex-ai-llm-request-type"
VERTEX = "https://aiplatform.googleapis.com/v1/projects/p/locations/global/endpoints/openapi"
# What each traffic type costs relative to the standard rate, as Vertex bills it.
BILLED_AS = {
    "ON_DEMAND": 1.0,
    "ON_DEMAND_FLEX": 0.5,
    "ON_DEMAND_PRIORITY": 1.8,
    "PROVISIONED_THROUGHPUT": 0.0,
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def prompts(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "prompt": f"question number {i}?", **extra} for i in range(n)]


# --- headers on the wire ---------------------------------------------------------------------


async def send_through(config: RunConfig, url: str, model: str) -> httpx.Headers:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "hi"}}]})

    plan = tier_plan(config, url)
    wire = HttpxWire(httpx.MockTransport(answer))
    client = ChatClient(
        wire,
        url + "/chat/completions",
        StaticAuthenticator(Secret(TOKEN)),
        headers=plan.headers,
        model_headers=plan.model_headers,
    )
    spec = RequestSpec(0, "a", model, b'{"model": "m"}', 3, None, False)
    await client.send(spec)
    await client.send(spec)  # the second request reuses the precomputed headers
    await wire.aclose()
    assert len(seen) == 2
    assert seen[0].headers == seen[1].headers
    return seen[0].headers


@pytest.mark.parametrize(
    ("tier", "provisioned", "shared", "request_type"),
    [
        ("standard", "auto", None, None),
        ("flex", "auto", "flex", None),
        ("priority", "auto", "priority", None),
        ("standard", "only", None, "dedicated"),
        ("standard", "never", None, "shared"),
        ("priority", "never", "priority", "shared"),
    ],
)
async def test_every_tier_sends_its_documented_headers(
    tmp_path: Path, tier: str, provisioned: str, shared: str | None, request_type: str | None
) -> None:
    config = RunConfig(tmp_path / "in", tmp_path / "out", tier=tier, provisioned=provisioned)
    headers = await send_through(config, VERTEX, GEMINI_3)
    assert headers.get(SHARED) == shared
    assert headers.get(REQUEST_TYPE) == request_type
    assert headers["authorization"] == f"Bearer {TOKEN}"


async def test_a_model_of_its_own_tier_replaces_the_runs_tier(tmp_path: Path) -> None:
    config = RunConfig(
        tmp_path / "in", tmp_path / "out", tier="flex", model_tiers={GPT_OSS: "standard"}
    )
    assert (await send_through(config, VERTEX, GEMINI_3)).get(SHARED) == "flex"
    assert SHARED not in await send_through(config, VERTEX, GPT_OSS)


async def test_flex_is_not_asked_of_a_server_that_is_not_vertex(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = RunConfig(tmp_path / "in", tmp_path / "out", tier="flex")
    with caplog.at_level(logging.WARNING, logger="batchrunner"):
        headers = await send_through(config, "http://127.0.0.1:9/v1", GEMINI_3)
    assert SHARED not in headers
    assert [r.message for r in caplog.records if "Flex" in r.message]


# --- cost per row against the simulator's record ----------------------------------------------


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    config = SimulatorConfig(
        static_tokens=(TOKEN,), keep_records=True, **{"latency": "zero", **overrides}
    )
    async with open_simulator(config) as simulator:
        yield simulator


async def run(sim: Simulator, tmp_path: Path, **kwargs: Any) -> RunSummary:
    kwargs.setdefault("input", tmp_path / "in.jsonl")
    kwargs.setdefault("output", tmp_path / "out.jsonl")
    # Every answer is billed, an empty one too: these runs count cost, not answers.
    kwargs.setdefault("fail_on", frozenset())
    config = RunConfig(**kwargs)
    limiter = LocalLimiter(
        LimitConfig(max_concurrency=config.concurrency, pause_base_s=0.01, pause_cap_s=0.05)
    )
    runner = Runner(
        config,
        url=sim.base_url(),
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy.no_wait(max_attempts=4),
        limiter=limiter,
    )
    return await runner.run()


def billed(record: dict[str, Any], prices: PriceTable) -> float:
    """What Vertex bills for one served request: its tokens at its traffic type's rates."""
    price = prices.lookup(str(record["model"]))
    assert price is not None
    prompt = int(record["prompt_tokens"])
    cached = int(record["cached_tokens"] or 0)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    standard = (
        (prompt - cached) * price.input
        + cached * cached_rate
        + int(record["completion_tokens"]) * price.output
    ) / 1e6
    return standard * BILLED_AS[str(record["traffic_type"])]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("sim", "tier", "provisioned", "expected"),
    [
        ({}, "standard", "auto", {"ON_DEMAND"}),
        ({}, "flex", "auto", {"ON_DEMAND_FLEX"}),
        ({}, "priority", "auto", {"ON_DEMAND_PRIORITY"}),
        ({"provisioned_share": 1.0}, "standard", "only", {"PROVISIONED_THROUGHPUT"}),
        ({"provisioned_share": 0.5}, "standard", "auto", {"ON_DEMAND", "PROVISIONED_THROUGHPUT"}),
    ],
    indirect=["sim"],
)
async def test_each_rows_cost_is_what_its_traffic_type_bills(
    sim: Simulator,
    tmp_path: Path,
    stream: bool,
    tier: str,
    provisioned: str,
    expected: set[str],
) -> None:
    # A long shared prefix, so that some prompts are billed partly at the cached rate.
    prefix = "background " * 2100
    rows = [
        {"id": f"q{i}", "prompt": f"{prefix} question {i}?", "max_tokens": 64} for i in range(12)
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    summary = await run(
        sim,
        tmp_path,
        models=(GEMINI_3,),
        tier=tier,
        provisioned=provisioned,
        request=_stream(stream),
    )
    assert summary.exit_status == 0
    prices = PriceTable.default()
    served = {r["response_id"]: r for r in sim.records if r["status"] == 200}
    out = read_rows(tmp_path / "out.jsonl")
    assert len(out) == 12
    assert {r["traffic_type"] for r in out} == expected
    for row in out:
        record = served[row["response_id"]]
        assert row["traffic_type"] == record["traffic_type"]
        assert row["cost_usd"] == pytest.approx(billed(record, prices), rel=1e-9, abs=0.0)
    if "PROVISIONED_THROUGHPUT" in expected:
        assert summary.stats.total_by_tier()["PROVISIONED_THROUGHPUT"].rows == sum(
            r["traffic_type"] == "PROVISIONED_THROUGHPUT" for r in out
        )


def _stream(stream: bool) -> Any:
    from batchrunner.config import RequestDefaults

    return RequestDefaults(stream=stream)


# --- the Flex-unsupported stop ----------------------------------------------------------------


async def test_flex_refused_for_a_model_stops_its_lane_with_one_line(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(200, max_tokens=32))
    with caplog.at_level(logging.WARNING, logger="batchrunner"):
        summary = await run(
            sim,
            tmp_path,
            models=(FLASH, GPT_OSS),
            tier="flex",
            model_tiers={GPT_OSS: "standard"},
            concurrency=4,
        )
    rows = read_rows(tmp_path / "out.jsonl")
    # No error row per input row: the refused model wrote nothing, the other one finished.
    assert {r["model"] for r in rows} == {GPT_OSS}
    assert len(rows) == 200 and {r["status"] for r in rows} == {"ok"}
    refused = [r for r in sim.records if r["model"] == FLASH]
    assert 1 <= len(refused) <= 4  # what was in flight when the first refusal came back
    lines = [r.message for r in caplog.records if "Flex" in r.message and FLASH in r.message]
    assert len(lines) == 1, lines
    assert summary.exit_status == 3  # as for the 404 stop
    assert summary.stopped is not None and "--tier standard" in summary.stopped


# --- the job's budget across a crash and two resumes ------------------------------------------


def start_cli(sim: Simulator, tmp_path: Path, budget: float) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENAI_API_KEY": TOKEN}
    env.pop("OPENAI_BASE_URL", None)
    args = [
        sys.executable, "-m", "batchrunner", "run", str(tmp_path / "in.jsonl"),
        "-o", str(tmp_path / "out.jsonl"), "--base-url", sim.base_url(),
        "--model", FLASH, "--concurrency", "2", "--max-cost", str(budget), "--progress", "off",
    ]  # fmt: skip
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


async def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=120))
    return proc.returncode, err


def ledger(tmp_path: Path) -> float:
    return sum(r["cost_usd"] or 0.0 for r in read_rows(tmp_path / "out.jsonl"))


@pytest.mark.parametrize("sim", [{"latency": "fast"}], indirect=True)
async def test_a_budget_holds_across_a_crash_and_two_resumes(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(400, max_tokens=200))
    out = tmp_path / "out.jsonl"
    budget = 0.03
    concurrency = 2

    # First run: killed (-9) once some rows are written, well before the budget.
    first = start_cli(sim, tmp_path, budget)
    for _ in range(6000):  # another process writes the file: poll it, up to a minute
        if out.exists() and out.read_bytes().count(b"\n") >= 5:
            break
        await anyio.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    await finish(first)
    assert first.returncode == -signal.SIGKILL
    crashed_at = ledger(tmp_path)
    assert 0 < crashed_at < budget

    # First resume: admits only what is left, and stops at the budget.
    code, err = await finish(start_cli(sim, tmp_path, budget))
    assert code == 3, err
    assert "rerunning with the same budget sends nothing" in err
    served = [r for r in sim.records if r["status"] == 200]
    most = max(billed(r, PriceTable.default()) for r in served)
    spent = ledger(tmp_path)
    assert spent >= budget - 2 * concurrency * most
    # The bound: what was admitted and unanswered when the budget was reached (in flight,
    # plus the one-per-worker queue), at most 2 x --concurrency requests.
    assert spent <= budget + 2 * concurrency * most
    # The server saw, beyond the rows, only what the crash lost in flight or unwritten.
    server_spend = sum(billed(r, PriceTable.default()) for r in served)
    assert server_spend <= budget + 2 * concurrency * most + 2 * concurrency * most
    assert len(read_rows(out)) < 400

    # Second resume at the same budget: sends nothing, says so, exits 3 at once.
    before = len(sim.records)
    code, err = await finish(start_cli(sim, tmp_path, budget))
    assert code == 3, err
    assert "rerunning with the same budget sends nothing" in err
    assert len(sim.records) == before
    assert ledger(tmp_path) == spent

    # A larger budget continues.
    code, err = await finish(start_cli(sim, tmp_path, budget * 2))
    assert len(sim.records) > before
    assert ledger(tmp_path) > spent


async def test_a_spent_budget_with_nothing_left_to_do_exits_0(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(20, max_tokens=50))
    summary = await run(sim, tmp_path, models=(FLASH,))
    assert summary.exit_status == 0
    spent = ledger(tmp_path)
    before = len(sim.records)
    again = await run(sim, tmp_path, models=(FLASH,), max_cost=spent / 2)
    assert again.exit_status == 0 and not again.budget_spent
    assert len(sim.records) == before
