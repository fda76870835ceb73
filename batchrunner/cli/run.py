"""The ``run`` subcommand: flags → ``RunConfig`` → a run, its summary and where its rows are."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from batchrunner.cli.shape_flags import add_shape_flags, shape_options
from batchrunner.cli.teach import epilog
from batchrunner.config import FAIL_ON_KINDS, READ_SUFFIXES, WRITE_SUFFIXES, suffixes
from batchrunner.errors import ConfigError

if TYPE_CHECKING:
    from batchrunner.pipeline.dryrun import EstimateComparison
    from batchrunner.pipeline.runner import RunSummary
    from batchrunner.pipeline.stop_signals import StopSignals

__all__ = ["add_run", "cmd_run", "positive_int", "setup_logging"]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    return key, value


def _slack(text: str) -> float | str:
    """``--input-limit-slack``: a positive factor, or ``off``."""
    if text.strip().lower() == "off":
        return "off"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'off', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive (or 'off'), got {text!r}")
    return value


def add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="send every input row to the model(s) and write the results",
        description="Send every input row to each model and write one result row per (id, "
        "model). Rerunning the same command resumes: finished rows are skipped.",
        epilog=epilog(
            "batchrunner run sample_data/prompts.jsonl -o results.parquet --simulate",
            "batchrunner run prompts.parquet -o results.parquet --project my-project "
            "--model google/gemini-2.5-flash --model openai/gpt-oss-120b-maas",
            "batchrunner run --config job.toml --retry-failed --fail-on empty,length",
        ),
    )
    p.add_argument("input", metavar="INPUT", nargs="?", help=suffixes(tuple(READ_SUFFIXES)))
    p.add_argument("-o", "--output", help=f"{suffixes(WRITE_SUFFIXES)}; format from the suffix")
    p.add_argument("--config", metavar="FILE", help="TOML job file; flags override it")
    g = p.add_argument_group("models and target")
    g.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="M",
        help="repeatable: each prompt goes to every model named",
    )
    g.add_argument(
        "--default-model", metavar="M", help="model for rows that name none (without --model)"
    )
    g.add_argument("--project", help="Vertex project (env GOOGLE_CLOUD_PROJECT)")
    g.add_argument("--location", help="Vertex location (env GOOGLE_CLOUD_LOCATION; default global)")
    g.add_argument("--endpoint-id", help="'openapi' (default) or a numeric endpoint id")
    g.add_argument("--api-version", choices=["v1", "v1beta1"], help="Vertex API version (v1)")
    g.add_argument("--base-url", help="any OpenAI-compatible base URL (env OPENAI_BASE_URL)")
    g.add_argument(
        "--simulate",
        action="store_true",
        help="start the built-in Vertex simulator and run against it",
    )
    g.add_argument(
        "--sim-latency",
        choices=["zero", "fast", "realistic"],
        help="--simulate's timing: zero, fast (default) or realistic (with 429s, blocks, faults)",
    )
    g.add_argument(
        "--sim-error-rate", type=float, metavar="F", help="--simulate: share of 5xx answers"
    )
    g.add_argument("--sim-rpm-quota", type=int, metavar="N", help="--simulate: RPM quota")
    g.add_argument("--sim-tpm-quota", type=int, metavar="N", help="--simulate: TPM quota")
    g.add_argument("--sim-seed", type=int, metavar="N", help="--simulate: random seed")
    add_shape_flags(g, prefix="--sim-")
    a = p.add_argument_group("auth")
    a.add_argument("--no-auth", action="store_true", help="send no credentials (local servers)")
    a.add_argument(
        "--credentials",
        metavar="FILE",
        help="service-account key file (default: Application Default Credentials)",
    )
    a.add_argument(
        "--impersonate-service-account",
        metavar="EMAIL",
        help="act as this service account (needs roles/iam.serviceAccountTokenCreator)",
    )
    a.add_argument("--quota-project", metavar="PROJECT", help="sent as x-goog-user-project")
    a.add_argument(
        "--auth-patience",
        type=float,
        metavar="SECONDS",
        help="how long to keep retrying the token source once no valid token is left "
        "(requests wait meanwhile) before stopping (default 300)",
    )
    r = p.add_argument_group("request")
    r.add_argument("--system", help="system prompt for every row without one")
    r.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="output cap per answer, reasoning included (Gemini 2.5 thinks first: leave room)",
    )
    r.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    r.add_argument(
        "--reasoning-effort",
        choices=["minimal", "low", "medium", "high"],
        help="how much the model thinks before answering",
    )
    r.add_argument(
        "--param",
        action="append",
        type=_param,
        metavar="KEY=JSON",
        help="any request parameter, e.g. --param 'seed=7'",
    )
    r.add_argument(
        "--stream",
        action="store_true",
        default=None,
        help="use SSE streaming (needed for TTFT/TTFO/ITL)",
    )
    r.add_argument("--id-field", metavar="NAME", help="input column of row ids (default id)")
    r.add_argument(
        "--prompt-field", metavar="NAME", help="input column of prompt text (default prompt)"
    )
    r.add_argument(
        "--messages-field",
        metavar="NAME",
        help="input column of OpenAI message lists (default messages)",
    )
    r.add_argument(
        "--fail-on",
        metavar="KINDS",
        help="answers that count as error rows, comma-separated from "
        f"{', '.join(FAIL_ON_KINDS)}, or none (default: empty)",
    )
    r.add_argument(
        "--max-request-mb",
        type=float,
        metavar="MB",
        help="a request body past this many MB is not sent: its row becomes bad_input "
        "(default 20, what Vertex accepts inline)",
    )
    r.add_argument(
        "--input-limit-slack",
        type=_slack,
        metavar="X|off",
        help="a prompt estimated (~4 characters a token) past the model's input limit "
        "times X is not sent: its row becomes bad_input (default 1.25; off: let the "
        "server decide)",
    )
    f = p.add_argument_group("flow control")
    f.add_argument("--concurrency", type=positive_int, help="max requests in flight (default 64)")
    f.add_argument("--rpm", type=float, help="requests per minute, per model")
    f.add_argument("--tpm", type=float, help="tokens per minute, per model")
    f.add_argument("--input-tpm", type=float, help="input tokens per minute, per model")
    f.add_argument("--output-tpm", type=float, help="output tokens per minute, per model")
    f.add_argument(
        "--no-adapt",
        dest="adaptive",
        action="store_false",
        default=None,
        help="keep concurrency fixed instead of adapting to 429s",
    )
    f.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="HTTP attempts per row, the first included (default 6); only retryable errors",
    )
    f.add_argument("--timeout", type=float, metavar="SECONDS", help="per attempt (default 600)")
    f.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="the whole job's budget: earlier runs into OUTPUT count, and a run admits "
        "requests only while spent + in flight stays below it (exit 3 once spent)",
    )
    f.add_argument(
        "--tier",
        choices=["standard", "flex", "priority"],
        help="Vertex consumption tier to ask for (Flex: half price, queues up to 30 min, "
        "default timeout 1800 s; Priority: about 1.8x); per model: [tiers] in --config",
    )
    f.add_argument(
        "--provisioned",
        choices=["auto", "only", "never"],
        help="Provisioned Throughput: only = dedicated (429 when exceeded), never = shared "
        "(bypass it), auto (default) = Vertex decides",
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--restart",
        action="store_true",
        default=None,
        help="ignore existing OUTPUT rows and start over",
    )
    o.add_argument(
        "--retry-failed",
        action="store_true",
        default=None,
        help="on resume, send rows whose last result was an error again",
    )
    o.add_argument(
        "--ordered",
        action="store_true",
        default=None,
        help="order the final file by input position",
    )
    o.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="estimate tokens and cost, send nothing",
    )
    o.add_argument("--summary", metavar="PATH", help="also write the run summary as JSON")
    o.add_argument("--prices", metavar="FILE", help="TOML price table overriding the shipped one")
    o.add_argument(
        "--progress",
        choices=["auto", "bar", "log", "off"],
        default="auto",
        help="auto (a status line on a terminal, a line every 30 s elsewhere), bar (a drawn "
        "bar with percent), log (plain lines) or off",
    )
    o.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log lines (-vv for debug)"
    )
    _add_batch_flags(p)
    s = p.add_argument_group("scale-out (see docs/scale-out.md)")
    s.add_argument(
        "--shard",
        metavar="I/N",
        help="run shard I of N (0-based) into OUTPUT.shard-I-of-N; default from "
        "CLOUD_RUN_TASK_INDEX/COUNT or JOB_COMPLETION_INDEX; --rpm/--tpm are the whole job's",
    )
    s.add_argument(
        "--shard-count",
        type=positive_int,
        metavar="N",
        help="shards of a Kubernetes Indexed Job (env BATCHRUNNER_SHARD_COUNT)",
    )
    s.add_argument("--ray", action="store_true", help="run the shards on a Ray cluster")
    s.add_argument("--ray-address", metavar="ADDR", help="Ray cluster (default: RAY_ADDRESS/local)")
    s.add_argument("--workers", type=positive_int, metavar="N", help="Ray workers (default 4)")
    s.add_argument(
        "--shards",
        type=positive_int,
        metavar="N",
        help="shards --ray splits the input into (default: as OUTPUT has, else 4 per worker)",
    )


def _add_batch_flags(p: Any) -> None:
    b = p.add_argument_group("batch prediction (see docs/batch.md)")
    b.add_argument(
        "--via",
        choices=["online", "batch"],
        help="online (default): one request at a time; batch: Vertex batch jobs, half price",
    )
    b.add_argument("--staging", metavar="gs://BUCKET/PREFIX", help="where batch files go")
    b.add_argument(
        "--keep-staging",
        action="store_true",
        default=None,
        help="keep the staged input and prediction files once their rows are in OUTPUT",
    )
    b.add_argument("--storage-url", metavar="URL", help="a Cloud Storage endpoint (emulators)")
    b.add_argument("--batch-poll", type=float, metavar="SECONDS", help="first poll interval")
    b.add_argument(
        "--sim-batch-turnaround",
        type=float,
        metavar="SECONDS",
        help="--simulate: a batch job's time from created to ended (5)",
    )
    b.add_argument(
        "--sim-batch-line-failure-rate",
        type=float,
        metavar="F",
        help="--simulate: share of batch lines answered with a 429/500 status (0)",
    )


def _batch_options(ns: argparse.Namespace) -> dict[str, Any]:
    return {
        "via": ns.via,
        "staging": ns.staging,
        "keep_staging": ns.keep_staging,
        "storage_url": ns.storage_url,
        "batch_poll_seconds": ns.batch_poll,
    }


def _run_options(ns: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in ns.param or []:
        params[key] = value
    if ns.max_tokens is not None:
        params["max_tokens"] = ns.max_tokens
    if ns.temperature is not None:
        params["temperature"] = ns.temperature
    if ns.reasoning_effort is not None:
        params["reasoning_effort"] = ns.reasoning_effort
    fields = {
        k: v
        for k, v in (
            ("id", ns.id_field),
            ("prompt", ns.prompt_field),
            ("messages", ns.messages_field),
        )
        if v
    }
    auth: dict[str, Any] = {}
    if ns.no_auth:
        auth["mode"] = "none"
    if ns.credentials:
        auth.update(mode="adc", credentials_file=ns.credentials)
    if ns.impersonate_service_account:
        auth["impersonate_service_account"] = ns.impersonate_service_account
    if ns.quota_project:
        auth["quota_project"] = ns.quota_project
    if ns.auth_patience is not None:
        auth["patience"] = ns.auth_patience
    simulate: dict[str, Any] | None = None
    if ns.simulate:
        simulate = {
            "latency": ns.sim_latency,
            "error_rate": ns.sim_error_rate,
            "rpm_quota": ns.sim_rpm_quota,
            "tpm_quota": ns.sim_tpm_quota,
            "seed": ns.sim_seed,
            "batch_turnaround_s": ns.sim_batch_turnaround,
            "batch_line_failure_rate": ns.sim_batch_line_failure_rate,
            **shape_options(ns, prefix="--sim-"),
        }
    return {
        "input": ns.input,
        "output": ns.output,
        "models": ns.models,
        "default_model": ns.default_model,
        "project": ns.project,
        "location": ns.location,
        "endpoint_id": ns.endpoint_id,
        "api_version": ns.api_version,
        "base_url": ns.base_url,
        "simulate": simulate,
        "auth": auth or None,
        "system": ns.system,
        "stream": ns.stream,
        "params": params or None,
        "fields": fields or None,
        "concurrency": ns.concurrency,
        "rpm": ns.rpm,
        "tpm": ns.tpm,
        "input_tpm": ns.input_tpm,
        "output_tpm": ns.output_tpm,
        "adaptive": ns.adaptive,
        "max_attempts": ns.max_attempts,
        "timeout": ns.timeout,
        "max_cost": ns.max_cost,
        "tier": ns.tier,
        "provisioned": ns.provisioned,
        "fail_on": ns.fail_on,
        "restart": ns.restart,
        "retry_failed": ns.retry_failed,
        "ordered": ns.ordered,
        "dry_run": ns.dry_run,
        "summary": ns.summary,
        "prices": ns.prices,
        "shard": ns.shard,
        "shard_count": ns.shard_count,
        "max_request_mb": ns.max_request_mb,
        "input_limit_slack": ns.input_limit_slack,
        **_batch_options(ns),
    }


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("batchrunner: %(levelname)s: %(message)s"))
    root = logging.getLogger("batchrunner")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


RESUME_ADVICE = "run the same command again to resume where it stopped"


def _stop_at_once(name: str) -> None:
    """A second SIGINT/SIGTERM outside the request phase: leave now; OUTPUT is resumable."""
    sys.stderr.write(f"\nbatchrunner: {name} received again: stopped at once; {RESUME_ADVICE}\n")
    sys.stderr.flush()
    os._exit(3)


def cmd_run(ns: argparse.Namespace) -> int:
    from batchrunner.pipeline.stop_signals import StopSignals

    # From here to the last rename, SIGINT/SIGTERM stop the run cleanly (see
    # docs/operations.md): the first is remembered until the run can act on it.
    signals = StopSignals(on_second=_stop_at_once).install()
    try:
        return _cmd_run(ns, signals)
    finally:
        signals.restore()


def _cmd_run(ns: argparse.Namespace, signals: StopSignals) -> int:
    from batchrunner.config import build_config, load_job_file
    from batchrunner.stats.pricing import PriceTable

    setup_logging(ns.verbose)
    logging.getLogger(__name__).debug("starting: SIGINT/SIGTERM now stop the run cleanly")
    job = load_job_file(ns.config) if ns.config else None
    options = _run_options(ns)
    if ns.ray:
        if ns.shard is not None:
            raise ConfigError("--ray plans its own shards: drop --shard")
        options["shard"] = "0/1"  # the driver is the whole job, whatever the environment says
    config = build_config(options, job=job)
    prices = PriceTable.for_run(config.prices_path)
    if config.dry_run:
        from batchrunner.pipeline import dryrun

        print(dryrun.render(dryrun.estimate(config, prices)))
        return 0
    from batchrunner.cli.progress import ProgressDisplay, expected_requests
    from batchrunner.cli.teach import model_hints, print_hints
    from batchrunner.launch.run import run
    from batchrunner.pipeline.gctune import collect_less_often
    from batchrunner.report.render import render_summary

    print_hints(model_hints(config.models or (config.default_model,), priced=prices.prices))
    mode = ns.progress
    interactive = sys.stderr.isatty() if mode == "auto" else mode == "bar"
    display = None
    if mode != "off":
        total = expected_requests(config.input, len(config.models))
        display = ProgressDisplay(
            sys.stderr, total=total, interactive=interactive, bar=mode == "bar"
        )
    if ns.ray:
        from batchrunner.scale.ray import run_on_ray

        if display is not None:
            display.close()
        summary = run_on_ray(
            config,
            address=ns.ray_address,
            workers=ns.workers or 4,
            shards=ns.shards,
            signals=signals,
        )
    else:
        collect_less_often()  # this process exists to run the batch
        try:
            summary = run(config, prices=prices, on_progress=display, handle_signals=signals)
        finally:
            if display is not None:
                display.close()
    finished = summary.fatal is None and summary.stopped is None
    stats = summary.stats
    if not stats.total.rows and not summary.bad_rows and finished:
        print(_nothing_to_send(summary, config.output), file=sys.stderr)
        return summary.exit_status
    resumed = summary.skipped > 0 and finished and config.output.exists()
    if resumed:
        from batchrunner.report.files import read_run_stats

        stats = read_run_stats([config.output]).snapshot()  # the whole job, every run's rows
    title = f"Job summary ({config.output}, every run)" if resumed else "Run summary"
    print(render_summary(stats, title=title), file=sys.stderr)
    print(f"batchrunner: {_this_run(summary)}", file=sys.stderr)
    notes = []
    if summary.earlier_errors:
        notes.append(
            f"{summary.earlier_errors:,} rows kept their earlier error; "
            "--retry-failed sends them again"
        )
    if summary.duplicates:
        notes.append(f"{summary.duplicates:,} input rows had a duplicate id and were skipped")
    notes += [_estimate_line(e) for e in summary.estimates]
    for note in notes:
        print(f"batchrunner: {note}", file=sys.stderr)
    if config.summary_path is not None:
        from batchrunner.report.render import render

        config.summary_path.write_text(render(stats, "json"), encoding="utf-8")
    if summary.fatal:
        print(f"batchrunner: aborted: {summary.fatal}", file=sys.stderr)
    elif summary.budget_spent or (summary.stopped and "Flex" in summary.stopped):
        print(f"batchrunner: stopped: {summary.stopped}", file=sys.stderr)
    elif summary.stopped and summary.stopped.startswith("the first "):
        # Pointed at the wrong place: the stop says what to fix and how to rerun.
        print(f"batchrunner: stopped early: {summary.stopped}", file=sys.stderr)
        print_hints(model_hints(config.models or (config.default_model,), priced=prices.prices))
    elif summary.stopped:
        print(f"batchrunner: stopped early ({summary.stopped}); {RESUME_ADVICE}", file=sys.stderr)
    elif signals.first is not None:
        print(f"batchrunner: {signals.first} received after the run had finished", file=sys.stderr)
    if not finished and not ns.ray:
        left = _requests_left(config.output, config.input, len(config.models), config)
        if left is not None:
            print(
                f"batchrunner: the next run sends the {left:,} requests not yet done",
                file=sys.stderr,
            )
    # The last line says where the rows are.
    print(_where_results_are(config.output, finished=finished), file=sys.stderr)
    return summary.exit_status


def _requests_left(output: Path, input_path: Path, models: int, config: Any) -> int | None:
    """What a rerun will send, read back from OUTPUT the way the rerun reads it."""
    from batchrunner.cli.progress import expected_requests
    from batchrunner.errors import BatchRunnerError
    from batchrunner.output.resume import load_resume_state

    total = expected_requests(input_path, models)
    if total is None:
        return None
    try:
        done = load_resume_state(output).count_done(retry_failed=config.retry_failed)
    except (OSError, BatchRunnerError):
        return None
    return max(0, total - done)


def _estimate_line(e: EstimateComparison) -> str:
    """How far the dry run's estimate for this run's answers was from their cost."""
    ratio = f": {e.actual_usd / e.estimated_usd:.2f}× the estimate" if e.estimated_usd else ""
    return (
        f"{e.model}: {e.requests:,} answers cost ${e.actual_usd:,.4f}; the dry run's "
        f"estimate for them was ${e.estimated_usd:,.4f}, from {e.basis}{ratio}"
    )


def _nothing_to_send(summary: RunSummary, output: Path) -> str:
    """One line for a rerun of a finished job."""
    done = f"all {summary.skipped:,} requests were already done in {output}"
    if summary.earlier_errors:
        done += f" ({summary.earlier_errors:,} of them errors; --retry-failed sends them again)"
    return f"batchrunner: nothing to send: {done}"


def _this_run(summary: RunSummary) -> str:
    """This run's own part: what it sent, how it ended, how long it took."""
    sent = summary.sent
    rate = sent / summary.wall_s if summary.wall_s > 0 else 0.0
    part = f"this run: {sent:,} requests sent in {summary.wall_s:,.1f} s ({rate:,.1f} req/s)"
    if summary.skipped:
        part += f", {summary.skipped:,} already done in earlier runs"
    if summary.bad_rows:
        part += f", {summary.bad_rows:,} unusable input rows"
    return part


def _where_results_are(output: Path, *, finished: bool) -> str:
    """Where to look: a Parquet run that stopped early keeps its new rows in parts."""
    from batchrunner.output.ondisk import parts_dir

    parts = parts_dir(output)
    if finished or not parts.is_dir():
        return f"batchrunner: results in {output}"
    earlier = f"{output} and " if output.exists() else ""
    merge = f"the next run merges them into {output}"
    return f"batchrunner: results so far in {earlier}{parts}; {merge}"
