"""End to end: a real server subprocess and raw socket clients.

Covers every command, alias, error path and line kind of PROTOCOL.md
sections 3 to 5.
"""

import re
import socket

import pytest

from helpers import EVENT, LineClient

LINE_KINDS = re.compile(r"^(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] |\* |! )")


def assert_line_kinds(*clients):
    for c in clients:
        for line in c.seen:
            assert LINE_KINDS.match(line), f"line of no known kind: {line!r}"


@pytest.fixture
def trio(server):
    a, b, c = server.client("alice"), server.client("bob"), server.client("carol")
    a.sync(), b.sync()  # let join notices settle
    yield a, b, c
    assert_line_kinds(a, b, c)


def test_greeting_name_and_default_room(server):
    first = server.client("alice")
    c = LineClient(server.port)
    greeting = c.lines_until(r"what is your name")
    assert all(line.startswith("* ") for line in greeting)
    c.send("bob")
    after = c.lines_until(r"^\* end of history|^\* no messages")
    assert after[0].startswith("* hello bob")
    assert any(re.match(r"^\*\s+#general: 1 user", line) for line in after)  # room list with counts
    assert any(line.startswith("* you joined #general") for line in after)
    first.expect(EVENT + r"#general --> bob has joined$")
    assert_line_kinds(c, first)


def test_invalid_taken_and_empty_names(server):
    alice = server.client("alice")  # noqa: F841  (kept open: the name stays taken)
    c = LineClient(server.port)
    c.expect("what is your name")
    c.send("not valid!")
    assert c.read_line().startswith("! invalid name")
    c.expect("what is your name")
    c.send("ALICE")
    assert c.read_line().startswith("! the name ALICE is taken")
    c.expect("what is your name")
    c.send("x" * 21)
    assert c.read_line().startswith("! invalid name")
    c.expect("what is your name")
    c.send("")
    assert re.match(r"^\* hello guest\d+!", c.expect(r"^\* hello"))


def test_history_replay_on_join_between_info_lines(server):
    a = server.client("alice")
    a.send("first message")
    a.send("/me waves")
    a.sync()
    b = LineClient(server.port)
    b.give_name("bob")
    replay = b.lines_until(r"^\* end of history")
    start = next(i for i, line in enumerate(replay) if line.startswith("* last 2 messages of #general"))
    assert re.match(EVENT + r"#general alice: first message$", replay[start + 1])
    assert re.match(EVENT + r"#general \* alice waves$", replay[start + 2])
    assert replay[start + 3] == "* end of history of #general"


def test_room_message_reaches_the_others_but_is_not_echoed(trio):
    a, b, c = trio
    a.send("hello room")
    assert re.match(EVENT + r"#general alice: hello room$", b.expect("hello room"))
    assert re.match(EVENT + r"#general alice: hello room$", c.expect("hello room"))
    assert not any("hello room" in line for line in a.sync())


def test_message_and_say_commands(trio):
    a, b, _ = trio
    a.send("/message one")
    a.send("/SAY two")
    b.expect(r"alice: one$")
    b.expect(r"alice: two$")


def test_double_slash_sends_a_literal_slash(trio):
    a, b, _ = trio
    a.send("//shrug")
    assert re.match(EVENT + r"#general alice: /shrug$", b.expect("shrug"))


def test_me_action(trio):
    a, b, _ = trio
    a.send("/me dances")
    assert re.match(EVENT + r"#general \* alice dances$", b.expect("dances"))


def test_dm_and_msg_alias_with_quotes(trio):
    a, b, c = trio
    a.send('/dm bob "hi there"')
    assert re.match(EVENT + r"\(dm\) alice: hi there$", b.expect("hi there"))
    assert re.match(EVENT + r"\(dm to bob\) alice: hi there$", a.expect("hi there"))
    a.send("/msg BOB psst")
    b.expect(r"\(dm\) alice: psst$")
    assert not any("hi there" in line or "psst" in line for line in c.sync())
    a.send("/dm nobody hello")
    assert a.expect("^!") == "! no such user: nobody"
    a.send("/dm bob")
    assert a.expect("^!") == "! usage: /dm NAME TEXT"


def test_broadcast_reaches_everyone_in_rooms_and_hall(trio):
    a, b, c = trio
    c.send("/leave")
    c.expect("you left")
    a.send("/bc hello all")
    for client in (a, b, c):
        assert re.match(EVENT + r"\(all\) alice: hello all$", client.expect("hello all"))
    b.send("/broadcast again")
    for client in (a, b, c):
        client.expect(r"\(all\) bob: again$")


def test_nick_is_seen_by_the_room(trio):
    a, b, c = trio
    a.send("/nick alicia")
    assert a.expect(r"^\*") == "* you are now known as alicia"
    b.expect(EVENT + r"#general -- alice is now known as alicia$")
    a.send("/nick BOB")
    assert a.expect("^!").startswith("! the name BOB is taken")
    a.send("/nick no way")
    assert a.expect("^!") == "! usage: /nick NAME"
    a.send("/nick bad!")
    assert a.expect("^!").startswith("! invalid name")
    b.send("hi")
    a.expect("bob: hi")
    a.send("/dm alicia self")
    a.expect(r"\(dm\) alicia: self")


def test_list_rooms_and_locked_marker(trio):
    a, b, _ = trio
    b.send("/create vault s3cret")
    b.expect("you joined #vault")
    a.send("/list")
    lines = a.lines_until(r"#vault")
    assert "* 2 rooms, busiest first:" in lines
    assert any(re.match(r"^\*\s+#general: 2 users$", line) for line in lines)
    assert re.match(r"^\*\s+#vault: 1 user \(locked\)$", lines[-1])
    a.send("/rooms")
    a.expect(r"#vault: 1 user \(locked\)")


def test_join_switches_rooms_and_creates_missing(trio):
    a, b, c = trio
    a.send("/join #Dev")
    assert a.expect(r"^\* you joined") == "* you joined #Dev: 1 user here"
    b.expect(EVENT + r"#general <-- alice has left$")
    b.send("/join dev")  # case and '#' ignored
    b.expect(r"you joined #Dev: 2 users here")
    a.expect(EVENT + r"#Dev --> bob has joined$")
    a.send("/join dev")
    assert a.expect("^!") == "! you are already in #Dev"
    a.send("/join bad.room")
    assert a.expect("^!").startswith("! invalid room name")
    a.send("/join")
    assert a.expect("^!") == "! usage: /join ROOM [KEY]"
    a.send("in dev")
    b.expect("alice: in dev")
    assert not any("in dev" in line for line in c.sync())


def test_private_room_needs_its_key(trio):
    a, b, _ = trio
    a.send("/create secret pw1")
    a.expect("you joined #secret \\(locked\\)")
    a.send("private words")
    a.sync()
    b.send("/join secret")
    assert b.expect("^!") == "! #secret is locked: /join secret KEY"
    b.send("/join secret wrong")
    assert b.expect("^!") == "! wrong key for #secret"
    b.send("/create secret other")
    assert b.expect("^!") == "! #secret already exists: /join secret"
    b.send("/join #SECRET pw1")
    replay = b.lines_until(r"^\* end of history")
    assert any("alice: private words" in line for line in replay)


def test_join_with_key_creates_a_locked_room(trio):
    a, b, _ = trio
    a.send("/join hideout k")
    a.expect(r"you joined #hideout \(locked\)")
    b.send("/join hideout")
    assert b.expect("^!").startswith("! #hideout is locked")


def test_create_existing_room_is_an_error(trio):
    a, _, _ = trio
    a.send("/create general")
    assert a.expect("^!") == "! #general already exists: /join general"
    a.send("/create fresh")
    a.expect("you joined #fresh")


def test_leave_part_and_the_hall(trio):
    a, b, _ = trio
    a.send("/leave")
    assert a.expect(r"^\*").startswith("* you left #general")
    b.expect(EVENT + r"#general <-- alice has left$")
    a.send("/part")
    assert a.expect("^!").startswith("! you are not in a room")
    a.send("talking to nobody")
    assert a.expect("^!").startswith("! you are not in a room: /join ROOM")
    a.send("/me waves")
    assert a.expect("^!").startswith("! you are not in a room")
    a.send("//slash")
    assert a.expect("^!").startswith("! you are not in a room")
    a.send("/history")
    assert a.expect("^!").startswith("! you are not in a room")
    a.send("/roominfo")
    assert a.expect("^!").startswith("! you are not in a room")
    # In the hall a command may be typed without its slash.
    a.send("list")
    a.expect(r"#general: 2 users")
    a.send("help join")
    a.expect(r"^\* /join ROOM \[KEY\]:")
    a.send("join general")
    a.expect("you joined #general")
    b.expect("alice has joined")
    a.send("list")  # in a room, a plain 'list' is a message
    b.expect("alice: list$")


def test_roominfo_who_names(trio):
    a, _, _ = trio
    for word in ("roominfo", "who", "NAMES"):
        a.send(f"/{word}")
        assert a.expect(r"^\* #general") == "* #general: 3 users: alice, bob, carol"


def test_users_lists_everyone_and_their_room(trio):
    a, b, c = trio
    c.send("/leave")
    c.expect("you left")
    b.send("/join dev")
    b.expect("you joined")
    a.send("/users")
    lines = a.lines_until(r"carol in")
    assert lines[-4:] == ["* 3 users online:", "*   alice in #general", "*   bob in #dev", "*   carol in the hall"]


def test_history_command(trio):
    a, b, _ = trio
    for i in range(5):
        a.send(f"line {i}")
    b.expect("line 4")
    b.send("/history 2")
    lines = b.lines_until(r"^\* end of history")
    assert lines[-4] == "* last 2 messages of #general:"
    assert lines[-3].endswith("alice: line 3") and lines[-2].endswith("alice: line 4")
    b.send("/history")
    assert len(b.lines_until(r"^\* end of history")) == 7
    b.send("/history 100000")  # more than 500 is clamped to the maximum
    assert b.expect(r"^\* last") == "* last 5 messages of #general:"
    for bad in ("0", "-1", "x", "²"):
        b.send(f"/history {bad}")
        assert b.expect("^!").startswith("! usage: /history [N]")


def test_help_and_its_aliases(server):
    a = server.client("alice")
    for word in ("help", "manual", "?", "HELP"):
        a.send(f"/{word}")
        lines = a.lines_until(r"/help COMMAND shows")
        for cmd in ("help", "nick", "list", "join", "create", "leave", "roominfo", "users",
                    "dm", "bc", "message", "me", "history", "quit"):
            assert any(line.startswith(f"*   /{cmd}") for line in lines), cmd
    a.send("/help dm")
    details = a.lines_until(r"^\* aliases")
    assert details[-2].startswith("* /dm NAME TEXT: direct message")
    assert details[-1] == "* aliases: /msg"
    a.send("/help /part")
    a.expect(r"^\* /leave: ")
    a.send("/help nosuch")
    assert a.expect("^!") == "! no such command: nosuch; /help lists the commands"


def test_unknown_command_and_extra_arguments(server):
    a = server.client("alice")
    a.send("/frobnicate now")
    assert a.expect("^!") == "! unknown command /frobnicate; /help lists the commands"
    a.send("/list two words")
    assert a.expect("^!") == "! usage: /list [PATTERN]"
    a.send("/bc")
    assert a.expect("^!") == "! usage: /bc TEXT"
    a.send("/me")
    assert a.expect("^!") == "! usage: /me TEXT"


@pytest.mark.parametrize("word", ["quit", "exit"])
def test_quit_with_reason(server, word):
    a, b = server.client("alice"), server.client("bob")
    a.send(f"/{word} see you")
    assert a.expect(r"^\*") == "* goodbye, alice!"
    assert a.wait_closed() == []
    b.expect(EVENT + r"#general <-- alice has quit \(see you\)$")


def test_quit_without_reason_and_vanishing_client(server):
    a, b, c = server.client("alice"), server.client("bob"), server.client("carol")
    a.send("/quit")
    b.expect(EVENT + r"#general <-- alice has quit$")
    c.sock.close()
    b.expect(EVENT + r"#general <-- carol has quit \(connection (closed|lost)\)$")


def test_two_commands_in_one_packet(trio):
    a, b, _ = trio
    a.send_raw(b"/me one\r\nplain two\n")
    b.expect(r"\* alice one$")
    b.expect(r"alice: plain two$")


def test_a_line_sent_byte_by_byte(trio):
    a, b, _ = trio
    a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for byte in "slowly typed ünïcode\n".encode():
        a.send_raw(bytes([byte]))
    b.expect("alice: slowly typed ünïcode$")


def test_utf8_character_split_across_reads(trio):
    a, b, _ = trio
    a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = "café 中文\n".encode()
    split = data.index("é".encode()) + 1
    a.send_raw(data[:split])
    b.sync()  # a round trip through the loop: the server has read the first half by now
    a.send_raw(data[split:])
    b.expect("alice: café 中文$")


def test_controls_and_escapes_are_not_relayed(trio):
    a, b, _ = trio
    a.send_raw(b"\x1b[2J\x1b]0;pwned\x07red\x1b[31m text\x07\ttab\xff\xfb\x01\n")
    line = b.expect("alice:")
    assert line.endswith("alice: red text tab")
    a.send_raw(b"bad \xc3\x28 utf8\n")
    assert b.expect("utf8").endswith("alice: bad \ufffd( utf8")


def test_blank_lines_are_ignored(trio):
    a, b, _ = trio
    a.send_raw(b"\r\n\n   \nafter blanks\n")
    assert b.expect("alice") .endswith("alice: after blanks")
    assert a.sync() == []


def test_overlong_line_is_refused_and_the_connection_stays(make_server):
    srv = make_server("--max-line", "100")
    a, b = srv.client("alice"), srv.client("bob")
    a.send("x" * 101)
    assert a.expect("^!") == "! line too long (more than 100 bytes); it was discarded"
    a.send("y" * 100)
    b.expect("alice: " + "y" * 100)


def test_default_room_empty_leaves_users_in_the_hall(make_server):
    srv = make_server("--default-room", "")
    c = LineClient(srv.port)
    c.expect("what is your name")
    c.send("dora")
    c.expect("hello dora")
    c.send("/users")
    c.expect(r"dora in the hall")
