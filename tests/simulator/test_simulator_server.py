"""The simulator's public surface, its foreground server and its latency model."""

from __future__ import annotations

import json
import math
import random
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

import batchrunner.simulator as simulator
from batchrunner.simulator import MODELS, SimulatorConfig
from batchrunner.simulator.answers import plan_answer
from batchrunner.simulator.content import ChatRequest
from batchrunner.simulator.latency import plan_timing

REPO = Path(__file__).resolve().parents[2]


def test_public_surface_is_exactly_all() -> None:
    assert len(set(simulator.__all__)) == len(simulator.__all__)
    public = {name for name in dir(simulator) if not name.startswith("_")}
    modules = {"app", "auth", "config", "content", "envelopes", "exchange", "faults", "latency"}
    modules |= {"answers", "models", "quotas", "recorder", "server", "shapes", "annotations"}
    modules |= {"batch", "storage"}
    assert public - modules == set(simulator.__all__)


def test_model_table_covers_gemini_and_gpt_oss_with_their_locations() -> None:
    assert {"google/gemini-2.5-pro", "google/gemini-2.0-flash-001"} <= set(MODELS)
    assert MODELS["openai/gpt-oss-120b-maas"].locations == {"global", "us-central1"}
    assert MODELS["openai/gpt-oss-20b-maas"].locations == {"us-central1"}
    assert MODELS["openai/gpt-oss-120b-maas"].rpm == 650
    assert all(MODELS[m].family == "gemini" for m in MODELS if m.startswith("google/"))


def _request(model: str, prompt_tokens: int = 100, effort: str | None = None) -> ChatRequest:
    return ChatRequest(
        model=model,
        spec=MODELS[model],
        messages=[],
        stream=True,
        include_usage=False,
        n=1,
        max_tokens=None,
        reasoning_effort=effort,
        thinking_budget=None,
        include_thoughts=False,
        thought_tag_marker=None,
        prompt_tokens=prompt_tokens,
        digest=42,
    )


def test_latency_profiles_zero_fast_and_realistic() -> None:
    rng = random.Random(0)
    request = _request("google/gemini-2.5-pro")
    plan = plan_answer(request)
    zero = plan_timing(SimulatorConfig(latency="zero"), request.spec, plan, in_flight=1, rng=rng)
    assert zero.ttft_s == 0 and zero.tokens_per_s == math.inf
    fast = plan_timing(SimulatorConfig(latency="fast"), request.spec, plan, in_flight=1, rng=rng)
    assert fast.ttft_s < 0.1 and fast.tokens_per_s >= 10_000
    real = plan_timing(
        SimulatorConfig(latency="realistic"), request.spec, plan, in_flight=1, rng=rng
    )
    # Gemini's hidden thinking comes before the first visible token.
    assert real.ttft_s > plan.reasoning_tokens / real.tokens_per_s
    assert 30 < real.tokens_per_s < 500
    fixed = SimulatorConfig(latency="realistic", ttft_s=1.5, tokens_per_s=100.0)
    timing = plan_timing(fixed, request.spec, plan, in_flight=1, rng=rng)
    assert timing.ttft_s == 1.5 and timing.tokens_per_s == 100.0


def test_gpt_oss_first_token_does_not_wait_for_its_streamed_reasoning() -> None:
    rng = random.Random(0)
    request = _request("openai/gpt-oss-120b-maas", effort="high")
    plan = plan_answer(request)
    real = plan_timing(
        SimulatorConfig(latency="realistic"), request.spec, plan, in_flight=1, rng=rng
    )
    assert real.ttft_s < 2.0
    assert real.ttft_s < plan.reasoning_tokens / real.tokens_per_s


def test_longer_prompts_and_more_load_raise_realistic_ttft() -> None:
    config = SimulatorConfig(latency="realistic")
    short, long = (
        _request("google/gemini-2.0-flash", 100),
        _request("google/gemini-2.0-flash", 400_000),
    )
    ttft_short = plan_timing(
        config, short.spec, plan_answer(short), in_flight=1, rng=random.Random(1)
    )
    ttft_long = plan_timing(config, long.spec, plan_answer(long), in_flight=1, rng=random.Random(1))
    loaded = plan_timing(
        config, short.spec, plan_answer(short), in_flight=5000, rng=random.Random(1)
    )
    assert ttft_long.ttft_s > ttft_short.ttft_s + 5
    assert loaded.ttft_s > ttft_short.ttft_s + 1


def test_serve_runs_until_sigterm_and_flushes_its_log(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    key = tmp_path / "key.json"
    script = textwrap.dedent(
        f"""
        import sys
        from batchrunner.simulator import SimulatorConfig, serve
        config = SimulatorConfig(static_tokens=("t",), request_log={str(log)!r})
        serve(config, credentials_out={str(key)!r},
              ready=lambda sim: print(sim.base_url(), flush=True))
        print("stopped", flush=True)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert json.loads(key.read_text())["token_uri"].endswith("/token")
        answer = requests.post(
            base_url + "/chat/completions",
            json={
                "model": "google/gemini-2.5-flash",
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"Authorization": "Bearer t"},
            timeout=10,
        )
        assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "stopped" in out
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["status"] == 200


@pytest.mark.anyio
async def test_a_burst_of_connections_is_queued_not_dropped() -> None:
    # 600 clients connect while the server's loop is busy (this test holds it): the
    # kernel must queue every handshake. With aiohttp's default backlog of 128, the rest
    # would wait for SYN retransmits, as thousands of batchrunner connections once did.
    async with simulator.open_simulator(SimulatorConfig()) as sim:
        clients = []
        try:
            for _ in range(600):
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                client.setblocking(False)
                client.connect_ex(("127.0.0.1", sim.port))
                clients.append(client)
            deadline = time.monotonic() + 2.0
            pending = list(clients)
            while pending and time.monotonic() < deadline:
                _, writable, _ = select.select([], pending, [], 0.05)
                pending = [c for c in pending if c not in writable]
            connected = [
                c for c in clients if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            ]
            assert not pending and len(connected) == 600
        finally:
            for client in clients:
                client.close()
