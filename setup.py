"""Packaging for pychat. The server and client need only the standard library."""

from setuptools import find_packages, setup

setup(
    name="pychat",
    version="0.1.0",
    description="A small single-threaded chat server and terminal client",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pychat", "pychat.*"]),
    package_data={"pychat.protocols.web": ["static/*"]},
    py_modules=["pychat_server", "pychat_client"],
    install_requires=[],
    extras_require={
        # numpy: the benchmark's sequence checker, which tests/test_bench.py runs;
        # trustme: certificates for the TLS tests.
        # The tests install the web extra too, and drive the page in a real browser with selenium.
        "test": ["pytest>=7", "hypothesis>=6", "numpy>=1.22", "trustme>=1.0", "h11>=0.14", "wsproto>=1.2",
                 "selenium>=4.10", "hiredis>=2.1"],
        # A cluster of nodes sharing one Redis: hiredis parses RESP, sans-I/O, in the server's loop.
        "cluster": ["hiredis>=2.1"],
        # The web front end: HTTP and WebSocket parsers, both sans-I/O like the server's own.
        "web": ["h11>=0.14", "wsproto>=1.2"],
        # The benchmark runs the web front end too (pychat-ws).
        "bench": ["numpy>=1.22", "matplotlib>=3.5", "miniircd", "h11>=0.14", "wsproto>=1.2", "hiredis>=2.1"],
    },
    entry_points={
        "console_scripts": [
            "pychat-server=pychat.server.loop:main",
            "pychat-client=pychat.client.app:main",
        ],
    },
)
