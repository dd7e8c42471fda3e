"""pychat: a small single-threaded chat server and terminal client.

The package is split into a sans-I/O core (text, framing, commands, render,
model, session, history) and thin I/O shells (connection, server, client).
Imports point from the shells down to the core, never back.
"""

__version__ = "0.1.0"
