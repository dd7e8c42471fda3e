"""An irctest controller for pychat's IRC front end (PROTOCOL.md section 9).

irctest (https://github.com/progval/irctest) is the conformance suite that
IRC daemons run in their CI. It drives a server through a *controller*: an
object that starts a fresh server for every test and stops it afterwards.
This one follows irctest's ngIRCd controller (irctest/controllers/ngircd.py)
and is named on irctest's command line as a module::

    cd IRCTEST_CHECKOUT
    PYTHONPATH=PYCHAT/bench/irctest python3 -m pytest --controller pychat_controller ...

``bench/irctest/run`` does that for the selections we track.

Environment:

- ``PYCHAT_ROOT``: the pychat checkout whose ``pychat_server.py`` runs
  (default: the checkout this file lives in).
- ``PYCHAT_PYTHON``: the interpreter that runs it (default ``python3``;
  pychat's server needs only the standard library).
- ``PYCHAT_IRCTEST_LOGS``: where each test's server log goes, one file per
  test named after the test (default ``$TMPDIR/pychat-irctest-logs``).

Every process this controller starts runs in a process group of its own,
is stopped with that group by ``kill()``, receives SIGTERM from the kernel if the
process running irctest dies (``PR_SET_PDEATHSIG``), and is killed at
interpreter exit if still alive. irctest does not call ``tearDown`` when a
``setUp`` fails, so a server started by a failing ``run()`` is stopped by
``run()`` itself before the error propagates.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Callable, Optional, Set, Type

from irctest.basecontrollers import (
    BaseServerController,
    DirectoryBasedController,
    ProcessStopped,
)
from irctest.runner import NotImplementedByController
from irctest.specifications import Capabilities

from loopback import LoopbackPorts

SERVER_NAME = "My.Little.Server"  # irctest's tests expect exactly this name

# Flags on top of the address, ports, name, database and log level, chosen
# from what irctest's own controllers configure for other daemons (they turn
# off throttling: "flags = exceed_limit", "throttle_count = 100",
# "anti-flood" off, "localmax=1000"): every test client connects from
# 127.0.0.1, and tests send commands in bursts (several JOINs or MODEs and
# a PING without waiting; buffering.py sends long lines one byte at a time).
TEST_FLAGS: list[str] = [
    # Flood control off: irctest synchronizes with PING after almost every
    # command, and a paused reader only makes tests slower or time out.
    "--flood-rate", "0",
    # All clients share 127.0.0.1: turn off the per-address connection limit
    # and the per-address budgets (lines, room creation, key checks), as a
    # server behind a proxy would.
    "--max-per-ip", "0",
    # No room that exists before the test: LIST must be empty
    # (list.py testListEmpty) and LUSERS counts no channel.
    "--default-room", "",
    # A JOIN answers JOIN, topic and names only; a replay of earlier
    # messages would be extra lines that tests compare exactly.
    "--history-lines", "0",
]
# The description irctest's controllers give every daemon, which links.py
# testLinksSingleServer expects in RPL_LINKS (older checkouts lack the flag).
SERVER_INFO = ["--server-info", "test server"]

# ---------------------------------------------------------------------------
# OPERATORS (accounts and moderation: ``--oper ACCOUNT``).
#
# irctest's tests become an IRC operator with ``OPER operuser operpassword``
# and expect 381 RPL_YOUREOPER plus ``MODE <nick> +o``; a wrong password or
# an unknown oper name must give 491 ERR_NOOPERHOST or 464
# ERR_PASSWDMISMATCH, and no 381. Tests that need a working OPER: oper.py
# testOperSuccess, kill.py, wallops.py testWallops, info.py, who.py
# testWhoNickOper*/AwayAndOper*, whois.py testWhoisNumerics[oper].
#
# In pychat an operator is an account named with ``--oper``, and OPER
# checks the account's password. So when the checkout knows ``--oper``, a
# one-off server registers the account through the line protocol (name
# ``operuser``, then ``/register operpassword``, then ``/quit``) in a
# database file, once per run; every test's server starts from a fresh copy
# of that file (instead of ``--db :memory:``) with ``--oper operuser``.
# Registering in each test's server instead would spend that server's
# budget of password and key checks just before the test, which then finds
# its first ``MODE +k`` refused as "busy". A checkout without ``--oper``
# gets an empty in-memory database and no ``--oper``.
OPER_NAME = "operuser"
OPER_PASSWORD = "operpassword"


def oper_flags(supported: frozenset[str]) -> list[str]:
    """Flags that make OPER_NAME a server operator, if the server has them."""
    return ["--oper", OPER_NAME] if "--oper" in supported else []


def register_oper_account(port: int, alive: Callable[[], None], timeout: float = 15.0) -> None:
    """Register OPER_NAME/OPER_PASSWORD on the line protocol at PORT.

    ALIVE raises if the server has stopped. Raises RuntimeError with the
    server's answer if it refuses (its error lines start with "! ")."""
    deadline = time.monotonic() + timeout
    while True:
        alive()
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    with sock:
        # The server reads lines in order: the name prompt's answer, then
        # the commands; it closes the connection after /quit.
        sock.sendall(f"{OPER_NAME}\n/register {OPER_PASSWORD}\n/quit\n".encode())
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    answer = received.decode(errors="replace")
    if any(line.startswith("! ") for line in answer.splitlines()):
        raise RuntimeError(f"registering the oper account {OPER_NAME} failed:\n{answer}")


@functools.lru_cache(maxsize=None)
def oper_database(python: str, server: str) -> Path:
    """A database file holding only the oper account, made once per run by
    a one-off server (removed at exit)."""
    directory = Path(tempfile.mkdtemp(prefix="pychat-irctest-oper-"))
    atexit.register(shutil.rmtree, directory, True)
    db = directory / "oper.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [python, server, "127.0.0.1", "--port", str(port), "--irc-port", "off", "--web-port", "off",
         "--db", str(db), "--default-room", "", "--log-level", "warning"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, preexec_fn=_die_with_parent,
    )
    _LIVE.add(proc)

    def alive() -> None:
        if proc.poll() is not None:
            raise ProcessStopped(f"pychat exited with status {proc.returncode}")

    try:
        register_oper_account(port, alive)
    finally:
        _kill_group(proc, signal.SIGTERM)  # a graceful stop commits the database
        try:
            _, err = proc.communicate(timeout=10)
        finally:
            _kill_group(proc, signal.SIGKILL)
            _LIVE.discard(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"the server that registered {OPER_NAME} exited with "
                           f"status {proc.returncode}:\n{err.decode(errors='replace')}")
    return db


@functools.lru_cache(maxsize=None)
def supported_flags(python: str, server: str) -> frozenset[str]:
    """The flags ``server --help`` lists (asked once per checkout)."""
    out = subprocess.run([python, server, "--help"], capture_output=True, text=True, timeout=30)
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z-]+", out.stdout))


# ---------------------------------------------------------------------------
# SERVER PASSWORD -- irctest's PasswordedConnectionRegistrationTestCase
# starts the server with a connection password and sends ``PASS`` before
# NICK/USER. pychat has no server password; name the flag here if one is
# added (it is given the password as its value). Until then those tests are
# skipped as "not implemented by controller".
SERVER_PASSWORD_FLAG: Optional[str] = None


_LIVE: Set[subprocess.Popen] = set()  # every server still running, for atexit


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _kill_leftovers() -> None:
    """Kill whatever a crashed or interrupted run left behind."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
        _LIVE.discard(proc)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that runs irctest
    dies, however it dies (Linux only)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _log_name() -> str:
    """The current test's id as a file name (pytest sets PYTEST_CURRENT_TEST)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "unknown-test").rsplit(" (", 1)[0]
    test = test.replace("irctest/server_tests/", "")
    return re.sub(r"[^A-Za-z0-9_.\[\]-]+", "_", test)[:180] + ".log"


class PychatController(LoopbackPorts, BaseServerController, DirectoryBasedController):
    """Starts ``pychat_server.py`` on 127.0.0.1 with the IRC listener on the
    port irctest chose; one fresh server (empty in-memory history) per test."""

    software_name = "pychat"
    supported_sasl_mechanisms: Set[str] = set()  # SASL PLAIN comes with accounts
    supports_sts = False
    # The capabilities PROTOCOL.md section 9 promises (sasl aside). irctest
    # skips a test when the server refuses a capability the controller does
    # not list, and fails it when the controller lists it: these are
    # promises, so a refusal counts as a failure.
    capabilities = frozenset(
        {
            Capabilities.MESSAGE_TAGS,
            Capabilities.ECHO_MESSAGE,
            Capabilities.SERVER_TIME,
            Capabilities.MULTI_PREFIX,
            Capabilities.BATCH,
        }
    )
    # The mute extban's letter: pychat mutes with ``+b m:MASK`` once it has
    # moderation (ISUPPORT ``EXTBAN=,m``); mute_extban.py skips when the
    # server's EXTBAN does not list it.
    extban_mute_char = "m"
    # ISUPPORT tokens whose values isupport.py testValues checks: what
    # pychat's 005 promises (PROTOCOL.md section 9), so that a change shows.
    isupport: dict = {
        "CASEMAPPING": "ascii",
        "CHANMODES": "b,k,l,imnst",
        "CHANNELLEN": "33",
        "CHANTYPES": "#",
        "EXTBAN": ",m",
        "NETWORK": "pychat",
        "NICKLEN": "20",
        "PREFIX": "(ov)@+",
        "STATUSMSG": "@+",
    }
    # Optional behaviours (irctest.specifications.OptionalBehaviors) listed
    # here turn the matching skips into failures; none is promised yet.
    optional_behaviors = frozenset()

    log_file: Optional[Path] = None
    _log: Optional[IO[bytes]] = None
    supported: frozenset[str] = frozenset()

    def command(self, port: int, password: Optional[str]) -> list[str]:
        """The server's command line for one test."""
        root = Path(os.environ.get("PYCHAT_ROOT") or Path(__file__).resolve().parents[2])
        server = root / "pychat_server.py"
        if not server.is_file():
            raise FileNotFoundError(f"PYCHAT_ROOT has no pychat_server.py: {root}")
        python = os.environ.get("PYCHAT_PYTHON", "python3")
        self.supported = supported_flags(python, str(server))
        db = ":memory:"
        if oper_flags(self.supported):
            assert self.directory is not None
            db = str(self.directory / "pychat.db")
            shutil.copyfile(oper_database(python, str(server)), db)
        cmd = [
            python, str(server), "127.0.0.1",
            "--port", "0",  # the line protocol: any free port, unused here
            "--irc-port", str(port),
            "--web-port", "off",
            "--server-name", SERVER_NAME,
            "--db", db,
            "--log-level", "debug",
            *TEST_FLAGS,
            *(SERVER_INFO if SERVER_INFO[0] in self.supported else []),
            *oper_flags(self.supported),
        ]
        if password is not None:
            assert SERVER_PASSWORD_FLAG is not None
            cmd += [SERVER_PASSWORD_FLAG, password]
        return cmd

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: Optional[str],
        ssl: bool,
        run_services: bool,
        faketime: Optional[str],
        websocket_hostname: Optional[str],
        websocket_port: Optional[int],
    ) -> None:
        assert self.proc is None
        # Refusals come before anything starts; kill() gives back the port
        # irctest reserved, since no tearDown follows a failed setUp.
        missing = None
        if websocket_hostname is not None or websocket_port is not None:
            missing = "Websocket"
        elif ssl:
            missing = "TLS"  # PROTOCOL.md section 11, not built yet
        elif run_services:
            missing = "services"
        elif password is not None and SERVER_PASSWORD_FLAG is None:
            missing = "server password (PASS before registration)"
        if missing:
            self.kill()
            raise NotImplementedByController(missing)

        self.port = port
        self.hostname = hostname
        try:
            self.create_config()
            cmd = self.command(port, password)
            if faketime and shutil.which("faketime"):
                cmd = ["faketime", "-f", faketime, *cmd]
                self.faketime_enabled = True
            log_dir = Path(os.environ.get("PYCHAT_IRCTEST_LOGS")
                           or Path(tempfile.gettempdir()) / "pychat-irctest-logs")
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_file = log_dir / _log_name()
            self._log = self.log_file.open("wb")
            self._log.write(("$ " + " ".join(map(_quote, cmd)) + "\n").encode())
            self._log.flush()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent, close_fds=True,
            )
            _LIVE.add(self.proc)
        except BaseException:
            self.kill()
            raise

    def check_is_alive(self) -> None:
        """As irctest's, with the end of the server's log in the error, so a
        failing test says why the server stopped (a refused flag, a crash)."""
        assert self.proc
        if self.proc.poll() is not None:
            raise ProcessStopped(
                f"pychat exited with status {self.proc.returncode}; "
                f"log {self.log_file}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 15) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        text = self.log_file.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def kill_proc(self) -> None:
        """Stop the whole process group: SIGTERM (pychat shuts down
        gracefully), SIGKILL after 5 s."""
        proc = self.proc
        assert proc is not None
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(10)
        _kill_group(proc, signal.SIGKILL)  # anything the server left in its group
        _LIVE.discard(proc)
        self.proc = None

    def terminate(self) -> None:
        """Stop gracefully and keep the directory (irctest's restart tests)."""
        self.kill_proc()

    def kill(self) -> None:
        """Stop the server, give back the ports, remove the directory, close
        the log. Safe to call more than once."""
        try:
            super().kill()
        finally:
            self.directory = None  # removed by super().kill(); never twice
            if self._log is not None:
                self._log.close()
                self._log = None


def _quote(arg: str) -> str:
    return arg if arg and re.fullmatch(r"[A-Za-z0-9_./:=@+-]+", arg) else repr(arg)


def get_irctest_controller_class() -> Type[PychatController]:
    return PychatController
