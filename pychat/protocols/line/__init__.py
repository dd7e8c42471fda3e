"""The line protocol: what a user at nc sees (PROTOCOL.md sections 2-5)."""
