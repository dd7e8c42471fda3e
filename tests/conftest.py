import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers import ServerProcess  # noqa: E402


@pytest.fixture
def server(tmp_path):
    srv = ServerProcess(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path):
    """Start servers with custom flags; all are stopped at the end."""
    started = []

    def make(*args, **kw):
        srv = ServerProcess(tmp_path, *args, **kw)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
