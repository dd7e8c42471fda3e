"""Real IRC clients against pychat's IRC port: irssi in tmux, WeeChat headless.

Each test has three users in one room: `lena` on a raw socket (what `nc`
shows), `pia` in the bundled client's plain mode, and one real IRC client.
The IRC client joins `#general` after lena and pia have talked there, sees
that history with its original times, then exchanges room messages, `/me`
actions and direct messages both ways with both of them.

Everything runs in a time zone that is not UTC (UTC+5:30, half an hour off
any whole-hour mistake): the line protocol shows local times and IRC
carries UTC in `@time=`, so a client that shows the line protocol's time
proves both conversions right.

irssi is driven as a person would: keys into tmux, the screen read back.
weechat-headless has no screen: it is driven through its FIFO pipe and read
through its logger's files (one per buffer, one line per message, with the
message's time), which are written as each line is shown.
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from helpers import DEFAULT_TIMEOUT, EVENT, LineClient, PlainClient, ServerProcess, Tmux, wait_for

TZ = "PCT-5:30"  # POSIX form, no tz database needed: "PCT", 5h30 east of UTC
TZ_EAST_SECONDS = 5 * 3600 + 30 * 60
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def needs(program: str) -> None:
    if shutil.which(program) is None:
        pytest.fail(f"{program} is not installed (apt-get install {program}); tests/run installs it")


def stamp_of(event_line: str) -> str:
    """`2026-11-21 15:00:05` from `[2026-11-21 15:00:05] #general ...`."""
    match = re.match(r"^\[(" + STAMP + r")\] ", event_line)
    assert match, event_line
    return match.group(1)


def epoch_of(stamp: str) -> float:
    """The instant of a local stamp in TZ."""
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) - TZ_EAST_SECONDS


class Room:
    """The server and the two users who are not on IRC."""

    def __init__(self, server: ServerProcess, lena: LineClient, pia: PlainClient) -> None:
        self.server = server
        self.lena = lena
        self.pia = pia

    def expect_both(self, pattern: str) -> None:
        """Both lena and pia get a line matching PATTERN."""
        self.lena.expect(pattern)
        self.pia.expect(pattern)

    def assert_dms_private(self, nick: str) -> None:
        """What NICK said to lena alone never reached pia, and the other way round."""
        self.lena.sync()  # read everything lena was sent so far
        lena_seen = self.lena.seen
        # pia has read up to NICK's last DM to her, which NICK sent after its DMs to lena:
        # had one of those leaked to pia, it would be among the lines she has read.
        assert not [line for line in self.pia.seen if "for lena" in line or "at lena" in line], self.pia.seen
        assert not [line for line in lena_seen if "for pia" in line], lena_seen
        assert any(f"{nick}: a secret for lena" in line for line in lena_seen)

    def make_history(self) -> dict[str, str]:
        """Three lines said before the IRC client comes; each one's time, as the other user saw it.

        Returns when the clock has moved past the last of them, so that a
        client joining now cannot show its join time and pass for the original."""
        self.pia.send("history from pia")
        stamps = {"pia": stamp_of(self.lena.expect(EVENT + r"#general pia: history from pia$"))}
        self.lena.send("history from lena")
        stamps["lena"] = stamp_of(self.pia.expect(EVENT + r"#general lena: history from lena$"))
        self.lena.send("/me remembers the history")
        stamps["action"] = stamp_of(self.pia.expect(EVENT + r"#general \* lena remembers the history$"))
        last = max(epoch_of(stamp) for stamp in stamps.values())
        wait_for(lambda: time.time() >= last + 1, timeout=5, what="the clock to pass the history's second")
        return stamps


@pytest.fixture
def room(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", TZ)  # before anything starts: the server, the clients and tmux inherit it
    server = ServerProcess(tmp_path, "--server-name", "pychat.test")
    lena = server.client("lena")
    pia = PlainClient(server.port, "pia")
    lena.expect(r"pia has joined")
    yield Room(server, lena, pia)
    pia.close()
    lena.close()
    server.stop()


# -- irssi, in a real terminal ---------------------------------------------------------------

IRSSI_CONFIG = """\
settings = {
  core = {
    nick = "ivy";
    user_name = "ivy";
    real_name = "Ivy";
    timestamp_format = "%Y-%m-%d %H:%M:%S";
    settings_autosave = "no";
  };
  "fe-common/core" = { autofocus_new_items = "no"; autocreate_own_query = "yes"; };
  "fe-text" = { show_server_time = "yes"; paste_detect_time = "0"; };
  "irc/core" = { cmd_queue_speed = "0msec"; cmds_max_at_once = "100"; };
};
"""
"""A fresh irssi: no networks or servers (so nothing connects by itself, no DNS, no TLS, no
SASL); full date and seconds in the timestamp, which shows a message's server-time
(show_server_time); query windows open without taking the focus; no client-side flood
queue and no paste prompt, so that typed lines go out as they are typed."""


@pytest.fixture
def irssi(tmp_path):
    needs("irssi")
    home = tmp_path / "irssi"
    home.mkdir()
    (home / "config").write_text(IRSSI_CONFIG)
    term = Tmux(200, 50, f"sh -c 'irssi --home={home}; echo IRSSI-EXIT=$?; sleep 60'")
    yield term
    term.kill()


def irssi_window(term: Tmux, command: str, item: str) -> None:
    """Make ITEM the active window with COMMAND: the window's item is then the input prompt."""
    term.line(command)
    term.wait(lambda s: s[-1].startswith(f"[{item}]"), f"the {item} window")


def irssi_query(term: Tmux, nick: str) -> None:
    """The query window with NICK, active. `/query` opens it if the nick's first message has not
    (irssi may read that message after these keys); the message lands in it either way."""
    irssi_window(term, f"/query {nick}", nick)


def test_irssi(room, irssi):
    term, lena, pia = irssi, room.lena, room.pia
    stamps = room.make_history()

    term.wait(lambda s: s[-1].startswith("[(status)]"), "irssi to start")
    screen = "\n".join(term.screen())
    assert "Unknown settings" not in screen and "IRSSI-EXIT" not in screen, screen  # the config was taken

    # Connect: CAP negotiation gives server-time, the welcome burst names the server.
    term.line(f"/connect 127.0.0.1 {room.server.irc_port}")
    term.wait_match(r"Capabilities acknowledged: .*server-time", "server-time acknowledged")
    term.wait_match(r"-!- Welcome to the pychat IRC network, ivy!~ivy@", "the welcome")
    term.wait_match(r"-!- End of /MOTD command", "the end of the welcome burst")

    # Join: the others see it; irssi shows the history with the times the others saw.
    term.line("/join #general")
    lena.expect(EVENT + r"#general --> ivy has joined$")
    pia.expect(EVENT + r"#general --> ivy has joined$")
    joined = term.wait_match(r"^(" + STAMP + r") -!- ivy \[~ivy@\S+\] has joined #general$", "the join").group(1)
    term.wait_match(r"\[ ?ivy\]", "the names list")
    term.wait(lambda s: s[-1].startswith("[#general]"), "the #general window to be the active one")
    term.wait_match(rf"^{stamps['pia']} <[ @+]pia> history from pia$", "pia's history line at its time")
    term.wait_match(rf"^{stamps['lena']} <[ @+]lena> history from lena$", "lena's history line at its time")
    term.wait_match(rf"^{stamps['action']}  \* lena remembers the history$", "lena's history action at its time")
    assert joined > max(stamps.values()), (joined, stamps)  # so those times are not the time they arrived

    # Room messages and actions, from lena and pia to irssi.
    lena.send("hi ivy, lena here on nc")
    term.wait_match(rf"^{STAMP} <[ @+]lena> hi ivy, lena here on nc$", "lena's message")
    pia.send("hi ivy, pia here in the client")
    term.wait_match(rf"^{STAMP} <[ @+]pia> hi ivy, pia here in the client$", "pia's message")
    lena.send("/me waves at ivy")
    term.wait_match(rf"^{STAMP}  \* lena waves at ivy$", "lena's action")
    pia.send("/me pours ivy a tea")
    term.wait_match(rf"^{STAMP}  \* pia pours ivy a tea$", "pia's action")

    # ... and from irssi to both.
    term.line("hello from irssi")
    room.expect_both(EVENT + r"#general ivy: hello from irssi$")
    term.line("/me bows")
    room.expect_both(EVENT + r"#general \* ivy bows$")

    # Direct messages: each opens a query window in irssi; a line typed there answers.
    lena.send("/dm ivy psst, from nc")
    lena.expect(r"\(dm to ivy\) lena: psst, from nc$")
    irssi_query(term, "lena")
    term.wait_match(rf"^{STAMP} <lena> psst, from nc$", "lena's direct message")
    term.line("a secret for lena")
    lena.expect(EVENT + r"\(dm\) ivy: a secret for lena$")
    term.line("/me nods at lena")
    lena.expect(EVENT + r"\(dm\) \* ivy nods at lena$")

    pia.send("/dm ivy psst, from the client")
    pia.expect(r"\(dm to ivy\) pia: psst, from the client$")
    irssi_query(term, "pia")
    term.wait_match(rf"^{STAMP} <pia> psst, from the client$", "pia's direct message")
    term.line("a secret for pia")
    pia.expect(EVENT + r"\(dm\) ivy: a secret for pia$")

    # A broadcast is a notice from its sender: irssi shows it in the sender's query window.
    lena.send("/bc hello everyone")
    irssi_query(term, "lena")
    term.wait_match(rf"^{STAMP} -lena\(\S+\)- hello everyone$", "lena's broadcast as a notice")

    # /msg from the room's window reaches a nick too.
    irssi_window(term, "/window goto #general", "#general")
    term.line("/msg pia one more for pia")
    pia.expect(EVENT + r"\(dm\) ivy: one more for pia$")
    room.assert_dms_private("ivy")

    term.line("/quit see you")
    room.expect_both(EVENT + r"#general <-- ivy has quit \(.*see you\)$")
    term.wait_match(r"IRSSI-EXIT=0", "irssi to exit")


# -- WeeChat, headless, through its FIFO pipe and its logs -------------------------------------

class WeeChat:
    """weechat-headless with a fresh home in DIR: commands in through the FIFO, lines out of the logs."""

    def __init__(self, home: Path, port: int, nick: str) -> None:
        self.home = home
        self.nick = nick
        commands = ";".join([
            "/set logger.file.flush_delay 0",  # every line reaches its file as it is shown
            "/set logger.file.time_format %Y-%m-%d %H:%M:%S",
            f"/server add pychat 127.0.0.1/{port} -notls",
            f"/set irc.server.pychat.nicks {nick}",
            f"/set irc.server.pychat.username {nick}",
            "/set irc.server.pychat.autoreconnect off",
            "/set irc.server.pychat.anti_flood_prio_high 0",  # no client-side pause between lines
            "/set irc.server.pychat.anti_flood_prio_low 0",
            "/connect pychat",
        ])
        self.out = open(home / "stdout.txt", "wb")
        # -a: no server connects by itself; -P: only the plugins needed (no scripts, no relay).
        self.proc = subprocess.Popen(["weechat-headless", "--dir", str(home), "-a", "-P", "irc,logger,fifo",
                                      "-r", commands],
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8"))
        self.fifo = wait_for(self._fifo, what="WeeChat's FIFO pipe")

    def _fifo(self) -> Path | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"weechat-headless exited with {self.proc.returncode}: {self.logs()}")
        pipes = list(self.home.glob("weechat_fifo_*"))
        return pipes[0] if pipes else None

    def command(self, buffer: str, text: str) -> None:
        """TEXT typed into BUFFER (`irc.server.pychat`, `irc.pychat.#general`, `irc.pychat.NICK`)."""
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails at once if WeeChat is gone
        try:
            os.write(fd, f"{buffer} *{text}\n".encode())
        finally:
            os.close(fd)

    def log_lines(self, target: str) -> list[str]:
        """The logged lines of the buffer of TARGET (`server.pychat`, `pychat.#general`, `pychat.lena`)."""
        path = self.home / "logs" / f"irc.{target}.weechatlog"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def logs(self) -> str:
        """Every log, for a failure's message."""
        files = sorted((self.home / "logs").glob("*.weechatlog")) if (self.home / "logs").exists() else []
        return "\n".join(f"== {f.name}\n{f.read_text(errors='replace')}" for f in files)

    def wait_log(self, target: str, pattern: str, what: str) -> re.Match:
        """Wait for a line matching the regex PATTERN in TARGET's log; its match."""
        found = {}

        def check() -> bool:
            for line in self.log_lines(target):
                match = re.search(pattern, line)
                if match:
                    found["match"] = match
                    return True
            return False

        try:
            wait_for(check, timeout=15, what=what)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; logs:\n{self.logs()}")
        return found["match"]

    def quit(self) -> int:
        if self.proc.poll() is None:
            try:
                self.command("core.weechat", "/quit")
                self.proc.wait(DEFAULT_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode


@pytest.fixture
def weechat_home(tmp_path):
    needs("weechat-headless")
    home = tmp_path / "weechat"
    home.mkdir()
    return home


def test_weechat(room, weechat_home):
    lena, pia = room.lena, room.pia
    stamps = room.make_history()
    wee = WeeChat(weechat_home, room.server.irc_port, "wendy")
    try:
        run_weechat_session(room, wee, stamps)
    finally:
        wee.quit()


def run_weechat_session(room: Room, wee: WeeChat, stamps: dict[str, str]) -> None:
    lena, pia = room.lena, room.pia
    server, general = "irc.server.pychat", "irc.pychat.#general"
    wee.wait_log("server.pychat", r"client capability, enabled: .*server-time", "server-time enabled")
    wee.wait_log("server.pychat", r"Welcome to the pychat IRC network, wendy!~wendy@", "the welcome")

    wee.command(server, "/join #general")
    room.expect_both(EVENT + r"#general --> wendy has joined$")
    joined = wee.wait_log("pychat.#general", r"^(" + STAMP + r")\t-->\twendy \(~wendy@\S+\) has joined #general$",
                          "the join").group(1)
    wee.wait_log("pychat.#general", rf"^{stamps['pia']}\tpia\thistory from pia$", "pia's history line at its time")
    wee.wait_log("pychat.#general", rf"^{stamps['lena']}\tlena\thistory from lena$", "lena's history line at its time")
    wee.wait_log("pychat.#general", rf"^{stamps['action']}\t \*\tlena remembers the history$",
                 "lena's history action at its time")
    assert joined > max(stamps.values()), (joined, stamps)

    lena.send("hi wendy, lena here on nc")
    wee.wait_log("pychat.#general", rf"^{STAMP}\tlena\thi wendy, lena here on nc$", "lena's message")
    pia.send("hi wendy, pia here in the client")
    wee.wait_log("pychat.#general", rf"^{STAMP}\tpia\thi wendy, pia here in the client$", "pia's message")
    lena.send("/me waves at wendy")
    wee.wait_log("pychat.#general", rf"^{STAMP}\t \*\tlena waves at wendy$", "lena's action")
    pia.send("/me pours wendy a tea")
    wee.wait_log("pychat.#general", rf"^{STAMP}\t \*\tpia pours wendy a tea$", "pia's action")

    wee.command(general, "hello from weechat")
    room.expect_both(EVENT + r"#general wendy: hello from weechat$")
    wee.command(general, "/me bows")
    room.expect_both(EVENT + r"#general \* wendy bows$")

    # Direct messages open a private buffer; a line sent to it answers.
    lena.send("/dm wendy psst, from nc")
    wee.wait_log("pychat.lena", rf"^{STAMP}\tlena\tpsst, from nc$", "lena's direct message")
    wee.command("irc.pychat.lena", "a secret for lena")
    lena.expect(EVENT + r"\(dm\) wendy: a secret for lena$")
    wee.command("irc.pychat.lena", "/me nods at lena")
    lena.expect(EVENT + r"\(dm\) \* wendy nods at lena$")

    pia.send("/dm wendy psst, from the client")
    wee.wait_log("pychat.pia", rf"^{STAMP}\tpia\tpsst, from the client$", "pia's direct message")
    wee.command("irc.pychat.pia", "a secret for pia")
    pia.expect(EVENT + r"\(dm\) wendy: a secret for pia$")

    # /msg from the server buffer reaches a nick too.
    wee.command(server, "/msg pia one more for pia")
    pia.expect(EVENT + r"\(dm\) wendy: one more for pia$")
    room.assert_dms_private("wendy")

    wee.command(server, "/quit see you")  # quits WeeChat itself, with a QUIT to the server
    room.expect_both(EVENT + r"#general <-- wendy has quit \(.*see you\)$")
    assert wee.proc.wait(DEFAULT_TIMEOUT) == 0
