"""Wire protocols: one sans-I/O adapter per protocol."""
