"""IRC messages, one line at a time: parse, format, CTCP, numerics.

Sans-I/O and standard library only. Cutting a byte stream into lines is the
line framer's job (it accepts ``\\n`` and ``\\r\\n`` and reports overlong
lines); this module turns one line into a :class:`Message` and a message
back into one line. It follows the Modern IRC client protocol
(modern.ircdocs.horse) and the IRCv3 message-tags specification; where they
leave a choice, the choice is written down here and tested:

* :func:`parse` takes a line with or without its ``\\r\\n`` and returns
  ``None`` for a blank line (empty or only spaces), which servers and
  clients SHOULD ignore.
* Sizes are checked on the raw bytes, before anything is decoded. The part
  after the tags may be 510 bytes (512 with the CRLF). The tags section,
  counted with its ``@`` and its trailing space, may be ``max_tags`` bytes:
  4096 by default (:data:`CLIENT_TAGS_MAX`: 4094 bytes of tag data, the
  most a client may send, and what a server must accept), 8191
  (:data:`TAGS_MAX`) for lines that come from a server. Either violation
  raises :class:`MessageError` with ``numeric == "417"``
  (ERR_INPUTTOOLONG): the spec says to answer it and never to truncate tags.
* A malformed line (only tags, only a source, an empty source, no command
  after the source, or a NUL, CR or LF inside the line) raises
  :class:`MessageError` with ``numeric is None``: the server drops it
  without a reply, as IRC servers usually do. A bare CR is refused rather
  than treated as a line end, so one line never becomes two here.
* Parsing raises nothing but :class:`MessageError`, whatever the bytes.
* Any number of parameters is parsed (Modern IRC: "MUST parse incoming
  messages with any number of them"); runs of spaces are one separator,
  and trailing spaces after the last middle parameter are dropped.
* The command is upper-cased in ASCII only; it is not validated further,
  so the session can answer an unknown one with 421 ERR_UNKNOWNCOMMAND.
* Text is UTF-8, undecodable bytes become U+FFFD. Control characters are
  kept (CTCP needs ``\\x01``): cleaning text is the caller's job.
* Tags: the last of repeated keys wins; a tag with an empty key is
  skipped, not refused (the spec forbids rejecting a message for an invalid
  key); a tag value that is not UTF-8 becomes ``""`` (the spec allows
  dropping it and advises against replacement characters). Unescaped
  values may hold CR and LF (``\\r``, ``\\n``): they are data.
* :func:`format_message` raises ``ValueError`` for what only a programming
  error can produce (a command that is not letters or digits, a middle
  parameter that is empty, starts with ``:`` or holds a space, CR, LF or
  NUL, a source that is empty or holds one of those, a bad tag key);
  CR, LF and NUL in the last parameter, which carries user text, become
  spaces, so text can never inject a second line. It does not enforce the
  512-byte limit: the caller fits text to the room left (a relayed line
  grows by the sender's prefix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Mapping

__all__ = [
    "CLIENT_TAGS_MAX",
    "MAX_BODY",
    "MAX_CLIENT_LINE",
    "TAGS_MAX",
    "TEXTS",
    "Message",
    "MessageError",
    "action",
    "client_tags",
    "ctcp",
    "escape_tag_value",
    "format_message",
    "parse",
    "prefix",
    "unescape_tag_value",
]

# -- limits -------------------------------------------------------------------

MAX_BODY: Final = 510
"""Bytes after the tags section (source, command, parameters), without CRLF."""

TAGS_MAX: Final = 8191
"""Whole tags section, '@' and trailing space included: server and client tags."""

CLIENT_TAGS_MAX: Final = 4096
"""Tags section a client may send: '@', 4094 bytes of tag data, a space."""

MAX_CLIENT_LINE: Final = CLIENT_TAGS_MAX + MAX_BODY
"""Longest legal line from a client without its line end: the framer's bound."""


# -- the message and its errors -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed IRC line.

    ``tags`` holds unescaped values (``""`` for a tag without one; client-only
    tags keep their ``+``); ``source`` is the prefix without its ``:``, or
    None; ``command`` is upper-case (numerics stay three-digit strings);
    ``params`` has the trailing parameter last, without its ``:``.
    """

    tags: dict[str, str]
    source: str | None
    command: str
    params: tuple[str, ...]


class MessageError(Exception):
    """A line from a peer that is not a message we accept.

    ``numeric`` is the reply a server owes the sender (ERR_INPUTTOOLONG for
    a line over the limits), or None for a malformed line, which servers
    drop without a reply. ``text`` is that reply's text, or for a malformed
    line a short reason for the log.
    """

    def __init__(self, numeric: str | None, text: str) -> None:
        super().__init__(text)
        self.numeric = numeric
        self.text = text

    def __repr__(self) -> str:
        return f"MessageError({self.numeric!r}, {self.text!r})"


def _too_long() -> MessageError:
    return MessageError(ERR_INPUTTOOLONG, TEXTS[ERR_INPUTTOOLONG])


def _malformed(reason: str) -> MessageError:
    return MessageError(None, reason)


# -- parsing ------------------------------------------------------------------

# NUL, CR and LF may not appear inside a message (Modern IRC grammar).
_FORBIDDEN_BYTES = re.compile(rb"[\x00\r\n]")


def parse(line: bytes, *, max_tags: int = CLIENT_TAGS_MAX) -> Message | None:
    """Parse one line (its ``\\r\\n`` or ``\\n`` may be left on).

    Returns None for a blank line. Raises :class:`MessageError`, and nothing
    else, for a line over the limits (numeric 417) or a malformed one
    (numeric None). ``max_tags`` bounds the tags section with its ``@`` and
    trailing space: keep the default for lines from clients, pass
    :data:`TAGS_MAX` for lines from a server.
    """
    if line[-1:] == b"\n":
        line = line[:-2] if line[-2:-1] == b"\r" else line[:-1]
    tags_end = -1
    body = line
    if line[:1] == b"@":
        tags_end = line.find(b" ")
        if tags_end < 0:
            # No command can follow; over the limit is still the better answer.
            if len(line) + 1 > max_tags:
                raise _too_long()
            raise _malformed("tags without a command")
        if tags_end + 1 > max_tags:
            raise _too_long()
        body = line[tags_end + 1 :]
    if len(body) > MAX_BODY:
        raise _too_long()
    if _FORBIDDEN_BYTES.search(line) is not None:
        raise _malformed("NUL, CR or LF inside the line")
    tags = _parse_tags(line[1:tags_end]) if tags_end >= 0 else {}
    # UTF-8 never uses the bytes of " " or ":" inside a character, and the
    # replacement character is neither: splitting the text equals splitting
    # the bytes.
    text = body.decode("utf-8", "replace").lstrip(" ")
    if not text:
        if tags_end >= 0:
            raise _malformed("tags without a command")
        return None
    source: str | None = None
    if text[0] == ":":
        source, _, text = text[1:].partition(" ")
        if not source:
            raise _malformed("empty source")
        text = text.lstrip(" ")
        if not text:
            raise _malformed("source without a command")
    head, colon, trailing = text.partition(" :")
    words = head.split(" ")
    command = words[0]
    if command[0] == ":":
        raise _malformed("no command after the source")
    params = [word for word in words[1:] if word]
    if colon:
        params.append(trailing)
    return Message(tags, source, _ascii_upper(command), tuple(params))


def _ascii_upper(word: str) -> str:
    """Upper-case ASCII letters only: a non-ASCII command stays as it came."""
    if word.isascii():
        return word.upper()
    return "".join(c.upper() if c.isascii() else c for c in word)


def _parse_tags(data: bytes) -> dict[str, str]:
    """Tag data (between '@' and the space) to a dict of unescaped values."""
    tags: dict[str, str] = {}
    for item in data.split(b";"):
        key, _, raw = item.partition(b"=")
        if not key:
            continue
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = ""
        if "\\" in value:
            value = unescape_tag_value(value)
        tags[key.decode("utf-8", "replace")] = value
    return tags


# -- tag values ---------------------------------------------------------------

_UNESCAPES: Final = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
# One backslash and the character after it, if any: left to right, so "\\\\n"
# is a backslash and an "n", never a backslash and a newline.
_ESCAPE_SEQUENCE = re.compile(r"\\(.?)", re.DOTALL)


def _unescape_match(match: re.Match[str]) -> str:
    char = match.group(1)
    return _UNESCAPES.get(char, char)


def unescape_tag_value(value: str) -> str:
    """Undo IRCv3 tag escaping: ``\\:`` ``\\s`` ``\\\\`` ``\\r`` ``\\n``.

    A backslash before any other character is dropped (``\\b`` is ``b``), and
    so is a lone backslash at the end, as the spec says.
    """
    if "\\" not in value:
        return value
    return _ESCAPE_SEQUENCE.sub(_unescape_match, value)


# NUL has no escape and may not appear on the wire: it goes out as a space.
_TAG_ESCAPES: Final = str.maketrans(
    {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n", "\x00": "\\s"}
)
_NEEDS_ESCAPE = re.compile(r"[; \\\r\n\x00]")


def escape_tag_value(value: str) -> str:
    """IRCv3 tag escaping; a value that needs none comes back as it is."""
    if _NEEDS_ESCAPE.search(value) is None:
        return value
    return value.translate(_TAG_ESCAPES)


# A client-only tag's key, as the spec writes it: '+', an optional vendor
# (a host name) and '/', then letters, digits and hyphens.
_CLIENT_TAG_KEY = re.compile(r"\+(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")


def client_tags(tags: Mapping[str, str]) -> str:
    """The client-only tags (``+key``) of TAGS, as a server relays them:
    ``+key=value`` joined by ``;``, values escaped again, other tags (the
    server's own, such as ``time`` or ``msgid``) and malformed keys dropped.
    ``""`` if there are none."""
    return ";".join(f"{key}={escape_tag_value(value)}" if value else key
                    for key, value in tags.items()
                    if key[:1] == "+" and _CLIENT_TAG_KEY.fullmatch(key))


# -- formatting ---------------------------------------------------------------

# A tag key cannot hold these: they would end it or the tags section.
_BAD_TAG_KEY = re.compile(r"[ ;=\r\n\x00]")
_LINE_BREAKS = re.compile(r"[\r\n\x00]")
_TEXT_TO_SPACE: Final = str.maketrans("\r\n\x00", "   ")


def format_message(
    command: str,
    *params: str,
    source: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> bytes:
    """One IRC line, ending in ``\\r\\n``, as UTF-8 bytes.

    The last parameter gets a ``:`` when it must (empty, holds a space,
    starts with ``:``); CR, LF and NUL in it become spaces. A middle
    parameter that could not survive the trip (empty, starting with ``:``,
    holding a space, CR, LF or NUL), or such a source (a leading ``:`` is
    fine there), raises ValueError: only a programming error makes one. Tag values are escaped; a tag with value
    ``""`` is sent as a bare key. The caller keeps the body within
    :data:`MAX_BODY`.
    """
    # The hot path: one per room event. Cheap checks on each part, then one
    # scan of the assembled line for CR, LF and NUL; finding one is rare and
    # takes the slow path.
    if not (command.isascii() and command.isalnum()):
        raise ValueError(f"IRC command must be letters or digits: {command!r}")
    if params:
        last = params[-1]
        head = command
        if len(params) > 1:
            for param in params[:-1]:
                if not param or param[0] == ":" or " " in param:
                    raise ValueError(f"bad middle IRC parameter: {param!r}")
            head = command + " " + " ".join(params[:-1])
        if not last or last[0] == ":" or " " in last:
            line = f"{head} :{last}"
        else:
            line = f"{head} {last}"
    else:
        line = command
    if source is not None:
        if not source or " " in source:
            raise ValueError(f"bad IRC source: {source!r}")
        line = f":{source} {line}"
    if "\r" in line or "\n" in line or "\x00" in line:
        return _format_breaks_in_text(command, params, source, tags)
    if tags:
        line = f"@{_format_tags(tags)} {line}"
    # "replace": a lone surrogate (from a surrogateescape decode) cannot
    # stop a line from going out.
    return (line + "\r\n").encode("utf-8", "replace")


def _format_breaks_in_text(
    command: str, params: tuple[str, ...], source: str | None, tags: Mapping[str, str] | None
) -> bytes:
    """CR, LF or NUL somewhere: an error outside the text, spaces inside it."""
    for part in (source or "", *params[:-1]):
        if _LINE_BREAKS.search(part) is not None:
            raise ValueError(f"CR, LF or NUL in an IRC source or middle parameter: {part!r}")
    text = params[-1].translate(_TEXT_TO_SPACE)
    return format_message(command, *params[:-1], text, source=source, tags=tags)


def _format_tags(tags: Mapping[str, str]) -> str:
    items = []
    for key, value in tags.items():
        if not key or _BAD_TAG_KEY.search(key) is not None:
            raise ValueError(f"bad IRC tag key: {key!r}")
        if value:
            if _NEEDS_ESCAPE.search(value) is not None:
                value = value.translate(_TAG_ESCAPES)
            items.append(f"{key}={value}")
        else:
            items.append(key)
    return ";".join(items)


def prefix(nick: str, user: str, host: str) -> str:
    """The ``nick!user@host`` source of a user's messages.

    Build it once per user (and again on NICK), not once per message.
    """
    return f"{nick}!{user}@{host}"


# -- CTCP ---------------------------------------------------------------------


def ctcp(text: str) -> tuple[str, str] | None:
    """(command, argument) of a CTCP message text, or None for plain text.

    ``"\\x01ACTION waves\\x01"`` gives ``("ACTION", "waves")``. The closing
    ``\\x01`` may be missing (clients that split long lines lose it); text
    after an inner ``\\x01`` is ignored. The command is upper-cased (ASCII)
    so callers compare with one spelling; an empty command is plain text.
    """
    if text[:1] != "\x01":
        return None
    body = text[1:]
    end = body.find("\x01")
    if end >= 0:
        body = body[:end]
    command, _, argument = body.partition(" ")
    if not command:
        return None
    return _ascii_upper(command), argument


def action(text: str) -> str:
    """The CTCP ACTION text for ``/me TEXT``.

    A ``\\x01`` in TEXT would end the CTCP early and leave the rest as
    garbage, so it is dropped.
    """
    if "\x01" in text:
        text = text.replace("\x01", "")
    return "\x01ACTION " + text + "\x01" if text else "\x01ACTION\x01"


# -- numerics -----------------------------------------------------------------
# Names as in Modern IRC (RFC 1459/2812 where Modern has none). TEXTS holds
# the usual last parameter of those whose text does not vary.

RPL_WELCOME: Final = "001"
RPL_YOURHOST: Final = "002"
RPL_CREATED: Final = "003"
RPL_MYINFO: Final = "004"
RPL_ISUPPORT: Final = "005"
RPL_UMODEIS: Final = "221"
RPL_LUSERCLIENT: Final = "251"
RPL_LUSEROP: Final = "252"
RPL_LUSERUNKNOWN: Final = "253"
RPL_LUSERCHANNELS: Final = "254"
RPL_LUSERME: Final = "255"
RPL_LOCALUSERS: Final = "265"
RPL_GLOBALUSERS: Final = "266"
RPL_AWAY: Final = "301"
RPL_USERHOST: Final = "302"
RPL_ISON: Final = "303"
RPL_UNAWAY: Final = "305"
RPL_NOWAWAY: Final = "306"
RPL_WHOISUSER: Final = "311"
RPL_WHOISSERVER: Final = "312"
RPL_WHOISOPERATOR: Final = "313"
RPL_WHOWASUSER: Final = "314"
RPL_ENDOFWHO: Final = "315"
RPL_WHOISCHANOP: Final = "316"  # RFC 1459 reserves it; nothing sends it
RPL_WHOISIDLE: Final = "317"
RPL_ENDOFWHOIS: Final = "318"
RPL_WHOISCHANNELS: Final = "319"
RPL_LISTSTART: Final = "321"
RPL_LIST: Final = "322"
RPL_LISTEND: Final = "323"
RPL_CHANNELMODEIS: Final = "324"
RPL_WHOISACCOUNT: Final = "330"
RPL_CREATIONTIME: Final = "329"
RPL_NOTOPIC: Final = "331"
RPL_TOPIC: Final = "332"
RPL_TOPICWHOTIME: Final = "333"
RPL_INVITELIST: Final = "336"
RPL_ENDOFINVITELIST: Final = "337"
RPL_INVITING: Final = "341"
RPL_WHOREPLY: Final = "352"
RPL_WHOSPCRPL: Final = "354"
RPL_NAMREPLY: Final = "353"
RPL_LINKS: Final = "364"
RPL_ENDOFLINKS: Final = "365"
RPL_ENDOFNAMES: Final = "366"
RPL_MOTD: Final = "372"
RPL_MOTDSTART: Final = "375"
RPL_ENDOFMOTD: Final = "376"
RPL_VERSION: Final = "351"
RPL_BANLIST: Final = "367"
RPL_ENDOFBANLIST: Final = "368"
RPL_ENDOFWHOWAS: Final = "369"
RPL_INFO: Final = "371"
RPL_ENDOFINFO: Final = "374"
RPL_YOUREOPER: Final = "381"
RPL_TIME: Final = "391"
ERR_UNKNOWNERROR: Final = "400"
ERR_NOSUCHNICK: Final = "401"
ERR_NOSUCHSERVER: Final = "402"
ERR_NOSUCHCHANNEL: Final = "403"
ERR_CANNOTSENDTOCHAN: Final = "404"
ERR_WASNOSUCHNICK: Final = "406"
ERR_NOORIGIN: Final = "409"
ERR_NORECIPIENT: Final = "411"
ERR_NOTEXTTOSEND: Final = "412"
ERR_INVALIDCAPCMD: Final = "410"
ERR_INPUTTOOLONG: Final = "417"
ERR_UNKNOWNCOMMAND: Final = "421"
ERR_NOMOTD: Final = "422"
ERR_NONICKNAMEGIVEN: Final = "431"
ERR_ERRONEUSNICKNAME: Final = "432"
ERR_NICKNAMEINUSE: Final = "433"
ERR_NICKCOLLISION: Final = "436"
ERR_UNAVAILRESOURCE: Final = "437"
ERR_USERNOTINCHANNEL: Final = "441"
ERR_NOTONCHANNEL: Final = "442"
ERR_USERONCHANNEL: Final = "443"
ERR_NOTREGISTERED: Final = "451"
ERR_NEEDMOREPARAMS: Final = "461"
ERR_ALREADYREGISTERED: Final = "462"
ERR_PASSWDMISMATCH: Final = "464"
ERR_YOUREBANNEDCREEP: Final = "465"
ERR_KEYSET: Final = "467"
ERR_CHANNELISFULL: Final = "471"
ERR_UNKNOWNMODE: Final = "472"
ERR_INVITEONLYCHAN: Final = "473"
ERR_BANNEDFROMCHAN: Final = "474"
ERR_BADCHANNELKEY: Final = "475"
ERR_BADCHANMASK: Final = "476"
ERR_NOCHANMODES: Final = "477"  # RFC 2812
ERR_BADCHANNAME: Final = "479"  # not in the RFCs; hybrid, ratbox, solanum
ERR_NOPRIVILEGES: Final = "481"
ERR_CHANOPRIVSNEEDED: Final = "482"
ERR_CANTKILLSERVER: Final = "483"
ERR_NOOPERHOST: Final = "491"
ERR_UMODEUNKNOWNFLAG: Final = "501"
ERR_USERSDONTMATCH: Final = "502"
ERR_HELPNOTFOUND: Final = "524"
ERR_INVALIDKEY: Final = "525"
ERR_INVALIDMODEPARAM: Final = "696"
RPL_STARTTLS: Final = "670"
RPL_WHOISSECURE: Final = "671"
ERR_STARTTLS: Final = "691"
RPL_HELPSTART: Final = "704"
RPL_HELPTXT: Final = "705"
RPL_ENDOFHELP: Final = "706"
RPL_LOGGEDIN: Final = "900"
RPL_LOGGEDOUT: Final = "901"
ERR_NICKLOCKED: Final = "902"
RPL_SASLSUCCESS: Final = "903"
ERR_SASLFAIL: Final = "904"
ERR_SASLTOOLONG: Final = "905"
ERR_SASLABORTED: Final = "906"
ERR_SASLALREADY: Final = "907"
RPL_SASLMECHS: Final = "908"

TEXTS: Final[dict[str, str]] = {
    RPL_ISUPPORT: "are supported by this server",
    RPL_LUSEROP: "operator(s) online",
    RPL_LUSERUNKNOWN: "unknown connection(s)",
    RPL_LUSERCHANNELS: "channels formed",
    RPL_UNAWAY: "You are no longer marked as being away",
    RPL_NOWAWAY: "You have been marked as being away",
    RPL_WHOISOPERATOR: "is an IRC operator",
    RPL_ENDOFWHO: "End of WHO list",
    RPL_WHOISIDLE: "seconds idle, signon time",
    RPL_ENDOFWHOIS: "End of /WHOIS list",
    RPL_LISTSTART: "Users  Name",
    RPL_LISTEND: "End of /LIST",
    RPL_NOTOPIC: "No topic is set",
    RPL_ENDOFNAMES: "End of /NAMES list",
    RPL_ENDOFMOTD: "End of /MOTD command.",
    RPL_YOUREOPER: "You are now an IRC operator",
    ERR_NOSUCHNICK: "No such nick/channel",
    ERR_NOSUCHSERVER: "No such server",
    ERR_NOSUCHCHANNEL: "No such channel",
    ERR_CANNOTSENDTOCHAN: "Cannot send to channel",
    ERR_WASNOSUCHNICK: "There was no such nickname",
    ERR_NOORIGIN: "No origin specified",
    ERR_NOTEXTTOSEND: "No text to send",
    ERR_INPUTTOOLONG: "Input line was too long",
    ERR_UNKNOWNCOMMAND: "Unknown command",
    ERR_NOMOTD: "MOTD File is missing",
    ERR_NONICKNAMEGIVEN: "No nickname given",
    ERR_ERRONEUSNICKNAME: "Erroneus nickname",
    ERR_NICKNAMEINUSE: "Nickname is already in use",
    ERR_USERNOTINCHANNEL: "They aren't on that channel",
    ERR_NOTONCHANNEL: "You're not on that channel",
    ERR_USERONCHANNEL: "is already on channel",
    ERR_NOTREGISTERED: "You have not registered",
    ERR_NEEDMOREPARAMS: "Not enough parameters",
    ERR_ALREADYREGISTERED: "You may not reregister",
    ERR_PASSWDMISMATCH: "Password incorrect",
    ERR_YOUREBANNEDCREEP: "You are banned from this server.",
    ERR_KEYSET: "Channel key already set",
    ERR_CHANNELISFULL: "Cannot join channel (+l)",
    ERR_UNKNOWNMODE: "is unknown mode char to me",
    ERR_INVITEONLYCHAN: "Cannot join channel (+i)",
    ERR_BANNEDFROMCHAN: "Cannot join channel (+b)",
    ERR_BADCHANNELKEY: "Cannot join channel (+k)",
    ERR_BADCHANMASK: "Bad Channel Mask",
    ERR_NOCHANMODES: "Channel doesn't support modes",
    ERR_BADCHANNAME: "Illegal channel name",
    ERR_NOPRIVILEGES: "Permission Denied- You're not an IRC operator",
    ERR_CHANOPRIVSNEEDED: "You're not channel operator",
    ERR_CANTKILLSERVER: "You cant kill a server!",
    ERR_UMODEUNKNOWNFLAG: "Unknown MODE flag",
    ERR_USERSDONTMATCH: "Cant change mode for other users",
    ERR_HELPNOTFOUND: "No help available on this topic",
    ERR_INVALIDKEY: "Key is not well-formed",
    RPL_STARTTLS: "STARTTLS successful, proceed with TLS handshake",
    RPL_WHOISSECURE: "is using a secure connection",
    ERR_STARTTLS: "STARTTLS failed",
    RPL_LOGGEDOUT: "You are now logged out",
    ERR_NICKLOCKED: "You must use a nick assigned to you",
    RPL_SASLSUCCESS: "SASL authentication successful",
    ERR_SASLFAIL: "SASL authentication failed",
    ERR_SASLTOOLONG: "SASL message too long",
    ERR_SASLABORTED: "SASL authentication aborted",
    ERR_SASLALREADY: "You have already authenticated using SASL",
    RPL_SASLMECHS: "are available SASL mechanisms",
}
"""Default last parameter of the numerics whose text does not vary."""
