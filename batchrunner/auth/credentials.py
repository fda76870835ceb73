"""Finding credentials: a key file named on the command line, or Application Default
Credentials, each loaded with google-auth and described in one line that names its source.

Every failure is an ``AuthError`` whose one-line message says which source failed and how
to fix it; no file content or token ever reaches it.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Final, Protocol

import google.auth
import google.auth.exceptions

from batchrunner.errors import AuthError

logger = logging.getLogger(__name__)

NO_ADC_MESSAGE: Final = (
    "no Application Default Credentials found: run `gcloud auth application-default login` "
    "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
)


class RefreshableCredentials(Protocol):
    """The part of ``google.auth.credentials.Credentials`` this module uses."""

    @property
    def token(self) -> str | None: ...

    @property
    def expiry(self) -> datetime | None: ...

    def refresh(self, request: object) -> None: ...


def _first_line(value: object, limit: int = 200) -> str:
    text = str(value).strip().splitlines()
    return text[0][:limit] if text else ""


def load_adc(scopes: tuple[str, ...]) -> tuple[RefreshableCredentials, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            credentials, _project = google.auth.default(scopes=list(scopes))
        except google.auth.exceptions.DefaultCredentialsError as exc:
            detail = _first_line(exc.args[0]) if exc.args else ""
            if not detail or "default credentials were not found" in detail.lower():
                raise AuthError(NO_ADC_MESSAGE) from None
            if len(exc.args) > 1 and isinstance(exc.args[1], BaseException):
                detail = f"{detail} ({_first_line(exc.args[1])})"
            raise AuthError(
                f"cannot load Application Default Credentials: {detail}; fix the file "
                "GOOGLE_APPLICATION_CREDENTIALS names, or run "
                "`gcloud auth application-default login`"
            ) from None
    for warning in caught:
        logger.warning("google-auth: %s", _first_line(warning.message, 300))
    return credentials, _describe_adc(credentials)


def _describe_adc(credentials: object) -> str:
    info = getattr(credentials, "get_cred_info", lambda: None)()
    if not isinstance(info, Mapping):
        return f"Application Default Credentials ({type(credentials).__name__})"
    where = str(info.get("credential_source", "Application Default Credentials"))
    if where == "metadata server":
        return "metadata server"
    kind = str(info.get("credential_type", "credentials"))
    kind = "service-account key" if kind == "service account credentials" else kind
    principal = info.get("principal")
    where = where.replace(" file via the ", " (from ").replace(" environment variable", ")")
    return f"{kind} file {where}" + (f" ({principal})" if principal else "")


def load_credentials_file(path: str, scopes: tuple[str, ...]) -> tuple[RefreshableCredentials, str]:
    def fail(what: str, kind: str = "credentials file") -> AuthError:
        return AuthError(f"cannot read {kind} {path}: {what}")

    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(exc.strerror or type(exc).__name__) from None
    except UnicodeDecodeError:
        raise fail("not UTF-8 text; expected a JSON key file") from None
    except json.JSONDecodeError as exc:
        raise fail(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "download the key again"
        ) from None
    if not isinstance(info, dict):
        raise fail("not a JSON object; expected a service-account key file")
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account

        sa_kind = "service-account key file"
        missing = [f for f in ("client_email", "private_key", "token_uri") if not info.get(f)]
        if missing:
            raise fail(f"missing {', '.join(missing)}; download a new key", sa_kind)
        try:
            sa = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=list(scopes)
            )
        except (ValueError, TypeError) as exc:
            raise fail(
                f"private_key is not a usable PEM private key ({type(exc).__name__}); "
                "download a new key",
                sa_kind,
            ) from None
        return sa, f"{sa_kind} {path} ({sa.service_account_email})"
    if kind == "authorized_user":
        from google.oauth2 import credentials as user_credentials

        missing = [f for f in ("client_id", "client_secret", "refresh_token") if not info.get(f)]
        if missing:
            raise fail(f"missing {', '.join(missing)}; run `gcloud auth application-default login`")
        # Like google.auth.default: no scopes for user credentials, which carry their own.
        user = user_credentials.Credentials.from_authorized_user_info(info)  # type: ignore[no-untyped-call]
        return user, f"user credentials file {path}"
    if kind in {
        "external_account",
        "external_account_authorized_user",
        "impersonated_service_account",
        "gdch_service_account",
    }:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                loaded, _project = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
                    path, scopes=list(scopes)
                )
        except (google.auth.exceptions.GoogleAuthError, ValueError) as exc:
            raise fail(_first_line(exc.args[0] if exc.args else type(exc).__name__)) from None
        return loaded, f"{kind.replace('_', ' ')} credentials file {path}"
    shown = repr(kind)[:40]
    raise fail(
        f"unsupported credential type {shown}; expected a service-account key "
        '("type": "service_account")'
    )
