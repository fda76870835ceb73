"""Flow control against the simulator: hard quotas told and untold, a shared pool under a
burst of competing load, and injected faults, each run through the real :class:`Runner`.

    python benchmarks/bench_flow.py [--quick] [--only NAME ...]

Each scenario starts the simulator in this process's event loop, runs a batch into a
temporary directory and reads what happened from the output rows and the simulator's own
records of the requests it served. The table shows, per scenario:

* ``ok/s``: answers served with 200, per second, from the first request the runner sent to
  the last answer; ``util``: that rate over the quota (the whole run, discovery included);
  ``steady``: the same after the first ``STEADY_SKIP_S`` seconds (discovery excluded);
* ``refused``: 429s over every request the runner sent; ``retries/row``: attempts beyond
  the first, per row; ``ok``/``err``: final rows; ``wall``: the run's wall time.

The shared-pool scenario has no rate quota: its ``util`` is the runner's throughput after
the competing load stopped over its throughput before it started (recovery), and a second
table shows the three phases. The faults scenario checks that every row ends ``ok`` except
the permanent errors, and that those were sent exactly once; the script exits 1 if not.
``--quick`` runs each scenario on a handful of rows, for a smoke test.

The two-model workload (``--only lanes``) sends the same rows to gpt-oss-20b (1,200 RPM, at
us-central1) and gpt-oss-120b (650 RPM) in one run, neither told its quota, and prints each
lane's rate (its rows over its first start to its last answer) next to its quota-ideal rate,
and the run's makespan against the ideal: the slowest lane's rows over its quota.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # runnable from a checkout without installing

from batchrunner.auth.tokens import StaticAuthenticator  # noqa: E402
from batchrunner.config import RunConfig, Secret  # noqa: E402
from batchrunner.endpoint.retry import RetryPolicy  # noqa: E402
from batchrunner.pipeline.runner import Runner  # noqa: E402
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator  # noqa: E402

TOKEN = "ya29.bench-flow-token"
GPT_OSS = "openai/gpt-oss-120b-maas"
GEMINI = "google/gemini-2.5-flash"
MISSING_MODEL = "google/gemini-0.0-missing"
STEADY_SKIP_S = 10.0
# The runner's backoff between attempts: short so that runs stay short, jittered as always.
POLICY = RetryPolicy(max_attempts=8, max_elapsed_s=600.0, base_s=0.25, cap_s=4.0)


@dataclass(slots=True)
class Scenario:
    name: str
    model: str
    rows: int
    sim: SimulatorConfig
    rpm: float | None = None  # what the runner is told
    quota_rpm: float | None = None  # what the simulator enforces, for the table
    concurrency: int = 64
    timeout_s: float = 600.0
    policy: RetryPolicy = POLICY
    permanent: int = 0  # rows of each permanent error kind (404 model, 400 context)
    competitor: tuple[float, float, int] | None = None  # start s, stop s, requests in flight


@dataclass(slots=True)
class Measured:
    scenario: Scenario
    wall_s: float
    ok_rows: int
    error_rows: int
    retries: int
    sent: int  # requests the runner sent, by the simulator's records
    refused: int  # of those, answered 429
    ok_rate: float
    steady_rate: float | None
    phases: tuple[float, float, float] | None = None  # ok/s before, during, after a burst
    problems: list[str] = field(default_factory=list)


def scenarios(quick: bool) -> list[Scenario]:
    # gpt-oss at 600 requests/min (10/s) answering in about 15 ms: the case, where
    # one request in flight already sends more than the quota admits.
    quota = 600
    quota_rows = 30 if quick else 500
    fast_oss = SimulatorConfig(
        static_tokens=(TOKEN,),
        keep_records=True,
        rpm_quota=quota,
        ttft_s=0.015,
        tokens_per_s=20_000.0,
    )
    # Gemini's shared pool holds 16 requests in flight; answers take about 0.3 s. Another
    # client holds 48 requests in flight for a while, so that 429s come in a burst.
    pool = SimulatorConfig(
        static_tokens=(TOKEN,),
        keep_records=True,
        dsq_capacity=16,
        ttft_s=0.25,
        tokens_per_s=2_000.0,
        seed=3,
    )
    burst = (1.5, 3.0, 48) if quick else (15.0, 30.0, 48)
    faults = SimulatorConfig(
        static_tokens=(TOKEN,),
        keep_records=True,
        latency="fast",
        faults={
            "500": 0.03,
            "503": 0.03,
            "504": 0.03,
            "reset": 0.03,
            "stall": 0.02,
            "truncate": 0.03,
        },
        stall_s=3.0,
        seed=11,
    )
    return [
        Scenario("quota, told", GPT_OSS, quota_rows, fast_oss, rpm=quota, quota_rpm=quota),
        Scenario("quota, found", GPT_OSS, quota_rows, fast_oss, quota_rpm=quota),
        Scenario("shared pool", GEMINI, 120 if quick else 2000, pool, competitor=burst),
        Scenario(
            "faults",
            GEMINI,
            40 if quick else 1000,
            faults,
            timeout_s=1.0,
            policy=RetryPolicy(max_attempts=12, max_elapsed_s=600.0, base_s=0.05, cap_s=1.0),
            permanent=2 if quick else 5,
        ),
    ]


def write_input(path: Path, scenario: Scenario) -> None:
    lines = []
    for i in range(scenario.rows):
        row: dict[str, Any] = {
            "id": f"r{i:05d}",
            "prompt": f"Write one sentence about the number {i}.",
            "max_tokens": 64,
        }
        lines.append(orjson.dumps(row))
    for i in range(scenario.permanent):
        lines.append(
            orjson.dumps({"id": f"missing{i}", "prompt": "Hello.", "model": MISSING_MODEL})
        )
        # Far past gpt-oss's 131,072-token context (the simulator counts 4 characters a token).
        long_prompt = "lorem ipsum " * 50_000
        lines.append(
            orjson.dumps(
                {"id": f"toolong{i}", "prompt": long_prompt, "model": GPT_OSS, "max_tokens": 16}
            )
        )
    path.write_bytes(b"\n".join(lines) + b"\n")


async def hold_load(sim: Simulator, model: str, in_flight: int, stop: anyio.Event) -> None:
    """Another customer of the shared pool: keeps ``in_flight`` requests going until ``stop``."""
    # v1beta1 tells its requests apart from the runner's in the simulator's records.
    url = sim.base_url(version="v1beta1") + "/chat/completions"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = orjson.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Busy."}], "max_tokens": 256}
    )
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=in_flight)) as session:

        async def one() -> None:
            while not stop.is_set():
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        await anyio.sleep(0.01)  # a greedy client: straight back in

        async with anyio.create_task_group() as tg:
            for _ in range(in_flight):
                tg.start_soon(one)
            await stop.wait()
            tg.cancel_scope.cancel()


async def run_scenario(scenario: Scenario, tmp: Path) -> Measured:
    source = tmp / f"{scenario.name.replace(' ', '_').replace(',', '')}.jsonl"
    output = source.with_suffix(".out.jsonl")
    write_input(source, scenario)
    config = RunConfig(
        input=source,
        output=output,
        default_model=scenario.model,
        concurrency=scenario.concurrency,
        rpm=scenario.rpm,
        timeout_s=scenario.timeout_s,
        max_attempts=scenario.policy.max_attempts,
        checkpoint_s=5.0,
        fail_on=frozenset(),  # flow, not answers: every 200 counts, as for any client
    )
    async with open_simulator(scenario.sim) as sim:
        runner = Runner(
            config,
            url=sim.base_url(),
            authenticator=StaticAuthenticator(Secret(TOKEN)),
            retry_policy=scenario.policy,
        )
        started_mono = time.monotonic()
        started_unix = time.time()
        async with anyio.create_task_group() as tg:
            if scenario.competitor is not None:
                start_s, stop_s, in_flight = scenario.competitor
                stop = anyio.Event()

                async def compete() -> None:
                    await anyio.sleep(start_s)
                    with anyio.move_on_after(stop_s - start_s):
                        await hold_load(sim, scenario.model, in_flight, stop)
                    stop.set()

                tg.start_soon(compete)
            await runner.run()
            tg.cancel_scope.cancel()
        wall = time.monotonic() - started_mono
        records = [r for r in sim.records if r["version"] == "v1"]
    return measure(scenario, output, records, wall, started_unix)


def measure(
    scenario: Scenario,
    output: Path,
    records: Sequence[dict[str, Any]],
    wall: float,
    started_unix: float,
) -> Measured:
    rows = [orjson.loads(line) for line in output.read_bytes().splitlines() if line.strip()]
    by_status = Counter(r["status"] for r in rows)
    retries = sum(max(0, int(r.get("attempts") or 1) - 1) for r in rows)
    served = sorted(float(r["arrival_monotonic"]) for r in records if r["status"] == 200)
    first = min((float(r["arrival_monotonic"]) for r in records), default=0.0)
    last = served[-1] if served else first
    span = max(last - first, 1e-9)
    ok_rate = len(served) / span
    steady_rate = None
    if span > STEADY_SKIP_S + 5.0:
        steady = [t for t in served if t >= first + STEADY_SKIP_S]
        steady_rate = len(steady) / (last - first - STEADY_SKIP_S)
    result = Measured(
        scenario=scenario,
        wall_s=wall,
        ok_rows=by_status.get("ok", 0),
        error_rows=by_status.get("error", 0),
        retries=retries,
        sent=len(records),
        refused=sum(1 for r in records if r["status"] == 429),
        ok_rate=ok_rate,
        steady_rate=steady_rate,
    )
    if scenario.competitor is not None:
        result.phases = phase_rates(rows, started_unix, scenario.competitor)
    check_rows(scenario, rows, records, result.problems)
    return result


def phase_rates(
    rows: Sequence[dict[str, Any]], started_unix: float, competitor: tuple[float, float, int]
) -> tuple[float, float, float]:
    """The runner's ok rows per second before, during and after the competing load."""
    start_s, stop_s, _ = competitor
    done = sorted(
        datetime.fromisoformat(r["finished_at"]).timestamp() - started_unix
        for r in rows
        if r["status"] == "ok"
    )
    end = done[-1] if done else stop_s
    # Skip the first second of each phase: the runner is still reacting to the change.
    spans = ((1.0, start_s), (start_s + 1.0, stop_s), (stop_s + 1.0, end))
    rates = []
    for lo, hi in spans:
        n = sum(1 for t in done if lo <= t < hi)
        rates.append(n / (hi - lo) if hi > lo else math.nan)
    return rates[0], rates[1], rates[2]


def check_rows(
    scenario: Scenario,
    rows: Sequence[dict[str, Any]],
    records: Sequence[dict[str, Any]],
    problems: list[str],
) -> None:
    expected = scenario.rows + 2 * scenario.permanent
    if len(rows) != expected or len({r["id"] for r in rows}) != expected:
        problems.append(f"{len(rows)} result rows for {expected} input rows")
    for r in rows:
        permanent = r["id"].startswith(("missing", "toolong"))
        if permanent:
            want = 404 if r["id"].startswith("missing") else 400
            if r["status"] != "error" or r.get("http_status") != want or r["attempts"] != 1:
                problems.append(f"{r['id']}: {r['status']} {r.get('http_status')} x{r['attempts']}")
        elif r["status"] != "ok":
            problems.append(f"{r['id']}: {r['status']} {r.get('error_type')}")
    if scenario.permanent:
        served = Counter(r["status"] for r in records)
        for status in (404, 400):
            if served.get(status, 0) != scenario.permanent:
                problems.append(
                    f"the simulator answered {served.get(status, 0)} requests with {status}, "
                    f"expected each of the {scenario.permanent} rows sent exactly once"
                )


def table(results: Sequence[Measured]) -> str:
    head = (
        f"{'scenario':<14} {'quota':>10} {'ok/s':>7} {'util':>6} {'steady':>7} "
        f"{'refused':>8} {'retries/row':>12} {'ok':>6} {'err':>4} {'wall':>8}"
    )
    lines = [head, "-" * len(head)]
    for m in results:
        s = m.scenario
        if s.quota_rpm is not None:
            quota = f"{s.quota_rpm:g} rpm"
            util = pct(m.ok_rate / (s.quota_rpm / 60.0))
            steady = "-" if m.steady_rate is None else pct(m.steady_rate / (s.quota_rpm / 60.0))
        elif m.phases is not None and s.sim.dsq_capacity is not None:
            quota = f"pool {s.sim.dsq_capacity}"
            util = pct(m.phases[2] / m.phases[0]) if m.phases[0] else "-"
            steady = "-"
        else:
            quota, util, steady = "-", "-", "-"
        rows = m.ok_rows + m.error_rows
        lines.append(
            f"{s.name:<14} {quota:>10} {m.ok_rate:>7.2f} {util:>6} {steady:>7} "
            f"{pct(m.refused / m.sent if m.sent else 0.0):>8} "
            f"{m.retries / rows if rows else 0.0:>12.3f} {m.ok_rows:>6} {m.error_rows:>4} "
            f"{m.wall_s:>7.1f}s"
        )
    for m in results:
        if m.phases is not None:
            start_s, stop_s, load = m.scenario.competitor or (0.0, 0.0, 0)
            before, during, after = m.phases
            lines.append("")
            lines.append(
                f"{m.scenario.name}: another client holds {load} requests in flight from "
                f"{start_s:g} s to {stop_s:g} s; runner ok rows/s before {before:.1f}, "
                f"during {during:.1f}, after {after:.1f} (recovered to {pct(after / before)})"
                if before
                else f"{m.scenario.name}: no rows finished before the burst"
            )
    return "\n".join(lines)


def pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {cpu}, Python {platform.python_version()}"


LANES = (("openai/gpt-oss-20b-maas", 1200.0), (GPT_OSS, 650.0))  # model, published RPM


async def run_lanes(rows: int, tmp: Path) -> str:
    """The two-model workload: each lane's rate against its quota, the makespan against ideal."""
    source = tmp / "lanes.jsonl"
    output = tmp / "lanes.out.jsonl"
    source.write_bytes(
        b"".join(
            orjson.dumps({"id": f"r{i}", "prompt": f"lane row {i}", "max_tokens": 32}) + b"\n"
            for i in range(rows)
        )
    )
    sim_config = SimulatorConfig(static_tokens=(TOKEN,), latency="fast")
    config = RunConfig(
        input=source,
        output=output,
        models=tuple(m for m, _ in LANES),
        concurrency=64,
        max_attempts=POLICY.max_attempts,
        checkpoint_s=5.0,
    )
    async with open_simulator(sim_config) as sim:
        runner = Runner(
            config,
            url=sim.base_url(),
            model_urls={LANES[0][0]: sim.base_url("us-central1")},
            authenticator=StaticAuthenticator(Secret(TOKEN)),
            retry_policy=POLICY,
        )
        started = time.monotonic()
        summary = await runner.run()
        wall = time.monotonic() - started
    lines = [f"{'lane':<28} {'rows':>6} {'rate/s':>8} {'ideal/s':>8} {'util':>6} {'retries':>8}"]
    ideal_makespan = 0.0
    for model, rpm in LANES:
        stats = summary.stats.model(model)
        first, last = stats.first_started_at, stats.last_finished_at
        span = (last - first).total_seconds() if first and last else math.nan
        rate = stats.ok / span if span > 0 else math.nan
        ideal = rpm / 60.0
        ideal_makespan = max(ideal_makespan, rows / ideal)
        lines.append(
            f"{model:<28} {stats.ok:>6} {rate:>8.2f} {ideal:>8.2f} {pct(rate / ideal):>6}"
            f" {stats.retries:>8}"
        )
    lines.append(
        f"makespan {wall:.1f} s, ideal {ideal_makespan:.1f} s "
        f"({wall / ideal_makespan:.2f}x the ideal)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few rows per scenario")
    parser.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the runner warns about the static token
    chosen = [
        s for s in scenarios(args.quick) if not args.only or any(o in s.name for o in args.only)
    ]
    results: list[Measured] = []
    lanes: list[str] = []
    want_lanes = not args.only or "lanes" in args.only

    async def run_all() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-flow-") as tmp:
            for scenario in chosen:
                results.append(await run_scenario(scenario, Path(tmp)))
                print(f"  {scenario.name}: done in {results[-1].wall_s:.1f} s", file=sys.stderr)
            if want_lanes:
                lanes.append(await run_lanes(60 if args.quick else 1200, Path(tmp)))

    started = time.monotonic()
    anyio.run(run_all, backend="asyncio", backend_options={"use_uvloop": True})
    print(f"bench_flow ({'quick' if args.quick else 'full'}) on {machine()}")
    if results:
        print(table(results))
    if lanes:
        print("two models, one run (lanes):")
        print(lanes[0])
    problems = [f"{m.scenario.name}: {p}" for m in results for p in m.problems]
    for problem in problems[:20]:
        print(f"FAIL {problem}")
    print(f"total {time.monotonic() - started:.1f} s; checks {'FAILED' if problems else 'passed'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
