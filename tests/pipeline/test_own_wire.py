"""A wire of the library user's own: every request goes through it, and the run closes it."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from batchrunner import RunConfig, Runner, Secret, WireResponse
from batchrunner.auth.tokens import StaticAuthenticator

pytestmark = pytest.mark.anyio

URL = "http://127.0.0.1:9/v1/chat/completions"  # never dialled: the wire answers


class AnsweringWire:
    """Answers each request with its own prompt, reversed; counts what it was asked."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.closed = 0

    async def fetch(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        request = orjson.loads(body)
        self.bodies.append(request)
        prompt = request["messages"][-1]["content"]
        answer = {
            "id": f"resp-{len(self.bodies)}",
            "choices": [
                {"index": 0, "message": {"content": prompt[::-1]}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
        return 200, {"content-type": "application/json"}, orjson.dumps(answer)

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes
    ) -> contextlib.AbstractAsyncContextManager[WireResponse]:
        raise AssertionError("a non-streamed run reads whole answers with fetch()")

    async def aclose(self) -> None:
        self.closed += 1


def config(tmp_path: Path, n: int) -> RunConfig:
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(orjson.dumps({"id": f"r{i}", "prompt": f"prompt {i}"}) + b"\n" for i in range(n))
    )
    return RunConfig(
        input=source, output=tmp_path / "out.jsonl", models=("google/gemini-2.5-flash",)
    )


async def test_every_row_goes_through_the_wire_given_and_the_run_closes_it(
    tmp_path: Path,
) -> None:
    wire = AnsweringWire()
    cfg = config(tmp_path, 25)
    runner = Runner(cfg, url=URL, authenticator=StaticAuthenticator(Secret("t")), wire=wire)
    summary = await runner.run()
    rows = [orjson.loads(line) for line in cfg.output.read_bytes().splitlines()]
    assert summary.exit_status == 0
    assert sorted(r["id"] for r in rows) == sorted(f"r{i}" for i in range(25))
    assert {r["output"] for r in rows} == {f"prompt {i}"[::-1] for i in range(25)}
    assert len(wire.bodies) == 25
    assert wire.closed == 1


async def test_a_wire_and_a_transport_together_are_refused(tmp_path: Path) -> None:
    import httpx

    with pytest.raises(ValueError, match="not both"):
        Runner(
            config(tmp_path, 1),
            url=URL,
            wire=AnsweringWire(),
            transport=httpx.MockTransport(lambda r: httpx.Response(200)),
        )
