"""Run the pychat client: python3 pychat_client.py HOST [flags]."""
from pychat.client import main

main()
