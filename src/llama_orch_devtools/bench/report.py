"""bench/results/: results.json (every figure), results.md (the tables) and PNG charts (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

from llama_orch_devtools.bench import cluster

matplotlib.use("Agg")  # no display here, and none needed for files
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402

PACKAGES = ("llama-orch", "httpx", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "httpx-sse", "openai")


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    mem_kib = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    versions = {}
    for name in (*PACKAGES, "matplotlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        # Other work on the machine skews every figure (both sides alike, the ratios less): say how busy it was.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "packages": versions,
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def targets(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with what this run measured (absent when its section did not run)."""
    out = []
    if relay := sections.get("relay"):
        for side, surface in _SURFACES.items():
            pairs = relay["throughput"]["pairs"][side]
            out.append(
                _target(
                    f"relay throughput vs direct, 1 stream ({surface}; median of {pairs['pairs']} pairs)",
                    ">= 0.85x",
                    f"{pairs['median']:.2f}x ({pairs['min']:.2f}-{pairs['max']:.2f})",
                    pairs["median"] >= 0.85,
                )
            )
        ft = relay["first_token"]
        for side, surface in _SURFACES.items():
            added, limit = ft["added_p50_ms"][side], _ADDED_P50_MS[side]
            wanted = f"<= +{limit} ms"
            out.append(_target(f"added first-token latency p50 ({surface})", wanted, _signed_ms(added), added <= limit))
        for side, surface in _SURFACES.items():
            added = ft["added_p99_ms"][side]
            out.append(_target(f"added first-token latency p99 ({surface})", "<= +2 ms", _signed_ms(added), added <= 2))
    if conc := sections.get("concurrency"):
        for level in conc["levels"]:
            if level["streams"] == 512:
                ok = level["errors"] == 0 and level["lost"] == 0
                out.append(
                    _target(
                        "512 simultaneous streams",
                        "0 errors, 0 lost",
                        f"{level['errors']} errors, {level['lost']} lost",
                        ok,
                    )
                )
                p99, rss = level["first_token_p99_ms"], level["peak_rss_mib"]
                out.append(_target("512 streams: first-token p99", "<= 1 s", f"{p99 / 1000:.2f} s", p99 <= 1000))
                out.append(_target("512 streams: peak RSS", "<= 200 MiB", f"{rss:.0f} MiB", rss <= 200))
    if clus := sections.get("cluster"):
        for side, label in cluster.SIDES.items():
            pairs = clus["throughput"]["pairs"][side]
            measured = f"{pairs['median']:.2f}x ({pairs['min']:.2f}-{pairs['max']:.2f})"
            name = f"scale-out relay vs in-memory, 1 stream ({label}; median of {pairs['pairs']} pairs)"
            out.append(_target(name, ">= 0.9x", measured, pairs["median"] >= 0.9))
            added = clus["first_token"]["added_p50_ms"][side]
            name = f"scale-out added first token p50 ({label})"
            out.append(_target(name, "<= +1 ms", _signed_ms(added), added <= 1.0))
    if peer := sections.get("peer"):
        ratio, closer = peer["orchestrator_vs_litellm"], peer["first_token_closeness"]
        route = "same route `/v1/completions`"
        out.append(_target(f"relay vs LiteLLM tokens/s, 1 stream ({route})", ">= 30x", f"{ratio:.1f}x", ratio >= 30))
        out.append(
            _target(f"first token closer to direct than LiteLLM's ({route})", ">= 20x", f"{closer:.1f}x", closer >= 20)
        )
    return out


# The orchestrator's two streaming surfaces, as the relay sections name them, and their added-latency targets
# (`/v1/tasks` is two requests: submit, then read the stream).
_SURFACES = {"orchestrator": "`/v1/tasks` SSE", "infer": "`/infer` NDJSON"}
_ADDED_P50_MS = {"orchestrator": 1.0, "infer": 0.5}


def _target(name: str, target: str, measured: str, met: bool) -> dict[str, Any]:
    return {"name": name, "target": target, "measured": measured, "met": met}


def write(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    (out / "results.md").write_text(markdown(results))
    return [out / "results.json", out / "results.md", *charts(results, out)]


def _f(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.{digits}f}"


def _signed_ms(value: float) -> str:
    """An added latency: below zero when the relayed side's figure came out lower (noise, or a warmer path)."""
    return "n/a" if math.isnan(value) else f"{value:+.2f} ms"


def run_line(results: dict[str, Any]) -> str:
    """When and where: the line under every table and chart."""
    m = results["machine"]
    return (
        f"Run {results['generated_at']}{' (--quick)' if results['quick'] else ''} on {m['cpu']}, {m['cores']} cores, "
        f"{m['ram_gib']} GiB RAM, {m['os']}, Python {m['python']}"
    )


def markdown(results: dict[str, Any]) -> str:
    s = results["sections"]
    m = results["machine"]
    lines = [
        "# llama-orch bench results",
        "",
        f"{run_line(results)}; load average at start {' / '.join(map(str, m['load_average_at_start']))}. "
        "Generated by `python xtask.py bench`; every figure is in `results.json`. Every side is read by the same "
        "client, which records chunks on the clock and decodes them after it; single-stream sides run one at a "
        "time in alternating rounds, and a ratio is the median of the per-round pairs (spread: min-max).",
        "",
    ]
    lines += _load_lines(results.get("load", {}))
    if results["targets"]:
        lines += ["## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
        lines += [
            f"| {t['name']} | {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
            for t in results["targets"]
        ]
        lines.append("")
    if relay := s.get("relay"):
        labels = {
            "direct": "direct `/completion`",
            "byte_proxy": "byte proxy (bytes forwarded, nothing parsed)",
            "orchestrator": "llama-orch `/v1/tasks` SSE",
            "infer": "llama-orch `/infer` NDJSON",
        }
        lines += [
            f"## Native route: one stream of {relay['throughput']['tokens']} tokens from the llama.cpp simulator "
            "(no delay)",
            "",
            *_comparison_lines(relay, labels),
            "`/v1/tasks` is two requests (submit, then read the stream) where direct is one; `/infer` is one. The byte "
            "proxy is the physical reference: what any relay in its own process costs here before doing any work.",
            "",
        ]
    if conc := s.get("concurrency"):
        lines += [
            f"## Concurrency through the orchestrator ({conc['tokens_per_stream']} tokens per stream, `/v1/tasks`)",
            "",
            "| streams | aggregate tokens/s | p50 gap | p99 gap | max gap | first token p99 | peak RSS "
            "| errors | lost |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {lv['streams']} | {_f(lv['aggregate_tokens_per_s'])} | {_f(lv['p50_gap_ms'], 2)} ms | "
            f"{_f(lv['p99_gap_ms'], 2)} ms | {_f(lv['max_gap_ms'], 1)} ms | {_f(lv['first_token_p99_ms'], 1)} ms | "
            f"{_f(lv['peak_rss_mib'], 1)} MiB | "
            f"{lv['errors']} | {lv['lost']} |"
            for lv in conc["levels"]
        ]
        lines.append("")
    if peer := s.get("peer"):
        lines += _peer_lines(peer)
    if prof := s.get("profile"):
        lines += _profile_lines(prof)
    if real := s.get("real"):
        pairs = real.get("pairs", {})
        lines += [
            f"## Real engine: llama-server {real['engine_version']}, tiny model, {real['tokens']} tokens",
            "",
            "| path | tokens/s (median) | first token p50 |",
            "|---|---|---|",
            f"| direct `/completion` | {_f(real['direct']['tokens_per_s'])} | "
            f"{_f(real['first_token']['direct']['p50_ms'], 2)} ms |",
            f"| through the orchestrator | {_f(real['orchestrator']['tokens_per_s'])} | "
            f"{_f(real['first_token']['orchestrator']['p50_ms'], 2)} ms |",
            f"| ratio (median of pairs; spread) | **{real['ratio']:.2f}x** "
            f"({_f(pairs.get('min'), 2)}-{_f(pairs.get('max'), 2)}) | |",
            "",
            f"Complete streams: direct {real['complete']['direct']}, orchestrator {real['complete']['orchestrator']} "
            f"of {real['direct']['streams']}; same greedy text: {'yes' if real['same_text'] else 'NO'}. "
            "The tiny model may end a stream early (end of sequence): tokens/s counts what each stream delivered.",
            "",
        ]
    if clus := s.get("cluster"):
        labels = {"memory": "one instance, in-memory", **cluster.SIDES}
        lines += [
            f"## Scale-out cost: one `/v1/tasks` stream of {clus['throughput']['tokens']} tokens, in-memory vs "
            "on Redis",
            "",
            *_comparison_lines(clus, labels),
            "The ratios here are against the in-memory instance, not the engine. On Redis every engine read is one "
            "stream entry (XADD) that the reader takes from Redis, on the owning instance or another.",
            "",
        ]
    if work := s.get("workers"):
        lines += _workers_lines(work)
    if dec := s.get("decoding"):
        lines += _decoding_lines(dec)
    if results["skipped"]:
        lines += ["## Not run", ""] + [f"- {name}: {why}" for name, why in results["skipped"].items()] + [""]
    return "\n".join(lines)


def _load_lines(load: dict[str, Any]) -> list[str]:
    if not load:
        return []
    lines = [
        "## Machine load during the run",
        "",
        "Busy cores: the whole machine's, from /proc/stat; bench: the load generator and every process under test; "
        "others: the rest of the machine (other work sharing it) in the same time.",
        "",
        "| section | seconds | load average (1 min) min / median / max | busy cores | bench | others |",
        "|---|---|---|---|---|---|",
    ]
    for section, fig in load.items():
        if fig:
            avg = fig["load_avg_1m"]
            lines.append(
                f"| {section} | {fig['wall_s']} | {avg['min']} / {avg['median']} / {avg['max']} | {fig['busy_cores']} "
                f"| {fig['bench_cores']} | {fig['other_cores']} |"
            )
    return [*lines, ""]


def _comparison_lines(section: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """One row per side of a `relay.compare` result: tokens/s, pair ratio and spread, CPU, first token."""
    t, ft = section["throughput"], section["first_token"]
    direct = section["direct"]
    lines = [
        "| path | tokens/s (median) | ratio (median of pairs) | spread min-max (IQR) | relay process CPU per token "
        "| first token p50 | p99 | added p50 | added p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in labels.items():
        figures = t[name]
        cpu = f"{_f(figures['cpu_us_per_token'], 1)} µs" if "cpu_us_per_token" in figures else ""
        if name == direct:
            lines.append(
                f"| {label} | {_f(figures['tokens_per_s'])} | | | {cpu} | {_f(ft[name]['p50_ms'], 2)} ms "
                f"| {_f(ft[name]['p99_ms'], 2)} ms | | |"
            )
            continue
        pairs = t["pairs"][name]
        lines.append(
            f"| {label} | {_f(figures['tokens_per_s'])} | **{pairs['median']:.2f}x** | {pairs['min']:.2f}-"
            f"{pairs['max']:.2f} ({pairs['q1']:.2f}-{pairs['q3']:.2f}) | {cpu} | {_f(ft[name]['p50_ms'], 2)} ms "
            f"| {_f(ft[name]['p99_ms'], 2)} ms | {_signed_ms(ft['added_p50_ms'][name])} "
            f"| {_signed_ms(ft['added_p99_ms'][name])} |"
        )
    complete = ", ".join(f"{labels[name].split(' (')[0]} {n}" for name, n in t["complete"].items())
    same = all(t["same_text"].values())
    pairs_n = next(iter(t["pairs"].values()))["pairs"]
    return [
        *lines,
        "",
        f"{pairs_n} alternating pairs per relay. Complete streams of {t[direct]['streams']}: {complete}; "
        f"text identical to the first row's: {'yes' if same else 'NO'}. Relay CPU per token: the relaying process's "
        "CPU time (/proc) over the stream, per token delivered.",
        "",
    ]


def _peer_lines(peer: dict[str, Any]) -> list[str]:
    labels = {
        "direct_openai": "direct `/v1/completions`",
        "byte_proxy": "byte proxy",
        "orchestrator": "llama-orch `/v1/tasks` (api: openai)",
        "infer": "llama-orch `/infer` (api: openai)",
        "litellm": f"LiteLLM {peer['litellm_version']} proxy `/v1/completions`",
    }
    conc = peer["concurrent"]
    load_rows = [
        f"| {labels[name]} | {_f(fig['aggregate_tokens_per_s'])} | {_f(fig['p99_gap_ms'], 2)} ms | "
        f"{_f(fig['first_token_p99_ms'], 1)} ms | {_f(fig['peak_rss_mib'], 1)} MiB | {fig['errors']} |"
        for name, fig in conc.items()
        if name != "streams"
    ]
    return [
        f"## Same route for both relays: the simulator's OpenAI-compatible `/v1/completions` "
        f"({peer['throughput']['tokens']} tokens per stream)",
        "",
        *_comparison_lines(peer, labels),
        f"llama-orch vs LiteLLM on the same route: **{peer['orchestrator_vs_litellm']:.1f}x** tokens/s on one stream "
        f"(`/v1/tasks`), first token **{peer['first_token_closeness']:.1f}x** closer to direct (added p50 over added "
        f"p50), **{peer['concurrent_ratio']:.1f}x** aggregate at {conc['streams']} streams:",
        "",
        f"| {conc['streams']} simultaneous streams | aggregate tokens/s | p99 gap | first token p99 | peak RSS "
        "| errors |",
        "|---|---|---|---|---|---|",
        *load_rows,
        "",
    ]


def _workers_lines(work: dict[str, Any]) -> list[str]:
    ratio = work["ratio_2_vs_1"]
    rows = [
        f"| {n} | {_f(fig['aggregate_tokens_per_s'])} | {_f(fig['first_token_p99_ms'], 1)} ms | {fig['cores']:.2f} "
        f"| {fig['errors']} | {fig['lost']} |"
        for n, fig in work["workers"].items()
    ]
    return [
        f"## `llama-orch serve --workers N` (scale-out mode on Redis): {work['streams']} simultaneous streams of "
        f"{work['tokens_per_stream']} tokens",
        "",
        "| workers | aggregate tokens/s (median of rounds) | first token p99 | cores used by its processes | errors "
        "| lost |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"N = 2 vs N = 1: **{ratio['median']:.2f}x** (pairs {ratio['min']:.2f}-{ratio['max']:.2f}). The engine, the "
        "load generator and the workers share this machine's cores: a second worker only gains what the others "
        "leave idle. Errors and lost (admitted, no terminal seen) are summed over the rounds; the bench's client "
        "does not retry a refused request.",
        *[f"First error with {n} worker(s): `{error}`" for n, error in _first_errors(work).items()],
        "",
    ]


def _first_errors(work: dict[str, Any]) -> dict[str, str]:
    """Each worker count's first error over its rounds, cut to one line."""
    found = {}
    for n, fig in work["workers"].items():
        if error := next((r["first_error"] for r in fig["rounds"] if r["first_error"]), None):
            found[n] = error.splitlines()[0][:240]
    return found


def _profile_lines(prof: dict[str, Any]) -> list[str]:
    surfaces = [name for name in _SURFACES if name in prof]
    scaled = all(prof[name]["unprofiled_us_per_token"] for name in surfaces)
    key = "scaled_us_per_token" if scaled else "profiled_us_per_token"
    stages = [stage for stage in prof[surfaces[0]][key] if any((prof[n][key][stage] or 0) > 0.05 for n in surfaces)]
    lines = [
        "## Profile: the orchestrator's CPU per token, by stage (`--profile`)",
        "",
        "Each surface under cProfile in its own orchestrator process; every function's own time goes to its stage "
        "(builtins to their callers'). "
        + (
            "Shares of the profile scaled to the unprofiled CPU per token of the relay section above."
            if scaled
            else "As profiled (inflated by the profiler; run with the relay section to scale)."
        ),
        "",
        "| stage | " + " | ".join(f"{_SURFACES[n]} µs/token (share)" for n in surfaces) + " |",
        "|---|" + "---|" * len(surfaces),
    ]
    for stage in stages:
        cells = [f"{_f(prof[n][key][stage], 2)} ({prof[n]['share'][stage]:.0%})" for n in surfaces]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    totals = [_f(sum(v or 0 for v in prof[n][key].values()), 2) for n in surfaces]
    lines.append("| **total** | " + " | ".join(totals) + " |")
    return [*lines, ""]


def _decoding_lines(dec: dict[str, Any]) -> list[str]:
    lines = [
        f"## Stream decoding: the same {dec['events']:,} llama.cpp events ({dec['bytes']:,} bytes), best of "
        f"{dec['rounds']}",
        "",
        "`frames`: bytes to (event, data) strings. `json`: the generated client's typed, validated items vs "
        "`json.loads` per event for the peers.",
        "",
        "| level | chunking | generated (events/s) | httpx-sse | openai | vs httpx-sse | vs openai |",
        "|---|---|---|---|---|---|---|",
    ]
    for level, chunkings in dec["levels"].items():
        for chunking, fig in chunkings.items():
            rate = fig["events_per_s"]
            lines.append(
                f"| {level} | {chunking} | {_f(rate['generated'])} | {_f(rate['httpx-sse'])} | {_f(rate['openai'])} "
                f"| {fig['vs_httpx_sse']:.2f}x | {fig['vs_openai']:.2f}x |"
            )
    return [*lines, ""]


def charts(results: dict[str, Any], out: Path) -> list[Path]:
    sections = results["sections"]
    written = []
    if rows := _relay_rows(sections):
        written.append(_relays_chart(rows, run_line(results), out / "relays.png"))
    if conc := sections.get("concurrency"):
        written.append(_concurrency_chart(conc, run_line(results), out / "concurrency.png"))
    if dec := sections.get("decoding"):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        groups = [(lvl, ch, fig_["events_per_s"]) for lvl, chs in dec["levels"].items() for ch, fig_ in chs.items()]
        width = 0.27
        for k, name in enumerate(("generated", "httpx-sse", "openai")):
            xs = [i + (k - 1) * width for i in range(len(groups))]
            ax.bar(xs, [g[2][name] / 1000 for g in groups], width, label=name)
        ax.set_xticks(range(len(groups)), [f"{lvl}\n{ch}" for lvl, ch, _ in groups])
        ax.set_ylabel("thousand events/s")
        ax.set_title("SSE decoding, same bytes")
        ax.legend()
        written.append(_save(fig, out / "decoding.png"))
    return written


# (label, pair figures, first-token p50 ms, p99 ms, colour) per relay, native route first.
Row = tuple[str, dict[str, Any], float, float, str]
_OURS, _PROXY, _PEER = "#4477aa", "#999999", "#cc6677"


def _relay_rows(sections: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, route, names in (
        (
            "relay",
            "native",
            {
                "byte_proxy": ("byte proxy", _PROXY),
                "orchestrator": ("llama-orch /v1/tasks", _OURS),
                "infer": ("llama-orch /infer", _OURS),
            },
        ),
        (
            "peer",
            "OpenAI",
            {
                "byte_proxy": ("byte proxy", _PROXY),
                "orchestrator": ("llama-orch /v1/tasks", _OURS),
                "infer": ("llama-orch /infer", _OURS),
                "litellm": ("LiteLLM", _PEER),
            },
        ),
    ):
        if section := sections.get(key):
            t, ft = section["throughput"], section["first_token"]
            direct = section["direct"]
            rows.append((f"{route}: direct", {}, ft[direct]["p50_ms"], ft[direct]["p99_ms"], "#222222"))
            rows += [
                (f"{route}: {label}", t["pairs"][name], ft[name]["p50_ms"], ft[name]["p99_ms"], colour)
                for name, (label, colour) in names.items()
            ]
    return rows


def _relays_chart(rows: list[Row], when: str, path: Path) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(rows) + 1.8), sharey=True)
    labels = [row[0] for row in rows]
    ys = range(len(rows))
    for y, (_, pairs, _, _, colour) in zip(ys, rows, strict=True):
        if pairs:
            err = [[pairs["median"] - pairs["min"]], [pairs["max"] - pairs["median"]]]
            left.barh(y, pairs["median"], color=colour, xerr=err, capsize=3)
            left.text(pairs["max"], y, f"  {pairs['median']:.2f}x", va="center", fontsize=8)
    left.axvline(1.0, color="#222222", linewidth=0.8)
    left.axvline(0.85, color=_OURS, linewidth=0.8, linestyle="--", label="target 0.85x")
    left.set(xscale="log", xlabel="tokens/s relayed / direct (median of pairs, bars: min-max; log)")
    left.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
    left.legend(loc="lower left", fontsize=8)
    for y, (_, _, p50, p99, colour) in zip(ys, rows, strict=True):
        right.barh(y, p50, color=colour)
        right.plot([p99], [y], marker="|", markersize=12, color="#222222")
        right.text(p99, y, f"  {p50:.2f} / {p99:.2f} ms", va="center", fontsize=8)
    right.set(xscale="log", xlabel="first token, ms (bar p50, tick p99; log)")
    left.set_yticks(list(ys), labels)
    left.invert_yaxis()
    fig.suptitle(f"One stream from the llama.cpp simulator, per relay\n{when}", fontsize=9)
    return _save(fig, path)


def _concurrency_chart(conc: dict[str, Any], when: str, path: Path) -> Path:
    levels = conc["levels"]
    streams = [lv["streams"] for lv in levels]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (
        ("aggregate tokens/s", [lv["aggregate_tokens_per_s"] for lv in levels], None),
        ("first token p99, ms", [lv["first_token_p99_ms"] for lv in levels], 1000.0),
        ("peak RSS, MiB", [lv["peak_rss_mib"] for lv in levels], 200.0),
    )
    for ax, (label, values, target) in zip(axes, panels, strict=True):
        ax.plot(streams, values, marker="o", color=_OURS)
        if target is not None:
            ax.axhline(target, color=_PEER, linewidth=0.8, linestyle="--", label=f"target at 512: {target:g}")
            ax.legend(fontsize=8)
        ax.set(xscale="log", xlabel="simultaneous streams", title=label)
        ax.set_xticks(streams, [str(s) for s in streams])
        ax.set_ylim(bottom=0)
    fig.suptitle(f"Concurrency through llama-orch ({conc['tokens_per_stream']} tokens per stream)\n{when}", fontsize=9)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: re-runs diff only on figures
    plt.close(fig)
    return path
