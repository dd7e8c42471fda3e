"""A cluster node's requests on rooms' settings and moderation: topics, modes
(a new key hashed once, where it is typed), roles, kicks, bans, mutes,
invitations, messages to operators and typing notices. Each is published,
and every node makes it with the base Hall's rules when it comes back."""

from __future__ import annotations

from typing import Any, Callable

from pychat.core.errors import BAD_ARGUMENT, NO_SUCH_USER, NOT_IN_ROOM, ChatError
from pychat.core.events import MESSAGE
from pychat.core.model import Room, User
from pychat.core.moderation import MODES_MAX, ModeChange, ModeRefusal
from pychat.core.records import Ban
from pychat.core.replicated_base import NO_OUTCOME, StreamHall
from pychat.core.roomkeys import hash_key


class RoomRequests(StreamHall):
    """Rooms' settings and moderation, through the stream."""

    # -- rooms' settings and moderation -------------------------------------------

    def _room_request(self, user: User, room: Room, op: str, args: list[Any], now: float) -> Any:
        """Publish OP on ROOM by USER; every node makes it with the base Hall's
        method when it comes back (see _ROOM_OPS), and USER's retry takes its outcome."""
        done = self._outcome(user.outbox, op, room.key)
        if done is not NO_OUTCOME:
            return done
        self._request(user, op, room.key, ["room", op, user.key, user.fence, room.key, args, now])

    def set_topic(self, user: User, room: Room, text: str, now: float) -> None:
        if self._applying:
            super().set_topic(user, room, text, now)
            return
        self._room_request(user, room, "topic", [text], now)

    def set_modes(self, user: User, room: Room, changes: list[ModeChange],
                  now: float) -> tuple[list[ModeChange], list[ModeRefusal]]:
        if self._applying:
            return super().set_modes(user, room, changes, now)
        done = self._outcome(user.outbox, "modes", room.key)
        if done is not NO_OUTCOME:
            return done  # type: ignore[no-any-return]
        self._bus()  # before a key is hashed
        self._require_operator(user, room)  # nobody else makes the server hash a key
        shared: list[list[Any]] = []
        for sign, letter, arg, duration in changes[:MODES_MAX]:
            if letter == "k" and sign == "+":
                hashed = any(c[1] == "k" and c[0] == "+" and c[2] not in ("", "?") for c in shared)
                arg = self._shareable_key(user, arg, now, first=not hashed)
            shared.append([sign, letter, arg, duration])
        return self._room_request(user, room, "modes", shared, now)  # type: ignore[no-any-return]

    def _shareable_key(self, user: User, key: str | None, now: float, first: bool) -> str:
        """A new key as the stream carries it: hashed here, once (its salt is
        random: every node must take the same hash), within this user's budget.
        A key that cannot be one goes as "", a second key in one request as "?":
        every node refuses those alike."""
        if not key or " " in key or len(key) > 64:
            return ""
        if not first:
            return "?"  # (two hashes in a row would wait for each other)
        self._spend_slow_check(user.address, now)
        return hash_key(key)

    def _change_mode(self, user: User, room: Room, change: ModeChange, now: float) -> tuple[str, str | None]:
        if not (self._applying and change.letter == "k" and change.sign == "+"):
            return super()._change_mode(user, room, change, now)
        # A new key comes hashed (see _shareable_key).
        if not change.arg:
            raise ChatError("a key is 1-64 characters, without spaces", BAD_ARGUMENT)
        if change.arg == "?":
            raise ChatError("one key at a time", BAD_ARGUMENT)
        room.key_hash, room.good_key = change.arg, None
        self.history.set_room_key(room.id, room.key_hash)
        return "locked the room with a key", "*"

    def kick(self, user: User, room: Room, target_name: str, reason: str, now: float) -> User:
        if self._applying:
            return super().kick(user, room, target_name, reason, now)
        return self._room_request(user, room, "kick", [target_name, reason], now)  # type: ignore[no-any-return]

    def ban_out(self, user: User, room: Room, text: str, duration: float | None,
                now: float) -> tuple[list[ModeChange], list[ModeRefusal]]:
        if self._applying:
            return super().ban_out(user, room, text, duration, now)
        return self._room_request(user, room, "banout", [text, duration], now)  # type: ignore[no-any-return]

    def invite(self, user: User, target: User, room: Room, now: float) -> None:
        if self._applying:
            super().invite(user, target, room, now)
            return
        self._room_request(user, room, "invite", [target.key], now)

    def say_to_operators(self, user: User, room: Room, text: str, now: float, kind: int = MESSAGE,
                         status: str = "@", tags: str = "") -> None:
        if self._applying:
            super().say_to_operators(user, room, text, now, kind, status, tags)
            return
        self._check_may_speak(user, room, now)
        self._bus().publish(["toops", user.key, user.fence, room.key, text, kind, status, tags, now])

    # -- typing notices ---------------------------------------------------------

    def tag_room(self, user: User, room: Room, tags: str, now: float) -> None:
        """Tags with no text (IRC's TAGMSG: typing notices): like a message, not stored."""
        if self._applying:
            super().tag_room(user, room, tags, now)
            return
        self._check_may_speak(user, room, now)
        self._bus().publish(["tag", user.key, user.fence, "#" + room.key, tags, now])

    def tag_user(self, user: User, target_name: str, tags: str, now: float) -> User:
        if self._applying:
            return super().tag_user(user, target_name, tags, now)
        target = self.user_named(target_name)
        self._bus().publish(["tag", user.key, user.fence, target.key, tags, now])
        return target

    def _apply_room(self, node: str, fence: int, event: list[Any]) -> None:
        _, op, key, user_fence, room_id, args, now = event
        user = self._sender(key, user_fence)
        if user is None:
            return
        room = self.rooms.get(room_id)
        if room is None:
            self._settle(user.outbox, op, room_id, ChatError(f"#{room_id} is gone", NOT_IN_ROOM))
            return
        self._carry_out_request(user, op, room_id, _ROOM_OPS.get(op), room, args, now)

    def _apply_tag(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, user_fence, target, tags, now = event
        user = self._sender(key, user_fence)
        if user is None:
            return
        try:
            if target.startswith("#"):
                room = self.rooms.get(target[1:])
                if room is not None:
                    self.tag_room(user, room, tags, now)
                return
            recipient = self.users.get(target)
            if recipient is not None and (self._local(user) or self._local(recipient)):
                self.tag_user(user, recipient.name, tags, now)
        except ChatError:
            pass  # a typing notice that can no longer be shown is dropped quietly

    def _apply_toops(self, node: str, fence: int, event: list[Any]) -> None:
        _, key, user_fence, room_id, text, kind, status, tags, now = event
        user = self._sender(key, user_fence)
        room = self.rooms.get(room_id)
        if user is None or room is None:
            return
        try:
            self.say_to_operators(user, room, text, now, kind, status, tags)
        except ChatError as exc:
            self._tell(user, exc)

    def _in_force(self, room: Room, kind: str, now: float) -> dict[str, Ban]:
        """The bans in force; expired ones are dropped only while an event is carried
        out (at its time, on every node alike), never by a request on one node."""
        if self._applying:
            return super()._in_force(room, kind, now)
        table = room.bans if kind == "b" else room.mutes
        return {mask: ban for mask, ban in table.items() if ban.expires is None or ban.expires > now}


def _invite(hall: RoomRequests, user: User, room: Room, args: list[Any], now: float) -> None:
    target = hall.users.get(args[0])
    if target is None:
        raise ChatError("that user has left", NO_SUCH_USER)
    hall.invite(user, target, room, now)


# A room request (ReplicatedHall._room_request) as every node makes it: the
# base Hall's method, with what the stream carried (_applying is set).
_ROOM_OPS: dict[str, Callable[[RoomRequests, User, Room, list[Any], float], Any]] = {
    "topic": lambda hall, user, room, args, now: hall.set_topic(user, room, args[0], now),
    "modes": lambda hall, user, room, args, now: hall.set_modes(user, room, [ModeChange(*c) for c in args], now),
    "kick": lambda hall, user, room, args, now: hall.kick(user, room, args[0], args[1], now),
    "banout": lambda hall, user, room, args, now: hall.ban_out(user, room, args[0], args[1], now),
    "invite": _invite,
}
