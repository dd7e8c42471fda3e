"""pychat's terminal client: one selectors loop over stdin and the socket.

Two front ends share the loop:

* plain mode (``--plain``, or stdin not a terminal): stdin lines go to the
  server and server lines to stdout; at the end of stdin the client
  half-closes and prints what the server still sends, then exits 0. With
  ``--name`` stdin waits until the server has accepted the name; a refused
  name is status 1;
* full-screen mode (a terminal): :class:`FullScreen` keeps the chat state
  (scrollback, name, room, members, the input line) and hands a plain
  description of the screen to :mod:`pychat.client.curses_ui`, the only module
  that touches curses.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import ssl
import sys
import time
import zlib
from collections import deque
from typing import Callable

from pychat.protocols.line.commands import COMMANDS, lookup, split_command
from pychat.client.config import PASSWORD_VARIABLE, ClientSettings, parse_client_args
from pychat.client.editor import LineEditor
from pychat.protocols.framing import Frame, LineBuffer
from pychat.client.keys import KeyParser
from pychat.client.screen import NICK_STYLES, ScreenError, ScreenLike, Segment, View
from pychat.client.textwidth import fit_input, wrap
from pychat.core.timers import Timers

READ_SIZE = 65536
MAX_LINE = 1 << 16
PASTE_INTERVAL = 0.15   # seconds between pasted lines: within the default flood budget
SCROLLBACK = 5000
LAST_WORDS_AGE = 2.0    # seconds: an older `* `/`! ` line is a reply, not the server's goodbye


class ClientError(Exception):
    """A problem to report in one line before exiting with status 1."""


def tls_context(cafile: str | None, insecure: bool) -> ssl.SSLContext:
    """The client's TLS settings: the system's authorities, or CAFILE's; INSECURE checks nothing."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except FileNotFoundError:
        raise ClientError(f"cannot read {cafile}: no such file") from None
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot use {cafile} as certificates to trust: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def connect(host: str, port: int, timeout: float = 10.0, tls: ssl.SSLContext | None = None) -> socket.socket:
    """Connect to HOST:PORT (over TLS with context TLS), or raise ClientError with a clear reason."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise ClientError(f"unknown host {host!r}: {exc.strerror}") from None
    except (TimeoutError, socket.timeout):
        raise ClientError(f"cannot reach {host} port {port}: timed out") from None
    except OSError as exc:
        raise ClientError(f"cannot connect to {host} port {port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        try:
            sock = tls.wrap_socket(sock, server_hostname=host)  # the handshake, within TIMEOUT
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise ClientError(f"{host} port {port}: the server's certificate cannot be trusted "
                              f"({exc.verify_message}); --cafile FILE names the certificates to trust") from None
        except (TimeoutError, socket.timeout):
            sock.close()
            raise ClientError(f"{host} port {port}: no TLS handshake within {timeout:g} s") from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else (exc.strerror or str(exc))
            raise ClientError(f"{host} port {port}: TLS failed ({reason}); is it a TLS port?") from None
    sock.setblocking(False)
    return sock


class ClientLoop:
    """The socket side of the client, and the loop that runs both modes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sel = selectors.DefaultSelector()
        self.framer = LineBuffer(MAX_LINE)
        self.wbuf = bytearray()
        self.timers = Timers()
        self.done = False
        self.exit_status = 0
        self.server_closed = False
        self.half_close_pending = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._signals: list[int] = []
        self._signals_installed = False
        self.sel.register(sock, selectors.EVENT_READ, self._on_socket)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)

    def install_signals(self, signums: tuple[int, ...]) -> None:
        if not signums:
            return
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        self._signals_installed = True
        for signum in signums:
            signal.signal(signum, lambda n, f: self._signals.append(n))

    # -- the loop ---------------------------------------------------------------

    def run(self) -> int:
        while not self.done:
            events = self.sel.select(self.timers.timeout(time.monotonic()))
            for key, mask in events:
                key.data(mask)
                if self.done:
                    break
            for callback in self.timers.pop_due(time.monotonic()):
                callback()
            self.after_events()
            self._flush()
        return self.exit_status

    def after_events(self) -> None:
        """Hook: called once per iteration, before output is written."""

    # -- socket ---------------------------------------------------------------------

    def send_line(self, text: str) -> None:
        self.wbuf += text.encode() + b"\n"

    def half_close(self) -> None:
        """Shut the write side once everything queued has been sent (over TLS,
        see end_over_tls)."""
        if isinstance(self.sock, ssl.SSLSocket):
            self.end_over_tls()
        else:
            self.half_close_pending = True

    def end_over_tls(self) -> None:
        """TLS cannot shut one side and go on reading (Python drops the TLS
        layer with it): the client says /quit instead, which the server also
        answers only after every line before it."""
        self.send_line("/quit")

    def _flush(self) -> None:
        if self.wbuf and not self.server_closed:
            try:
                sent = self.sock.send(self.wbuf)
                del self.wbuf[:sent]
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            except OSError:
                self.wbuf.clear()
        if self.half_close_pending and not self.wbuf:
            self.half_close_pending = False
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.wbuf else 0)
        if not self.server_closed and self.sel.get_key(self.sock).events != want:
            self.sel.modify(self.sock, want, self._on_socket)

    def _on_socket(self, mask: int) -> None:
        if not mask & selectors.EVENT_READ:
            return  # writable: _flush runs after the events
        try:
            data = self.sock.recv(READ_SIZE)
            if isinstance(self.sock, ssl.SSLSocket):
                # Decrypted bytes left in OpenSSL would wake no select().
                while data and self.sock.pending():
                    data += self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            data = b""
        frames = self.framer.feed(data) if data else self.framer.finish()
        lines = [f.decode("utf-8", "replace") for f in frames if isinstance(f, bytes)]
        if lines:
            self.on_server_lines(lines)
        if not data:
            self.server_closed = True
            self.sel.unregister(self.sock)
            self.sock.close()
            self.on_server_closed()

    def on_server_lines(self, lines: list[str]) -> None:
        raise NotImplementedError

    def on_server_closed(self) -> None:
        self.done = True

    def _on_wakeup(self, mask: int) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        signals, self._signals = self._signals, []
        for signum in signals:
            self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        self.done = True
        self.exit_status = 128 + signum

    def close(self) -> None:
        if self._signals_installed:
            signal.set_wakeup_fd(-1)  # the socket pair it writes to is closed below
        if not self.server_closed:
            self.sock.close()
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()


class PlainClient(ClientLoop):
    """Lines in, lines out: for scripts, bots and pipes.

    With ``--name`` no stdin line is read or sent until the server has
    accepted the name: were the name refused, the server would take the
    next line as the next try at a name, and a bot's first message would be
    lost (or become someone's name). A refused name ends the client with
    status 1 instead.
    """

    def __init__(self, sock: socket.socket, settings: ClientSettings) -> None:
        super().__init__(sock)
        self.stdin_framer = LineBuffer(MAX_LINE)
        self.out = sys.stdout
        self.name_pending = settings.name   # sent, not yet accepted by the server
        self.name_error: str | None = None  # the server's `! ` answer to it, if any
        self.password = settings.password
        self.greeted = False                # the server said hello: a name is taken
        self.quit_when_greeted = False      # stdin ended over TLS before that
        # Before the hello: the server's questions (the name prompt, a password
        # prompt) and the stdin lines sent, each of which answers one of them.
        self.questions = 0
        self.answers = 0
        if settings.name is not None:
            self.send_line(settings.name)
        else:
            self._start_stdin()  # the first stdin line is the name

    def _start_stdin(self) -> None:
        fd = sys.stdin.fileno()
        try:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, self._on_stdin)
        except PermissionError:
            # A regular file cannot be watched by epoll: it is always ready.
            os.set_blocking(fd, True)
            self._take_stdin(sys.stdin.buffer.read())
            self._stdin_ended()

    def _on_stdin(self, mask: int) -> None:
        try:
            data = os.read(sys.stdin.fileno(), READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if data:
            self._take_stdin(data)
        else:
            self.sel.unregister(sys.stdin.fileno())
            self._stdin_ended()

    def _take_stdin(self, data: bytes) -> None:
        self._queue_frames(self.stdin_framer.feed(data))

    def _stdin_ended(self) -> None:
        self._queue_frames(self.stdin_framer.finish())
        self.half_close()

    def _queue_frames(self, frames: list[Frame]) -> None:
        for frame in frames:
            if isinstance(frame, bytes):  # an overlong stdin line is not sent
                self.wbuf += frame + b"\n"
                if not self.greeted:
                    self.answers += 1

    def end_over_tls(self) -> None:
        # "/quit" typed at a password prompt would be taken as the password:
        # before the hello, the client waits for it, or for a question it has
        # no answer to (then it ends, as the server would at the end of a TCP stream).
        if self.greeted:
            self.send_line("/quit")
        else:
            self.quit_when_greeted = True
            self._end_if_unanswered()

    def _end_if_unanswered(self) -> None:
        """Stdin ended before the hello and the server asked more than it answered: end."""
        if self.quit_when_greeted and self.questions > self.answers:
            self.done = True

    def on_server_lines(self, lines: list[str]) -> None:
        try:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.done = True
        for line in lines:
            if self.name_pending is not None and not self.done:
                self._await_name(line)
            if line.startswith("* hello "):
                self.greeted = True
                if self.quit_when_greeted:
                    self.quit_when_greeted = False
                    self.send_line("/quit")
            elif not self.greeted and (PASSWORD_PROMPT.match(line) or line.startswith("* what is your name")):
                self.questions += 1
                self._end_if_unanswered()  # asked again, or for a password: more than stdin gave

    def _await_name(self, line: str) -> None:
        """Follow the server's answer to ``--name``: a hello, or an error and the prompt again."""
        name = self.name_pending
        if line.startswith("* hello "):
            self.name_pending = None
            self._start_stdin()
        elif PASSWORD_PROMPT.match(line):
            if self.password is None:
                self.name_pending = None
                self.fail(f"{name} is a registered name: set {PASSWORD_VARIABLE} to its password")
            else:
                self.send_line(self.password)
                self.password = None  # a wrong one is not sent again: the prompt then refuses the name
        elif line.startswith("! "):
            self.name_error = line[2:]
        elif line.startswith("* ") and self.name_error is not None:
            # An error, then a question again (the name prompt): the name was refused.
            self.name_pending = None
            self.fail(f"the server refused the name {name}: {self.name_error}")

    def fail(self, message: str) -> None:
        """End the client with status 1 after one line on stderr."""
        print(f"pychat-client: {message}", file=sys.stderr)
        self.exit_status = 1
        self.done = True

    def on_server_closed(self) -> None:
        self.done = True
        if self.name_pending is not None:
            reason = f": {self.name_error}" if self.name_error else ""
            self.fail(f"the server closed the connection before accepting the name {self.name_pending}{reason}")

    def close(self) -> None:
        try:
            os.set_blocking(sys.stdin.fileno(), True)
        except OSError:
            pass
        super().close()


# -- full-screen mode ---------------------------------------------------------------

_EVENT = re.compile(r"^(\[[^\]]*\] )(#\S+|\(dm\)|\(dm to \S+\)|\(all\)) (.*)$")
_JOINED = re.compile(r"^\* you joined #(\S+?)(?: \(locked\))?: (\d+) users? here")
_ROOMINFO = re.compile(r"^\* #(\S+?)(?: \(locked\))?: \d+ users?: (.*)$")
# A room notice (PROTOCOL.md section 3): an arrow or a double dash, then a name.
# User text always follows "NAME: " or "* NAME ", so no user can write one.
_NOTICE = re.compile(r"^(-->|<--|--) (\S+) (.*)$")
_RENAMED = re.compile(r"^is now known as (\S+)$")
# The name prompt's question for a registered name (the line protocol's session).
PASSWORD_PROMPT = re.compile(r"^\* (\S+) is a registered name: type its password")
# Commands whose line holds a password: kept out of the input history.
_WITH_PASSWORD = frozenset(cmd for cmd in COMMANDS if cmd.name in ("register", "login", "password", "unregister"))
_REPLAY = re.compile(r"^\* last (?:\d+ messages|message) of #")


def nick_style(name: str) -> str:
    """A stable colour for a nickname (the same in every session)."""
    return f"nick{zlib.crc32(name.casefold().encode()) % NICK_STYLES}"


class ChatState:
    """What the client knows about the chat, read from the server's lines.

    Room members are learnt from the answer to ``/roominfo`` and then
    followed through the room's notices: ``-->`` someone came, ``<--``
    someone went (left, quit or was kicked), ``-- NAME is now known as``.
    Replayed history is the past: it changes nothing.
    """

    def __init__(self) -> None:
        self.name: str | None = None
        self.room: str | None = None
        self.members: set[str] = set()
        self.count = 0
        self.replaying = False  # inside a history replay (between its two `* ` lines)

    def observe(self, line: str) -> bool:
        """Update from one server line; True if the member list should be asked for."""
        event = _EVENT.match(line)
        if event is None:
            # A replay is one run of event lines: any other line ends it.
            self.replaying = bool(_REPLAY.match(line))
        if line.startswith("* hello ") and self.name is None:
            self.name = line[8:].split("!", 1)[0]
        elif line.startswith("* you are now known as "):
            self.name = line[len("* you are now known as "):]
        elif m := _JOINED.match(line):
            self.room, self.count = m.group(1), int(m.group(2))
            self.members = {self.name} if self.name else set()
            return True
        elif line.startswith("* you left #"):
            self.room, self.members, self.count = None, set(), 0
        elif (m := _ROOMINFO.match(line)) and m.group(1) == self.room:
            self.members = {name.lstrip("@+") for name in m.group(2).split(", ")}  # @ operator, + voiced
            self.count = len(self.members)
        elif event is not None and event.group(2) == f"#{self.room}" and not self.replaying:
            self._room_event(event.group(3))
        return False

    def _room_event(self, what: str) -> None:
        notice = _NOTICE.match(what)
        if notice is None:
            if not what.startswith("* ") and ": " in what:  # a message: its sender is here
                self.members.add(what.split(": ", 1)[0])
            return  # an action changes nothing, even one that reads "* bob has joined"
        kind, who, rest = notice.groups()
        if kind == "-->":
            self.members.add(who)
            self.count += 1
        elif kind == "<--":
            self.members.discard(who)
            self.count = max(0, self.count - 1)
            if who == self.name and rest.startswith("was kicked by "):
                self.room, self.members, self.count = None, set(), 0
        elif renamed := _RENAMED.match(rest):
            self.members.discard(who)
            self.members.add(renamed.group(1))


def style_line(line: str, me: str | None) -> list[Segment]:
    """Split a server line into styled segments for the screen.

    Room notices are drawn like the server's information; an action is the
    sender's, like a message, however much it reads like a notice."""
    if line.startswith("! "):
        return [(line, "error")]
    if line.startswith("* "):
        return [(line, "info")]
    m = _EVENT.match(line)
    if m is None:
        return [(line, "normal")]
    stamp, where, what = m.groups()
    segments: list[Segment] = [(stamp, "time"), (where + " ", "where")]
    if _NOTICE.match(what):
        return segments + [(what, "info")]
    if what.startswith("* "):
        prefix, (sender, sep, text) = "* ", what[2:].partition(" ")
    else:
        prefix, (sender, sep, text) = "", what.partition(": ")
    mention = bool(me and sender != me and me.casefold() in text.casefold())
    if prefix:
        segments.append((prefix, "normal"))
    segments.append((sender, "self" if sender == me else nick_style(sender)))
    segments.append((sep + text, "mention" if mention else "normal"))
    return segments


def wrap_segments(segments: list[Segment], width: int) -> list[list[Segment]]:
    """Wrap a styled line into rows of at most WIDTH columns."""
    text = "".join(t for t, _ in segments)
    rows: list[list[Segment]] = []
    offset = 0
    for row_text in wrap(text, width):
        row: list[Segment] = []
        end = offset + len(row_text)
        pos = 0
        for seg_text, style in segments:
            seg_start, seg_end = pos, pos + len(seg_text)
            pos = seg_end
            lo, hi = max(seg_start, offset), min(seg_end, end)
            if lo < hi:
                row.append((text[lo:hi], style))
        rows.append(row)
        offset = end
    return rows


class FullScreen(ClientLoop):
    """The chat UI: scrollback, status line and input line."""

    def __init__(self, sock: socket.socket, settings: ClientSettings, make_screen: Callable[[], ScreenLike],
                 signals: tuple[int, ...] = ()) -> None:
        super().__init__(sock)
        self.settings = settings
        # Signals are caught before the screen starts: a SIGWINCH while curses
        # initialises is then queued for the loop, not lost (and ncurses, which
        # installs its own handler only where none is set, leaves it to us).
        self.install_signals(signals)
        try:
            self.screen = make_screen()
        except BaseException:
            self.close()
            raise
        self.state = ChatState()
        self.keys = KeyParser()
        self.editor = LineEditor(self._complete)
        self.lines: deque[list[Segment]] = deque(maxlen=SCROLLBACK)
        self.scroll = 0          # rows scrolled up from the bottom
        self.more = False        # new lines arrived while scrolled up
        self.paste_offer: list[str] | None = None
        self.paste_queue: deque[str] = deque()
        self.dirty = True
        self.quitting = False    # the user asked to leave
        # The last line from the server if it was a `* `/`! ` line, and when it
        # came: shown after the terminal is restored if the server hangs up.
        self.last_info: tuple[float, str] | None = None
        self.goodbye: str | None = None   # the server's last words, once it has hung up
        self.password_sent = False        # $PYCHAT_PASSWORD is sent once, not again after a refusal
        try:
            # The size curses started with may already be stale: a resize before
            # our handler was in place, or LINES/COLUMNS in the environment.
            self.screen.resize()
            if settings.name is not None:
                self.send_line(settings.name)
            self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, self._on_stdin)
        except BaseException:
            self.screen.close()
            self.close()
            raise

    # -- input --------------------------------------------------------------------------

    def _on_stdin(self, mask: int) -> None:
        try:
            data = os.read(sys.stdin.fileno(), READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self.quit()
            return
        for key in self.keys.feed(data):
            self.on_key(key.name, key.text)
        self.dirty = True

    def on_key(self, name: str, text: str) -> None:
        if self.paste_offer is not None:
            lines, self.paste_offer = self.paste_offer, None
            if name == "char" and text.lower() == "y":
                self.paste_queue.extend(lines)
                self._send_pasted()
            else:
                self.add_line([("* paste not sent", "info")])
            return
        if name == "ctrl-c" or (name == "ctrl-d" and not self.editor.text):
            self.quit()
        elif name == "ctrl-d":
            self.editor.delete()
        elif name == "pgup":
            self.scroll += self._page()
        elif name == "pgdn":
            self.scroll = max(0, self.scroll - self._page())
            if self.scroll == 0:
                self.more = False
        elif name == "ctrl-l":
            self.screen.clear()
        elif name == "paste":
            self._paste(text)
        else:
            secret = self.editor.secret
            submitted = self.editor.handle(name, text)
            if submitted is not None:
                history = self.editor.history
                if (not secret and history and history[-1] == submitted
                        and lookup(split_command(submitted.removeprefix("/"))[0]) in _WITH_PASSWORD):
                    history.pop()  # recalled with Up, a password would show
                self.submit(submitted)

    def _page(self) -> int:
        return max(1, self.screen.size()[0] - 3)

    def _paste(self, text: str) -> None:
        lines = text.split("\n")
        while lines and not lines[-1]:
            lines.pop()
        if len(lines) <= 1:
            self.editor.insert(lines[0] if lines else "")
            return
        self.paste_offer = lines
        self.add_line([(f"* send {len(lines)} pasted lines? (y/n)", "info")])

    def _send_pasted(self) -> None:
        if self.paste_queue and not self.server_closed:
            self.submit(self.paste_queue.popleft())
            self.dirty = True
            if self.paste_queue:
                self.timers.call_at(time.monotonic() + PASTE_INTERVAL, self._send_pasted)

    def submit(self, line: str) -> None:
        """Send a line, and show our own room messages the way others see them."""
        if not line.strip():
            return
        if line.startswith("/") and (cmd := lookup(split_command(line[1:])[0])) and cmd.name == "quit":
            self.quitting = True
        self.send_line(line)
        self.scroll, self.more = 0, False
        shown = self._own_echo(line)
        if shown is not None:
            self.add_line(style_line(shown, self.state.name))

    def _own_echo(self, line: str) -> str | None:
        """The event line others will see for LINE, if it is a room message or action."""
        room, me = self.state.room, self.state.name
        if room is None or me is None:
            return None
        stamp = time.strftime("[%Y-%m-%d %H:%M:%S]")
        if line.startswith("//"):
            return f"{stamp} #{room} {me}: {line[1:]}"
        if not line.startswith("/"):
            return f"{stamp} #{room} {me}: {line}"
        word, rest = split_command(line[1:])
        cmd = lookup(word)
        if cmd is None or not rest:
            return None
        text = rest[1:-1] if len(rest) >= 2 and rest[0] == rest[-1] == '"' else rest
        if cmd.name == "message":
            return f"{stamp} #{room} {me}: {text}"
        if cmd.name == "me":
            return f"{stamp} #{room} * {me} {text}"
        return None

    def _complete(self, word: str, at_start: bool) -> list[str]:
        if word.startswith("/") and at_start:
            words = sorted({w for c in COMMANDS for w in (c.name, *c.aliases)})
            return [f"/{w} " for w in words if w.startswith(word[1:].lower())]
        folded = word.casefold()
        names = sorted(n for n in self.state.members if n.casefold().startswith(folded) and n != self.state.name)
        return [n + (": " if at_start else " ") for n in names]

    def quit(self) -> None:
        self.quitting = True
        if not self.server_closed:
            self.send_line("/quit")
        self.done = True

    # -- output ---------------------------------------------------------------------------

    def on_server_lines(self, lines: list[str]) -> None:
        for line in lines:
            if PASSWORD_PROMPT.match(line):
                if self.settings.password and not self.password_sent:
                    self.password_sent = True
                    self.send_line(self.settings.password)
                else:
                    self.editor.secret = True  # the next line typed is the password
            if self.state.observe(line):
                self.send_line("/roominfo")  # learn the members, for Tab completion
            self.add_line(style_line(line, self.state.name))
        last = lines[-1]
        self.last_info = (time.monotonic(), last[2:]) if last.startswith(("* ", "! ")) else None

    def last_words(self) -> str | None:
        """What the server said just before it hung up (``server shutting down``), if anything.

        Only a `* ` or `! ` line that was the very last line, and a recent one:
        an answer to a command long ago would only mislead."""
        if self.last_info is None:
            return None
        when, text = self.last_info
        return text if time.monotonic() - when <= LAST_WORDS_AGE else None

    def on_server_closed(self) -> None:
        self.done = True
        self.exit_status = 0
        self.goodbye = self.last_words()

    def add_line(self, segments: list[Segment]) -> None:
        self.lines.append(segments)
        if self.scroll:
            self.scroll += len(wrap_segments(segments, self.screen.size()[1]))
            self.more = True
        self.dirty = True

    def on_signal(self, signum: int) -> None:
        if signum == signal.SIGWINCH:
            self.screen.resize()
            self.dirty = True
        else:
            self.quit()
            self.exit_status = 0

    def after_events(self) -> None:
        if self.dirty and not self.done:
            self.screen.render(self.view())
            self.dirty = False

    def view(self) -> View:
        rows_total, cols = self.screen.size()
        pane = max(1, rows_total - 2)
        needed = pane + self.scroll
        rows: list[list[Segment]] = []
        for segments in reversed(self.lines):
            rows[:0] = wrap_segments(segments, cols)
            if len(rows) >= needed:
                break
        self.scroll = min(self.scroll, max(0, len(rows) - pane))
        end = len(rows) - self.scroll
        visible = rows[max(0, end - pane):end]
        st = self.state
        where = f"#{st.room} ({st.count})" if st.room else "the hall"
        status = f" {self.settings.host}:{self.settings.port} | {st.name or '(no name yet)'} | {where} "
        if self.more:
            status += "| -- more -- "
        prompt = "> "
        shown = "*" * len(self.editor.text) if self.editor.secret else self.editor.text
        text, col = fit_input(shown, self.editor.cursor, max(2, cols - len(prompt) - 1))
        return View(visible, status, prompt, text, len(prompt) + col, self.more)


def run_plain(sock: socket.socket, settings: ClientSettings) -> int:
    client = PlainClient(sock, settings)
    client.install_signals((signal.SIGINT, signal.SIGTERM))
    try:
        return client.run()
    finally:
        client.close()


def run_fullscreen(sock: socket.socket, settings: ClientSettings) -> int:
    from pychat.client.curses_ui import CursesScreen

    client: FullScreen | None = None
    try:
        client = FullScreen(sock, settings, CursesScreen, (signal.SIGINT, signal.SIGTERM, signal.SIGWINCH))
        status = client.run()
        client._flush()  # a last /quit
        return status
    except ScreenError as exc:
        print(f"pychat-client: cannot use this terminal ({exc}); --plain works without one", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.screen.close()  # the terminal is restored on every way out
            if client.server_closed and not client.quitting:
                # The screen and what it showed are gone: repeat the server's goodbye.
                words = f": {client.goodbye}" if client.goodbye else ""
                print(f"pychat-client: the server closed the connection{words}", file=sys.stderr)
            client.close()


def main(argv: list[str] | None = None) -> None:
    settings = parse_client_args(argv)
    try:
        tls = tls_context(settings.cafile, settings.insecure) if settings.tls else None
        sock = connect(settings.host, settings.port, tls=tls)
    except ClientError as exc:
        print(f"pychat-client: {exc}", file=sys.stderr)
        sys.exit(1)
    if settings.plain or not sys.stdin.isatty() or not sys.stdout.isatty():
        sys.exit(run_plain(sock, settings))
    sys.exit(run_fullscreen(sock, settings))
