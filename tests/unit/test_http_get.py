"""The built-in http_get tool: an allowlist, public addresses only after resolution,
pinned connections, checked redirects, size and time caps. Against real local servers;
loopback is allowed only where a test says `allow_loopback=True`."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest

from agentgraph.core.errors import RetryableToolError, ToolRefused
from agentgraph.tools import default_registry
from agentgraph.tools.web import HttpPolicy, configure, current_policy, fetch, forbidden_address
from tests.web_server import _Server, web_server


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    with web_server() as running:
        yield running


def base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def loopback_allowed(**extra: object) -> HttpPolicy:
    return HttpPolicy(allowed_hosts=frozenset({"127.0.0.1"}), allow_loopback=True, **extra)  # type: ignore[arg-type]


def resolving_to(*addresses: str) -> object:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


# ---- the address rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the metadata server
        "100.64.0.1",  # shared address space (CGNAT)
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 around 127.0.0.1
    ],
)
def test_non_public_addresses_are_forbidden(address: str) -> None:
    assert forbidden_address(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "142.250.74.46", "2001:4860:4860::8888"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_address(address) is None


def test_allowlist_matches_exact_names_and_wildcard_subdomains_only() -> None:
    policy = HttpPolicy(allowed_hosts=frozenset({"example.com", "*.wiki.org"}))
    assert policy.host_allowed("example.com")
    assert policy.host_allowed("EXAMPLE.com.")
    assert not policy.host_allowed("www.example.com")
    assert policy.host_allowed("en.wiki.org")
    assert not policy.host_allowed("wiki.org")
    assert not policy.host_allowed("evilwiki.org")


def test_policy_from_environment() -> None:
    policy = HttpPolicy.from_env(
        {
            "AGENTGRAPH_HTTP_ALLOWED_HOSTS": " Example.com , *.wiki.org ,",
            "AGENTGRAPH_HTTP_MAX_BYTES": "1000",
            "AGENTGRAPH_HTTP_TIMEOUT_S": "2.5",
        }
    )
    assert policy.allowed_hosts == {"example.com", "*.wiki.org"}
    assert (policy.max_bytes, policy.timeout_s, policy.allow_loopback) == (1000, 2.5, False)


def test_http_get_is_a_registered_tool() -> None:
    assert "http_get" in default_registry.names()


# ---- refusals ----------------------------------------------------------------------------


async def test_an_empty_allowlist_refuses_everything_and_says_how_to_configure() -> None:
    with pytest.raises(ToolRefused, match=r"AGENTGRAPH_HTTP_ALLOWED_HOSTS"):
        await fetch("https://example.com/", HttpPolicy())


async def test_the_tool_reads_an_unconfigured_environment_as_refuse_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AGENTGRAPH_HTTP_ALLOWED_HOSTS", raising=False)
    configure(None)
    assert current_policy().allowed_hosts == frozenset()
    with pytest.raises(ToolRefused, match=r"not configured"):
        await default_registry.get("http_get")("https://example.com/")


async def test_a_host_not_on_the_allowlist_is_refused() -> None:
    policy = HttpPolicy(allowed_hosts=frozenset({"example.com"}))
    with pytest.raises(ToolRefused, match=r"'evil.example' is not allowed"):
        await fetch("https://evil.example/", policy)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com"]
)
async def test_only_http_and_https_are_fetched(url: str) -> None:
    with pytest.raises(ToolRefused, match=r"only http and https"):
        await fetch(url, HttpPolicy(allowed_hosts=frozenset({"example.com"})))


async def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(ToolRefused, match=r"credentials"):
        await fetch(
            "https://u:p@example.com/", HttpPolicy(allowed_hosts=frozenset({"example.com"}))
        )


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "::1", "::ffff:10.0.0.1"]
)
async def test_an_allowed_name_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    policy = HttpPolicy(allowed_hosts=frozenset({"api.example"}), resolver=resolving_to(address))  # type: ignore[arg-type]
    with pytest.raises(ToolRefused, match=re.escape(f"resolves to {address}")):
        await fetch("https://api.example/", policy)


async def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    policy = HttpPolicy(
        allowed_hosts=frozenset({"api.example"}),
        resolver=resolving_to("8.8.8.8", "192.168.0.1"),  # type: ignore[arg-type]
    )
    with pytest.raises(ToolRefused, match=r"192.168.0.1"):
        await fetch("https://api.example/", policy)


async def test_localhost_resolved_by_the_system_is_refused_without_allow_loopback(
    server: _Server,
) -> None:
    policy = HttpPolicy(allowed_hosts=frozenset({"localhost"}))
    with pytest.raises(ToolRefused, match=r"resolves to .* loopback"):
        await fetch(f"http://localhost:{server.server_address[1]}/text", policy)


async def test_a_loopback_ip_literal_is_refused_even_when_allowlisted(server: _Server) -> None:
    policy = HttpPolicy(allowed_hosts=frozenset({"127.0.0.1"}))
    with pytest.raises(ToolRefused, match=r"loopback"):
        await fetch(f"{base(server)}/text", policy)


# ---- fetching --------------------------------------------------------------------------


async def test_text_answer_with_status_headers_and_no_truncation(server: _Server) -> None:
    result = await fetch(f"{base(server)}/text", loopback_allowed())
    assert result["status"] == 200
    assert result["text"] == f"hello from 127.0.0.1:{server.server_address[1]}"
    assert result["headers"]["content-type"] == "text/plain"
    assert result["truncated"] is False
    assert "base64" not in result


async def test_binary_answer_is_base64(server: _Server) -> None:
    result = await fetch(f"{base(server)}/binary", loopback_allowed())
    assert base64.b64decode(result["base64"]) == bytes(range(256))
    assert "text" not in result


async def test_a_status_other_than_200_is_returned_not_raised(server: _Server) -> None:
    result = await fetch(f"{base(server)}/missing", loopback_allowed())
    assert (result["status"], result["text"]) == (404, "no such page")


async def test_the_connection_goes_to_the_resolved_address_with_the_name_as_host(
    server: _Server,
) -> None:
    """DNS rebinding: the name is resolved once, by the policy's resolver, and the
    request goes to that address; the server still sees the name in Host."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    policy = HttpPolicy(
        allowed_hosts=frozenset({"pinned.invalid"}), allow_loopback=True, resolver=resolve
    )
    port = server.server_address[1]
    result = await fetch(f"http://pinned.invalid:{port}/text", policy)
    assert result["text"] == f"hello from pinned.invalid:{port}"
    assert asked == ["pinned.invalid"]


async def test_the_body_stops_at_the_size_cap_and_says_truncated(server: _Server) -> None:
    result = await fetch(f"{base(server)}/big?n=5000000", loopback_allowed(max_bytes=100_000))
    assert result["truncated"] is True
    assert result["bytes"] == 100_000
    assert len(result["text"]) == 100_000


async def test_the_tool_argument_may_lower_the_cap_but_not_raise_it(server: _Server) -> None:
    configure(loopback_allowed(max_bytes=1000))
    try:
        http_get = default_registry.get("http_get")
        lower = await http_get(f"{base(server)}/big?n=5000", max_bytes=10)
        higher = await http_get(f"{base(server)}/big?n=5000", max_bytes=10_000)
    finally:
        configure(None)
    assert (lower["bytes"], lower["truncated"]) == (10, True)
    assert (higher["bytes"], higher["truncated"]) == (1000, True)


async def test_a_server_that_does_not_answer_in_time_is_a_retryable_error(
    server: _Server,
) -> None:
    with pytest.raises(RetryableToolError, match=r"within 0.3s"):
        await fetch(f"{base(server)}/hang", loopback_allowed(timeout_s=0.3))


async def test_a_refused_connection_is_a_retryable_error() -> None:
    with pytest.raises(RetryableToolError, match=r"could not fetch"):
        await fetch("http://127.0.0.1:1/", loopback_allowed())


async def test_a_connection_lost_mid_body_is_a_retryable_error(server: _Server) -> None:
    with pytest.raises(RetryableToolError, match="could not fetch"):
        await fetch(f"{base(server)}/cut", loopback_allowed())


async def test_redirects_are_followed_within_the_allowlist(server: _Server) -> None:
    result = await fetch(f"{base(server)}/redirect?to=/text", loopback_allowed())
    assert (result["status"], result["url"]) == (200, f"{base(server)}/text")


async def test_a_redirect_to_a_host_not_on_the_allowlist_is_refused(server: _Server) -> None:
    with pytest.raises(ToolRefused, match=r"'evil.example' is not allowed"):
        await fetch(f"{base(server)}/redirect?to=http://evil.example/steal", loopback_allowed())


async def test_a_redirect_to_an_allowed_name_on_the_metadata_address_is_refused(
    server: _Server,
) -> None:
    """The first hop is allowed (loopback, for the test) but the redirect's host resolves
    to the metadata server: each hop is checked again."""
    port = server.server_address[1]
    resolved: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"] if host == "first.invalid" else ["169.254.169.254"]

    policy = HttpPolicy(
        allowed_hosts=frozenset({"first.invalid", "metadata.invalid"}),
        allow_loopback=True,
        resolver=resolve,
    )
    with pytest.raises(ToolRefused, match=r"'metadata.invalid' resolves to 169.254.169.254"):
        await fetch(f"http://first.invalid:{port}/redirect?to=http://metadata.invalid/", policy)
    assert resolved == ["first.invalid", "metadata.invalid"]


async def test_allow_loopback_lets_only_loopback_through() -> None:
    policy = HttpPolicy(
        allowed_hosts=frozenset({"api.example"}),
        allow_loopback=True,
        resolver=resolving_to("10.0.0.1"),  # type: ignore[arg-type]
    )
    with pytest.raises(ToolRefused, match=r"is private"):
        await fetch("http://api.example/", policy)


async def test_redirects_are_bounded(server: _Server) -> None:
    with pytest.raises(ToolRefused, match=r"more than 3 redirects"):
        await fetch(f"{base(server)}/loop", loopback_allowed(max_redirects=3))
