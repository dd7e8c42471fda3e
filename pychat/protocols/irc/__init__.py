"""IRC: the message layer (parse and format one line) and, later, the session on top of it."""
