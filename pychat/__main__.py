"""`python3 -m pychat` runs the server."""

from pychat.server import main

main()
