"""Per-address limits count the parsed address (issue 15, item 8): an IPv6 /64 is one address, every
spelling of an address is the same address, an IPv4-mapped IPv6 address is the IPv4 address, and an
X-Forwarded-For value that is not an address gets no budget of its own (the peer's is used)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from gateway.inputs import address_key, canonical_address
from tests.support.gateway_server import ThreadedGateway, free_port, make_settings

pytestmark = pytest.mark.anyio
BUDGET = 2  # captchas per address per window, on this module's gateway


def test_one_spelling_per_address_and_ipv6_by_its_64() -> None:
    assert canonical_address("2001:0DB8:0005:0000:0000:0000:0000:0001") == "2001:db8:5::1"
    assert canonical_address("[2001:db8:5::1]") == "2001:db8:5::1"
    assert canonical_address("::ffff:203.0.113.7") == "203.0.113.7"
    assert canonical_address(" 198.51.100.4 ") == "198.51.100.4"
    for junk in ("not-an-ip-1", "", "1.2.3", "999.1.1.1", "2001:db8::g", "unknown"):
        assert canonical_address(junk) is None, junk
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:203.0.113.7") == address_key("203.0.113.7") == "203.0.113.7"


@pytest.fixture(scope="module")
def tight_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("addresses"), port, captcha_ip_max=BUDGET, captcha_ip_window=3600)
    server = ThreadedGateway(settings, port).start()
    yield server
    server.stop()


@pytest.fixture
async def http(tight_gateway: ThreadedGateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tight_gateway.base_url, timeout=20) as client:
        yield client


async def statuses(http: httpx.AsyncClient, forwarded: list[str]) -> list[int]:
    """POST /v1/captcha (a per-address throttle) once from each X-Forwarded-For value (the test's
    connection comes from 127.0.0.1, a trusted proxy)."""
    return [(await http.post("/v1/captcha", headers={"X-Forwarded-For": value})).status_code for value in forwarded]


@pytest.mark.parametrize(
    "spellings",
    [
        ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"],  # one /64
        ["2001:db8:5::1", "2001:0db8:0005:0000:0000:0000:0000:0001", "2001:DB8:5:0::1"],  # one address
        ["203.0.113.7", "::ffff:203.0.113.7", "::ffff:cb00:7107"],  # IPv4 and IPv4-mapped
        ["not-an-ip-1", "not-an-ip-2", "not-an-ip-3"],  # junk: counted as the peer (127.0.0.1)
    ],
    ids=["ipv6-64", "ipv6-spellings", "ipv4-mapped", "junk-forwarded"],
)
async def test_every_spelling_shares_one_budget(http: httpx.AsyncClient, spellings: list[str]) -> None:
    answers = await statuses(http, spellings)
    assert answers == [201] * BUDGET + [429], answers


async def test_the_next_64_and_a_good_hop_after_junk_have_budgets_of_their_own(http: httpx.AsyncClient) -> None:
    assert await statuses(http, ["2001:db8:9:1::1", "2001:db8:9:2::1", "2001:db8:9:3::1"]) == [201, 201, 201]
    # A client's junk left of a real address: the address the trusted proxy saw counts.
    assert await statuses(http, ["junk, 192.0.2.50", "other-junk, 192.0.2.50", "192.0.2.50"]) == [201, 201, 429]


async def test_an_untrusted_peer_s_forwarded_header_is_ignored(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("untrusted"), port, captcha_ip_max=BUDGET, trusted_proxies="192.0.2.1"
    )
    server = ThreadedGateway(settings, port).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            answers = await statuses(http, ["198.51.100.1", "198.51.100.2", "198.51.100.3"])
    finally:
        server.stop()
    assert answers == [201, 201, 429]  # all counted as 127.0.0.1, the real peer


async def test_trusting_any_peer_takes_only_the_hop_that_proxy_appended(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`QRGATE_TRUSTED_PROXIES=*` (the shipped compose and Kubernetes files): the peer is the one proxy,
    and the client is the address it appended, the right-most. Addresses the client wrote to the left
    of it (a fresh made-up one on every request) get no budgets of their own."""
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("any-proxy"), port, captcha_ip_max=BUDGET, trusted_proxies="*")
    server = ThreadedGateway(settings, port).start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            spoofed = [f"203.0.113.{n}, 198.51.100.9" for n in range(3)]  # the proxy saw 198.51.100.9
            answers = await statuses(http, spoofed)
            own = await statuses(http, ["192.0.2.77"])
    finally:
        server.stop()
    assert answers == [201, 201, 429]
    assert own == [201]
