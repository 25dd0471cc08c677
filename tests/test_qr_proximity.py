"""`proximity`: the fast IPv4 path agrees with the plain `ipaddress` reading for any string."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from gateway.qr.service import proximity, proximity_by_ipaddress

octet = st.one_of(
    st.integers(0, 255).map(str),
    st.integers(256, 999).map(str),  # out of range
    st.integers(0, 99).map(lambda n: f"0{n}"),  # leading zeros: ipaddress refuses them
    st.sampled_from(["", "a", "-1", "+1", "1 ", "٣", "１"]),  # empty, letters, signs, non-ASCII digits
)
dotted = st.lists(octet, min_size=3, max_size=5).map(".".join)
address = st.one_of(
    dotted,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.sampled_from(["", "localhost", "::ffff:10.0.0.1", "10.0.0.1/24"]),
)


@given(address, address)
def test_agrees_with_ipaddress(requester_ip: str, scanner_ip: str) -> None:
    assert proximity(requester_ip, scanner_ip) == proximity_by_ipaddress(requester_ip, scanner_ip)


@given(st.ip_addresses(v=4), st.integers(0, 255))
def test_same_slash_24(requester: ipaddress.IPv4Address, last: int) -> None:
    neighbour = str(requester).rpartition(".")[0] + f".{last}"
    assert proximity(str(requester), neighbour) == "same_network"


def test_examples() -> None:
    assert proximity("10.1.2.3", "10.1.2.200") == "same_network"
    assert proximity("10.1.2.3", "10.1.3.3") == "different_network"
    assert proximity("10.1.2.3", "2001:db8::1") == "different_network"
    assert proximity("010.1.2.3", "10.1.2.3") == "unknown"
    assert proximity("2001:db8::1", "2001:db8::2") == "same_network"
