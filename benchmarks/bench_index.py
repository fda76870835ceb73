"""The per-row key index alone at scale: peak RSS, insert and probe cost at 100M keys.

    python benchmarks/bench_index.py [--keys 100000000] [--memory-mb 8] [--probes 200000]
        [--dir DIR]

Inserts ``--keys`` random 64-bit keys (as hashed ids are) into a ``KeyIndex`` bounded to
``--memory-mb``, spilling into a temporary directory (under ``--dir``, default the system's
temp dir), then probes ``--probes`` keys that are present and as many that are not, as the
producer does once per input row. Prints the figures with the command and the machine.
"""

from __future__ import annotations

import argparse
import random
import resource
import shlex
import sys
import tempfile
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine

from batchrunner.output.keyindex import DEFAULT_MEMORY_BYTES, KeyIndex


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000_000)
    parser.add_argument(
        "--memory-mb",
        type=float,
        default=DEFAULT_MEMORY_BYTES / 2**20,
        help="the bound (default: one index's share of a run's default, 8 MB)",
    )
    parser.add_argument("--probes", type=int, default=200_000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    began = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    start_rss = rss_mb()
    rng = random.Random(2024)
    sample_every = max(1, args.keys // args.probes)
    present = array("q")  # 8 bytes a sampled key, not a Python int's ~36
    with tempfile.TemporaryDirectory(prefix="bench-index-", dir=args.dir) as tmp:
        index = KeyIndex(Path(tmp) / "idx", memory_bytes=int(args.memory_mb * 1024 * 1024))
        getrandbits, put = rng.getrandbits, index.put
        t0 = time.perf_counter()
        c0 = time.process_time()
        progress = max(1, args.keys // 10)
        for n in range(args.keys):
            key = getrandbits(64) - (1 << 63)
            put(key)
            if n % sample_every == 0:
                present.append(key)
            if n % progress == progress - 1:
                print(
                    f"… {n + 1:,} keys, {time.perf_counter() - t0:.0f} s, RSS {rss_mb():.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
        insert_wall = time.perf_counter() - t0
        insert_cpu = time.process_time() - c0
        disk = du_mb(Path(tmp))
        files = len(index._files)
        absent = array("q", (getrandbits(64) - (1 << 63) for _ in range(len(present))))
        get = index.get
        t0 = time.perf_counter()
        found = sum(get(key) is not None for key in present)
        hit_us = (time.perf_counter() - t0) * 1e6 / len(present)
        t0 = time.perf_counter()
        false = sum(get(key) is not None for key in absent)
        miss_us = (time.perf_counter() - t0) * 1e6 / len(absent)
        end_rss = rss_mb()
        index.close()
    info = machine()
    command = "python benchmarks/bench_index.py " + shlex.join(sys.argv[1:])
    print(
        "\n".join(
            [
                "# Key index at scale",
                "",
                f"- command: `{command.strip()}`",
                f"- date: {began}; machine: {info['cpu']}, {info['nproc']} CPUs, "
                f"Python {info['python']}, {info['os']} (shared, loaded)",
                f"- bound: {args.memory_mb:g} MB in memory; spilled to {files} file(s), "
                f"{disk:,.0f} MB on disk",
                "",
                "| keys | insert µs/key (wall) | insert CPU s | probe hit µs | probe miss µs "
                "| RSS at start MB | RSS at end MB | peak RSS MB |",
                "|---|---|---|---|---|---|---|---|",
                f"| {args.keys:,} | {insert_wall * 1e6 / args.keys:.2f} | {insert_cpu:.0f} "
                f"| {hit_us:.1f} | {miss_us:.1f} | {start_rss:.0f} | {end_rss:.0f} "
                f"| {peak_mb():.0f} |",
                "",
                f"- probes: {len(present):,} present keys (found {found:,}), {len(absent):,} "
                f"absent ({false} found: must be 0); the two key samples hold "
                f"{len(present) * 16 / 1e6:.1f} MB of the RSS.",
            ]
        )
    )
    return 0 if found == len(present) and false == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
