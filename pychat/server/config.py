"""The server's settings: its flags and their defaults (PROTOCOL.md sections 6 and 8)."""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass
from typing import Sequence

from pychat import __version__
from pychat.core.history import default_db_path
from pychat.core.text import room_name, room_problem
from pychat.protocols.irc.session import SERVER_INFO

DEFAULT_PORT = 22222
DEFAULT_IRC_PORT = 6667
DEFAULT_TLS_PORT = 22223
DEFAULT_IRCS_PORT = 6697
DEFAULT_WEB_PORT = 8080


def default_server_name() -> str:
    """This host's name if IRC can carry it, else pychat.local."""
    name = platform.node()
    try:
        return _server_name(name)
    except argparse.ArgumentTypeError:
        return "pychat.local"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The server's settings. The defaults are the protocol's, except ``db``
    and ``irc_port``: built in code (tests, embedding) a server keeps history
    in memory and listens for the line protocol only; the command line
    defaults to the file of :func:`default_db_path` and IRC on 6667."""

    host: str | None = None
    port: int = DEFAULT_PORT
    irc_port: int | None = None
    server_name: str = "pychat.local"
    server_info: str = SERVER_INFO
    # TLS listeners (PROTOCOL.md section 11): on when both files are given.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_port: int | None = DEFAULT_TLS_PORT
    ircs_port: int | None = DEFAULT_IRCS_PORT
    # The web front end (PROTOCOL.md section 12): the page and IRC over
    # WebSocket; HTTPS and WSS when TLS is on. Needs the web extra.
    web_port: int | None = None
    web_origins: tuple[str, ...] = ()   # allowed Origin values; none: the page's own only
    max_line: int = 4096
    sendq: int = 1 << 20
    flood_rate: float = 10.0
    flood_burst: int = 20
    max_clients: int = 10_000
    max_per_ip: int = 100
    registration_timeout: float = 60.0
    db: str = ":memory:"
    default_room: str = "general"
    history_lines: int = 20
    max_rooms: int = 10_000
    opers: tuple[str, ...] = ()
    log_level: str = "info"
    # A cluster (README: Several nodes, one Redis): several nodes sharing one world
    # through Redis; None is a single process. Needs the cluster extra.
    cluster: str | None = None
    node_name: str = ""                 # empty: HOSTNAME-PID
    # Not a flag: how long a graceful shutdown or a closing connection may
    # spend flushing output before the socket is closed regardless.
    flush_deadline: float = 5.0


# Argument types raise ArgumentTypeError with the whole message: argparse
# would otherwise name the function ("invalid _port value: 'abc'").

def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _non_negative_int(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number, 0 or more: {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return value


def _port_or_off(text: str) -> int | None:
    return None if text.lower() == "off" else _port(text)


def _server_info(text: str) -> str:
    """One short printable line (IRC's trailing parameter of LINKS and WHOIS)."""
    if not text.strip() or len(text) > 80 or not text.isprintable():
        raise argparse.ArgumentTypeError(f"not a usable server description: {text!r} (one line, at most 80)")
    return text


def _server_name(text: str) -> str:
    """A name IRC can carry as a source: no spaces, no '!', '@' or ':'."""
    if not text or len(text) > 63 or any(c in text for c in " !@:,*?\t") or not text.isascii():
        raise argparse.ArgumentTypeError(f"not a usable server name: {text!r} (ASCII, no spaces, at most 63)")
    return text


def _default_room(text: str) -> str:
    """A valid room name, or empty (new users stay in the hall)."""
    if not text:
        return ""
    name = room_name(text)
    problem = room_problem(name)
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid room name: {problem}")
    return name


def _redis_url(text: str) -> str:
    from pychat.server.redis import RedisAddress
    try:
        RedisAddress(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _node_name(text: str) -> str:
    if not text or len(text) > 64 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in text):
        raise argparse.ArgumentTypeError(f"not a usable node name: {text!r} (letters, digits, - _ . ; at most 64)")
    return text


def server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pychat-server",
        description="pychat: a small single-threaded chat server (connect with nc HOST PORT).",
    )
    d = ServerSettings()
    p.add_argument("host", nargs="?", default=None,
                   help="address to listen on (default: all interfaces, IPv4 and IPv6)")
    p.add_argument("--port", type=_port, default=d.port,
                   help=f"TCP port of the line protocol (default {d.port}; 0 picks a free one)")
    p.add_argument("--irc-port", type=_port_or_off, default=DEFAULT_IRC_PORT, metavar="PORT",
                   help=f"TCP port of the IRC front end; 'off' disables it (default {DEFAULT_IRC_PORT})")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="PEM certificate (chain) for the TLS listeners; with --tls-key turns them on")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    p.add_argument("--tls-port", type=_port_or_off, default=d.tls_port, metavar="PORT",
                   help=f"TLS port of the line protocol, with --tls-cert; 'off' disables it (default {d.tls_port})")
    p.add_argument("--ircs-port", type=_port_or_off, default=d.ircs_port, metavar="PORT",
                   help=f"TLS port of the IRC front end, with --tls-cert; 'off' disables it (default {d.ircs_port})")
    p.add_argument("--web-port", type=_port_or_off, default=DEFAULT_WEB_PORT, metavar="PORT",
                   help=f"port of the web page and its WebSocket (IRC; HTTPS and WSS with --tls-cert); "
                        f"'off' disables it; needs the web extra, pip install '.[web]' (default {DEFAULT_WEB_PORT})")
    p.add_argument("--web-origin", dest="web_origins", action="append", default=[], metavar="ORIGIN",
                   help="a page origin allowed to open the WebSocket, e.g. https://chat.example.org "
                        "(repeatable; default: the server's own page only)")
    p.add_argument("--server-name", type=_server_name, default=default_server_name(), metavar="NAME",
                   help="the server's name, as IRC clients see it (default: this host's name)")
    p.add_argument("--server-info", type=_server_info, default=d.server_info, metavar="TEXT",
                   help=f"the server's description, in IRC's LINKS and WHOIS (default '{d.server_info}')")
    p.add_argument("--max-line", type=_positive_int, default=d.max_line, metavar="BYTES",
                   help=f"longest input line; longer ones are refused and discarded (default {d.max_line})")
    p.add_argument("--sendq", type=_positive_int, default=d.sendq, metavar="BYTES",
                   help=f"unsent output after which a client that is not reading is disconnected (default {d.sendq})")
    p.add_argument("--flood-rate", type=_non_negative_float, default=d.flood_rate, metavar="LINES/S",
                   help=f"lines per second a client may send; beyond it reading pauses; 0 turns it off (default {d.flood_rate:g})")
    p.add_argument("--flood-burst", type=_positive_int, default=d.flood_burst, metavar="LINES",
                   help=f"lines a client may send at once before the rate applies (default {d.flood_burst})")
    p.add_argument("--max-clients", type=_positive_int, default=d.max_clients, metavar="N",
                   help=f"connections at most; more are refused (default {d.max_clients})")
    p.add_argument("--max-per-ip", type=_non_negative_int, default=d.max_per_ip, metavar="N",
                   help=f"connections per source address; 0 turns it off (default {d.max_per_ip})")
    p.add_argument("--registration-timeout", type=_non_negative_float, default=d.registration_timeout,
                   metavar="S", help=f"seconds to give a name before being disconnected (default {d.registration_timeout:g})")
    p.add_argument("--db", default=None, metavar="PATH",
                   help=f"SQLite history file; ':memory:' keeps nothing (default {default_db_path()})")
    p.add_argument("--default-room", type=_default_room, default=d.default_room, metavar="NAME",
                   help=f"room new users join; empty leaves them in the hall (default {d.default_room})")
    p.add_argument("--history-lines", type=_non_negative_int, default=d.history_lines, metavar="N",
                   help=f"messages replayed on join; 0 for none (default {d.history_lines})")
    p.add_argument("--max-rooms", type=_positive_int, default=d.max_rooms, metavar="N",
                   help=f"rooms the server keeps; creating more is refused (default {d.max_rooms})")
    p.add_argument("--oper", dest="opers", action="append", default=[], metavar="ACCOUNT",
                   help="an account that is a server operator once logged in (repeatable)")
    p.add_argument("--cluster", metavar="redis://[[USER]:PASSWORD@]HOST:PORT[/DB]", type=_redis_url, default=None,
                   help="join the cluster that shares this Redis (the password may come from "
                        "$PYCHAT_REDIS_PASSWORD instead; needs the cluster extra: hiredis)")
    p.add_argument("--node-name", type=_node_name, default=None, metavar="NAME",
                   help="this node's name in the cluster, kept across restarts (default HOSTNAME-PID)")
    p.add_argument("--log-level", choices=LOG_LEVELS, default=d.log_level, type=str.lower,
                   help=f"server log detail on stderr (default {d.log_level})")
    p.add_argument("--version", action="version", version=f"pychat {__version__}")
    return p


def parse_server_args(argv: Sequence[str] | None = None) -> ServerSettings:
    parser = server_parser()
    ns = parser.parse_args(argv)
    if (ns.tls_cert is None) != (ns.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if ns.node_name and ns.cluster is None:
        parser.error("--node-name goes with --cluster")
    values = vars(ns)
    values["opers"] = tuple(values["opers"])
    values["node_name"] = values["node_name"] or ""
    values["web_origins"] = tuple(values["web_origins"])
    if values["db"] is None:
        values["db"] = default_db_path()
    return ServerSettings(**values)
