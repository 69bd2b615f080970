"""SSE heartbeats: a comment frame every `sse_heartbeat_ms` while no other frame was sent (in the queue, in
prefill, between slow tokens), so idle-timeout proxies keep the stream; readers skip comments."""

from __future__ import annotations

import re

from tests.service.helpers import GUARD_S, blocked, check_order, parse_sse, service, start_blocker, submit

HEARTBEAT = re.compile(r"^:[^\n]*\n\n", re.MULTILINE)


def split_heartbeats(raw: bytes) -> tuple[int, bytes]:
    """(comment frames, the stream without them)."""
    text, count = HEARTBEAT.subn("", raw.decode())
    return count, text.encode()


def test_slow_tokens_get_heartbeats_between_them_and_the_events_are_intact() -> None:
    svc = service(mock={"token_delay_s": 0.25}, sse_heartbeat_ms=40)
    with svc.running() as http:
        task_id = submit(http, {"prompt": "slow", "max_tokens": 3})["task_id"]
        raw = http.get(f"/v1/tasks/{task_id}/stream").content
    beats, rest = split_heartbeats(raw)
    assert beats >= 2, raw
    frames = parse_sse(rest)
    check_order(frames)
    assert [f.event for f in frames] == ["started", "token", "token", "token", "end"]


def test_a_queued_task_gets_heartbeats_before_its_first_event() -> None:
    svc = blocked(sse_heartbeat_ms=40)
    with svc.running() as http:
        start_blocker(http)
        queued = submit(http, {"prompt": "waits"})["task_id"]
        seen = b""
        with http.stream("GET", f"/v1/tasks/{queued}/stream", timeout=GUARD_S) as answer:
            for chunk in answer.iter_bytes():
                seen += chunk
                if split_heartbeats(seen)[0] >= 3:
                    break
        beats, rest = split_heartbeats(seen)
        assert beats >= 3 and rest == b"", seen  # nothing else was sent: the task is still queued


def test_no_heartbeat_when_frames_flow() -> None:
    svc = service(sse_heartbeat_ms=60_000)
    with svc.running() as http:
        task_id = submit(http, {"prompt": "fast", "max_tokens": 5})["task_id"]
        raw = http.get(f"/v1/tasks/{task_id}/stream").content
    assert split_heartbeats(raw)[0] == 0


def test_the_flag_sets_the_interval() -> None:
    from llama_orch.cli import build_parser
    from llama_orch.serve_config import config_from_args

    args = build_parser().parse_args(["serve", "--sse-heartbeat-ms", "500"])
    config, _ = config_from_args(args, environ={})
    assert config.sse_heartbeat_ms == 500
    args = build_parser().parse_args(["serve"])
    assert config_from_args(args, environ={})[0].sse_heartbeat_ms == 15000
