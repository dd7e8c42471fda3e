"""The client for real: plain mode in a subprocess, full-screen mode in tmux."""

import os
import subprocess
import sys

import pytest

from helpers import EVENT, ROOT, LineClient, Tmux

CLIENT = [sys.executable, str(ROOT / "pychat_client.py")]


def test_plain_mode_script_in_answers_out(server):
    watcher = server.client("watcher")
    script = "hello from a script\n/users\n/nosuch\n/dm watcher psst"  # no final newline
    result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(server.port), "--name", "bot"],
                            input=script.encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().splitlines()
    assert "* hello bot! /help lists the commands" in out
    assert "*   bot in #general" in out and "*   watcher in #general" in out
    assert "! unknown command /nosuch; /help lists the commands" in out
    assert any(line.endswith("(dm to watcher) bot: psst") for line in out)  # the tail after EOF counts
    assert not any("\r" in line for line in out)
    watcher.expect(EVENT + r"#general bot: hello from a script$")
    watcher.expect(r"\(dm\) bot: psst$")


def test_plain_mode_reads_a_file_on_stdin(server, tmp_path):
    script = tmp_path / "script.txt"
    script.write_text("filer\n/roominfo\n")
    with open(script, "rb") as stdin:
        result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(server.port), "--plain"],
                                stdin=stdin, capture_output=True, timeout=30)
    assert result.returncode == 0
    assert "* #general: 1 user: filer" in result.stdout.decode().splitlines()


@pytest.mark.parametrize("stdin", [b"first message\n", b"firstmessage\nsecond\n"])  # the second is a valid name
def test_plain_mode_refused_name_sends_nothing_and_exits_1(server, stdin):
    alice = server.client("alice")
    result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(server.port), "--name", "alice"],
                            input=stdin, capture_output=True, timeout=30)
    assert result.returncode == 1, result
    errors = result.stderr.decode().splitlines()
    prefix = "pychat-client: the server refused the name alice: "
    assert len(errors) == 1 and errors[0].startswith(prefix), errors
    assert "alice" in errors[0][len(prefix):]  # the server's own reason follows
    # The stdin line was never sent: not as a message, and not as a second try at a name.
    seen = alice.sync()
    assert not any("first" in line or "second" in line or "has joined" in line for line in seen), seen
    assert server.log().count(" registered as ") == 1  # alice only


def test_plain_mode_with_a_name_sends_a_file_on_stdin_once_the_name_is_accepted(server, tmp_path):
    watcher = server.client("watcher")
    script = tmp_path / "script.txt"
    script.write_text("from a file\n/roominfo\n")
    with open(script, "rb") as stdin:
        result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(server.port), "--name", "filer"],
                                stdin=stdin, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "* #general: 2 users: watcher, filer" in result.stdout.decode().splitlines()
    watcher.expect(EVENT + r"#general filer: from a file$")


def test_plain_mode_server_closing_before_the_name_is_accepted_is_status_1(make_server):
    srv = make_server("--max-clients", "1")
    holder = srv.client("only")  # the one place, held while the client tries
    result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(srv.port), "--name", "bot"],
                            input=b"never sent\n", capture_output=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "pychat-client: the server closed the connection before accepting the name bot: server full"]
    holder.close()


def register_account(server, name: str, password: str) -> None:
    """NAME becomes a registered name; its holder then leaves, so the name is free (and reserved).
    It is registered from another address (127.0.0.9): password checks are budgeted per address."""
    owner = LineClient(server.port, source="127.0.0.9")
    owner.register(name)
    owner.send(f"/register {password}")
    owner.expect(rf"^\* the name {name} is yours")
    owner.send("/quit")
    owner.wait_closed()


def test_plain_mode_logs_in_to_a_registered_name_with_the_password_from_the_environment(server):
    register_account(server, "robot", "correct horse")
    watcher = server.client("watcher")
    result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(server.port), "--name", "robot"],
                            input=b"beep\n", capture_output=True, timeout=30,
                            env={**os.environ, "PYCHAT_PASSWORD": "correct horse"})
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().splitlines()
    assert "* hello robot! you are logged in; /help lists the commands" in out
    watcher.expect(EVENT + r"#general robot: beep$")  # stdin was sent once the name was accepted


@pytest.mark.parametrize("password", [None, "wrong password"])
def test_plain_mode_without_the_right_password_sends_nothing_and_exits_1(server, password):
    register_account(server, "robot", "correct horse")
    watcher = server.client("watcher")
    env = {k: v for k, v in os.environ.items() if k != "PYCHAT_PASSWORD"}
    if password is not None:
        env["PYCHAT_PASSWORD"] = password
    result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(server.port), "--name", "robot"],
                            input=b"never sent\n", capture_output=True, timeout=30, env=env)
    assert result.returncode == 1
    errors = result.stderr.decode().splitlines()
    if password is None:
        assert errors == ["pychat-client: robot is a registered name: set PYCHAT_PASSWORD to its password"]
    else:
        assert errors == ["pychat-client: the server refused the name robot: wrong password for robot"]
    assert not any("never sent" in line or "robot" in line for line in watcher.sync())


def test_bad_host_is_one_line_and_status_1():
    result = subprocess.run([*CLIENT, "no-such-host.invalid", "--plain"], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.startswith("pychat-client: unknown host 'no-such-host.invalid'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_server_is_one_line_and_status_1():
    import socket
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = subprocess.run([*CLIENT, "127.0.0.1", "--port", str(port)], capture_output=True,
                            text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.strip() == f"pychat-client: cannot connect to 127.0.0.1 port {port}: Connection refused"


# -- full screen, in a real terminal ------------------------------------------------------

def status_line(screen: list[str]) -> str:
    """The second row from the bottom: the client's status line."""
    return screen[-2] if len(screen) >= 2 else ""


def client_command(port: int, *args: str, env: str = "") -> str:
    """The client in a shell that reports whether the terminal was restored, and the exit status.

    ENV is put before the client's command (``NAME=value ...``): it applies to the client only."""
    return (f"sh -c 'before=$(stty -g); {env} {sys.executable} {ROOT / 'pychat_client.py'} 127.0.0.1 "
            f"--port {port} {' '.join(args)}; status=$?; after=$(stty -g); "
            f"[ \"$before\" = \"$after\" ] && echo TERMINAL-RESTORED; echo EXIT=$status; sleep 60'")


def log_in(term: Tmux, name: str) -> None:
    term.wait(lambda s: any("what is your name" in line for line in s), "the name prompt")
    term.type(name)
    term.keys("Enter")
    term.wait(lambda s: f"{name} | #general" in status_line(s), "the status line")


def wait_exit(term: Tmux) -> list[str]:
    return term.wait(lambda s: any("EXIT=" in line for line in s), "the client to exit")


@pytest.fixture
def tmux_client(server):
    term = Tmux(100, 24, client_command(server.port))
    yield term
    term.kill()


def test_full_screen_client_in_a_real_terminal(server, tmux_client):
    term = tmux_client
    watcher = server.client("watcher")
    log_in(term, "frank")
    term.wait(lambda s: "frank | #general (2)" in status_line(s), "the member count in the status line")
    watcher.expect(r"frank has joined")

    # A line typed in the terminal reaches a raw socket client, and is shown locally.
    term.type("hello from the terminal 中文")
    term.keys("Enter")
    watcher.expect(EVENT + r"#general frank: hello from the terminal 中文$")
    term.wait(lambda s: any(line.endswith("#general frank: hello from the terminal 中文") for line in s),
              "the own message shown like everyone else's")

    # An incoming line while input is half typed: the input line stays intact.
    term.type("half typed")
    watcher.send("incoming while you type")
    screen = term.wait(lambda s: any("watcher: incoming while you type" in line for line in s),
                       "the incoming line")
    assert screen[-1] == "> half typed"

    # Tab completes a nickname of the room.
    term.keys("C-u")
    term.type("wat")
    term.keys("Tab")
    term.wait(lambda s: s[-1] == "> watcher:", "nickname completion")

    # Resize: everything is redrawn for the new size.
    term.resize(60, 15)
    screen = term.wait(lambda s: len(s) == 15 and "frank | #general" in status_line(s),
                       "the redraw after resize")
    assert screen[-1] == "> watcher:"
    assert all(len(line) <= 60 for line in screen)

    # /quit restores the terminal and exits 0.
    term.keys("C-u")
    term.type("/quit")
    term.keys("Enter")
    screen = wait_exit(term)
    assert "TERMINAL-RESTORED" in screen and "EXIT=0" in screen
    watcher.expect(r"frank has quit$")


def test_ctrl_c_and_server_shutdown_restore_the_terminal(server, tmux_client):
    term = tmux_client
    log_in(term, "gina")
    term.keys("C-c")
    screen = wait_exit(term)
    assert "TERMINAL-RESTORED" in screen and "EXIT=0" in screen


def test_server_going_away_restores_the_terminal(make_server, tmp_path):
    srv = make_server()
    term = Tmux(80, 20, client_command(srv.port, "--name", "hank"))
    try:
        term.wait(lambda s: "hank | #general" in status_line(s), "the status line")
        srv.stop()
        screen = wait_exit(term)
        assert "TERMINAL-RESTORED" in screen and "EXIT=0" in screen
        assert "pychat-client: the server closed the connection: server shutting down" in screen, screen
        assert not any(line.startswith("pychat:") for line in screen)
    finally:
        term.kill()


def test_server_killed_after_a_message_adds_no_stale_words(make_server):
    srv = make_server()
    term = Tmux(80, 20, client_command(srv.port, "--name", "hank"))
    try:
        term.wait(lambda s: "hank | #general" in status_line(s), "the status line")
        watcher = srv.client("watcher")
        watcher.send("the last thing said")
        term.wait(lambda s: any(line.endswith("watcher: the last thing said") for line in s), "the message")
        srv.kill()
        screen = wait_exit(term)
        assert "TERMINAL-RESTORED" in screen
        assert "pychat-client: the server closed the connection" in screen, screen  # the whole line
    finally:
        term.kill()


@pytest.mark.parametrize("start", ["resized-right-after-start", "stale-LINES-and-COLUMNS"])
def test_the_client_uses_the_final_terminal_size_from_the_start(server, start):
    """A terminal resized in the client's first milliseconds (tiling window managers, scripted
    tmux) must not leave the client at its first size. A stale LINES/COLUMNS in the environment
    (which curses prefers over asking the terminal) is the same state made certain: curses starts
    with one size, the terminal has another, and no SIGWINCH comes to tell."""
    watcher = server.client("watcher")
    if start == "resized-right-after-start":
        term = Tmux(60, 15, client_command(server.port, "--name", "kim"))
        term.resize(100, 30)
    else:
        term = Tmux(100, 30, client_command(server.port, "--name", "kim", env="LINES=15 COLUMNS=60"))
    try:
        term.wait(lambda s: "kim | #general" in status_line(s), "the status line")
        watcher.expect(r"kim has joined")
        watcher.send("x" * 150)  # one word longer than the screen is wide: it fills whole rows
        screen = term.wait(lambda s: any("x" * 10 in line for line in s), "the long line")
        assert len(screen) == 30 and "kim | #general" in screen[28], screen
        assert "x" * 100 in screen, screen
    finally:
        term.kill()


def test_an_unusable_terminal_is_one_line_and_status_1(server):
    term = Tmux(100, 20, client_command(server.port, "--name", "lou", env="TERM=no-such-terminal"))
    try:
        screen = wait_exit(term)
        assert "EXIT=1" in screen and "TERMINAL-RESTORED" in screen
        output = [line for line in screen if line and line not in ("EXIT=1", "TERMINAL-RESTORED")]
        assert output[0].startswith("pychat-client: cannot use this terminal"), screen
        assert not any("Traceback" in line for line in screen)
    finally:
        term.kill()


def test_multi_line_paste_asks_first(server, tmux_client):
    term = tmux_client
    watcher = server.client("watcher")
    log_in(term, "ivan")
    term.type("\x1b[200~line one\rline two\rline three\x1b[201~")
    term.wait(lambda s: any("send 3 pasted lines? (y/n)" in line for line in s), "the paste question")
    assert not any("line one" in line for line in watcher.sync())
    term.type("y")
    for text in ("line one", "line two", "line three"):
        watcher.expect(rf"ivan: {text}$")


def test_a_password_typed_at_the_prompt_is_drawn_as_stars_and_not_kept(server, tmux_client):
    term = tmux_client
    register_account(server, "robot", "correct horse")
    term.wait(lambda s: any("what is your name" in line for line in s), "the name prompt")
    term.type("robot")
    term.keys("Enter")
    term.wait(lambda s: any("robot is a registered name: type its password" in line for line in s),
              "the password question")
    term.type("correct horse")
    screen = term.wait(lambda s: s[-1] == "> " + "*" * len("correct horse"), "the password as stars")
    assert not any("correct horse" in line for line in screen)
    term.keys("Enter")
    term.wait(lambda s: "robot | #general" in status_line(s), "the login")
    # A line with a password (/password, /login...) is kept out of the input history; an ordinary one is not.
    term.type("/password not-the-password battery staple")
    term.keys("Enter")
    term.wait(lambda s: any("wrong password for robot" in line for line in s), "the refusal")
    term.type("just a line")
    term.keys("Enter")
    term.keys("Up")
    term.wait(lambda s: s[-1] == "> just a line", "the last line recalled")
    term.keys("Up")
    screen = term.wait(lambda s: s[-1] == "> robot", "the name typed at the prompt")
    assert not any("correct horse" in line or "battery" in line for line in screen)
    term.keys("Up")
    term.wait(lambda s: s[-1] == "> robot", "no older line")
