"""The vLLM simulator answers every recorded request (tests/fixtures/vllm-recordings, from a real vLLM) with the
recorded status, content type and shapes: the first, middle and closing chunks of each stream and how many
chunks carry no token, error bodies, JSON answers, the metric families and their labels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from llama_orch.simulators import ENGINES, SimulatorConfig
from llama_orch_devtools.vllm_record import FIXTURES, SERVED_NAME
from tests.support.recordings import Recording, shape, sse_events

RECORDINGS = sorted(FIXTURES.glob("*.json"))
TOKENS = 4  # fewer than the recordings have: shapes, not lengths, must agree
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? \S+$", re.MULTILINE)


async def _answer(recording: Recording) -> httpx.Response:
    app = ENGINES["vllm"](SimulatorConfig(tokens=TOKENS, model=SERVED_NAME))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://sim") as client:
        return await client.request(recording.method, recording.path, json=recording.request_json)


def _recorded_tokens(events: list[Any], request: dict[str, Any]) -> int:
    """Tokens generated: the usage chunk's count, else `max_tokens` for a stream that ended at its length."""
    chunks = [e for e in events if isinstance(e, dict)]
    if usage := chunks[-1].get("usage"):
        return int(usage["completion_tokens"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length", "cannot count the tokens of this recording"
    return int(request["max_tokens"])


def _families(text: str) -> dict[str, set[str]]:
    """Each metric's name and the label names of its samples (comments and values left out)."""
    found: dict[str, set[str]] = {}
    for name, labels in _SAMPLE.findall(text):
        found.setdefault(name, set()).update(re.findall(r'(\w+)="', labels))
    return found


@pytest.mark.parametrize("meta_path", RECORDINGS, ids=[p.stem for p in RECORDINGS])
async def test_vllm_simulator_answers_with_the_recorded_shapes(meta_path: Path) -> None:
    recording = Recording.load(meta_path)
    answer = await _answer(recording)
    assert answer.status_code == recording.status, answer.content[:300]
    assert answer.headers.get("content-type", "") == recording.content_type
    if recording.content_type.startswith("text/event-stream"):
        ours, theirs = sse_events(answer.content), sse_events(recording.body)
        # The first two and the last three: a chat's role chunk, a token, the finish, usage, [DONE].
        assert [shape(e) for e in ours[:2] + ours[-3:]] == [shape(e) for e in theirs[:2] + theirs[-3:]]
        generated = min(TOKENS, recording.request_json["max_tokens"])  # what the simulator was configured to send
        assert len(ours) - generated == len(theirs) - _recorded_tokens(theirs, recording.request_json), "not tokens"
        if recording.path == "/v1/chat/completions":  # the role chunk, before any token
            assert ours[0]["choices"][0]["delta"] == theirs[0]["choices"][0]["delta"]
    elif recording.content_type.startswith("text/plain"):
        ours_families, theirs_families = _families(answer.text), _families(recording.body.decode())
        assert {name: theirs_families.get(name) for name in ours_families} == ours_families
    elif recording.path == "/version":  # the release the simulator models
        assert answer.json() == json.loads(recording.body)
    elif recording.body:
        assert shape(answer.json()) == shape(json.loads(recording.body))
    else:
        assert answer.content == b""
