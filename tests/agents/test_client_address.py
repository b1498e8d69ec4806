"""The client address behind reverse proxies: X-Forwarded-For only from REVERIE_TRUSTED_PROXIES,
for sign-in lockouts and the API throttles' anonymous identity; never trusted by default."""

import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from agents.proxies import client_address
from agents.throttling import ApiKeyRateThrottle

ROOT = Path(__file__).resolve().parent.parent.parent
PROXY = "10.0.0.5"


def request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def test_by_default_the_header_is_ignored(settings):
    settings.REVERIE_TRUSTED_PROXIES = []

    assert client_address(request("203.0.113.7", "198.51.100.9")) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_client_is_the_hop_it_appended(settings):
    settings.REVERIE_TRUSTED_PROXIES = ["10.0.0.0/8"]

    assert client_address(request(PROXY, "198.51.100.9")) == "198.51.100.9"
    # A client-written (forged) hop left of the one the proxy appended is never used.
    assert client_address(request(PROXY, "1.2.3.4, 198.51.100.9")) == "198.51.100.9"
    # Two proxies in a chain (both trusted): the first untrusted hop from the right.
    assert client_address(request(PROXY, "1.2.3.4, 198.51.100.9, 10.0.0.7")) == "198.51.100.9"
    assert client_address(request(PROXY)) == PROXY  # no header: the proxy itself


def test_a_spoofed_header_from_an_untrusted_peer_is_ignored(settings):
    settings.REVERIE_TRUSTED_PROXIES = ["10.0.0.0/8"]

    assert client_address(request("203.0.113.7", "10.0.0.9, 198.51.100.9")) == "203.0.113.7"


def test_garbled_hops_and_ipv6_peers(settings):
    settings.REVERIE_TRUSTED_PROXIES = ["127.0.0.1", "::1"]

    assert client_address(request("::1", "2001:db8::7")) == "2001:db8::7"
    assert client_address(request("127.0.0.1", "198.51.100.9:5123")) == "198.51.100.9"
    assert client_address(request("127.0.0.1", "evil, not-an-ip")) == "127.0.0.1"


def sign_in(client, password, *, remote, forwarded):
    return client.post(
        "/login/",
        {"username": "olive-owner", "password": password},
        REMOTE_ADDR=remote,
        HTTP_X_FORWARDED_FOR=forwarded,
    )


@pytest.fixture
def lockout_after_two(settings, owner):
    settings.REVERIE_LOGIN_MAX_FAILURES = 2
    settings.REVERIE_LOGIN_LOCKOUT_SECONDS = 600
    owner.set_password("right-password")
    owner.save()


def test_behind_a_trusted_proxy_one_attacker_does_not_lock_out_everyone(
    client, settings, lockout_after_two
):
    settings.REVERIE_TRUSTED_PROXIES = [PROXY]
    for _ in range(2):
        sign_in(client, "wrong", remote=PROXY, forwarded="198.51.100.66")
    assert (
        sign_in(client, "right-password", remote=PROXY, forwarded="198.51.100.66").status_code
        == 429
    )

    from_the_owner = sign_in(client, "right-password", remote=PROXY, forwarded="203.0.113.7")

    assert from_the_owner.status_code == 302


def test_an_untrusted_peer_cannot_dodge_its_lockout_with_a_forged_header(
    client, settings, lockout_after_two
):
    settings.REVERIE_TRUSTED_PROXIES = [PROXY]  # the attacker reaches gunicorn directly
    for n in range(2):
        sign_in(client, "wrong", remote="198.51.100.66", forwarded=f"192.0.2.{n}")

    answer = sign_in(client, "right-password", remote="198.51.100.66", forwarded="192.0.2.99")

    assert answer.status_code == 429


def test_without_trusted_proxies_everyone_behind_the_proxy_shares_its_address(
    client, settings, lockout_after_two
):
    settings.REVERIE_TRUSTED_PROXIES = []  # the default: the header means nothing
    for _ in range(2):
        sign_in(client, "wrong", remote=PROXY, forwarded="198.51.100.66")

    assert (
        sign_in(client, "right-password", remote=PROXY, forwarded="203.0.113.7").status_code == 429
    )


def anonymous_ident(req) -> str:
    req.user = AnonymousUser()
    return ApiKeyRateThrottle().get_cache_key(req, view=None)


def test_the_api_throttles_anonymous_identity_uses_the_same_rule(settings):
    settings.REVERIE_TRUSTED_PROXIES = []
    # DRF's own get_ident believes X-Forwarded-For from anyone: a fresh budget per forged value.
    assert anonymous_ident(request("203.0.113.7", "192.0.2.1")) == "ip:203.0.113.7"

    settings.REVERIE_TRUSTED_PROXIES = [PROXY]
    assert anonymous_ident(request(PROXY, "192.0.2.1, 198.51.100.9")) == "ip:198.51.100.9"
    assert anonymous_ident(request("203.0.113.7", "192.0.2.1")) == "ip:203.0.113.7"


def test_a_bad_trusted_proxies_value_stops_start_up_naming_the_variable():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "REVERIE_TRUSTED_PROXIES": "10.0.0.0/8,nginx"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "REVERIE_TRUSTED_PROXIES must list IP addresses or networks" in result.stderr
