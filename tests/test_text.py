"""Sanitizing, decoding, and the name and room rules."""

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from pychat.core.confusables import LOOKALIKES
from pychat.core.text import (MAX_NAME, decode_line, fold, name_key, name_problem, normalize_name, room_name,
                         room_problem, sanitize, script_of, strip_telnet, unquote)

ZWJ, ZWNJ = "\u200d", "\u200c"
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"           # man, woman, girl
RAINBOW_FLAG = "\U0001f3f3\ufe0f\u200d\U0001f308"                # white flag, VS16, rainbow
HEART_ON_FIRE = "\u2764\ufe0f\u200d\U0001f525"
TECHNOLOGIST = "\U0001f9d1\U0001f3fd\u200d\U0001f4bb"            # person, skin tone, laptop
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"      # mi-khaham, with its ZWNJ
DEVANAGARI = "\u0915\u094d\u200d\u0937"                           # ka, virama, ZWJ, ssa: half form
# Visible number signs drawn over the following digits: Cf, yet kept.
VISIBLE_FORMAT = set("\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd")


def is_control(ch: str) -> bool:
    o = ord(ch)
    return o < 0x20 or 0x7F <= o <= 0x9F


def is_pictograph(ch: str) -> bool:
    return unicodedata.category(ch) == "So"


def joining_script(ch: str) -> str:
    """The script word of a letter or mark of a script that spells with joiners, else ''."""
    if unicodedata.category(ch)[0] not in "LM":
        return ""
    word = unicodedata.name(ch, "").split(" ")[0]
    return word if word in {"ARABIC", "SYRIAC", "NKO", "MONGOLIAN", "DEVANAGARI", "BENGALI", "GURMUKHI",
                            "GUJARATI", "ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "SINHALA"} else ""


def joiner_allowed(text: str, i: int) -> bool:
    """Is the joiner at I inside an emoji ZWJ sequence or between two letters of a joining script?"""
    before, after = text[i - 1:i], text[i + 1:i + 2]
    if not before or not after:
        return False
    if text[i] == ZWJ and is_pictograph(after):
        base = text[i - 2:i - 1] if before == "\ufe0f" or "\U0001f3fb" <= before <= "\U0001f3ff" else before
        if base and is_pictograph(base):
            return True
    return joining_script(before) != "" and joining_script(before) == joining_script(after)


def invisible_leftovers(text: str) -> list[str]:
    """Format, bidi, zero-width and separator characters of TEXT outside the allowed cases."""
    tag_spans = [m.span() for m in re.finditer("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f", text)]
    bad = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch) not in ("Cf", "Cs", "Zl", "Zp") or ch in VISIBLE_FORMAT:
            continue
        if ch in (ZWJ, ZWNJ) and joiner_allowed(text, i):
            continue
        if "\U000e0020" <= ch <= "\U000e007f" and any(a < i < b for a, b in tag_spans):
            continue
        bad.append(f"U+{ord(ch):04X}")
    return bad


nasty = st.text(st.sampled_from(list("ab é中\t\x1b[]();0123456789m?P\\\x07\x9b\x9c\x90\x00\x7f\x85\r")), max_size=80)
# Emoji parts, joiners, tags, bidi and zero-width characters, joining-script letters.
format_soup = st.text(st.sampled_from([
    "a", "b", " ", "\x1b", "\t", ZWJ, ZWNJ, "\u200b", "\u200e", "\u200f", "\u202a", "\u202e", "\u2066", "\u2069",
    "\u061c", "\u00ad", "\u2060", "\u2064", "\ufeff", "\u180e", "\ufff9", "\u2028", "\u2029", "\u00a0",
    "\ufe0f", "\U0001f3fb", "\U0001f468", "\U0001f469", "\u2764", "\U0001f525", "\U0001f3f4", "\U0001f3f3",
    "\U000e0001", "\U000e0020", "\U000e0067", "\U000e007f", "\U000e0100", "\u0645", "\u06cc", "\u0915",
    "\u094d", "\u0600", "\U0001d173", "\U00013430", "\ud800",
]), max_size=60)
any_text = st.one_of(st.text(max_size=80), nasty, format_soup)


@settings(max_examples=400)
@given(any_text)
def test_no_control_character_survives(text):
    clean = sanitize(text)
    assert not any(is_control(c) for c in clean)
    assert "\x1b" not in clean


@settings(max_examples=600)
@given(any_text)
def test_no_invisible_character_survives_outside_emoji_and_joining_scripts(text):
    assert invisible_leftovers(sanitize(text)) == []


@settings(max_examples=600)
@given(any_text)
def test_sanitize_is_idempotent(text):
    once = sanitize(text)
    assert sanitize(once) == once


def reserved_for_invisibles(ch: str) -> bool:
    """Unassigned code points in the blocks of invisible characters, removed as they are."""
    o = ord(ch)
    return (o == 0x2065 or 0xFFF0 <= o <= 0xFFF8 or 0xE0000 <= o <= 0xE001F or 0xE0080 <= o <= 0xE00FF
            or 0xE01F0 <= o <= 0xE0FFF)


@settings(max_examples=300)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp")).filter(
    lambda c: not reserved_for_invisibles(c)), max_size=80))
def test_text_without_control_or_format_characters_is_left_alone(text):
    assert sanitize(text) == text


def test_unassigned_code_points_reserved_for_invisibles_are_removed():
    assert sanitize("a⁥b￰c󠂀d󠿿e") == "abcde"


@given(st.one_of(st.binary(max_size=200), any_text.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_decode_never_fails_and_is_clean(raw):
    line = decode_line(raw)
    assert not any(is_control(c) for c in line)
    assert invisible_leftovers(line) == []
    line.encode()  # always sendable as UTF-8


def test_escape_sequences_are_removed_whole():
    assert sanitize("a\x1b[31;1mred\x1b[0m") == "ared"
    assert sanitize("\x1b]0;evil title\x07ok") == "ok"
    assert sanitize("\x1b]8;;http://x\x1b\\link") == "link"
    assert sanitize("x\x9b2Jy") == "xy"
    assert sanitize("tab\there") == "tab here"
    assert sanitize("bell\x07") == "bell"
    assert sanitize("plain text") == "plain text"


def test_bidi_and_zero_width_characters_are_removed():
    assert sanitize("evil\u202etxt.exe") == "eviltxt.exe"
    assert sanitize("\u2066a\u2069 \u200eb\u200f \u061cc") == "a b c"
    assert sanitize("zero\u200bwidth\u2060joiner\ufeff") == "zerowidthjoiner"
    assert sanitize("soft\u00adhyphen") == "softhyphen"
    assert sanitize("x\ufff9ruby\ufffay\ufffb") == "xrubyy"
    assert decode_line("a\u202eb\u200bc".encode()) == "abc"


def test_line_and_paragraph_separators_become_spaces():
    assert sanitize("one\u2028two\u2029three") == "one two three"
    assert decode_line("a\u2028b".encode()) == "a b"


def test_emoji_sequences_survive_intact():
    for seq in (FAMILY, RAINBOW_FLAG, HEART_ON_FIRE, TECHNOLOGIST, ENGLAND):
        assert sanitize(f"look {seq}!") == f"look {seq}!", seq
        assert decode_line(seq.encode()) == seq


def test_joiners_outside_emoji_sequences_are_removed():
    assert sanitize("a\u200db") == "ab"
    assert sanitize("a\u200cb") == "ab"
    assert sanitize("\u200d\U0001f468") == "\U0001f468"       # nothing to join on the left
    assert sanitize("\U0001f468\u200d") == "\U0001f468"       # nor on the right
    assert sanitize("\U0001f468\u200d\u200d\U0001f469") == "\U0001f468\U0001f469"
    assert sanitize("\U0001f468\u200da") == "\U0001f468a"


def test_tags_survive_only_in_an_emoji_tag_sequence():
    assert sanitize("x\U000e0041\U000e0042y") == "xy"
    assert sanitize("\U000e0001\U000e0065\U000e006e") == ""                 # a language tag
    # Without its cancel tag the flag is broken: the tags go, the black flag stays.
    assert sanitize("\U0001f3f4\U000e0067\U000e0062") == "\U0001f3f4"


def test_joiners_that_spell_a_word_are_kept():
    assert sanitize(PERSIAN) == PERSIAN
    assert sanitize(DEVANAGARI) == DEVANAGARI
    # Between letters of two different scripts, or at the end of a word, they go.
    assert sanitize("\u0645\u200ca") == "\u0645a"
    assert sanitize("\u0915\u094d\u200d") == "\u0915\u094d"


def test_visible_characters_are_kept():
    assert sanitize("non\u00a0breaking\u3000space") == "non\u00a0breaking\u3000space"
    assert sanitize("\u0600\u0661\u0662") == "\u0600\u0661\u0662"   # Arabic number sign over 12
    assert sanitize("e\u0301\ufe0e") == "e\u0301\ufe0e"              # marks and variation selectors


def test_telnet_negotiation_is_removed():
    assert strip_telnet(b"\xff\xfd\x18\xff\xfb\x01hello") == b"hello"
    assert strip_telnet(b"a\xff\xfa\x18\x00xterm\xff\xf0b") == b"ab"
    assert strip_telnet(b"no iac") == b"no iac"


def test_invalid_utf8_becomes_replacement_character():
    assert decode_line(b"caf\xc3") == "caf\ufffd"
    assert decode_line("café".encode()) == "café"


# -- names ---------------------------------------------------------------------


def problem(name: str) -> str | None:
    return name_problem(normalize_name(name))


def test_name_rules():
    for good in ["alice", "Bob_1", "a_b-c", "Ωμέγα", "名前", "x" * 20, "_x", "x1", "r2-d2_v3",
                 "すずき太郎", "田中タロウ", "김민수", "金민수", "ㄅ中", "अनिल", "سارا", "สมชาย", "Ivan", "Иван"]:
        assert problem(good) is None, good
    for bad in ["", "x" * 21, "has space", "semi;colon", "at@", "emoji🙂", "tab\tx", "a.b", "alice."]:
        assert problem(bad) is not None, bad


def test_a_name_starts_with_a_letter_or_underscore():
    """As IRC nicknames do: every valid name is valid in both protocols."""
    for bad in ["-", "--", "-alice", "1x", "2pac", "0"]:
        assert problem(bad) == "a name must start with a letter or '_'", bad
    for bad in [".", "..", ".hidden"]:
        assert "'.' is not allowed in a name" in problem(bad), bad
    assert problem("_x") is None and problem("x-") is None


def test_a_name_holds_one_script():
    assert problem("p\u0430ypal") == "a name mixes scripts (Latin and Cyrillic)"
    assert problem("\u0430lice") == "a name mixes scripts (Cyrillic and Latin)"
    assert problem("すずきtaro") == "a name mixes scripts (Hiragana and Latin)"
    assert problem("ΑΒΓabc") == "a name mixes scripts (Greek and Latin)"
    assert problem("ab\u03b1\u0431") == "a name mixes scripts (Latin, Greek and Cyrillic)"
    assert problem("すず김") is not None   # Japanese kana with Hangul is no allowed mix
    assert problem("bob_42") is None and problem("боб_42") is None   # digits and _-. go with any


def test_names_take_ascii_digits_only():
    assert "digits are 0-9" in problem("bob\u0665")          # Arabic-Indic five, a circle
    assert "digits are 0-9" in problem("\u0968\u0967")       # Devanagari digits
    assert problem("bob\uff11") is None                      # fullwidth 1 is NFKC 1
    assert normalize_name("bob\uff11") == "bob1"


def test_invisible_and_punctuation_like_letters_are_refused():
    assert "invisible" in problem("\u3164")                  # Hangul filler, a letter that draws nothing
    assert "invisible" in problem("bob\u3164")
    assert "U+3164" in problem("\u3164") or "U+1160" in problem("\u3164")
    assert problem("bob\u02bc") is not None                  # modifier letter apostrophe
    assert problem("bob\u02d0") is not None                  # modifier letter triangular colon


def test_combining_marks_must_spell_their_script():
    assert problem("a\u0301") is None                       # composes into á
    assert normalize_name("a\u0301") == "\u00e1"
    assert "does not combine" in problem("a\u0301\u0302")    # nothing precomposed holds both
    assert "does not combine" in problem("bob\u0336")        # a strike-through overlay
    assert "does not combine" in problem("\u0301a")
    assert "does not combine" in problem("\u0915\u0e48")     # a Thai tone on a Devanagari letter
    assert "repeated" in problem("\u0e01\u0e48\u0e48")       # the same tone twice
    assert problem("\u0e01\u0e35\u0e48") is None             # Thai: consonant, vowel, tone
    assert "at most 3 marks" in problem("\u0915\u093c\u093f\u0902\u0901")


def test_length_counts_after_normalization():
    assert problem("\uff41" * MAX_NAME) is None              # 20 fullwidth letters
    assert problem("\ufb01" * 11) is not None               # 11 ligatures are 22 letters


def test_names_are_displayed_in_nfkc_form():
    assert normalize_name("ｆｏｏ") == "foo"
    assert normalize_name("\ufb01sh") == "fish"
    assert normalize_name("e\u0301") == "\u00e9"
    assert normalize_name("Alice") == "Alice"               # case is kept for display


def test_look_alikes_of_a_name_share_its_key():
    alice = name_key("alice")
    for twin in ["\u0430lice",                 # Cyrillic a
                 "\uff41lice",                 # fullwidth a
                 "ALICE", "alIce", "Alice",
                 "aIice",                      # capital I for l
                 "a1ice",                      # digit one for l
                 "\u0430\u04cf\u0456\u0441\u0435",  # all Cyrillic: a, palochka, i, es, ie
                 "\ua4ee\ua4e1\ua4f2\ua4da\ua4f0",  # all Lisu
                 "\u1d00\u029f\u026a\u1d04\u1d07",  # small capitals
                 "a\u200blice"]:               # an invisible character
        assert name_key(twin) == alice, twin
    for other in ["bob", "alicia", "alce", "\u00e1lice"]:
        assert name_key(other) != alice, other


def test_look_alike_examples_across_scripts():
    assert name_key("ΑΒΕΗΙΚΜΝΟΡΤΥΧΖ") == name_key("ABEHIKMNOPTYXZ")   # Greek capitals
    assert name_key("\u0412\u041e\u0412") == name_key("BOB")          # Cyrillic ВОВ
    assert name_key("\u13aa\u13f4\u13df") == name_key("abc")          # Cherokee
    assert name_key("\u0585\u057d") == name_key("ou")                  # Armenian
    assert name_key("g00gle") == name_key("google") == name_key("GOOGLE")
    assert name_key("\u0451") == name_key("\u00eb")                    # Cyrillic ё and Latin ë
    assert name_key("\u0131") == name_key("i")                         # dotless i
    assert name_key("\u017ftar") == name_key("star")                   # long s
    assert name_key("bi\u01c1") == name_key("bill")                  # lateral click, two bars


def test_japanese_look_alikes_share_a_key():
    assert name_key("\u529b") == name_key("\u30ab")     # ideograph power, katakana ka
    assert name_key("\u53e3") == name_key("\u30ed")     # mouth, ro
    assert name_key("\u4e00") == name_key("\u30fc")     # one, prolonged sound mark
    assert name_key("\u3078") == name_key("\u30d8")     # hiragana and katakana he
    assert name_key("\u3079") == name_key("\u30d9")     # and with the voicing mark: be
    assert name_key("すずき太郎") != name_key("すずき次郎")


def test_name_keys_keep_distinct_names_apart():
    names = ["alice", "bob", "carol", "dave", "eve", "mallory", "trent", "peggy", "victor",
             "Иван", "Мария", "Ωμέγα", "名前", "すずき", "김민수", "अनिल", "سارا"]
    assert len({name_key(n) for n in names}) == len(names)


lookalike_soup = st.text(st.sampled_from(
    sorted(set("".join(LOOKALIKES) + "".join(LOOKALIKES.values())))
    + ["I", "L", "O", "İ", "ǰ", "ß", "ẞ", "́", "̈", "゙", "ͅ",
       "ـ", "​", "️", "Ａ", "Ⅰ", "²"]), max_size=30)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=30), lookalike_soup))
def test_name_key_is_idempotent_and_ignores_normalization(name):
    key = name_key(name)
    assert name_key(key) == key
    assert name_key(normalize_name(name)) == key
    assert name_key(name.casefold()) == name_key(name.casefold().casefold())


@settings(max_examples=500)
@given(st.text(max_size=30))
def test_a_valid_name_is_visible_short_and_starts_well(name):
    name = normalize_name(name)
    if name_problem(name) is None:
        assert 1 <= len(name) <= MAX_NAME
        assert name[0].isalpha() or name[0] == "_"
        assert all(c.isalpha() or c in "0123456789_-" or unicodedata.category(c) in ("Mn", "Mc")
                   for c in name)
        assert sanitize(name) == name


def test_the_look_alike_table_is_consistent():
    for representative, lookalikes in LOOKALIKES.items():
        assert name_key(representative) == representative, representative
        for ch in lookalikes:
            assert name_key(ch) == representative, (representative, f"U+{ord(ch):04X}")
            if ch.isalpha():
                assert script_of(ch) is not None


def test_scripts_come_from_character_names():
    assert script_of("a") == "LATIN"
    assert script_of("\u0430") == "CYRILLIC"
    assert script_of("名") == "HAN"
    assert script_of("ー") == "KATAKANA"
    assert script_of("\u0915") == script_of("\u094d") == "DEVANAGARI"
    assert script_of("\U00010300") == "OLD ITALIC"
    assert script_of("\u02bc") is None
    assert script_of("1") is None


def test_fold_ignores_case():
    assert fold("ALICE") == fold("alice")
    assert fold("Straße") == fold("STRASSE")


# -- rooms ---------------------------------------------------------------------


def test_room_rules():
    assert room_name("#general") == "general"
    assert room_name("general") == "general"
    for good in ["general", "dev-ops", "a_b", "x" * 32, "café"]:
        assert room_problem(good) is None, good
    for bad in ["", "x" * 33, "a.b", "with space", "#"]:
        assert room_problem(room_name(bad) if bad != "#" else "") is not None, bad


def test_room_names_are_compared_in_nfc_form():
    composed = unicodedata.normalize("NFC", "é")
    decomposed = unicodedata.normalize("NFD", "é")
    assert room_name(decomposed) == composed


def test_unquote_removes_one_pair():
    assert unquote('"hi there"') == "hi there"
    assert unquote('""x""') == '"x"'
    assert unquote('"') == '"'
    assert unquote("plain") == "plain"
