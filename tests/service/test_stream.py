"""The SSE stream of a task: framing, order, exactly one terminal event, one reader, cancel, disconnect, and
readers that are slow or never come (they must not hold an engine slot)."""

from __future__ import annotations

import httpx

from llama_orch.adapters.mock import Fault
from tests.service.helpers import (
    Frame,
    StreamReader,
    WideMock,
    blocked,
    cancel,
    check_envelope,
    check_order,
    inflight,
    open_stream,
    parse_sse,
    read_stream,
    run_task,
    scrape,
    service,
    start_blocker,
    submit,
    tokens,
    total,
    wait_idle,
    wait_until,
)

ENDLESS = {"tokens": 1_000_000, "token_delay_s": 0.002}  # with LONG: a task that runs until it is stopped
LONG = {"prompt": "long", "max_tokens": 32768}


def test_frames_order_and_schema() -> None:
    with service().running() as http:
        answer = http.get(f"/v1/tasks/{submit(http, {'prompt': 'frames', 'max_tokens': 7})['task_id']}/stream")
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-cache"
        frames = parse_sse(answer.content)  # strict framing; every event valid against events.json
        terminal = check_order(frames)
        assert [f.event for f in frames] == ["started"] + ["token"] * 7 + ["end"]
        assert terminal.data["tokens_out"] == 7 and terminal.data["finish_reason"] == "length"
        assert frames[0].data["pool_id"] == "default" and frames[0].data["engine"] == "mock"


def test_failure_mid_stream_is_the_one_terminal_event() -> None:
    svc = service()
    svc.mock().inject(Fault("in_stream_error", after_tokens=2))
    with svc.running() as http:
        frames = run_task(http, {"prompt": "x"})
    assert [f.event for f in frames] == ["started", "token", "token", "error"], frames
    assert frames[-1].data["code"] == "INTERNAL" and frames[-1].data["engine"] == "mock"


def test_stream_opened_late_gets_every_event() -> None:
    svc = service()
    with svc.running() as http:
        task_id = submit(http, {"prompt": "late", "max_tokens": 12})["task_id"]
        wait_until(lambda: svc.orch.runs[task_id].state == "done", "the task ran to its end unread")
        frames = read_stream(http, task_id)
    assert len(tokens(frames)) == 12 and frames[-1].event == "end", frames


def test_second_reader_is_409_and_unknown_task_404() -> None:
    svc = service(mock=ENDLESS)
    with svc.running() as http:
        task_id = submit(http, LONG)["task_id"]
        with open_stream(http, task_id) as reader:
            reader.until(lambda f: f.event == "token")
            check_envelope(http.get(f"/v1/tasks/{task_id}/stream"), 409, "CONFLICT")
            cancel(http, task_id)
            assert reader.rest()[-1].data["finish_reason"] == "canceled"
        check_envelope(http.get("/v1/tasks/no-such-task/stream"), 404, "NOT_FOUND")
        check_envelope(http.get("/v1/tasks/bad%20id/stream"), 404, "NOT_FOUND")


def test_cancel_mid_stream_ends_with_canceled() -> None:
    svc = service(mock=ENDLESS)
    with svc.running() as http:
        task_id = submit(http, LONG)["task_id"]
        with open_stream(http, task_id) as reader:
            reader.until(lambda f: f.event == "token" and f.data["i"] == 2)
            cancel(http, task_id)
            frames = reader.rest()  # check_order: the end is last, so no token follows it
        end = frames[-1]
        assert end.event == "end" and end.data["finish_reason"] == "canceled", end
        assert 3 <= len(tokens(frames)) < ENDLESS["tokens"]
        wait_idle(svc, http)


def test_cancel_of_a_queued_task_never_reaches_the_engine() -> None:
    svc = blocked()
    with svc.running() as http:
        start_blocker(http)
        queued = submit(http, {"prompt": "q", "task_id": "queued"})
        assert queued["queue_position"] == 0
        cancel(http, "queued")
        frames = read_stream(http, "queued")
        assert [f.event for f in frames] == ["end"] and frames[0].data["finish_reason"] == "canceled", frames
        assert frames[0].data["tokens_out"] == 0
        cancel(http, "blocker")
        wait_idle(svc, http)
        assert svc.mock().opened == ["blocker"]  # type: ignore[attr-defined]


def test_cancel_of_unknown_or_finished_task() -> None:
    svc = service()
    with svc.running() as http:
        check_envelope(http.post("/v1/tasks/never-was/cancel"), 404, "NOT_FOUND")
        check_envelope(http.post("/v1/tasks/-bad-/cancel"), 404, "NOT_FOUND")
        task_id = submit(http, {"prompt": "x", "max_tokens": 3})["task_id"]
        wait_until(lambda: svc.orch.runs[task_id].state == "done", "the task ended unread")
        cancel(http, task_id)  # already finished: 204, and the outcome stays what it was
        frames = read_stream(http, task_id)
        assert frames[-1].event == "end" and frames[-1].data["finish_reason"] == "length", frames
        check_envelope(http.post(f"/v1/tasks/{task_id}/cancel"), 404, "NOT_FOUND")  # read, then forgotten


def test_client_disconnect_cancels_the_engine_request_after_the_hold() -> None:
    svc = service(mock=ENDLESS, stream_hold_ms=400)
    with svc.running() as http:
        task_id = submit(http, LONG)["task_id"]
        with open_stream(http, task_id) as reader:
            reader.until(lambda f: f.event == "token" and f.data["i"] == 1)
            assert svc.engine_busy() == 1
        # The task waits stream_hold_ms for a reconnect (with Last-Event-ID), then its engine request is closed.
        wait_idle(svc, http)
        metrics = scrape(http)
        assert total(metrics, "tasks_canceled_total", reason="disconnect") == 1
        assert total(metrics, "tasks_finished_total", outcome="canceled") == 1
        wait_until(lambda: task_id not in svc.orch.runs, "the unread task was never forgotten")


def test_stalled_reader_does_not_hold_the_replica() -> None:
    svc = service(adapter_cls=WideMock, mock={"tokens": 1_000_000}, stream_buffer_events=16, stream_hold_ms=300)
    with svc.running() as http, httpx.Client(base_url=svc.url, timeout=30.0) as stalled:
        task_id = submit(http, LONG)["task_id"]
        with open_stream(stalled, task_id) as reader:
            reader.until(lambda f: f.event == "token")
            # ...and the reader stops reading. Within stream_hold_ms of a full buffer the engine request ends.
            wait_idle(svc, http)
            other = run_task(http, {"prompt": "unaffected", "max_tokens": 9})
            assert len(tokens(other)) == 9 and other[-1].event == "end"
            frames = reader.rest()  # reading again: everything kept, then the terminal event
        terminal = frames[-1]
        assert terminal.event == "error" and terminal.data["code"] == "SLOW_CONSUMER", terminal
        assert len(tokens(frames)) < 1_000_000
        metrics = scrape(http)
        assert total(metrics, "tasks_canceled_total", reason="slow_consumer") == 1
        assert total(metrics, "tasks_finished_total", outcome="error") == 1
        assert total(metrics, "tasks_finished_total", outcome="end") == 1


def test_stream_never_opened_is_canceled_after_hold() -> None:
    svc = service(stream_hold_ms=200)
    svc.mock().inject(Fault("stall_first"))  # the engine holds the slot until the task is canceled
    with svc.running() as http:
        submit(http, LONG)
        wait_until(lambda: inflight(http) == {"m0": 1}, "the task holds the replica")
        wait_idle(svc, http)
        metrics = scrape(http)
        assert total(metrics, "tasks_canceled_total", reason="slow_consumer") == 1
        assert total(metrics, "tasks_finished_total", outcome="error") == 1


def test_unread_producer_with_full_buffer_is_canceled() -> None:
    svc = service(mock={"tokens": 1_000_000}, stream_buffer_events=16, stream_hold_ms=200)
    with svc.running() as http:
        submit(http, LONG)
        wait_idle(svc, http)
        assert total(scrape(http), "tasks_canceled_total", reason="slow_consumer") == 1


def test_reconnect_with_last_event_id_gets_exactly_the_rest() -> None:
    svc = service(mock={"tokens": 60, "token_delay_s": 0.002})
    with svc.running() as http:
        task_id = submit(http, {"prompt": "resume", "max_tokens": 60})["task_id"]
        with open_stream(http, task_id) as reader:
            reader.until(lambda f: f.event == "token" and f.data["i"] == 4)
            first = reader.frames
        with open_stream(http, task_id, **{"Last-Event-ID": str(first[-1].id)}) as reader:
            rest = reader.drain()
        check_order(first + rest)  # every event once, ids 0, 1, 2, ... and one terminal event
        assert rest[-1].event == "end" and len(tokens(first + rest)) == 60


def test_reconnect_with_after_and_a_second_disconnect() -> None:
    svc = service(mock={"tokens": 40, "token_delay_s": 0.002})
    with svc.running() as http:
        task_id = submit(http, {"prompt": "resume", "max_tokens": 40})["task_id"]
        seen: list[Frame] = []
        for stop_at in (3, 11):
            after = f"?after={seen[-1].id}" if seen else ""
            with http.stream("GET", f"/v1/tasks/{task_id}/stream{after}") as response:
                reader = StreamReader(response)
                reader.until(lambda f, n=stop_at: f.event == "token" and f.data["i"] == n)
                seen += reader.frames
        answer = http.get(f"/v1/tasks/{task_id}/stream", params={"after": seen[-1].id})
        frames = seen + parse_sse(answer.content)
        check_order(frames)
        assert len(tokens(frames)) == 40


def test_resume_from_an_id_no_longer_kept_is_a_conflict() -> None:
    svc = service(mock=ENDLESS, stream_buffer_events=16)
    with svc.running() as http:
        task_id = submit(http, LONG)["task_id"]
        with open_stream(http, task_id) as reader:
            reader.until(lambda f: f.event == "token" and f.data["i"] == 150)
        check_envelope(http.get(f"/v1/tasks/{task_id}/stream", params={"after": 0}), 409, "CONFLICT")
        check_envelope(http.get(f"/v1/tasks/{task_id}/stream", params={"after": "x"}), 400, "INVALID_PARAMS")
        cancel(http, task_id)
        with open_stream(http, task_id, **{"Last-Event-ID": str(reader.frames[-1].id)}) as resumed:
            frames = resumed.drain()
        assert frames[-1].event == "end" and frames[-1].data["finish_reason"] == "canceled"
        assert frames[0].id == reader.frames[-1].id + 1


def test_a_resuming_reader_takes_over_from_a_connection_not_yet_seen_gone() -> None:
    svc = service(mock={"tokens": 50, "token_delay_s": 0.002})
    with svc.running() as http, httpx.Client(base_url=svc.url, timeout=30.0) as other:
        task_id = submit(http, {"prompt": "resume", "max_tokens": 50})["task_id"]
        with open_stream(http, task_id) as old:
            old.until(lambda f: f.event == "token" and f.data["i"] == 4)
            check_envelope(other.get(f"/v1/tasks/{task_id}/stream"), 409, "CONFLICT")  # not a resume: refused
            with open_stream(other, task_id, **{"Last-Event-ID": str(old.frames[-1].id)}) as new:
                rest = new.drain()
        check_order(old.frames + rest)
        assert rest[-1].event == "end" and len(tokens(old.frames + rest)) == 50
