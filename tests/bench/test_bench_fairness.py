"""The bench's fairness machinery: one reader for every side, pair ratios, the byte proxy, the profile split and
the load watch. Behaviour only, never timings."""

from __future__ import annotations

import asyncio
import json
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_orch_devtools.bench import stages
from llama_orch_devtools.bench.byte_proxy import serve
from llama_orch_devtools.bench.client import (
    StreamResult,
    decode_arrivals,
    llamacpp_native,
    orchestrator_stream,
)
from llama_orch_devtools.bench.harness import free_port
from llama_orch_devtools.bench.machine_load import LoadWatch, descendants, process_cpu_s
from llama_orch_devtools.bench.measure import pair_ratios


def test_tokens_are_stamped_with_the_arrival_of_the_chunk_that_completed_their_frame() -> None:
    # The second frame is split across chunks: it counts from the chunk that ended it, not the one it began in.
    arrivals = [
        (1.0, b'data: {"content":"a","stop":false}\n\ndata: {"content":'),
        (2.0, b'"b","stop":false}\n\n'),
        (3.0, b'data: {"content":"","stop":true}\n\n'),
    ]
    result = StreamResult(0.0)
    decode_arrivals(arrivals, llamacpp_native, result)
    assert result.text == ["a", "b"] and result.token_times == [1.0, 2.0] and result.terminals == ["stop"]


def test_the_same_reader_reads_the_relays_frames() -> None:
    frames = b'id: 1\nevent: token\ndata: {"t":"x","i":0}\n\nid: 2\nevent: end\ndata: {"tokens_out":1}\n\n'
    result = StreamResult(0.0)
    decode_arrivals([(5.0, frames)], orchestrator_stream, result)
    assert result.text == ["x"] and result.token_times == [5.0] and result.terminals == ["end"]


def _stream(rate: float, error: str | None = None) -> StreamResult:
    # `rate` tokens/s: 100 tokens over 100/rate seconds.
    result = StreamResult(0.0, token_times=[0.0] * 100, error=error)
    result.finished = 100 / rate
    return result


def test_pair_ratios_are_per_round_with_median_and_spread() -> None:
    direct = [_stream(100), _stream(200), _stream(100), _stream(100), _stream(100)]
    relayed = [_stream(90), _stream(100), _stream(80), _stream(70), _stream(95, error="broken")]
    figures = pair_ratios(direct, relayed)
    # The errored pair is left out; the others are 0.9, 0.5, 0.8, 0.7.
    assert figures["pairs"] == 4 and figures["min"] == 0.5 and figures["max"] == 0.9
    assert figures["median"] == pytest.approx(0.75)


def test_pair_ratios_without_a_good_pair_are_zero_not_an_error() -> None:
    assert pair_ratios([_stream(100, error="x")], [_stream(100)])["pairs"] == 0


def test_the_byte_proxy_forwards_both_ways_unchanged() -> None:
    async def scenario() -> bytes:
        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(request)).encode() + b"\r\n\r\n" + request)
            await writer.drain()
            writer.close()

        engine = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = free_port()
        proxy = asyncio.create_task(serve(port, "127.0.0.1", engine.sockets[0].getsockname()[1]))
        for _ in range(100):  # until the proxy listens
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.01)
        writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = await reader.read()
        writer.close()
        proxy.cancel()
        engine.close()
        return answer

    answer = asyncio.run(scenario())
    assert answer.endswith(b"\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")


def _write_stats(path: Path, stats: dict[tuple[str, int, str], tuple[int, int, float, float, dict]]) -> None:
    path.write_bytes(marshal.dumps(stats))


def test_profile_split_charges_a_builtin_to_its_callers_stages(tmp_path: Path) -> None:
    decode = ("/x/llama_orch_runtime/streaming.py", 1, "feed")
    parse = ("/x/llama_orch_runtime/streaming.py", 2, "parse")
    split_bytes = ("~", 0, "<method 'split' of 'bytes' objects>")
    loads = ("~", 0, "<built-in method loads>")
    stats = {
        decode: (1, 1, 0.2, 1.0, {}),
        parse: (1, 1, 0.1, 0.5, {}),
        # 0.4 s of split: 0.3 from the decoder, 0.1 from the validator.
        split_bytes: (2, 2, 0.4, 0.4, {decode: (1, 1, 0.3, 0.3), parse: (1, 1, 0.1, 0.1)}),
        loads: (1, 1, 0.3, 0.3, {loads: (1, 1, 0.3, 0.3)}),  # only itself above it: no stage claims it
    }
    path = tmp_path / "p.prof"
    _write_stats(path, stats)
    seconds = stages.split(path)
    assert seconds["decode"] == pytest.approx(0.5) and seconds["validate"] == pytest.approx(0.2)
    assert seconds["other"] == pytest.approx(0.3)
    assert sum(seconds.values()) == pytest.approx(1.0)
    figures = stages.per_token(seconds, 1000, unprofiled_us=10.0)
    assert figures["profiled_us_per_token"]["decode"] == pytest.approx(500.0)
    assert figures["scaled_us_per_token"]["decode"] == pytest.approx(5.0)  # half the profile, of 10 µs


def test_load_watch_counts_the_bench_and_its_children() -> None:
    with LoadWatch(period_s=0.05) as watch:
        child = subprocess.Popen([sys.executable, "-c", "sum(range(3_000_000))"])
        assert child.pid in descendants(os.getpid())
        child.wait()
    figures = watch.figures
    assert {"wall_s", "load_avg_1m", "busy_cores", "bench_cores", "other_cores"} <= figures.keys()
    assert figures["bench_cores"] >= 0 and figures["other_cores"] >= 0
    assert process_cpu_s(os.getpid()) > 0


def test_the_committed_run_renders_every_section_target_and_chart(tmp_path: Path) -> None:
    """The report of a full run (the committed one: its keys, never its figures) has every section, every target
    of the issue and both charts."""
    from llama_orch_devtools.bench import report

    committed = Path(__file__).resolve().parents[2] / "bench" / "results" / "results.json"
    results = json.loads(committed.read_text())
    text = report.markdown(results)
    for heading in ("Machine load", "Native route", "Same route for both relays", "Profile", "Scale-out cost"):
        assert f"## {heading}" in text
    names = " ".join(t["name"] for t in report.targets(results["sections"]))
    for wanted in ("relay throughput", "added first-token latency p50", "p99", "512", "LiteLLM", "scale-out"):
        assert wanted in names
    written = {path.name for path in report.charts(results, tmp_path)}
    assert {"relays.png", "concurrency.png"} <= written
