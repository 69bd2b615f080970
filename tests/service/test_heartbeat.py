"""SSE heartbeats: a comment frame every `sse_heartbeat_ms` while no other frame was sent (in the queue, in
prefill, between slow tokens), so proxies with an idle timeout never cut a stream that is only waiting."""

from __future__ import annotations

from llama_orch.cli import build_parser
from llama_orch.serve_config import config_from_args
from tests.service.helpers import blocked, cancel, parse_sse, run_task, service, start_blocker, submit

PING = b": ping\n\n"


def test_a_queued_task_stream_gets_heartbeats() -> None:
    svc = blocked(sse_heartbeat_ms=100)
    with svc.running() as http:
        start_blocker(http)
        submit(http, {"prompt": "x", "task_id": "waiting"})
        seen = b""
        with http.stream("GET", "/v1/tasks/waiting/stream") as response:
            chunks = response.iter_bytes()
            while seen.count(PING) < 3:  # only heartbeats can arrive: the task waits behind the blocker
                seen += next(chunks)
        assert parse_sse(seen) == [] and seen == PING * seen.count(PING), seen
        cancel(http, "blocker")


def test_heartbeats_between_slow_tokens_keep_the_frames_intact() -> None:
    svc = service(sse_heartbeat_ms=50, mock={"tokens": 4, "token_delay_s": 0.2})
    with svc.running() as http:
        task_id = submit(http, {"prompt": "x", "max_tokens": 4})["task_id"]
        raw = http.get(f"/v1/tasks/{task_id}/stream").content
        assert raw.count(PING) >= 3, raw
        frames = parse_sse(raw)  # comment frames are skipped; every event frame is whole and in order
        assert [f.event for f in frames] == ["started", "token", "token", "token", "token", "end"], frames


def test_no_heartbeat_while_frames_flow() -> None:
    with service(sse_heartbeat_ms=60_000).running() as http:
        task_id = submit(http, {"prompt": "x", "max_tokens": 8})["task_id"]
        raw = http.get(f"/v1/tasks/{task_id}/stream").content
        assert PING not in raw
        assert run_task(http, {"prompt": "y"})[-1].event == "end"


def test_the_heartbeat_interval_is_a_flag_and_defaults_to_15s() -> None:
    parser = build_parser()
    base = ["serve", "--engine", "llamacpp", "--engine-url", "http://127.0.0.1:8080"]
    config, _ = config_from_args(parser.parse_args([*base, "--sse-heartbeat-ms", "500"]))
    assert config.sse_heartbeat_ms == 500
    config, _ = config_from_args(parser.parse_args(base))
    assert (config.sse_heartbeat_ms or 15_000) == 15_000 and config.model_dump().get("sse_heartbeat_ms") in (
        None,
        15_000,
    )
