"""Shards on a local Ray cluster: one shared limiter, exactly-once output, crash and re-run."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from batchrunner.config import RunConfig, build_config  # noqa: E402
from batchrunner.limits.local import LimitConfig  # noqa: E402
from batchrunner.limits.ray import LimiterService  # noqa: E402
from batchrunner.output.read import load_results  # noqa: E402
from batchrunner.pipeline.runner import RunSummary  # noqa: E402
from batchrunner.scale.ray import run_on_ray  # noqa: E402
from batchrunner.simulator import Simulator, SimulatorConfig, start_simulator_thread  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

TOKEN = "ray-test-token"
ROWS = 3000
QUOTA_RPM = 30_000


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"OPENAI_API_KEY": TOKEN}},
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def write_input(path: Path, n: int) -> Path:
    lines = (orjson.dumps({"id": f"q{i}", "prompt": f"say {i}"}) + b"\n" for i in range(n))
    path.write_bytes(b"".join(lines))
    return path


def job(input_path: Path, out: Path, sim: Simulator, **options: object) -> RunConfig:
    base = {"input": str(input_path), "output": str(out), "base_url": sim.base_url()}
    return build_config({**base, **options}, env={"OPENAI_API_KEY": TOKEN})


def ids_in(out: Path) -> Counter[str]:
    return Counter(r.id for r in load_results([out]))


@dataclass
class FirstRun:
    sim: Simulator
    input: Path
    output: Path
    summary: RunSummary
    requests: int


@pytest.fixture(scope="module")
def first_run(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    tmp = tmp_path_factory.mktemp("ray-quota")
    input_path = write_input(tmp / "in.jsonl", ROWS)
    out = tmp / "out.parquet"
    config = SimulatorConfig(
        static_tokens=(TOKEN,), keep_records=True, rpm_quota=QUOTA_RPM, latency="zero"
    )
    with start_simulator_thread(config) as sim:
        cfg = job(input_path, out, sim, rpm=QUOTA_RPM, concurrency=32)
        summary = run_on_ray(cfg, workers=4, shards=8, num_cpus=0.25)
        yield FirstRun(sim, input_path, out, summary, len(sim.records))


def test_four_workers_within_a_hard_quota_write_every_id_once(first_run: FirstRun) -> None:
    assert first_run.summary.fatal is None and first_run.summary.stopped is None
    assert first_run.summary.sent == ROWS
    assert ids_in(first_run.output) == Counter(f"q{i}" for i in range(ROWS))
    stats = first_run.sim.statistics()
    refused = stats.rate_limited / stats.requests
    assert refused <= 0.02, f"{stats.rate_limited} of {stats.requests} requests refused"
    assert first_run.summary.stats.total.ok == ROWS


def test_rerun_into_the_same_output_sends_nothing(first_run: FirstRun) -> None:
    cfg = job(first_run.input, first_run.output, first_run.sim, rpm=QUOTA_RPM)
    summary = run_on_ray(cfg, workers=4, num_cpus=0.25)  # the plan is found on disk
    assert summary.sent == 0
    assert summary.skipped == ROWS
    assert summary.stats.total.ok == ROWS  # the output as it stands
    assert len(first_run.sim.records) == first_run.requests
    assert ids_in(first_run.output) == Counter(f"q{i}" for i in range(ROWS))


@pytest.mark.anyio
async def test_a_retried_shard_gets_back_the_permits_its_dead_attempt_held() -> None:
    model = "google/gemini-2.5-flash"
    service = LimiterService(LimitConfig(max_concurrency=2, adaptive=False))
    assert service.start_attempt("shard-0", done=5) == (0, 5)
    await service.acquire("shard-0", 1, model, 10, 10)
    await service.acquire("shard-0", 2, model, 10, 10)
    assert service.statistics().models[model].in_flight == 2  # the whole window
    # Its worker dies holding both; the next attempt finds 7 rows done, 2 of them its own.
    assert service.start_attempt("shard-0", done=7) == (1, 5)
    assert service.statistics().models[model].in_flight == 0


def shard_writer(out: Path) -> tuple[int, Path, int] | None:
    """A shard worker that is writing one of ``out``'s shard files: (pid, file, rows so far).

    Found by the file it holds open, so neither a worker of another run nor one still
    shutting down can be mistaken for it.
    """
    stem = out.name.removesuffix(out.suffix) + ".shard-"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"ShardRunner" not in (entry / "cmdline").read_bytes():
                continue
            targets = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue  # gone meanwhile, or not ours to look at
        for target in map(Path, targets):
            ours = target.parent == out.parent and target.name.startswith(stem)
            if ours and target.suffix == out.suffix:  # the shard file, not its lock
                return int(entry.name), target, target.read_bytes().count(b"\n")
    return None


def wait_for_writer(out: Path, rows: int, deadline_s: float) -> tuple[int, Path, int]:
    """Poll until some shard worker has written at least ``rows`` rows of its shard."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = shard_writer(out)
        if found is not None and found[2] >= rows:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no shard worker wrote {rows} rows of {out} within {deadline_s} s")


def test_a_worker_killed_mid_shard_still_gives_every_id_once(
    local_ray: None, tmp_path: Path
) -> None:
    n, shards = 2000, 4
    input_path = write_input(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    config = SimulatorConfig(static_tokens=(TOKEN,), keep_records=True, latency="zero")
    with start_simulator_thread(config) as sim:
        cfg = job(input_path, out, sim, rpm=12_000, concurrency=16)
        result: list[RunSummary | BaseException] = []

        def run() -> None:
            try:
                result.append(run_on_ray(cfg, workers=2, shards=shards, num_cpus=0.25))
            except BaseException as exc:  # handed to the test below
                result.append(exc)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        pid, victim, written = wait_for_writer(out, rows=50, deadline_s=120)
        assert written < n // shards, "the shard finished before its worker could be killed"
        os.kill(pid, signal.SIGKILL)
        runner.join(timeout=240)
        assert not runner.is_alive(), "the job did not finish after a worker was killed"
    summary = result[0]
    if isinstance(summary, BaseException):
        raise summary
    assert summary.fatal is None and summary.stopped is None
    assert ids_in(out) == Counter(f"q{i}" for i in range(n))
    index = int(victim.name.split(".shard-")[1][:5])  # out.shard-00002-of-00004.jsonl
    assert ids_in(victim) == Counter(f"q{i}" for i in range(index, n, shards))
    # The summary is the output as it stands: the dead attempt's rows count too.
    assert summary.stats.total.ok == n
    assert (summary.sent, summary.skipped) == (n, 0)
    # Re-sent after the crash: at most what the dead worker had in flight or not yet written.
    served_ok = sim.statistics().by_status.get(200, 0)
    assert n <= served_ok <= n + cfg.concurrency + 64
