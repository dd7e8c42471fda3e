"""Run the pychat server: python3 pychat_server.py [HOST] [flags]."""
from pychat.server.loop import main

main()
