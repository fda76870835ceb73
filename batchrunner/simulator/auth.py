"""Access tokens: issuing and checking them, the OAuth token endpoint for service-account
JWT grants, the GCE metadata server's token routes, and writing service-account key files.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as google_exceptions
from google.auth import jwt as google_jwt

from .envelopes import AUTH_INVALID_MESSAGE, AUTH_MISSING_MESSAGE, ApiError, error_info

logger = logging.getLogger(__name__)

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_WWW_AUTH_INVALID = 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
_WWW_AUTH_MISSING = 'Bearer realm="https://accounts.google.com/"'
# The metadata server hands out its cached token until this close to expiry.
_MDS_RENEW_BEFORE_S = 300.0


def new_access_token() -> str:
    """A bearer token that looks like Google's: ``ya29.`` and random urlsafe text."""
    return "ya29.c." + secrets.token_urlsafe(96)


class TokenStore:
    """Tokens the simulator issued, with their expiry on ``clock``; thread-safe."""

    def __init__(self, *, ttl: float, clock: Callable[[], float], static: tuple[str, ...]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._static = frozenset(static)
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._mds_token: str | None = None
        self.issued = 0

    def issue(self, ttl: float | None = None) -> tuple[str, float]:
        """A fresh token and its lifetime in seconds."""
        lifetime = self._ttl if ttl is None else ttl
        token = new_access_token()
        with self._lock:
            self._expiry[token] = self._clock() + lifetime
            self.issued += 1
        return token, lifetime

    def issued_tokens(self) -> list[str]:
        with self._lock:
            return list(self._expiry)

    def metadata_token(self) -> tuple[str, float]:
        """The metadata server's cached token and its remaining lifetime."""
        with self._lock:
            token = self._mds_token
            if token is not None:
                remaining = self._expiry[token] - self._clock()
                if remaining > min(_MDS_RENEW_BEFORE_S, self._ttl / 2):
                    return token, remaining
        token, lifetime = self.issue()
        with self._lock:
            self._mds_token = token
        return token, lifetime

    def check(self, header: str | None, method: str) -> None:
        """Raise the 401 Vertex gives for a missing, unknown or expired bearer token."""
        if not header:
            raise _unauthenticated(
                AUTH_MISSING_MESSAGE, "CREDENTIALS_MISSING", method, missing=True
            )
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated(AUTH_INVALID_MESSAGE, "ACCESS_TOKEN_TYPE_UNSUPPORTED", method)
        if token in self._static:
            return
        expiry = self._expiry.get(token)
        if expiry is None:
            raise _unauthenticated(AUTH_INVALID_MESSAGE, "ACCESS_TOKEN_TYPE_UNSUPPORTED", method)
        if self._clock() >= expiry:
            raise _unauthenticated(AUTH_INVALID_MESSAGE, "ACCESS_TOKEN_EXPIRED", method)


def _unauthenticated(message: str, reason: str, method: str, *, missing: bool = False) -> ApiError:
    return ApiError(
        401,
        "UNAUTHENTICATED",
        message,
        details=(error_info(reason, method),),
        headers={"WWW-Authenticate": _WWW_AUTH_MISSING if missing else _WWW_AUTH_INVALID},
    )


@dataclass(frozen=True, slots=True)
class ServiceAccountKey:
    """One generated key: its id, the PEMs, and the account it belongs to."""

    key_id: str
    private_pem: str
    public_pem: str
    client_email: str


class KeyRing:
    """RSA keys generated for service-account key files; verifies JWT grant assertions."""

    def __init__(self, project: str) -> None:
        self._project = project
        self._public: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def client_email(self) -> str:
        return f"batchrunner-sim@{self._project}.iam.gserviceaccount.com"

    def generate(self) -> ServiceAccountKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public_pem = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        key_id = secrets.token_hex(20)
        with self._lock:
            self._public[key_id] = public_pem
        return ServiceAccountKey(key_id, private_pem, public_pem, self.client_email)

    def verify(self, assertion: str) -> Mapping[str, object]:
        """The assertion's claims, if it is signed by one of our keys and still valid."""
        with self._lock:
            certs = dict(self._public)
        if not certs:
            raise ValueError("no service-account key has been issued by this simulator")
        try:
            claims: Mapping[str, object] = google_jwt.decode(  # type: ignore[no-untyped-call]
                assertion, certs=certs, clock_skew_in_seconds=10
            )
        except (google_exceptions.GoogleAuthError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        if claims.get("iss") != self.client_email:
            raise ValueError("unknown issuer")
        return claims

    def write_key_file(self, path: str | os.PathLike[str], token_uri: str) -> Path:
        """Write a service-account key JSON whose ``token_uri`` is this simulator."""
        key = self.generate()
        info = {
            "type": "service_account",
            "project_id": self._project,
            "private_key_id": key.key_id,
            "private_key": key.private_pem,
            "client_email": key.client_email,
            "client_id": str(int(key.key_id[:15], 16)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(info, option=orjson.OPT_INDENT_2))
        return target


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"error": error, "error_description": description}),
        content_type="application/json",
    )


def _token_json(token: str, lifetime: float) -> bytes:
    expires_in: float = int(lifetime) if lifetime >= 1 else lifetime
    return orjson.dumps({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})


async def token_endpoint(request: web.Request, store: TokenStore, keys: KeyRing) -> web.Response:
    """``POST /token``: the OAuth 2.0 token endpoint (JWT bearer and refresh-token grants)."""
    if request.method != "POST":
        return _oauth_error("invalid_request", "Method not allowed", status=405)
    form = parse_qs((await request.read()).decode("utf-8", "replace"))
    grant = form.get("grant_type", [""])[0]
    if grant == JWT_BEARER_GRANT:
        assertion = form.get("assertion", [""])[0]
        try:
            keys.verify(assertion)
        except ValueError as exc:
            logger.info("rejected a JWT grant: %s", exc)
            return _oauth_error("invalid_grant", "Invalid JWT Signature.")
    elif grant == "refresh_token":
        if not form.get("refresh_token", [""])[0]:
            return _oauth_error("invalid_request", "Missing required parameter: refresh_token")
    elif not grant:
        return _oauth_error("unsupported_grant_type", "Invalid grant_type: ")
    else:
        return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {grant}")
    token, lifetime = store.issue()
    return web.Response(body=_token_json(token, lifetime), content_type="application/json")


_MDS_HEADERS = {"Metadata-Flavor": "Google", "Server": "Metadata Server for VM"}


def _mds_text(text: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=text, content_type="application/text", headers=_MDS_HEADERS
    )


def _mds_json(payload: object) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), content_type="application/json", headers=_MDS_HEADERS
    )


async def metadata_route(
    request: web.Request, store: TokenStore, keys: KeyRing, project: str
) -> web.Response:
    """The parts of the GCE metadata server google-auth uses (ping, account info, token)."""
    if request.headers.get("Metadata-Flavor") != "Google":
        return web.Response(
            status=403,
            text="Missing Metadata-Flavor:Google header.",
            content_type="text/html",
            headers=_MDS_HEADERS,
        )
    path = request.path
    if path in ("/", ""):
        return _mds_text("computeMetadata/\n")
    sub = path.removeprefix("/computeMetadata/v1/")
    recursive = request.query.get("recursive") == "true"
    account = "instance/service-accounts/default/"
    if sub in (account, account.rstrip("/")) and recursive:
        return _mds_json(
            {"aliases": ["default"], "email": keys.client_email, "scopes": list(DEFAULT_SCOPES)}
        )
    if sub == account + "token":
        token, remaining = store.metadata_token()
        return web.Response(
            body=_token_json(token, remaining),
            content_type="application/json",
            headers=_MDS_HEADERS,
        )
    if sub == account + "email":
        return _mds_text(keys.client_email)
    if sub == account + "scopes":
        return _mds_text("\n".join(DEFAULT_SCOPES) + "\n")
    if sub == "instance/service-accounts/" or sub == "instance/service-accounts":
        return _mds_text(f"default/\n{keys.client_email}/\n")
    if sub == "project/project-id":
        return _mds_text(project)
    if sub == "project/numeric-project-id":
        return _mds_text("123456789012")
    if sub == "universe/universe-domain":
        return _mds_text("googleapis.com")
    if sub == "instance/zone":
        return _mds_text("projects/123456789012/zones/us-central1-a")
    return web.Response(
        status=404, text="Not Found", content_type="text/html", headers=_MDS_HEADERS
    )
