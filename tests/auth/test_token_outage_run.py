"""A token endpoint that refuses connections in the middle of a run, through the real command.

Tokens live 3 s; the token endpoint sits behind a loopback TCP proxy that the test closes
for 5 s once requests flow (connecting is refused, open connections are cut), then opens
again. The run outlives its token with no way to renew it, waits, and finishes: every
row ok, exit 0, no request sent with an expired token.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batchrunner.simulator import Simulator, SimulatorConfig, start_simulator_thread

ROOT = Path(__file__).resolve().parents[2]
TOKEN_TTL_S = 3.0
OUTAGE_S = 5.0  # longer than a token lives: no valid token exists for a while
ROWS = 300


class FlakyProxy:
    """A loopback TCP proxy to ``target_port`` that can go down: then connecting is refused."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Stop listening and cut every proxied connection (pooled keep-alives included)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            listener.close()
        with self._lock:
            doomed, self._open = self._open, set()
        for sock in doomed:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._target), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        token_ttl=TOKEN_TTL_S, keep_records=True, ttft_s=0.03, tokens_per_s=5000
    )
    with start_simulator_thread(config) as simulator:
        yield simulator


@pytest.fixture
def proxy(sim: Simulator) -> Iterator[FlakyProxy]:
    port = int(sim.token_uri.split("//", 1)[1].split("/", 1)[0].rpartition(":")[2])
    flaky = FlakyProxy(port)
    yield flaky
    flaky.down()


def test_a_run_rides_out_a_token_endpoint_outage_longer_than_its_tokens_live(
    sim: Simulator, proxy: FlakyProxy, tmp_path: Path
) -> None:
    key = sim.write_credentials(tmp_path / "key.json")
    info = json.loads(key.read_text())
    info["token_uri"] = f"http://127.0.0.1:{proxy.port}/token"
    key.write_text(json.dumps(info))
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(
            orjson.dumps(
                {"id": f"r{i}", "prompt": f"q{i}", "max_tokens": 16, "reasoning_effort": "minimal"}
            )
            + b"\n"
            for i in range(ROWS)
        )
    )
    out = tmp_path / "out.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GOOGLE_"))}
    args = [
        sys.executable, "-m", "batchrunner", "run", str(source), "-o", str(out),
        "--base-url", sim.base_url(), "--credentials", str(key), "--auth-patience", "30",
        "--concurrency", "2", "--no-adapt", "--progress", "off",
    ]  # fmt: skip
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as proc:
        deadline = time.monotonic() + 30
        while not sim.records and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # requests flow: the first token was issued through the proxy
        proxy.down()
        time.sleep(OUTAGE_S)
        assert proc.poll() is None, "the run ended before the outage did"
        proxy.up()
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-2000:]
    assert "refreshing the access token from" in stderr, "the outage was never felt"
    results = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sorted(r["id"] for r in results) == sorted(f"r{i}" for i in range(ROWS))
    assert {r["status"] for r in results} == {"ok"}
    statuses = Counter(r["status"] for r in sim.records)
    assert statuses == Counter({200: ROWS}), "a request went out with an expired token"
    # Admission paused while no valid token existed: a gap in arrivals during the outage.
    arrivals = sorted(float(str(r["arrival_monotonic"])) for r in sim.records)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) > 1.0
    assert len(sim.issued_tokens()) >= 2, "no token was issued after the outage"
    for token in sim.issued_tokens():
        assert token not in stdout + stderr
