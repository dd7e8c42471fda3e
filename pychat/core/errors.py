"""A user's mistake, and why: the core's refusals, for every protocol.

A :class:`ChatError` carries a text for people and a code that protocols
which answer with numbers (IRC) map to theirs.
"""

from __future__ import annotations

# Why a request was refused, for protocols that answer with a code (IRC numerics).
NO_SUCH_USER = "no-such-user"
BAD_NAME = "bad-name"
NAME_TAKEN = "name-taken"
BAD_ROOM_NAME = "bad-room-name"
ROOM_EXISTS = "room-exists"
NEEDS_KEY = "needs-key"
WRONG_KEY = "wrong-key"
NOT_IN_ROOM = "not-in-room"                # the user asking is not in the room
TARGET_NOT_IN_ROOM = "target-not-in-room"  # the user named is not
ALREADY_IN_ROOM = "already-in-room"
TRY_LATER = "try-later"        # a budget is spent; the text says when to try again
ROOM_LIMIT = "room-limit"
SAME_NAME = "same-name"
NAME_REGISTERED = "name-registered"
BANNED = "banned"
INVITE_ONLY = "invite-only"
ROOM_FULL = "room-full"
CANNOT_SPEAK = "cannot-speak"
NOT_OPERATOR = "not-operator"          # a room operator's right
NOT_SERVER_OPERATOR = "not-server-operator"
NOT_LOGGED_IN = "not-logged-in"
BAD_PASSWORD = "bad-password"
NO_SUCH_ACCOUNT = "no-such-account"
BAD_ARGUMENT = "bad-argument"
UNKNOWN_MODE = "unknown-mode"


class ChatError(Exception):
    """A user's mistake: TEXT is shown to that user, CODE tells protocols what it was."""

    def __init__(self, text: str, code: str = "") -> None:
        super().__init__(text)
        self.code = code


class Busy(ChatError):
    """Not a mistake: the server's budget for slow checks (password and key
    hashes) is spent for now by others. Sessions hold the request and try it
    again in WAIT seconds instead of refusing it; where a request cannot be
    held, it is a refusal like any other, whose text says when to try again.
    Raised before anything changed, so trying again is safe."""

    def __init__(self, text: str, wait: float) -> None:
        super().__init__(text, TRY_LATER)
        self.wait = max(wait, 0.001)  # at least the next pass of the loop
