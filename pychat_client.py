"""Run the pychat client: python3 pychat_client.py HOST [flags]."""
from pychat.client.app import main

main()
