"""The IRC message layer: parsing, limits, formatting, tag escaping, CTCP, numerics.

The fixed cases are the ircdocs parser-tests corpus (msg-split, msg-join),
the examples of the IRCv3 message-tags spec and of Modern IRC; Hypothesis
shows the round trips and that no input raises anything but MessageError.
"""

import ast
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pychat.protocols.irc import message as irc
from pychat.protocols.irc.message import (
    CLIENT_TAGS_MAX,
    MAX_BODY,
    MAX_CLIENT_LINE,
    TAGS_MAX,
    TEXTS,
    Message,
    MessageError,
    action,
    ctcp,
    escape_tag_value,
    format_message,
    parse,
    prefix,
    unescape_tag_value,
)

# -- parser-tests msg-split: (input, tags, source, verb, params) --------------

MSG_SPLIT = [
    ("foo bar baz asdf", {}, None, "foo", ["bar", "baz", "asdf"]),
    (":coolguy foo bar baz asdf", {}, "coolguy", "foo", ["bar", "baz", "asdf"]),
    ("foo bar baz :asdf quux", {}, None, "foo", ["bar", "baz", "asdf quux"]),
    ("foo bar baz :", {}, None, "foo", ["bar", "baz", ""]),
    ("foo bar baz ::asdf", {}, None, "foo", ["bar", "baz", ":asdf"]),
    (":coolguy foo bar baz :asdf quux", {}, "coolguy", "foo", ["bar", "baz", "asdf quux"]),
    (":coolguy foo bar baz :  asdf quux ", {}, "coolguy", "foo", ["bar", "baz", "  asdf quux "]),
    (":coolguy PRIVMSG bar :lol :) ", {}, "coolguy", "PRIVMSG", ["bar", "lol :) "]),
    (":coolguy foo bar baz :", {}, "coolguy", "foo", ["bar", "baz", ""]),
    (":coolguy foo bar baz :  ", {}, "coolguy", "foo", ["bar", "baz", "  "]),
    ("@a=b;c=32;k;rt=ql7 foo", {"a": "b", "c": "32", "k": "", "rt": "ql7"}, None, "foo", []),
    (r"@a=b\\and\nk;c=72\s45;d=gh\:764 foo",
     {"a": "b\\and\nk", "c": "72 45", "d": "gh;764"}, None, "foo", []),
    ("@c;h=;a=b :quux ab cd", {"c": "", "h": "", "a": "b"}, "quux", "ab", ["cd"]),
    (":src JOIN #chan", {}, "src", "JOIN", ["#chan"]),
    (":src JOIN :#chan", {}, "src", "JOIN", ["#chan"]),
    (":src AWAY", {}, "src", "AWAY", []),
    (":src AWAY ", {}, "src", "AWAY", []),
    (":cool\tguy foo bar baz", {}, "cool\tguy", "foo", ["bar", "baz"]),
    (":coolguy!ag@net\x035w\x03ork.admin PRIVMSG foo :bar baz", {},
     "coolguy!ag@net\x035w\x03ork.admin", "PRIVMSG", ["foo", "bar baz"]),
    (":coolguy!~ag@n\x02et\x0305w\x0fork.admin PRIVMSG foo :bar baz", {},
     "coolguy!~ag@n\x02et\x0305w\x0fork.admin", "PRIVMSG", ["foo", "bar baz"]),
    ("@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4= :irc.example.com COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""},
     "irc.example.com", "COMMAND", ["param1", "param2", "param3 param3"]),
    (":irc.example.com COMMAND param1 param2 :param3 param3", {},
     "irc.example.com", "COMMAND", ["param1", "param2", "param3 param3"]),
    ("@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4 COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""},
     None, "COMMAND", ["param1", "param2", "param3 param3"]),
    ("COMMAND", {}, None, "COMMAND", []),
    (r"@foo=\\\\\:\\s\s\r\n COMMAND", {"foo": "\\\\;\\s \r\n"}, None, "COMMAND", []),
    (":gravel.mozilla.org 432  #momo :Erroneous Nickname: Illegal characters", {},
     "gravel.mozilla.org", "432", ["#momo", "Erroneous Nickname: Illegal characters"]),
    (":gravel.mozilla.org MODE #tckk +n ", {}, "gravel.mozilla.org", "MODE", ["#tckk", "+n"]),
    (":services.esper.net MODE #foo-bar +o foobar  ", {},
     "services.esper.net", "MODE", ["#foo-bar", "+o", "foobar"]),
    (r"@tag1=value\\ntest COMMAND", {"tag1": "value\\ntest"}, None, "COMMAND", []),
    (r"@tag1=value\1 COMMAND", {"tag1": "value1"}, None, "COMMAND", []),
    ("@tag1=value1\\ COMMAND", {"tag1": "value1"}, None, "COMMAND", []),
    ("@tag1=1;tag2=3;tag3=4;tag1=5 COMMAND", {"tag1": "5", "tag2": "3", "tag3": "4"}, None, "COMMAND", []),
    ("@tag1=1;tag2=3;tag3=4;tag1=5;vendor/tag2=8 COMMAND",
     {"tag1": "5", "tag2": "3", "tag3": "4", "vendor/tag2": "8"}, None, "COMMAND", []),
    (":SomeOp MODE #channel :+i", {}, "SomeOp", "MODE", ["#channel", "+i"]),
    (":SomeOp MODE #channel +oo SomeUser :AnotherUser", {},
     "SomeOp", "MODE", ["#channel", "+oo", "SomeUser", "AnotherUser"]),
]


@pytest.mark.parametrize("line, tags, source, verb, params", MSG_SPLIT)
def test_parser_tests_msg_split(line, tags, source, verb, params):
    msg = parse(line.encode())
    assert msg == Message(tags, source, verb.upper(), tuple(params))


@pytest.mark.parametrize("line, tags, source, verb, params", MSG_SPLIT)
def test_line_endings_are_optional(line, tags, source, verb, params):
    bare = parse(line.encode())
    assert parse(line.encode() + b"\r\n") == bare
    assert parse(line.encode() + b"\n") == bare


# -- IRCv3 message-tags and Modern IRC examples -------------------------------

SPEC_EXAMPLES = [
    (":nick!ident@host.com PRIVMSG me :Hello", {}, "nick!ident@host.com", "PRIVMSG", ["me", "Hello"]),
    ("@aaa=bbb;ccc;example.com/ddd=eee :nick!ident@host.com PRIVMSG me :Hello",
     {"aaa": "bbb", "ccc": "", "example.com/ddd": "eee"}, "nick!ident@host.com", "PRIVMSG", ["me", "Hello"]),
    ("@example-tag=example-value PRIVMSG #channel :Message",
     {"example-tag": "example-value"}, None, "PRIVMSG", ["#channel", "Message"]),
    ("@+example-client-tag=example-value PRIVMSG #channel :Message",
     {"+example-client-tag": "example-value"}, None, "PRIVMSG", ["#channel", "Message"]),
    ("@+icon=https://example.com/favicon.png :url_bot!bot@example.com PRIVMSG #channel :Example.com: A News Story",
     {"+icon": "https://example.com/favicon.png"}, "url_bot!bot@example.com", "PRIVMSG",
     ["#channel", "Example.com: A News Story"]),
    ("@+example.com/foo=bar :irc.example.com NOTICE #channel :A vendor-prefixed client-only tagged message",
     {"+example.com/foo": "bar"}, "irc.example.com", "NOTICE",
     ["#channel", "A vendor-prefixed client-only tagged message"]),
    (r"@+example=raw+:=,escaped\:\s\\ :irc.example.com NOTICE #channel :Message",
     {"+example": "raw+:=,escaped; \\"}, "irc.example.com", "NOTICE", ["#channel", "Message"]),
    ("@+example-client-tag=example-value TAGMSG @#channel",
     {"+example-client-tag": "example-value"}, None, "TAGMSG", ["@#channel"]),
    ("@label=123;msgid=abc;+example-client-tag=example-value :nick!user@example.com TAGMSG #channel",
     {"label": "123", "msgid": "abc", "+example-client-tag": "example-value"},
     "nick!user@example.com", "TAGMSG", ["#channel"]),
    ("@unknown-tag TAGMSG #channel", {"unknown-tag": ""}, None, "TAGMSG", ["#channel"]),
    # Modern IRC, "Parameters"
    (":irc.example.com CAP * LIST :", {}, "irc.example.com", "CAP", ["*", "LIST", ""]),
    ("CAP * LS :multi-prefix sasl", {}, None, "CAP", ["*", "LS", "multi-prefix sasl"]),
    ("CAP REQ :sasl message-tags foo", {}, None, "CAP", ["REQ", "sasl message-tags foo"]),
    (":dan!d@localhost PRIVMSG #chan :Hey!", {}, "dan!d@localhost", "PRIVMSG", ["#chan", "Hey!"]),
    (":dan!d@localhost PRIVMSG #chan Hey!", {}, "dan!d@localhost", "PRIVMSG", ["#chan", "Hey!"]),
    (":dan!d@localhost PRIVMSG #chan ::-)", {}, "dan!d@localhost", "PRIVMSG", ["#chan", ":-)"]),
    ("@id=234AB :dan!d@localhost PRIVMSG #chan :Hey what's up!",
     {"id": "234AB"}, "dan!d@localhost", "PRIVMSG", ["#chan", "Hey what's up!"]),
]


@pytest.mark.parametrize("line, tags, source, verb, params", SPEC_EXAMPLES)
def test_spec_examples(line, tags, source, verb, params):
    assert parse(line.encode(), max_tags=TAGS_MAX) == Message(tags, source, verb, tuple(params))


def test_spec_escaping_example():
    assert escape_tag_value("raw+:=,escaped; \\") == r"raw+:=,escaped\:\s\\"


def test_spec_too_many_tags_get_417():
    line = "@" + ";".join(f"+tag{i}" for i in range(1, 5001)) + " TAGMSG #channel"
    with pytest.raises(MessageError) as err:
        parse(line.encode())
    assert (err.value.numeric, err.value.text) == ("417", "Input line was too long")


# -- parsing decisions --------------------------------------------------------


@pytest.mark.parametrize("line", [b"", b" ", b"     ", b"\r\n", b"\n", b"   \r\n"])
def test_blank_lines_are_none(line):
    assert parse(line) is None


@pytest.mark.parametrize("line, reason", [
    (b":nick", "source without a command"),
    (b":nick!u@h   ", "source without a command"),
    (b"@a=b", "tags without a command"),
    (b"@a=b   ", "tags without a command"),
    (b"@a=b :nick", "source without a command"),
    (b": PRIVMSG #a :hi", "empty source"),
    (b":src :trailing only", "no command after the source"),
    (b"PRIVMSG #a :hi\x00there", "NUL, CR or LF inside the line"),
    (b"PRIVMSG #a :one\rtwo", "NUL, CR or LF inside the line"),
    (b"PRIVMSG #a :one\ntwo", "NUL, CR or LF inside the line"),
    (b"@a=\x00 PING", "NUL, CR or LF inside the line"),
    (b"PING x\r\r\n", "NUL, CR or LF inside the line"),
])
def test_malformed_lines_carry_no_numeric(line, reason):
    with pytest.raises(MessageError) as err:
        parse(line)
    assert err.value.numeric is None
    assert err.value.text == reason


def test_the_command_is_upper_cased_in_ascii_only():
    assert parse(b"privMsg #a b").command == "PRIVMSG"
    # Not validated: the session answers 421 with it.
    assert parse(b"foo-bar\xc3\xa9").command == "FOO-BAR\xe9"
    assert parse(b"001 me :hi").command == "001"


def test_fifteen_and_more_params_are_all_kept():
    words = [f"p{i}" for i in range(1, 21)]
    msg = parse(("CMD " + " ".join(words) + " :last one").encode())
    assert msg.params == (*words, "last one")
    assert len(msg.params) == 21


def test_runs_of_spaces_separate_once():
    msg = parse(b"@a=1   :src    CMD   x    y   :  z  ")
    assert msg == Message({"a": "1"}, "src", "CMD", ("x", "y", "  z  "))


def test_undecodable_bytes_become_replacement_characters():
    msg = parse(b"PRIVMSG #a :caf\xe9 \xff")
    assert msg.params == ("#a", "caf\ufffd \ufffd")


def test_control_characters_are_kept_for_the_caller():
    msg = parse(b"PRIVMSG #a :\x01ACTION waves\x01 \x03\x1b[2J\x7f")
    assert msg.params[1] == "\x01ACTION waves\x01 \x03\x1b[2J\x7f"


def test_empty_tag_keys_are_skipped_not_refused():
    msg = parse(b"@;a=1;;=x;b=\\s; CMD")
    assert msg.tags == {"a": "1", "b": " "}
    assert parse(b"@ CMD").tags == {}


def test_an_undecodable_tag_value_is_dropped_not_replaced():
    assert parse(b"@a=\xff\xfe;b=ok CMD").tags == {"a": "", "b": "ok"}


def test_tags_of_each_message_are_its_own():
    one, two = parse(b"PING"), parse(b"PING")
    one.tags["x"] = "y"
    assert two.tags == {}


# -- limits -------------------------------------------------------------------


def body_of(size: int) -> bytes:
    """A PRIVMSG of exactly SIZE bytes, its text mostly two-byte characters."""
    head = b"PRIVMSG #room :"
    room = size - len(head)
    text = "\u00e9" * (room // 2) + "x" * (room % 2)
    line = head + text.encode()
    assert len(line) == size
    return line


def tags_section_of(size: int) -> bytes:
    """'@', tag data, ' ': SIZE bytes in all."""
    data = b"+a=" + b"v" * (size - 5)
    section = b"@" + data + b" "
    assert len(section) == size
    return section


def assert_too_long(line: bytes, **kw):
    with pytest.raises(MessageError) as err:
        parse(line, **kw)
    assert err.value.numeric == irc.ERR_INPUTTOOLONG
    assert err.value.text == "Input line was too long"


def test_body_limit_is_510_bytes_counted_in_bytes():
    assert MAX_BODY == 510
    assert parse(body_of(510)).params[1].startswith("\u00e9")
    assert parse(body_of(510) + b"\r\n") == parse(body_of(510))
    assert_too_long(body_of(511))
    assert_too_long(body_of(511) + b"\r\n")


def test_client_tags_limit_is_4096_bytes_with_at_and_space():
    assert CLIENT_TAGS_MAX == 4096
    assert len(parse(tags_section_of(4096) + b"PING").tags["+a"]) == 4091
    assert_too_long(tags_section_of(4097) + b"PING")


def test_server_tags_limit_is_8191_bytes_with_at_and_space():
    assert TAGS_MAX == 8191
    assert len(parse(tags_section_of(8191) + b"PING", max_tags=TAGS_MAX).tags["+a"]) == 8186
    assert_too_long(tags_section_of(8192) + b"PING", max_tags=TAGS_MAX)


def test_tags_and_body_are_limited_separately():
    longest = tags_section_of(4096) + body_of(510)
    assert len(longest) == MAX_CLIENT_LINE == 4606
    assert parse(longest).command == "PRIVMSG"
    assert_too_long(tags_section_of(4096) + body_of(511))
    assert_too_long(tags_section_of(4097) + body_of(20))


def test_an_overlong_tags_only_line_is_too_long_not_malformed():
    assert_too_long(b"@" + b"a" * 4095)
    with pytest.raises(MessageError) as err:
        parse(b"@" + b"a" * 4094)
    assert err.value.numeric is None


# -- formatting ---------------------------------------------------------------

# parser-tests msg-join: (tags, source, verb, params, matches)
MSG_JOIN = [
    ({}, None, "foo", ["bar", "baz", "asdf"], ["foo bar baz asdf", "foo bar baz :asdf"]),
    ({}, "src", "AWAY", [], [":src AWAY"]),
    ({}, "src", "AWAY", [""], [":src AWAY :"]),
    ({}, "coolguy", "foo", ["bar", "baz", "asdf"], [":coolguy foo bar baz asdf", ":coolguy foo bar baz :asdf"]),
    ({}, None, "foo", ["bar", "baz", "asdf quux"], ["foo bar baz :asdf quux"]),
    ({}, None, "foo", ["bar", "baz", ""], ["foo bar baz :"]),
    ({}, None, "foo", ["bar", "baz", ":asdf"], ["foo bar baz ::asdf"]),
    ({}, "coolguy", "foo", ["bar", "baz", "asdf quux"], [":coolguy foo bar baz :asdf quux"]),
    ({}, "coolguy", "foo", ["bar", "baz", "  asdf quux "], [":coolguy foo bar baz :  asdf quux "]),
    ({}, "coolguy", "PRIVMSG", ["bar", "lol :) "], [":coolguy PRIVMSG bar :lol :) "]),
    ({}, "coolguy", "foo", ["bar", "baz", ""], [":coolguy foo bar baz :"]),
    ({}, "coolguy", "foo", ["bar", "baz", "  "], [":coolguy foo bar baz :  "]),
    ({}, "coolguy", "foo", ["b\tar", "baz"], [":coolguy foo b\tar baz", ":coolguy foo b\tar :baz"]),
    ({"asd": ""}, "coolguy", "foo", ["bar", "baz", "  "], ["@asd :coolguy foo bar baz :  "]),
    ({"a": "b\\and\nk", "d": "gh;764"}, None, "foo", [],
     [r"@a=b\\and\nk;d=gh\:764 foo", r"@d=gh\:764;a=b\\and\nk foo"]),
    ({"a": "b\\and\nk", "d": "gh;764"}, None, "foo", ["par1", "par2"],
     [r"@a=b\\and\nk;d=gh\:764 foo par1 par2", r"@a=b\\and\nk;d=gh\:764 foo par1 :par2"]),
    ({"foo": "\\\\;\\s \r\n"}, None, "COMMAND", [], [r"@foo=\\\\\:\\s\s\r\n COMMAND"]),
]


@pytest.mark.parametrize("tags, source, verb, params, matches", MSG_JOIN)
def test_parser_tests_msg_join(tags, source, verb, params, matches):
    out = format_message(verb, *params, source=source, tags=tags)
    assert out.endswith(b"\r\n")
    assert out[:-2].decode() in matches


def test_a_typical_relayed_privmsg():
    src = prefix("alice", "alice", "127.0.0.1")
    assert src == "alice!alice@127.0.0.1"
    out = format_message("PRIVMSG", "#general", "hello there", source=src,
                         tags={"time": "2026-05-09T07:35:25.123Z"})
    assert out == b"@time=2026-05-09T07:35:25.123Z :alice!alice@127.0.0.1 PRIVMSG #general :hello there\r\n"
    assert format_message("PRIVMSG", "#general", "hi") == b"PRIVMSG #general hi\r\n"
    assert format_message("PING") == b"PING\r\n"
    assert format_message("PRIVMSG", "#a", "caf\u00e9") == "PRIVMSG #a caf\u00e9\r\n".encode()


@pytest.mark.parametrize("text", ["a\r\nQUIT :bye", "a\nb", "a\rb", "a\x00b", "\r\n"])
def test_line_breaks_in_text_become_spaces(text):
    out = format_message("PRIVMSG", "#a", text, source="n!u@h")
    assert out.count(b"\r") == 1 and out.count(b"\n") == 1 and b"\x00" not in out
    assert out.endswith(b"\r\n")
    expected = text.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    assert parse(out).params == ("#a", expected)


@pytest.mark.parametrize("bad", ["", ":x", "a b", "a\rb", "a\nb", "a\x00b"])
def test_a_bad_middle_parameter_is_a_programming_error(bad):
    with pytest.raises(ValueError):
        format_message("PRIVMSG", bad, "text")


@pytest.mark.parametrize("bad", ["", "a b", "n!u@h\r\nQUIT", "n\x00"])
def test_a_bad_source_is_a_programming_error(bad):
    with pytest.raises(ValueError):
        format_message("PRIVMSG", "#a", "text", source=bad)


@pytest.mark.parametrize("bad", ["", "PRIV MSG", "PRIVMSG\r\n", ":PRIVMSG", "PR\u0130VMSG"])
def test_a_bad_command_is_a_programming_error(bad):
    with pytest.raises(ValueError):
        format_message(bad, "#a", "text")


@pytest.mark.parametrize("bad", ["", "a b", "a;b", "a=b", "a\r", "a\n", "a\x00"])
def test_a_bad_tag_key_is_a_programming_error(bad):
    with pytest.raises(ValueError):
        format_message("PING", "x", tags={bad: "v"})


def test_a_lone_surrogate_cannot_stop_a_line():
    assert format_message("PRIVMSG", "#a", "bad \udcff") == b"PRIVMSG #a :bad ?\r\n"


def test_escaping_of_each_special_character():
    assert escape_tag_value("a;b c\\d\re\nf\x00g") == r"a\:b\sc\\d\re\nf\sg"
    assert escape_tag_value("plain-2026:05") == "plain-2026:05"
    assert unescape_tag_value(r"a\:b\sc\\d\re\nf") == "a;b c\\d\re\nf"
    assert unescape_tag_value("end\\") == "end"
    assert unescape_tag_value(r"\b\x") == "bx"
    assert unescape_tag_value(r"\\\\n") == "\\\\n"


# -- Hypothesis: round trips and robustness -----------------------------------

TEXT_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
middle_param = st.text(TEXT_CHARS, min_size=1, max_size=12).filter(
    lambda p: " " not in p and not p.startswith(":"))
last_param = st.text(TEXT_CHARS, max_size=40)
commands = st.one_of(
    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"), min_size=1, max_size=10),
    st.integers(0, 999).map(lambda n: f"{n:03d}"),
)
sources = st.none() | st.text(TEXT_CHARS, min_size=1, max_size=20).filter(lambda s: " " not in s)
tag_keys = st.from_regex(r"\A\+?([a-z0-9.-]{1,8}/)?[A-Za-z0-9-]{1,10}\Z")
tag_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
tag_maps = st.dictionaries(tag_keys, tag_values, max_size=4)


def body_length(line: bytes) -> int:
    """Bytes after the tags section, without the CRLF."""
    line = line[:-2]
    return len(line) - (line.index(b" ") + 1 if line.startswith(b"@") else 0)


@settings(max_examples=300)
@given(commands, st.lists(middle_param, max_size=16), st.none() | last_param, sources, tag_maps)
def test_format_then_parse_gives_the_message_back(command, middle, last, source, tags):
    params = (*middle, last) if last is not None else tuple(middle)
    out = format_message(command, *params, source=source, tags=tags)
    assert out.endswith(b"\r\n") and out.count(b"\n") == 1 and b"\r" not in out[:-2] and b"\x00" not in out
    if body_length(out) > MAX_BODY:
        with pytest.raises(MessageError) as err:
            parse(out, max_tags=TAGS_MAX)
        assert err.value.numeric == "417"
        return
    assert parse(out, max_tags=TAGS_MAX) == Message(tags, source, command.upper(), params)


@given(tag_values)
def test_tag_escaping_round_trips(value):
    escaped = escape_tag_value(value)
    assert not set(escaped) & set("; \r\n\x00")
    assert not escaped.endswith("\\") or escaped.endswith("\\\\")
    assert unescape_tag_value(escaped) == value


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_escaping_never_lets_a_breaking_character_through(value):
    escaped = escape_tag_value(value)
    assert not set(escaped) & set("; \r\n\x00")
    assert unescape_tag_value(escaped) == value.replace("\x00", " ")


def check_parse_total(line: bytes, **kw):
    """parse() returns None or a Message, or raises MessageError: nothing else."""
    try:
        msg = parse(line, **kw)
    except MessageError as err:
        assert err.numeric in (None, "417")
        return
    if msg is not None:
        assert isinstance(msg, Message) and msg.command
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in msg.tags.items())
        assert all(isinstance(p, str) for p in msg.params)


IRCISH = st.lists(st.sampled_from([
    b"@", b":", b" ", b"  ", b";", b"=", b"\\", b"\\s", b"+", b"/", b"a", b"PRIVMSG", b"#c", b"001",
    b"\x00", b"\r", b"\n", b"\r\n", b"\x01", b"\xc3\xa9", b"\xff", b"\xc3", b"\t", b"!", b"~",
]), max_size=60).map(b"".join)


@settings(max_examples=500)
@given(st.binary(max_size=600) | IRCISH)
def test_no_bytes_raise_anything_but_message_error(line):
    check_parse_total(line)
    check_parse_total(line, max_tags=TAGS_MAX)


@settings(max_examples=50)
@given(st.integers(4000, 4200), st.integers(480, 540), st.sampled_from([b"", b"\r\n", b" ", b"\x00"]))
def test_lines_near_the_limits_raise_nothing_but_message_error(tags_size, body_size, tail):
    check_parse_total(tags_section_of(tags_size) + body_of(body_size) + tail)


@settings(max_examples=300)
@given(st.binary(max_size=300) | IRCISH)
def test_whatever_parses_formats_back_to_the_same_message(line):
    """parse, format, parse again: the same message (or a 417 if it grew)."""
    try:
        msg = parse(line, max_tags=TAGS_MAX)
    except MessageError:
        return
    if msg is None or not (msg.command.isascii() and msg.command.isalnum()):
        return
    out = format_message(msg.command, *msg.params, source=msg.source, tags=msg.tags)
    if body_length(out) > MAX_BODY:  # U+FFFD is three bytes for one bad byte
        assert_too_long(out, max_tags=TAGS_MAX)
    else:
        assert parse(out, max_tags=TAGS_MAX) == msg


# -- CTCP ---------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("\x01ACTION waves\x01", ("ACTION", "waves")),
    ("\x01ACTION waves", ("ACTION", "waves")),
    ("\x01ACTION waves at  everyone \x01", ("ACTION", "waves at  everyone ")),
    ("\x01VERSION\x01", ("VERSION", "")),
    ("\x01PING 1473523796 918320\x01", ("PING", "1473523796 918320")),
    ("\x01action lower\x01", ("ACTION", "lower")),
    ("\x01ACTION a\x01 trailing garbage", ("ACTION", "a")),
    ("hello", None),
    ("", None),
    ("\x01", None),
    ("\x01\x01", None),
    ("\x01 no command\x01", None),
    (" \x01ACTION not at the start\x01", None),
])
def test_ctcp(text, expected):
    assert ctcp(text) == expected


def test_action_builds_and_round_trips():
    assert action("waves") == "\x01ACTION waves\x01"
    assert action("") == "\x01ACTION\x01"
    assert action("sneaks \x01VERSION\x01 in") == "\x01ACTION sneaks VERSION in\x01"
    assert ctcp(action("waves at  you")) == ("ACTION", "waves at  you")
    line = format_message("PRIVMSG", "#a", action("waves"), source="n!u@h")
    assert ctcp(parse(line).params[-1]) == ("ACTION", "waves")


# -- numerics -----------------------------------------------------------------

# Every numeric the IRC front end needs, by code (its name is checked below).
NEEDED = (
    [f"{n:03d}" for n in range(1, 6)]
    + "221 251 252 253 254 255 265 266 301 302 303 305 306".split()
    + [str(n) for n in range(311, 320)]
    + "321 322 323 324 329 330 331 332 333 336 337 341 351 352 353 354 364 365 366 367 368 369 371 372 374 375 376 381 391".split()
    + "400 401 402 403 404 406 409 410 411 412 417 421 422 431 432 433 436 437 441 442 443".split()
    + "451 461 462 464 465 467 471 472 473 474 475 476 477 479 481 482 483 491".split()
    + "501 502 524 525 670 671 691 696 704 705 706".split()
    + [str(n) for n in range(900, 909)]
)


def numerics() -> dict[str, str]:
    return {name: code for name, code in vars(irc).items() if name.startswith(("RPL_", "ERR_"))}


def test_numerics_cover_what_the_server_needs_once_each():
    table = numerics()
    codes = list(table.values())
    assert all(len(code) == 3 and code.isdigit() for code in codes)
    assert len(codes) == len(set(codes)), "two names for one numeric"
    assert sorted(codes) == sorted(NEEDED)


def test_numeric_names_and_texts():
    assert (irc.RPL_WELCOME, irc.RPL_ISUPPORT, irc.ERR_NOSUCHNICK, irc.ERR_UNKNOWNCOMMAND) == ("001", "005", "401", "421")
    assert (irc.ERR_NICKNAMEINUSE, irc.ERR_NEEDMOREPARAMS, irc.RPL_SASLSUCCESS) == ("433", "461", "903")
    assert TEXTS[irc.ERR_UNKNOWNCOMMAND] == "Unknown command"
    assert TEXTS[irc.ERR_INPUTTOOLONG] == "Input line was too long"
    assert TEXTS[irc.RPL_ENDOFMOTD] == "End of /MOTD command."
    assert set(TEXTS) <= set(numerics().values())
    assert all(text and "\r" not in text and "\n" not in text for text in TEXTS.values())


def test_a_numeric_reply_formats():
    out = format_message(irc.ERR_UNKNOWNCOMMAND, "alice", "FOO", TEXTS[irc.ERR_UNKNOWNCOMMAND], source="irc.example")
    assert out == b":irc.example 421 alice FOO :Unknown command\r\n"


# -- standard library only ----------------------------------------------------


def test_the_message_module_imports_only_the_standard_library():
    """It must land unchanged wherever the rest of the package moves."""
    path = Path(irc.__file__)
    tree = ast.parse(path.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            modules.add(node.module.split(".")[0])
    assert modules, "no imports found: the check reads the wrong file"
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules
