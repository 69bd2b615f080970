"""The bench machinery end to end at toy size (decoding section only): report files and their keys, never timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The decoders it compares with come with the `bench` extra (python xtask.py bench installs it).
for module in ("httpx_sse", "openai", "matplotlib"):
    pytest.importorskip(module)

from llama_orch_devtools.bench import decoding  # noqa: E402
from llama_orch_devtools.bench.__main__ import main  # noqa: E402
from llama_orch_devtools.bench.harness import percentile  # noqa: E402


def test_decoding_section_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    assert main(["--quick", "--only", "decoding", "--out", str(tmp_path)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    assert {"generated_at", "machine", "sizes", "sections", "skipped", "targets"} <= results.keys()
    assert {"cpu", "cores", "ram_gib", "python", "packages"} <= results["machine"].keys()
    assert list(results["sections"]) == ["decoding"] and results["skipped"] == {}
    levels = results["sections"]["decoding"]["levels"]
    assert set(levels) == {"frames", "json"}
    for chunkings in levels.values():
        for figures in chunkings.values():
            assert set(figures["events_per_s"]) == {"generated", "httpx-sse", "openai"}
            assert {"vs_httpx_sse", "vs_openai"} <= figures.keys()
    assert "## Stream decoding" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "decoding.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_decoder_reads_the_same_events_from_any_chunking() -> None:
    events = decoding.recorded_stream(50)
    for chunks in (events, decoding.segments(events, 7)):
        frames = [decode(chunks) for decode in decoding.LEVELS["frames"].values()]
        assert frames[0] == frames[1] == frames[2] and len(frames[0]) == 50


def test_percentile_is_nearest_rank_and_nan_when_empty() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([], 50) != percentile([], 50)  # NaN
