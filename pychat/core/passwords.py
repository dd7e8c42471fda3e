"""Account passwords: stored only as salted, memory-hard hashes.

scrypt from the standard library, with Django's parameters (N=2**14, r=8,
p=1: 16 MiB of memory per check). On this project's 2-core machine one
check costs about 37 ms of the single thread, so it draws two units from the
same slow-check budgets as room keys (pychat.core.limits), and hashes are
spaced apart (pychat.core.model.HASH_GAP): a bystander never waits for more
than one. N=2**17 (OWASP's first choice, 128 MiB) would cost
about 300 ms, more than a single-threaded server can give to one login.
The parameters are stored with each hash, so raising them later keeps old
passwords valid.
"""

from __future__ import annotations

import hashlib
import hmac
import os

_SCHEME = "scrypt"
N, R, P = 2 ** 14, 8, 1
CHECK_COST = 2.0       # units of the slow-check budget a password check draws
MIN_LENGTH = 8
MAX_LENGTH = 256


def password_problem(password: str) -> str | None:
    """Why PASSWORD cannot be used, or None."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password has at most {MAX_LENGTH} characters"
    if password != password.strip():
        return "a password cannot start or end with a space"  # the line protocol could not send it
    return None


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$SALT$HASH`` for PASSWORD with a fresh salt."""
    salt = os.urandom(16)
    return f"{_SCHEME}${N}${R}${P}${salt.hex()}${_derive(password, salt, N, R, P).hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True if PASSWORD matches STORED (constant-time comparison)."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != _SCHEME or len(password) > MAX_LENGTH:
            return False
        digest = _derive(password, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, bytes.fromhex(digest_hex))
