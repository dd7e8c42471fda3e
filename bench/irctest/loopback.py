"""Loopback-only ports for irctest controllers.

irctest picks each server's port by binding the wildcard address, and
passes that address ("0.0.0.0") to the controller, so the daemons under
test listen on every interface. Mixed into a controller, this picks a free
port on 127.0.0.1 instead and hands out 127.0.0.1 as the address: servers
bind loopback only and the test clients connect there.
"""

from __future__ import annotations

import socket
from typing import Tuple


class LoopbackPorts:
    """Overrides irctest's ``_BaseController.get_hostname_and_port``."""

    def get_hostname_and_port(self) -> Tuple[str, int]:
        # Registered in irctest's shared port file, as irctest does, so that
        # parallel workers (pytest -n) never hand out the same port twice.
        with self._used_ports() as used_ports:  # type: ignore[attr-defined]
            while True:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                if ("127.0.0.1", port) not in used_ports:
                    break
            used_ports.add(("127.0.0.1", port))
            self._own_ports.add(("127.0.0.1", port))  # type: ignore[attr-defined]
        return ("127.0.0.1", port)
