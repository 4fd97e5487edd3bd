"""`bench/run.py --quick` for real: the fake upstream, `llmgate sidecar` and the load
generator as child processes. Checks correctness only — every request answered, on the
gateway and on the direct path, the report well formed, the comparison with the direct path
computed, cold starts measured — never a timing or a ratio (those are the benchmark's output,
not a test's to assert on a shared machine). The run stops every process it starts, and
this test kills its group if it hangs."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_answers_everything_and_reports_every_figure(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=110)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    result = orjson.loads((tmp_path / "quick.json").read_bytes())
    assert proc.returncode == 0, output
    assert result["verdict"] == {"ok": True, "problems": []}, output
    rows = result["rows"]
    assert [(r["mode"], r["concurrency"], r["rate"]) for r in rows] == [
        ("json", 1, 0), ("json", 16, 0), ("stream", 16, 0), ("json-rate", 16, 200.0)]
    for row, load in zip(rows, result["settings"]["loads"], strict=True):
        assert row["system"] == "llmgate"
        assert row["errors"] == 0 and row["ok"] == load["requests"], row["error_samples"]
        assert row["direct"]["errors"] == 0 and row["direct"]["ok"] == load["requests"]
        for key in ("p50", "p99", "rps", "cpu_ms_per_request", "cpu_pct", "rss_mb"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        for pct in ("p50", "p99"):
            assert row[f"added_{pct}"] == row[pct] - row["direct"][pct]
    assert rows[2]["ttfb_p50"] > 0 and math.isfinite(rows[2]["added_ttfb_p50"])
    assert len(result["starts"]) == 2
    for start in result["starts"]:
        assert start["start_s"] > 0 and start["start_cpu_s"] > 0
        assert start["rss_mb"] > 10 and start["rss_at_ready_mb"] > 10
    # The gateway was a real process that held memory; it is gone now (stopped by PID).
    gateway = result["systems"]["llmgate"]
    assert gateway["peak_rss_mb"] > 10 and gateway["start_rss_mb"] > 10
    assert not Path(f"/proc/{gateway['pid']}").exists()
    gateway_log = (tmp_path / "work" / "llmgate.log").read_text()
    assert "Traceback" not in gateway_log
