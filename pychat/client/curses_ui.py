"""The client's screen, drawn with curses (the only module that uses it).

The client owns stdin and parses keys itself, so curses is used for
drawing alone: raw mode, no echo, colours, and ``resizeterm`` when the
loop sees SIGWINCH. Bracketed paste is switched on and off here.
"""

from __future__ import annotations

import curses
import os
import sys

from pychat.client.screen import NICK_STYLES, ScreenError, ScreenLike, View
from pychat.client.textwidth import char_width

_BRACKETED_PASTE_ON = "\x1b[?2004h"
_BRACKETED_PASTE_OFF = "\x1b[?2004l"


class CursesScreen(ScreenLike):
    def __init__(self) -> None:
        try:
            self.win = curses.initscr()
        except curses.error as exc:  # e.g. no terminfo entry for $TERM
            raise ScreenError(str(exc)) from None
        try:
            curses.raw()
            curses.noecho()
            curses.nonl()
            self.styles = self._init_styles()
            self.win.leaveok(False)
            sys.stdout.write(_BRACKETED_PASTE_ON)
            sys.stdout.flush()
        except Exception:
            self.close()
            raise
        self._closed = False

    def _init_styles(self) -> dict[str, int]:
        styles = {"normal": curses.A_NORMAL, "where": curses.A_NORMAL, "time": curses.A_DIM,
                  "status": curses.A_REVERSE, "info": curses.A_DIM, "error": curses.A_BOLD,
                  "self": curses.A_BOLD, "mention": curses.A_BOLD | curses.A_UNDERLINE}
        for i in range(NICK_STYLES):
            styles[f"nick{i}"] = curses.A_BOLD
        if not curses.has_colors():
            return styles
        curses.start_color()
        try:
            curses.use_default_colors()
            background = -1
        except curses.error:
            background = curses.COLOR_BLACK
        pairs = [("error", curses.COLOR_RED, curses.A_BOLD), ("info", curses.COLOR_CYAN, 0),
                 ("self", curses.COLOR_YELLOW, curses.A_BOLD), ("mention", curses.COLOR_MAGENTA, curses.A_BOLD),
                 ("status", curses.COLOR_WHITE, 0)]
        nick_colours = [curses.COLOR_GREEN, curses.COLOR_BLUE, curses.COLOR_MAGENTA, curses.COLOR_CYAN,
                        curses.COLOR_YELLOW, curses.COLOR_RED]
        pairs += [(f"nick{i}", nick_colours[i % len(nick_colours)], curses.A_BOLD) for i in range(NICK_STYLES)]
        for number, (name, colour, extra) in enumerate(pairs, start=1):
            if name == "status":
                curses.init_pair(number, curses.COLOR_WHITE, curses.COLOR_BLUE)
            else:
                curses.init_pair(number, colour, background)
            styles[name] = curses.color_pair(number) | extra
        return styles

    def size(self) -> tuple[int, int]:
        return self.win.getmaxyx()

    def resize(self) -> None:
        """Ask the terminal for its size and resize curses if its idea differs.

        Called at start-up too: curses may have started with a size that was
        already stale (a resize in the first milliseconds, or LINES/COLUMNS
        in the environment, which curses prefers to asking the terminal).
        """
        try:
            cols, rows = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            return
        if (rows, cols) != self.win.getmaxyx():
            curses.resizeterm(rows, cols)
        self.win.clear()

    def clear(self) -> None:
        self.win.clear()

    def render(self, view: View) -> None:
        rows, cols = self.win.getmaxyx()
        pane = max(1, rows - 2)
        win = self.win
        win.erase()
        top = pane - len(view.rows)
        for i, row in enumerate(view.rows):
            x = 0
            for text, style in row:
                x = self._put(top + i, x, text, self.styles.get(style, 0), cols)
        status = view.status[: cols]
        self._put(rows - 2, 0, status + " " * max(0, cols - len(status)), self.styles["status"], cols)
        self._put(rows - 1, 0, view.prompt + view.input_text, curses.A_NORMAL, cols)
        win.move(rows - 1, min(cols - 1, view.cursor_col))
        win.refresh()

    def _put(self, y: int, x: int, text: str, attr: int, cols: int) -> int:
        """Draw TEXT from column X, clipped at the right edge; return the next column."""
        rows = self.win.getmaxyx()[0]
        if y < 0 or y >= rows:
            return x
        out = []
        for ch in text:
            w = char_width(ch)
            if x + w > cols - (1 if y == rows - 1 else 0):
                break
            out.append(ch)
            x += w
        try:
            self.win.addstr(y, x - sum(char_width(c) for c in out), "".join(out), attr)
        except curses.error:
            pass  # writing the bottom-right cell raises; the text is drawn anyway
        return x

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            sys.stdout.write(_BRACKETED_PASTE_OFF)
            sys.stdout.flush()
        except OSError:
            pass
        curses.endwin()
