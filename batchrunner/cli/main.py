"""The command line: flags → config → run → exit status.

With ``cli.run``, ``cli.simulate`` and ``cli.batch`` (the ``run``, ``simulate`` and
``batch-*`` subcommands), the only modules that print.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchrunner import __version__
from batchrunner.cli.batch import (
    add_batch_commands,
    cmd_batch_cancel,
    cmd_batch_status,
)
from batchrunner.cli.run import add_run, cmd_run, positive_int, setup_logging
from batchrunner.cli.simulate import add_simulate, cmd_simulate
from batchrunner.cli.teach import Parser, epilog, suggest_flag
from batchrunner.errors import BatchRunnerError, ConfigError
from batchrunner.pipeline.allocators import return_freed_memory


def _add_report(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="summarise result files, comparing models",
        description="Per model: rows, errors by type with an example, finish reasons, empty "
        "answers, tokens, cost and latency; a comparison when several models answered.",
        epilog=epilog(
            "batchrunner report results.parquet",
            "batchrunner report results.parquet --format html -o report.html",
            "batchrunner report night1.jsonl night2.jsonl --format markdown",
            codes="exit status: 0 written · 2 a results file or -o path is unusable",
        ),
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="result files (.jsonl, .parquet)")
    p.add_argument(
        "--format",
        choices=["text", "json", "markdown", "html"],
        default="text",
        help="text (default), json, markdown, or html (one self-contained page with charts)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the report here, not to stdout")


def _add_merge(sub: Any) -> None:
    p = sub.add_parser(
        "merge",
        help="merge the shard outputs of OUTPUT into OUTPUT",
        description="Merge OUTPUT.shard-I-of-N files (from --shard runs) into OUTPUT.",
        epilog=epilog(
            "batchrunner merge results.parquet",
            "batchrunner merge results.parquet --shards 16 --ordered",
            codes="exit status: 0 merged · 2 shards missing or unreadable",
        ),
    )
    p.add_argument("output", metavar="OUTPUT", help="the job's -o, without the shard suffix")
    p.add_argument("--shards", type=positive_int, metavar="N", help="which plan, if several")
    p.add_argument("--ordered", action="store_true", help="order rows by input position")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="batchrunner",
        description="Run large batches of chat completions against Vertex AI, exactly once.",
        epilog=epilog(
            "batchrunner run sample_data/prompts.jsonl -o results.parquet --simulate",
            "batchrunner run prompts.parquet -o results.parquet --project P --model "
            "google/gemini-2.5-flash --model openai/gpt-oss-120b-maas",
            "batchrunner report results.parquet --format html -o report.html",
        ),
    )
    parser.add_argument("--version", action="version", version=f"batchrunner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_run(sub)
    add_simulate(sub)
    _add_report(sub)
    _add_merge(sub)
    add_batch_commands(sub)
    return parser


def _cmd_report(ns: argparse.Namespace) -> int:
    from batchrunner.report.files import stats_from_files
    from batchrunner.report.render import render

    for path in ns.results:
        if not Path(path).exists():
            raise ConfigError(f"{path}: no such results file")
    text = render(stats_from_files(ns.results), ns.format)
    if ns.output:
        try:
            Path(ns.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{ns.output}: cannot write the report ({exc.strerror})") from None
        print(f"report written to {ns.output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _cmd_merge(ns: argparse.Namespace) -> int:
    from batchrunner.output.merge import merge_shards

    setup_logging(0)
    merged = merge_shards(ns.output, count=ns.shards, ordered=ns.ordered)
    print(
        f"batchrunner: merged {len(merged.shards)} shards ({merged.rows_read:,} rows) into "
        f"{merged.output}: {merged.rows_written:,} rows",
        file=sys.stderr,
    )
    return 0


def _subparser(parser: argparse.ArgumentParser, command: str) -> Parser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found = action.choices.get(command)
            if isinstance(found, Parser):
                return found
    assert isinstance(parser, Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns, extras = parser.parse_known_args(argv)
    if extras:
        chosen = _subparser(parser, ns.command)
        chosen.error(suggest_flag(chosen, extras))
    return_freed_memory()  # before anything loads pyarrow: this process exists to run the command
    commands = {
        "run": cmd_run,
        "simulate": cmd_simulate,
        "report": _cmd_report,
        "merge": _cmd_merge,
        "batch-status": cmd_batch_status,
        "batch-cancel": cmd_batch_cancel,
    }
    try:
        return commands[ns.command](ns)
    except BatchRunnerError as exc:
        print(f"batchrunner: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("batchrunner: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
