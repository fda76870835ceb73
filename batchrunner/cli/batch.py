"""``batch-status`` and ``batch-cancel``: OUTPUT's batch jobs, shown or cancelled."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import anyio

__all__ = ["add_batch_commands", "cmd_batch_cancel", "cmd_batch_status"]


def add_batch_commands(sub: Any) -> None:
    for name, text in (
        ("batch-status", "show the batch jobs of OUTPUT's run and their states"),
        ("batch-cancel", "cancel the batch jobs of OUTPUT's run that are still running"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("output", metavar="OUTPUT", help="the run's -o")
        p.add_argument("--no-auth", action="store_true", help="send no credentials")
        p.add_argument("--credentials", metavar="FILE", help="service-account key file")


def _auth(ns: argparse.Namespace) -> Any:
    from batchrunner.auth.tokens import build_authenticator
    from batchrunner.batch.recorded_jobs import load_recorded

    load_recorded(Path(ns.output))  # no recorded run: say so before looking for credentials
    from batchrunner.config import build_config

    table: dict[str, Any] = {}
    if ns.no_auth:
        table["mode"] = "none"
    if ns.credentials:
        table.update(mode="adc", credentials_file=ns.credentials)
    config = build_config({"input": ns.output, "output": ns.output, "auth": table or None})
    return build_authenticator(config.auth)


def cmd_batch_status(ns: argparse.Namespace) -> int:
    from batchrunner.batch.recorded_jobs import job_statuses
    from batchrunner.cli.run import setup_logging

    setup_logging(0)
    auth = _auth(ns)
    statuses = anyio.run(job_statuses, Path(ns.output), auth)
    print(f"{'file':>6}  {'model':<32} {'job':<20} {'state':<22} {'ok':>8} {'failed':>7}  note")
    for status in statuses:
        staged = status.file
        state = (status.state or "not created").removeprefix("JOB_STATE_")
        note = "collected" if staged.collected else ("retry" if staged.round else "")
        if status.error:
            note = status.error
        ok = "" if status.successful is None else f"{status.successful:,}"
        failed = "" if status.failed is None else f"{status.failed:,}"
        print(
            f"{staged.seq:>6}  {staged.model:<32} {staged.job_id or '-':<20} {state:<22} "
            f"{ok:>8} {failed:>7}  {note}"
        )
    return 0


def cmd_batch_cancel(ns: argparse.Namespace) -> int:
    from batchrunner.batch.recorded_jobs import cancel_jobs
    from batchrunner.cli.run import setup_logging

    setup_logging(0)
    auth = _auth(ns)
    results = anyio.run(cancel_jobs, Path(ns.output), auth)
    status = 0
    for job, problem in results:
        if problem:
            status = 1
            print(f"batchrunner: could not cancel {job}: {problem}", file=sys.stderr)
        else:
            print(f"batchrunner: cancelling {job}", file=sys.stderr)
    if not results:
        print("batchrunner: no batch job is running for this output", file=sys.stderr)
    else:
        print(
            "batchrunner: run the same command again to collect what the jobs finished and "
            "resubmit the rest",
            file=sys.stderr,
        )
    return status
