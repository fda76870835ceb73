"""How many chat requests per second the simulator serves at zero latency on this machine.

The simulator runs in its own process (``serve``); this process drives it over loopback
with raw aiohttp and a fixed number of requests in flight, then prints the rate.

    python benchmarks/bench_simulator.py [--requests 20000] [--concurrency 256] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import multiprocessing.connection
import os
import time

import aiohttp
import orjson

from batchrunner.simulator import SimulatorConfig, serve
from batchrunner.simulator.server import Simulator

TOKEN = "bench-token"


def _child(config: SimulatorConfig, conn: multiprocessing.connection.Connection) -> None:
    started: list[float] = []

    def cpu() -> float:
        times = os.times()
        return times.user + times.system

    def ready(sim: Simulator) -> None:
        started.append(cpu())
        conn.send(sim.base_url())

    serve(config, ready=ready)
    conn.send(cpu() - started[0])
    conn.close()


async def drive(
    base_url: str, *, requests: int, concurrency: int, body: bytes
) -> tuple[float, int]:
    url = base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    remaining = requests
    failures = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining, failures
            while remaining > 0:
                remaining -= 1
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--model", default="google/gemini-2.5-flash-lite")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    config = SimulatorConfig(latency="zero", static_tokens=(TOKEN,), default_quotas=False)
    parent, child = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(
        target=_child, args=(config, child), daemon=True
    )
    process.start()
    try:
        base_url = parent.recv()
        body = orjson.dumps(
            {
                "model": args.model,
                "messages": [{"role": "user", "content": "Rate this review: great product."}],
                "max_tokens": args.max_tokens,
                "stream": args.stream,
            }
        )
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        elapsed, failures = runner(
            drive(base_url, requests=args.requests, concurrency=args.concurrency, body=body)
        )
    finally:
        process.terminate()
        server_cpu = parent.recv() if parent.poll(10) else math.nan
        process.join(10)
    rate = args.requests / elapsed
    mode = "streamed" if args.stream else "non-streamed"
    print(
        f"simulator: {rate:,.0f} requests/s ({args.requests} {mode} {args.model} requests, "
        f"{args.concurrency} in flight, zero latency, {elapsed:.2f} s, {failures} failures)"
    )
    # The client shares the machine; the server's own CPU per request bounds what it can do.
    per_request = server_cpu / args.requests
    print(
        f"simulator CPU: {per_request * 1e6:,.0f} us/request "
        f"(at most ~{1 / per_request:,.0f} requests/s per core)"
    )


if __name__ == "__main__":
    main()
