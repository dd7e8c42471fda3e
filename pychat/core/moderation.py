"""The rules of rooms: owners, operators and voice, topics, modes, kicks,
bans, mutes and invitations -- the Hall's part that keeps rooms civil.

Who may do what:

* the logged-in creator of a room owns it, and is its operator whenever
  present; anyone who creates a room is its operator while they stay;
* operators set the topic when it is locked (+t), change modes, give and
  take operator and voice, kick, ban and mute, and invite;
* in a moderated room (+m) only operators and voiced members speak; a
  muted member never does.

Modes are IRC's: i (invite-only), m (moderated), n (no messages from
outside; always on for line users, who must be in a room to speak), s
(secret: hidden from listings), t (topic locked to operators), k (a key),
l (a member limit). Roles given to logged-in users, topics, modes, bans and
mutes are stored; bans and mutes may expire, and are dropped when seen
expired. Each change is told to the room as one event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

from pychat.core.errors import (BAD_ARGUMENT, BANNED, CANNOT_SPEAK, INVITE_ONLY, NEEDS_KEY,
                                NOT_IN_ROOM, NOT_OPERATOR, ROOM_FULL, TARGET_NOT_IN_ROOM, UNKNOWN_MODE,
                                TRY_LATER, Busy, ChatError)
from pychat.core.events import Kicked, ModeChanged, TopicSet
from pychat.core.history import NOTICE as STORED_NOTICE
from pychat.core.masks import ACCOUNT_PREFIX, Subject, duration_text, matches, normalize_mask
from pychat.core.records import Ban, Topic
from pychat.core.roomkeys import hash_key
from pychat.core.text import MAX_TYPED, clip, sanitize

if TYPE_CHECKING:
    from pychat.core.history import HistoryStore, StoredRoom
    from pychat.core.model import Renderer, Room, User

TOPIC_MAX = 300
REASON_MAX = 200
BANS_MAX = 100          # bans (and mutes) a room keeps
MODES_MAX = 12          # mode changes made from one request (IRC's MODES); the rest are left
INVITE_SECONDS = 3600.0  # an invitation holds this long
FLAGS = "imnst"          # modes without a parameter
MODE_WORDS = {
    "i": ("made the room invite-only", "opened the room to everyone"),
    "m": ("made the room moderated: only operators and voiced members speak", "let everyone speak again"),
    "n": ("closed the room to messages from outside", "let people outside the room send to it"),
    "s": ("made the room secret", "made the room visible in listings"),
    "t": ("locked the topic to operators", "let everyone set the topic"),
}


class ModeChange(NamedTuple):
    """One change of a MODE request: '+' or '-', the letter, and its argument.

    Letters are IRC's, plus ``q`` for a mute (IRC writes it ``+b m:MASK``);
    a ban or mute may last DURATION seconds.
    """

    sign: str
    letter: str
    arg: str | None
    duration: float | None = None


class ModeRefusal(NamedTuple):
    """A change that was not made, and why (a code from pychat.core.errors)."""

    letter: str
    arg: str | None
    code: str
    text: str


class ModerationMixin:
    """Room rules, over the Hall's state."""

    # The Hall's state this part uses.
    users: dict[str, User]
    rooms: dict[str, Room]
    secret_rooms: set[Room]
    history: HistoryStore
    uncommitted: list[tuple[bytes, User | None]]
    touched: set[Room]

    if TYPE_CHECKING:  # the Hall's methods this part calls
        def _check_key(self, user: User, room: Room, key: str, now: float) -> None: ...
        def _remove_member(self, room: Room, user: User) -> None: ...
        def _forget_if_idle(self, room: Room) -> None: ...
        def _spend_slow_check(self, address: str, now: float, cost: float = 1.0, what: str = "key") -> None: ...
        def user_named(self, name: str) -> User: ...
        def find_user(self, name: str) -> User | None: ...

    # -- loading and saving -------------------------------------------------

    def _load_room_settings(self, room: Room, stored: StoredRoom) -> None:
        room.owner = stored.owner
        if stored.topic:
            room.topic = Topic(stored.topic, stored.topic_by or "", stored.topic_at or 0.0)
        room.modes = set(stored.modes or "") & set(FLAGS)
        room.limit = stored.user_limit
        if "s" in room.modes:
            self.secret_rooms.add(room)

    def _load_room_rules(self) -> None:
        by_id = {room.id: room for room in self.rooms.values()}
        for room_id, account, role in self.history.room_roles():
            room = by_id.get(room_id)
            if room is not None:
                (room.op_accounts if role == "o" else room.voice_accounts).add(account)
        for room_id, kind, mask, shown, by, at, expires in self.history.room_bans():
            room = by_id.get(room_id)
            if room is not None:
                (room.bans if kind == "b" else room.mutes)[mask] = Ban(shown, by, at, expires)
        for room in by_id.values():
            self._regate(room)

    def _save_settings(self, room: Room) -> None:
        topic = room.topic
        self.history.save_room_settings(room.id, room.owner, topic.text if topic else None,
                                        topic.by if topic else None, topic.at if topic else None,
                                        "".join(sorted(room.modes)), room.limit)

    @staticmethod
    def _has_settings(room: Room) -> bool:
        """True if someone set anything for ROOM that a restart must keep."""
        return bool(room.owner or room.topic or room.op_accounts or room.voice_accounts or room.bans or room.mutes)

    # -- roles --------------------------------------------------------------

    def _require_operator(self, user: User, room: Room) -> None:
        if user not in room.members:
            raise ChatError(f"you are not in #{room.name}", NOT_IN_ROOM)
        if user not in room.ops and not user.oper:  # server operators run every room
            raise ChatError(f"only operators of #{room.name} may do that", NOT_OPERATOR)

    def _restore_roles(self, user: User, room: Room) -> None:
        """Give USER, entering ROOM or logging in, the roles kept for its account."""
        account = user.account
        if account is None:
            return
        if account == room.owner or account in room.op_accounts:
            room.ops.add(user)
        elif account in room.voice_accounts:
            room.voiced.add(user)

    def _drop_account_roles(self, user: User, room: Room) -> None:
        """USER logs out: the roles it held through its account go."""
        account = user.account
        if account is not None and (account == room.owner or account in room.op_accounts):
            room.ops.discard(user)
        if account is not None and account in room.voice_accounts:
            room.voiced.discard(user)

    def _member(self, room: Room, name: str) -> User:
        target = self.user_named(name)
        if target not in room.members:
            raise ChatError(f"{target.name} is not in #{room.name}", TARGET_NOT_IN_ROOM)
        return target

    # -- entering and speaking ------------------------------------------------

    def _subject(self, user: User) -> Subject:
        return Subject(user.prefix, user.address, user.account)

    def _find_ban(self, user: User, room: Room, kind: str, now: float) -> Ban | None:
        """The ban (KIND "b") or mute ("m") in force in ROOM that covers USER, if any."""
        subject = self._subject(user)
        for mask, ban in self._in_force(room, kind, now).items():
            if matches(mask, subject):
                return ban
        return None

    def _in_force(self, room: Room, kind: str, now: float) -> dict[str, Ban]:
        """ROOM's bans (KIND "b") or mutes ("m"), the expired ones dropped first."""
        table = room.bans if kind == "b" else room.mutes
        expired = [mask for mask, ban in table.items() if ban.expires is not None and ban.expires <= now]
        for mask in expired:
            del table[mask]
            self.history.delete_ban(room.id, kind, mask)
        if expired:
            self._regate(room)
        return table

    @staticmethod
    def _regate(room: Room) -> None:
        """A room is gated (its speakers checked) while moderated or with mutes."""
        room.gated = "m" in room.modes or bool(room.mutes)

    def _may_enter(self, user: User, room: Room, key: str | None, now: float, *, key_checked: bool = False) -> None:
        """Raise ChatError unless USER may join ROOM (its owner and operators by account always may).

        KEY_CHECKED: the key was checked already (by the node the user is on, in a cluster)."""
        account = user.account
        if account is not None and (account == room.owner or account in room.op_accounts):
            return
        invited = room.invited.get(user.key, 0.0) > now
        if room.bans and not invited and self._find_ban(user, room, "b", now):
            raise ChatError(f"you are banned from #{room.name}", BANNED)
        if "i" in room.modes and not invited:
            raise ChatError(f"#{room.name} is invite-only: an operator must /invite you", INVITE_ONLY)
        if room.limit is not None and len(room.members) >= room.limit and not invited:
            raise ChatError(f"#{room.name} is full ({room.limit} members)", ROOM_FULL)
        if room.locked and not key_checked:
            if not key:
                raise ChatError(f"#{room.name} is locked: /join {room.name} KEY", NEEDS_KEY)
            self._check_key(user, room, key, now)

    def _check_voice(self, user: User, room: Room, now: float) -> None:
        """In a moderated room, or one with mutes: raise ChatError unless USER may
        speak. Operators and voiced members always may (a voice overrides a mute, as on IRC)."""
        if user in room.ops or user in room.voiced or user.oper:
            return
        if room.mutes and self._find_ban(user, room, "m", now):
            raise ChatError(f"you are muted in #{room.name}", CANNOT_SPEAK)
        if "m" in room.modes:
            raise ChatError(f"#{room.name} is moderated: only operators and voiced members speak", CANNOT_SPEAK)

    # -- events ----------------------------------------------------------------

    def _tell_room(self, room: Room, render: Callable[[Renderer], bytes], extra: User | None = None) -> None:
        """An event to every member of ROOM (and EXTRA, who may have just left it)."""
        self.touched.add(room)
        for renderer, members in room.groups.items():
            data = render(renderer)
            self.uncommitted.append((data, None))
            for push in members.values():
                push(data)
        if extra is not None and extra not in room.members:
            extra.send(render(extra.renderer))

    # -- topics -------------------------------------------------------------------

    def set_topic(self, user: User, room: Room, text: str, now: float) -> None:
        if user not in room.members:
            raise ChatError(f"you are not in #{room.name}", NOT_IN_ROOM)
        if "t" in room.modes and user not in room.ops and not user.oper:
            raise ChatError(f"the topic of #{room.name} is locked: only operators set it", NOT_OPERATOR)
        text = sanitize(text).strip()[:TOPIC_MAX]
        room.topic = Topic(text, user.name, now) if text else None
        self._save_settings(room)
        event = TopicSet(now, room.name, user.name, user.prefix, text)
        self._tell_room(room, lambda r: r.topic(event))

    # -- modes -------------------------------------------------------------------

    def set_modes(self, user: User, room: Room, changes: list[ModeChange],
                  now: float) -> tuple[list[ModeChange], list[ModeRefusal]]:
        """Make CHANGES as operator of ROOM; the room is told of those made, in one event."""
        self._require_operator(user, room)
        made: list[ModeChange] = []
        refused: list[ModeRefusal] = []
        words: list[str] = []
        for change in changes[:MODES_MAX]:
            try:
                word, shown = self._change_mode(user, room, change, now)
            except Busy:
                if not made:
                    raise  # nothing changed yet: the whole request waits (and is tried again)
                refused.append(ModeRefusal(change.letter, change.arg, TRY_LATER,
                                           "the server is busy checking keys; try again in 1 s"))
                continue
            except ChatError as exc:
                refused.append(ModeRefusal(change.letter, change.arg, exc.code, str(exc)))
                continue
            if word:
                made.append(change._replace(arg=shown))
                words.append(word)
        if made:
            self._save_settings(room)
            modes, args = _modestring(made)
            event = ModeChanged(now, room.name, user.name, user.prefix, modes, args, "; ".join(words))
            self._tell_room(room, lambda r: r.mode(event))
        return made, refused

    def _change_mode(self, user: User, room: Room, change: ModeChange, now: float) -> tuple[str, str | None]:
        """Make one change: its description in words ("" if it changed
        nothing) and its argument as the room is shown it."""
        sign, letter, arg, duration = change
        on = sign == "+"
        if letter in FLAGS:
            if (letter in room.modes) == on:
                return "", None
            (room.modes.add if on else room.modes.discard)(letter)
            self._regate(room)
            (self.secret_rooms.add if "s" in room.modes else self.secret_rooms.discard)(room)
            return MODE_WORDS[letter][0 if on else 1], None
        if letter == "l":
            if not on:
                if room.limit is None:
                    return "", None
                room.limit = None
                return "lifted the member limit", None
            if arg is None or not arg.isdigit() or not 0 < int(arg) <= 100_000:
                raise ChatError(f"a member limit is a number from 1 to 100000, not {clip(arg or '')!r}", BAD_ARGUMENT)
            room.limit = int(arg)
            return f"limited the room to {room.limit} members", arg
        if letter == "k":
            if not on:
                if room.key_hash is None:
                    return "", None
                room.key_hash, room.good_key = None, None
                self.history.set_room_key(room.id, None)
                return "removed the room's key", None
            if not arg or " " in arg or len(arg) > 64:
                raise ChatError("a key is 1-64 characters, without spaces", BAD_ARGUMENT)
            self._spend_slow_check(user.address, now)  # hashing a key costs a check
            room.key_hash, room.good_key = hash_key(arg), arg
            self.history.set_room_key(room.id, room.key_hash)
            return "locked the room with a key", arg
        if letter in "ov":
            if arg is None:
                raise ChatError(f"+{letter} needs a name", BAD_ARGUMENT)
            target = self._member(room, arg)
            return self._set_role(room, target, letter, on), target.name
        if letter in "bq" and arg is not None:
            kind = "b" if letter == "b" else "m"
            if not on:
                shown = self.unban(user, room, arg, now, kind)
                return (f"lifted the ban on {shown}" if kind == "b" else f"let {shown} speak again"), shown
            shown = self.ban(user, room, arg, duration, now, kind)
            lasting = f" for {duration_text(duration)}" if duration else ""
            return (f"banned {shown}{lasting}" if kind == "b" else f"muted {shown}{lasting}"), shown
        raise ChatError(f"unknown mode {letter!r}", UNKNOWN_MODE)

    def _set_role(self, room: Room, target: User, letter: str, on: bool) -> str:
        people, accounts = (room.ops, room.op_accounts) if letter == "o" else (room.voiced, room.voice_accounts)
        what = "an operator" if letter == "o" else "a voice"
        if (target in people) == on:
            return ""
        if not on and letter == "o" and target.account is not None and target.account == room.owner:
            raise ChatError(f"{target.name} owns #{room.name}", NOT_OPERATOR)
        (people.add if on else people.discard)(target)
        if target.account is not None:  # a role given to an account is kept
            (accounts.add if on else accounts.discard)(target.account)
            self.history.save_role(room.id, target.account, letter if on else None)
        if letter == "v":
            return f"gave {target.name} a voice" if on else f"took the voice of {target.name}"
        return f"made {target.name} {what}" if on else f"took operator from {target.name}"

    # -- kicks, bans, mutes, invitations -----------------------------------------------

    def kick(self, user: User, room: Room, target_name: str, reason: str, now: float) -> User:
        self._require_operator(user, room)
        target = self._member(room, target_name)
        if target.account is not None and target.account == room.owner and user.account != room.owner:
            raise ChatError(f"{target.name} owns #{room.name}", NOT_OPERATOR)
        reason = sanitize(reason).strip()[:REASON_MAX]
        event = Kicked(now, room.name, user.name, user.prefix, target.name, reason)
        self.history.append(room.id, now, STORED_NOTICE, target.name,
                            f"{target.name} was kicked by {user.name}" + (f" ({reason})" if reason else ""))
        self._tell_room(room, lambda r: r.kicked(event))
        self._remove_member(room, target)
        self._forget_if_idle(room)
        return target

    def ban_out(self, user: User, room: Room, text: str, duration: float | None,
                now: float) -> tuple[list[ModeChange], list[ModeRefusal]]:
        """Ban TEXT in ROOM (as set_modes does) and kick the members it covers,
        but USER and operators: a ban keeps them out, so those here go. One
        request, so that a cluster carries it as one event."""
        made, refused = self.set_modes(user, room, [ModeChange("+", "b", text, duration)], now)
        if not refused:
            for member in self.banned_members(room, text):
                if member is not user and member not in room.ops:
                    self.kick(user, room, member.name, "banned", now)
        return made, refused

    def _mask_for(self, room: Room, text: str) -> tuple[str, str]:
        """(canonical mask, shown) for a ban or mute: an online member's account
        (or name) for a bare name, else the mask as given."""
        if "!" not in text and "@" not in text and not text.startswith(ACCOUNT_PREFIX) and len(text) <= MAX_TYPED:
            target = self.find_user(text)
            if target is not None and target.account is not None:
                return f"{ACCOUNT_PREFIX}{target.account}", f"{ACCOUNT_PREFIX}{target.name}"
        mask = normalize_mask(text)
        if mask is None:
            raise ChatError(f"not a name or mask: {clip(text)} (name, $a:ACCOUNT, nick!user@host, 1.2.3.0/24)",
                            BAD_ARGUMENT)
        return mask, text if "!" in text or "@" in text or mask.startswith(ACCOUNT_PREFIX) else mask

    def ban(self, user: User, room: Room, text: str, duration: float | None, now: float,
            kind: str = "b") -> str:
        """Ban (KIND 'b') or mute ('m') a name or mask in ROOM; the mask as shown."""
        self._require_operator(user, room)
        table = room.bans if kind == "b" else room.mutes
        mask, shown = self._mask_for(room, text)
        if mask not in table and len(table) >= BANS_MAX:
            raise ChatError(f"#{room.name} has {BANS_MAX} entries already", BAD_ARGUMENT)
        expires = now + duration if duration else None
        table[mask] = Ban(shown, user.name, now, expires)
        self.history.save_ban(room.id, kind, mask, shown, user.name, now, expires)
        self._regate(room)
        return shown

    def unban(self, user: User, room: Room, text: str, now: float, kind: str = "b") -> str:
        self._require_operator(user, room)
        table = room.bans if kind == "b" else room.mutes
        mask = None
        for key, ban in table.items():
            if text in (key, ban.shown) or ban.shown.lower() == text.lower():
                mask = key
                break
        if mask is None:
            try:
                mask = self._mask_for(room, text)[0]
            except ChatError:
                mask = None
        if mask is None or mask not in table:
            raise ChatError(f"no {'ban' if kind == 'b' else 'mute'} for {clip(text)} in #{room.name}", BAD_ARGUMENT)
        shown = table.pop(mask).shown
        self.history.delete_ban(room.id, kind, mask)
        self._regate(room)
        return shown

    def ban_list(self, room: Room, now: float, kind: str = "b") -> list[Ban]:
        """The room's bans (or mutes) still in force."""
        return list(self._in_force(room, kind, now).values())

    def banned_members(self, room: Room, text: str) -> list[User]:
        """The members of ROOM that the ban TEXT (as given to ban()) covers:
        one mask against each member, not the whole list (a room full of
        bans would make every /ban cost members x bans comparisons)."""
        mask, _ = self._mask_for(room, text)
        return [member for member in room.members if matches(mask, self._subject(member))]

    def allow_in(self, user: User, target: User, room: Room, now: float) -> None:
        """USER invites TARGET. An operator's invitation lets it into ROOM for an
        hour, past invite-only, a ban or the member limit; anyone else's is
        only a word (in an invite-only room only operators invite)."""
        if user not in room.members:
            raise ChatError(f"you are not in #{room.name}", NOT_IN_ROOM)
        if user not in room.ops and not user.oper:
            if "i" in room.modes:
                raise ChatError(f"#{room.name} is invite-only: only its operators invite", NOT_OPERATOR)
            return
        if len(room.invited) > 1000:
            room.invited = {k: t for k, t in room.invited.items() if t > now}
        room.invited[target.key] = now + INVITE_SECONDS


def _modestring(changes: list[ModeChange]) -> tuple[str, tuple[str, ...]]:
    """IRC's form of CHANGES: ``+ov-k`` and the arguments in order."""
    out, args, sign = [], [], ""
    for change in changes:
        if change.sign != sign:
            out.append(change.sign)
            sign = change.sign
        out.append("b" if change.letter == "q" else change.letter)  # IRC's mute: +b m:MASK
        if change.arg is not None and (change.letter in "ovbq" or change.sign == "+" and change.letter in "kl"):
            args.append("*" if change.letter == "k" else f"m:{change.arg}" if change.letter == "q" else change.arg)
    return "".join(out), tuple(args)

