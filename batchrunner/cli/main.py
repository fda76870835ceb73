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
from batchrunner.errors import BatchRunnerError, ConfigError
from batchrunner.pipeline.allocators import return_freed_memory


def _add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="summarise result files, comparing models")
    p.add_argument("results", nargs="+", metavar="RESULTS")
    p.add_argument("--format", choices=["text", "json", "markdown", "html"], default="text")
    p.add_argument("-o", "--output", metavar="FILE")


def _add_merge(sub: Any) -> None:
    p = sub.add_parser("merge", help="merge the shard outputs of OUTPUT into OUTPUT")
    p.add_argument("output", metavar="OUTPUT", help="the job's -o, without the shard suffix")
    p.add_argument("--shards", type=positive_int, metavar="N", help="which plan, if several")
    p.add_argument("--ordered", action="store_true", help="order rows by input position")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchrunner",
        description="Run large batches of chat completions against Vertex AI, exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"batchrunner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
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
        Path(ns.output).write_text(text, encoding="utf-8")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
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
