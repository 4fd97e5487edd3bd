"""The parts of the sidecar's layout import-linter cannot see (it treats `aiohttp` as one
module): the server side of aiohttp (`aiohttp.web`) is used only by api, app and server; the
client side (everything else in aiohttp) only by upstream. Read from the source's syntax tree,
so a new import anywhere in the package is checked without a list to update."""

from __future__ import annotations

import ast
from pathlib import Path

import llmgate_sidecar

PACKAGE = Path(llmgate_sidecar.__file__).parent
WEB_OWNERS = ("api", "app", "server")
CLIENT_OWNERS = ("upstream",)


def aiohttp_imports(path: Path) -> set[str]:
    """The aiohttp modules (or `aiohttp.<name>` attributes) a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "aiohttp"}
        elif isinstance(node, ast.ImportFrom) and node.module and \
                node.module.split(".")[0] == "aiohttp":
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def role(path: Path) -> str:
    """The top-level package or module of the sidecar a file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def is_web(name: str) -> bool:
    return name == "aiohttp.web" or name.startswith(("aiohttp.web.", "aiohttp.web_"))


def test_aiohttp_web_only_in_api_app_server() -> None:
    offenders = {str(path.relative_to(PACKAGE)): sorted(filter(is_web, aiohttp_imports(path)))
                 for path in PACKAGE.rglob("*.py") if role(path) not in WEB_OWNERS}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_aiohttp_client_only_in_upstream() -> None:
    offenders = {str(path.relative_to(PACKAGE)):
                 sorted(name for name in aiohttp_imports(path) if not is_web(name))
                 for path in PACKAGE.rglob("*.py") if role(path) not in CLIENT_OWNERS}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_checks_see_both_sides() -> None:
    """Guards the two tests above against passing vacuously (e.g. after a move)."""
    web = {role(p) for p in PACKAGE.rglob("*.py") if any(map(is_web, aiohttp_imports(p)))}
    client = {role(p) for p in PACKAGE.rglob("*.py")
              if any(not is_web(n) for n in aiohttp_imports(p))}
    assert {"api", "app", "server"} <= web and client == {"upstream"}
