"""The pool end to end against the simulator on loopback: what a user of a run would see."""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.config import RequestDefaults, RunConfig, Secret
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.errors import AbortError
from batchrunner.limits.local import LimitConfig, LocalLimiter
from batchrunner.pipeline.first_answers import FIRST_ANSWERS
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator

pytestmark = pytest.mark.anyio

TOKEN = "ya29.test-token-value-0123456789"
GEMINI = "google/gemini-2.5-flash"
GPT_OSS = "openai/gpt-oss-120b-maas"


@pytest.fixture
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    overrides: dict[str, Any] = getattr(request, "param", {})
    config = SimulatorConfig(static_tokens=(TOKEN,), keep_records=True, **overrides)
    async with open_simulator(config) as simulator:
        yield simulator


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return rows
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def run(sim: Simulator, tmp_path: Path, **kwargs: Any) -> RunSummary:
    kwargs.setdefault("input", tmp_path / "in.jsonl")
    kwargs.setdefault("output", tmp_path / "out.jsonl")
    policy = kwargs.pop("policy", RetryPolicy.no_wait(max_attempts=8))
    url = kwargs.pop("url", sim.base_url())
    config = RunConfig(**kwargs)
    # Model-wide pauses after a 429 are real time: keep them short in tests.
    limiter = LocalLimiter(
        LimitConfig(max_concurrency=config.concurrency, pause_base_s=0.01, pause_cap_s=0.05)
    )
    runner = Runner(
        config,
        url=url,
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=policy,
        limiter=limiter,
    )
    return await runner.run()


def prompts(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": f"q{i}", "prompt": f"question number {i}?", **extra} for i in range(n)]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
async def test_every_row_gets_exactly_one_ok_result(
    sim: Simulator, tmp_path: Path, suffix: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(200, max_tokens=64, reasoning_effort="minimal"))
    out = tmp_path / f"out{suffix}"
    summary = await run(sim, tmp_path, output=out, concurrency=16)
    rows = read_results(out)
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}" for i in range(200))
    assert {r["status"] for r in rows} == {"ok"}
    assert summary.exit_status == 0
    served = [r for r in sim.records if r["status"] == 200]
    assert len(served) == 200
    assert not (tmp_path / "out.parquet.parts").exists()


@pytest.mark.parametrize("sim", [{"rpm_quota": 100_000, "tpm_quota": 100_000_000}], indirect=True)
async def test_two_models_fan_out_and_usage_matches_the_server(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(30, max_tokens=2000))
    await run(sim, tmp_path, models=(GEMINI, GPT_OSS))
    rows = read_results(tmp_path / "out.jsonl")
    assert Counter(r["model"] for r in rows) == {GEMINI: 30, GPT_OSS: 30}
    truth = {r["response_id"]: r for r in sim.records if r["status"] == 200}
    for row in rows:
        served = truth[row["response_id"]]
        assert row["prompt_tokens"] == served["prompt_tokens"]
        # OpenAI convention for both families: output tokens include reasoning
        assert row["completion_tokens"] == served["completion_tokens"]
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
        assert row["cost_usd"] is not None and row["cost_usd"] > 0


async def test_bad_rows_become_error_rows_and_the_run_goes_on(
    sim: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b'{"id": "a", "prompt": "fine"}\n'
        b"{broken\n"
        b'{"id": "c"}\n'
        b'{"id": "d", "messages": "not a list"}\n'
        b'{"id": "e", "prompt": "also fine"}\n'
    )
    summary = await run(sim, tmp_path)
    rows = {r["id"]: r for r in read_results(tmp_path / "out.jsonl")}
    assert rows["a"]["status"] == "ok" and rows["e"]["status"] == "ok"
    assert rows["row-1"]["error_message"].startswith("in.jsonl line 2: invalid JSON")
    assert rows["c"]["error_message"] == "in.jsonl line 3: row has neither 'prompt' nor 'messages'"
    assert "line 4" in rows["d"]["error_message"]
    assert {rows[k]["error_type"] for k in ("row-1", "c", "d")} == {"bad_input"}
    assert summary.exit_status == 1


async def test_duplicate_ids_are_skipped_and_counted(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", [*prompts(3), {"id": "q1", "prompt": "again"}])
    summary = await run(sim, tmp_path)
    rows = read_results(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == ["q0", "q1", "q2"]
    assert summary.duplicates == 1


@pytest.mark.parametrize(
    "sim",
    # 25 % of attempts fail: a row fails all ten attempts with probability 1e-6.
    [{"faults": {"500": 0.05, "503": 0.05, "reset": 0.05, "truncate": 0.05, "429": 0.05}}],
    indirect=True,
)
async def test_transient_faults_end_ok_after_retries(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(150, max_tokens=64, reasoning_effort="minimal"))
    summary = await run(sim, tmp_path, concurrency=8, policy=RetryPolicy.no_wait(max_attempts=10))
    rows = read_results(tmp_path / "out.jsonl")
    assert len(rows) == 150
    assert [r["error_message"] for r in rows if r["status"] != "ok"] == []
    assert any(r["attempts"] > 1 for r in rows)
    assert summary.stats.total.retries > 0
    assert sim.statistics().faults_injected


@pytest.mark.parametrize("sim", [{"faults": {"truncate": 0.2}, "latency": "zero"}], indirect=True)
async def test_streams_cut_before_done_are_retried(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(60, max_tokens=3000))
    config_extra = {"request": RequestDefaults(stream=True)}
    await run(sim, tmp_path, **config_extra)
    rows = read_results(tmp_path / "out.jsonl")
    assert {r["status"] for r in rows} == {"ok"}
    # Gemini hides its thinking: a row whose budget went to thinking has no token to time.
    assert all(r["ttft_s"] is not None for r in rows if r["output"])
    assert any(r["output"] for r in rows)


async def test_permanent_errors_are_sent_once(sim: Simulator, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(5))
    summary = await run(sim, tmp_path, models=("google/gemini-9-imaginary",))
    rows = read_results(tmp_path / "out.jsonl")
    assert {r["error_type"] for r in rows} == {"not_found"}
    assert {r["attempts"] for r in rows} == {1}
    assert {r["http_status"] for r in rows} == {404}
    assert len(sim.records) == 5
    assert summary.exit_status == 1


async def test_a_run_whose_first_answers_are_all_404_stops_instead_of_failing_every_row(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(1000))
    wrong = sim.base_url().replace("/endpoints/openapi", "/endpoints/nowhere")
    summary = await run(sim, tmp_path, url=wrong, concurrency=8)
    rows = read_results(tmp_path / "out.jsonl")
    assert summary.stopped is not None and "404 Not Found" in summary.stopped
    assert summary.exit_status == 3
    assert {r["http_status"] for r in rows} == {404}
    assert FIRST_ANSWERS <= len(rows) < FIRST_ANSWERS + 8 * 2

    fixed = await run(sim, tmp_path, retry_failed=True)  # the base URL corrected
    rows = read_results(tmp_path / "out.jsonl")
    assert fixed.stopped is None and fixed.exit_status == 0
    assert sorted(r["id"] for r in rows) == sorted(p["id"] for p in prompts(1000))
    assert {r["status"] for r in rows} == {"ok"}


async def test_a_run_whose_first_attempts_cannot_connect_stops_at_once(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(1000))
    with socket.socket() as closed:  # bound, never listening: every connect is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        wrong = f"http://127.0.0.1:{port}/v1"
        # Real backoff between attempts: waiting for rows to fail after every retry would
        # take minutes; the stop must come from the first refused attempts.
        policy = RetryPolicy(max_attempts=8, base_s=1.0, cap_s=60.0)
        summary = await run(sim, tmp_path, url=wrong, concurrency=8, policy=policy)
    assert summary.stopped is not None and "never reached the server" in summary.stopped
    assert f"127.0.0.1:{port}" in summary.stopped  # what failed, in the user's terms
    assert summary.exit_status == 3
    assert summary.sent == 0  # no row was given up on: all are left for the next run
    assert summary.wall_s < 5.0 * 4  # generous on a loaded machine; a minute before

    fixed = await run(sim, tmp_path, retry_failed=True)  # the base URL corrected
    rows = read_results(tmp_path / "out.jsonl")
    assert fixed.stopped is None and fixed.exit_status == 0
    assert sorted(r["id"] for r in rows) == sorted(p["id"] for p in prompts(1000))


async def test_a_host_that_never_answers_a_connect_stops_the_run_too(
    sim: Simulator, tmp_path: Path
) -> None:
    # A firewall that drops packets: connects neither succeed nor fail, they time out. A
    # listener whose one-connection queue is full does the same on loopback.
    write_jsonl(tmp_path / "in.jsonl", prompts(1000))
    with socket.socket() as silent, socket.socket() as filler:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        filler.connect(("127.0.0.1", port))
        wrong = f"http://127.0.0.1:{port}/v1"
        policy = RetryPolicy.no_wait(max_attempts=2)
        summary = await run(
            sim, tmp_path, url=wrong, concurrency=8, connect_timeout_s=0.2, policy=policy
        )
    rows = read_results(tmp_path / "out.jsonl")
    assert summary.stopped is not None and "never reached the server" in summary.stopped
    assert summary.exit_status == 3
    assert {r["error_type"] for r in rows} == {"connection"}
    assert {r["attempts"] for r in rows} == {2}
    assert FIRST_ANSWERS <= len(rows) < FIRST_ANSWERS + 8 * 2


@pytest.mark.parametrize("sim", [{"faults": {"reset": 0.6}}], indirect=True)
async def test_a_server_that_drops_many_connections_is_not_taken_for_a_wrong_url(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(300))
    policy = RetryPolicy.no_wait(max_attempts=2)  # most rows end in a connection error
    summary = await run(sim, tmp_path, policy=policy, concurrency=8)
    rows = read_results(tmp_path / "out.jsonl")
    assert summary.stopped is None
    assert len(rows) == 300
    counts = Counter(r["error_type"] for r in rows)
    assert counts["connection"] > FIRST_ANSWERS and counts[None] > 0


async def test_a_wrong_model_beside_a_right_one_does_not_stop_the_run(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(200))
    summary = await run(sim, tmp_path, models=(GEMINI, "google/gemini-9-imaginary"))
    rows = read_results(tmp_path / "out.jsonl")
    assert summary.stopped is None
    assert Counter(r["status"] for r in rows) == {"ok": 200, "error": 200}


async def test_rerun_sends_nothing_and_retry_failed_resends_only_errors(
    sim: Simulator, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", prompts(20))
    with path.open("ab") as f:
        f.write(b'{"id": "bad", "prompt": 12}\n')
    first = await run(sim, tmp_path)
    assert first.exit_status == 1
    served = len(sim.records)
    again = await run(sim, tmp_path)
    assert len(sim.records) == served
    assert again.skipped == 21
    assert again.exit_status == 1
    await run(sim, tmp_path, retry_failed=True)
    assert len(sim.records) == served  # the bad row fails locally again; nothing is sent
    rows = read_results(tmp_path / "out.jsonl")
    assert Counter(r["id"] for r in rows).most_common(1)[0][1] == 1


async def test_resume_with_a_changed_request_is_refused(sim: Simulator, tmp_path: Path) -> None:
    from batchrunner.errors import ConfigError

    write_jsonl(tmp_path / "in.jsonl", prompts(3))
    await run(sim, tmp_path)
    with pytest.raises(ConfigError, match="--restart"):
        await run(sim, tmp_path, request=RequestDefaults(params={"temperature": 0.2}))
    restarted = await run(
        sim, tmp_path, request=RequestDefaults(params={"temperature": 0.2}), restart=True
    )
    assert restarted.sent == 3


async def test_budget_stops_admission_and_keeps_what_was_paid_for(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(300, max_tokens=500))
    summary = await run(sim, tmp_path, max_cost=0.002, concurrency=4)
    rows = read_results(tmp_path / "out.jsonl")
    assert summary.stopped is not None and "max-cost" in summary.stopped
    assert 0 < len(rows) < 300
    assert len(rows) == len([r for r in sim.records if r["status"] == 200])
    assert summary.exit_status == 3


async def test_no_token_reaches_logs_or_output(
    sim: Simulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    write_jsonl(tmp_path / "in.jsonl", prompts(20))
    await run(sim, tmp_path, models=(GEMINI, "google/gemini-9-imaginary"))
    blob = (tmp_path / "out.jsonl").read_text() + caplog.text
    blob += "".join(repr(r.__dict__) for r in caplog.records)
    assert TOKEN not in blob
    assert "test-token-value" not in blob


async def test_full_disk_aborts_with_status_3_and_keeps_a_resumable_output(
    sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import batchrunner.output.opening as runner_module
    from batchrunner.errors import OutputError
    from batchrunner.output.writers import open_writer

    real_open = open_writer
    writes = 0

    class FillingDisk:
        """The real writer, until the disk 'fills' on the third batch."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self.path = inner.path

        def write(self, results: Any) -> None:
            nonlocal writes
            writes += 1
            if writes >= 3:
                err = OSError(errno.ENOSPC, "No space left on device")
                raise OutputError(f"cannot write {self.path}: {err.strerror}")
            self._inner.write(results)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    monkeypatch.setattr(
        runner_module, "open_writer", lambda *a, **k: FillingDisk(real_open(*a, **k))
    )
    write_jsonl(tmp_path / "in.jsonl", prompts(300))
    summary = await run(sim, tmp_path, concurrency=4)
    assert summary.exit_status == 3
    assert summary.fatal is not None and "No space left" in summary.fatal
    kept = read_results(tmp_path / "out.jsonl")
    assert 0 < len(kept) < 300

    monkeypatch.setattr(runner_module, "open_writer", real_open)
    resumed = await run(sim, tmp_path, concurrency=4)
    assert resumed.exit_status == 0
    rows = read_results(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}" for i in range(300))


@pytest.mark.parametrize("sim", [{"faults": {"stall": 0.2}, "stall_s": 3.0}], indirect=True)
async def test_stalled_attempts_are_abandoned_at_the_timeout_and_retried(
    sim: Simulator, tmp_path: Path
) -> None:
    # 40 rows, a fifth of attempts stall: no stall at all has probability 0.8**40 < 1e-3.
    write_jsonl(tmp_path / "in.jsonl", prompts(40, max_tokens=16, reasoning_effort="minimal"))
    summary = await run(sim, tmp_path, timeout_s=0.5, concurrency=40)
    rows = read_results(tmp_path / "out.jsonl")
    assert {r["status"] for r in rows} == {"ok"}
    assert summary.stats.total.retries_by_cause.get("timeout", 0) > 0
    assert all(r["latency_s"] < 0.5 for r in rows)


class _LimiterThatGoesAway(LocalLimiter):
    """Admits ``admit`` requests, then fails the way a lost shared limiter does."""

    def __init__(self, admit: int) -> None:
        super().__init__(LimitConfig(max_concurrency=4))
        self._left = admit

    async def acquire(self, model: str, estimate: Any) -> Any:
        if self._left <= 0:
            raise AbortError("the job's shared limiter (a Ray actor) is gone")
        self._left -= 1
        return await super().acquire(model, estimate)


async def test_a_lost_limiter_stops_the_run_instead_of_failing_every_row(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(50))
    out = tmp_path / "out.jsonl"
    config = RunConfig(input=tmp_path / "in.jsonl", output=out, concurrency=4)
    runner = Runner(
        config,
        url=sim.base_url(),
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy.no_wait(),
        limiter=_LimiterThatGoesAway(admit=10),
    )
    summary = await runner.run()

    assert summary.exit_status == 3
    assert summary.fatal is not None and "limiter" in summary.fatal
    rows = read_results(out)
    assert rows and all(r["status"] == "ok" for r in rows)  # no row blamed for it
    assert len(rows) <= 10
