"""The command table: words, aliases, arguments, help, and parsing.

One table drives dispatch (the session maps each command name to a
handler), argument checking and usage errors, and ``/help``; README's
command list is checked against it by a test, so the three never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pychat.core.text import unquote


@dataclass(frozen=True, slots=True)
class Param:
    """One argument. A ``rest`` parameter takes the rest of the line; a
    ``verbatim`` one takes it as typed (a password keeps its quotes)."""

    name: str
    optional: bool = False
    rest: bool = False
    verbatim: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    params: tuple[Param, ...]
    summary: str
    details: str = ""

    @property
    def usage(self) -> str:
        words = [f"/{self.name}"]
        for p in self.params:
            words.append(f"[{p.name}]" if p.optional else p.name)
        return " ".join(words)


_NAME = Param("NAME")
_TEXT = Param("TEXT", rest=True)
_PASSWORD = Param("PASSWORD", rest=True, verbatim=True)
_REASON = Param("REASON", optional=True, rest=True)
_DURATION = Param("DURATION", optional=True)
DURATIONS = "DURATION is seconds or a number with s, m, h or d (30m, 2h, 7d; at most 366d)."

COMMANDS: Final[tuple[Command, ...]] = (
    Command("help", ("manual", "?"), (Param("COMMAND", optional=True),),
            "all commands with one line each; details for one",
            "Without COMMAND, lists every command. With it, shows its usage, aliases and details."),
    Command("nick", (), (_NAME,),
            "change your name (same rules as at login); your room sees it",
            "Names are 1-20 characters: letters of one script, digits 0-9, '_' or '-', starting "
            "with a letter or '_' (so that every name is an IRC nickname too). "
            "A name that looks like one in use (ALICE, a1ice, Cyrillic a) is taken."),
    Command("list", ("rooms",), (Param("PATTERN", optional=True),),
            "rooms with member counts, busiest first, locked ones marked; PATTERN filters",
            "Shows at most 50 rooms and how many more there are. PATTERN keeps the rooms whose name "
            "contains it, ignoring case; with * or ? it is a wildcard pattern for the whole name (/list dev*)."),
    Command("join", (), (Param("ROOM"), Param("KEY", optional=True)),
            "join, creating if missing; switches from your current room",
            "A locked room needs its KEY. Joining a missing room with a KEY creates it locked."),
    Command("create", (), (Param("ROOM"), Param("KEY", optional=True)),
            "create a new room and join it; error if it exists; with KEY the room is private",
            "Only those who give the KEY may join a private room or read its history."),
    Command("leave", ("part",), (),
            "leave your room, back to the hall"),
    Command("roominfo", ("who", "names"), (),
            "your room's name, topic, modes and members (@ operator, + voiced)"),
    Command("users", (), (Param("PATTERN", optional=True),),
            "everyone online and their rooms; a locked or secret room shows as a private room to others",
            "Shows at most 100 users and how many more there are; PATTERN keeps the names that "
            "contain it (* and ? as in /list)."),
    Command("dm", ("msg",), (_NAME, _TEXT),
            "direct message to one user",
            'TEXT may be wrapped in double quotes: /dm bob "hi there".'),
    Command("bc", ("broadcast",), (_TEXT,),
            "message to everyone online, in every room and the hall"),
    Command("message", ("say",), (_TEXT,),
            "message to your room (same as a plain line)",
            "A plain line that does not start with '/' does the same; '//text' sends '/text'."),
    Command("me", (), (_TEXT,),
            "action in your room: * NAME TEXT"),
    Command("history", (), (Param("N", optional=True),),
            "the last N (default 20, at most 500) messages of your room"),
    Command("quit", ("exit",), (_REASON,),
            "say goodbye and disconnect; your room sees that you quit"),
    # Accounts
    Command("register", (), (_PASSWORD,),
            "reserve your current name; from then on it needs the password",
            "A password has 8-256 characters and may contain spaces. Names that look like yours "
            "(ALICE, Cyrillic a) are reserved too. Rooms you create while logged in are yours."),
    Command("login", ("identify",), (_NAME, _PASSWORD),
            "log in to a registered name (you take that name)",
            "At the name prompt, typing a registered name asks for its password instead."),
    Command("logout", (), (),
            "log out; you go on under a guest name"),
    Command("password", (), (Param("OLD"), Param("NEW", rest=True, verbatim=True)),
            "change your account's password",
            "OLD is one word; NEW may contain spaces."),
    Command("unregister", (), (_PASSWORD,),
            "delete your account: its name is free again, its rooms unowned"),
    # Rooms
    Command("topic", (), (Param("TEXT", optional=True, rest=True),),
            "show or set your room's topic (operators only when it is locked)",
            "/topic with a single - clears the topic."),
    Command("op", (), (_NAME,),
            "make someone an operator of your room (operators only)",
            "A logged-in user keeps the role: it comes back when they rejoin."),
    Command("deop", (), (_NAME,),
            "take operator from someone (not from the room's owner)"),
    Command("voice", (), (_NAME,),
            "let someone speak in your moderated room"),
    Command("devoice", (), (_NAME,),
            "take voice from someone"),
    Command("kick", (), (_NAME, _REASON),
            "remove someone from your room (they may come back unless banned)"),
    Command("ban", (), (Param("NAME-OR-MASK"), _DURATION),
            "keep someone out of your room, for good or for DURATION",
            "A name bans that user's account if logged in, else the name. A mask is $a:ACCOUNT, "
            "nick!user@host with * and ?, or an address or network (10.0.0.0/8). " + DURATIONS),
    Command("unban", (), (Param("MASK"),),
            "lift a ban"),
    Command("bans", (), (),
            "your room's bans and mutes"),
    Command("invite", (), (_NAME,),
            "ask someone into your room (an operator's invitation lets them past invite-only, a ban or the limit)",
            "An operator's invitation holds for an hour. In an invite-only room only operators invite."),
    Command("mode", ("set",), (Param("CHANGES", optional=True, rest=True),),
            "show or change your room's modes: +i invite-only, +m moderated, +t topic locked",
            "Several at once: /mode +im-t. Also +s (secret: hidden from /list), +k KEY (locked), "
            "+l N (at most N members), -n (outsiders may speak in it), and - to undo each. Operators only."),
    Command("mute", (), (_NAME, _DURATION),
            "silence someone in your room, for good or for DURATION",
            "NAME may be a mask as for /ban. Operators and voiced members are never silenced "
            "(a voice overrides a mute, as on IRC). " + DURATIONS),
    Command("unmute", (), (_NAME,),
            "let someone speak again"),
    # Your own view
    Command("ignore", (), (_NAME,),
            "stop seeing someone's messages, actions, direct messages and broadcasts",
            "Your own list (at most 100 names), kept with your account if you are logged in. "
            "They are not told."),
    Command("unignore", (), (_NAME,),
            "see someone's messages again"),
    Command("ignores", (), (),
            "the names you ignore"),
    # Server operators
    Command("kill", (), (_NAME, _REASON),
            "disconnect someone (server operators)"),
    Command("kline", (), (Param("ADDRESS-OR-CIDR"), _DURATION, Param("REASON", optional=True, rest=True)),
            "ban an address or network from the server (server operators)",
            "Its users are disconnected and new connections refused. " + DURATIONS),
    Command("unkline", (), (Param("ADDRESS-OR-CIDR"),),
            "lift a server ban (server operators)"),
    Command("wall", (), (_TEXT,),
            "a message to everyone online (server operators; IRC users see it with user mode +w)"),
)

_BY_WORD: Final[dict[str, Command]] = {
    word: cmd for cmd in COMMANDS for word in (cmd.name, *cmd.aliases)
}


def lookup(word: str) -> Command | None:
    """The command for a word or alias (case ignored, leading '/' optional)."""
    return _BY_WORD.get(word.lstrip("/").lower())


class UsageError(Exception):
    """Wrong arguments for a command; the message is the usage line."""


def split_command(line: str) -> tuple[str, str]:
    """'/Join #a key' -> ('join', '#a key'): the word and its argument text."""
    word, _, rest = line.partition(" ")
    return word.lower(), rest.strip()


def parse_args(cmd: Command, rest: str) -> list[str]:
    """Split the argument text of CMD by its parameters.

    Plain parameters are single words; a ``rest`` parameter takes what is
    left, with one pair of wrapping double quotes removed.
    """
    args: list[str] = []
    for param in cmd.params:
        if param.rest and param.verbatim:
            value, rest = rest.strip(), ""
        elif param.rest:
            value = unquote(rest.strip()) if rest.strip() else ""
            rest = ""
        else:
            value, _, rest = rest.strip().partition(" ")
        if not value:
            if param.optional:
                break
            raise UsageError(f"usage: {cmd.usage}")
        args.append(value)
    if rest.strip():
        raise UsageError(f"usage: {cmd.usage}")
    return args


def help_lines(cmd: Command | None = None) -> list[str]:
    """The text of /help: every command, or the details of one."""
    if cmd is None:
        width = max(len(c.usage) for c in COMMANDS)
        lines = ["commands (a line that does not start with '/' goes to your room):"]
        for c in COMMANDS:
            lines.append(f"  {c.usage:<{width}}  {c.summary}")
        lines.append("/help COMMAND shows details and aliases of one command")
        return lines
    lines = [f"{cmd.usage}: {cmd.summary}"]
    if cmd.aliases:
        lines.append("aliases: " + ", ".join("/" + a for a in cmd.aliases))
    if cmd.details:
        lines.append(cmd.details)
    return lines
