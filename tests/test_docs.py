"""The README cannot drift from the code: its schema table and CLI flags are checked here."""

from __future__ import annotations

import re
from pathlib import Path

from batchrunner.cli.main import build_parser
from batchrunner.results import RESULT_FIELDS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_quickstart_has_exactly_two_shell_blocks() -> None:
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", _section("Quickstart"), re.S)
    assert len(blocks) == 2
    assert "--simulate" in blocks[0]
    assert "pytest" in blocks[1]


def test_output_table_lists_every_result_column_in_order() -> None:
    rows = re.findall(r"^\| (\w+) \| (?:string|int|float|bool|timestamp) \|", _section("Output"), re.M)
    assert tuple(rows) == RESULT_FIELDS


def test_every_run_flag_named_in_the_readme_exists() -> None:
    parser = build_parser()
    run_parser = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr,index]
    known = {opt for action in run_parser._actions for opt in action.option_strings}
    mentioned = set(re.findall(r"`(--[a-z][a-z-]+)", README))
    other_commands = {"--port", "--credentials-out", "--latency", "--token-ttl", "--static-token",
                     "--rpm-quota", "--tpm-quota", "--dsq-capacity", "--error-rate", "--fault",
                     "--retry-delay", "--request-log", "--format", "--workloads",
                     "--shards", "--memory-n"}  # fmt: skip
    assert mentioned - other_commands <= known, sorted(mentioned - other_commands - known)
