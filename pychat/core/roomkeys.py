"""Private-room keys: stored only as salted, slow hashes.

PBKDF2-HMAC-SHA256 from the standard library. The iteration count keeps a
stolen database expensive to attack while one check stays in the tens of
milliseconds, which matters because the server is single-threaded; flood
control bounds how often one connection can make it check a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

_SCHEME = "pbkdf2_sha256"
ITERATIONS = 60_000


def hash_key(key: str, *, iterations: int | None = None) -> str:
    """Return ``pbkdf2_sha256$ITER$SALT$HASH`` for KEY with a fresh salt.

    The iteration count is stored with the hash, so raising ITERATIONS
    later keeps old keys valid.
    """
    iterations = iterations or ITERATIONS
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
    return f"{_SCHEME}${iterations}${salt.hex()}${digest.hex()}"


def verify_key(key: str, stored: str) -> bool:
    """True if KEY matches the STORED hash (constant-time comparison)."""
    try:
        scheme, iterations, salt_hex, digest_hex = stored.split("$")
        if scheme != _SCHEME:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", key.encode(), bytes.fromhex(salt_hex), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(digest, bytes.fromhex(digest_hex))
