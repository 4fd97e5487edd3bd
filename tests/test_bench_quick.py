"""`bench/run.py --quick` for real: the fake upstream, `llmgate dev` and the load generator as
child processes. Asserts only what a gross regression would break (every request answered,
gateway p50 within 50 ms of the direct path, throughput within 100x of it), never a tight
timing; the run stops every process it starts, and this test kills its group if it hangs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_gateway_answers_everything_near_the_direct_path(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    result = json.loads((tmp_path / "quick.json").read_text())
    assert proc.returncode == 0, output
    assert result["verdict"] == {"ok": True, "problems": []}, output
    rows = result["rows"]
    assert [(r["mode"], r["concurrency"]) for r in rows] == [
        ("json", 1), ("json", 16), ("stream", 16)]
    for row, load in zip(rows, result["settings"]["loads"], strict=True):
        assert row["system"] == "llmgate"
        assert row["errors"] == 0 and row["ok"] == load["requests"], row["error_samples"]
        assert row["direct"]["errors"] == 0
        assert row["p50"] < row["direct"]["p50"] + 50.0
        assert row["rps"] > 0 and row["cpu_ms_per_request"] > 0
    # The gateway was a real process that held memory; it is gone now (stopped by PID).
    assert result["systems"]["llmgate"]["peak_rss_mb"] > 10
    assert not Path(f"/proc/{result['systems']['llmgate']['pid']}").exists()
    gateway_log = (tmp_path / "work" / "llmgate.log").read_text()
    assert "Traceback" not in gateway_log
