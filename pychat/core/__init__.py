"""The chat world, with no I/O: Hall/Room/User, events, text rules, budgets, the history store."""
