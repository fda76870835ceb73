"""Exactly once with the per-row state spilled to disk: duplicates, resume, --retry-failed."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrunner.auth.tokens import StaticAuthenticator
from batchrunner.config import RunConfig, Secret
from batchrunner.endpoint.retry import RetryPolicy
from batchrunner.limits.local import LimitConfig, LocalLimiter
from batchrunner.output import keyindex
from batchrunner.pipeline.runner import Runner, RunSummary
from batchrunner.simulator import Simulator, SimulatorConfig, open_simulator

pytestmark = pytest.mark.anyio

TOKEN = "ya29.test-token-value-spill"
TINY_MB = 0.004  # 2 KiB per index: a spill every few hundred keys
N = 600


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(static_tokens=(TOKEN,), keep_records=True)
    async with open_simulator(config) as simulator:
        yield simulator


@pytest.fixture
def spills(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The directories the indexes spilled into, one entry per spill."""
    seen: list[Path] = []
    spill = keyindex.KeyIndex._spill

    def counting(self: keyindex.KeyIndex) -> None:
        spill(self)
        seen.append(self._directory)  # type: ignore[arg-type]

    monkeypatch.setattr(keyindex.KeyIndex, "_spill", counting)
    return seen


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


async def run(sim: Simulator, tmp_path: Path, **kwargs: Any) -> RunSummary:
    kwargs.setdefault("input", tmp_path / "in.jsonl")
    kwargs.setdefault("output", tmp_path / "out.jsonl")
    kwargs.setdefault("index_memory_mb", TINY_MB)
    config = RunConfig(concurrency=8, **kwargs)
    limiter = LocalLimiter(LimitConfig(max_concurrency=8, pause_base_s=0.01, pause_cap_s=0.05))
    runner = Runner(
        config,
        url=sim.base_url(),
        authenticator=StaticAuthenticator(Secret(TOKEN)),
        retry_policy=RetryPolicy.no_wait(max_attempts=4),
        limiter=limiter,
    )
    return await runner.run()


def prompts(ids: list[int]) -> list[dict[str, Any]]:
    # No thinking, so each short answer has text: only the blocked prompts end in error.
    return [
        {
            "id": f"q{i}",
            "prompt": f"question number {i}?",
            "max_tokens": 8,
            "reasoning_effort": "minimal",
        }
        for i in ids
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
async def test_duplicates_are_found_across_spilled_runs(
    sim: Simulator, tmp_path: Path, spills: list[Path], suffix: str
) -> None:
    # The repeats come long after their first rows, which by then are in files on disk.
    write_jsonl(tmp_path / "in.jsonl", prompts([*range(N), *range(0, N, 7)]))
    out = tmp_path / f"out{suffix}"
    summary = await run(sim, tmp_path, output=out)
    assert any(path.name == "seen" for path in spills)
    assert summary.duplicates == len(range(0, N, 7))
    assert len(sim.records) == N
    assert not (tmp_path / f"out{suffix}.index").exists()


async def test_resume_skips_every_done_key_across_spilled_runs(
    sim: Simulator, tmp_path: Path, spills: list[Path]
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(list(range(N // 2))))
    await run(sim, tmp_path)
    write_jsonl(tmp_path / "in.jsonl", prompts(list(range(N))))
    # Another input is another job: same output, so the first half is resumed past.
    (tmp_path / "out.jsonl.run.json").unlink()
    served = len(sim.records)
    spills.clear()
    again = await run(sim, tmp_path)
    assert any(path.name == "done" for path in spills)
    assert again.skipped == N // 2
    assert len(sim.records) - served == N - N // 2
    ids = Counter(r["id"] for r in read_results(tmp_path / "out.jsonl"))
    assert set(ids) == {f"q{i}" for i in range(N)} and max(ids.values()) == 1
    assert not (tmp_path / "out.jsonl.index").exists()


async def test_retry_failed_resends_exactly_the_spilled_failed_keys(
    sim: Simulator, tmp_path: Path, spills: list[Path]
) -> None:
    rows = prompts(list(range(N)))
    blocked = {f"q{i}" for i in range(0, N, 10)}
    for row in rows:
        if row["id"] in blocked:
            row["prompt"] = "__block__ please"
    write_jsonl(tmp_path / "in.jsonl", rows)
    first = await run(sim, tmp_path)
    assert first.exit_status == 1
    served = len(sim.records)
    spills.clear()
    plain = await run(sim, tmp_path)
    assert any(path.name == "done" for path in spills)
    assert (plain.skipped, plain.earlier_errors, len(sim.records)) == (N, len(blocked), served)
    retried = await run(sim, tmp_path, retry_failed=True)
    assert retried.skipped == N - len(blocked)
    resent = sim.records[served:]  # only the blocked prompts, each refused again
    assert len(resent) == len(blocked) and {r["status"] for r in resent} == {400}
    ids = Counter(r["id"] for r in read_results(tmp_path / "out.jsonl"))
    assert max(ids.values()) == 1 and len(ids) == N


async def test_a_stale_index_left_by_a_killed_run_is_rebuilt_from_output(
    sim: Simulator, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", prompts(list(range(50))))
    await run(sim, tmp_path)
    stale = tmp_path / "out.jsonl.index" / "done"
    stale.mkdir(parents=True)
    (stale / "run-000000.i64").write_bytes(b"\x00" * 64)
    served = len(sim.records)
    again = await run(sim, tmp_path)
    assert again.skipped == 50 and len(sim.records) == served
    assert not (tmp_path / "out.jsonl.index").exists()
