"""Small records the Hall keeps: topics, bans and mutes, accounts."""

from __future__ import annotations

from typing import NamedTuple


class Topic(NamedTuple):
    text: str
    by: str
    at: float


class Ban(NamedTuple):
    """A ban or mute: the mask as it was given, who set it, when, and until when (None: for good)."""

    shown: str
    by: str
    at: float
    expires: float | None


class Account(NamedTuple):
    """A registered name: its key (the look-alike key), its name as registered,
    its password hash (pychat.core.passwords) and when it was made."""

    key: str
    name: str
    password_hash: str
    created: float
