"""The IRC front end's session: one connection's state machine (PROTOCOL.md section 9).

Registration (CAP negotiation, PASS, NICK, USER), then commands dispatched
from a table. Raw lines come in (IRC needs its tags and CTCP's \\x01, so
text is cleaned here, per parameter, with the core's rules); replies are
IRC lines written with :func:`format_message`; everything users say goes
through the Hall, whose events the user's :class:`IrcRenderer` writes.

The core has no topics, channel operators, bans or server operators yet:
the commands that need them are answered as a server answers a user who
holds no such rights (ERR_CHANOPRIVSNEEDED, ERR_NOPRIVILEGES, ...).
"""

from __future__ import annotations

import base64
import fnmatch
import itertools
import logging
import re
import time
from typing import Callable

from pychat import __version__
from pychat.core import errors as E
from pychat.core.events import ACTION, MESSAGE, NOTICE, Joined, Parted, Renamed
from pychat.core.history import MAX_ID, HistoryError, StoredEvent
from pychat.core.errors import Busy, ChatError
from pychat.core.model import Hall, Outbox, Room, User
from pychat.core.masks import parse_duration
from pychat.core.moderation import MODES_MAX, REASON_MAX, TOPIC_MAX, ModeChange, ModeRefusal
from pychat.core.records import Account
from pychat.core.text import MAX_NAME, MAX_ROOM, clip, name_key, sanitize
from pychat.protocols.irc import message as m
from pychat.protocols.irc.message import Message, MessageError, client_tags, ctcp, format_message, parse
from pychat.protocols.irc.render import IrcRenderer, renderer_for, server_time, split_text

log = logging.getLogger("pychat.protocols.irc.session")

CAPS = ("batch", "echo-message", "message-tags", "multi-prefix", "sasl", "server-time")
CAP_VALUES = {"sasl": "PLAIN"}  # told with CAP LS 302
NETWORK = "pychat"
SERVER_INFO = "pychat: a small single-threaded chat server"  # the description, unless --server-info
VERSION = f"pychat-{__version__}"
FAST_ROOMS_MAX = 64     # rooms the fast path remembers per session (forgotten all at once past that)
TARGETS_MAX = 4         # targets in one PRIVMSG, NOTICE or WHOIS (TARGMAX)
ISUPPORT_PER_LINE = 12
LIST_MAX = 200          # rooms in one LIST answer (the busiest)
WHO_MAX = 200           # users in one answer to WHO by mask
WHOWAS_MAX = 10         # entries in one WHOWAS answer
AWAY_MAX = 200
ISON_MAX = 64
CHATHISTORY_MAX = 100   # messages in one CHATHISTORY answer
_NUMBER = re.compile(r"[0-9]{1,19}")  # a msgid or a count: ASCII digits (a msgid also at most MAX_ID)
MOTD = ("This pychat server's rooms are shared with its line-protocol users (nc HOST 22222).",
        "The history of a room is replayed when you join it.")

Handler = Callable[["IrcSession", Message, float], None]
_HANDLERS: dict[str, Handler] = {}
_BEFORE_REGISTRATION = {"CAP", "AUTHENTICATE", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"}
_batch_ids = itertools.count(1)


def _handles(*commands: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        for command in commands:
            _HANDLERS[command] = func
        return func
    return register


class IrcSession:
    """One IRC client's conversation with the Hall."""

    wants_text = False  # the server hands this session raw lines

    __slots__ = ("hall", "outbox", "send", "peer", "address", "server", "server_info", "user", "closing", "nick",
                 "ident", "realname", "caps", "negotiating", "pinged", "invisible", "cap_version", "password",
                 "account", "sasl", "held", "held_action", "_fast_rooms")

    def __init__(self, hall: Hall, outbox: Outbox, peer: str, address: str, server_name: str,
                 server_info: str = SERVER_INFO) -> None:
        self.hall = hall
        self.outbox = outbox
        self.send = outbox.queue
        self.peer = peer
        self.address = address
        self.server = server_name
        self.server_info = server_info  # its description, in LINKS and WHOIS
        self.user: User | None = None
        self.closing = False
        self.nick: str | None = None        # chosen, not yet registered
        self.ident: str | None = None       # from USER
        self.realname = ""
        self.caps: set[str] = set()
        self.negotiating = False            # CAP LS or REQ seen, CAP END not yet
        self.pinged = False                 # a PING of ours is unanswered
        self.invisible = False              # user mode +i
        self.cap_version = 0                # 302 if the client said CAP LS 302
        self.password: str | None = None   # from PASS: the account's password, at registration
        self.account: Account | None = None  # logged in by SASL before registration
        self.sasl: str | None = None        # the SASL mechanism under way
        # A check the server had no time for (pychat.core.errors.Busy): what to
        # try again, and in how many seconds; the loop holds the lines after it.
        self.held = 0.0
        self.held_action: Callable[[float], None] | None = None
        # The fast path's rooms by "PRIVMSG #name", checked once (see _fast_privmsg).
        self._fast_rooms: dict[bytes, Room] = {}

    # -- the session interface (pychat.server.loop) --------------------------

    @property
    def registered(self) -> bool:
        return self.user is not None

    def start(self) -> None:
        """IRC clients speak first: nothing to send."""

    def handle_line(self, raw: bytes, now: float) -> None:
        if self.closing:
            return
        user = self.user
        if user is not None and raw[:9] == b"PRIVMSG #" and self._fast_privmsg(user, raw, now):
            return
        if not raw.isascii():
            try:
                raw.decode()
            except UnicodeDecodeError:  # UTF8ONLY: say so, and drop the line
                self.send(format_message("FAIL", _command_word(raw), "INVALID_UTF8",
                                         "Messages must be UTF-8", source=self.server))
                return
        try:
            msg = parse(raw)
        except MessageError as exc:
            if exc.numeric is not None:
                self._reply(exc.numeric, exc.text)
            return
        if msg is None:
            return
        self.pinged = False
        handler = _HANDLERS.get(msg.command)
        if self.user is None and msg.command not in _BEFORE_REGISTRATION:
            if handler is not None or msg.command.isalpha():
                self._reply(m.ERR_NOTREGISTERED, "You have not registered")
            return
        if handler is None:
            self._reply(m.ERR_UNKNOWNCOMMAND, clip(msg.command, 32), "Unknown command")
            return
        try:
            handler(self, msg, now)
        except Busy as exc:  # registration and SASL name their retry; anything else is the whole line again
            self.held = exc.wait
            if self.held_action is None:
                self.held_action = lambda later: self.handle_line(raw, later)
        except ChatError as exc:  # a refusal no handler expected: say it plainly
            self.send(self._server_notice(str(exc)))

    def retry(self, now: float) -> None:
        """Try the held request again."""
        action, self.held_action = self.held_action, None
        if action is None:
            return
        try:
            action(now)
        except Busy as exc:  # held again: at the point the action names, if it named one
            self.held = exc.wait
            if self.held_action is None:
                self.held_action = action

    def _fast_privmsg(self, user: User, raw: bytes, now: float) -> bool:
        """The hot path: ``PRIVMSG #room :text`` with no tags, no prefix, one
        target, no CTCP, to a room the user is in. False
        sends the line down the general path, which handles everything else
        the same way, only slower.

        The command and target (``PRIVMSG #room``) are checked once and then
        remembered with their room; each message only checks that the user
        is still in it and that it lets everyone speak."""
        head, sep, body = raw.partition(b" :")
        room = self._fast_rooms.get(head)
        if room is None or room not in user.rooms:  # not seen yet, or left since
            room = self._fast_room(user, head)
            if room is None:
                return False
        if not sep or len(raw) > m.MAX_BODY or room.gated:
            return False  # the general path answers a refusal with its numeric
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return False  # the general path says INVALID_UTF8
        if not text or text[0] == "\x01":
            return False  # the general path answers 412, or handles CTCP
        if not text.isprintable():  # CR, NUL and every other control character land here
            text = sanitize(text)
        if not text or text.isspace():
            return False  # the general path answers 412
        self.pinged = False
        self.hall.say(user, room, text, now)
        return True

    def _fast_room(self, user: User, head: bytes) -> Room | None:
        """The room HEAD (``PRIVMSG #room``) names, found as the general path
        finds it, if the fast path may take it: one target, a room the user is in."""
        if b" " in head[9:] or b"," in head or b"\r" in head or b"\0" in head:
            return None
        try:
            room = self.hall.find_room(head[9:].decode())
        except UnicodeDecodeError:
            return None  # the general path says INVALID_UTF8
        if room is None or room not in user.rooms:
            return None
        if len(self._fast_rooms) >= FAST_ROOMS_MAX:
            self._fast_rooms.clear()
        self._fast_rooms[head] = room
        return room

    def line_too_long(self, max_line: int) -> None:
        self._reply(m.ERR_INPUTTOOLONG, "Input line was too long")

    def disconnected(self, reason: str, now: float, *, said: bool = False) -> None:
        if self.user is not None:
            log.log(logging.INFO, "%s (%s) quit%s", self.user.name, self.peer,
                    "" if said else f": {reason or 'quit'}", extra={"addr": self.address})
            self.hall.quit(self.user, reason, now)
            self.user = None
        self.closing = True

    def timed_out(self, seconds: float) -> None:
        self.send(format_message("ERROR", f"Closing link: registration timed out after {seconds:g} s"))
        self.closing = True

    def shutting_down(self) -> None:
        self.send(self._server_notice("server shutting down")
                  + format_message("ERROR", "Closing link: server shutting down"))
        self.closing = True

    def ping(self) -> bool:
        """The connection was idle: ask the client for a sign of life. False
        if the last ping went unanswered (the client is gone)."""
        if self.pinged:
            return False
        self.pinged = True
        self.send(format_message("PING", self.server))
        return True

    # -- replies ---------------------------------------------------------------

    @property
    def _target(self) -> str:
        """Who numerics are addressed to: the nick, or * before one is set."""
        if self.user is not None:
            return self.user.name
        return self.nick or "*"

    def _reply(self, numeric: str, *params: str) -> None:
        self.send(format_message(numeric, self._target, *params, source=self.server))

    def _server_notice(self, text: str) -> bytes:
        return format_message("NOTICE", self._target, text, source=self.server)

    def _log(self, msg: str, *args: object) -> None:
        log.info(msg, *args, extra={"addr": self.address})

    @property
    def _me(self) -> User:
        assert self.user is not None
        return self.user

    def _renderer(self) -> IrcRenderer:
        caps = self.caps
        return renderer_for(self.server, "server-time" in caps, "message-tags" in caps, "echo-message" in caps)

    # -- registration ------------------------------------------------------------

    def _try_register(self, now: float) -> None:
        """Register once NICK and USER are in and CAP negotiation is over.

        A registered name needs its account: logged in by SASL before, or its
        password given with PASS. With SASL the user takes the account's name.
        """
        if self.user is not None or self.negotiating or self.nick is None or self.ident is None:
            return
        account = self.account
        nick = account.name if account is not None else self.nick
        if account is None and self.password is not None and self.hall.account_for(nick) is not None:
            if self.hall.asked(self.outbox, "hello", ""):  # a cluster's claim is on its way: checked already
                account = self.hall.account_for(nick)
        if account is None and self.password is not None and self.hall.account_for(nick) is not None:
            try:
                account = self.hall.authenticate(nick, self.password, self.address, now)
            except Busy:
                self.held_action = self._try_register
                raise
            except ChatError as exc:
                self.password = None
                self._reply(m.ERR_PASSWDMISMATCH, str(exc))
                self.send(format_message("ERROR", "Closing link: wrong password"))
                self.closing = True
                return
        try:
            user = self.hall.register(nick, self.outbox, self._renderer(), self.address, self.ident,
                                      account.key if account is not None else None)
        except Busy:  # in a cluster: the name's claim is on its way
            self.held_action = self._try_register
            raise
        except ChatError as exc:
            self.nick = None
            self._nick_error(exc, nick)
            return
        self.password = None
        user.realname = self.realname
        user.wallops = False  # IRC users ask for WALLOPS with user mode +w
        self.user = user
        self._log("%s registered as %s (IRC)", self.peer, user.name)
        self._welcome()

    def _nick_error(self, exc: ChatError, nick: str) -> None:
        if exc.code == E.NAME_TAKEN:
            self._reply(m.ERR_NICKNAMEINUSE, clip(nick, 32), "Nickname is already in use")
        elif exc.code == E.NAME_REGISTERED:
            self._reply(m.ERR_NICKNAMEINUSE, clip(nick, 32), "Nickname is registered: log in with SASL or PASS")
        else:
            self._reply(m.ERR_ERRONEUSNICKNAME, clip(nick, 32) or "*", "Erroneous nickname")

    def _welcome(self) -> None:
        self._reply(m.RPL_WELCOME, f"Welcome to the {NETWORK} IRC network, {self._me.prefix}")
        self._reply(m.RPL_YOURHOST, f"Your host is {self.server}, running version {VERSION}")
        self._reply(m.RPL_CREATED, "This server was created when it started")
        self._reply(m.RPL_MYINFO, self.server, VERSION, "iow", "biklmnostv", "bklov")
        tokens = [f"AWAYLEN={AWAY_MAX}", "CASEMAPPING=ascii", "CHANLIMIT=#:", "CHANMODES=b,k,l,imnst",
                  f"CHANNELLEN={MAX_ROOM + 1}", "CHANTYPES=#", "ELIST=MNU", "EXTBAN=,m", "STATUSMSG=@+", "WHOX", f"MAXTARGETS={TARGETS_MAX}",
                  f"MODES={MODES_MAX}", f"NETWORK={NETWORK}", f"NICKLEN={MAX_NAME}", "PREFIX=(ov)@+",
                  f"TOPICLEN={TOPIC_MAX}", f"KICKLEN={REASON_MAX}",
                  f"TARGMAX=JOIN:,PART:,PRIVMSG:{TARGETS_MAX},NOTICE:{TARGETS_MAX},TAGMSG:{TARGETS_MAX},WHOIS:1,NAMES:{TARGETS_MAX},"
                  f"KICK:{TARGETS_MAX},LIST:{TARGETS_MAX}",
                  "UTF8ONLY"]
        for start in range(0, len(tokens), ISUPPORT_PER_LINE):  # a line holds at most 15 parameters
            self._reply(m.RPL_ISUPPORT, *tokens[start:start + ISUPPORT_PER_LINE], "are supported by this server")
        self._lusers()
        self._motd()

    def _lusers(self) -> None:
        users, most = len(self.hall.users), self.hall.most_users
        self._reply(m.RPL_LUSERCLIENT, f"There are {users} users and 0 invisible on 1 servers")
        self._reply(m.RPL_LUSEROP, str(sum(1 for u in self.hall.users.values() if u.oper)),
                    "operator(s) online")
        self._reply(m.RPL_LUSERCHANNELS, str(len(self.hall.rooms)), "channels formed")
        self._reply(m.RPL_LUSERME, f"I have {users} clients and 0 servers")
        self._reply(m.RPL_LOCALUSERS, str(users), str(most), f"Current local users {users}, max {most}")
        self._reply(m.RPL_GLOBALUSERS, str(users), str(most), f"Current global users {users}, max {most}")

    def _motd(self) -> None:
        self._reply(m.RPL_MOTDSTART, f"- {self.server} Message of the day - ")
        for line in MOTD:
            self._reply(m.RPL_MOTD, f"- {line}")
        self._reply(m.RPL_ENDOFMOTD, "End of /MOTD command.")

    # -- helpers ---------------------------------------------------------------------

    def _who_reply(self, user: User, room: Room | None, whox: tuple[str, str] | None = None) -> None:
        """RPL_WHOREPLY for USER: in ROOM, or else in a room the asker may see;
        with WHOX (its fields and token), RPL_WHOSPCRPL with those fields."""
        if room is None:
            room = next((r for r in user.rooms if self._visible(r)), None)
        where = f"#{room.name}" if room is not None else "*"
        flags = _status(user) + ("*" if user.oper else "") + (self._prefixes(user, room) if room else "")
        realname = user.realname or user.name
        if whox is None:
            self._reply(m.RPL_WHOREPLY, where, user.ident, user.host, self.server, user.name, flags, f"0 {realname}")
            return
        fields, token = whox
        account = self.hall.accounts[user.account].name if user.account in self.hall.accounts else "0"
        values = {"t": token, "c": where, "u": user.ident, "i": "255.255.255.255", "h": user.host,
                  "s": self.server, "n": user.name, "f": flags, "d": "0", "l": "0", "a": account,
                  "o": "n/a", "r": realname}
        self._reply(m.RPL_WHOSPCRPL, *(values[f] for f in WHOX_FIELDS if f in fields))

    def _prefixes(self, user: User, room: Room) -> str:
        """@ and + as NAMES and WHO show them (both with multi-prefix, else the highest)."""
        marks = ("@" if user in room.ops else "") + ("+" if user in room.voiced else "")
        return marks if "multi-prefix" in self.caps else marks[:1]

    def _visible(self, room: Room) -> bool:
        """Whether this user may see ROOM's members and topic (Hall.members_shown)."""
        return self.hall.members_shown(room, self.user)

    def _sasl_plain(self, data: str, now: float) -> None:
        """The PLAIN credentials: authzid NUL authcid NUL password (authzid empty or the same)."""
        try:
            fields = base64.b64decode(data, validate=True).decode().split("\0")
        except (ValueError, UnicodeDecodeError):
            fields = []
        if len(fields) != 3 or not fields[1] or (fields[0] and fields[0] != fields[1]):
            self._reply(m.ERR_SASLFAIL, "SASL authentication failed")
            return
        try:
            account = self.hall.authenticate(fields[1], fields[2], self.address, now)
        except Busy:
            self.held_action = lambda later: self._sasl_plain(data, later)
            raise
        except ChatError as exc:
            self._reply(m.ERR_SASLFAIL, f"SASL authentication failed: {exc}")
            return
        self.account = account
        who = f"{self.nick or account.name}!{self.ident or '*'}@*"
        self._reply(m.RPL_LOGGEDIN, who, account.name, f"You are now logged in as {account.name}")
        self._reply(m.RPL_SASLSUCCESS, "SASL authentication successful")

    def _topic_reply(self, room: Room) -> None:
        topic = room.topic
        if topic is None:
            self._reply(m.RPL_NOTOPIC, f"#{room.name}", "No topic is set")
        else:
            self._reply(m.RPL_TOPIC, f"#{room.name}", topic.text)
            self._reply(m.RPL_TOPICWHOTIME, f"#{room.name}", topic.by, str(int(topic.at)))

    def _refused(self, room: Room, exc: ChatError, target: str = "") -> None:
        """A moderation refusal as its numeric."""
        where = f"#{room.name}"
        if exc.code == E.TARGET_NOT_IN_ROOM:
            self._reply(m.ERR_USERNOTINCHANNEL, clip(target, 40) or "*", where, "They aren't on that channel")
        elif exc.code == E.NOT_IN_ROOM:
            self._reply(m.ERR_NOTONCHANNEL, where, "You're not on that channel")
        elif exc.code == E.NOT_OPERATOR:
            self._reply(m.ERR_CHANOPRIVSNEEDED, where, "You're not channel operator")
        elif exc.code == E.NO_SUCH_USER:
            self._reply(m.ERR_NOSUCHNICK, clip(target, 40) or "*", "No such nick/channel")
        else:
            self._reply(m.ERR_UNKNOWNERROR, where, str(exc))

    def _room_modes(self, room: Room, modestring: str, args: list[str], now: float) -> None:
        """MODE #room with changes: the changes (the room is told of those made), then
        the ban list if asked for, and a numeric for each change refused.

        The changes go first: a MODE held for them (a key's hash waiting its turn,
        or a cluster's stream) is tried again whole, and nothing must be answered twice."""
        changes, unknown, ban_list = _mode_changes(modestring, args)
        refused: list[ModeRefusal] = []
        failed: ChatError | None = None
        if changes:
            try:
                _made, refused = self.hall.set_modes(self._me, room, changes, now)
            except Busy:
                raise  # held, and the MODE tried again whole
            except ChatError as exc:  # (not an operator): answered after the lists
                failed = exc
        for letter in dict.fromkeys(unknown):  # once per letter: a line of 400 unknown letters is not 400 replies
            self._reply(m.ERR_UNKNOWNMODE, letter, "is unknown mode char to me")
        if ban_list:
            for ban in self.hall.ban_list(room, now):
                self._reply(m.RPL_BANLIST, f"#{room.name}", ban.shown, ban.by, str(int(ban.at)))
            for mute in self.hall.ban_list(room, now, "m"):
                self._reply(m.RPL_BANLIST, f"#{room.name}", f"m:{mute.shown}", mute.by, str(int(mute.at)))
            self._reply(m.RPL_ENDOFBANLIST, f"#{room.name}", "End of channel ban list")
        if failed is not None:
            self._refused(room, failed)
        for letter, arg, code, text in refused:
            if code in (E.NOT_IN_ROOM, E.TARGET_NOT_IN_ROOM, E.NO_SUCH_USER):
                self._refused(room, ChatError(text, code), arg or "")
            elif letter == "k" and code == E.BAD_ARGUMENT:
                self._reply(m.ERR_INVALIDKEY, f"#{room.name}", text)
            else:
                self._reply(_MODE_ERRORS.get(code) or m.ERR_UNKNOWNERROR, f"#{room.name}", letter, arg or "*", text)

    def _part_room(self, room: Room, reason: str, now: float) -> None:
        me = self._me
        self.hall.part(me, room, reason, now)
        self.send(me.renderer.parted(Parted(now, room.name, me.name, me.prefix, reason)))  # as the room sees it

    def _room_named(self, target: str) -> Room | None:
        return self.hall.find_room(target[1:]) if target.startswith("#") else None

    def _need(self, msg: Message, count: int) -> bool:
        """True if MSG has COUNT parameters, else ERR_NEEDMOREPARAMS."""
        if len(msg.params) >= count and all(p for p in msg.params[:count]):
            return True
        self._reply(m.ERR_NEEDMOREPARAMS, msg.command, "Not enough parameters")
        return False

    def _names(self, room: Room, end: bool = True) -> None:
        """RPL_NAMREPLY for ROOM, and RPL_ENDOFNAMES unless END is False (NAMES of several rooms ends once)."""
        me = self._me
        symbol = "@" if "s" in room.modes else "*" if room.locked else "="
        if not self._visible(room):
            names: list[str] = []
        else:
            names = [self._prefixes(member, room) + member.name for member in room.members]
        head = f":{self.server} {m.RPL_NAMREPLY} {me.name} {symbol} #{room.name} :"
        for words in _packed(names, m.MAX_BODY - len(head.encode())):
            self.send(f"{head}{words}\r\n".encode())
        if end:
            self._reply(m.RPL_ENDOFNAMES, f"#{room.name}", "End of /NAMES list")

    def _replay(self, room: Room) -> None:
        """The room's recent history (see _send_history)."""
        try:
            events = self.hall.recent(room, self.hall.history_lines)
        except HistoryError:
            self.send(self._server_notice(f"the history of #{room.name} cannot be read right now"))
            return
        self._send_history(room, events)

    def _send_history(self, room: Room, events: list[StoredEvent], always_batch: bool = False) -> None:
        """Stored messages, with the original times where the client can take them:
        in server-time tags (inside a chathistory batch if the client has batch), or else
        in the text of notices from the server; with their msgids if the client has
        message-tags. ALWAYS_BATCH: an empty batch too (CHATHISTORY's answer)."""
        if not events and not always_batch:
            return
        timed = "server-time" in self.caps
        batch = f"h{next(_batch_ids)}" if timed and "batch" in self.caps else ""
        out: list[str] = [f":{self.server} BATCH +{batch} chathistory #{room.name}\r\n"] if batch else []
        for ev in events:
            if timed:
                tags = f"@{'batch=' + batch + ';' if batch else ''}time={server_time(ev.ts)}"
                head = f":{ev.sender}!pychat@history PRIVMSG #{room.name} :"
                text = f"\x01ACTION {ev.text}\x01" if ev.kind == ACTION else ev.text
            else:
                tags = ""
                head = f":{self.server} NOTICE #{room.name} :"
                stamp = f"[{server_time(ev.ts)[:19].replace('T', ' ')}] "
                text = stamp + (f"* {ev.sender} {ev.text}" if ev.kind == ACTION else f"<{ev.sender}> {ev.text}")
            with_ids = tags and ev.id and "message-tags" in self.caps
            for n, part in enumerate(split_text(head, text)):
                # As live: the message's id, a part of a split message its own.
                msgid = (f";msgid={ev.id}-{n}" if n else f";msgid={ev.id}") if with_ids else ""
                out.append(f"{tags}{msgid} {head}{part}\r\n" if tags else f"{head}{part}\r\n")
        if batch:
            out.append(f":{self.server} BATCH -{batch}\r\n")
        if not out:
            return
        data = "".join(out).encode()
        self.hall.uncommitted.append((data, None))  # it may show rows of this batch
        self.send(data)


# -- registration commands ------------------------------------------------------------

@_handles("CAP")
def _cap(self: IrcSession, msg: Message, now: float) -> None:
    if not msg.params:
        self._reply(m.ERR_NEEDMOREPARAMS, "CAP", "Not enough parameters")
        return
    sub = msg.params[0].upper()
    if sub == "LS":
        if self.user is None:
            self.negotiating = True
        if len(msg.params) > 1 and msg.params[1].isdigit():
            self.cap_version = max(self.cap_version, int(msg.params[1]))
        offered = " ".join(f"{c}={CAP_VALUES[c]}" if self.cap_version >= 302 and c in CAP_VALUES else c
                           for c in CAPS)
        self.send(format_message("CAP", self._target, "LS", offered, source=self.server))
    elif sub == "LIST":
        self.send(format_message("CAP", self._target, "LIST", " ".join(sorted(self.caps)), source=self.server))
    elif sub == "REQ":
        if self.user is None:
            self.negotiating = True
        wanted = msg.params[1].split() if len(msg.params) > 1 else []
        adds = {w for w in wanted if not w.startswith("-")}
        drops = {w[1:] for w in wanted if w.startswith("-")}
        if not wanted or not (adds | drops) <= set(CAPS):
            self.send(format_message("CAP", self._target, "NAK", " ".join(wanted), source=self.server))
            return
        self.caps = (self.caps | adds) - drops
        self.send(format_message("CAP", self._target, "ACK", " ".join(wanted), source=self.server))
        if self.user is not None:
            self.hall.set_renderer(self.user, self._renderer())
    elif sub == "END":
        if self.negotiating:
            self.negotiating = False
            self._try_register(now)
    else:
        self._reply(m.ERR_INVALIDCAPCMD, clip(msg.params[0], 32), "Invalid CAP command")


@_handles("PASS")
def _pass(self: IrcSession, msg: Message, now: float) -> None:
    """There is no server password: PASS is the password of the account NICK names."""
    if self.user is not None:
        self._reply(m.ERR_ALREADYREGISTERED, "You may not reregister")
    elif self._need(msg, 1):
        self.password = msg.params[0][:256]


@_handles("AUTHENTICATE")
def _authenticate(self: IrcSession, msg: Message, now: float) -> None:
    """SASL PLAIN (IRCv3 sasl-3.1): AUTHENTICATE PLAIN, then the credentials in base64."""
    if "sasl" not in self.caps:
        self._reply(m.ERR_SASLFAIL, "SASL authentication failed: the sasl capability was not requested")
        return
    if self.user is not None or self.account is not None:
        self._reply(m.ERR_SASLALREADY, "You have already authenticated using SASL")
        return
    if not msg.params or not msg.params[0]:
        self._reply(m.ERR_NEEDMOREPARAMS, "AUTHENTICATE", "Not enough parameters")
        return
    data = msg.params[0]
    if data == "*":
        self.sasl = None
        self._reply(m.ERR_SASLABORTED, "SASL authentication aborted")
    elif self.sasl is None:
        if data.upper() != "PLAIN":
            self._reply(m.RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
            self._reply(m.ERR_SASLFAIL, "SASL authentication failed")
            return
        self.sasl = "PLAIN"
        self.send(format_message("AUTHENTICATE", "+"))
    elif len(data) > 400:
        self.sasl = None
        self._reply(m.ERR_SASLTOOLONG, "SASL message too long")
    else:
        self.sasl = None
        self._sasl_plain(data, now)




@_handles("NICK")
def _nick(self: IrcSession, msg: Message, now: float) -> None:
    if not msg.params or not msg.params[0]:
        self._reply(m.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    wanted = msg.params[0]
    user = self.user
    try:
        name = self.hall.check_name(wanted, current=user,
                                    account=self.account.key if self.account is not None else None)
    except ChatError as exc:
        if exc.code == E.NAME_REGISTERED and user is None:
            # PASS or SASL may still come: the account is checked at registration.
            self.nick = wanted
            self._try_register(now)
            return
        self._nick_error(exc, wanted)
        return
    if user is None:
        self.nick = name
        self._try_register(now)
        return
    if name == user.name and not self.hall.asked(self.outbox, "nick", ""):
        return
    try:
        old_name = self.hall.rename(user, name, now)
    except Busy:
        raise
    except ChatError as exc:
        self._nick_error(exc, wanted)
        return
    old_prefix = f"{old_name}!{user.ident}@{user.host}"
    self.send(user.renderer.renamed(Renamed(now, old_name, user.name, old_prefix), ""))  # as the others see it


@_handles("USER")
def _user(self: IrcSession, msg: Message, now: float) -> None:
    if self.user is not None or self.ident is not None:
        self._reply(m.ERR_ALREADYREGISTERED, "You may not reregister")
        return
    if len(msg.params) < 4 or not msg.params[0] or not msg.params[3]:
        self._reply(m.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        return
    ident = "".join(c for c in msg.params[0] if c.isascii() and (c.isalnum() or c in "_-."))[:10]
    self.ident = "~" + (ident or "user")
    self.realname = sanitize(msg.params[3])[:100]
    self._try_register(now)


@_handles("PING")
def _ping(self: IrcSession, msg: Message, now: float) -> None:
    if not msg.params:
        self._reply(m.ERR_NOORIGIN, "No origin specified")
        return
    self.send(format_message("PONG", self.server, msg.params[0], source=self.server))


@_handles("PONG")
def _pong(self: IrcSession, msg: Message, now: float) -> None:
    """Any line shows the client is alive (handle_line clears the flag)."""


@_handles("QUIT")
def _quit(self: IrcSession, msg: Message, now: float) -> None:
    reason = sanitize(msg.params[0])[:200] if msg.params else ""
    self.send(format_message("ERROR", f"Closing link: {self.address or self.peer} (Quit: {reason or 'Client Quit'})"))
    self.disconnected(f"Quit: {reason}" if reason else "Quit", now, said=True)


# -- rooms ----------------------------------------------------------------------------------

_JOIN_ERRORS = {
    E.NEEDS_KEY: (m.ERR_BADCHANNELKEY, "Cannot join channel (+k)"),
    E.WRONG_KEY: (m.ERR_BADCHANNELKEY, "Cannot join channel (+k)"),
    E.BAD_ROOM_NAME: (m.ERR_BADCHANMASK, "Bad Channel Mask"),
    E.BANNED: (m.ERR_BANNEDFROMCHAN, "Cannot join channel (+b)"),
    E.INVITE_ONLY: (m.ERR_INVITEONLYCHAN, "Cannot join channel (+i)"),
    E.ROOM_FULL: (m.ERR_CHANNELISFULL, "Cannot join channel (+l)"),
}


@_handles("JOIN")
def _join(self: IrcSession, msg: Message, now: float) -> None:
    if not self._need(msg, 1):
        return
    me = self._me
    if msg.params[0] == "0":
        _part_targets(self, [f"#{room.name}" for room in me.rooms], "", now)
        return
    keys = msg.params[1].split(",") if len(msg.params) > 1 else []
    targets = msg.params[0].split(",")
    _join_targets(self, [(target, keys[i] if i < len(keys) and keys[i] else None)
                        for i, target in enumerate(targets)], now)


def _join_targets(self: IrcSession, pairs: list[tuple[str, str | None]], now: float) -> None:
    """JOIN each (#room, key) of PAIRS in turn. A join held on its way (Busy) is
    tried again with the rest of the list, from that room on."""
    me = self._me
    for i, (target, key) in enumerate(pairs):
        if not target:
            continue
        if not target.startswith("#"):
            self._reply(m.ERR_NOSUCHCHANNEL, clip(target, 40), "No such channel")
            continue
        existing = self._room_named(target)
        if existing is not None and me in existing.members and not self.hall.asked(self.outbox, "join",
                                                                                      existing.key):
            continue  # already there: IRC servers say nothing
        try:
            room = self.hall.join(me, target[1:], key, now)
        except Busy:
            rest = pairs[i:]
            self.held_action = lambda later: _join_targets(self, rest, later)
            raise
        except ChatError as exc:
            numeric, text = _JOIN_ERRORS.get(exc.code, (m.ERR_UNAVAILRESOURCE, str(exc)))
            if exc.code == E.BAD_ROOM_NAME:
                text = str(exc)
            self._reply(numeric, clip(target, 40), text)
            continue
        self._log("%s joined #%s", me.name, room.name)
        self.send(me.renderer.joined(Joined(now, room.name, me.name, me.prefix)))  # the joiner's own JOIN
        if room.topic is not None:
            self._topic_reply(room)
        self._names(room)
        self._replay(room)


@_handles("PART")
def _part(self: IrcSession, msg: Message, now: float) -> None:
    if not self._need(msg, 1):
        return
    reason = sanitize(msg.params[1])[:200] if len(msg.params) > 1 else ""
    _part_targets(self, msg.params[0].split(","), reason, now)


def _part_targets(self: IrcSession, targets: list[str], reason: str, now: float, held: Room | None = None) -> None:
    """PART each room of TARGETS in turn; one held on its way (Busy) is tried again
    with the rest, HELD being the first's room (by then it may be gone from the hall)."""
    for i, target in enumerate(targets):
        room = held if i == 0 and held is not None else self._room_named(target)
        if room is None:
            self._reply(m.ERR_NOSUCHCHANNEL, clip(target, 40), "No such channel")
        elif self._me not in room.members and not self.hall.asked(self.outbox, "part", room.key):
            self._reply(m.ERR_NOTONCHANNEL, f"#{room.name}", "You're not on that channel")
        else:
            try:
                self._part_room(room, reason, now)
            except Busy:
                rest, parting = targets[i:], room
                self.held_action = lambda later: _part_targets(self, rest, reason, later, parting)
                raise


@_handles("NAMES")
def _names(self: IrcSession, msg: Message, now: float) -> None:
    if not msg.params:
        self._reply(m.RPL_ENDOFNAMES, "*", "End of /NAMES list")
        return
    targets = msg.params[0].split(",")[:TARGETS_MAX]
    if len(targets) == 1:
        room = self._room_named(targets[0])
        if room is None:
            self._reply(m.RPL_ENDOFNAMES, clip(targets[0], 40), "End of /NAMES list")
        else:
            self._names(room)
        return
    for target in targets:  # several rooms: their names, then one end
        room = self._room_named(target)
        if room is not None:
            self._names(room, end=False)
    self._reply(m.RPL_ENDOFNAMES, clip(",".join(targets), 200), "End of /NAMES list")


@_handles("LIST")
def _list(self: IrcSession, msg: Message, now: float) -> None:
    """LIST, LIST #a,#b, or LIST with ELIST=MNU conditions, all of which a
    room must meet: masks (``#dev*``, any of them), ``!mask`` (none of
    them), ``>N`` and ``<N`` members. The busiest LIST_MAX rooms at most."""
    self._reply(m.RPL_LISTSTART, "Channel", "Users  Name")
    terms = msg.params[0].split(",")[:TARGETS_MAX] if msg.params and msg.params[0] else []
    if terms and all(t.startswith("#") and not any(c in t for c in "*?") for t in terms):
        named = (self._room_named(t) for t in terms)
        rooms = [r for r in named if r and ("s" not in r.modes or self.user in r.members)]
    elif terms:
        match = _list_filter(terms)
        everyone = self.hall.busiest_rooms(None, len(self.hall.rooms), self.user)[1]
        rooms = [room for room in everyone if match(room)][:LIST_MAX]
    else:
        rooms = self.hall.busiest_rooms(None, LIST_MAX, self.user)[1]
    for room in rooms:  # secret rooms are left out; a locked one is listed, as /list does, without its topic
        topic = room.topic.text if room.topic is not None and self._visible(room) else ""
        self._reply(m.RPL_LIST, f"#{room.name}", str(len(room.members)), topic)
    self._reply(m.RPL_LISTEND, "End of /LIST")


@_handles("TOPIC")
def _topic(self: IrcSession, msg: Message, now: float) -> None:
    if not self._need(msg, 1):
        return
    room = self._room_named(msg.params[0])
    if room is None:
        self._reply(m.ERR_NOSUCHCHANNEL, clip(msg.params[0], 40), "No such channel")
    elif len(msg.params) == 1:
        if not self._visible(room):
            self._reply(m.ERR_NOTONCHANNEL, f"#{room.name}", "You're not on that channel")
        else:
            self._topic_reply(room)
    else:
        try:
            self.hall.set_topic(self._me, room, msg.params[1], now)
        except Busy:
            raise  # in a cluster: on its way; the TOPIC is tried again whole
        except ChatError as exc:
            self._refused(room, exc)


_MODE_ERRORS = {E.BAD_ARGUMENT: m.ERR_INVALIDMODEPARAM, E.UNKNOWN_MODE: m.ERR_UNKNOWNMODE}


def _mode_changes(modestring: str, args: list[str]) -> tuple[list[ModeChange], list[str], bool]:
    """IRC's +ov-k ... as changes; the unknown letters; and whether the ban list was asked for."""
    changes: list[ModeChange] = []
    unknown: list[str] = []
    sign = "+"
    ban_list = False
    for letter in modestring:
        if letter in "+-":
            sign = letter
        elif letter == "b" and not args:
            ban_list = True
        elif letter == "b" and args and args[0].startswith("m:"):  # a mute, as the EXTBAN token says
            changes.append(ModeChange(sign, "q", args.pop(0)[2:]))
        elif letter in "ovb" or letter in "kl" and sign == "+":
            changes.append(ModeChange(sign, letter, args.pop(0) if args else None))
        elif letter in "k":
            if args:
                args.pop(0)  # -k takes the key, which is not needed to remove it
            changes.append(ModeChange(sign, letter, None))
        elif letter in "imnstl":
            changes.append(ModeChange(sign, letter, None))
        else:
            unknown.append(letter)
    return changes, unknown, ban_list


@_handles("MODE")
def _mode(self: IrcSession, msg: Message, now: float) -> None:
    if not self._need(msg, 1):
        return
    target = msg.params[0]
    me = self._me
    if target.startswith("#"):
        room = self._room_named(target)
        if room is None:
            self._reply(m.ERR_NOSUCHCHANNEL, clip(target, 40), "No such channel")
        elif len(msg.params) == 1:
            flags = "".join(sorted(room.modes)) + ("k" if room.locked else "") + ("l" if room.limit else "")
            args = (["*"] if room.locked else []) + ([str(room.limit)] if room.limit else [])
            self._reply(m.RPL_CHANNELMODEIS, f"#{room.name}", f"+{flags}", *args)
            self._reply(m.RPL_CREATIONTIME, f"#{room.name}", str(int(room.created)))
        else:
            self._room_modes(room, msg.params[1], list(msg.params[2:]), now)
        return
    found = self.hall.find_user(target)
    if found is not me:
        if found is not None:
            self._reply(m.ERR_USERSDONTMATCH, "Can't change mode for other users")
        else:
            self._reply(m.ERR_NOSUCHNICK, clip(target, 40), "No such nick/channel")
        return
    if len(msg.params) == 1:
        self._reply(m.RPL_UMODEIS, "+" + ("i" if self.invisible else "") + ("o" if me.oper else "")
                    + ("w" if me.wallops else ""))
        return
    # +i (nothing lists users by mask but WHO) and +w (WALLOPS) can be set; -o drops operator status.
    change, sign, unknown = "", "", False
    for flag in msg.params[1]:
        if flag in "+-":
            sign = flag
        elif flag == "o" and sign == "-" and me.oper:
            self.hall.drop_oper(me)
            change += "-o"
        elif flag == "o":
            continue  # +o is given by OPER only
        elif flag == "w":
            if sign and (sign == "+") != me.wallops:
                me.wallops = sign == "+"
                change += f"{sign}w"
        elif flag != "i":
            unknown = True
        elif sign and (sign == "+") != self.invisible:
            self.invisible = me.invisible = sign == "+"
            change += f"{sign}i"
    if unknown:  # one reply however many unknown flags the line held
        self._reply(m.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
    if change:
        self.send(f":{me.prefix} MODE {me.name} :{change}\r\n".encode())




@_handles("KICK")
def _kick(self: IrcSession, msg: Message, now: float) -> None:
    if not self._need(msg, 2):
        return
    channels = msg.params[0].split(",")[:TARGETS_MAX]
    names = msg.params[1].split(",")[:TARGETS_MAX]
    reason = msg.params[2] if len(msg.params) > 2 else ""
    # One room for every name, or the rooms and names in pairs.
    pairs = [(channels[0], name) for name in names] if len(channels) == 1 else list(zip(channels, names))
    _kick_pairs(self, pairs, reason, now)


def _kick_pairs(self: IrcSession, pairs: list[tuple[str, str]], reason: str, now: float) -> None:
    """KICK each (#room, name) of PAIRS in turn; one held on its way (in a
    cluster) is tried again with the rest, from that pair on."""
    for i, (channel, name) in enumerate(pairs):
        room = self._room_named(channel)
        if room is None:
            self._reply(m.ERR_NOSUCHCHANNEL, clip(channel, 40), "No such channel")
            continue
        try:
            self.hall.kick(self._me, room, name, reason, now)
        except Busy:
            rest = pairs[i:]
            self.held_action = lambda later: _kick_pairs(self, rest, reason, later)
            raise
        except ChatError as exc:
            self._refused(room, exc, name)


@_handles("INVITE")
def _invite(self: IrcSession, msg: Message, now: float) -> None:
    me = self._me
    if not msg.params:
        _invitations(self, me, now)
        return
    if not self._need(msg, 2):
        return
    target = self.hall.find_user(msg.params[0])
    room = self._room_named(msg.params[1])
    if target is None:
        self._reply(m.ERR_NOSUCHNICK, clip(msg.params[0], 40), "No such nick/channel")
    elif room is None:
        self._reply(m.ERR_NOSUCHCHANNEL, clip(msg.params[1], 40), "No such channel")
    elif target in room.members:
        self._reply(m.ERR_USERONCHANNEL, target.name, f"#{room.name}", "is already on channel")
    else:
        try:
            self.hall.invite(me, target, room, now)
        except Busy:
            raise  # in a cluster: on its way; the INVITE is tried again whole
        except ChatError as exc:
            self._refused(room, exc)
            return
        self._reply(m.RPL_INVITING, target.name, f"#{room.name}")


def _invitations(self: IrcSession, me: User, now: float) -> None:
    """INVITE alone: the rooms ME is invited to (and has not entered since)."""
    invited = [room for room in self.hall.rooms.values() if room.invited.get(me.key, 0.0) > now]
    for room in sorted(invited, key=lambda r: r.key):
        self._reply(m.RPL_INVITELIST, f"#{room.name}")
    self._reply(m.RPL_ENDOFINVITELIST, "End of /INVITE list")


# -- messages -------------------------------------------------------------------------------

@_handles("PRIVMSG", "NOTICE")
def _privmsg(self: IrcSession, msg: Message, now: float) -> None:
    notice = msg.command == "NOTICE"
    if not msg.params or not msg.params[0]:
        if not notice:
            self._reply(m.ERR_NORECIPIENT, f"No recipient given ({msg.command})")
        return
    if len(msg.params) < 2 or not msg.params[1]:
        if not notice:
            self._reply(m.ERR_NOTEXTTOSEND, "No text to send")
        return
    text, kind = msg.params[1], NOTICE if notice else MESSAGE
    request = ctcp(text)
    if request is not None:
        command, argument = request
        if command != "ACTION":
            return  # other CTCP requests are not relayed: line users could not answer them
        text, kind = argument, ACTION
    text = sanitize(text)
    if not text.strip():
        if not notice:
            self._reply(m.ERR_NOTEXTTOSEND, "No text to send")
        return
    me = self._me
    tags = client_tags(msg.tags) if msg.tags else ""
    for target in msg.params[0].split(",")[:TARGETS_MAX]:
        if target[:2] in ("@#", "+#"):  # STATUSMSG: the room's operators (and voiced members, +)
            room = self._room_named(target[1:])
            if room is None:
                if not notice:
                    self._reply(m.ERR_NOSUCHCHANNEL, clip(target, 40), "No such channel")
                continue
            try:
                self.hall.say_to_operators(me, room, text, now, kind, target[0], tags)
            except ChatError as exc:
                if not notice:
                    self._reply(m.ERR_CANNOTSENDTOCHAN, f"#{room.name}", f"Cannot send to channel: {exc}")
            continue
        if target.startswith("#"):
            room = self._room_named(target)
            if room is None:
                if not notice:
                    self._reply(m.ERR_NOSUCHCHANNEL, clip(target, 40), "No such channel")
            else:
                try:
                    self.hall.say(me, room, text, now, kind, tags)
                except ChatError as exc:  # outside the room (+n), moderated (+m), muted
                    if not notice:
                        self._reply(m.ERR_CANNOTSENDTOCHAN, f"#{room.name}", f"Cannot send to channel: {exc}")
            continue
        try:
            recipient = self.hall.direct(me, target, text, now, kind, tags)
        except ChatError:
            if not notice:
                self._reply(m.ERR_NOSUCHNICK, clip(target, 40), "No such nick/channel")
            continue
        if recipient.away is not None and not notice:
            self._reply(m.RPL_AWAY, recipient.name, recipient.away)


@_handles("TAGMSG")
def _tagmsg(self: IrcSession, msg: Message, now: float) -> None:
    """IRCv3 TAGMSG: client-only tags with no text (typing notices, reactions),
    relayed to the recipients that negotiated message-tags; others see nothing."""
    if not msg.params or not msg.params[0]:
        self._reply(m.ERR_NORECIPIENT, "No recipient given (TAGMSG)")
        return
    tags = client_tags(msg.tags)
    if not tags:
        return  # nothing a client could see
    me = self._me
    for target in msg.params[0].split(",")[:TARGETS_MAX]:
        if target.startswith("#"):
            room = self._room_named(target)
            if room is None:
                self._reply(m.ERR_NOSUCHCHANNEL, clip(target, 40), "No such channel")
                continue
            try:
                self.hall.tag_room(me, room, tags, now)
            except ChatError as exc:
                self._reply(m.ERR_CANNOTSENDTOCHAN, f"#{room.name}", f"Cannot send to channel: {exc}")
            continue
        try:
            self.hall.tag_user(me, target, tags, now)
        except ChatError:
            self._reply(m.ERR_NOSUCHNICK, clip(target, 40), "No such nick/channel")


# -- who is who -----------------------------------------------------------------------------

def _status(user: User) -> str:
    return "G" if user.away is not None else "H"


@_handles("WHO")
def _who(self: IrcSession, msg: Message, now: float) -> None:
    """WHO #room, WHO nick, or WHO mask (* and ?, on nicks). By mask, users
    with +i are listed only to those who share a room with them."""
    me = self._me
    mask = msg.params[0] if msg.params and msg.params[0] else "*"
    whox = _whox(msg.params[1]) if len(msg.params) > 1 else None
    room = self._room_named(mask)
    if room is not None:
        if self._visible(room):
            for user in room.members:
                self._who_reply(user, room, whox)
    elif not mask.startswith("#") and ("*" in mask or "?" in mask):
        listed = 0
        match = _wildcard(mask if len(mask) <= 64 else "")
        for user in self.hall.users.values():
            if not match(user.name.casefold()):
                continue
            if user.invisible and user is not me and not (user.rooms.keys() & me.rooms.keys()):
                continue
            self._who_reply(user, None, whox)
            listed += 1
            if listed >= WHO_MAX:
                break
    elif not mask.startswith("#"):
        found = self.hall.find_user(mask)
        if found is not None:
            self._who_reply(found, None, whox)
    self._reply(m.RPL_ENDOFWHO, clip(mask, 64), "End of WHO list")


def _list_filter(terms: list[str]) -> Callable[[Room], bool]:
    """The ELIST conditions of TERMS as one test of a room (an unknown term matches nothing)."""
    masks, unmasks, more, fewer = [], [], -1, 1 << 62
    for term in terms:
        if term[:1] == ">" and term[1:].isdigit():
            more = max(more, int(term[1:]))
        elif term[:1] == "<" and term[1:].isdigit():
            fewer = min(fewer, int(term[1:]))
        elif term[:1] == "!":
            unmasks.append(_wildcard(term[1:]))
        else:
            masks.append(_wildcard(term))

    def match(room: Room) -> bool:
        name = f"#{room.name}".casefold()
        return (more < len(room.members) < fewer
                and (not masks or any(mask(name) for mask in masks))
                and not any(unmask(name) for unmask in unmasks))
    return match


def _packed(words: list[str], room: int) -> list[str]:
    """WORDS joined by spaces into as few lines as keep each within ROOM bytes
    (a word longer than that gets a line of its own)."""
    lines: list[str] = []
    line: list[str] = []
    size = 0
    for word in words:
        width = len(word.encode())
        if line and size + 1 + width > room:
            lines.append(" ".join(line))
            line, size = [], 0
        size += width + (1 if line else 0)
        line.append(word)
    if line:
        lines.append(" ".join(line))
    return lines


def _command_word(raw: bytes) -> str:
    """The command of a line that could not be decoded, as FAIL names it ('*' if none)."""
    for word in raw.split(b" ", 3):
        if word and word[:1] not in (b"@", b":"):
            return clip(word.decode("ascii", "replace").upper(), 32)
    return "*"


def _wildcard(mask: str) -> Callable[[str], bool]:
    """A test of casefolded names against MASK (* and ?), compiled here: through
    fnmatch's own cache every mask a client ever sent would be kept (32,768 of them)."""
    regex = re.compile(fnmatch.translate(mask.casefold()))
    return lambda name: regex.match(name) is not None


WHOX_FIELDS = "tcuihsnfdlaor"  # the order of WHOX's reply, whatever the order asked


def _whox(options: str) -> tuple[str, str] | None:
    """``%cnr,42`` (IRCv3 WHOX): the fields asked for and the token (digits), or None for plain WHO."""
    if not options.startswith("%"):
        return None
    fields, _, token = options[1:].partition(",")
    if not (token.isascii() and token.isdigit() and len(token) <= 3):
        token = "0"
    return fields, token


@_handles("WHOIS")
def _whois(self: IrcSession, msg: Message, now: float) -> None:
    if not msg.params or not msg.params[-1]:
        self._reply(m.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    nick = msg.params[-1].split(",")[0]
    user = self.hall.find_user(nick)
    if user is None:
        self._reply(m.ERR_NOSUCHNICK, clip(nick, 40), "No such nick/channel")
        self._reply(m.RPL_ENDOFWHOIS, clip(nick, 40), "End of /WHOIS list")
        return
    self._reply(m.RPL_WHOISUSER, user.name, user.ident, user.host, "*", user.realname or user.name)
    rooms = [f"{self._prefixes(user, r)}#{r.name}" for r in user.rooms if self._visible(r)]
    room_for_rooms = m.MAX_BODY - len(f":{self.server} {m.RPL_WHOISCHANNELS} {self._target} {user.name} :".encode())
    for words in _packed(rooms, room_for_rooms):
        self._reply(m.RPL_WHOISCHANNELS, user.name, words)
    self._reply(m.RPL_WHOISSERVER, user.name, self.server, self.server_info)
    if user.oper:
        self._reply(m.RPL_WHOISOPERATOR, user.name, "is an IRC operator")
    if user.account is not None:
        self._reply(m.RPL_WHOISACCOUNT, user.name, self.hall.accounts[user.account].name, "is logged in as")
    if user.away is not None:
        self._reply(m.RPL_AWAY, user.name, user.away)
    self._reply(m.RPL_ENDOFWHOIS, user.name, "End of /WHOIS list")


@_handles("AWAY")
def _away(self: IrcSession, msg: Message, now: float) -> None:
    me = self._me
    text = sanitize(msg.params[0])[:AWAY_MAX].strip() if msg.params else ""
    if text:
        me.away = text
        self._reply(m.RPL_NOWAWAY, "You have been marked as being away")
    else:
        me.away = None
        self._reply(m.RPL_UNAWAY, "You are no longer marked as being away")


@_handles("ISON")
def _ison(self: IrcSession, msg: Message, now: float) -> None:
    if not self._need(msg, 1):
        return
    names = " ".join(msg.params).split()[:ISON_MAX]
    online = [u.name for u in map(self.hall.find_user, names) if u]
    self._reply(m.RPL_ISON, " ".join(online))


@_handles("USERHOST")
def _userhost(self: IrcSession, msg: Message, now: float) -> None:
    if not self._need(msg, 1):
        return
    found = []
    for nick in msg.params[:5]:
        user = self.hall.find_user(nick)
        if user is not None:
            found.append(f"{user.name}={'-' if user.away is not None else '+'}{user.ident}@{user.host}")
    self._reply(m.RPL_USERHOST, " ".join(found))


# -- the server -----------------------------------------------------------------------------

@_handles("LUSERS")
def _lusers_command(self: IrcSession, msg: Message, now: float) -> None:
    self._lusers()


@_handles("MOTD")
def _motd_command(self: IrcSession, msg: Message, now: float) -> None:
    self._motd()


@_handles("VERSION")
def _version(self: IrcSession, msg: Message, now: float) -> None:
    self._reply(m.RPL_VERSION, VERSION, self.server, SERVER_INFO)
    self._reply(m.RPL_ISUPPORT, f"NETWORK={NETWORK}", "are supported by this server")


@_handles("LINKS")
def _links(self: IrcSession, msg: Message, now: float) -> None:
    """LINKS [[SERVER] MASK]: the servers linked to this one. There is only
    this one (the nodes of a cluster share one world, not IRC links)."""
    mask = msg.params[-1] if msg.params else "*"
    if fnmatch.fnmatchcase(self.server.lower(), mask.lower()):
        self._reply(m.RPL_LINKS, self.server, self.server, f"0 {self.server_info}")
    self._reply(m.RPL_ENDOFLINKS, clip(mask, 64), "End of /LINKS list")


@_handles("TIME")
def _time(self: IrcSession, msg: Message, now: float) -> None:
    self._reply(m.RPL_TIME, self.server, str(int(now)), "0",
                time.strftime("%A %B %d %Y -- %H:%M:%S %z", time.localtime(now)))


@_handles("WHOWAS")
def _whowas(self: IrcSession, msg: Message, now: float) -> None:
    """Who held a name lately (newest first), from the Hall's bounded memory of them."""
    if not msg.params or not msg.params[0]:
        self._reply(m.ERR_NONICKNAMEGIVEN, "No nickname given")
        return
    nick = msg.params[0]
    count = WHOWAS_MAX
    if len(msg.params) > 1 and msg.params[1].lstrip("-").isdigit() and int(msg.params[1]) > 0:
        count = min(int(msg.params[1]), WHOWAS_MAX)
    key = name_key(nick) if len(nick) <= 64 else ""
    found = [d for d in reversed(self.hall.departed) if key and name_key(d.name) == key][:count]
    if not found:
        self._reply(m.ERR_WASNOSUCHNICK, clip(nick, 64), "There was no such nickname")
    for gone in found:
        self._reply(m.RPL_WHOWASUSER, gone.name, gone.ident, gone.host, "*", gone.realname or gone.name)
        self._reply(m.RPL_WHOISSERVER, gone.name, self.server,
                    time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(gone.when)))
    self._reply(m.RPL_ENDOFWHOWAS, clip(nick, 64), "End of WHOWAS")


@_handles("OPER")
def _oper(self: IrcSession, msg: Message, now: float) -> None:
    """OPER ACCOUNT PASSWORD: the account must be one of --oper."""
    if not self._need(msg, 2):
        return
    me = self._me
    try:
        # In a cluster, once the request is on its way the password was checked.
        account = (self.hall.account_for(msg.params[0]) if self.hall.asked(self.outbox, "grant", "") else None
                   ) or self.hall.authenticate(msg.params[0], msg.params[1], self.address, now)
    except Busy:
        raise  # held, and tried again whole
    except ChatError as exc:
        self._reply(m.ERR_PASSWDMISMATCH, f"Password incorrect ({exc})")
        return
    try:
        self.hall.grant_oper(me, account)
    except Busy:
        raise  # in a cluster: on its way; the OPER is tried again whole
    except ChatError as exc:
        self._reply(m.ERR_NOOPERHOST, str(exc))
        return
    self._log("%s is a server operator (as %s)", me.name, account.name)
    self._reply(m.RPL_YOUREOPER, "You are now an IRC operator")
    self.send(f":{me.prefix} MODE {me.name} :+o\r\n".encode())


def _not_oper(self: IrcSession) -> bool:
    if self._me.oper:
        return False
    self._reply(m.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")
    return True


@_handles("KILL")
def _kill(self: IrcSession, msg: Message, now: float) -> None:
    if _not_oper(self) or not self._need(msg, 1):
        return
    reason = sanitize(msg.params[1])[:REASON_MAX] if len(msg.params) > 1 else ""
    try:
        self.hall.kill(self._me, msg.params[0], reason, now)
    except Busy:
        raise  # in a cluster: on its way; the KILL is tried again whole
    except ChatError:
        self._reply(m.ERR_NOSUCHNICK, clip(msg.params[0], 40), "No such nick/channel")


@_handles("WALLOPS")
def _wallops(self: IrcSession, msg: Message, now: float) -> None:
    if _not_oper(self) or not self._need(msg, 1):
        return
    self.hall.wall(self._me, sanitize(msg.params[0]), now)


@_handles("KLINE")
def _kline(self: IrcSession, msg: Message, now: float) -> None:
    """KLINE [DURATION] ADDRESS-OR-CIDR [:REASON] (duration in seconds, or 30m, 2h, 7d)."""
    if _not_oper(self) or not self._need(msg, 1):
        return
    params = list(msg.params)
    duration = parse_duration(params[0]) if len(params) > 1 else None
    if duration is not None:
        params.pop(0)
    reason = sanitize(params[1])[:REASON_MAX] if len(params) > 1 else ""
    try:
        self.hall.kline(self._me, params[0], duration, reason, now)
    except Busy:
        raise  # in a cluster: on its way; the KLINE is tried again whole
    except ChatError as exc:
        self.send(self._server_notice(str(exc)))


@_handles("INFO")
def _info(self: IrcSession, msg: Message, now: float) -> None:
    for line in (f"pychat {VERSION}: a small chat server; one thread, one selectors loop.",
                 "It speaks IRC and a line protocol you can use with nc, in the same rooms.",
                 "Accounts, moderation and history are kept in one SQLite file."):
        self._reply(m.RPL_INFO, line)
    self._reply(m.RPL_ENDOFINFO, "End of /INFO list")


@_handles("HELP", "HELPOP")
def _help(self: IrcSession, msg: Message, now: float) -> None:
    """HELP: the commands; HELP COMMAND: what it does (Modern's 704/705/706)."""
    subject = msg.params[0].upper() if msg.params and msg.params[0] else ""
    if not subject:
        lines = ["pychat's IRC commands (HELP COMMAND tells more):"]
        names = sorted(_HELP)
        lines += [" ".join(names[i:i + 10]) for i in range(0, len(names), 10)]
        subject = "index"
    elif subject in _HELP:
        lines = [f"** {subject} **", *_HELP[subject].split("\n")]
    else:
        self._reply(m.ERR_HELPNOTFOUND, clip(subject, 32), "No help available on this topic")
        return
    self._reply(m.RPL_HELPSTART, subject, lines[0])
    for line in lines[1:]:
        self._reply(m.RPL_HELPTXT, subject, line)
    self._reply(m.RPL_ENDOFHELP, subject, "End of /HELP")


# What HELP says of each command (a test checks that every command has a line).
_HELP = {
    "AUTHENTICATE": "AUTHENTICATE PLAIN, then the base64 credentials: log in to an account (SASL)",
    "AWAY": "AWAY [:message]: set or clear your away message",
    "CAP": "CAP LS|REQ|LIST|END: negotiate capabilities",
    "CHATHISTORY": "CHATHISTORY BEFORE|AFTER|LATEST #room msgid=ID|* limit: stored messages of a room you are in",
    "CONNECT": "CONNECT: links to other servers are not supported",
    "DIE": "DIE: the server is stopped by its host, not over IRC",
    "HELP": "HELP [command]: this help",
    "HELPOP": "HELPOP [command]: the same as HELP",
    "INFO": "INFO: about this server",
    "INVITE": "INVITE nick #room: ask someone in (operators only in a +i room); INVITE: the rooms you are invited to",
    "ISON": "ISON nick...: which of these nicks are online",
    "JOIN": "JOIN #room[,#room] [key[,key]]: join rooms, creating them if missing",
    "KICK": "KICK #room nick [:reason]: remove someone from a room (operators)",
    "KILL": "KILL nick [:reason]: disconnect someone (server operators)",
    "KLINE": "KLINE [duration] address-or-cidr [:reason]: ban an address (server operators)",
    "LINKS": "LINKS [mask]: the servers linked to this one (only this one)",
    "LIST": "LIST [#room,...]: rooms with member counts and topics",
    "LUSERS": "LUSERS: how many users and rooms",
    "MODE": "MODE #room [changes]: show or change a room's modes (i m n s t k l o v b);\n"
            "MODE nick [+i|-i|+w|-w]: your own user modes",
    "MOTD": "MOTD: the message of the day",
    "NAMES": "NAMES #room: who is in a room",
    "NICK": "NICK name: choose or change your name",
    "NOTICE": "NOTICE target :text: a message that is never answered automatically",
    "OPER": "OPER account password: become a server operator (accounts given with --oper)",
    "PART": "PART #room [:reason]: leave a room",
    "PASS": "PASS password: at registration, the password of the account your NICK names",
    "PING": "PING token: the server answers PONG",
    "PONG": "PONG token: the answer to the server's PING",
    "PRIVMSG": "PRIVMSG target :text: a message to a room (#room) or a user (nick)",
    "TAGMSG": "TAGMSG target: client-only tags (@+typing=active) with no text, for clients with message-tags",
    "QUIT": "QUIT [:reason]: leave the server",
    "REHASH": "REHASH: the server is configured by its command line",
    "RESTART": "RESTART: the server is restarted by its host, not over IRC",
    "SQUIT": "SQUIT: links to other servers are not supported",
    "TIME": "TIME: the server's time",
    "TOPIC": "TOPIC #room [:text]: show or set a room's topic",
    "USER": "USER ident 0 * :real name: at registration",
    "USERHOST": "USERHOST nick...: the user@host of these nicks",
    "VERSION": "VERSION: the server's version",
    "WALLOPS": "WALLOPS :text: a message to everyone with user mode +w (server operators)",
    "WHO": "WHO mask|#room: who matches",
    "WHOIS": "WHOIS nick: about someone",
    "WHOWAS": "WHOWAS nick: who held a nick lately",
}


@_handles("CHATHISTORY")
def _chathistory(self: IrcSession, msg: Message, now: float) -> None:
    """CHATHISTORY BEFORE|AFTER|LATEST #room msgid=ID|* limit: stored messages of a room
    you are in (IRCv3 chathistory, by msgid only), in a chathistory batch."""
    params = msg.params
    if len(params) < 4 or params[0].upper() not in ("BEFORE", "AFTER", "LATEST"):
        self.send(format_message("FAIL", "CHATHISTORY", "INVALID_PARAMS", *params[:1],
                                 "Use BEFORE, AFTER or LATEST #room msgid=ID|* limit", source=self.server))
        return
    how, target, ref, count = params[0].upper(), params[1], params[2], params[3]
    room = self.hall.find_room(target[1:]) if target.startswith("#") else None
    user = self.user
    if room is None or user is None or room not in user.rooms:
        self.send(format_message("FAIL", "CHATHISTORY", "INVALID_TARGET", how, clip(target, 64),
                                 "You are not in that room", source=self.server))
        return
    anchor = ref[6:] if ref.startswith("msgid=") else ("" if ref == "*" and how == "LATEST" else None)
    if (anchor is None or (anchor and not (_NUMBER.fullmatch(anchor) and int(anchor) <= MAX_ID))
            or not _NUMBER.fullmatch(count)):
        self.send(format_message("FAIL", "CHATHISTORY", "INVALID_PARAMS", how, clip(ref, 64),
                                 "Give msgid=ID (or * with LATEST) and a number", source=self.server))
        return
    limit = min(int(count), CHATHISTORY_MAX)
    try:
        if how == "LATEST":
            events = self.hall.recent(room, limit)
            if anchor:
                events = [ev for ev in events if ev.id > int(anchor)]
        elif how == "BEFORE":
            events = self.hall.older(room, int(anchor), limit)
        else:
            events = self.hall.newer(room, int(anchor), limit)
    except HistoryError:
        self.send(format_message("FAIL", "CHATHISTORY", "MESSAGE_ERROR", how, f"#{room.name}",
                                 "The history cannot be read right now", source=self.server))
        return
    self._send_history(room, events, always_batch=True)


@_handles("DIE", "RESTART", "REHASH", "SQUIT", "CONNECT")
def _operator_only(self: IrcSession, msg: Message, now: float) -> None:
    self._reply(m.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")


_missing = {"JOIN", "PART", "PRIVMSG", "NOTICE", "WHO", "WHOIS", "NICK", "QUIT", "CAP"} - set(_HANDLERS)
assert not _missing, f"IRC commands without a handler: {_missing}"
assert set(_HELP) == set(_HANDLERS), f"HELP and the handlers disagree: {set(_HELP) ^ set(_HANDLERS)}"
