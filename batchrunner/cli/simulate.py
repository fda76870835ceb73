"""The ``simulate`` subcommand: flags → ``SimulatorConfig`` → serve until interrupted."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from batchrunner.cli.teach import epilog
from batchrunner.errors import ConfigError

__all__ = ["add_simulate", "cmd_simulate"]


def add_simulate(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="serve the Vertex simulator until interrupted",
        description="Serve a local stand-in for Vertex AI (URLs, auth, quotas, streaming, "
        "faults) and print its base URL.",
        epilog=epilog(
            "batchrunner simulate --port 8080 --no-auth",
            "batchrunner simulate --credentials-out /tmp/sa.json --rpm-quota 600",
            "batchrunner simulate --latency realistic --fault 503=0.05 --request-log log.jsonl",
            codes="exit status: 0 stopped by Ctrl-C · 2 bad flags",
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (8080; 0: any)")
    p.add_argument(
        "--credentials-out",
        metavar="PATH",
        help="write a service-account key file whose token_uri is this simulator",
    )
    p.add_argument(
        "--token-ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="lifetime of issued access tokens (3600)",
    )
    p.add_argument(
        "--static-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a bearer token that is always accepted",
    )
    p.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    p.add_argument("--rpm-quota", type=int, metavar="N", help="requests per minute per model")
    p.add_argument("--tpm-quota", type=int, metavar="N", help="tokens per minute per model")
    p.add_argument(
        "--dsq-capacity",
        type=int,
        metavar="N",
        help="Gemini shared pool: in-flight requests before 429s start",
    )
    p.add_argument(
        "--error-rate", type=float, default=0.0, metavar="F", help="share of 5xx answers (0)"
    )
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
    p.add_argument("--seed", type=int, default=0, help="random seed of every choice (0)")
    p.add_argument(
        "--latency",
        choices=["zero", "fast", "realistic"],
        default="realistic",
        help="timing model: realistic (default, with 429s, blocks and rare faults), fast, zero",
    )
    p.add_argument(
        "--request-log",
        metavar="PATH",
        help="one JSON line per request served (server-side ground truth)",
    )


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
    )

    def ready(sim: Any) -> None:
        print(f"simulator serving {sim.root_url}", flush=True)
        print(f"OpenAI base URL: {sim.base_url()}", flush=True)
        if ns.credentials_out:
            print(f"service-account key: {ns.credentials_out}", flush=True)

    collect_less_often()  # this process exists to serve
    serve(config, credentials_out=ns.credentials_out, ready=ready)
    return 0
