"""batchrunner against what its users would otherwise write, on the same workload and server.

Every tool runs in a fresh process (``peers.py``) that times only its own run; the server
runs in another. A tool's figures are reported only if its output has exactly one ``ok``
row per input id. Workloads:

- overhead: N rows Parquet → chat completions → Parquet, against nginx returning a canned
  answer (the client is the bottleneck) and against the simulator at zero latency;
- in-flight: the simulator answering after a fixed delay, 1,000 and 5,000 requests in
  flight, wall time against the ideal N × latency / concurrency;
- memory: batchrunner's peak RSS at growing input sizes, ``--dry-run``, a real run against a
  server, and the pipeline over an in-process canned transport at 100k, 1M and 10M rows
  (``--canned-sizes``; no server, so 10M rows take tens of minutes rather than hours).

    python benchmarks/compare.py [--quick] [--n N] [--concurrency C]
        [--workloads overhead,inflight,memory] [--servers nginx,sim] [--tools a,b] [--no-install]
        [--repeat R] [--tls [--tls-inflight 100,1000,5000] [--tls-n N]]
        [--keepalive-requests K]

With ``--repeat R`` every overhead tool runs R times, round-robin, and the table shows the
median run and the range of CPU per request.

With ``--tls`` the benchmark makes a self-signed P-256 certificate (``openssl``), nginx
terminates TLS with it, and every tool trusts it through ``SSL_CERT_FILE``, its one CA.
The overhead workload then runs over HTTPS (the simulator behind nginx); the in-flight
workload runs at ``--tls-inflight`` counts through one nginx in front of the simulator,
with a plain and a TLS listener, so that each tool is measured over HTTP/1.1 and HTTPS in
the same rounds: CPU per request, and the window (the time until as many answers as
requests in flight have come back: every connection opened and used once).
``--keepalive-requests K`` makes nginx close every connection after K requests, so that
clients reconnect, which is where TLS session resumption (``aiohttp-resume``) can pay.

On a fresh machine it installs what it needs unless told ``--no-install``: the peers in
``benchmarks/requirements.txt`` into this interpreter's environment, nginx from apt when
running as root, and Bespoke Curator into a virtualenv of its own.

Results: ``benchmarks/results/compare.json`` and ``compare.md``; the tables are printed too.
Exit status 0, 1 if batchrunner itself failed, 4 if only nginx was asked for and is unavailable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    REPO,
    Certificate,
    Nginx,
    PeerUnavailable,
    ServerUnavailable,
    child_env,
    curator_python,
    ensure_peers,
    last_line,
    machine,
    make_certificate,
    make_input,
    run_nginx,
    run_simulator,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PEERS = HERE / "peers.py"
FLOOR = "aiohttp"
TOOLS = (
    "batchrunner",
    "aiohttp",
    "aiohttp-stdloop",
    "aiohttp-gc",
    "aiohttp-resume",
    "httpx-aiohttp",
    "httpx",
    "httpx-h2",
    "openai",
    "cookbook",
    "litellm",
    "curator",
)
QUICK_TOOLS = ("batchrunner", "aiohttp", "openai")
# Peers that differ from their plain sibling only over TLS: measured only there.
TLS_ONLY = ("aiohttp-resume", "httpx-h2")
DESCRIPTIONS = {
    "batchrunner": "batchrunner CLI (`run … --no-adapt --progress off`): the full pipeline",
    "batchrunner-dry-run": "batchrunner CLI `run --dry-run`",
    "batchrunner-canned": "batchrunner's Runner over an httpx.MockTransport returning the "
    "canned answer (no sockets)",
    "aiohttp": "bare asyncio + semaphore over aiohttp (the floor)",
    "aiohttp-stdloop": "the same on the stdlib event loop instead of uvloop",
    "aiohttp-gc": "the same with the garbage-collector thresholds batchrunner's CLI sets",
    "aiohttp-resume": "the same, each new TLS connection offered the session of the one "
    "before (`peers.ResumingContext`)",
    "httpx-h2": "asyncio + semaphore over httpx.AsyncClient(http2=True) (h2, pure Python)",
    "httpx-aiohttp": "asyncio + semaphore over httpx.AsyncClient with AiohttpTransport",
    "httpx": "asyncio + semaphore over httpx.AsyncClient, default transport",
    "openai": "openai AsyncOpenAI + asyncio.Semaphore, SDK defaults",
    "cookbook": "OpenAI cookbook parallel processor (aiohttp, token buckets, 1 ms loop)",
    "litellm": "litellm.acompletion + asyncio.Semaphore (model openai/…, api_base)",
    "curator": "Bespoke Curator online mode (`curator.LLM`, OpenAI backend, `base_url`, "
    "`max_concurrent_requests`), in its own virtualenv; it sends one extra probe request",
}


@dataclass(slots=True)
class Measurement:
    workload: str
    server: str
    tool: str
    n: int
    concurrency: int
    wall_s: float | None = None
    cpu_s: float | None = None
    user_s: float | None = None
    sys_s: float | None = None
    maxrss_mb: float | None = None
    throttled: int | None = None
    ideal_s: float | None = None
    latency_s: float | None = None
    scheme: str = "http"
    first_answer_s: float | None = None
    window_s: float | None = None
    valid: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float | None:
        return self.n / self.wall_s if self.valid and self.wall_s else None

    @property
    def cpu_per_1k(self) -> float | None:
        return self.cpu_s * 1000 / self.n if self.valid and self.cpu_s is not None else None


def check_output(path: Path, n: int) -> str | None:
    """None when the output has exactly one ok row per input id; else what is wrong."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.exists():
        return "no output file"
    table = pq.read_table(path, columns=["id", "status"])
    if table.num_rows != n:
        return f"{table.num_rows:,} rows for {n:,} inputs"
    ids = set(table.column("id").to_pylist())
    expected = {f"row-{i:08d}" for i in range(n)}
    if ids != expected:
        return f"ids differ from the input ({len(ids ^ expected):,} mismatched)"
    ok = pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0
    if ok != n:
        return f"{n - ok:,} rows not ok"
    return None


def tool_env(plan: Plan) -> dict[str, str]:
    """The child's environment; with TLS, the benchmark's certificate is its one CA."""
    env = child_env()
    if plan.certificate is not None:
        env["SSL_CERT_FILE"] = str(plan.certificate.cert)
    return env


def run_tool(
    m: Measurement,
    source: Path,
    url: str,
    plan: Plan,
    workdir: Path,
    nginx: Nginx | None = None,
) -> Measurement:
    """One run of one tool; with ``nginx``, the TLS handshakes it made are counted too."""
    before = nginx.handshakes() if nginx is not None else (0, 0)
    m = _run_tool(m, source, url, plan, workdir)
    if nginx is not None and m.scheme == "https":
        after = nginx.handshakes()
        m.extra["connections"] = after[0] - before[0]
        m.extra["resumed"] = after[1] - before[1]
    return m


def _run_tool(m: Measurement, source: Path, url: str, plan: Plan, workdir: Path) -> Measurement:
    out = workdir / f"{m.workload}-{m.server}-{m.tool}-{m.n}.parquet"
    out.unlink(missing_ok=True)
    python = plan.curator_python if m.tool == "curator" else None
    argv = [str(python or sys.executable), str(PEERS), m.tool]
    argv += ["--input", str(source), "--output", str(out)]
    argv += ["--url", url, "--concurrency", str(m.concurrency)]
    argv += ["--max-tokens", str(plan.max_tokens)]
    label = f"{m.workload}/{m.server} {m.scheme} {m.tool} n={m.n:,} c={m.concurrency:,}"
    timeout = max(plan.timeout_s, m.n / 1_000)  # 10M rows are allowed their hours
    print(f"… {label}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            argv, cwd=REPO, env=tool_env(plan), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        m.note = f"did not finish within {timeout:g} s"
        return m
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        m.note = f"exit {done.returncode}: {last_line(done.stderr)[:160]}"
        return m
    figures = json.loads(line[len("BENCH ") :])
    for key in ("wall_s", "cpu_s", "user_s", "sys_s", "maxrss_mb", "throttled"):
        setattr(m, key, figures[key])
    m.first_answer_s, m.window_s = figures.get("first_answer_s"), figures.get("window_s")
    if m.tool.endswith("dry-run"):
        m.valid = figures["exit_status"] == 0
        m.note = "" if m.valid else f"exit {figures['exit_status']}"
        return m
    problem = check_output(out, m.n)
    m.valid = problem is None
    m.note = problem or ""
    out.unlink(missing_ok=True)
    print(
        f"  {m.n / m.wall_s if m.wall_s else 0:,.0f} req/s, "
        f"{(m.cpu_s or 0) * 1000 / m.n:.2f} CPU s/1k, {m.maxrss_mb:.0f} MB {m.note}",
        file=sys.stderr,
        flush=True,
    )
    return m


# -- formatting -----------------------------------------------------------------------------


def _f(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| "
        + " | ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        + " |"
        for r in rows
    ]
    return "\n".join([line, rule, *body])


def _cpu_range(m: Measurement) -> str:
    runs = m.extra.get("runs") or []
    if len(runs) < 2:
        return "—"
    per_1k = [r["cpu_s"] * 1000 / m.n for r in runs]
    return f"{min(per_1k):.3f}–{max(per_1k):.3f}"


def overhead_table(ms: list[Measurement]) -> str:
    base = next((m for m in ms if m.tool == "batchrunner" and m.valid), None)
    floor = next((m for m in ms if m.tool == FLOOR and m.valid), None)
    header = [
        "tool",
        "req/s",
        "wall s",
        "req/s vs floor",
        "CPU s/1k req",
        "CPU range",
        "CPU vs floor",
        "peak RSS MB",
        "429s",
        "req/s vs batchrunner",
        "CPU vs batchrunner",
        "outputs",
    ]
    rows = []
    for m in ms:
        if not m.valid:
            rows.append([m.tool, *("—" for _ in header[1:-1]), m.note or "invalid"])
            continue
        rows.append(
            [
                m.tool,
                _f(m.rps, ",.0f"),
                _f(m.wall_s, ".2f"),
                _ratio(m.rps, floor.rps if floor else None),
                _f(m.cpu_per_1k, ".3f"),
                _cpu_range(m),
                _ratio(m.cpu_per_1k, floor.cpu_per_1k if floor else None),
                _f(m.maxrss_mb, ".0f"),
                str(m.throttled),
                _ratio(m.rps, base.rps if base else None),
                _ratio(m.cpu_per_1k, base.cpu_per_1k if base else None),
                "ok",
            ]
        )
    return table(header, rows) + _rounds_against_floor(base, floor)


def _rounds_against_floor(base: Measurement | None, floor: Measurement | None) -> str:
    """batchrunner against the floor round by round: each pair ran back to back."""
    if base is None or floor is None:
        return ""
    ours, theirs = base.extra.get("runs") or [], floor.extra.get("runs") or []
    if len(ours) < 2 or len(ours) != len(theirs):
        return ""
    cpu = [a["cpu_s"] / b["cpu_s"] for a, b in zip(ours, theirs, strict=True)]
    rps = [b["wall_s"] / a["wall_s"] for a, b in zip(ours, theirs, strict=True)]

    def listed(values: list[float]) -> str:
        each = ", ".join(f"{v:.2f}" for v in values)
        return f"{each} (median {statistics.median(values):.2f})"

    return (
        f"\n\nbatchrunner against the floor, round by round: CPU per request {listed(cpu)}×;"
        f" req/s {listed(rps)}×."
    )


def inflight_table(ms: list[Measurement]) -> str:
    header = [
        "tool",
        "in flight",
        "N",
        "latency s",
        "ideal s",
        "wall s",
        "wall / ideal",
        "req/s",
        "CPU s/1k req",
        "peak RSS MB",
        "429s",
        "outputs",
    ]
    rows = []
    for m in ms:
        rows.append(
            [
                m.tool,
                f"{m.concurrency:,}",
                f"{m.n:,}",
                _f(m.latency_s, ".2f"),
                _f(m.ideal_s, ".2f"),
                _f(m.wall_s if m.valid else None, ".2f"),
                _ratio(m.wall_s, m.ideal_s) if m.valid else "—",
                _f(m.rps, ",.0f"),
                _f(m.cpu_per_1k, ".3f"),
                _f(m.maxrss_mb if m.valid else None, ".0f"),
                str(m.throttled) if m.valid else "—",
                "ok" if m.valid else m.note or "invalid",
            ]
        )
    return table(header, rows)


def _cpu_cell(m: Measurement | None) -> str:
    """Median CPU s / 1k requests and the range of the rounds."""
    if m is None or not m.valid:
        return "—" if m is None else (m.note or "invalid")
    spread = _cpu_range(m)
    return _f(m.cpu_per_1k, ".3f") + ("" if spread == "—" else f" ({spread})")


def _seconds(value: float | None) -> str:
    return _f(value, ".2f")


def tls_table(ms: list[Measurement]) -> str:
    """One row per in-flight count and tool: http beside https, and both against the loop."""
    cell = {(m.concurrency, m.scheme, m.tool): m for m in ms}
    header = [
        "in flight",
        "N",
        "tool",
        "CPU s/1k http",
        "CPU s/1k https",
        "https / http",
        "vs loop http",
        "vs loop https",
        "window s http",
        "window s https",
        "wall / ideal https",
        "TLS conns (resumed)",
    ]
    rows = []
    for concurrency in sorted({m.concurrency for m in ms}):
        for tool in dict.fromkeys(m.tool for m in ms if m.concurrency == concurrency):
            http, https = (
                cell.get((concurrency, "http", tool)),
                cell.get((concurrency, "https", tool)),
            )
            loop_http = cell.get((concurrency, "http", FLOOR))
            loop_https = cell.get((concurrency, "https", FLOOR))
            shown = https or http
            assert shown is not None
            rows.append(
                [
                    f"{concurrency:,}",
                    f"{shown.n:,}",
                    tool,
                    _cpu_cell(http),
                    _cpu_cell(https),
                    _ratio(_cpu(https), _cpu(http)),
                    _ratio(_cpu(http), _cpu(loop_http)),
                    _ratio(_cpu(https), _cpu(loop_https)),
                    _seconds(http.window_s if http and http.valid else None),
                    _seconds(https.window_s if https and https.valid else None),
                    _ratio(https.wall_s, https.ideal_s) if https and https.valid else "—",
                    _handshakes(https),
                ]
            )
    return table(header, rows)


def _cpu(m: Measurement | None) -> float | None:
    return m.cpu_per_1k if m is not None else None


def _handshakes(m: Measurement | None) -> str:
    if m is None or "connections" not in m.extra:
        return "—"
    return f"{m.extra['connections']:,.0f} ({m.extra['resumed']:,.0f})"


def _connections_line(ms: list[Measurement]) -> str:
    """The TLS connections each tool opened (and how many resumed), median of its rounds."""
    counted = [m for m in ms if "connections" in m.extra]
    if not counted:
        return ""
    each = "; ".join(f"{m.tool} {_handshakes(m)}" for m in counted)
    return f"\n\nTLS connections accepted by nginx per run (resumed): {each}."


def memory_table(ms: list[Measurement]) -> str:
    header = ["mode", "server", "input rows", "wall s", "CPU s/1k rows", "peak RSS MB", "outputs"]
    rows = []
    for m in ms:
        rows.append(
            [
                m.tool,
                m.server,
                f"{m.n:,}",
                _f(m.wall_s if m.valid else None, ".2f"),
                _f(m.cpu_per_1k, ".3f"),
                _f(m.maxrss_mb if m.valid else None, ".0f"),
                "ok" if m.valid else m.note or "invalid",
            ]
        )
    return table(header, rows)


# -- workloads ------------------------------------------------------------------------------


@dataclass(slots=True)
class Plan:
    n: int
    sim_n: int
    concurrency: int
    max_tokens: int
    tools: tuple[str, ...]
    servers: tuple[str, ...]
    workloads: tuple[str, ...]
    inflight: tuple[int, ...]
    inflight_latency_s: float
    inflight_waves: int
    dry_sizes: tuple[int, ...]
    run_sizes: tuple[int, ...]
    canned_sizes: tuple[int, ...]
    install: bool
    timeout_s: float
    repeat: int = 1
    curator_python: Path | None = None
    tls: bool = False
    tls_inflight: tuple[int, ...] = ()
    tls_n: int = 0
    keepalive_requests: int | None = None
    certificate: Certificate | None = None


def build_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    tools = tuple(args.tools.split(",")) if args.tools else (QUICK_TOOLS if quick else TOOLS)
    unknown = set(tools) - set(TOOLS)
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}; known: {', '.join(TOOLS)}")
    if "batchrunner" not in tools:
        tools = ("batchrunner", *tools)
    n = args.n or (500 if quick else 20_000)
    return Plan(
        n=n,
        sim_n=args.sim_n or (n if quick else 5_000),
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        tools=tools,
        servers=tuple(args.servers.split(",")),
        workloads=tuple(args.workloads.split(",")),
        inflight=(200,) if quick else (1_000, 5_000),
        inflight_latency_s=0.5 if quick else args.latency,
        inflight_waves=2 if quick else 3,
        dry_sizes=(10_000, 50_000) if quick else (10_000, 100_000, 1_000_000),
        run_sizes=(500, 1_500) if quick else (10_000, 100_000, args.memory_n),
        canned_sizes=(2_000,)
        if quick
        else tuple(int(x) for x in args.canned_sizes.split(",") if x),
        install=not args.no_install,
        timeout_s=args.tool_timeout,
        repeat=max(1, args.repeat),
        tls=args.tls,
        tls_inflight=(200,) if quick else tuple(int(x) for x in args.tls_inflight.split(",") if x),
        tls_n=500 if quick else args.tls_n,
        keepalive_requests=args.keepalive_requests,
    )


@contextlib.contextmanager
def serve(server: str, plan: Plan) -> Iterator[tuple[str, Nginx | None]]:
    """nginx with its canned answer, or the simulator at zero latency: the base URL, and nginx.

    With ``--tls`` nginx listens with TLS (HTTP/2 offered when a peer speaks it), and the
    simulator is reached through nginx terminating TLS in front of it.
    """
    if server != "nginx" and not plan.tls and plan.keepalive_requests is None:
        with run_simulator() as url:
            yield url, None
        return
    with contextlib.ExitStack() as stack:
        upstream = None if server == "nginx" else stack.enter_context(run_simulator())
        nginx = stack.enter_context(
            run_nginx(
                install=plan.install,
                tls=(plan.tls,),
                cert=plan.certificate,
                upstream=upstream,
                keepalive_requests=plan.keepalive_requests,
                http2="httpx-h2" in plan.tools,
            )
        )
        yield nginx.url, nginx


def overhead(plan: Plan, workdir: Path, notes: list[str]) -> dict[str, list[Measurement]]:
    out: dict[str, list[Measurement]] = {}
    for server in plan.servers:
        n = plan.n if server == "nginx" else plan.sim_n
        source = make_input(workdir / f"in-{n}.parquet", n)
        try:
            with serve(server, plan) as (url, nginx):
                tools = [t for t in plan.tools if plan.tls or t not in TLS_ONLY]
                runs: dict[str, list[Measurement]] = {tool: [] for tool in tools}
                # Round-robin, so that a slow minute on a shared machine hits every tool.
                for _ in range(plan.repeat):
                    for tool in tools:
                        m = Measurement("overhead", server, tool, n, plan.concurrency)
                        m.scheme = "https" if plan.tls else "http"
                        runs[tool].append(run_tool(m, source, url, plan, workdir, nginx))
                out[server] = [median_of(ms) for ms in runs.values()]
        except ServerUnavailable as exc:
            notes.append(f"overhead against {server} skipped: {exc}")
            print(f"! {notes[-1]}", file=sys.stderr)
    return out


def median_of(runs: list[Measurement]) -> Measurement:
    """One tool's repeated runs as one measurement: the median wall and CPU, the peak RSS."""
    if len(runs) == 1 or not all(m.valid for m in runs):
        return next((m for m in runs if not m.valid), runs[0])
    first = runs[0]
    m = Measurement(first.workload, first.server, first.tool, first.n, first.concurrency)
    m.scheme, m.latency_s, m.ideal_s = first.scheme, first.latency_s, first.ideal_s
    m.first_answer_s = _median_or_none([r.first_answer_s for r in runs])
    m.window_s = _median_or_none([r.window_s for r in runs])
    for key in ("connections", "resumed"):
        if key in first.extra:
            m.extra[key] = statistics.median(r.extra.get(key, 0) for r in runs)
    m.wall_s = statistics.median(r.wall_s or 0.0 for r in runs)
    m.cpu_s = statistics.median(r.cpu_s or 0.0 for r in runs)
    m.user_s = statistics.median(r.user_s or 0.0 for r in runs)
    m.sys_s = statistics.median(r.sys_s or 0.0 for r in runs)
    m.maxrss_mb = max(r.maxrss_mb or 0.0 for r in runs)
    m.throttled = max(r.throttled or 0 for r in runs)
    m.valid = True
    m.extra["runs"] = [{"wall_s": r.wall_s, "cpu_s": r.cpu_s, "window_s": r.window_s} for r in runs]
    return m


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def inflight(plan: Plan, workdir: Path) -> list[Measurement]:
    ms: list[Measurement] = []
    latency = plan.inflight_latency_s
    with run_simulator(ttft_s=latency) as url:
        for concurrency in plan.inflight:
            n = plan.inflight_waves * concurrency
            source = make_input(workdir / f"in-{n}.parquet", n)
            for tool in ("batchrunner", FLOOR):
                m = Measurement("inflight", "simulator", tool, n, concurrency)
                m.latency_s = latency
                m.ideal_s = n * latency / concurrency
                ms.append(run_tool(m, source, url, plan, workdir))
    return ms


def tls_inflight(plan: Plan, workdir: Path) -> list[Measurement]:
    """In flight × {http, https} × tools, through one nginx in front of the simulator.

    Both schemes go through the same nginx (a plain and a TLS listener, keep-alive to the
    simulator), so that TLS is the only difference. Round-robin over schemes and tools,
    ``--repeat`` rounds; each cell is the median of its rounds.
    """
    assert plan.certificate is not None
    latency = plan.inflight_latency_s
    http2 = "httpx-h2" in plan.tools
    ms: list[Measurement] = []
    with (
        run_simulator(ttft_s=latency) as upstream,
        run_nginx(
            install=plan.install,
            tls=(False, True),
            cert=plan.certificate,
            upstream=upstream,
            keepalive_requests=plan.keepalive_requests,
            http2=http2,
        ) as nginx,
    ):
        urls = dict(zip(("http", "https"), nginx.urls, strict=True))
        for concurrency in plan.tls_inflight:
            n = max(plan.inflight_waves * concurrency, plan.tls_n)
            source = make_input(workdir / f"in-{n}.parquet", n)
            cells = [
                (scheme, tool)
                for scheme in urls
                for tool in plan.tools
                if scheme == "https" or tool not in TLS_ONLY
            ]
            runs: dict[tuple[str, str], list[Measurement]] = {cell: [] for cell in cells}
            for _ in range(plan.repeat):
                for scheme, tool in cells:
                    m = Measurement("inflight-tls", "nginx+simulator", tool, n, concurrency)
                    m.scheme, m.latency_s = scheme, latency
                    m.ideal_s = n * latency / concurrency
                    runs[scheme, tool].append(
                        run_tool(m, source, urls[scheme], plan, workdir, nginx)
                    )
            ms += [median_of(rs) for rs in runs.values()]
    return ms


def memory(plan: Plan, workdir: Path, notes: list[str]) -> list[Measurement]:
    ms: list[Measurement] = []
    for n in plan.dry_sizes:
        source = make_input(workdir / f"in-{n}.parquet", n)
        m = Measurement("memory", "none", "batchrunner-dry-run", n, plan.concurrency)
        ms.append(run_tool(m, source, "http://127.0.0.1:9", plan, workdir))
    for n in plan.canned_sizes:
        source = make_input(workdir / f"in-{n}.parquet", n)
        m = Measurement("memory", "canned", "batchrunner-canned", n, plan.concurrency)
        ms.append(run_tool(m, source, "http://canned.invalid/v1", plan, workdir))
        source.unlink()
    if not {"nginx", "sim"} & set(plan.servers):
        return ms
    server = "nginx" if "nginx" in plan.servers else "simulator"
    try:
        with serve(server, plan) as (url, _):
            for n in plan.run_sizes:
                source = make_input(workdir / f"in-{n}.parquet", n)
                m = Measurement("memory", server, "batchrunner", n, plan.concurrency)
                ms.append(run_tool(m, source, url, plan, workdir))
    except ServerUnavailable as exc:
        notes.append(f"memory runs against {server} skipped: {exc}")
    return ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, ~20 s")
    parser.add_argument("--n", type=int, help="overhead rows against nginx (default 20,000)")
    parser.add_argument("--sim-n", type=int, help="overhead rows against the simulator (5,000)")
    parser.add_argument("--concurrency", type=int, default=100, help="overhead in flight (100)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--latency", type=float, default=2.0, help="in-flight workload delay")
    parser.add_argument("--memory-n", type=int, default=200_000, help="largest real-run size")
    parser.add_argument(
        "--canned-sizes",
        default="100000,1000000,10000000",
        help="memory workload: rows for the in-process canned transport runs",
    )
    parser.add_argument("--workloads", default="overhead,inflight,memory")
    parser.add_argument("--servers", default="nginx,sim", help="for the overhead workload")
    parser.add_argument(
        "--repeat", type=int, default=1, help="overhead runs per tool, medians reported (1)"
    )
    parser.add_argument("--tools", help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="HTTPS: nginx terminates TLS with a fresh self-signed certificate the tools trust "
        "through SSL_CERT_FILE; the in-flight workload then compares http with https",
    )
    parser.add_argument(
        "--tls-inflight",
        default="100,1000,5000",
        help="with --tls: the in-flight counts of the in-flight workload (100,1000,5000)",
    )
    parser.add_argument(
        "--tls-n",
        type=int,
        default=3_000,
        help="with --tls: at least this many requests per in-flight run (3,000)",
    )
    parser.add_argument(
        "--keepalive-requests",
        type=int,
        metavar="K",
        help="nginx closes each connection after K requests, so clients reconnect",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="install nothing (the peers, nginx, Curator's virtualenv)",
    )
    parser.add_argument("--tool-timeout", type=float, default=600.0, metavar="SECONDS")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write results")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the servers' cleanup runs and no nginx is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = build_plan(args)
    began = time.monotonic()
    notes: list[str] = []
    try:
        ensure_peers(plan.tools, install=plan.install)
    except PeerUnavailable as exc:
        notes.append(f"peers not installed, their runs will fail: {exc}")
        print(f"! {notes[-1]}", file=sys.stderr)
    if "curator" in plan.tools:
        try:
            plan.curator_python = curator_python(install=plan.install)
        except PeerUnavailable as exc:
            notes.append(f"curator skipped: {exc}")
            plan.tools = tuple(t for t in plan.tools if t != "curator")
    sections: list[tuple[str, str, list[Measurement]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        workdir = Path(tmp)
        if plan.tls:
            plan.certificate = make_certificate(workdir)
        scheme = "HTTPS" if plan.tls else "HTTP/1.1"
        if plan.keepalive_requests:
            scheme += f", nginx closing connections every {plan.keepalive_requests:,} requests"
        if "overhead" in plan.workloads:
            for server, ms in overhead(plan, workdir, notes).items():
                n = ms[0].n
                against = (
                    "nginx (canned answer)" if server == "nginx" else "the simulator, zero latency"
                )
                title = (
                    f"Overhead: {n:,} rows Parquet → Parquet against {against}, "
                    f"{plan.concurrency} in flight, {scheme}"
                )
                sections.append((title, overhead_table(ms) + _connections_line(ms), ms))
        if "inflight" in plan.workloads and plan.tls:
            ms = tls_inflight(plan, workdir)
            title = (
                f"In flight over HTTP/1.1 and HTTPS: nginx in front of the simulator answering "
                f"after {plan.inflight_latency_s:g} s, N = max({plan.inflight_waves} × in "
                f"flight, {plan.tls_n:,}), {scheme}, median (range) of {plan.repeat} rounds"
            )
            sections.append((title, tls_table(ms), ms))
        elif "inflight" in plan.workloads:
            ms = inflight(plan, workdir)
            title = (
                f"In-flight scale: simulator answering after {plan.inflight_latency_s:g} s, "
                f"N = {plan.inflight_waves} × in-flight"
            )
            sections.append((title, inflight_table(ms), ms))
        if "memory" in plan.workloads:
            ms = memory(plan, workdir, notes)
            sections.append(("Memory: batchrunner peak RSS by input size", memory_table(ms), ms))
    elapsed = time.monotonic() - began
    info = machine()
    command = "python benchmarks/compare.py " + shlex.join(sys.argv[1:])
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        "# batchrunner vs peers",
        "",
        f"- command: `{command.strip()}`",
        f"- date: {date}; total time {elapsed:.0f} s",
        f"- machine: {info['cpu']}, {info['nproc']} CPUs, Python {info['python']}, {info['os']}",
        f"- request: one user message, `max_tokens` {plan.max_tokens}; every tool runs in its "
        "own process on uvloop (except aiohttp-stdloop); CPU = user + system time of that "
        "process (and children it waited for) around the run (read, send, write), server "
        "excluded; peak RSS = its ru_maxrss.",
        "- a tool's figures are shown only if its output has one ok row per input id.",
        "",
        "Tools:",
        *(
            f"- `{t}`: {DESCRIPTIONS[t]}"
            for t in (*plan.tools, "batchrunner-dry-run", "batchrunner-canned")
            if t in DESCRIPTIONS
        ),
    ]
    if notes:
        head += ["", "Notes:", *(f"- {n}" for n in notes)]
    body = [f"\n## {title}\n\n{text}" for title, text, _ in sections]
    markdown = "\n".join(head) + "\n" + "\n".join(body) + "\n"
    print(markdown)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "compare.md").write_text(markdown, encoding="utf-8")
    payload = {
        "command": command.strip(),
        "date": date,
        "machine": info,
        "elapsed_s": elapsed,
        "notes": notes,
        "plan": asdict(plan),
        "sections": [
            {
                "title": title,
                "measurements": [
                    {**asdict(m), "req_per_s": m.rps, "cpu_s_per_1k": m.cpu_per_1k} for m in ms
                ],
            }
            for title, _, ms in sections
        ],
    }
    (args.results / "compare.json").write_text(
        json.dumps(payload, indent=2, default=str) + "\n", "utf-8"
    )
    measured = [m for _, _, ms in sections for m in ms]
    if plan.servers == ("nginx",) and not measured:
        return 4
    if any(m.tool.startswith("batchrunner") and not m.valid for m in measured):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
