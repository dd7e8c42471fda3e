"""Text at the boundary: decoding, sanitizing, and the name and room rules.

Everything a client sends is decoded and sanitized here before the core
sees it, so the core only ever handles clean ``str`` that cannot drive
another user's terminal, reorder its line with bidi controls, or hide
characters in it.

User names are displayed in NFKC form and compared by ``name_key``: NFKC,
case folding and a look-alike skeleton (pychat.core.confusables), so that no
one can pass for another user with a name that looks the same. Accounts
store these keys: changing the skeleton table, or how a key is made,
changes keys, and stored keys must then be recomputed from stored names.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final, Iterable

from pychat.core.confusables import skeleton_table

MAX_NAME: Final = 20
MAX_ROOM: Final = 32

# -- decoding and sanitizing --------------------------------------------------

# Telnet: IAC (255) starts a command. IAC IAC is a literal 255, IAC SB ... IAC
# SE a subnegotiation, WILL/WONT/DO/DONT (251-254) take one option byte,
# every other command is two bytes in all.
_TELNET = re.compile(rb"\xff(?:\xff|\xfa.*?(?:\xff\xf0|\Z)|[\xfb-\xfe].?|.?)", re.S)

# ANSI/VT escape sequences: CSI (ESC [ or 8-bit 0x9b) with parameters,
# OSC/DCS/SOS/PM/APC strings up to BEL or ST, and two-byte ESC sequences.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)"
    r"|\x1b[ -/]*[0-~]?",
    re.S,
)

# Invisible characters removed from all relayed text: every format character
# (category Cf) but the joiners, the tags and the visible Arabic, Syriac and
# Kaithi number signs (U+0600-U+0605, U+06DD, U+070F, U+0890-U+0891, U+08E2,
# U+110BD, U+110CD), which are drawn over the digits that follow them. By
# code point: soft hyphen; Arabic letter mark; Mongolian vowel separator;
# zero width space; LRM and RLM; bidi embeddings and overrides; word joiner,
# invisible operators, bidi isolates and the deprecated format characters
# (with the unassigned U+2065); zero width no-break space (BOM); interlinear
# annotation (with the unassigned U+FFF0-U+FFF8); Egyptian hieroglyph,
# shorthand and musical format controls; the language tag, and the
# unassigned code points of the tag and variation selector block, reserved
# for invisible characters. Lone surrogates (never from decode_line) are
# removed too: they cannot be sent as UTF-8.
_INVISIBLE_BMP: Final = (
    r"\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u206f\ufeff\ufff0-\ufffb\ud800-\udfff"
)
_INVISIBLE_ASTRAL: Final = (
    r"\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    r"\U000e0000-\U000e001f\U000e0080-\U000e00ff\U000e01f0-\U000e0fff"
)
_INVISIBLE: Final = _INVISIBLE_BMP + _INVISIBLE_ASTRAL
# Removed outright: C0 (but TAB, replaced before), DEL, C1, and the
# invisibles. Split in two because re tests a class holding characters
# beyond U+FFFF range by range, several times slower than a BMP-only class,
# and most lines hold no character beyond U+FFFF at all.
_DROP = re.compile(rf"[\x00-\x08\x0a-\x1f\x7f-\x9f{_INVISIBLE_BMP}]")
_DROP_ASTRAL = re.compile(rf"[{_INVISIBLE_ASTRAL}]")
_ASTRAL = re.compile(r"[\U00010000-\U0010ffff]")
_ESCAPE_START = re.compile(r"[\x1b\x9b\x90\x98\x9d\x9e\x9f]")

ZWNJ: Final = "\u200c"
ZWJ: Final = "\u200d"
# An emoji tag sequence (black flag, tags, cancel tag: the flags of England,
# Scotland, Wales) is kept whole; any other tag character is removed.
_TAGS = re.compile(r"(\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f)|[\U000e0020-\U000e007f]+")
_TAG = re.compile(r"[\U000e0020-\U000e007f]")
_EMOJI_MODIFIERS: Final = frozenset("\ufe0f\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff")
# Scripts whose spelling needs ZWNJ/ZWJ between two of their letters:
# Persian and the other Arabic-script languages, Syriac, N'Ko and Mongolian
# (joining forms), and the Indic scripts (half forms and conjuncts).
_JOINING_SCRIPTS: Final = frozenset({
    "ARABIC", "SYRIAC", "NKO", "MONGOLIAN", "DEVANAGARI", "BENGALI", "GURMUKHI", "GUJARATI",
    "ORIYA", "TAMIL", "TELUGU", "KANNADA", "MALAYALAM", "SINHALA",
})


def strip_telnet(raw: bytes) -> bytes:
    """Remove telnet IAC negotiation from raw input bytes."""
    if b"\xff" not in raw:
        return raw
    return _TELNET.sub(b"", raw)


def sanitize(text: str) -> str:
    """Make TEXT safe to relay to other users' terminals.

    Removes control characters (C0 but TAB, DEL, C1) with the escape
    sequences they start, bidi controls and invisible format characters
    (see _INVISIBLE). ZWJ survives only inside an emoji ZWJ sequence or
    between two letters of a script that needs it (_JOINING_SCRIPTS), ZWNJ
    only in the latter, tag characters only inside an emoji tag sequence.
    TAB, U+2028 and U+2029 become spaces. Sanitizing again changes nothing.
    """
    # Most lines hold no control, format or separator character at all, and
    # isprintable() says so in one fast pass.
    if text.isprintable():
        return text
    return _clean(text)


def decode_line(raw: bytes) -> str:
    """Bytes from the wire to clean text: telnet removed, UTF-8, sanitized."""
    if b"\xff" in raw:
        raw = _TELNET.sub(b"", raw)
    text = raw.decode("utf-8", "replace")
    return text if text.isprintable() else _clean(text)


def _clean(text: str) -> str:
    """The slow path of sanitize(), for text that is not all printable."""
    if _ESCAPE_START.search(text):
        text = _ESCAPES.sub("", text)
    text = text.replace("\t", " ").replace("\u2028", " ").replace("\u2029", " ")
    text = _DROP.sub("", text)
    astral = _ASTRAL.search(text) is not None
    if astral:
        text = _DROP_ASTRAL.sub("", text)
        if _TAG.search(text):
            text = _TAGS.sub(_keep_tag_sequence, text)
    if ZWJ in text or ZWNJ in text:
        # Joiners go last, so that their neighbours are what will be sent.
        stray, near_bmp, near_astral = _stray_joiners()
        if near_bmp.search(text) or (astral and near_astral.search(text)):
            text = stray.sub("", text)
        else:  # no character that could need a joiner: all of them go
            text = text.replace(ZWJ, "").replace(ZWNJ, "")
    return text


def _keep_tag_sequence(match: re.Match[str]) -> str:
    return match.group(1) or ""


# -- scripts -------------------------------------------------------------------

# unicodedata has no script property, but a letter's name starts with its
# script: LATIN SMALL LETTER A, CYRILLIC SMALL LETTER A, CJK UNIFIED
# IDEOGRAPH-540D. These are the first words that say it differently.
_SCRIPT_WORDS: Final = {
    "CJK": "HAN",
    "IDEOGRAPHIC": "HAN",           # 々 iteration mark, 〆 closing mark
    "KATAKANA-HIRAGANA": "KATAKANA",  # ー prolonged sound mark
    "MASU": "KATAKANA",             # 〼
    "HENTAIGANA": "HIRAGANA",
    "TURNED": "LATIN",              # Ⅎ ⅎ
    "ROMAN": "LATIN",               # Ↄ
}
# Scripts named by two words, whose first word alone is shared.
_TWO_WORD_SCRIPTS: Final = frozenset({"OLD", "LINEAR", "TAI", "INSCRIPTIONAL"})
# Letters that belong to no script: modifier letters (ʼ ˈ ː look like
# punctuation), the caron and the vertical tilde.
_NO_SCRIPT: Final = frozenset({"MODIFIER", "CARON", "VERTICAL"})
_EXCEPTIONS: Final = {"\u303b": "HAN"}  # VERTICAL IDEOGRAPHIC ITERATION MARK
# Scripts that may share one name: Japanese, Korean and Chinese with Bopomofo.
_SCRIPT_MIXES: Final = (
    frozenset({"HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"HAN", "HANGUL"}),
    frozenset({"HAN", "BOPOMOFO"}),
)


def script_of(ch: str) -> str | None:
    """The script of a letter or combining mark, from its Unicode name.

    "LATIN", "CYRILLIC", "HAN", "OLD ITALIC", ...; None for a character
    whose name names no script. For a mark the result is the first word of
    its name, so marks shared by all scripts give "COMBINING".
    """
    if ch.isascii():
        return "LATIN" if ch.isalpha() else None
    if ch in _EXCEPTIONS:
        return _EXCEPTIONS[ch]
    name = unicodedata.name(ch, "")
    if not name:
        # Tangut ideographs have no name in some Python versions.
        return "TANGUT" if 0x17000 <= ord(ch) < 0x18D80 else None
    words = name.split()
    if words[0] in _TWO_WORD_SCRIPTS and len(words) > 1:
        return f"{words[0]} {words[1]}"
    if words[0] in _NO_SCRIPT:
        return None
    return _SCRIPT_WORDS.get(words[0], words[0])


# -- user names ----------------------------------------------------------------

_NAME_PUNCTUATION: Final = frozenset("_-")
_ROOM_PUNCTUATION: Final = frozenset("_-")
# Typed text longer than this cannot be a name or room however it
# normalizes; it is refused before the (costlier) normalization.
MAX_TYPED: Final = 4 * MAX_ROOM
# Letters and marks that draw nothing (Hangul fillers, Khmer inherent
# vowels, Mongolian variation selectors): a name of them looks empty or
# like another name.
_INVISIBLE_LETTERS: Final = frozenset("\u115f\u1160\u3164\uffa0\u17b4\u17b5\u180b\u180c\u180d\u180f")
# Marks a letter may carry in the scripts that write vowels and tones as
# marks (Devanagari, Thai, Hebrew points, ...): enough for real spelling,
# too few to stack marks over the line above or below.
MAX_MARKS: Final = 3

# Not part of a name's look: invisible characters, and the stretching
# characters (Arabic tatweel, N'Ko lajanyalan) that only lengthen a stroke.
_KEY_IGNORED = re.compile(
    rf"[{_INVISIBLE}\u200c\u200d\U000e0020-\U000e007f\u034f\ufe00-\ufe0f\U000e0100-\U000e01ef"
    r"\u115f\u1160\u3164\u17b4\u17b5\u180b-\u180f\u0640\u07fa]"
)
_SKELETON: Final = skeleton_table()


def fold(name: str) -> str:
    """The key under which room names are compared: case ignored."""
    return name.casefold()


def normalize_name(name: str) -> str:
    """NAME in NFKC form: the form in which a user name is checked, stored
    and displayed. Fullwidth, ligature, superscript and other compatibility
    forms become their plain letters and digits (ａ -> a, ﬁ -> fi, ² -> 2)."""
    return unicodedata.normalize("NFKC", name)


def name_key(name: str) -> str:
    """The key under which user names are compared.

    NFKC, case folding, and a look-alike skeleton: characters that can be
    taken for one another (Cyrillic а and Latin a, I and l and 1, O and 0,
    katakana カ and the ideograph 力) map to one representative, after the
    name is decomposed so that accents are kept (Cyrillic ё gives ë);
    invisible characters and Arabic tatweel are dropped. Two names that
    look alike get one key; so do some that merely could (bill, biil).
    Deterministic, idempotent, and name_key(normalize_name(x)) equals
    name_key(x). The key is for comparing only, never for display.
    """
    key = unicodedata.normalize("NFKC", name).casefold()
    # NFKC again as NFKC_Casefold does, should folding ever yield a
    # compatibility character (none does in Unicode 14); then NFD, as the
    # skeleton works on letters with their marks split off.
    key = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", key))
    key = _KEY_IGNORED.sub("", key).translate(_SKELETON)
    return unicodedata.normalize("NFC", key)


def name_problem(name: str) -> str | None:
    """Why NAME (normalized) is not a valid user name, or None if it is.

    A name is 1-MAX_NAME characters: letters of one script (Japanese may
    mix Han, hiragana and katakana; Korean Han and Hangul; Chinese Han and
    Bopomofo), the ASCII digits 0-9, '_' and '-', starting with a letter or
    '_': every such name is also a valid IRC nickname, so users of both
    protocols share one namespace. Other digits are refused: some imitate punctuation or
    Latin letters (Arabic-Indic zero is a dot, five a circle). A combining
    mark is allowed only where it spells its own script (Devanagari vowel
    signs, Thai tones), at most MAX_MARKS on a letter; accents on Latin,
    Greek or Cyrillic letters must compose into one character under NFKC.
    """
    return _label_problem(name, "name", MAX_NAME, _NAME_PUNCTUATION, letter_first=True)


def room_problem(name: str) -> str | None:
    """Why NAME (from room_name(), without '#') is not a valid room name, or None.

    The rules of user names, but up to MAX_ROOM characters, with '_' and
    '-' (no '.'), and any of those first.
    """
    return _label_problem(name, "room name", MAX_ROOM, _ROOM_PUNCTUATION, letter_first=False)


def _label_problem(name: str, what: str, longest: int, punctuation: frozenset[str], letter_first: bool) -> str | None:
    """The rules shared by user and room names (see name_problem)."""
    if not name:
        return f"a {what} needs at least one character"
    if len(name) > longest:
        return f"a {what} has at most {longest} characters"
    scripts: list[str] = []
    base: str | None = None  # script of the letter that marks may follow
    marks: list[str] = []    # marks on that letter so far
    for ch in name:
        if ch in punctuation or "0" <= ch <= "9":
            base, marks = None, []
        elif ch in _INVISIBLE_LETTERS:
            return f"{_describe(ch)} is invisible and not allowed in a {what}"
        elif ch.isalpha():
            script = script_of(ch)
            if script is None:
                return f"{_describe(ch)} is not allowed in a {what}"
            if script not in scripts:
                scripts.append(script)
            base, marks = script, []
        elif unicodedata.category(ch) in ("Mn", "Mc"):
            if ch in marks:
                return f"{_describe(ch)} is repeated on one letter"
            if base is None or script_of(ch) != base:
                return f"{_describe(ch)} does not combine with the character before it"
            if len(marks) == MAX_MARKS:
                return f"a letter in a {what} carries at most {MAX_MARKS} marks"
            marks.append(ch)
        elif ch.isdigit():
            return f"{_describe(ch)} is not allowed in a {what}: the digits are 0-9"
        else:
            allowed = _and(f"'{c}'" for c in sorted(punctuation, key="_-.".index))
            return f"{_describe(ch)} is not allowed in a {what} (letters, digits, {allowed} only)"
    if letter_first and not (name[0].isalpha() or name[0] == "_"):
        return "a name must start with a letter or '_'"
    if len(scripts) > 1 and not any(s.issuperset(scripts) for s in _SCRIPT_MIXES):
        return f"a {what} mixes scripts ({_and(sc.title() for sc in scripts)})"
    return None


def clip(text: str, limit: int = 40) -> str:
    """TEXT as an error message may quote it: at most LIMIT characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(ch: str) -> str:
    """CH for an error line: quoted if it can be seen, else by code point."""
    if (ch.isprintable() and not ch.isspace() and ch not in _INVISIBLE_LETTERS
            and unicodedata.category(ch)[0] != "M"):
        return f"'{ch}'"
    return f"U+{ord(ch):04X} {unicodedata.name(ch, '')}".rstrip()


def _and(items: Iterable[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    words = list(items)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


# -- rooms -----------------------------------------------------------------------


def room_name(raw: str) -> str:
    """A room name as typed, in NFKC form, without its optional leading '#'."""
    raw = unicodedata.normalize("NFKC", raw)
    return raw[1:] if raw.startswith("#") else raw


def room_key(name: str) -> str:
    """The key under which rooms are found and stored: case ignored."""
    return name.casefold()


def unquote(text: str) -> str:
    """Remove one pair of double quotes wrapping TEXT, if present."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return text


# -- joiners ---------------------------------------------------------------------

def _char_class(chars: list[str]) -> str:
    """A regex character class matching exactly CHARS, as ranges."""
    points = sorted(ord(c) for c in chars)
    parts, start = [], 0
    while start < len(points):
        end = start
        while end + 1 < len(points) and points[end + 1] == points[end] + 1:
            end += 1
        lo, hi = points[start], points[end]
        parts.append(re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}")
        start = end + 1
    return "[" + "".join(parts) + "]"


def _ranges(blocks: list[tuple[int, int]]) -> str:
    return "[" + "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in blocks) + "]"


# Where the letters of the joining scripts and the emoji that take part in
# ZWJ sequences live (a superset; each character is then tested exactly).
_JOINING_BLOCKS: Final = ((0x0600, 0x0DFF), (0x1800, 0x18AF), (0xA8E0, 0xA8FF), (0xFB50, 0xFDFF),
                          (0xFE70, 0xFEFE), (0x10E60, 0x10E7F), (0x1EE00, 0x1EEFF))
_PICTOGRAPH_BLOCKS: Final = ((0x2190, 0x2BFF), (0x1F000, 0x1FAFF))
_stray_joiner_re: tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]] | None = None


def _stray_joiners() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The joiners to remove (all but those whose neighbours need them), and
    the characters that can need one (in the BMP, and beyond): without
    those, every joiner goes.

    A joiner stays between two letters or marks of the same joining script,
    and a ZWJ between two emoji (the first may carry U+FE0F or a skin tone).
    The decision is one regex, run in C: a line full of joiners costs about
    what any other line of its length does. Built on first use (about 20 ms:
    it reads the Unicode properties of the blocks concerned).
    """
    global _stray_joiner_re
    if _stray_joiner_re is None:
        by_script: dict[str, list[str]] = {}
        for lo, hi in _JOINING_BLOCKS:
            for point in range(lo, hi + 1):
                ch = chr(point)
                if unicodedata.category(ch)[0] in "LM":
                    script = script_of(ch)
                    if script in _JOINING_SCRIPTS:
                        by_script.setdefault(script, []).append(ch)
        emoji = _char_class([chr(p) for lo, hi in _PICTOGRAPH_BLOCKS for p in range(lo, hi + 1)
                             if unicodedata.category(chr(p)) == "So"])
        modifiers = _char_class(sorted(_EMOJI_MODIFIERS))
        keep = [f"(?<={_char_class(chars)})[{ZWNJ}{ZWJ}](?={_char_class(chars)})" for chars in by_script.values()]
        keep.append(f"(?<={emoji}){ZWJ}(?={emoji})")
        keep.append(f"(?<={emoji}{modifiers}){ZWJ}(?={emoji})")
        # A cheap test first: a character outside every block concerned (most
        # of them) settles it before the exact classes are tried.
        blocks = [(lo, hi) for lo, hi in _JOINING_BLOCKS + _PICTOGRAPH_BLOCKS]
        blocks += [(ord(c), ord(c)) for c in _EMOJI_MODIFIERS]
        near = _ranges(blocks)
        # Split for the search: a class of BMP characters only is a bitmap.
        near_bmp = _ranges([b for b in blocks if b[1] <= 0xFFFF])
        near_astral = _ranges([b for b in blocks if b[1] > 0xFFFF])
        _stray_joiner_re = (re.compile(f"(?!(?<={near})(?:{'|'.join(keep)}))[{ZWNJ}{ZWJ}]"),
                            re.compile(near_bmp), re.compile(near_astral))
    return _stray_joiner_re
