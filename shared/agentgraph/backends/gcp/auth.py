"""Who is calling: verified identities for the API, the retry and the sweep functions.

`caller(request)` returns the verified caller of an API request or raises AuthError (401):

- `AGENTGRAPH_AUTH=off` makes every caller the anonymous admin "local". It is refused
  (AuthMisconfigured) unless FIRESTORE_EMULATOR_HOST is set, so a production function with
  a stray "off" fails closed instead of opening every run to everyone.
- `AGENTGRAPH_AUTH=emulator` is "off" plus identities for the web console on the emulators:
  a bearer token is read WITHOUT checking a signature (the unsigned `alg: none` tokens the
  Firestore emulator accepts as `mockUserToken`, and the Firebase Auth emulator mints), and
  its `sub` is the caller, so runs started from the console belong to the signed-in user
  whom the Firestore rules then check. A request without a token is "local", as with "off"
  (the CLI and the demo). It is refused outside the emulators exactly like "off": it grants
  nothing "off" does not.
- Otherwise `Authorization: Bearer <token>` must be a Google ID token for one of the
  audiences in AGENTGRAPH_API_AUDIENCE (comma-separated; Terraform sets the api's own URL)
  or a Firebase ID token of this project (GOOGLE_CLOUD_PROJECT). The audience is never
  derived from the request: Host and X-Forwarded-Host are the caller's to choose, and a
  token minted for another service must not pass here because a header says so. The caller's uid is the token's `sub`:
  the Firebase uid that the Firestore rules compare run owners with.
- Admins: a uid or email listed in AGENTGRAPH_ADMINS (comma-separated), or a Firebase
  token with the custom claim `admin: true` (the same claim the rules honour). An email
  counts only when the token says `email_verified: true`; a missing claim is not verified.

`service_caller(request, audiences)` admits only a Google-signed token of the service
account in AGENTGRAPH_TASKS_SERVICE_ACCOUNT: Cloud Tasks and Cloud Scheduler calls.
Google's signing keys are cached for a few minutes, so a warm function verifies a token
without a network round trip.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from agentgraph.core import names
from agentgraph.core.errors import AuthError, AuthMisconfigured, Forbidden

ENV_API_AUDIENCE = names.ENV_API_AUDIENCE
ENV_ADMINS = names.ENV_ADMINS
LOCAL_UID = "local"
_FIREBASE_ISSUER = "https://securetoken.google.com/"
_GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
_CERTS_TTL_S = 300.0
_CLOCK_SKEW_S = 10


class HasHeaders(Protocol):
    """A request (Starlette's): anything with case-insensitive `headers`."""

    @property
    def headers(self) -> Any: ...


@dataclass(frozen=True)
class Caller:
    """A verified caller. `uid` owns the runs it starts; an admin sees every run."""

    uid: str
    is_admin: bool = False
    email: str | None = None


AUTH_OFF = "off"
AUTH_EMULATOR = "emulator"
_EMULATOR_ONLY_MODES = (AUTH_OFF, AUTH_EMULATOR)


def auth_mode() -> str:
    """The mode: "" (verify tokens), "off" or "emulator"; the last two only on the emulators."""
    mode = os.environ.get(names.ENV_AUTH_MODE, "").strip().lower()
    if mode not in _EMULATOR_ONLY_MODES:
        return ""
    if not os.environ.get(names.ENV_FIRESTORE_EMULATOR):
        raise AuthMisconfigured(
            f"{names.ENV_AUTH_MODE}={mode} is only allowed against the emulators "
            f"({names.ENV_FIRESTORE_EMULATOR} is not set); remove {names.ENV_AUTH_MODE} "
            "to verify ID tokens"
        )
    return mode


def auth_off() -> bool:
    """Whether tokens are not verified ("off" or "emulator"), which only the emulators allow."""
    return auth_mode() != ""


def caller(request: HasHeaders) -> Caller:
    """The verified caller of an API request (see the module docstring); AuthError if none."""
    mode = auth_mode()
    if mode == AUTH_EMULATOR and request.headers.get("Authorization"):
        return _emulator_caller(_bearer(request))
    if mode:
        return Caller(LOCAL_UID, is_admin=True)
    claims = _verify_user_token(_bearer(request), _api_audiences(request))
    uid = str(claims["sub"])
    email = claims.get("email") if claims.get("email_verified") is True else None
    admins = _split(os.environ.get(ENV_ADMINS, ""))
    is_admin = uid in admins or (email is not None and email in admins)
    is_admin = is_admin or claims.get("admin") is True
    return Caller(uid, is_admin=is_admin, email=email)


def service_caller(request: HasHeaders, audiences: Iterable[str]) -> Caller:
    """Admit only the service account that Cloud Tasks / Cloud Scheduler sign as.

    AuthError (401) without a valid Google ID token for one of `audiences`; Forbidden
    (403) for a valid token of any other account. With auth off, the emulators' calls
    (which carry no token) are admitted as "local".
    """
    if auth_off():
        return Caller(LOCAL_UID, is_admin=True)
    expected = os.environ.get(names.ENV_TASKS_SERVICE_ACCOUNT)
    if not expected:
        raise AuthMisconfigured(
            f"{names.ENV_TASKS_SERVICE_ACCOUNT} is not set, so this function cannot tell "
            "Cloud Tasks and Cloud Scheduler from other callers; set it to the invoker "
            "service account's email"
        )
    audiences = [a for a in audiences if a]
    claims = _verify(_bearer(request), audiences, firebase=False)
    email = claims.get("email")
    if email != expected or claims.get("email_verified") is not True:
        raise Forbidden(f"this function admits only {expected}; the token is of {email or '?'}")
    return Caller(str(claims["sub"]), is_admin=True, email=email)


def request_audience(request: HasHeaders) -> str | None:
    """The URL a request came to, as Cloud Run ID tokens name it (https, no path)."""
    host = request.headers.get("X-Forwarded-Host") or request.headers.get("Host")
    return f"https://{host}" if host else None


# ---- verification ----------------------------------------------------------------------


def _bearer(request: HasHeaders) -> str:
    header = request.headers.get("Authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            "expected the header 'Authorization: Bearer <ID token>' (a Google or Firebase "
            "ID token)" + ("; found another scheme" if header else "; found none")
        )
    return token.strip()


def _api_audiences(request: HasHeaders) -> list[str]:
    """From configuration only (see the module docstring); `request` is not consulted."""
    return _split(os.environ.get(ENV_API_AUDIENCE, ""))


def _verify_user_token(token: str, audiences: list[str]) -> dict[str, Any]:
    issuer = _unverified_issuer(token)
    if issuer.startswith(_FIREBASE_ISSUER):
        project = os.environ.get(names.ENV_PROJECT)
        if not project:
            raise AuthMisconfigured(
                f"{names.ENV_PROJECT} is not set, so Firebase ID tokens cannot be checked"
            )
        return _verify(token, [project], firebase=True)
    if issuer in _GOOGLE_ISSUERS:
        return _verify(token, audiences, firebase=False)
    raise AuthError(f"the token's issuer {issuer!r} is neither Google nor Firebase of this project")


def _unverified_issuer(token: str) -> str:
    from google.auth import jwt

    try:
        claims = jwt.decode(token, verify=False)
    except (ValueError, TypeError) as exc:
        raise AuthError(f"the bearer token is not a JWT: {exc}") from exc
    return str(claims.get("iss", ""))


def _verify(token: str, audiences: list[str], *, firebase: bool) -> dict[str, Any]:
    from google.auth import exceptions as gexc
    from google.oauth2 import id_token

    if not audiences:
        raise AuthMisconfigured(
            f"no audience to check the ID token against: set {ENV_API_AUDIENCE} to the URL "
            "callers request their tokens for"
        )
    audience: Any = audiences[0] if len(audiences) == 1 else audiences
    verify = id_token.verify_firebase_token if firebase else id_token.verify_oauth2_token
    try:
        claims = verify(token, _certs_request(), audience, clock_skew_in_seconds=_CLOCK_SKEW_S)
    except gexc.TransportError:
        raise  # Google's keys could not be fetched: a transient failure, not the caller's
    except (ValueError, gexc.GoogleAuthError) as exc:
        raise AuthError(f"the ID token was rejected: {exc}") from exc
    if not claims.get("sub"):
        raise AuthError("the ID token has no subject")
    return dict(claims)


def _emulator_caller(token: str) -> Caller:
    """The caller an emulator token names (unsigned; see the module docstring). Its issuer
    and audience must still be this project's, and it must not have expired."""
    project = os.environ.get(names.ENV_PROJECT, "")
    parts = token.split(".")
    try:
        if len(parts) != 3:
            raise ValueError("not three dot-separated parts")
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(claims, dict):
            raise ValueError("the payload is not an object")
    except ValueError as exc:
        raise AuthError(f"the bearer token is not a JWT: {exc}") from exc
    if claims.get("iss") != _FIREBASE_ISSUER + project or claims.get("aud") != project:
        raise AuthError(f"the emulator token is not one of project {project!r}")
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp < time.time() - _CLOCK_SKEW_S:
        raise AuthError("the emulator token has expired")
    uid = claims.get("sub") or claims.get("user_id")
    if not isinstance(uid, str) or not uid:
        raise AuthError("the emulator token has no subject")
    email = claims.get("email") if claims.get("email_verified") is True else None
    return Caller(uid, is_admin=claims.get("admin") is True, email=email)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class _CachingRequest:
    """A google.auth transport Request that caches GETs of the public signing keys."""

    def __init__(self) -> None:
        from google.auth.transport.requests import Request

        self._inner = Request()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        if method != "GET":
            return self._inner(url, method=method, **kwargs)
        with self._lock:
            hit = self._cache.get(url)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        response = self._inner(url, method=method, **kwargs)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (time.monotonic() + _CERTS_TTL_S, response)
        return response


_request: _CachingRequest | None = None


def _certs_request() -> _CachingRequest:
    global _request
    if _request is None:
        _request = _CachingRequest()
    return _request
