"""Bucketing: stable per key, the split matches the percent, and growth keeps canary keys."""

import math

from scipy.stats import chisquare

from agents.routing import BUCKETS, CANARY, STABLE, RoutingState, bucket_for, choose_arm, in_canary

SALT = "0123456789abcdef0123456789abcdef"
KEYS = [f"user-{i}" for i in range(100_000)]


def test_a_key_always_lands_in_the_same_bucket():
    first = [bucket_for(salt=SALT, key=k) for k in KEYS[:1000]]
    again = [bucket_for(salt=SALT, key=k) for k in KEYS[:1000]]
    assert first == again
    assert all(0 <= b < BUCKETS for b in first)
    # A known value pins the hash so a refactor cannot silently reshuffle production keys.
    # sha256(b"salt:user-42")[:8] as a big-endian integer, mod 10,000 (computed independently).
    assert bucket_for(salt="salt", key="user-42") == 3567
    assert bucket_for(salt="salt", key="user-42") != bucket_for(salt="other", key="user-42")


def test_buckets_are_uniform_over_100k_keys():
    counts = [0] * 50
    for key in KEYS:
        counts[bucket_for(salt=SALT, key=key) * 50 // BUCKETS] += 1
    # 50 equal ranges of buckets: chi-square goodness of fit against uniform.
    assert chisquare(counts).pvalue > 0.001


def test_canary_share_over_100k_keys_is_within_a_binomial_bound_of_the_percent():
    n = len(KEYS)
    for percent in (1, 5, 25, 50, 90):
        in_arm = sum(in_canary(salt=SALT, key=k, percent=percent) for k in KEYS)
        p = percent / 100
        z = (in_arm - n * p) / math.sqrt(n * p * (1 - p))
        # |z| < 4 is a two-sided binomial test at about 6e-5 per percent.
        assert abs(z) < 4, (percent, in_arm, z)


def test_growing_the_percent_keeps_every_canary_key_in_the_canary():
    at = {
        percent: {k for k in KEYS[:20_000] if in_canary(salt=SALT, key=k, percent=percent)}
        for percent in (5, 25, 100)
    }
    assert at[5] and at[5] < at[25] < at[100]
    assert len(at[100]) == 20_000


def test_no_key_gets_the_stable_version_even_at_100_percent():
    state = RoutingState(salt=SALT, stable_version_id=1, canary_version_id=2, canary_percent=100)
    assert choose_arm(state, key=None) == (STABLE, 1)
    assert choose_arm(state, key="") == (STABLE, 1)
    assert choose_arm(state, key="anyone") == (CANARY, 2)


def test_without_a_canary_version_every_key_is_stable():
    state = RoutingState(salt=SALT, stable_version_id=1, canary_version_id=None, canary_percent=50)
    assert {choose_arm(state, key=k) for k in KEYS[:500]} == {(STABLE, 1)}


def test_different_agents_pick_independent_canary_keys():
    a = {k for k in KEYS[:20_000] if in_canary(salt="agent-a", key=k, percent=10)}
    b = {k for k in KEYS[:20_000] if in_canary(salt="agent-b", key=k, percent=10)}
    # Independent 10% samples overlap on about 1% of keys, not on 10%.
    assert len(a & b) < 0.02 * 20_000
