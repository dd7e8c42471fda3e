"""The terminal client: its loop, key parser, line editor, widths and curses screen."""
