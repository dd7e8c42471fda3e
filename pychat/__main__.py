"""`python3 -m pychat` runs the server."""

from pychat.server.loop import main

main()
