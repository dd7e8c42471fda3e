"""The client's pure parts, without a terminal: keys, editor, wrapping, state."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pychat.client.app import ChatState, nick_style, style_line, wrap_segments
from pychat.client.editor import LineEditor
from pychat.client.keys import Key, KeyParser
from pychat.client.textwidth import char_width, fit_input, text_width, wrap

# -- keys ----------------------------------------------------------------------------

KEY_BYTES = [b"a", b"Z", "é".encode(), "中".encode(), "🙂".encode(), b"\r", b"\x7f", b"\t", b"\x01",
             b"\x15", b"\x17", b"\x0b", b"\x1b[A", b"\x1b[B", b"\x1b[C", b"\x1b[D", b"\x1b[H", b"\x1b[F",
             b"\x1b[3~", b"\x1b[5~", b"\x1b[6~", b"\x1bOH", b"\x1b[1~", b"\x1b[4~",
             b"\x1b[200~two\r\nlines\x1b[201~"]


def parse_all(chunks):
    parser = KeyParser()
    keys = []
    for chunk in chunks:
        keys.extend(parser.feed(chunk))
    return keys


@settings(max_examples=300)
@given(st.lists(st.sampled_from(KEY_BYTES), max_size=30), st.data())
def test_keys_are_the_same_however_the_bytes_are_chunked(seq, data):
    stream = b"".join(seq)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks, prev = [], 0
    for cut in cuts + [len(stream)]:
        chunks.append(stream[prev:cut])
        prev = cut
    assert parse_all(chunks) == parse_all([stream])
    assert len(parse_all([stream])) == len(seq)


def test_key_names():
    keys = parse_all([b"a\xc3\xa9\r\x7f\t\x01\x05\x15\x17\x0b\x1b[A\x1b[B\x1b[C\x1b[D\x1b[H\x1b[F\x1b[3~\x1b[5~\x1b[6~"])
    assert keys == [Key("char", "a"), Key("char", "é"), Key("enter"), Key("backspace"), Key("tab"),
                    Key("ctrl-a"), Key("ctrl-e"), Key("ctrl-u"), Key("ctrl-w"), Key("ctrl-k"),
                    Key("up"), Key("down"), Key("right"), Key("left"), Key("home"), Key("end"),
                    Key("delete"), Key("pgup"), Key("pgdn")]


def test_bracketed_paste_is_one_key_even_when_split():
    keys = parse_all([b"x\x1b[20", b"0~first\r\nsec", b"ond\r\n\x1b[2", b"01~y"])
    assert keys == [Key("char", "x"), Key("paste", "first\nsecond\n"), Key("char", "y")]


def test_crlf_is_one_enter():
    assert parse_all([b"\r\n"]) == [Key("enter")]
    assert parse_all([b"\r\r"]) == [Key("enter"), Key("enter")]


# -- editor ------------------------------------------------------------------------------

def type_keys(editor, *keys):
    out = None
    for k in keys:
        if len(k) == 1:
            out = editor.handle("char", k)
        else:
            out = editor.handle(k)
    return out


def test_editing_keys():
    e = LineEditor()
    type_keys(e, *"hello world")
    assert (e.text, e.cursor) == ("hello world", 11)
    type_keys(e, "home", "delete", "H", "end", "backspace")
    assert e.text == "Hello worl"
    type_keys(e, "left", "left", "ctrl-k")
    assert (e.text, e.cursor) == ("Hello wo", 8)
    type_keys(e, "ctrl-w")
    assert (e.text, e.cursor) == ("Hello ", 6)
    type_keys(e, "left", "ctrl-u")
    assert (e.text, e.cursor) == (" ", 0)
    type_keys(e, "ctrl-e", *"x")
    assert type_keys(e, "enter") == " x"
    assert (e.text, e.cursor) == ("", 0)


def test_history_keeps_the_draft():
    e = LineEditor()
    for line in ("one", "two"):
        type_keys(e, *line)
        e.handle("enter")
    type_keys(e, *"dra")
    type_keys(e, "up")
    assert e.text == "two"
    type_keys(e, "up", "up")
    assert e.text == "one"
    type_keys(e, "down")
    assert e.text == "two"
    type_keys(e, "down")
    assert e.text == "dra"


def test_tab_completes_and_cycles():
    names = ["alice", "alicia", "bob"]

    def completer(word, at_start):
        if word.startswith("/"):
            return [f"/{c} " for c in ("join", "me") if c.startswith(word[1:])]
        return [n + (": " if at_start else " ") for n in names if n.startswith(word)]

    e = LineEditor(completer)
    type_keys(e, "a", "l", "tab")
    assert e.text == "alice: "
    type_keys(e, "tab")
    assert e.text == "alicia: "
    type_keys(e, "tab")
    assert e.text == "alice: "
    type_keys(e, *"hi b", "tab")
    assert e.text == "alice: hi bob "
    e2 = LineEditor(completer)
    type_keys(e2, "/", "j", "tab")
    assert e2.text == "/join "
    e3 = LineEditor(completer)
    type_keys(e3, "z", "tab")
    assert e3.text == "z"


# -- width and wrapping ------------------------------------------------------------------

def test_character_widths():
    assert char_width("a") == 1
    assert char_width("中") == 2
    assert char_width("🙂") == 2
    assert char_width("\u0301") == 0   # combining acute accent
    assert text_width("e\u0301中") == 3


@settings(max_examples=300)
@given(st.text(st.sampled_from(list("ab cd 中🙂e\u0301 ")), max_size=80), st.integers(2, 30))
def test_wrap_keeps_every_character_and_fits(text, width):
    rows = wrap(text, width)
    assert "".join(rows) == text
    for row in rows:
        assert text_width(row.rstrip(" ")) <= width


def test_wrap_breaks_at_spaces():
    assert wrap("hello wide world", 11) == ["hello wide ", "world"]
    assert wrap(" 中a中", 4) == [" ", "中a", "中"]  # after the space, a wide character still overflows


@given(st.text(st.sampled_from(list("ab中🙂 ")), max_size=60), st.data(), st.integers(4, 30))
def test_fit_input_keeps_the_cursor_visible(text, data, width):
    cursor = data.draw(st.integers(0, len(text)))
    visible, col = fit_input(text, cursor, width)
    assert text_width(visible) <= width
    assert 0 <= col <= width


# -- reading the server ------------------------------------------------------------------

TS = "[2026-11-21 10:00:00]"


def joined_state(members=("ann", "bob", "cy")):
    """A state as after logging in as ann and joining #general with MEMBERS."""
    s = ChatState()
    s.observe("* hello ann! /help lists the commands")
    assert s.observe(f"* you joined #general: {len(members)} users here") is True  # ask for /roominfo
    s.observe(f"* #general: {len(members)} users: {', '.join(members)}")
    return s


def test_chat_state_follows_the_server():
    s = joined_state()
    assert (s.name, s.room, s.count) == ("ann", "general", 3)
    assert s.members == {"ann", "bob", "cy"}
    s.observe("* you are now known as anna")
    s.observe("* you left #general; you are in the hall (/list shows rooms)")
    assert (s.name, s.room, s.members, s.count) == ("anna", None, set(), 0)


def test_chat_state_follows_room_notices():
    s = joined_state(("ann", "bob", "cy", "dan", "eve"))
    s.observe(f"{TS} #general --> dee has joined")
    s.observe(f"{TS} #general <-- bob has quit (bye)")
    s.observe(f"{TS} #general <-- dan has left")
    s.observe(f"{TS} #general <-- eve was kicked by ann (spam)")
    s.observe(f"{TS} #general -- cy is now known as cyd")
    s.observe(f"{TS} #general -- cyd set the topic: -- ann is now known as x")
    s.observe(f"{TS} #other --> zed has joined")
    s.observe(f"{TS} #other <-- cyd has left")
    assert s.members == {"ann", "cyd", "dee"} and s.count == 3


def test_actions_and_messages_that_look_like_notices_change_no_members():
    s = joined_state()
    for what in ("* dee has joined", "* bob has quit (bye)", "* bob has left", "* cy is now known as cyd",
                 "* bob --> dee has joined", "bob: <-- cy has left", "bob: -- cy is now known as cyd"):
        s.observe(f"{TS} #general {what}")
    assert s.members == {"ann", "bob", "cy"} and s.count == 3


def test_replayed_history_changes_no_members():
    s = joined_state(("ann", "bob"))
    s.observe("* last 4 messages of #general:")
    s.observe(f"{TS} #general --> old has joined")
    s.observe(f"{TS} #general old: from long ago")
    s.observe(f"{TS} #general <-- bob has left")
    s.observe(f"{TS} #general -- ann is now known as anne")
    s.observe("* end of history of #general")
    assert s.members == {"ann", "bob"} and s.count == 2
    s.observe(f"{TS} #general --> new has joined")  # live again after the replay
    assert s.members == {"ann", "bob", "new"} and s.count == 3
    s.observe("* last message of #general:")  # the server's wording for a single one
    s.observe(f"{TS} #general <-- new has left")
    s.observe("* end of history of #general")
    assert s.members == {"ann", "bob", "new"} and s.count == 3


def test_styles_for_line_kinds_and_mentions():
    assert style_line("! no such user: x", "ann") == [("! no such user: x", "error")]
    assert style_line("* 2 users online:", "ann") == [("* 2 users online:", "info")]
    line = "[2026-11-21 10:00:00] #general bob: hey Ann, look"
    segments = style_line(line, "ann")
    assert "".join(t for t, _ in segments) == line
    assert ("bob", nick_style("bob")) in segments and segments[-1][1] == "mention"
    own = style_line("[2026-11-21 10:00:00] #general ann: mine", "ann")
    assert ("ann", "self") in own
    assert nick_style("Bob") == nick_style("bob")  # stable, case ignored


def test_notices_are_styled_as_notices_and_actions_as_their_sender():
    for what in ("--> bob has joined", "<-- bob has quit (bye)", "<-- bob was kicked by cy (x)",
                 "-- bob is now known as rob", "-- cy set the topic: hi"):
        segments = style_line(f"{TS} #general {what}", "ann")
        assert segments[-1] == (what, "info"), segments
    # An action that reads like a notice is still the action of its sender.
    action = style_line(f"{TS} #general * alice has joined", "ann")
    assert "".join(t for t, _ in action) == f"{TS} #general * alice has joined"
    assert ("alice", nick_style("alice")) in action
    assert not any(style == "info" for _, style in action)
    assert style_line(f"{TS} #general * bob pokes Ann", "ann")[-1] == (" pokes Ann", "mention")
    assert ("ann", "self") in style_line(f"{TS} #general * ann waves", "ann")


def test_wrapped_segments_keep_their_styles():
    segments = [("[12:00] ", "time"), ("bob", "nick1"), (": " + "word " * 10, "normal")]
    rows = wrap_segments(segments, 20)
    assert "".join(t for row in rows for t, _ in row) == "".join(t for t, _ in segments)
    assert rows[0][0] == ("[12:00] ", "time") and rows[0][1] == ("bob", "nick1")
    assert all(style == "normal" for row in rows[1:] for _, style in row)
