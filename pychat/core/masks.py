"""Who a ban, mute or kline is about, and for how long.

A room ban is one of three kinds, written as IRC writes them so both
protocols share one list:

* ``$a:NAME`` -- an account (whatever name or address its user has);
* ``nick!ident@host`` with ``*`` and ``?`` -- what people see of a user
  (a bare name means ``name!*@*``); compared ignoring case;
* ``1.2.3.4`` or ``1.2.3.0/24`` (IPv6 too) -- the real address, which
  nobody else is shown; server bans (klines) take only this kind.

Durations are ``90``, ``90s``, ``30m``, ``2h``, ``7d``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from functools import lru_cache
from typing import NamedTuple, Union

from pychat.core.text import fold, name_key

ACCOUNT_PREFIX = "$a:"
_DURATION = re.compile(r"^(\d{1,7})([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 366 * 86400
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class Subject(NamedTuple):
    """What a mask is compared with: a user as others see it, and what only the server knows."""

    prefix: str          # nick!ident@host
    address: str         # the address limits count (an IPv4 address or an IPv6 /64), never shown
    account: str | None  # the account's key, if logged in


def parse_duration(text: str) -> float | None:
    """Seconds for TEXT (``30m``), or None if TEXT is not a duration."""
    match = _DURATION.match(text.lower())
    if match is None:
        return None
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    return float(seconds) if 0 < seconds <= MAX_DURATION else None


def duration_text(seconds: float) -> str:
    """SECONDS in the largest unit that divides it: '45 s', '30 min', '2 h', '7 d'."""
    whole = max(1, round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if whole % size == 0:
            return f"{whole // size} {unit}"
    return f"{whole} s"


@lru_cache(maxsize=4096)
def network(text: str) -> Network | None:
    """TEXT as an address or CIDR network, or None. Cached: every check of a
    ban list compares the same masks and addresses again, and parsing them
    costs ten times the comparison."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


# The folded form of a user's nick!ident@host, for the same reason.
_folded = lru_cache(maxsize=4096)(fold)


def normalize_mask(text: str) -> str | None:
    """The canonical form of a ban mask, or None if TEXT is none of the kinds."""
    if not text or len(text) > 100 or " " in text or "," in text:
        return None
    if text.lower().startswith(ACCOUNT_PREFIX):
        name = text[len(ACCOUNT_PREFIX):]
        return f"{ACCOUNT_PREFIX}{name_key(name)}" if name else None
    net = network(text)
    if net is not None:
        return str(net)
    if "!" not in text and "@" not in text:
        text = f"{text}!*@*"
    elif "!" not in text:
        text = f"*!{text}"
    elif "@" not in text:
        text = f"{text}@*"
    return fold(text)


def matches(mask: str, who: Subject) -> bool:
    """True if the canonical MASK covers WHO."""
    if mask.startswith(ACCOUNT_PREFIX):
        return who.account is not None and mask[len(ACCOUNT_PREFIX):] == who.account
    if "!" in mask:
        return fnmatch.fnmatchcase(_folded(who.prefix), mask)
    net, theirs = network(mask), network(who.address)
    # A user's address is what per-address limits count: an IPv4 address or
    # an IPv6 /64 (pychat.core.limits.address_key), so networks are compared.
    return net is not None and theirs is not None and net.version == theirs.version and net.overlaps(theirs)
