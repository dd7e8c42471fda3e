"""The client's settings: its command line (PROTOCOL.md section 8)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Sequence

from pychat import __version__

DEFAULT_PORT = 22222
DEFAULT_TLS_PORT = 22223
PASSWORD_VARIABLE = "PYCHAT_PASSWORD"


def _port(text: str) -> int:
    """A TCP port, with the whole message in the error (argparse would name the function)."""
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class ClientSettings:
    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    cafile: str | None = None     # trusted instead of the system's certificate authorities
    insecure: bool = False        # TLS without checking the certificate (tests only)
    name: str | None = None
    plain: bool = False
    # The password of a registered NAME, from the environment (PYCHAT_PASSWORD):
    # a command-line argument would show in every user's `ps`.
    password: str | None = None


def client_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pychat-client",
        description="pychat's terminal client: a full-screen chat on a terminal, plain lines otherwise.",
    )
    p.add_argument("host", help="the server's host name or address")
    p.add_argument("--port", type=_port, default=None,
                   help=f"the server's port (default {DEFAULT_PORT}, with --tls {DEFAULT_TLS_PORT})")
    p.add_argument("--tls", action="store_true", help="connect over TLS, checking the server's certificate")
    p.add_argument("--cafile", metavar="FILE",
                   help="with --tls: trust the certificates in FILE (PEM) instead of the system's")
    p.add_argument("--insecure", action="store_true",
                   help="with --tls: do not check the certificate (anyone in between can read everything)")
    p.add_argument("--name", default=None,
                   help=f"answer the server's name prompt with NAME (a registered name's password: ${PASSWORD_VARIABLE})")
    p.add_argument("--plain", action="store_true",
                   help="line mode: stdin lines go to the server, server lines to stdout "
                        "(the default when stdin is not a terminal)")
    p.add_argument("--version", action="version", version=f"pychat {__version__}")
    return p


def parse_client_args(argv: Sequence[str] | None = None) -> ClientSettings:
    parser = client_parser()
    values = vars(parser.parse_args(argv))
    if (values["cafile"] or values["insecure"]) and not values["tls"]:
        parser.error("--cafile and --insecure go with --tls")
    if values["port"] is None:
        values["port"] = DEFAULT_TLS_PORT if values["tls"] else DEFAULT_PORT
    return ClientSettings(**values, password=os.environ.get(PASSWORD_VARIABLE) or None)
