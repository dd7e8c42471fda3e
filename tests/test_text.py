"""Sanitizing, decoding, and the name and room rules."""

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from pychat.text import (decode_line, fold, name_problem, room_name, room_problem, sanitize,
                         strip_telnet, unquote)


def is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


nasty = st.text(st.sampled_from(list("ab é中\t\x1b[]();0123456789m?P\\\x07\x9b\x9c\x90\x00\x7f\x85\r")), max_size=80)


@settings(max_examples=400)
@given(st.one_of(st.text(max_size=80), nasty))
def test_no_control_character_survives(text):
    clean = sanitize(text)
    assert not any(is_control(c) for c in clean)
    assert "\x1b" not in clean


@settings(max_examples=400)
@given(st.one_of(st.text(max_size=80), nasty))
def test_sanitize_is_idempotent(text):
    once = sanitize(text)
    assert sanitize(once) == once


@given(st.binary(max_size=200))
def test_decode_never_fails_and_is_clean(raw):
    line = decode_line(raw)
    assert not any(is_control(c) for c in line)


def test_escape_sequences_are_removed_whole():
    assert sanitize("a\x1b[31;1mred\x1b[0m") == "ared"
    assert sanitize("\x1b]0;evil title\x07ok") == "ok"
    assert sanitize("\x1b]8;;http://x\x1b\\link") == "link"
    assert sanitize("x\x9b2Jy") == "xy"
    assert sanitize("tab\there") == "tab here"
    assert sanitize("bell\x07") == "bell"
    assert sanitize("plain text") == "plain text"


def test_telnet_negotiation_is_removed():
    assert strip_telnet(b"\xff\xfd\x18\xff\xfb\x01hello") == b"hello"
    assert strip_telnet(b"a\xff\xfa\x18\x00xterm\xff\xf0b") == b"ab"
    assert strip_telnet(b"no iac") == b"no iac"


def test_invalid_utf8_becomes_replacement_character():
    assert decode_line(b"caf\xc3") == "caf\ufffd"
    assert decode_line("café".encode()) == "café"


def test_name_rules():
    for good in ["alice", "Bob_1", "a.b-c", "Ωμέγα", "名前", "x" * 20]:
        assert name_problem(good) is None, good
    for bad in ["", "x" * 21, "has space", "semi;colon", "at@", "emoji🙂"]:
        assert name_problem(bad) is not None, bad
    assert fold("ALICE") == fold("alice")
    assert fold("Straße") == fold("STRASSE")


def test_room_rules():
    assert room_name("#general") == "general"
    assert room_name("general") == "general"
    for good in ["general", "dev-ops", "a_b", "x" * 32, "café"]:
        assert room_problem(good) is None, good
    for bad in ["", "x" * 33, "a.b", "with space", "#"]:
        assert room_problem(room_name(bad) if bad != "#" else "") is not None, bad


def test_names_are_compared_in_one_normal_form():
    composed = unicodedata.normalize("NFC", "é")
    decomposed = unicodedata.normalize("NFD", "é")
    assert room_name(decomposed) == composed


def test_unquote_removes_one_pair():
    assert unquote('"hi there"') == "hi there"
    assert unquote('""x""') == '"x"'
    assert unquote('"') == '"'
    assert unquote("plain") == "plain"
