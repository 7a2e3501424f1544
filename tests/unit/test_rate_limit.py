"""Token buckets per subject: a burst, then the rate; a wait that says when; full buckets forgotten."""

from __future__ import annotations

import pytest

from kernel.http.rate_limit import RateLimiter, retry_after


def test_a_burst_then_the_rate_then_a_wait_that_says_when() -> None:
    limiter = RateLimiter(per_second=2, burst=3)
    assert [limiter.wait("alice", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("alice", now=0.0) == pytest.approx(0.5)  # one token is back in half a second
    assert limiter.wait("bob", now=0.0) == 0.0  # each subject has its own bucket
    assert limiter.wait("alice", now=0.5) == 0.0
    assert limiter.wait("alice", now=0.5) > 0
    assert limiter.wait("alice", now=100.0) == 0.0  # refilled, never past the burst
    assert [limiter.wait("alice", now=100.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_refusals_do_not_drain_the_bucket_further() -> None:
    limiter = RateLimiter(per_second=1, burst=1)
    assert limiter.wait("alice", now=0.0) == 0.0
    for _ in range(10):
        assert limiter.wait("alice", now=0.5) == pytest.approx(0.5)
    assert limiter.wait("alice", now=1.0) == 0.0


def test_full_buckets_are_forgotten() -> None:
    limiter = RateLimiter(per_second=1000, burst=10)  # a bucket is full again 10 ms after its last use
    for n in range(100_000):  # a new caller every millisecond, each seen once
        limiter.wait(f"u{n}", now=n / 1000)
    assert len(limiter._buckets) <= 10_001  # the recent ones, not all 100,000


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert (retry_after(0.01), retry_after(1.0), retry_after(1.2)) == ("1", "1", "2")
