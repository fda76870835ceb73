"""The aiohttp wire over TLS on loopback: a private CA is trusted through SSL_CERT_FILE.

The server's certificate is made fresh in the test's directory, so no system store holds
it: without SSL_CERT_FILE the wire must refuse it, at once and saying how to trust it.
aiohttp reads the default verify paths (which honour SSL_CERT_FILE) when it is imported,
so the trusted case runs the wire in a child process started with the variable set, as a
user's ``batchrunner run`` would be.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from batchrunner.endpoint.wire import AiohttpWire, HttpxWire
from batchrunner.errors import RequestError

pytestmark = pytest.mark.anyio

ANSWER = b'{"id":"x","choices":[]}'
SECRET = "Bearer secret-token-never-logged"


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1 and localhost (its own CA), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Server:
    """Answers every POST to /ok over TLS and records that it was reached."""

    def __init__(self, cert: Path) -> None:
        self.cert = cert
        self.url = ""
        self.requests = 0

    async def ok(self, request: web.Request) -> web.Response:
        self.requests += 1
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    cert, key = make_certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    state = Server(cert)
    app = web.Application()
    app.router.add_post("/ok", state.ok)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    state.url = f"https://127.0.0.1:{runner.addresses[0][1]}/ok"
    try:
        yield state
    finally:
        await runner.cleanup()


# The child's whole run: the production wire, a fetch, and the status it got.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from batchrunner.endpoint.wire import AiohttpWire

    async def main() -> None:
        wire = AiohttpWire(connections=2, connect_timeout_s=10.0, read_timeout_s=20.0)
        try:
            status, _, body = await wire.fetch(sys.argv[1], {}, b"{}")
        finally:
            await wire.aclose()
        print(status, body.decode())

    asyncio.run(main())
    """
)


async def test_a_certificate_trusted_through_ssl_cert_file_is_accepted(server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["SSL_CERT_FILE"] = str(server.cert)
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-c", CHILD, server.url], env=env, check=False
        )
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert done.stdout.decode().split(None, 1) == ["200", ANSWER.decode() + "\n"]
    assert server.requests == 1


async def test_an_untrusted_certificate_fails_at_once_saying_how_to_trust_it(
    server: Server,
) -> None:
    wire = AiohttpWire(connections=2, connect_timeout_s=10.0, read_timeout_s=20.0)
    try:
        with anyio.fail_after(10), pytest.raises(RequestError) as caught:
            await wire.fetch(server.url, {"Authorization": SECRET}, b"{}")
    finally:
        await wire.aclose()
    error = caught.value
    assert error.error_type == "connection" and error.reason == "connect"
    assert "not trusted" in error.message and "SSL_CERT_FILE" in error.message
    assert "self-signed certificate" in error.message
    assert "secret-token" not in str(error) and "secret-token" not in repr(error)
    assert error.__cause__ is None and error.__suppress_context__
    assert server.requests == 0  # the handshake failed: no request was sent


async def test_a_transport_with_its_own_ca_is_the_librarys_seam(server: Server) -> None:
    context = ssl.create_default_context(cafile=str(server.cert))
    wire = HttpxWire(httpx.AsyncHTTPTransport(verify=context))
    try:
        with anyio.fail_after(10):
            status, _, body = await wire.fetch(server.url, {}, b"{}")
    finally:
        await wire.aclose()
    assert (status, body) == (200, ANSWER)
