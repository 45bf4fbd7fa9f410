"""The client address rate limits count by: the peer, X-Forwarded-For only from trusted proxies,
read from the right, so that no client can choose the address it is counted under."""

from __future__ import annotations

import ipaddress

import pytest

from service.core.client_address import address_bucket, client_address, parse_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def resolved(peer: str | None, *forwarded_for: str) -> str:
    return address_bucket(client_address(peer, forwarded_for, PROXIES))


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards() -> None:
    address = client_address("203.0.113.7", ["198.51.100.1"], ())
    assert address_bucket(address) == "203.0.113.7"


def test_an_untrusted_peer_cannot_name_another_client() -> None:
    assert resolved("203.0.113.7", "198.51.100.1") == "203.0.113.7"
    assert resolved("203.0.113.7", "10.0.0.5") == "203.0.113.7"


def test_behind_a_trusted_proxy_the_client_is_what_the_proxy_appended() -> None:
    assert resolved("10.0.0.2", "198.51.100.1") == "198.51.100.1"


def test_entries_a_client_prepends_are_ignored() -> None:
    # The client sent "X-Forwarded-For: 1.1.1.1, 2.2.2.2"; the proxy appended the real peer.
    spoofed = "1.1.1.1, 2.2.2.2, 198.51.100.1"
    assert resolved("10.0.0.2", spoofed) == "198.51.100.1"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    assert resolved("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.1.2.3, 10.9.9.9") == "198.51.100.1"


def test_several_forwarded_for_fields_form_one_list() -> None:
    assert resolved("10.0.0.2", "6.6.6.6, 198.51.100.1", "10.1.2.3") == "198.51.100.1"


def test_when_every_hop_is_trusted_the_left_most_is_the_client() -> None:
    assert resolved("10.0.0.2", "10.0.0.9, 10.0.0.8") == "10.0.0.9"


def test_a_trusted_peer_without_forwarded_for_is_itself_the_client() -> None:
    assert resolved("10.0.0.2") == "10.0.0.2"
    assert resolved("10.0.0.2", "", " , ") == "10.0.0.2"


def test_a_malformed_hop_stops_at_the_last_address_a_trusted_proxy_vouched_for() -> None:
    assert resolved("10.0.0.2", "198.51.100.1, not-an-address") == "10.0.0.2"
    assert resolved("10.0.0.2", "198.51.100.1, unknown, 10.0.0.7") == "10.0.0.7"
    assert resolved("10.0.0.2", "not-an-address, 198.51.100.1") == "198.51.100.1"


@pytest.mark.parametrize(
    ("written", "address"),
    [
        ("198.51.100.1", "198.51.100.1"),
        (" 198.51.100.1 ", "198.51.100.1"),
        ("198.51.100.1:4711", "198.51.100.1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("198.51.100.300", None),
        ("example.com", None),
        ("", None),
    ],
)
def test_addresses_as_proxies_write_them(written: str, address: str | None) -> None:
    parsed = parse_address(written)
    assert (str(parsed) if parsed else None) == address


def test_ipv6_clients_are_counted_by_their_64_bit_prefix() -> None:
    one, other = (ipaddress.ip_address(a) for a in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"))
    assert address_bucket(one) == address_bucket(other) == "2001:db8:1:2::/64"
    assert address_bucket(ipaddress.ip_address("2001:db8:1:3::1")) == "2001:db8:1:3::/64"


def test_ipv6_proxies_and_clients() -> None:
    assert resolved("fd00::2", "2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert resolved("2001:db8:9::1", "2001:db8:1:2::1") == "2001:db8:9::/64"


def test_a_request_without_a_peer_is_counted_as_unknown() -> None:
    assert resolved(None, "198.51.100.1") == "unknown"
