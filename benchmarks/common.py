"""Shared pieces of the benchmarks: the servers they run against, inputs, and the machine.

Two servers, both on loopback and both in their own process so they never share the
client's CPU accounting: nginx answering every POST with one canned Gemini-shaped chat
completion (near-zero cost per request, so the client is always the bottleneck), and the
project's simulator. ``python benchmarks/common.py simulate`` serves the simulator with a
fixed per-request latency, which its command line does not expose.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
MODEL = "google/gemini-2.5-flash"

# What nginx answers: the shape of a Gemini answer on Vertex's OpenAI-compatible endpoint.
CANNED_COMPLETION = {
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
            "message": {
                "content": "The quick brown fox jumps over the lazy dog.",
                "role": "assistant",
            },
        }
    ],
    "created": 1767225600,
    "id": "bench-canned-response-0001",
    "model": MODEL,
    "object": "chat.completion",
    "system_fingerprint": "",
    "usage": {
        "completion_tokens": 11,
        "completion_tokens_details": {"reasoning_tokens": 5},
        "extra_properties": {"google": {"traffic_type": "ON_DEMAND"}},
        "prompt_tokens": 9,
        "total_tokens": 25,
    },
}


class ServerUnavailable(RuntimeError):
    """A benchmark server could not be installed or started here."""


def child_env() -> dict[str, str]:
    """The environment for child processes: the repository importable, no proxies, no keys."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.pop("OPENAI_API_KEY", None)
    env.pop("OPENAI_BASE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(
    port: int, timeout_s: float = 15.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailable(f"server exited with status {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServerUnavailable(f"nothing listening on 127.0.0.1:{port} after {timeout_s:g} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PeerUnavailable(RuntimeError):
    """A peer could not be installed here."""


# -- the peers installed beside batchrunner -------------------------------------------------

REQUIREMENTS = REPO / "benchmarks" / "requirements.txt"
# The modules each tool imports, beyond batchrunner's own dependencies.
PEER_MODULES = {
    "batchrunner": ("httpx_aiohttp", "uvloop"),
    "aiohttp": ("aiohttp", "uvloop"),
    "aiohttp-stdloop": ("aiohttp",),
    "aiohttp-gc": ("aiohttp", "uvloop"),
    "aiohttp-resume": ("aiohttp", "uvloop"),
    "httpx": ("httpx", "uvloop"),
    "httpx-h2": ("httpx", "h2", "uvloop"),
    "httpx-aiohttp": ("httpx_aiohttp", "uvloop"),
    "openai": ("openai", "uvloop"),
    "cookbook": ("aiohttp", "uvloop"),
    "litellm": ("litellm", "uvloop"),
}


def ensure_peers(tools: tuple[str, ...], *, install: bool = True) -> None:
    """Install ``benchmarks/requirements.txt`` here when a tool's modules are missing."""
    import importlib.util

    missing = sorted(
        {m for t in tools for m in PEER_MODULES.get(t, ()) if importlib.util.find_spec(m) is None}
    )
    if not missing:
        return
    if not install:
        raise PeerUnavailable(f"not installed: {', '.join(missing)} (drop --no-install)")
    print(f"… installing {REQUIREMENTS.name} (missing {', '.join(missing)})", file=sys.stderr)
    _install(
        [sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], REQUIREMENTS.name
    )
    importlib.invalidate_caches()


def _install(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise PeerUnavailable(f"could not install {what}: {last_line(done.stderr)[:200]}")


def last_line(output: str) -> str:
    """The last line a failed command printed, which usually says why."""
    return (output.strip().splitlines() or ["no output"])[-1]


# -- Bespoke Curator -------------------------------------------------------------------------

CURATOR_REQUIREMENT = "bespokelabs-curator==0.1.31"
CURATOR_VENV = REPO / "benchmarks" / ".venv-curator"


def curator_python(*, install: bool = True) -> Path:
    """The interpreter of a virtualenv of its own that holds Bespoke Curator.

    Curator pins older aiohttp, openai and pydantic than the other peers use, so it is not
    installed beside them; its environment is made once (about two minutes) and reused.
    """
    python = CURATOR_VENV / "bin" / "python"
    found = "import importlib.util as u; assert u.find_spec('bespokelabs.curator')"
    probe = [str(python), "-c", found + " and u.find_spec('pyarrow')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    if not install:
        raise PeerUnavailable(f"no Curator environment at {CURATOR_VENV} (drop --no-install)")
    print(f"… installing {CURATOR_REQUIREMENT} into {CURATOR_VENV}", file=sys.stderr, flush=True)
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(CURATOR_VENV)],
        [str(python), "-m", "pip", "install", "-q", CURATOR_REQUIREMENT, "pyarrow"],
    )
    for step in steps:
        _install(step, CURATOR_REQUIREMENT)
    return python


# -- nginx ---------------------------------------------------------------------------------


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def ensure_nginx(*, install: bool = True) -> str:
    """The nginx binary; installs Debian's ``nginx-light`` (or ``nginx``) when root and missing."""
    found = find_nginx()
    if found:
        return found
    if not install:
        raise ServerUnavailable(
            "nginx is not installed (install nginx-light, or drop --no-install)"
        )
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ServerUnavailable("nginx is not installed and apt-get as root is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    for package in ("nginx-light", "nginx"):
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", package], env=env, check=False, capture_output=True
        )
        if done.returncode == 0 and find_nginx():
            return str(find_nginx())
    raise ServerUnavailable("apt-get could not install nginx-light or nginx")


@dataclass(frozen=True, slots=True)
class Certificate:
    """A self-signed P-256 certificate for 127.0.0.1 and localhost, and its key.

    The certificate is its own CA: a client trusts it by ``SSL_CERT_FILE=cert``.
    """

    cert: Path
    key: Path


def make_certificate(workdir: Path) -> Certificate:
    """A fresh certificate made by the ``openssl`` command line, valid for two days.

    ECDSA P-256, as Google's front ends serve, so that the handshake costs what it costs
    against Vertex: one ECDHE and one ECDSA verification on the client per full handshake.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerUnavailable("the openssl command line is not installed")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    argv = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    argv += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"]
    argv += ["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServerUnavailable(f"openssl could not make a certificate: {last_line(done.stderr)}")
    return Certificate(cert, key)


@dataclass(frozen=True, slots=True)
class Listen:
    """One nginx server block: plain HTTP or TLS, answering itself or proxying upstream."""

    port: int
    tls: bool = False
    http2: bool = False


def _tls_lines(cert: Certificate) -> str:
    # A shared session cache (session IDs) and tickets (TLS 1.3 resumption), as a front end
    # that wants clients to resume would configure.
    return f"""\
    access_log handshakes.log handshake if=$first_request;
    ssl_certificate {cert.cert};
    ssl_certificate_key {cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1h;
    ssl_session_tickets on;
"""


def _server_block(listen: Listen, cert: Certificate | None, location: str) -> str:
    flags = " ssl" if listen.tls else ""
    flags += " http2" if listen.http2 else ""  # nginx before 1.25.1: a listen parameter
    tls = _tls_lines(cert) if listen.tls and cert is not None else ""
    return f"""\
  server {{
    listen 127.0.0.1:{listen.port}{flags} backlog=8192 reuseport;
{tls}    default_type application/json;
    location / {{ {location} }}
  }}
"""


def nginx_config(
    port: int,
    workdir: Path,
    body: str,
    *,
    listens: tuple[Listen, ...] = (),
    cert: Certificate | None = None,
    upstream_port: int | None = None,
    keepalive_requests: int | None = None,
) -> str:
    """One worker; the canned answer, or a keep-alive reverse proxy to ``upstream_port``.

    ``listens`` replaces the single plain listener on ``port``. ``keepalive_requests``
    makes nginx close each client connection after that many requests, so that clients
    reconnect the way they must when a front end retires old connections.
    """
    if "'" in body or "$" in body:
        raise ValueError("the canned body may contain neither ' nor $ (nginx quoting)")
    if any(listen.tls for listen in listens) and cert is None:
        raise ValueError("a TLS listener needs a certificate")
    temp = "\n".join(
        f"  {name}_temp_path {workdir / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    upstream, location = "", f"return 200 '{body}';"
    if upstream_port is not None:
        # Keep-alive to the upstream too, so that the proxy adds no connection per request.
        upstream = f"""\
  upstream backend {{
    server 127.0.0.1:{upstream_port};
    keepalive 10000;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
  }}
"""
        location = (
            "proxy_pass http://backend; proxy_http_version 1.1; "
            'proxy_set_header Connection ""; proxy_buffering off;'
        )
    servers = "".join(
        _server_block(listen, cert, location) for listen in (listens or (Listen(port),))
    )
    return f"""\
worker_processes 1;
daemon off;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
worker_rlimit_nofile 40000;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  # Every connection's first request, logged on TLS listeners: "." a full handshake, "r"
  # a resumed one, so that a run's handshakes can be counted.
  map $connection_requests $first_request {{ 1 1; default 0; }}
  log_format handshake '$ssl_session_reused';
{temp}
  keepalive_timeout 120s;
  keepalive_requests {keepalive_requests or 100_000_000};
  client_max_body_size 1m;
{upstream}{servers}}}
"""


@dataclass(frozen=True, slots=True)
class Nginx:
    """A running nginx: the base URL of each listener, in the order asked for."""

    urls: tuple[str, ...]
    handshake_log: Path

    def handshakes(self) -> tuple[int, int]:
        """Connections accepted on the TLS listeners so far, and how many of them resumed."""
        try:
            marks = self.handshake_log.read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return 0, 0
        return len(marks), marks.count("r")

    @property
    def url(self) -> str:
        return self.urls[0]


@contextlib.contextmanager
def run_nginx(
    *,
    install: bool = True,
    tls: tuple[bool, ...] = (False,),
    cert: Certificate | None = None,
    upstream: str | None = None,
    keepalive_requests: int | None = None,
    http2: bool = False,
) -> Iterator[Nginx]:
    """nginx on free loopback ports, one worker, keepalive on; one listener per ``tls`` entry.

    With ``upstream`` (a base URL on 127.0.0.1) it proxies every request there and each
    listener's URL keeps the upstream's path; otherwise it answers the canned completion
    under ``/v1``. ``http2`` lets the TLS listeners speak HTTP/2 to clients that offer it.
    """
    binary = ensure_nginx(install=install)
    body = json.dumps(CANNED_COMPLETION, separators=(",", ":"))
    listens = tuple(Listen(free_port(), tls=t, http2=http2 and t) for t in tls)
    upstream_port, path = None, "/v1"
    if upstream is not None:
        parsed = urlsplit(upstream)
        upstream_port, path = parsed.port, parsed.path
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)  # noqa: S103 (nginx workers run as an unprivileged user)
        conf = workdir / "nginx.conf"
        text = nginx_config(
            listens[0].port,
            workdir,
            body,
            listens=listens,
            cert=cert,
            upstream_port=upstream_port,
            keepalive_requests=keepalive_requests,
        )
        conf.write_text(text, encoding="utf-8")
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            try:
                for listen in listens:
                    wait_listening(listen.port, proc=proc)
            except ServerUnavailable as exc:
                _stop(proc)
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise ServerUnavailable(
                    f"nginx did not start: {exc}; {err.strip()[-300:]}"
                ) from None
            yield Nginx(
                tuple(
                    f"{'https' if listen.tls else 'http'}://127.0.0.1:{listen.port}{path}"
                    for listen in listens
                ),
                workdir / "handshakes.log",
            )
        finally:
            _stop(proc)


# -- the simulator ---------------------------------------------------------------------------


@contextlib.contextmanager
def run_simulator(*, ttft_s: float | None = None, quiet_errors: bool = True) -> Iterator[str]:
    """The project's simulator in its own process, no auth; yields its OpenAI base URL.

    Zero latency uses the real command line (``batchrunner simulate --latency zero``); a
    fixed latency goes through this module's ``simulate`` entry point.
    """
    port = free_port()
    if ttft_s is None:
        argv = [sys.executable, "-m", "batchrunner", "simulate", "--port", str(port)]
        argv += ["--latency", "zero", "--no-auth"]
    else:
        argv = [sys.executable, str(Path(__file__).resolve()), "simulate", "--port", str(port)]
        argv += ["--ttft", str(ttft_s)]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet_errors else None,
    )
    try:
        wait_listening(port, proc=proc)
        yield (
            f"http://127.0.0.1:{port}/v1/projects/sim-project/locations/global/endpoints/openapi"
        )
    finally:
        _stop(proc)


def _serve_simulator(port: int, ttft_s: float) -> None:
    from batchrunner.pipeline.gctune import collect_less_often
    from batchrunner.simulator import SimulatorConfig, serve

    collect_less_often()  # as `batchrunner simulate` does
    config = SimulatorConfig(port=port, latency="zero", ttft_s=ttft_s, require_auth=False)
    serve(config, ready=lambda sim: print(sim.base_url(), flush=True))


# -- inputs and the machine ----------------------------------------------------------------


def make_input(path: Path, n: int, *, batch: int = 10_000) -> Path:
    """A Parquet file of ``n`` rows (``id``, ``prompt``) in row groups of ``batch`` rows.

    The same row-group size at every ``n``, so that memory measured at different sizes
    differs only by the number of rows, not by how much one row group holds.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("prompt", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            ids = [f"row-{i:08d}" for i in range(start, stop)]
            prompts = [f"Summarise item {i} in one short sentence." for i in range(start, stop)]
            writer.write_table(
                pa.table({"id": ids, "prompt": prompts}, schema=schema), row_group_size=batch
            )
    return path


def machine() -> dict[str, str | int]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "nproc": os.cpu_count() or 0,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="serve a benchmark server in the foreground")
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="the simulator with a fixed time to first token")
    sim.add_argument("--port", type=int, required=True)
    sim.add_argument("--ttft", type=float, required=True, metavar="SECONDS")
    args = parser.parse_args()
    _serve_simulator(args.port, args.ttft)


if __name__ == "__main__":
    main()
