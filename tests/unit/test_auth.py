"""Who may call: ID tokens verified with google-auth's real code, against a signing key made
here and published the way Google publishes its keys (a local stand-in for the endpoint)."""

from __future__ import annotations

import base64
import datetime
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from starlette.datastructures import Headers

from agentgraph.backends.gcp import auth
from agentgraph.core import names
from agentgraph.core.errors import AuthError, AuthMisconfigured, Forbidden

AUDIENCE = "https://api-abc.run.app"
PROJECT = "my-project"
KEY_ID = "test-key"


def _key_and_cert() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentgraph-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, cert.public_bytes(serialization.Encoding.PEM).decode()


PRIVATE_PEM, CERT_PEM = _key_and_cert()
SIGNER = crypt.RSASigner.from_string(PRIVATE_PEM, KEY_ID)


@dataclass
class _Response:
    status: int
    data: bytes
    headers: dict[str, str]


class LocalKeys:
    """Answers the public-key URLs with our certificate; counts the fetches."""

    def __init__(self) -> None:
        self.fetches = 0

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> _Response:
        self.fetches += 1
        return _Response(200, json.dumps({KEY_ID: CERT_PEM}).encode(), {})


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> LocalKeys:
    local = LocalKeys()
    caching = auth._CachingRequest()
    caching._inner = local  # type: ignore[assignment]
    monkeypatch.setattr(auth, "_request", caching)
    for variable in (names.ENV_AUTH_MODE, auth.ENV_ADMINS):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(names.ENV_PROJECT, PROJECT)
    monkeypatch.setenv(auth.ENV_API_AUDIENCE, AUDIENCE)  # Terraform sets the api's own URL
    return local


def token(**claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "sub": "1234",
        "email": "ada@example.com",
        "email_verified": True,
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(SIGNER, payload).decode()


def firebase_token(**claims: Any) -> str:
    return token(
        iss=f"https://securetoken.google.com/{PROJECT}", aud=PROJECT, sub="fb-uid-1", **claims
    )


@dataclass
class Request:
    headers: Headers


def bearer(value: str, host: str = "api-abc.run.app") -> Request:
    return Request(Headers({"Authorization": f"Bearer {value}", "Host": host}))


def test_a_google_id_token_for_this_url_is_the_caller(keys: LocalKeys) -> None:
    caller = auth.caller(bearer(token()))

    assert caller == auth.Caller("1234", is_admin=False, email="ada@example.com")


def test_the_audience_comes_from_the_environment_when_set(
    keys: LocalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auth.ENV_API_AUDIENCE, "https://api.example.com, https://other")

    assert auth.caller(bearer(token(aud="https://other"), host="ignored")).uid == "1234"
    with pytest.raises(AuthError, match="rejected"):
        auth.caller(bearer(token()))


def test_an_audience_chosen_by_the_request_headers_is_refused(keys: LocalKeys) -> None:
    """A Google-signed token minted for another service, sent with a Host (or
    X-Forwarded-Host) naming that service, is not a token for this api."""
    other = "https://other-service.run.app"
    forged = Request(
        Headers(
            {
                "Authorization": f"Bearer {token(aud=other)}",
                "Host": "other-service.run.app",
                "X-Forwarded-Host": "other-service.run.app",
            }
        )
    )
    with pytest.raises(AuthError, match="rejected"):
        auth.caller(forged)


def test_without_a_configured_audience_the_host_header_does_not_become_one(
    keys: LocalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(auth.ENV_API_AUDIENCE)
    with pytest.raises(AuthMisconfigured, match=auth.ENV_API_AUDIENCE):
        auth.caller(bearer(token()))


def test_an_email_without_email_verified_does_not_make_an_admin(
    keys: LocalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auth.ENV_ADMINS, "ada@example.com")
    unverified = jwt.decode(token(), verify=False)
    del unverified["email_verified"]
    caller = auth.caller(bearer(jwt.encode(SIGNER, unverified).decode()))
    assert caller.is_admin is False and caller.email is None


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "https://someone-else.run.app"},
        {"exp": int(time.time()) - 120, "iat": int(time.time()) - 700},
        {"iss": "https://accounts.google.com.evil"},
    ],
    ids=["wrong audience", "expired", "unknown issuer"],
)
def test_a_token_for_something_else_is_refused(keys: LocalKeys, claims: dict[str, Any]) -> None:
    with pytest.raises(AuthError):
        auth.caller(bearer(token(**claims)))


def test_a_tampered_token_is_refused(keys: LocalKeys) -> None:
    header, _payload, signature = token().split(".")
    forged = token(sub="root").split(".")[1]  # another subject under the old signature

    with pytest.raises(AuthError, match="rejected"):
        auth.caller(bearer(f"{header}.{forged}.{signature}"))


def test_no_or_another_kind_of_credential_is_401(keys: LocalKeys) -> None:
    with pytest.raises(AuthError, match="found none"):
        auth.caller(Request(Headers({})))
    with pytest.raises(AuthError, match="another scheme"):
        auth.caller(Request(Headers({"Authorization": "Basic YTpi"})))
    with pytest.raises(AuthError, match="not a JWT"):
        auth.caller(bearer("not-a-token"))


def test_a_firebase_token_of_this_project_is_the_caller_with_its_admin_claim(
    keys: LocalKeys,
) -> None:
    assert auth.caller(bearer(firebase_token())).uid == "fb-uid-1"
    assert auth.caller(bearer(firebase_token(admin=True))).is_admin
    with pytest.raises(AuthError):
        auth.caller(bearer(token(iss="https://securetoken.google.com/other", aud="other")))


def test_admins_are_listed_by_uid_or_email(
    keys: LocalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auth.ENV_ADMINS, "ops@example.com, 999")

    assert auth.caller(bearer(token(email="ops@example.com"))).is_admin
    assert auth.caller(bearer(token(sub="999", email="x@example.com"))).is_admin
    assert not auth.caller(bearer(token())).is_admin
    unverified = token(email="ops@example.com", email_verified=False)
    assert not auth.caller(bearer(unverified)).is_admin, "an unverified email proves nothing"


def test_signing_keys_are_fetched_once_for_many_calls(keys: LocalKeys) -> None:
    for _ in range(5):
        auth.caller(bearer(token()))

    assert keys.fetches == 1


def test_auth_off_is_only_allowed_on_the_emulators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.ENV_AUTH_MODE, "off")
    monkeypatch.delenv(names.ENV_FIRESTORE_EMULATOR, raising=False)
    with pytest.raises(AuthMisconfigured, match=names.ENV_FIRESTORE_EMULATOR):
        auth.caller(Request(Headers({})))

    monkeypatch.setenv(names.ENV_FIRESTORE_EMULATOR, "127.0.0.1:8080")
    assert auth.caller(Request(Headers({}))) == auth.Caller(auth.LOCAL_UID, is_admin=True)


def emulator_token(**claims: Any) -> str:
    """What the Firebase JS SDK's `mockUserToken` / the Auth emulator send: unsigned."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    payload = {
        "iss": f"https://securetoken.google.com/{PROJECT}",
        "aud": PROJECT,
        "sub": "alice",
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return f"{part({'alg': 'none', 'type': 'JWT'})}.{part(payload)}."


def test_emulator_auth_is_refused_outside_the_emulators_like_auth_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(names.ENV_AUTH_MODE, "emulator")
    monkeypatch.setenv(names.ENV_PROJECT, PROJECT)
    monkeypatch.delenv(names.ENV_FIRESTORE_EMULATOR, raising=False)
    with pytest.raises(AuthMisconfigured, match=names.ENV_FIRESTORE_EMULATOR):
        auth.caller(bearer(emulator_token()))
    with pytest.raises(AuthMisconfigured, match=names.ENV_FIRESTORE_EMULATOR):
        auth.caller(Request(Headers({})))
    with pytest.raises(AuthMisconfigured, match=names.ENV_FIRESTORE_EMULATOR):
        auth.service_caller(Request(Headers({})), ["https://retry"])


def test_on_the_emulators_an_unsigned_emulator_token_names_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(names.ENV_AUTH_MODE, "emulator")
    monkeypatch.setenv(names.ENV_PROJECT, PROJECT)
    monkeypatch.setenv(names.ENV_FIRESTORE_EMULATOR, "127.0.0.1:8080")

    assert auth.caller(bearer(emulator_token())) == auth.Caller("alice")
    assert auth.caller(bearer(emulator_token(sub="bob", admin=True))).is_admin
    # Without a token it is "off": the CLI and the demo on the emulators keep working.
    assert auth.caller(Request(Headers({}))) == auth.Caller(auth.LOCAL_UID, is_admin=True)


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-project"},
        {"iss": "https://securetoken.google.com/another-project"},
        {"exp": int(time.time()) - 3600},
        {"sub": ""},
    ],
)
def test_an_emulator_token_of_another_project_or_expired_is_refused(
    monkeypatch: pytest.MonkeyPatch, claims: dict[str, Any]
) -> None:
    monkeypatch.setenv(names.ENV_AUTH_MODE, "emulator")
    monkeypatch.setenv(names.ENV_PROJECT, PROJECT)
    monkeypatch.setenv(names.ENV_FIRESTORE_EMULATOR, "127.0.0.1:8080")
    with pytest.raises(AuthError):
        auth.caller(bearer(emulator_token(**claims)))
    with pytest.raises(AuthError):
        auth.caller(bearer("not-a-jwt"))


def test_service_calls_admit_only_the_tasks_service_account(
    keys: LocalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    retry_url = "https://retry-abc.run.app"
    monkeypatch.setenv(names.ENV_TASKS_SERVICE_ACCOUNT, "invoker@p.iam.gserviceaccount.com")
    tasks = token(aud=retry_url, email="invoker@p.iam.gserviceaccount.com", sub="42")

    assert auth.service_caller(bearer(tasks), [retry_url]).email == (
        "invoker@p.iam.gserviceaccount.com"
    )
    with pytest.raises(Forbidden):
        auth.service_caller(bearer(token(aud=retry_url)), [retry_url])
    with pytest.raises(AuthError):
        auth.service_caller(bearer(tasks), ["https://elsewhere"])
    with pytest.raises(AuthError):
        auth.service_caller(Request(Headers({})), [retry_url])


def test_service_calls_need_the_service_account_configured(
    keys: LocalKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(names.ENV_TASKS_SERVICE_ACCOUNT, raising=False)

    with pytest.raises(AuthMisconfigured, match=names.ENV_TASKS_SERVICE_ACCOUNT):
        auth.service_caller(bearer(token()), [AUDIENCE])
