"""pychat's benchmark: a load generator and a runner (not part of the package)."""
