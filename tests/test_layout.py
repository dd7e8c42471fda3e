"""The design card and the layers, read from the source with ast.

No threads, asyncio or socketserver anywhere; sockets and selectors only in
the server's and the client's loops (and the server's link to Redis); sqlite3 only in the history store; curses
only in the client's screen. The folders are layers: core (the chat world)
<- protocols (wire formats) <- server (the loop); the client may use core and
protocols. Nothing imports a layer above its own.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pychat"
SOURCES = sorted(PACKAGE.rglob("*.py")) + [ROOT / "pychat_server.py", ROOT / "pychat_client.py"]

FORBIDDEN = {"threading", "_thread", "asyncio", "socketserver", "concurrent", "multiprocessing", "select"}
ONLY_IN = {
    "socket": {"server/loop.py", "server/connection.py", "server/logsink.py", "server/tls.py", "server/redis.py",
               "client/app.py"},
    "ssl": {"server/loop.py", "server/tls.py", "server/web.py", "client/app.py"},
    "selectors": {"server/loop.py", "server/redis.py", "server/cluster.py", "client/app.py"},
    "hiredis": {"server/redis.py"},  # the cluster extra
    "sqlite3": {"core/history.py"},
    "curses": {"client/curses_ui.py"},
}
# The layers each layer may import (besides itself and the top-level package).
MAY_IMPORT = {
    "core": set(),
    "protocols": {"core"},
    "server": {"core", "protocols"},
    "client": {"core", "protocols"},
}
# Imports that run against the layers, each with the reason; empty is the goal.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix() if path.is_relative_to(PACKAGE) else path.name


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_sources_exist():
    assert len(SOURCES) > 20
    for layer in MAY_IMPORT:
        assert (PACKAGE / layer / "__init__.py").exists(), layer


def test_no_threads_asyncio_or_select():
    for path in SOURCES:
        top = {name.split(".")[0] for name in imports(path)}
        assert not top & FORBIDDEN, f"{path.name} imports {top & FORBIDDEN}"


def test_io_modules_only_where_they_belong():
    for path in SOURCES:
        top = {name.split(".")[0] for name in imports(path)}
        for module, allowed in ONLY_IN.items():
            if module in top:
                assert relative(path) in allowed, f"{relative(path)} imports {module}"


def test_imports_point_down_the_layers():
    used_exceptions = set()
    for path in SOURCES:
        # By location, not by folder name: a clone may well be called "pychat".
        if not path.is_relative_to(PACKAGE) or path.parent == PACKAGE:
            continue
        layer = relative(path).split("/")[0]
        for name in imports(path):
            parts = name.split(".")
            if parts[0] != "pychat" or len(parts) < 2 or parts[1] not in MAY_IMPORT:
                continue
            target = parts[1]
            if target == layer or target in MAY_IMPORT[layer]:
                continue
            key = (relative(path), ".".join(parts[:4]))
            if any(key[0] == k[0] and name.startswith(k[1]) for k in EXCEPTIONS):
                used_exceptions.add(next(k for k in EXCEPTIONS if key[0] == k[0] and name.startswith(k[1])))
                continue
            raise AssertionError(f"{relative(path)} ({layer}) imports {name} ({target})")
    assert used_exceptions == set(EXCEPTIONS), f"stale exceptions: {set(EXCEPTIONS) - used_exceptions}"


def test_no_sendall_on_the_server():
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr != "sendall", f"{path.name} uses sendall()"


def test_entry_points_are_thin():
    for name in ("pychat_server.py", "pychat_client.py"):
        code = [line for line in (ROOT / name).read_text().splitlines()
                if line.strip() and not line.startswith(('"""', "#"))]
        assert len(code) <= 3, code


def test_layout_checks_hold_in_a_clone_named_pychat(tmp_path):
    """The most natural folder name for a clone must not confuse these checks."""
    clone = tmp_path / "pychat"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".*cache*"))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(clone / "tests" / "test_layout.py"), "-k", "not clone_named"],
                            cwd=clone, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
