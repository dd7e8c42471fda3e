"""The client's input line: editing, history and Tab completion.

Pure state: keys in, an optional submitted line out. The screen code only
draws ``text`` with the cursor at ``cursor``.
"""

from __future__ import annotations

from typing import Callable

Completer = Callable[[str, bool], list[str]]


class LineEditor:
    def __init__(self, completer: Completer | None = None, history_size: int = 500) -> None:
        self.text = ""
        self.cursor = 0
        self.history: list[str] = []
        self.history_size = history_size
        self._browse: int | None = None   # index into history while browsing
        self.secret = False               # a password: drawn as stars, kept out of the history
        self._draft = ""                  # the unsent line, kept while browsing
        self._completer = completer
        self._cycle: tuple[int, int, list[str], int] | None = None  # start, end, candidates, index

    # -- editing ----------------------------------------------------------

    def insert(self, s: str) -> None:
        self.text = self.text[:self.cursor] + s + self.text[self.cursor:]
        self.cursor += len(s)

    def handle(self, name: str, text: str = "") -> str | None:
        """Apply one key; return the line when Enter submits it."""
        if name != "tab":
            self._cycle = None
        action = _ACTIONS.get(name)
        if name == "char":
            self.insert(text)
        elif name == "enter":
            return self.submit()
        elif action is not None:
            action(self)
        return None

    def submit(self) -> str:
        line = self.text
        secret, self.secret = self.secret, False
        if line and not secret and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-self.history_size]
        self.text, self.cursor = "", 0
        self._browse = None
        return line

    def left(self) -> None:
        self.cursor = max(0, self.cursor - 1)

    def right(self) -> None:
        self.cursor = min(len(self.text), self.cursor + 1)

    def home(self) -> None:
        self.cursor = 0

    def end(self) -> None:
        self.cursor = len(self.text)

    def backspace(self) -> None:
        if self.cursor:
            self.text = self.text[:self.cursor - 1] + self.text[self.cursor:]
            self.cursor -= 1

    def delete(self) -> None:
        self.text = self.text[:self.cursor] + self.text[self.cursor + 1:]

    def kill_to_start(self) -> None:
        self.text, self.cursor = self.text[self.cursor:], 0

    def kill_to_end(self) -> None:
        self.text = self.text[:self.cursor]

    def kill_word(self) -> None:
        start = self.cursor
        while start and self.text[start - 1] == " ":
            start -= 1
        while start and self.text[start - 1] != " ":
            start -= 1
        self.text = self.text[:start] + self.text[self.cursor:]
        self.cursor = start

    # -- history ----------------------------------------------------------

    def history_up(self) -> None:
        if not self.history:
            return
        if self._browse is None:
            self._draft = self.text
            self._browse = len(self.history)
        if self._browse > 0:
            self._browse -= 1
            self._set(self.history[self._browse])

    def history_down(self) -> None:
        if self._browse is None:
            return
        self._browse += 1
        if self._browse >= len(self.history):
            self._browse = None
            self._set(self._draft)
        else:
            self._set(self.history[self._browse])

    def _set(self, text: str) -> None:
        self.text, self.cursor = text, len(text)

    # -- completion ---------------------------------------------------------

    def complete(self) -> None:
        """Complete the word before the cursor; Tab again cycles the candidates."""
        if self._completer is None:
            return
        if self._cycle is not None:
            start, end, candidates, index = self._cycle
            index = (index + 1) % len(candidates)
        else:
            start = self.cursor
            while start and self.text[start - 1] != " ":
                start -= 1
            word = self.text[start:self.cursor]
            candidates = self._completer(word, start == 0)
            if not candidates:
                return
            end, index = self.cursor, 0
        replacement = candidates[index]
        self.text = self.text[:start] + replacement + self.text[end:]
        self.cursor = start + len(replacement)
        self._cycle = (start, self.cursor, candidates, index)


_ACTIONS: dict[str, Callable[[LineEditor], None]] = {
    "left": LineEditor.left, "ctrl-b": LineEditor.left,
    "right": LineEditor.right, "ctrl-f": LineEditor.right,
    "home": LineEditor.home, "ctrl-a": LineEditor.home,
    "end": LineEditor.end, "ctrl-e": LineEditor.end,
    "backspace": LineEditor.backspace, "ctrl-h": LineEditor.backspace,
    "delete": LineEditor.delete,
    "ctrl-u": LineEditor.kill_to_start,
    "ctrl-k": LineEditor.kill_to_end,
    "ctrl-w": LineEditor.kill_word,
    "up": LineEditor.history_up, "ctrl-p": LineEditor.history_up,
    "down": LineEditor.history_down, "ctrl-n": LineEditor.history_down,
    "tab": LineEditor.complete,
}

