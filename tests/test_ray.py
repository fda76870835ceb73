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

from batchrunner.config import RunConfig, build_config  # noqa: E402
from batchrunner.ray_adapter import run_on_ray  # noqa: E402
from batchrunner.report import load_results  # noqa: E402
from batchrunner.runner import RunSummary  # noqa: E402
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
    assert len(first_run.sim.records) == first_run.requests
    assert ids_in(first_run.output) == Counter(f"q{i}" for i in range(ROWS))


def shard_worker_pids() -> list[int]:
    """Processes of the Ray Data actors that run shards (their title names the class)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"AsyncShardRunner" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.skip(
    reason="after other Ray tests in the same process, the killed worker's pool does not "
    "reliably restart and the limiter actor's handle outlives its session; run alone"
)
def test_a_worker_killed_mid_shard_still_gives_every_id_once(
    local_ray: None, tmp_path: Path
) -> None:
    n = 2000
    input_path = write_input(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    config = SimulatorConfig(static_tokens=(TOKEN,), keep_records=True, latency="zero")
    with start_simulator_thread(config) as sim:
        cfg = job(input_path, out, sim, rpm=6000, concurrency=16)
        result: list[RunSummary] = []
        runner = threading.Thread(
            target=lambda: result.append(run_on_ray(cfg, workers=2, shards=4, num_cpus=0.25))
        )
        runner.start()
        deadline = time.monotonic() + 120
        while sim.statistics().requests < n // 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        victims = shard_worker_pids()
        assert victims, "no shard worker found to kill"
        os.kill(victims[0], signal.SIGKILL)
        runner.join(timeout=240)
        assert not runner.is_alive()
    summary = result[0]
    assert summary.fatal is None and summary.stopped is None
    assert ids_in(out) == Counter(f"q{i}" for i in range(n))
    # Re-sent after the crash: what the dead worker had in flight or not yet committed.
    served_ok = sim.statistics().by_status.get(200, 0)
    assert n <= served_ok <= n + cfg.concurrency + 64
