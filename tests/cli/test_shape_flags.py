"""The simulator's real-traffic shapes chosen from the command line, as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from batchrunner.cli import shape_flags
from batchrunner.cli.main import build_parser
from batchrunner.cli.simulate import simulator_config
from batchrunner.simulator import config as simulator_settings
from tests.cli.test_cli import assert_one_line_error, cli

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_the_flags_offer_exactly_the_simulators_vocabularies() -> None:
    assert shape_flags.FAULT_KINDS == simulator_settings.FAULT_KINDS
    assert shape_flags.REASONING_FIELDS == simulator_settings.REASONING_FIELDS
    assert shape_flags.VLLM_STREAM_USAGE == simulator_settings.VLLM_STREAM_USAGE


def test_simulate_flags_become_the_simulators_shape_options() -> None:
    ns = build_parser().parse_args(
        [
            "simulate",
            "--fault",
            "499=0.01",
            "--fault",
            "html_200=0.002",
            "--fault",
            "stream_error=0.5",
            "--tool-call-rate",
            "0.7",
            "--invalid-tool-arguments-rate",
            "0.1",
            "--reasoning-field",
            "reasoning_content",
            "--vllm-stream-usage",
            "requested",
            "--safety-block-rate",
            "0.02",
            "--prompt-block-rate",
            "0.03",
            "--parallel-tool-call-rate",
            "0.5",
            "--no-implicit-cache",
            "--no-background-faults",
        ]
    )
    config = simulator_config(ns)
    assert config.faults == {"499": 0.01, "html_200": 0.002, "stream_error": 0.5}
    assert (config.tool_call_rate, config.invalid_tool_arguments_rate) == (0.7, 0.1)
    assert (config.reasoning_field, config.vllm_stream_usage) == ("reasoning_content", "requested")
    assert (config.safety_block_rate, config.prompt_block_rate) == (0.02, 0.03)
    assert config.parallel_tool_call_rate == 0.5
    assert config.implicit_cache is False and config.background_faults is False


def test_unset_shape_flags_leave_the_latency_profiles_defaults() -> None:
    config = simulator_config(build_parser().parse_args(["simulate"]))
    assert config.tool_call_rate is None and config.safety_block_rate is None
    assert config.faults == {} and config.implicit_cache is None


def test_every_simulate_flag_says_what_it_does() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command" or a.choices)
    simulate = sub.choices["simulate"]  # type: ignore[index]
    for action in simulate._actions:
        assert action.help, action.option_strings


def test_run_sim_flags_shape_the_simulator_the_run_talks_to(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"id": f"q{i}", "prompt": f"weather {i}?", "tools": [WEATHER]} for i in range(4)]
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    out = tmp_path / "out.jsonl"
    proc = cli(
        "run",
        str(source),
        "-o",
        str(out),
        "--simulate",
        "--sim-tool-call-rate",
        "1.0",
        "--sim-latency",
        "zero",
        "--progress",
        "off",
    )
    assert proc.returncode == 0, proc.stderr
    results = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(results) == 4
    for row in results:
        assert row["status"] == "ok" and row["finish_reason"] == "tool_calls"
        assert all(json.loads(c["arguments"])["city"] for c in json.loads(row["tool_calls"]))


@pytest.mark.parametrize(
    ("flag", "needle"),
    [("nonsense=0.5", "unknown fault kind 'nonsense'"), ("499=lots", "KIND=RATE")],
)
def test_a_bad_sim_fault_is_one_line_naming_it(tmp_path: Path, flag: str, needle: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": "q", "prompt": "hi"}\n')
    proc = cli(
        "run", str(source), "-o", str(tmp_path / "o.jsonl"), "--simulate", "--sim-fault", flag
    )
    assert_one_line_error(proc, 2, "--sim-fault", needle)
