"""The ``simulate`` subcommand: flags → ``SimulatorConfig`` → serve until interrupted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from batchrunner.errors import ConfigError

__all__ = ["add_simulate", "cmd_simulate"]


def add_simulate(sub: Any) -> None:
    p = sub.add_parser("simulate", help="serve the Vertex simulator until interrupted")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--credentials-out",
        metavar="PATH",
        help="write a service-account key file whose token_uri is this simulator",
    )
    p.add_argument("--token-ttl", type=float, default=3600.0, metavar="SECONDS")
    p.add_argument(
        "--static-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a bearer token that is always accepted",
    )
    p.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    p.add_argument("--rpm-quota", type=int, metavar="N")
    p.add_argument("--tpm-quota", type=int, metavar="N")
    p.add_argument(
        "--dsq-capacity",
        type=int,
        metavar="N",
        help="Gemini shared pool: in-flight requests before 429s start",
    )
    p.add_argument("--error-rate", type=float, default=0.0, metavar="F")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="500, 502, 503, 504, 429, reset, stall, truncate, no_usage, no_message",
    )
    p.add_argument(
        "--retry-delay",
        type=float,
        metavar="SECONDS",
        help="add RetryInfo.retryDelay to 429 bodies",
    )
    p.add_argument(
        "--object-errors",
        action="store_true",
        help="plain {error: ...} envelopes instead of Vertex's array form",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency", choices=["zero", "fast", "realistic"], default="realistic")
    _add_batch_flags(p)
    p.add_argument(
        "--request-log",
        metavar="PATH",
        help="one JSON line per request served (server-side ground truth)",
    )


def _add_batch_flags(p: Any) -> None:
    b = p.add_argument_group("batch prediction")
    b.add_argument(
        "--batch-turnaround",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="a batch job's time from created to ended (default 5)",
    )
    b.add_argument(
        "--batch-line-failure-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="share of batch lines answered with a 429/500 status",
    )
    b.add_argument(
        "--batch-outcome",
        choices=["succeed", "fail", "expire"],
        default="succeed",
        help="how every batch job ends (label sim-outcome overrides it per job)",
    )


def _batch_settings(ns: argparse.Namespace) -> dict[str, Any]:
    return {
        "batch_turnaround_s": ns.batch_turnaround,
        "batch_line_failure_rate": ns.batch_line_failure_rate,
        "batch_outcome": ns.batch_outcome,
    }


def cmd_simulate(ns: argparse.Namespace) -> int:
    from batchrunner.pipeline.gctune import collect_less_often
    from batchrunner.simulator import SimulatorConfig, serve

    if ns.host not in ("127.0.0.1", "localhost", "::1") and not ns.host.startswith("127."):
        print(
            f"batchrunner: warning: serving the simulator on {ns.host}, not loopback",
            file=sys.stderr,
        )
    faults: dict[str, float] = {}
    for item in ns.fault:
        kind, sep, rate = item.partition("=")
        try:
            faults[kind] = float(rate) if sep else 1.0
        except ValueError:
            raise ConfigError(f"--fault expects KIND=RATE, got {item!r}") from None
    config = SimulatorConfig(
        host=ns.host,
        port=ns.port,
        token_ttl=ns.token_ttl,
        static_tokens=tuple(ns.static_token),
        require_auth=not ns.no_auth,
        latency=ns.latency,
        seed=ns.seed,
        rpm_quota=ns.rpm_quota,
        tpm_quota=ns.tpm_quota,
        dsq_capacity=ns.dsq_capacity,
        error_rate=ns.error_rate,
        faults=faults,
        retry_delay_s=ns.retry_delay,
        array_errors=not ns.object_errors,
        request_log=ns.request_log,
        **_batch_settings(ns),
    )

    def ready(sim: Any) -> None:
        print(f"simulator serving {sim.root_url}", flush=True)
        print(f"OpenAI base URL: {sim.base_url()}", flush=True)
        if ns.credentials_out:
            print(f"service-account key: {ns.credentials_out}", flush=True)

    collect_less_often()  # this process exists to serve
    serve(config, credentials_out=ns.credentials_out, ready=ready)
    return 0
