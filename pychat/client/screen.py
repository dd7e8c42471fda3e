"""The seam between the client and its screen: what to draw, as plain data.

:class:`View` describes one frame; a :class:`ScreenLike` draws it. The
curses implementation lives in :mod:`pychat.client.curses_ui`; tests can use any
other.
"""

from __future__ import annotations

Segment = tuple[str, str]   # (text, style)
NICK_STYLES = 6             # styles nick0 .. nick5, one per nickname by hash


class View:
    """Everything the screen shows, as plain data."""

    def __init__(self, rows: list[list[Segment]], status: str, prompt: str, input_text: str,
                 cursor_col: int, more: bool) -> None:
        self.rows = rows
        self.status = status
        self.prompt = prompt
        self.input_text = input_text
        self.cursor_col = cursor_col
        self.more = more


class ScreenError(Exception):
    """The terminal cannot be used as a screen (an unknown TERM, for one)."""


class ScreenLike:
    """The seam between the client and curses (implemented in client_ui)."""

    def size(self) -> tuple[int, int]:
        """(rows, columns) of the screen as drawn."""
        raise NotImplementedError

    def resize(self) -> None:
        """Match the terminal's real size: called at start-up and on every SIGWINCH."""
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def render(self, view: View) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Give the terminal back as it was; safe to call more than once."""
        raise NotImplementedError
