"""Turns one full run's results into `latest.md` (tables) and `latest.png` (chart).

Medians over repeats with their min-max spread; added latency is taken per repeat (gateway
minus its paired direct run at the same percentile) before the median. Called at the end of
`run.py`; also `python bench/report.py bench/results/latest.json` to redraw. Needs
matplotlib (the full run only; the quick mode never imports this module).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

ORDER = ["direct", "llmgate", "llmgate-redis", "litellm", "portkey"]
TARGETS = {"added_p50_c1": 0.5, "added_p99_c16": 3.0, "rps": 2000.0, "rss": 80.0}

Rows = list[dict[str, Any]]


def groups(rows: Rows) -> dict[tuple[str, str, int], Rows]:
    """Rows by (system, mode, concurrency); the direct runs paired with llmgate as 'direct'."""
    out: dict[tuple[str, str, int], Rows] = defaultdict(list)
    for row in rows:
        # Fixed-rate rows are keyed by their offered rate, closed-loop ones by concurrency.
        level = int(row["rate"]) if row.get("rate") else row["concurrency"]
        out[(row["system"], row["mode"], level)].append(row)
        if row["system"] == "llmgate":
            direct = {**row["direct"], "system": "direct", "cpu_ms_per_request": math.nan}
            out[("direct", row["mode"], level)].append(direct)
    return out


def stat(rows: Rows, key: str) -> tuple[float, float, float]:
    values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
    if not values:
        return math.nan, math.nan, math.nan
    return statistics.median(values), min(values), max(values)


def cell(value: tuple[float, float, float], digits: int = 2, spread: bool = True) -> str:
    mid, low, high = value
    if math.isnan(mid):
        return "-"
    text = f"{mid:,.{digits}f}"
    if spread and high > low:
        text += f" <sub>[{low:,.{digits}f}-{high:,.{digits}f}]</sub>"
    return text


def systems_in(data: dict[tuple[str, str, int], Rows]) -> list[str]:
    present = {key[0] for key in data}
    return [name for name in ORDER if name in present]


def best_rps(data: dict[tuple[str, str, int], Rows], system: str) -> tuple[float, float, float]:
    """Throughput on one core: the JSON concurrency with the highest median req/s."""
    options = [stat(rows, "rps") for (s, m, _), rows in data.items()
               if s == system and m == "json"]
    return max(options, default=(math.nan,) * 3, key=lambda v: -1 if math.isnan(v[0]) else v[0])


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def target_lines(result: dict[str, Any], data: dict[tuple[str, str, int], Rows]) -> list[str]:
    sysinfo = result["systems"]
    p50 = stat(data.get(("llmgate", "json", 1), []), "added_p50")
    p99 = stat(data.get(("llmgate", "json", 16), []), "added_p99")
    rps = best_rps(data, "llmgate")
    rss = sysinfo.get("llmgate", {}).get("peak_rss_mb", math.nan)
    lines = ["| SPEC §8 target | measured (median [min-max]) | verdict |", "|---|---|---|",
             f"| added p50 ≤ {TARGETS['added_p50_c1']} ms at concurrency 1 | "
             f"{cell(p50, 3)} ms | {verdict(p50[0] <= TARGETS['added_p50_c1'])} |",
             f"| added p99 ≤ {TARGETS['added_p99_c16']} ms at concurrency 16 | "
             f"{cell(p99, 3)} ms | {verdict(p99[0] <= TARGETS['added_p99_c16'])} |",
             f"| ≥ {TARGETS['rps']:,.0f} non-streaming req/s on one core | {cell(rps, 0)} req/s "
             f"| {verdict(rps[0] >= TARGETS['rps'])} |",
             f"| peak RSS ≤ {TARGETS['rss']:.0f} MB | {rss:.1f} MiB | "
             f"{verdict(rss <= TARGETS['rss'])} |"]
    if ("litellm", "json", 16) in data:
        ratio = rps[0] / best_rps(data, "litellm")[0]
        lines.append(f"| ≥ 10x LiteLLM's throughput per core | {ratio:.1f}x | "
                     f"{verdict(ratio >= 10)} |")
    if ("portkey", "json", 1) in data:
        pk50 = stat(data[("portkey", "json", 1)], "added_p50")
        pk99 = stat(data.get(("portkey", "json", 16), []), "added_p99")
        lines.append(f"| added latency below Portkey's | p50 c=1: {p50[0]:.3f} vs "
                     f"{pk50[0]:.3f} ms; p99 c=16: {p99[0]:.3f} vs {pk99[0]:.3f} ms | "
                     f"{verdict(p50[0] < pk50[0] and p99[0] < pk99[0])} |")
    return lines


def sidecar_lines(result: dict[str, Any], data: dict[tuple[str, str, int], Rows]) -> list[str]:
    """The targets of a sidecar one can afford in every pod (issue 16)."""
    starts = result.get("starts") or []
    start, rss = stat(starts, "start_s"), stat(starts, "rss_mb")
    p50 = stat(data.get(("llmgate", "json", 1), []), "added_p50")
    ttfb = stat(data.get(("llmgate", "stream", 1), []), "added_ttfb_p50")
    cpu = stat(data.get(("llmgate", "json", 16), []), "cpu_ms_per_request")
    memory, redis = best_rps(data, "llmgate"), best_rps(data, "llmgate-redis")
    lines = ["| sidecar target | measured (median [min-max]) | verdict |", "|---|---|---|",
             f"| RSS of `llmgate sidecar` after start ≤ 40 MiB | {cell(rss, 1)} MiB | "
             f"{verdict(rss[0] <= 40 if starts else None)} |",
             f"| exec to /readyz 200 ≤ 0.25 s | {cell(start, 3)} s (CPU "
             f"{cell(stat(starts, 'start_cpu_s'), 2)} s) | "
             f"{verdict(start[0] <= 0.25 if starts else None)} |",
             f"| added p50 at c=1, JSON ≤ 0.3 ms | {cell(p50, 3)} ms | "
             f"{verdict(p50[0] <= 0.3 if not math.isnan(p50[0]) else None)} |",
             f"| added TTFB p50 at c=1, stream ≤ 0.2 ms | {cell(ttfb, 3)} ms | "
             f"{verdict(ttfb[0] <= 0.2 if not math.isnan(ttfb[0]) else None)} |",
             f"| CPU per JSON request at c=16 ≤ 0.2 ms | {cell(cpu, 3)} ms | "
             f"{verdict(cpu[0] <= 0.2 if not math.isnan(cpu[0]) else None)} |"]
    if not math.isnan(redis[0]):
        share = redis[0] / memory[0] * 100
        lines.append(f"| req/s with Redis ≥ 85% of in-memory | {redis[0]:,.0f} vs "
                     f"{memory[0]:,.0f} req/s = {share:.0f}% | {verdict(share >= 85)} |")
    if ("portkey", "json", 16) in data:
        ratio = memory[0] / best_rps(data, "portkey")[0]
        lines.append(f"| JSON req/s per core ≥ 5x Portkey's | {ratio:.1f}x | "
                     f"{verdict(ratio >= 5)} |")
    return lines


def latency_lines(data: dict[tuple[str, str, int], Rows], mode: str) -> list[str]:
    stream = mode == "stream"
    head = ("| system | conc. | p50 | p90 | p99 | added p50 | added p99 | "
            + ("TTFB p50 | added TTFB p50 | " if stream else "") + "req/s | CPU ms/req |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for system in systems_in(data):
        for conc in sorted({k[2] for k in data if k[0] == system and k[1] == mode}):
            rows = data[(system, mode, conc)]
            added = system != "direct"
            parts = [system, str(conc), cell(stat(rows, "p50"), 3), cell(stat(rows, "p90"), 3),
                     cell(stat(rows, "p99"), 3),
                     cell(stat(rows, "added_p50"), 3) if added else "-",
                     cell(stat(rows, "added_p99"), 3) if added else "-"]
            if stream:
                parts += [cell(stat(rows, "ttfb_p50"), 3),
                          cell(stat(rows, "added_ttfb_p50"), 3) if added else "-"]
            parts += [cell(stat(rows, "rps"), 0), cell(stat(rows, "cpu_ms_per_request"), 3)]
            lines.append("| " + " | ".join(parts) + " |")
    return lines


def rate_lines(data: dict[tuple[str, str, int], Rows]) -> list[str]:
    """Fixed-rate (open-loop) JSON loads; rows are keyed by the offered rate."""
    head = ("| system | offered req/s | answered req/s | p50 | p99 | added p50 | added p99 | "
            "CPU % of a core | CPU ms/req | RSS MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for system in systems_in(data):
        for rate in sorted({k[2] for k in data if k[0] == system and k[1] == "json-rate"}):
            rows = data[(system, "json-rate", rate)]
            added = system != "direct"
            lines.append("| " + " | ".join([
                system, f"{rate:,}", cell(stat(rows, "rps"), 0), cell(stat(rows, "p50"), 3),
                cell(stat(rows, "p99"), 3),
                cell(stat(rows, "added_p50"), 3) if added else "-",
                cell(stat(rows, "added_p99"), 3) if added else "-",
                cell(stat(rows, "cpu_pct"), 0) if added else "-",
                cell(stat(rows, "cpu_ms_per_request"), 3) if added else "-",
                cell(stat(rows, "rss_mb"), 1) if added else "-"]) + " |")
    return lines


def start_lines(result: dict[str, Any]) -> list[str]:
    starts = result.get("starts") or []
    if not starts:
        return []
    return [f"`llmgate sidecar` (in-memory store), {len(starts)} cold starts, median [min-max]:",
            "", "| exec to /readyz 200 (s) | CPU until ready (s) | RSS at ready (MiB) | "
            "RSS 0.5 s later (MiB) |", "|---|---|---|---|",
            f"| {cell(stat(starts, 'start_s'), 3)} | {cell(stat(starts, 'start_cpu_s'), 2)} | "
            f"{cell(stat(starts, 'rss_at_ready_mb'), 1)} | {cell(stat(starts, 'rss_mb'), 1)} |"]


def system_lines(result: dict[str, Any], data: dict[tuple[str, str, int], Rows]) -> list[str]:
    lines = ["| system | version | req/s on one core (best JSON) | CPU ms/req (JSON, c=16) | "
             "peak RSS MiB |", "|---|---|---|---|---|"]
    for system in systems_in(data):
        if system == "direct":
            continue
        info = result["systems"].get(system, {})
        cpu = stat(data.get((system, "json", 16), []), "cpu_ms_per_request")
        lines.append(f"| {system} | {info.get('version') or 'this tree'} | "
                     f"{cell(best_rps(data, system), 0)} | {cell(cpu, 3)} | "
                     f"{info.get('peak_rss_mb', math.nan):.1f} |")
    for system, info in result["systems"].items():
        if "error" in info:
            lines.append(f"| {system} | could not run: {info['error'][-300:]!r} | | | |")
    return lines


def profile_lines(result: dict[str, Any]) -> list[str]:
    profile = result["systems"].get("llmgate", {}).get("profile")
    if not profile:
        return []
    if "error" in profile:
        return [f"Profile not taken: {profile['error']}"]
    lines = [f"py-spy, {profile['samples']} samples of the gateway at concurrency 16 (JSON).", "",
             "| own time | function |", "|---|---|"]
    lines += [f"| {share}% | `{name}` |" for name, share in profile["own"]]
    if profile.get("areas"):
        lines += ["", "| own time | part of the process |", "|---|---|"]
        lines += [f"| {share}% | {name} |" for name, share in profile["areas"]]
    # Entry-point wrappers (runpy, the CLI, the loop runner) hold every sample; skip them.
    wrappers = ("<frozen", "llmgate_cli/", "asyncio/runners.py", "llmgate:")
    inclusive = [(n, s) for n, s in profile["inclusive"] if not n.startswith(wrappers)]
    lines += ["", "| inclusive | function |", "|---|---|"]
    lines += [f"| {share}% | `{name}` |" for name, share in inclusive[:25]]
    return lines


def markdown(result: dict[str, Any]) -> str:
    data = groups(result["rows"])
    m, s = result["machine"], result["settings"]
    out = [f"# Benchmark results ({m['date']})", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Linux {m['kernel']}. "
           f"{s['repeats']} repeats; medians with [min-max] over repeats; latencies in ms. "
           f"Upstream: first byte {s['first_byte_ms']} ms, {s['chunks']} chunks, "
           f"{s['chunk_delay_ms']} ms between chunks. Run took {result['seconds']:.0f} s.", "",
           "## Against the targets", "", *target_lines(result, data), "",
           *sidecar_lines(result, data), "",
           "## Non-streaming (JSON)", "", *latency_lines(data, "json"), "",
           "## Streaming (SSE)", "", *latency_lines(data, "stream"), "",
           "## Fixed rate (JSON, open loop)", "", *rate_lines(data), "",
           "## Cold start", "", *start_lines(result), "",
           "## Per system", "", *system_lines(result, data), ""]
    profile = profile_lines(result)
    if profile:
        out += ["## Profile of llmgate under load", "", *profile, ""]
    return "\n".join(out)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = groups(result["rows"])
    names = [n for n in systems_in(data) if n != "direct"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, key, title in ((axes[0][0], "added_p50", "added p50 latency, JSON (ms, log)"),
                           (axes[0][1], "added_p99", "added p99 latency, JSON (ms, log)")):
        for name in names:
            concs = sorted(k[2] for k in data if k[0] == name and k[1] == "json")
            values = [max(stat(data[(name, "json", c)], key)[0], 0.01) for c in concs]
            ax.plot(concs, values, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 16, 64], labels=["1", "16", "64"])
        ax.set_yscale("log")
        ax.set_xlabel("concurrency")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    rps = [best_rps(data, n)[0] for n in names]
    axes[1][0].bar(names, rps, color="tab:green")
    axes[1][0].axhline(TARGETS["rps"], color="red", linestyle="--", label="target")
    axes[1][0].set_title("throughput on one core (req/s, best JSON concurrency)")
    axes[1][0].legend()
    rss = [result["systems"].get(n, {}).get("peak_rss_mb", 0) for n in names]
    axes[1][1].bar(names, rss, color="tab:purple")
    axes[1][1].axhline(TARGETS["rss"], color="red", linestyle="--", label="target")
    axes[1][1].set_title("peak RSS (MiB)")
    axes[1][1].legend()
    fig.suptitle(f"llmgate benchmark, {result['machine']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(result: dict[str, Any], out: Path) -> None:
    (out / "latest.md").write_text(markdown(result))
    chart(result, out / "latest.png")


if __name__ == "__main__":
    source = Path(sys.argv[1])
    write_report(orjson.loads(source.read_bytes()), source.parent)
