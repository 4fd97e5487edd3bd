"""The real sidecar as a child process (`llmgate sidecar`), for attacks that can freeze or
bloat it: the test process stays free to probe `/healthz`, read the child's memory from
/proc (VmRSS now, VmHWM peak, the peak reset through clear_refs) and signal it by PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.sidecar.harness import KEY, compile_to

MIB = 1024 * 1024


class SidecarProcess:
    def __init__(self, root: Path, resources: list[dict[str, Any]], **flags: Any) -> None:
        compile_to(root, resources, {"team-key": {"api-key": KEY}})
        self.port, self.ops_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ops_url = f"http://127.0.0.1:{self.ops_port}"
        args = {"config_dir": root / "config", "credentials_dir": root / "credentials",
                "port": self.port, "ops_port": self.ops_port, "ops_host": "127.0.0.1",
                "log_level": "warning", **flags}
        argv = [sys.executable, "-m", "llmgate_cli", "sidecar"]
        for name, value in args.items():
            argv += ["--" + name.replace("_", "-"), str(value)]
        self.log = (root / "sidecar.log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def ready(self, seconds: float = 20.0) -> None:
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the sidecar exited early: {self.output()}")
                try:
                    async with session.get(self.ops_url + "/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("the sidecar never became ready")

    async def healthy(self, timeout: float = 5.0) -> bool:
        """Does /healthz answer within `timeout` (a generous bound: responsiveness, not speed)?"""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
                async with s.get(self.ops_url + "/healthz") as response:
                    return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"{field} not in /proc/{self.proc.pid}/status")

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak(self) -> int:
        """Highest RSS since the last `reset_peak` (VmHWM)."""
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, and the exit code; fails (after SIGKILL) if it does not stop in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the sidecar ignored SIGTERM") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


def chat_body(model: str, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


AUTH = {"Authorization": f"Bearer {KEY}"}
