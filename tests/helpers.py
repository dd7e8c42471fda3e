"""Real servers and raw socket clients for end-to-end tests.

Every wait here is a deadline on something observable (a log line, a line
from the server), never a fixed sleep.
"""

from __future__ import annotations

import base64
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT = 10.0


def wait_for(predicate, timeout: float = DEFAULT_TIMEOUT, interval: float = 0.01, what: str = "condition"):
    """Poll PREDICATE until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class ServerProcess:
    """`python3 pychat_server.py 127.0.0.1 --port 0 ...` in a subprocess."""

    def __init__(self, tmp_path: Path, *args: str, db: str = ":memory:", host: str = "127.0.0.1") -> None:
        self.log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
        self.args = [sys.executable, str(ROOT / "pychat_server.py"), host, "--port", "0", "--irc-port", "0",
                     "--web-port", "off",
                     "--db", db, "--log-level", "debug", *args]
        self.host = host
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._log,
                                     stdin=subprocess.DEVNULL, cwd=tmp_path)
        match = wait_for(self._port_lines, what=f"server to listen (log: {self.log_path})")
        self.port = int(match[0].group(1))
        self.irc_port = int(match[1].group(1)) if match[1] else None

    def _port_lines(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}: {self.log()}")
        log = self.log()
        line = re.search(r"listening on \S+ port (\d+) \(line protocol\)", log)
        irc = re.search(r"listening on \S+ port (\d+) \(IRC\)", log)
        irc_ports = [value for flag, value in zip(self.args, self.args[1:]) if flag == "--irc-port"]
        if line and (irc or irc_ports[-1] == "off"):  # the last --irc-port counts, as for argparse
            return line, irc
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, name: str | None = None, **kw) -> "LineClient":
        c = LineClient(self.port, host=self.host, **kw)
        if name is not None:
            c.register(name)
        return c

    def stop(self, sig: int = signal.SIGTERM, timeout: float = DEFAULT_TIMEOUT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class ReadsLines:
    """expect() and lines_until() for anything with a read_line(timeout)."""

    timeout: float

    def read_line(self, timeout: float | None = None) -> str:
        raise NotImplementedError

    def expect(self, pattern: str, timeout: float | None = None) -> str:
        """Read lines until one matches the regex PATTERN; return it."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            if re.search(pattern, line):
                return line

    def lines_until(self, pattern: str, timeout: float | None = None) -> list[str]:
        """All lines up to and including the first that matches PATTERN."""
        out = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            out.append(line)
            if re.search(pattern, line):
                return out


class SocketLines(ReadsLines):
    """A raw TCP client that reads CRLF-terminated lines against deadlines."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT,
                 rcvbuf: int | None = None, source: str | None = None) -> None:
        """RCVBUF sets a small receive window; SOURCE a local address to connect
        from (any of 127/8 works on Linux), to stand for another client host."""
        if rcvbuf is None and source is None:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        else:  # options set before connecting, so that the kernel honours them
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            if rcvbuf is not None:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source is not None:
                self.sock.bind((source, 0))
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        self.timeout = timeout
        self._buf = b""
        self.seen: list[str] = []
        self.name: str | None = None

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self, timeout: float | None = None) -> str:
        """The next line (without CRLF); raises AssertionError at the deadline or EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\r\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line within the deadline; seen so far: {self.seen[-20:]}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError(f"server closed the connection; seen: {self.seen[-20:]}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\r\n", 1)
        line = raw.decode("utf-8")
        self.seen.append(line)
        return line


    def wait_closed(self, timeout: float | None = None) -> list[str]:
        """Read until the server closes the connection; return the lines read."""
        out = []
        try:
            while True:
                out.append(self.read_line(timeout))
        except EOFError:
            return out
        except ConnectionResetError:
            return out

    def close(self) -> None:
        self.sock.close()


class LineClient(SocketLines):
    """A client of the line protocol (what `nc` users type and read)."""

    def sync(self) -> list[str]:
        """Everything the server sent before a marker reply: proves what did NOT arrive."""
        self.send("/help me")  # a one-line reply
        return self.lines_until(r"^\* /me TEXT: ")[:-1]

    def give_name(self, name: str) -> None:
        """Answer the name prompt (and read nothing after it)."""
        self.expect(r"^\* what is your name")
        self.send(name)

    def register(self, name: str) -> None:
        self.give_name(name)
        self.expect(r"^\* (you joined|hello)")
        self.name = name
        self.sync()

    def password_command(self, line: str, timeout: float | None = None) -> list[str]:
        """Send LINE, a command that checks or hashes a password, and read its answer (up to a sync).

        Password checks are budgeted per address and server-wide; while the
        answer is that the budget is spent ("try again in N s"), the command is
        sent again until the deadline (a refused check costs nothing). Returns
        every line read except those "try again" answers.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        kept: list[str] = []
        while True:
            self.send(line)
            answer = self.sync()
            later = [text for text in answer if TRY_LATER.search(text)]
            kept.extend(text for text in answer if not TRY_LATER.search(text))
            if not later:
                return kept
            if time.monotonic() > deadline:
                raise AssertionError(f"the password budget stayed spent for {line.split()[0]}: {later}")
            time.sleep(0.05)


def connects(server: ServerProcess, source: str) -> list[str]:
    """Connect from SOURCE: the lines of a refused connection, or [] if welcomed."""
    client = LineClient(server.port, source=source)
    first = client.read_line()
    if first.startswith("* welcome"):
        client.close()
        return []
    return [first, *client.wait_closed()]


# The answer to a spent budget (pychat.core.errors.TRY_LATER): "! ...; try again in 3 s".
TRY_LATER = re.compile(r"^! .*try again in \d+ (s|min)$")


class IrcLine(NamedTuple):
    """One IRC message as received: its source (nick!user@host or the server), command and parameters."""

    source: str
    command: str
    params: list[str]


def parse_irc(line: str) -> IrcLine:
    """A received line split the way RFC 1459 does (tags are dropped)."""
    if line.startswith("@"):
        line = line.split(" ", 1)[1]
    source = ""
    if line.startswith(":"):
        source, line = line[1:].split(" ", 1)
    head, sep, trailing = line.partition(" :")
    words = head.split()
    return IrcLine(source, words[0].upper(), words[1:] + ([trailing] if sep else []))


class IrcClient(SocketLines):
    """A raw IRC client: registration (plain, PASS or SASL PLAIN), commands out,
    parsed messages in. It answers the server's PINGs itself."""

    def __init__(self, port: int, **kw) -> None:
        super().__init__(port, **kw)
        self._syncs = 0

    def read_line(self, timeout: float | None = None) -> str:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = super().read_line(max(0.0, deadline - time.monotonic()))
            if line.startswith("PING "):  # the server checks the client is alive
                self.send("PONG " + line[5:])
                continue
            return line

    def expect_msg(self, command: str, timeout: float | None = None) -> IrcLine:
        """Read until a message with COMMAND (a word or a numeric) arrives; return it parsed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = parse_irc(self.read_line(max(0.0, deadline - time.monotonic())))
            if msg.command == command.upper():
                return msg

    def sync(self) -> list[str]:
        """Everything the server sent before the answer to our PING: proves what did NOT arrive."""
        self._syncs += 1
        token = f"sync{self._syncs}"
        self.send(f"PING {token}")
        return self.lines_until(rf"^:\S+ PONG \S+ :?{token}$")[:-1]

    def welcome(self) -> IrcLine:
        """Read the welcome through the end of the MOTD; the 001, whose first parameter is our nick."""
        first = self.expect_msg("001")
        self.name = first.params[0]
        self.expect(r"^:\S+ (376|422) ")
        return first

    def register(self, nick: str, user: str = "u") -> IrcLine:
        """NICK and USER, without capabilities or an account; the 001."""
        self.send(f"NICK {nick}")
        self.send(f"USER {user} 0 * :{nick}")
        return self.welcome()

    def sasl_plain(self, account: str, password: str, timeout: float | None = None) -> list[IrcLine]:
        """AUTHENTICATE PLAIN with ACCOUNT's credentials (the sasl capability
        acknowledged, registration not ended): the numerics up to 903 or 904.

        A 904 that says the password budget is spent ("try again in N s") is
        retried until the deadline; a refused check costs nothing.
        """
        creds = base64.b64encode(f"\0{account}\0{password}".encode()).decode()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self.send("AUTHENTICATE PLAIN")
            self.expect(r"^AUTHENTICATE \+$")
            self.send(f"AUTHENTICATE {creds}")
            answer = [parse_irc(line) for line in self.lines_until(r"^:\S+ (903|904) ")]
            last = answer[-1]
            if last.command == "903" or not re.search(r"try again in \d+", last.params[-1]):
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"the password budget stayed spent: {last}")
            time.sleep(0.05)


EVENT = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "


class PlainClient(ReadsLines):
    """`pychat_client.py HOST --port P --plain --name NAME` in a subprocess that stays connected.

    Lines written to its stdin go to the server; its stdout (the server's lines,
    verbatim in plain mode) is read against deadlines, as LineClient reads a socket.
    """

    def __init__(self, port: int, name: str, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT) -> None:
        self.name = name
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "pychat_client.py"), host, "--port", str(port), "--plain", "--name", name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)  # read what select says is there, never block past a deadline
        self._buf = b""
        self.seen: list[str] = []
        self.expect(r"^\* you joined #")  # the name was accepted: stdin lines are sent from now on

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, timeout: float | None = None) -> str:
        """The next stdout line; raises AssertionError at the deadline, EOFError when the client ended."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line from the client within the deadline; seen: {self.seen[-20:]}")
            if not select.select([self._fd], [], [], left)[0]:
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                raise EOFError(f"the client ended (status {self.proc.poll()}); seen: {self.seen[-20:]}")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\n", 1)
        line = raw.decode("utf-8")
        self.seen.append(line)
        return line

    def close(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """End stdin (the client then quits by itself); kill it only if it does not."""
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


class Tmux:
    """A program in a detached tmux session of its own (its own server socket): keys in, screen out.

    The session's programs inherit this process's environment (TZ, say), with a
    UTF-8 locale and an xterm terminal type.
    """

    def __init__(self, width: int, height: int, command: str) -> None:
        if shutil.which("tmux") is None:
            raise AssertionError("tmux is not installed (apt-get install tmux); tests/run installs it")
        self.sock = f"pychat-test-{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color")
        self._run("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height), command)

    def _run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-u", "-L", self.sock, *args], check=True, capture_output=True,
                              text=True, env=self.env).stdout

    def keys(self, *keys: str) -> None:
        """Named keys (Enter, C-u, M-2 ...)."""
        self._run("send-keys", "-t", "main", *keys)

    def type(self, text: str) -> None:
        """TEXT as typed, key by key (no key names)."""
        self._run("send-keys", "-t", "main", "-l", text)

    def line(self, text: str) -> None:
        """TEXT typed, then Enter."""
        self.type(text)
        self.keys("Enter")

    def screen(self) -> list[str]:
        return self._run("capture-pane", "-t", "main", "-p").rstrip("\n").split("\n")

    def wait(self, predicate, what: str, timeout: float = 15.0) -> list[str]:
        """Capture the screen until PREDICATE(lines) is true; the screen then, or the last one in the error."""
        result = {}

        def check():
            lines = self.screen()
            result["lines"] = lines
            return predicate(lines)

        try:
            wait_for(check, timeout=timeout, what=what)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; screen:\n" + "\n".join(result.get("lines", [])))
        return result["lines"]

    def wait_match(self, pattern: str, what: str, timeout: float = 15.0) -> re.Match:
        """Wait for a screen line (trailing blanks stripped) matching the regex PATTERN; its match."""
        found = {}

        def check(lines: list[str]) -> bool:
            for line in lines:
                match = re.search(pattern, line.rstrip())
                if match:
                    found["match"] = match
                    return True
            return False

        self.wait(check, what, timeout)
        return found["match"]

    def resize(self, width: int, height: int) -> None:
        self._run("resize-window", "-t", "main", "-x", str(width), "-y", str(height))

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True)
