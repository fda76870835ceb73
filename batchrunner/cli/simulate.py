"""The ``simulate`` subcommand: flags → ``SimulatorConfig`` → serve until interrupted."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from batchrunner.cli.shape_flags import add_shape_flags, shape_options
from batchrunner.cli.teach import epilog
from batchrunner.errors import ConfigError

if TYPE_CHECKING:
    from batchrunner.simulator import SimulatorConfig

__all__ = ["add_simulate", "cmd_simulate", "simulator_config"]


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
    p.add_argument(
        "--rpm-quota", type=int, metavar="N", help="hard requests/min per model and location"
    )
    p.add_argument(
        "--tpm-quota", type=int, metavar="N", help="hard tokens/min per model and location"
    )
    p.add_argument(
        "--dsq-capacity",
        type=int,
        metavar="N",
        help="Gemini shared pool: in-flight requests before 429s start",
    )
    p.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="F",
        help="share of requests answered with a random 500/503",
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
    p.add_argument("--seed", type=int, default=0, help="random seed of every answer and fault")
    p.add_argument(
        "--latency",
        choices=["zero", "fast", "realistic"],
        default="realistic",
        help="latency profile; realistic also turns on real-traffic shapes at plausible rates",
    )
    _add_batch_flags(p)
    p.add_argument(
        "--request-log",
        metavar="PATH",
        help="one JSON line per request served (server-side ground truth)",
    )
    shapes = p.add_argument_group("real-traffic shapes (unset: the latency profile's default)")
    add_shape_flags(shapes, prefix="--")
    shapes.add_argument(
        "--parallel-tool-call-rate",
        type=float,
        default=0.25,
        metavar="F",
        help="share of tool-call answers with 2-3 calls",
    )
    shapes.add_argument(
        "--tool-text-rate",
        type=float,
        default=0.3,
        metavar="F",
        help="share of tool-call answers that also carry text",
    )
    shapes.add_argument(
        "--implicit-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Gemini implicit caching: cached_tokens for prompts sharing a long prefix",
    )
    shapes.add_argument(
        "--no-background-faults",
        action="store_true",
        help="under realistic latency, no rare background 499s, HTML pages or stream errors",
    )
    _add_tier_flags(p)


def _add_tier_flags(p: Any) -> None:
    """Consumption tiers: a project with Provisioned Throughput, and Flex's queueing."""
    p.add_argument(
        "--provisioned-share",
        type=float,
        default=0.0,
        metavar="F",
        help="share of Gemini requests without an X-Vertex-AI-LLM-Request-Type header that "
        "Provisioned Throughput serves (0 = the project has none)",
    )
    p.add_argument(
        "--provisioned-rps",
        type=float,
        metavar="N",
        help="Provisioned Throughput capacity in requests per second per model and location "
        "(overflow: 429 'Exceeded the Provisioned Throughput' under 'dedicated', the shared "
        "pool otherwise); unset = unlimited",
    )
    p.add_argument(
        "--flex-queue",
        type=float,
        metavar="SECONDS",
        help="how long a Flex request queues before it is served (default by --latency: 0, "
        "5-20 ms when fast, about 20 s when realistic)",
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
    from batchrunner.simulator import serve

    if ns.host not in ("127.0.0.1", "localhost", "::1") and not ns.host.startswith("127."):
        print(
            f"batchrunner: warning: serving the simulator on {ns.host}, not loopback",
            file=sys.stderr,
        )
    try:
        config = simulator_config(ns)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None

    def ready(sim: Any) -> None:
        print(f"simulator serving {sim.root_url}", flush=True)
        print(f"OpenAI base URL: {sim.base_url()}", flush=True)
        if ns.credentials_out:
            print(f"service-account key: {ns.credentials_out}", flush=True)

    collect_less_often()  # this process exists to serve
    serve(config, credentials_out=ns.credentials_out, ready=ready)
    return 0


def simulator_config(ns: argparse.Namespace) -> SimulatorConfig:
    """The simulator the ``simulate`` flags describe (``ValueError`` if they contradict)."""
    from batchrunner.simulator import SimulatorConfig

    return SimulatorConfig(
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
        retry_delay_s=ns.retry_delay,
        array_errors=not ns.object_errors,
        request_log=ns.request_log,
        parallel_tool_call_rate=ns.parallel_tool_call_rate,
        tool_text_rate=ns.tool_text_rate,
        implicit_cache=ns.implicit_cache,
        background_faults=not ns.no_background_faults,
        provisioned_share=ns.provisioned_share,
        provisioned_rps=ns.provisioned_rps,
        flex_queue_s=ns.flex_queue,
        **shape_options(ns, prefix="--"),
        **_batch_settings(ns),
    )
