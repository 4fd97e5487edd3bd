"""The images' hash-locked dependency sets: one lock per image extra (`sidecar`, `operator`).

`make locks` runs `python -m supplychain.locks` (uv pip compile --generate-hashes, CPython
3.11 on Linux); the Dockerfiles install a lock with `pip install --require-hashes` and then
llmgate's own wheel with `--no-deps`. Each lock's header records a fingerprint of what
pyproject.toml declares for its image, so tests/test_supply_chain.py fails when pyproject
changes and the lock was not remade. Reads files and runs uv; imports nothing of llmgate.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
IMAGES = ("sidecar", "operator")
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"  # markers as on Linux; hashes cover every wheel
FINGERPRINT = "# pyproject-sha256: "


def lock_path(extra: str) -> Path:
    return ROOT / "supplychain" / f"{extra}.lock.txt"


def declared(extra: str, pyproject: Path = PYPROJECT) -> list[str]:
    """The requirement strings an image installs: the base dependencies plus its extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def fingerprint(extra: str, pyproject: Path = PYPROJECT) -> str:
    text = "\n".join(sorted(declared(extra, pyproject)))
    return hashlib.sha256(f"{extra}\n{PYTHON_VERSION}\n{text}".encode()).hexdigest()


def recorded(extra: str) -> str | None:
    """The fingerprint a lock was made for (None: no lock, or no header)."""
    path = lock_path(extra)
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(FINGERPRINT):
            return line.removeprefix(FINGERPRINT).strip()
    return None


def make(extra: str, uv: str = "uv") -> Path:
    """Compile the lock of `extra` (needs the index) and write it with its header. The
    current lock's pins are kept where pyproject still allows them (uv prefers an output
    file's pins): a change of what is declared changes only what it must."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lock.txt"
        if lock_path(extra).exists():
            shutil.copyfile(lock_path(extra), out)
        subprocess.run(
            [uv, "pip", "compile", str(PYPROJECT), "--extra", extra, "--generate-hashes",
             "--python-version", PYTHON_VERSION, "--python-platform", PLATFORM,
             "--no-header", "--quiet", "--output-file", str(out)], check=True)
        body = out.read_text()
    header = (f"# The {extra} image's dependencies, hash-locked (CPython {PYTHON_VERSION}, "
              "Linux).\n# Made by `make locks`; install with pip install --require-hashes.\n"
              f"{FINGERPRINT}{fingerprint(extra)}\n")
    path = lock_path(extra)
    path.write_text(header + body)
    return path


if __name__ == "__main__":
    for name in IMAGES:
        print(make(name, *sys.argv[1:2]))
