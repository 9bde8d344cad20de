"""The built-in `http_get` tool: fetch one URL for an agent, safe by default.

A tool that fetches URLs chosen by a model (or by a run's input) is a server-side request
forgery waiting to happen: the model can be talked into fetching the cloud metadata
server (169.254.169.254), an internal service, or the agentgraph api itself. So, and
this is what the tool guarantees:

- Only hosts on an allowlist are fetched (`AGENTGRAPH_HTTP_ALLOWED_HOSTS`, comma-separated
  names; `*.example.com` allows the subdomains of example.com, not example.com itself).
  An empty allowlist refuses everything: the tool must be configured to do anything.
- Only `http` and `https`, no credentials in the URL.
- The host name is resolved once; every address it resolves to must be public (not
  private, loopback, link-local (the metadata server), multicast, reserved, unspecified,
  shared (CGNAT), and not an IPv4 address mapped or embedded into IPv6), and the
  connection goes to that checked address, with the original name in the Host header
  and in TLS SNI (the certificate is checked against the name). A DNS answer that
  changes between a check and the connection (DNS rebinding) therefore cannot redirect
  the request. No proxy from the environment is used (it would resolve names itself).
- Redirects are followed by hand, at most `max_redirects`, each hop checked again
  against the allowlist and the address rules.
- The body is streamed and reading stops past `max_bytes` (decoded bytes, so a
  compressed bomb is cut too); the answer says `truncated: true`. The whole call
  (resolution, redirects, body) is bounded by `timeout_s`.

Refusals raise `ToolRefused` (permanent: a retry would be refused again); timeouts and
connection failures raise `RetryableToolError` (the node's retry policy applies).

Tests reach their local servers with `HttpPolicy(allow_loopback=True)` given to
`configure` (loopback only: private, link-local and the rest stay refused); there is
deliberately no environment variable for it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from agentgraph.core.errors import RetryableToolError, ToolRefused
from agentgraph.core.names import (
    ENV_HTTP_ALLOWED_HOSTS,
    ENV_HTTP_MAX_BYTES,
    ENV_HTTP_TIMEOUT_S,
)
from agentgraph.tools import tool

Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_MAX_BYTES = 1024 * 1024
MAX_MAX_BYTES = 8 * 1024 * 1024  # the output limit of a node is 10 MiB; base64 grows by 4/3
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_KEPT_HEADERS = (
    "content-type",
    "content-length",
    "content-language",
    "content-encoding",
    "last-modified",
    "etag",
    "cache-control",
    "location",
)
_TEXT_TYPES = ("json", "xml", "javascript", "yaml", "csv", "x-www-form-urlencoded")
_USER_AGENT = "agentgraph-http-get/1"


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (A and AAAA), in its order."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolRefused(f"http_get: cannot resolve host {host!r}: {exc.strerror}") from exc
    seen: dict[str, None] = {}
    for info in infos:
        seen[str(info[4][0])] = None
    return list(seen)


@dataclass(frozen=True)
class HttpPolicy:
    """What `http_get` may fetch. The default (no hosts) refuses everything."""

    allowed_hosts: frozenset[str] = frozenset()
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    allow_loopback: bool = False  # tests only: lets 127.0.0.0/8 and ::1 through
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HttpPolicy:
        env = os.environ if env is None else env
        hosts = frozenset(
            h.strip().lower().rstrip(".")
            for h in env.get(ENV_HTTP_ALLOWED_HOSTS, "").split(",")
            if h.strip()
        )
        return cls(
            allowed_hosts=hosts,
            max_bytes=min(int(env.get(ENV_HTTP_MAX_BYTES) or DEFAULT_MAX_BYTES), MAX_MAX_BYTES),
            timeout_s=float(env.get(ENV_HTTP_TIMEOUT_S) or DEFAULT_TIMEOUT_S),
        )

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        for entry in self.allowed_hosts:
            if entry.startswith("*."):
                if host.endswith(entry[1:]) and host != entry[2:]:
                    return True
            elif host == entry:
                return True
        return False


_configured: HttpPolicy | None = None


def configure(policy: HttpPolicy | None) -> None:
    """Use this policy instead of the environment's (None: back to the environment)."""
    global _configured
    _configured = policy


def current_policy() -> HttpPolicy:
    return _configured if _configured is not None else HttpPolicy.from_env()


def forbidden_address(address: str) -> str | None:
    """Why an address may not be fetched, or None when it is public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            why = forbidden_address(str(embedded))
            return f"embeds {embedded}, which {why}" if why else None
    for attribute, why in (
        ("is_loopback", "is loopback"),
        ("is_link_local", "is link-local (the metadata server lives there)"),
        ("is_multicast", "is multicast"),
        ("is_unspecified", "is unspecified"),
        ("is_reserved", "is reserved"),
        ("is_private", "is private"),
    ):
        if getattr(ip, attribute):
            return why
    if not ip.is_global:
        return "is not a public address"
    return None


@tool
async def http_get(url: str, max_bytes: int | None = None) -> dict[str, Any]:
    """Fetch a URL with GET (allowlisted hosts only, public addresses only). Returns
    {url, status, headers, text or base64, truncated, bytes}; max_bytes may lower the cap."""
    policy = current_policy()
    if max_bytes is not None:
        if max_bytes < 1:
            raise ToolRefused(f"http_get: max_bytes must be at least 1, got {max_bytes}")
        policy = replace(policy, max_bytes=min(max_bytes, policy.max_bytes))
    return await fetch(url, policy)


async def fetch(url: str, policy: HttpPolicy) -> dict[str, Any]:
    """`http_get` under an explicit policy (what the tool does after reading its own)."""
    if not policy.allowed_hosts:
        raise ToolRefused(
            f"http_get is not configured: no host is allowed. Set {ENV_HTTP_ALLOWED_HOSTS} "
            "to a comma-separated list of host names (e.g. example.com,*.wikipedia.org)."
        )
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _follow(url, policy)
    except TimeoutError as exc:
        raise RetryableToolError(
            f"http_get: no complete answer from {url} within {policy.timeout_s:g}s"
        ) from exc


async def _follow(url: str, policy: HttpPolicy) -> dict[str, Any]:
    # trust_env=False: no proxy (it would resolve names itself) and no .netrc credentials.
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=None) as client:
        current = _parse(url)
        for hop in range(policy.max_redirects + 1):
            request = await _pinned_request(client, current, policy)
            async with _transport_errors_retryable(current):
                response = await client.send(request, stream=True)
                try:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        if hop == policy.max_redirects:
                            raise ToolRefused(
                                f"http_get: more than {policy.max_redirects} redirects from {url}"
                            )
                        current = _parse(str(current.join(location)))
                        continue
                    return await _result(current, response, policy.max_bytes)
                finally:
                    await response.aclose()
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.asynccontextmanager
async def _transport_errors_retryable(url: httpx.URL) -> AsyncIterator[None]:
    """A connection that fails, on connecting or mid-body, is worth a retry."""
    try:
        yield
    except httpx.TransportError as exc:
        raise RetryableToolError(
            f"http_get: could not fetch {url}: {type(exc).__name__}: {exc}"
        ) from exc


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ToolRefused(f"http_get: not a URL: {url!r} ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        raise ToolRefused(f"http_get: only http and https URLs, got {parsed.scheme or 'none'!r}")
    if not parsed.host:
        raise ToolRefused(f"http_get: {url!r} names no host")
    if parsed.userinfo:
        raise ToolRefused("http_get: URLs with credentials (user:password@) are refused")
    return parsed


async def _pinned_request(
    client: httpx.AsyncClient, url: httpx.URL, policy: HttpPolicy
) -> httpx.Request:
    """A request to the checked address of url's host, carrying the name in Host and SNI."""
    host = url.host.lower().rstrip(".")
    if not policy.host_allowed(host):
        allowed = ", ".join(sorted(policy.allowed_hosts))
        raise ToolRefused(f"http_get: host {host!r} is not allowed (allowed: {allowed})")
    port = url.port or (443 if url.scheme == "https" else 80)
    if _is_ip(host):
        addresses = [host]
    else:
        addresses = await policy.resolver(host, port)
    if not addresses:
        raise ToolRefused(f"http_get: host {host!r} resolves to no address")
    for address in addresses:
        why = forbidden_address(address)
        if why is not None and not (policy.allow_loopback and _is_loopback(address)):
            raise ToolRefused(
                f"http_get: host {host!r} resolves to {address}, which {why}: refused"
            )
    target = url.copy_with(host=addresses[0].split("%", 1)[0])
    headers = {"Host": url.netloc.decode("ascii"), "User-Agent": _USER_AGENT}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return client.build_request("GET", target, headers=headers, extensions=extensions)


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _result(url: httpx.URL, response: httpx.Response, max_bytes: int) -> dict[str, Any]:
    body = bytearray()
    truncated = False
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > max_bytes:
            truncated = True
            del body[max_bytes:]
            break
    headers = {k: response.headers[k] for k in _KEPT_HEADERS if k in response.headers}
    result: dict[str, Any] = {
        "url": str(url),
        "status": response.status_code,
        "headers": headers,
        "truncated": truncated,
        "bytes": len(body),
    }
    content_type = response.headers.get("content-type", "").lower()
    if _is_text(content_type):
        result["text"] = bytes(body).decode(response.charset_encoding or "utf-8", "replace")
    else:
        result["base64"] = base64.b64encode(bytes(body)).decode("ascii")
    return result


def _is_text(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip()
    return (
        mime.startswith("text/")
        or any(t in mime for t in _TEXT_TYPES)
        or "charset=" in (content_type)
    )
