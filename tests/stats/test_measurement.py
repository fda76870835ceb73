"""What the result rows measure, checked against the simulator's own record of each answer.

The simulator records, on the same monotonic clock as the client, when each request arrived
and when the first and last bytes of its answer left, and the true token counts in OpenAI's
convention (completion includes reasoning). Every latency, token count and cost in a row is
compared with those records, for a Gemini model and for gpt-oss, streamed and not.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.cli.main import main as cli_main
from batchrunner.config import RequestDefaults, RunConfig, Secret
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.limits.local import LimitConfig, LocalLimiter
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator
from batchrunner.stats.pricing import PriceTable

pytestmark = pytest.mark.anyio

TOKEN = "ya29.test-token-value-0123456789"
GEMINI = "google/gemini-2.5-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"
MODELS = (GEMINI, GPT_OSS)

# A fixed latency profile: every answer starts TTFT_S after it arrived and then emits
# RATE tokens a second, with no jitter and no stalls. TTFT is large next to the loopback
# overheads measured below, so an error in where a timestamp is taken would show.
TTFT_S = 0.15
RATE = 200.0
# "low" effort keeps both models short but reasoning: Gemini thinks (hidden) and answers,
# gpt-oss streams 40-250 reasoning tokens, then its answer; at most ~2.6 s per answer.
PARAMS = {"max_tokens": 1500, "reasoning_effort": "low"}
ROWS = 6

# Tolerances. The client's clock starts before it opens the connection and stops after it
# has read the end of the stream; the server's starts when its handler runs and stops when
# it writes its last byte. Both run in this process on one event loop, so the client can
# never measure less than the server (a clock started after the request was sent, or
# stopped before the last chunk, would), and measures more by the connection setup and the
# scheduling of a burst of fresh connections: 1-3 ms one request at a time, 5-15 ms for a
# burst of 12 on an idle machine, 16-75 ms on a 2-CPU machine at load average 8. SETUP_TOL
# bounds that generously; it still catches a clock that also counts limiter waits or
# retry back-off. Differences in which the setup cancels out (first token to last byte)
# agreed within 0.5 ms for most rows even under that load: their median must be within
# READ_TOL, ten times that. A single row may be off by more when the loaded machine
# deschedules this process between the server's write and the client's read (21 ms seen):
# STALL_TOL bounds every row.
SETUP_TOL = 0.25
READ_TOL = 0.005
STALL_TOL = 0.1
CAUSALITY_SLACK = 0.0005  # the server stamps a write just after handing it to the socket


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    # Without a latency profile of its own, a test gets the fixed one above.
    options = (
        overrides
        if "latency" in overrides
        else {"ttft_s": TTFT_S, "tokens_per_s": RATE, **overrides}
    )
    config = SimulatorConfig(static_tokens=(TOKEN,), keep_records=True, **options)
    async with open_simulator(config) as simulator:
        yield simulator


async def run(
    sim: Simulator, tmp_path: Path, *, stream: bool, rows: int = ROWS, name: str = "out"
) -> tuple[list[dict[str, Any]], RunSummary, Path]:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(
            orjson.dumps({"id": f"q{i}", "prompt": f"question number {i}?"}) + b"\n"
            for i in range(rows)
        )
    )
    output = tmp_path / f"{name}.jsonl"
    config = RunConfig(
        input=source,
        output=output,
        models=MODELS,
        concurrency=2 * rows,
        request=RequestDefaults(stream=stream, params=PARAMS),
    )
    runner = Runner(
        config,
        url=sim.base_url(),
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy.no_wait(max_attempts=3),
        limiter=LocalLimiter(LimitConfig(max_concurrency=config.concurrency)),
    )
    summary = await runner.run()
    results = [orjson.loads(line) for line in output.read_bytes().splitlines() if line.strip()]
    return results, summary, output


def served(sim: Simulator) -> dict[str, dict[str, Any]]:
    """The server's record of each answered request, by response id."""
    return {str(r["response_id"]): r for r in sim.records if r["status"] == 200}


def assert_within(values: list[float], lo: float, hi: float) -> None:
    """Every value within [lo, hi] give or take STALL_TOL, their median give or take READ_TOL."""
    assert values
    assert all(lo - STALL_TOL <= v <= hi + STALL_TOL for v in values), values
    assert lo - READ_TOL <= statistics.median(values) <= hi + READ_TOL, values


def server_times(record: dict[str, Any]) -> tuple[float, float]:
    """(first byte, last byte) of an answer, in seconds after its request arrived."""
    arrival = float(record["arrival_monotonic"])
    return (
        float(record["first_byte_monotonic"]) - arrival,
        float(record["last_byte_monotonic"]) - arrival,
    )


def expected_cost(model: str, record: dict[str, Any]) -> float:
    price = PriceTable.default().lookup(model)
    assert price is not None
    prompt = int(record["prompt_tokens"])
    input_rate, _, output_rate = price.rates(prompt)
    # The simulator reports no cached tokens; reasoning is billed as output.
    return (prompt * input_rate + int(record["completion_tokens"]) * output_rate) / 1e6


# ----------------------------------------------------------------------------- timing


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_latency_agrees_with_the_servers_record(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows, _, _ = await run(sim, tmp_path, stream=stream)
    truth = served(sim)
    assert len(rows) == 2 * ROWS and {r["status"] for r in rows} == {"ok"}
    assert {r["attempts"] for r in rows} == {1}  # one attempt each: nothing else to time
    for row in rows:
        _, last = server_times(truth[row["response_id"]])
        assert last > TTFT_S  # the profile applied: the comparison is not of two zeros
        assert -CAUSALITY_SLACK <= row["latency_s"] - last <= SETUP_TOL, row
        if not stream:
            assert row["ttft_s"] is None and row["ttfo_s"] is None and row["itl_s"] is None


async def test_streamed_ttft_is_when_the_first_token_left_the_server(
    sim: Simulator, tmp_path: Path
) -> None:
    rows, _, _ = await run(sim, tmp_path, stream=True)
    truth = served(sim)
    span_errors: list[float] = []
    gaps: list[float] = []
    for row in rows:
        record = truth[row["response_id"]]
        first, last = server_times(record)
        # The setup overhead is the same for both ends of the answer: what the client saw
        # from its first token to the end must match the server's own span.
        client_span = row["latency_s"] - row["ttft_s"]
        if row["model"] == GEMINI:
            # Gemini's first chunk already carries answer text: first byte = first token.
            assert -CAUSALITY_SLACK <= row["ttft_s"] - first <= SETUP_TOL, row
            span_errors.append(client_span - (last - first))
            assert row["ttfo_s"] == row["ttft_s"]  # thinking is hidden: no earlier token
        else:
            # vLLM opens with a role-only chunk ({"content": ""}), which carries no token;
            # the simulator records only that chunk's time. The first reasoning chunk
            # (1-4 tokens) follows it at RATE tokens/s, so it left 1/RATE to 4/RATE later.
            gaps.append((last - first) - client_span)
            assert row["ttft_s"] - first >= 1 / RATE - CAUSALITY_SLACK, row
    assert_within(span_errors, 0.0, 0.0)
    assert_within(gaps, 1 / RATE, 4 / RATE)


async def test_ttft_counts_reasoning_and_ttfo_waits_for_the_answer(
    sim: Simulator, tmp_path: Path
) -> None:
    rows, _, _ = await run(sim, tmp_path, stream=True)
    truth = served(sim)
    oss = [r for r in rows if r["model"] == GPT_OSS]
    assert oss and all(r["reasoning"] and r["output"] for r in oss)
    waits: list[float] = []
    for row in oss:
        reasoning = truth[row["response_id"]]["reasoning_tokens"]
        assert row["ttft_s"] < row["ttfo_s"]
        # The answer's first chunk leaves after every reasoning token, the first reasoning
        # chunk after its own 1-4: the gap is the reasoning's decode time within 3 tokens.
        # Relative to the reasoning's own decode time, so rows of any length compare.
        waits.append(row["ttfo_s"] - row["ttft_s"] - reasoning / RATE)
        # 1-4 tokens per chunk at RATE tokens/s: the mean gap between chunks is in between
        # (a chunk read together with the one before it adds a zero gap, hence the 0.5).
        assert 0.5 / RATE <= row["itl_s"] <= 4 / RATE + STALL_TOL
    assert_within(waits, -3 / RATE, 3 / RATE)
    # Reasoning is streamed: every generated token counts toward the decode rate.
    rates = [row["output_tps"] / RATE for row in oss]
    assert all(0.5 <= r <= 1.5 for r in rates), rates
    assert statistics.median(rates) == pytest.approx(1.0, abs=0.1), rates


async def test_gemini_output_tps_counts_streamed_tokens_from_the_first_token_to_the_last(
    sim: Simulator, tmp_path: Path
) -> None:
    rows, _, _ = await run(sim, tmp_path, stream=True)
    truth = served(sim)
    measured = [r for r in rows if r["model"] == GEMINI and r["output_tps"] is not None]
    assert measured
    for row in measured:
        record = truth[row["response_id"]]
        streamed = record["completion_tokens"] - record["reasoning_tokens"]
        # Hidden thinking is not streamed; the span ends at the last token, before [DONE].
        window = row["latency_s"] - row["ttft_s"]
        assert row["output_tps"] * window >= streamed - 1, row
        assert row["output_tps"] <= RATE * 4, row


# ----------------------------------------------------------------------------- usage, cost


@pytest.mark.parametrize("sim", [{"latency": "zero"}], indirect=True)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_usage_and_cost_match_the_server_for_both_families(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows, _, _ = await run(sim, tmp_path, stream=stream)
    truth = served(sim)
    assert {r["model"] for r in rows} == set(MODELS)
    for row in rows:
        record = truth[row["response_id"]]
        assert record["reasoning_tokens"] > 0  # both models reasoned: the conventions differ
        assert row["prompt_tokens"] == record["prompt_tokens"]
        assert row["completion_tokens"] == record["completion_tokens"]  # reasoning included
        assert row["total_tokens"] == record["total_tokens"]
        # Gemini reports its reasoning count; vLLM does not, and the row does not guess.
        assert row["reasoning_tokens"] == record["reported_reasoning_tokens"]
        if row["model"] == GEMINI:
            assert row["reasoning_tokens"] == record["reasoning_tokens"]
            assert row["traffic_type"] == "ON_DEMAND"
        assert row["cost_usd"] == pytest.approx(expected_cost(row["model"], record), rel=1e-12)


@pytest.mark.parametrize("sim", [{"latency": "zero", "faults": {"no_usage": 1.0}}], indirect=True)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_answers_without_usage_give_empty_usage_and_cost(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows, summary, _ = await run(sim, tmp_path, stream=stream, rows=3)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert row["output"]
        for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
            assert row[key] is None, key
        assert row["output_tps"] is None
    for model in MODELS:
        assert summary.stats.model(model).usage_unknown_rows == 3


@pytest.mark.parametrize("sim", [{"latency": "zero", "faults": {"no_message": 1.0}}], indirect=True)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_answers_without_a_message_are_empty_error_rows_that_keep_their_usage(
    sim: Simulator, tmp_path: Path, stream: bool
) -> None:
    rows, _, _ = await run(sim, tmp_path, stream=stream, rows=3)
    truth = served(sim)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"error"}
    assert {r["error_type"] for r in rows} == {"empty"}
    for row in rows:
        assert row["output"] is None and row["reasoning"] is None
        record = truth[row["response_id"]]
        assert row["completion_tokens"] == record["completion_tokens"]
        assert row["cost_usd"] == pytest.approx(expected_cost(row["model"], record), rel=1e-12)


# ----------------------------------------------------------------------------- the report


@pytest.mark.parametrize("sim", [{"ttft_s": 0.02, "tokens_per_s": 5000.0}], indirect=True)
async def test_report_comparison_follows_from_the_rows(
    sim: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, _, output = await run(sim, tmp_path, stream=True)
    capsys.readouterr()
    assert cli_main(["report", str(output), "--format", "json"]) == 0
    comparison = json.loads(capsys.readouterr().out)["comparison"]

    by_model = {m: [r for r in rows if r["model"] == m] for m in MODELS}
    baseline = sorted(MODELS)[0]  # the report's baseline: its first model, by name
    assert [e["model"] for e in comparison["entries"]] == sorted(MODELS)
    assert comparison["common_ids"] == ROWS
    cost = {m: sum(r["cost_usd"] for r in rs) for m, rs in by_model.items()}
    p50 = {m: statistics.median(r["latency_s"] for r in rs) for m, rs in by_model.items()}
    for entry in comparison["entries"]:
        model = entry["model"]
        assert entry["cost_usd"] == pytest.approx(cost[model])
        assert entry["cost_per_1k_rows"] == pytest.approx(cost[model] / ROWS * 1000)
        assert entry["cost_ratio"] == pytest.approx(cost[model] / cost[baseline])
        assert entry["latency"]["p50"] == pytest.approx(p50[model])
        assert entry["latency_p50_ratio"] == pytest.approx(p50[model] / p50[baseline])
        assert entry["mean_completion_tokens"] == pytest.approx(
            statistics.mean(r["completion_tokens"] for r in by_model[model])
        )
    winners = comparison["winners"]
    assert winners["cost"] == min(MODELS, key=lambda m: cost[m]) == GPT_OSS
    assert winners["latency_p50"] == min(MODELS, key=lambda m: p50[m])

    assert cli_main(["report", str(output), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert f"cost: {GPT_OSS}" in markdown
    # gpt-oss reasons but does not count it: unknown ("–"), not 0, and said so.
    thought = sum(r["reasoning_tokens"] for r in by_model[GEMINI])
    assert f"|   of which reasoning | {thought:,} | – | {thought:,} |" in markdown
    assert (
        f"did not count (gpt-oss/vLLM; output tokens still include them), rows: {GPT_OSS} {ROWS}"
        in markdown
    )
    ratio = cost[GPT_OSS] / cost[GEMINI]
    assert f"| cost vs {GEMINI} | 1.00× | {ratio:.2f}× |" in markdown
