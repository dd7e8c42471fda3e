"""Display width of text in a terminal, and wrapping by columns.

Wide characters (CJK, most emoji) take two columns, combining marks and
zero-width characters none. Pure functions: the client's screen code and
its tests use the same measurements.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

_ZERO_WIDTH = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"}


@lru_cache(maxsize=4096)
def char_width(ch: str) -> int:
    """Columns a single character takes: 0, 1 or 2."""
    if ch < "\u0300":  # fast path: Latin-1 and friends
        return 1 if ch >= " " else 0
    if ch in _ZERO_WIDTH or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    if "\ufe00" <= ch <= "\ufe0f":  # variation selectors
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Columns TEXT takes on one line."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def wrap(text: str, width: int) -> list[str]:
    """Split TEXT into rows of at most WIDTH columns, at spaces where possible.

    No character is dropped: the rows joined give TEXT back (a space at a
    break stays at the end of its row), so styles can be mapped by offset.
    """
    width = max(width, 2)
    if text_width(text) <= width:
        return [text]
    rows: list[str] = []
    start = 0        # offset where the current row starts
    cols = 0
    break_at = -1    # offset just after the last space in the current row
    i = 0
    while i < len(text):
        ch = text[i]
        w = char_width(ch)
        if cols + w > width and i > start:
            if ch == " ":  # a space at the edge may overhang: it is invisible
                i += 1
                rows.append(text[start:i])
                start, cols, break_at = i, 0, -1
                continue
            cut = break_at if break_at > start else i
            rows.append(text[start:cut])
            start, break_at = cut, -1
            cols = text_width(text[start:i])
            if cols + w > width:  # what follows the space still does not fit: break here too
                rows.append(text[start:i])
                start, cols = i, 0
        cols += w
        i += 1
        if ch == " ":
            break_at = i
    rows.append(text[start:])
    return rows


def fit_input(text: str, cursor: int, width: int) -> tuple[str, int]:
    """The part of an input line to show in WIDTH columns with the cursor visible.

    Returns the visible text and the cursor's column within it. The view
    scrolls so that the cursor stays on screen with some context before it.
    """
    if width < 2:
        width = 2
    before = text[:cursor]
    # Drop characters from the left until the cursor fits, keeping a margin.
    start = 0
    margin = min(width // 4, 10)
    while text_width(before[start:]) > width - 1 - (margin if start else 0) and start < len(before):
        start += 1
    if start and text_width(before[start:]) < width - 1 - margin:
        start = max(0, start - 1)
    visible = []
    cols = 0
    for ch in text[start:]:
        w = char_width(ch)
        if cols + w > width:
            break
        visible.append(ch)
        cols += w
    return "".join(visible), text_width(text[start:cursor])
