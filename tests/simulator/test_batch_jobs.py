"""Batch prediction in the simulator: job resources and states on an injected clock, the
Gemini and gpt-oss line formats, line validation and injected failures, limits, cancel,
and the server-side record of jobs and lines.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from batchrunner.simulator import SimulatorConfig, open_simulator
from batchrunner.simulator.server import Simulator

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": "Bearer test-token"}
T = 100.0  # batch turnaround used throughout
GEMINI_PATH = "publishers/google/models/gemini-2.5-flash"
GPT_OSS_PATH = "publishers/openai/models/gpt-oss-120b-maas"
OUTPUT_DIR = re.compile(r"^gs://out/run1/prediction-model-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim(clock: Clock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(static_tokens=("test-token",), clock=clock, batch_turnaround_s=T)
    async with open_simulator(config) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def jobs_url(sim: Simulator, location: str = "us-central1") -> str:
    return f"{sim.root_url}/v1/projects/sim-project/locations/{location}/batchPredictionJobs"


def job_body(model: str, uris: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "displayName": "nightly-eval",
        "model": model,
        "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": uris}},
        "outputConfig": {
            "predictionsFormat": "jsonl",
            "gcsDestination": {"outputUriPrefix": "gs://out/run1/"},
        },
        **extra,
    }


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    async with http.request(
        method, url, data=data, headers=AUTH if headers is None else headers
    ) as response:
        return response.status, orjson.loads(await response.read())


def gemini_line(key: str, text: str, **config: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if config:
        request["generationConfig"] = config
    return {"key": key, "request": request}


def put_jsonl(sim: Simulator, uri: str, lines: list[Any]) -> None:
    sim.storage.write(uri, b"".join(orjson.dumps(line) + b"\n" for line in lines))


def read_predictions(sim: Simulator, job: dict[str, Any]) -> list[dict[str, Any]]:
    directory = job["outputInfo"]["gcsOutputDirectory"]
    stored = sim.storage.read(directory + "/predictions.jsonl")
    assert stored is not None
    return [orjson.loads(line) for line in stored.data.splitlines()]


async def create(
    http: aiohttp.ClientSession, sim: Simulator, body: dict[str, Any], location: str = "us-central1"
) -> dict[str, Any]:
    status, job = await call(http, "POST", jobs_url(sim, location), body)
    assert status == 200, job
    return job


async def get(http: aiohttp.ClientSession, sim: Simulator, job: dict[str, Any]) -> dict[str, Any]:
    status, body = await call(http, "GET", f"{sim.root_url}/v1/{job['name']}")
    assert status == 200, body
    return body


# -- states --------------------------------------------------------------------------------


async def test_gemini_job_moves_queued_pending_running_succeeded_on_the_injected_clock(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    put_jsonl(sim, "gs://in/a.jsonl", [gemini_line(str(i), f"prompt {i}") for i in range(3)])
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/a.jsonl"]))
    assert re.fullmatch(
        r"projects/sim-project/locations/us-central1/batchPredictionJobs/\d{19}", job["name"]
    )
    assert job["state"] == "JOB_STATE_QUEUED"
    assert "startTime" not in job and "outputInfo" not in job
    clock.now += 0.15 * T
    assert (await get(http, sim, job))["state"] == "JOB_STATE_PENDING"
    clock.now += 0.1 * T
    running = await get(http, sim, job)
    assert running["state"] == "JOB_STATE_RUNNING"
    assert "startTime" in running and "endTime" not in running
    assert OUTPUT_DIR.match(running["outputInfo"]["gcsOutputDirectory"])
    assert sim.storage.list("out") == []  # nothing written before the job ends
    clock.now += T
    done = await get(http, sim, job)
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert done["completionStats"] == {
        "successfulCount": "3",
        "failedCount": "0",
        "incompleteCount": "0",
    }
    assert done["createTime"] < done["startTime"] < done["endTime"]
    [stored] = sim.storage.list("out")
    assert (
        stored.name
        == done["outputInfo"]["gcsOutputDirectory"].removeprefix("gs://out/") + "/predictions.jsonl"
    )
    [record] = sim.batch.jobs()
    assert [s for s, _ in record.states] == [
        "JOB_STATE_QUEUED",
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SUCCEEDED",
    ]
    assert record.line_count == 3 and record.input_uris == ("gs://in/a.jsonl",)


async def test_gemini_predictions_carry_the_input_keys_and_a_generate_content_response(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    lines = [gemini_line(str(i), f"prompt number {i}", maxOutputTokens=4000) for i in range(5)]
    put_jsonl(sim, "gs://in/a.jsonl", lines)
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/a.jsonl"]))
    clock.now += T
    predictions = read_predictions(sim, await get(http, sim, job))
    assert sorted(p["key"] for p in predictions) == ["0", "1", "2", "3", "4"]
    records = {r.key: r for r in sim.batch.lines()}
    for line in predictions:
        assert line["status"] == ""
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["processed_time"])
        assert line["request"] == lines[int(line["key"])]["request"]
        response = line["response"]
        assert response["modelVersion"] == "gemini-2.5-flash"
        [candidate] = response["candidates"]
        assert candidate["content"]["role"] == "model"
        assert candidate["finishReason"] == "STOP"
        assert candidate["content"]["parts"][0]["text"]
        usage = response["usageMetadata"]
        # Gemini counts thinking apart from the candidates: total = prompt + candidates + thoughts.
        assert usage["thoughtsTokenCount"] > 0
        assert usage["totalTokenCount"] == (
            usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
        )
        record = records[line["key"]]
        assert record.ok and record.prompt_tokens == usage["promptTokenCount"]
        assert record.reasoning_tokens == usage["thoughtsTokenCount"]
        assert record.completion_tokens == (
            usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
        )
        assert record.total_tokens == usage["totalTokenCount"]


async def test_thinking_budget_zero_and_a_small_max_output_shape_the_gemini_answer(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    lines = [
        gemini_line("nothink", "hello", thinkingConfig={"thinkingBudget": 0}),
        gemini_line("short", "hello", maxOutputTokens=5, thinkingConfig={"thinkingBudget": 0}),
        gemini_line("thoughts", "hello", thinkingConfig={"includeThoughts": True}),
    ]
    put_jsonl(sim, "gs://in/a.jsonl", lines)
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/a.jsonl"]))
    clock.now += T
    by_key = {p["key"]: p["response"] for p in read_predictions(sim, await get(http, sim, job))}
    assert "thoughtsTokenCount" not in by_key["nothink"]["usageMetadata"]
    assert by_key["short"]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert by_key["short"]["usageMetadata"]["candidatesTokenCount"] == 5
    parts = by_key["thoughts"]["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and "thought" not in parts[1]


async def test_malformed_gemini_lines_fail_alone_with_googles_error_and_the_job_partly_succeeds(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    good = gemini_line("good", "hello")
    bad_role = {
        "key": "role",
        "request": {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
    }
    lines = [
        good,
        {"key": "norequest", "contents": []},
        {"key": "notlist", "request": {"contents": {"role": "user"}}},
        gemini_line("unknown", "hello", maxTokens=10),
        bad_role,
    ]
    put_jsonl(sim, "gs://in/a.jsonl", lines)
    sim.storage.write("gs://in/b.jsonl", b"not json at all\n")
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/a.jsonl", "gs://in/b.jsonl"]))
    clock.now += T
    done = await get(http, sim, job)
    assert done["state"] == "JOB_STATE_PARTIALLY_SUCCEEDED"
    assert done["completionStats"]["successfulCount"] == "1"
    assert done["completionStats"]["failedCount"] == "5"
    predictions = read_predictions(sim, done)
    failed = {p.get("key"): orjson.loads(p["status"])["error"] for p in predictions if p["status"]}
    assert set(failed) == {"norequest", "notlist", "unknown", "role", None}
    assert all(e["code"] == 400 and e["status"] == "INVALID_ARGUMENT" for e in failed.values())
    assert failed["role"]["message"] == "Please use a valid role: user, model."
    assert 'Unknown name "maxTokens"' in failed["unknown"]["message"]
    assert all("response" not in p for p in predictions if p["status"])


async def test_a_job_whose_every_line_fails_ends_failed(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    put_jsonl(sim, "gs://in/a.jsonl", [{"key": "x"}])
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/a.jsonl"]))
    clock.now += T
    done = await get(http, sim, job)
    assert done["state"] == "JOB_STATE_FAILED"
    assert done["completionStats"]["failedCount"] == "1"


# -- gpt-oss -------------------------------------------------------------------------------


def openai_line(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "openai/gpt-oss-120b-maas",
            "messages": [{"role": "user", "content": text}],
            **body,
        },
    }


async def test_gpt_oss_batch_in_global_is_refused_with_a_400_google_envelope(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    put_jsonl(sim, "gs://in/o.jsonl", [openai_line("a", "hi")])
    status, body = await call(
        http, "POST", jobs_url(sim, "global"), job_body(GPT_OSS_PATH, ["gs://in/o.jsonl"])
    )
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    assert "global" in body["error"]["message"]
    assert sim.batch.jobs() == []
    status, _ = await call(
        http, "POST", jobs_url(sim, "global"), job_body(GEMINI_PATH, ["gs://in/o.jsonl"])
    )
    assert status == 200  # Gemini batch works on global


async def test_gpt_oss_lines_answer_like_the_online_route_inside_openai_batch_lines(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    line = openai_line("row-7", "Tell me about batches.", max_tokens=3000)
    put_jsonl(sim, "gs://in/o.jsonl", [line, openai_line("row-8", "Another one.")])
    job = await create(http, sim, job_body(GPT_OSS_PATH, ["gs://in/o.jsonl"]))
    clock.now += T
    predictions = {p["custom_id"]: p for p in read_predictions(sim, await get(http, sim, job))}
    assert set(predictions) == {"row-7", "row-8"}
    answer = predictions["row-7"]
    assert answer["error"] is None and answer["response"]["status_code"] == 200
    body = answer["response"]["body"]
    online_url = sim.base_url("us-central1") + "/chat/completions"
    status, online = await call(http, "POST", online_url, line["body"])
    assert status == 200
    assert body["choices"] == online["choices"]
    assert body["usage"] == online["usage"]
    assert body["id"].startswith("chatcmpl-")
    record = next(r for r in sim.batch.lines() if r.key == "row-7")
    assert record.completion_tokens == body["usage"]["completion_tokens"]
    assert record.prompt_tokens == body["usage"]["prompt_tokens"]
    assert record.price_in_per_m == pytest.approx(0.045)
    assert record.price_out_per_m == pytest.approx(0.18)
    expected = (record.prompt_tokens * 0.045 + record.completion_tokens * 0.18) / 1e6
    assert record.cost_usd == pytest.approx(expected)


async def test_gpt_oss_line_without_custom_id_or_with_a_bad_body_fails_alone(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    lines = [
        openai_line("ok", "hi"),
        {"method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}},
        openai_line("nomessages", "hi") | {"body": {"messages": []}},
        openai_line("effort", "hi", reasoning_effort="none"),
    ]
    put_jsonl(sim, "gs://in/o.jsonl", lines)
    job = await create(http, sim, job_body(GPT_OSS_PATH, ["gs://in/o.jsonl"]))
    clock.now += T
    done = await get(http, sim, job)
    assert done["state"] == "JOB_STATE_PARTIALLY_SUCCEEDED"
    predictions = read_predictions(sim, done)
    codes = {p["custom_id"]: p["response"]["status_code"] for p in predictions}
    assert codes == {"ok": 200, None: 400, "nomessages": 400, "effort": 400}
    effort = next(p for p in predictions if p["custom_id"] == "effort")
    assert effort["response"]["body"]["error"]["status"] == "INVALID_ARGUMENT"


# -- failures, limits, outcomes ------------------------------------------------------------


async def run_to_end(
    config: SimulatorConfig, clock: Clock, lines: list[Any], labels: dict[str, str] | None = None
) -> tuple[dict[str, Any], Simulator, list[dict[str, Any]]]:
    async with open_simulator(config) as simulator, aiohttp.ClientSession() as http:
        put_jsonl(simulator, "gs://in/a.jsonl", lines)
        extra = {"labels": labels} if labels else {}
        job = await create(http, simulator, job_body(GEMINI_PATH, ["gs://in/a.jsonl"], **extra))
        clock.now += T
        done = await get(http, simulator, job)
        written = simulator.storage.list("out")
        predictions = read_predictions(simulator, done) if written else []
        return done, simulator, predictions


def config_for(clock: Clock, **options: Any) -> SimulatorConfig:
    return SimulatorConfig(
        static_tokens=("test-token",), clock=clock, batch_turnaround_s=T, **options
    )


async def test_injected_line_failures_are_deterministic_from_seed_and_line(clock: Clock) -> None:
    lines = [gemini_line(str(i), f"prompt {i}") for i in range(200)]
    config = config_for(clock, batch_line_failure_rate=0.3, seed=7)
    first, _, predictions = await run_to_end(config, clock, lines)
    _, _, predictions_again = await run_to_end(config, clock, lines)
    failed = sorted(p["key"] for p in predictions if p["status"])
    assert failed == sorted(p["key"] for p in predictions_again if p["status"])
    assert 30 < len(failed) < 90
    assert first["state"] == "JOB_STATE_PARTIALLY_SUCCEEDED"
    codes = {orjson.loads(p["status"])["error"]["code"] for p in predictions if p["status"]}
    assert codes == {429, 500}
    _, _, predictions_other = await run_to_end(
        config_for(clock, batch_line_failure_rate=0.3, seed=8), clock, lines
    )
    assert failed != sorted(p["key"] for p in predictions_other if p["status"])


async def test_input_over_the_request_limit_fails_the_job_before_any_line_is_served(
    clock: Clock,
) -> None:
    lines = [gemini_line(str(i), "x") for i in range(4)]
    done, simulator, predictions = await run_to_end(
        config_for(clock, batch_max_requests=3), clock, lines
    )
    assert done["state"] == "JOB_STATE_FAILED"
    assert done["error"]["code"] == 3 and "limit is 3 requests" in done["error"]["message"]
    assert predictions == [] and simulator.batch.lines() == []


async def test_input_over_the_byte_limit_fails_the_job(clock: Clock) -> None:
    lines = [gemini_line(str(i), "x" * 100) for i in range(4)]
    done, _, _ = await run_to_end(config_for(clock, batch_max_input_bytes=200), clock, lines)
    assert done["state"] == "JOB_STATE_FAILED"
    assert "bytes per file" in done["error"]["message"]


async def test_a_missing_input_file_fails_the_job_when_it_starts(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/absent.jsonl"]))
    clock.now += 0.25 * T
    done = await get(http, sim, job)
    assert done["state"] == "JOB_STATE_FAILED"
    assert done["error"]["code"] == 5


@pytest.mark.parametrize(
    ("how", "state", "ran"),
    [
        ({"batch_outcome": "fail"}, "JOB_STATE_FAILED", True),
        ({"batch_outcome": "expire"}, "JOB_STATE_EXPIRED", False),
    ],
)
async def test_batch_outcome_forces_the_ending(
    clock: Clock, how: dict[str, str], state: str, ran: bool
) -> None:
    done, simulator, predictions = await run_to_end(
        config_for(clock, **how), clock, [gemini_line("a", "x")]
    )
    assert done["state"] == state
    assert "error" in done and predictions == []
    [record] = simulator.batch.jobs()
    assert ("JOB_STATE_RUNNING" in [s for s, _ in record.states]) is ran


async def test_the_sim_outcome_label_overrides_the_configured_outcome_per_job(
    clock: Clock,
) -> None:
    done, _, _ = await run_to_end(
        config_for(clock), clock, [gemini_line("a", "x")], labels={"sim-outcome": "expire"}
    )
    assert done["state"] == "JOB_STATE_EXPIRED"
    assert done["labels"] == {"sim-outcome": "expire"}


async def test_output_order_follows_the_input_when_shuffling_is_off(clock: Clock) -> None:
    lines = [gemini_line(str(i), "x") for i in range(30)]
    _, _, kept = await run_to_end(config_for(clock, batch_shuffle_output=False), clock, lines)
    assert [p["key"] for p in kept] == [str(i) for i in range(30)]
    _, _, shuffled = await run_to_end(config_for(clock), clock, lines)
    assert sorted(p["key"] for p in shuffled) == sorted(str(i) for i in range(30))
    assert [p["key"] for p in shuffled] != [str(i) for i in range(30)]


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_while_running_keeps_the_finished_share_and_counts_the_rest_incomplete(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    put_jsonl(sim, "gs://in/a.jsonl", [gemini_line(str(i), "x") for i in range(10)])
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/a.jsonl"]))
    clock.now += 0.6 * T  # half-way through the running phase (0.2 T .. T)
    status, empty = await call(http, "POST", f"{sim.root_url}/v1/{job['name']}:cancel")
    assert (status, empty) == (200, {})
    assert (await get(http, sim, job))["state"] == "JOB_STATE_CANCELLING"
    clock.now += 0.05 * T
    done = await get(http, sim, job)
    assert done["state"] == "JOB_STATE_CANCELLED"
    assert done["completionStats"] == {
        "successfulCount": "5",
        "failedCount": "0",
        "incompleteCount": "5",
    }
    assert len(read_predictions(sim, done)) == 5
    status, body = await call(http, "POST", f"{sim.root_url}/v1/{job['name']}:cancel")
    assert status == 400 and body["error"]["status"] == "FAILED_PRECONDITION"
    [record] = sim.batch.jobs()
    assert record.cancel_calls == 2
    assert len(sim.batch.lines()) == 5


async def test_cancel_while_queued_ends_cancelled_with_no_output(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    put_jsonl(sim, "gs://in/a.jsonl", [gemini_line("a", "x")])
    job = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/a.jsonl"]))
    await call(http, "POST", f"{sim.root_url}/v1/{job['name']}:cancel")
    clock.now += T
    done = await get(http, sim, job)
    assert done["state"] == "JOB_STATE_CANCELLED"
    assert "startTime" not in done
    assert sim.storage.list("out") == [] and sim.batch.lines() == []


# -- list, auth, validation ----------------------------------------------------------------


async def test_list_is_newest_first_filters_by_display_name_and_pages(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    put_jsonl(sim, "gs://in/a.jsonl", [gemini_line("a", "x")])
    names = []
    for i in range(3):
        body = job_body(GEMINI_PATH, ["gs://in/a.jsonl"]) | {"displayName": f"run-{i}"}
        names.append((await create(http, sim, body))["name"])
    status, page = await call(http, "GET", jobs_url(sim) + "?pageSize=2")
    assert status == 200
    assert [j["name"] for j in page["batchPredictionJobs"]] == names[::-1][:2]
    status, rest = await call(
        http, "GET", jobs_url(sim) + f"?pageSize=2&pageToken={page['nextPageToken']}"
    )
    assert [j["name"] for j in rest["batchPredictionJobs"]] == [names[0]]
    assert "nextPageToken" not in rest
    async with http.get(
        jobs_url(sim), params={"filter": 'display_name="run-1"'}, headers=AUTH
    ) as response:
        found = orjson.loads(await response.read())
    assert [j["displayName"] for j in found["batchPredictionJobs"]] == ["run-1"]
    status, none = await call(http, "GET", jobs_url(sim, "europe-west4"))
    assert (status, none) == (200, {})


async def test_batch_routes_need_a_token_and_the_simulators_project(
    sim: Simulator, http: aiohttp.ClientSession
) -> None:
    body = job_body(GEMINI_PATH, ["gs://in/a.jsonl"])
    status, answer = await call(http, "POST", jobs_url(sim), body, headers={})
    assert status == 401 and answer["error"]["status"] == "UNAUTHENTICATED"
    other = jobs_url(sim).replace("sim-project", "someone-else")
    status, answer = await call(http, "POST", other, body)
    assert status == 403 and answer["error"]["status"] == "PERMISSION_DENIED"
    assert sim.batch.jobs() == []


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"displayName": ""}, 400),
        ({"model": "publishers/google/models/gemini-9-ultra"}, 404),
        ({"inputConfig": {"instancesFormat": "bigquery", "bigquerySource": {}}}, 400),
        ({"inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": []}}}, 400),
        ({"outputConfig": {"predictionsFormat": "jsonl", "gcsDestination": {}}}, 400),
        ({"labels": {"sim-outcome": "explode"}}, 400),
    ],
)
async def test_a_malformed_create_is_refused_and_records_no_job(
    sim: Simulator, http: aiohttp.ClientSession, change: dict[str, Any], code: int
) -> None:
    status, answer = await call(
        http, "POST", jobs_url(sim), job_body(GEMINI_PATH, ["gs://in/a.jsonl"]) | change
    )
    assert status == code
    assert isinstance(answer, dict) and answer["error"]["code"] == code  # not array-wrapped
    assert sim.batch.jobs() == []


async def test_an_unknown_job_id_is_a_404(sim: Simulator, http: aiohttp.ClientSession) -> None:
    status, answer = await call(http, "GET", jobs_url(sim) + "/1234567890123456789")
    assert status == 404 and answer["error"]["status"] == "NOT_FOUND"


async def test_one_record_per_created_job_with_its_input_uris_and_line_count(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    put_jsonl(sim, "gs://in/g.jsonl", [gemini_line(str(i), "x") for i in range(4)])
    put_jsonl(sim, "gs://in/o.jsonl", [openai_line(str(i), "x") for i in range(3)])
    await create(http, sim, job_body(GEMINI_PATH, ["gs://in/g.jsonl"]))
    await create(http, sim, job_body(GPT_OSS_PATH, ["gs://in/o.jsonl"]))
    clock.now += T
    await call(http, "GET", jobs_url(sim))
    records = sim.batch.jobs()
    assert [(r.model, r.input_uris, r.line_count, r.state) for r in records] == [
        ("google/gemini-2.5-flash", ("gs://in/g.jsonl",), 4, "JOB_STATE_SUCCEEDED"),
        ("openai/gpt-oss-120b-maas", ("gs://in/o.jsonl",), 3, "JOB_STATE_SUCCEEDED"),
    ]
    lines = sim.batch.lines()
    assert sorted((r.model, r.line) for r in lines) == sorted(
        [("google/gemini-2.5-flash", i) for i in range(1, 5)]
        + [("openai/gpt-oss-120b-maas", i) for i in range(1, 4)]
    )
    gemini = next(r for r in lines if r.model == "google/gemini-2.5-flash")
    assert (gemini.price_in_per_m, gemini.price_out_per_m) == pytest.approx((0.15, 1.25))


async def test_two_jobs_starting_together_under_one_prefix_write_to_separate_directories(
    sim: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    put_jsonl(sim, "gs://in/g.jsonl", [gemini_line("g", "x")])
    put_jsonl(sim, "gs://in/o.jsonl", [openai_line("o", "x")])
    first = await create(http, sim, job_body(GEMINI_PATH, ["gs://in/g.jsonl"]))
    second = await create(http, sim, job_body(GPT_OSS_PATH, ["gs://in/o.jsonl"]))
    clock.now += T
    first, second = await get(http, sim, first), await get(http, sim, second)
    directories = {j["outputInfo"]["gcsOutputDirectory"] for j in (first, second)}
    assert len(directories) == 2 and all(OUTPUT_DIR.match(d) for d in directories)
    assert [p["key"] for p in read_predictions(sim, first)] == ["g"]
    assert [p["custom_id"] for p in read_predictions(sim, second)] == ["o"]
