"""What batchrunner itself costs per row, with the network taken away.

    python benchmarks/bench_own.py [--n 20000] [--repeat 5] [--concurrency 100]

The overhead workload of ``compare.py`` measures the whole client against nginx, where
aiohttp's own exchange is most of the CPU and the machine's noise is most of the spread.
This benchmark takes both away: the Runner runs over a ``Wire`` (``Runner(wire=...)``)
that answers every request at once with the nginx benchmark's canned completion, in this
process, so what is left is batchrunner's own work for a row: reading it, building and
encoding its body, admission, parsing and costing the answer, the statistics, the journal,
the Parquet part and the final compaction.

Beside it, in the same rounds, the bare loop of ``peers.py`` (a semaphore and
``asyncio.gather``, ``orjson`` for the body and the answer, ``pyarrow`` for the file) over the
same instant answer: what a hand-written script does for a row when it has nothing to send.

CPU is this process's, per row, split into the event loop's thread and the others (the
writer and the input reader): a row's cost on the loop's thread bounds the rows per second
one core can carry. Prints median and range over ``--repeat`` rounds, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchrunner.pipeline.allocators import return_freed_memory

return_freed_memory()  # as the command does, before anything loads pyarrow

import orjson  # noqa: E402
import uvloop  # noqa: E402
from common import CANNED_COMPLETION, machine, make_input  # noqa: E402
from peers import Job, gather_bounded, ok_row, read_input, write_output  # noqa: E402

from batchrunner import RequestDefaults, RunConfig, Runner, Secret, WireResponse  # noqa: E402
from batchrunner.auth.tokens import StaticAuthenticator  # noqa: E402
from batchrunner.pipeline.gctune import collect_less_often  # noqa: E402

MODEL = "google/gemini-2.5-flash"
URL = "http://127.0.0.1:9/v1/chat/completions"  # never dialled: the wire answers
BODY = json.dumps(CANNED_COMPLETION).encode()
HEADERS = {"content-type": "application/json"}


class InstantWire:
    """Every request answered at once with the canned completion, after one loop turn."""

    async def fetch(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        await asyncio.sleep(0)
        return 200, HEADERS, BODY

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> AbstractAsyncContextManager[WireResponse]:
        raise NotImplementedError("the benchmark's requests are not streamed")

    async def aclose(self) -> None:
        return None


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds of each of this process's threads, by native id (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended
        times[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return times


def run_batchrunner(source: Path, out: Path, concurrency: int, max_tokens: int) -> None:
    config = RunConfig(
        input=source,
        output=out,
        models=(MODEL,),
        concurrency=concurrency,
        adaptive=False,
        restart=True,
        request=RequestDefaults(params={"max_tokens": max_tokens}),
    )
    runner = Runner(
        config, url=URL, authenticator=StaticAuthenticator(Secret("bench")), wire=InstantWire()
    )
    summary = uvloop.run(runner.run())
    if summary.exit_status != 0:
        raise SystemExit(f"batchrunner's run ended with status {summary.exit_status}")


def run_bare_loop(source: Path, out: Path, concurrency: int, max_tokens: int) -> None:
    job = Job(
        argparse.Namespace(
            input=source,
            output=out,
            url=URL.removesuffix("/chat/completions"),
            model=MODEL,
            concurrency=concurrency,
            max_tokens=max_tokens,
        )
    )
    wire = InstantWire()

    async def send(row_id: str, prompt: str) -> dict[str, Any]:
        started = time.perf_counter()
        _, _, body = await wire.fetch(job.url, HEADERS, orjson.dumps(job.payload(prompt)))
        return ok_row(row_id, orjson.loads(body), started)

    async def main() -> None:
        rows = read_input(source)
        write_output(out, await gather_bounded(rows, concurrency, send))

    uvloop.run(main())


TOOLS = {"batchrunner": run_batchrunner, "bare loop": run_bare_loop}


def one_round(tool: str, source: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    main_tid = threading.get_native_id()
    before = thread_cpu_s()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    TOOLS[tool](source, out, args.concurrency, args.max_tokens)
    wall = time.perf_counter() - wall0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    after = thread_cpu_s()
    total = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    loop = after.get(main_tid, 0.0) - before.get(main_tid, 0.0)
    per_row = 1e6 / args.n
    return {
        "cpu_us": total * per_row,
        "loop_us": loop * per_row,
        "other_us": max(total - loop, 0.0) * per_row,
        "wall_us": wall * per_row,
        "faults": (usage1.ru_minflt - usage0.ru_minflt) / args.n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="rows per round (20,000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per tool (5)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    began = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    collect_less_often()  # the collector thresholds the command sets, for both tools
    rounds: dict[str, list[dict[str, float]]] = {tool: [] for tool in TOOLS}
    with tempfile.TemporaryDirectory(prefix="bench-own-") as tmp:
        source = make_input(Path(tmp) / "in.parquet", args.n)
        for r in range(args.repeat):
            for tool in TOOLS:
                out = Path(tmp) / f"out-{r}-{tool.replace(' ', '-')}.parquet"
                rounds[tool].append(one_round(tool, source, out, args))
                figures = rounds[tool][-1]
                print(
                    f"… round {r + 1} {tool}: {figures['cpu_us']:.1f} CPU µs/row",
                    file=sys.stderr,
                    flush=True,
                )
                out.unlink(missing_ok=True)

    def cell(tool: str, key: str) -> str:
        values = [f[key] for f in rounds[tool]]
        fmt = "{:.2f}" if key == "faults" else "{:.1f}"
        median, low, high = (fmt.format(v) for v in (statistics.median(values), *_span(values)))
        return f"{median} ({low}–{high})"

    pairs = list(zip(rounds["batchrunner"], rounds["bare loop"], strict=True))
    ratios = [ours["cpu_us"] / bare["cpu_us"] for ours, bare in pairs]
    loop_ratios = [ours["loop_us"] / bare["loop_us"] for ours, bare in pairs]
    info = machine()
    command = "python benchmarks/bench_own.py " + shlex.join(sys.argv[1:])
    lines = [
        "# batchrunner's own cost per row, no network",
        "",
        f"- command: `{command.strip()}`",
        f"- date: {began}; machine: {info['cpu']}, {info['nproc']} CPUs, "
        f"Python {info['python']}, {info['os']}",
        f"- {args.n:,} rows per round, {args.concurrency} in flight, {args.repeat} rounds per "
        "tool, alternating; median (range) per row",
        "",
        "| tool | CPU µs | on the loop's thread µs | other threads µs | wall µs | page faults |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tool in TOOLS:
        keys = ("cpu_us", "loop_us", "other_us", "wall_us", "faults")
        lines.append(f"| {tool} | " + " | ".join(cell(tool, k) for k in keys) + " |")
    lines += [
        "",
        f"batchrunner over the bare loop, round by round: CPU "
        f"{statistics.median(ratios):.2f}× ({_range(ratios)}), on the loop's thread "
        f"{statistics.median(loop_ratios):.2f}× ({_range(loop_ratios)}).",
    ]
    print("\n".join(lines))
    return 0


def _span(values: list[float]) -> tuple[float, float]:
    return min(values), max(values)


def _range(values: list[float]) -> str:
    low, high = _span(values)
    return f"{low:.2f}–{high:.2f}"


if __name__ == "__main__":
    sys.exit(main())
