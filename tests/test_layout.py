"""The design card, read from the source with ast.

No threads, asyncio or socketserver anywhere; sockets and selectors only in
the I/O shells; sqlite3 only in history; curses only in the client UI;
imports inside the package point down, never at the shells.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pychat"
SOURCES = sorted(PACKAGE.glob("*.py")) + [ROOT / "pychat_server.py", ROOT / "pychat_client.py"]

FORBIDDEN = {"threading", "_thread", "asyncio", "socketserver", "concurrent", "multiprocessing", "select"}
ONLY_IN = {
    "socket": {"connection.py", "server.py", "client.py", "logsink.py"},
    "selectors": {"server.py", "client.py"},
    "sqlite3": {"history.py"},
    "curses": {"client_ui.py"},
}
SHELLS = {"server", "client", "client_ui"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "pychat":
                names.update(f"pychat.{alias.name}" for alias in node.names)
    return names


def test_sources_exist():
    assert len(SOURCES) > 10


def test_no_threads_asyncio_or_select():
    for path in SOURCES:
        top = {name.split(".")[0] for name in imports(path)}
        assert not top & FORBIDDEN, f"{path.name} imports {top & FORBIDDEN}"


def test_io_modules_only_where_they_belong():
    for path in SOURCES:
        top = {name.split(".")[0] for name in imports(path)}
        for module, allowed in ONLY_IN.items():
            if module in top:
                assert path.name in allowed, f"{path.name} imports {module}"


def test_nothing_imports_the_shells():
    for path in SOURCES:
        # By location, not by folder name: a clone may well be called "pychat".
        if path.parent != PACKAGE or path.name == "__main__.py":
            continue
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "pychat" and len(parts) > 1 and parts[1] in SHELLS:
                assert path.stem in SHELLS and parts[1] == "client_ui" and path.stem == "client", \
                    f"{path.name} imports {name}"


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
