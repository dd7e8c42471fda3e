"""Budgets for work that one client could make everyone else pay for.

A :class:`TokenBucket` allows a burst and then a steady rate. :class:`KeyedBuckets`
keeps one bucket per key (a source address, a user) and forgets the keys whose
bucket is full again, so that its memory follows the number of keys active
recently, not the number ever seen. Time is an argument (seconds on any clock
that does not jump back much); nothing here reads a clock.

Addresses are counted by :func:`address_key`: an IPv4 address as itself, an
IPv6 address by its /64 network, because one IPv6 host usually holds a whole /64
and could otherwise pass for 2**64 different clients.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Rate:
    """A budget: BURST units at once, refilled at PER_SECOND units a second."""

    burst: float
    per_second: float


class TokenBucket:
    """One budget; :meth:`take` spends a unit if one is there."""

    __slots__ = ("rate", "tokens", "stamp")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.rate.burst, self.tokens + elapsed * self.rate.per_second)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend COST units if the bucket holds them; False (and nothing spent) if not."""
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def available(self, now: float) -> float:
        """The units there are now."""
        self._refill(now)
        return self.tokens

    def charge(self, cost: float, floor: float) -> None:
        """Spend COST units whether or not they are there, down to FLOOR at most:
        a penalty that makes the next wait longer."""
        self.tokens = max(floor, self.tokens - cost)

    def wait(self, now: float, cost: float = 1.0) -> float:
        """Seconds until COST units are there (0 if they are now)."""
        self._refill(now)
        missing = cost - self.tokens
        if missing <= 0:
            return 0.0
        return missing / self.rate.per_second if self.rate.per_second > 0 else math.inf

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.rate.burst


class KeyedBuckets:
    """One :class:`TokenBucket` per key, created full on first use."""

    __slots__ = ("rate", "_buckets", "_next_sweep")

    SWEEP_SIZE: Final = 1024      # sweep only once there are this many keys...
    SWEEP_INTERVAL: Final = 10.0  # ...and at most this often

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._next_sweep = 0.0

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._sweep(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, now)
        return bucket

    def take(self, key: str, now: float, cost: float = 1.0) -> bool:
        return self.bucket(key, now).take(now, cost)

    def wait(self, key: str, now: float, cost: float = 1.0) -> float:
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None else bucket.wait(now, cost)

    def _sweep(self, now: float) -> None:
        """Forget keys whose bucket has refilled: they hold no information."""
        if len(self._buckets) < self.SWEEP_SIZE or now < self._next_sweep:
            return
        self._next_sweep = now + self.SWEEP_INTERVAL
        for key in [k for k, b in self._buckets.items() if b.full(now)]:
            del self._buckets[key]


def address_key(ip: str) -> str:
    """The unit that per-address limits count: an IPv4 address, or an IPv6 /64."""
    if ":" not in ip:
        return ip
    try:
        net = ipaddress.IPv6Network(f"{ip.split('%', 1)[0]}/64", strict=False)
    except ValueError:
        return ip
    return str(net)


def seconds_text(seconds: float) -> str:
    """A wait as people read it, rounded up: '1 s', '12 s', '3 min'."""
    if seconds <= 90:
        return f"{max(1, math.ceil(seconds))} s"
    return f"{math.ceil(seconds / 60)} min"


@dataclass(frozen=True, slots=True)
class HallLimits:
    """What one user or address may make the Hall do, and the room cap.

    The slow check is a key hash (about 20 ms of the single thread) or a
    password hash (about 40 ms, two units). Per address, five at once and then one every two
    seconds, and each wrong key in a row costs twice the one before (up to
    SUSPECT_PENALTY_MAX): an honest typo costs nothing, guessing goes
    nowhere. For the whole server two shares: addresses that gave a wrong
    key within SUSPECT_SECONDS draw from CHECKS_SUSPECT, all others (and
    new keys) from CHECKS_SERVER, so guessers from many addresses cannot
    lock out someone who knows the key. Together at most eight units a
    second (under a fifth of one core); and two hashes are always at least
    HASH_GAP apart, so a bystander never waits for more than one.
    """

    max_rooms: int = 10_000
    per_address: bool = True            # off with --max-per-ip 0 (everyone behind one proxy)
    rooms_per_user: Rate = Rate(3, 1 / 10)
    rooms_per_address: Rate = Rate(10, 1 / 6)
    checks_per_address: Rate = Rate(5, 0.5)
    checks_server: Rate = Rate(2, 6)
    checks_suspect: Rate = Rate(1, 2)


SUSPECT_SECONDS: Final = 600.0
SUSPECT_PENALTY_MAX: Final = 64.0
