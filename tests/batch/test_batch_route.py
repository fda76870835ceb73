"""The batch route against the simulator on an injected clock: every (id, model) once, usage
and cost as the simulator billed them at batch rates, files within limits, failed lines
retried once, expired jobs resubmitted by the next run, a killed poller reattaching, and
nothing staged left behind or deleted early.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from batchrunner.batch.state import BatchState
from batchrunner.errors import OutputError
from batchrunner.simulator import SimulatorConfig, open_simulator
from batchrunner.simulator.server import Simulator
from tests.batch.conftest import (
    GEMINI,
    GPT_OSS,
    TURNAROUND,
    Clock,
    RouteFactory,
    read_rows,
    write_prompts,
)

pytestmark = pytest.mark.anyio


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["id"], r["model"]): r for r in rows}


async def test_ten_thousand_rows_two_models_come_back_once_each_with_the_simulators_usage_and_cost(
    make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 10_000)
    outcome = await make_route((GEMINI, GPT_OSS), location="global", max_requests=4_000).run()
    rows = read_rows(tmp_path / "out.jsonl")
    keys = Counter((r["id"], r["model"]) for r in rows)
    assert len(keys) == 20_000 and set(keys.values()) == {1}
    assert all(r["status"] == "ok" and r["traffic_type"] == "BATCH" for r in rows)
    assert all(r["latency_s"] is None and r["ttft_s"] is None for r in rows)
    jobs = sim.batch.jobs()
    # 10,000 lines per model in files of at most 4,000: three jobs each, gpt-oss in a region
    assert Counter(j.model for j in jobs) == {GEMINI: 3, GPT_OSS: 3}
    assert {j.location for j in jobs if j.model == GPT_OSS} == {"us-central1"}
    assert all(j.line_count is not None and j.line_count <= 4_000 for j in jobs)
    assert outcome.jobs_created == 6
    ids = {j.job_id: j.model for j in jobs}
    found = by_key(rows)
    lines = sim.batch.lines()
    assert len(lines) == 20_000
    for line in lines:
        row = found[(line.key, ids[line.job_id])]
        assert row["batch_job"] == line.job_id
        assert row["prompt_tokens"] == line.prompt_tokens
        assert row["completion_tokens"] == line.completion_tokens
        assert row["total_tokens"] == line.total_tokens
        assert row["cost_usd"] == pytest.approx(line.cost_usd, rel=1e-9, abs=1e-15)
    gemini = [line for line in lines if ids[line.job_id] == GEMINI]
    assert any(line.reasoning_tokens for line in gemini)
    for line in gemini:
        assert found[(line.key, GEMINI)]["reasoning_tokens"] == line.reasoning_tokens
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(sum(x.cost_usd for x in lines))


async def test_files_are_cut_below_the_byte_limit(
    make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 30)
    await make_route(max_bytes=1_000).run()
    jobs = sim.batch.jobs()
    assert len(jobs) > 1
    assert sum(j.line_count or 0 for j in jobs) == 30
    assert len(read_rows(tmp_path / "out.jsonl")) == 30


@pytest.mark.parametrize("sim_options", [{"batch_line_failure_rate": 0.3}])
async def test_lines_that_fail_are_retried_once_in_a_follow_up_job(
    make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 200)
    await make_route().run()
    rows = read_rows(tmp_path / "out.jsonl")
    assert Counter(r["id"] for r in rows) == {f"r{i}": 1 for i in range(200)}
    first, *follow_ups = sim.batch.jobs()
    assert len(follow_ups) == 1  # one follow-up, never a third round
    lines = sim.batch.lines()
    failed_first = {x.key for x in lines if x.job_id == first.job_id and not x.ok}
    retried = {x.key for x in lines if x.job_id == follow_ups[0].job_id}
    assert failed_first and retried == failed_first
    failed_twice = {x.key for x in lines if x.job_id == follow_ups[0].job_id and not x.ok}
    assert failed_twice  # 30 % of ~60 lines
    found = {r["id"]: r for r in rows}
    for key in failed_twice:
        assert found[key]["status"] == "error"
        assert found[key]["attempts"] == 2
        assert found[key]["http_status"] in (429, 500)
        assert found[key]["batch_job"] == follow_ups[0].job_id
    for key in retried - failed_twice:
        assert found[key]["status"] == "ok" and found[key]["attempts"] == 2


async def test_an_expired_jobs_rows_are_left_unanswered_and_the_next_run_submits_them(
    clock: Clock, make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 40)
    config = SimulatorConfig(
        static_tokens=("test-token",),
        clock=clock,
        batch_turnaround_s=TURNAROUND,
        batch_outcome="expire",
    )
    async with open_simulator(config) as expiring:
        route = make_route()
        route._api_root = expiring.root_url
        route._storage_url = expiring.storage_url()
        first = await route.run()
        assert [j.state for j in expiring.batch.jobs()] == ["JOB_STATE_EXPIRED"]
    assert first.unanswered == 40 and first.stopped is not None
    assert not (tmp_path / "out.jsonl").exists() or read_rows(tmp_path / "out.jsonl") == []
    second = await make_route().run()  # the same command, once the service is back to normal
    assert second.stopped is None
    rows = read_rows(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(40))
    assert [j.line_count for j in sim.batch.jobs()] == [40]


async def test_max_cost_applies_to_the_batch_estimate_before_anything_is_submitted(
    make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 100, max_tokens=1000)
    # 100 requests x 1000 output tokens x 1.25 USD/M (batch) = 0.125 USD: over 0.1, under 0.2
    stopped = await make_route(max_cost=0.1).run()
    assert stopped.stopped is not None and "--max-cost" in stopped.stopped
    assert sim.batch.jobs() == [] and sim.storage.list("stage") == []
    passed = await make_route(max_cost=0.2).run()
    assert passed.stopped is None and len(sim.batch.jobs()) == 1


async def test_staged_files_are_deleted_once_their_rows_are_in_output_unless_kept(
    make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 10)
    await make_route().run()
    assert sim.storage.list("stage") == []
    (tmp_path / "out.jsonl").unlink()
    await make_route(keep_staging=True, restart=True).run()
    names = sorted(o.name for o in sim.storage.list("stage"))
    assert any(n.endswith("/input.jsonl") for n in names)
    assert any(n.endswith("/predictions.jsonl") for n in names)


async def test_a_poller_killed_while_waiting_reattaches_and_submits_nothing_twice(
    make_route: RouteFactory, sim: Simulator, clock: Clock, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 300)

    async def killed(seconds: float) -> None:
        raise anyio.get_cancelled_exc_class()

    route = make_route((GEMINI, GPT_OSS), max_requests=100)
    route._sleep = killed
    with anyio.move_on_after(30):
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await route.run()
    recorded = BatchState.load(tmp_path / "out.jsonl")
    assert len(recorded.files) == 6 and all(f.job for f in recorded.files)
    assert len(sim.batch.jobs()) == 6
    again = await make_route((GEMINI, GPT_OSS), max_requests=100).run()
    assert again.jobs_created == 0 and again.jobs_reattached == 6
    assert len(sim.batch.jobs()) == 6
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(by_key(rows)) == len(rows) == 600


async def test_a_create_cut_short_before_its_name_was_recorded_is_found_not_repeated(
    make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 20)
    route = make_route()
    original = BatchState.update

    def dies_recording(self: BatchState, seq: int, **changes: Any) -> Any:
        if "job" in changes:
            raise OutputError("cannot write out.jsonl.batch.json: No space left on device")
        return original(self, seq, **changes)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BatchState, "update", dies_recording)
        with pytest.raises(OutputError, match="No space"):
            await route.run()
    assert len(sim.batch.jobs()) == 1
    await make_route().run()
    assert len(sim.batch.jobs()) == 1  # found by its display name
    assert len(read_rows(tmp_path / "out.jsonl")) == 20


async def test_a_request_with_no_batch_equivalent_is_a_bad_input_row_and_never_uploaded(
    make_route: RouteFactory, sim: Simulator, tmp_path: Path
) -> None:
    path = tmp_path / "prompts.jsonl"
    write_prompts(path, 3)
    with path.open("ab") as f:
        f.write(orjson.dumps({"id": "odd", "prompt": "hi", "logit_bias": {"1": 5}}) + b"\n")
    await make_route().run()
    rows = {r["id"]: r for r in read_rows(path.with_name("out.jsonl"))}
    assert rows["odd"]["status"] == "error" and rows["odd"]["error_type"] == "bad_input"
    assert "prompts.jsonl line 4" in rows["odd"]["error_message"]
    assert "logit_bias" in rows["odd"]["error_message"]
    assert [j.line_count for j in sim.batch.jobs()] == [3]
    assert all(rows[f"r{i}"]["status"] == "ok" for i in range(3))


async def test_polling_backs_off_and_logs_a_quiet_line_every_few_minutes(
    make_route: RouteFactory, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_prompts(tmp_path / "prompts.jsonl", 5)
    caplog.set_level("WARNING", logger="batchrunner.batch")
    await make_route().run()
    assert clock.sleeps[0] == 30.0
    assert all(b >= a for a, b in zip(clock.sleeps, clock.sleeps[1:], strict=False))
    assert max(clock.sleeps) <= 300.0
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch:")]
    assert progress and all("jobs" in line for line in progress)
    assert len(progress) <= sum(clock.sleeps) / 300 + 1
