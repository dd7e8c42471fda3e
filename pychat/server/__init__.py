"""The server: one selectors loop, its connections, its log and its flags."""
