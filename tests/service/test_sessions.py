"""Sessions: metadata that grows per turn, a TTL, deletion, and affinity to one replica."""

from __future__ import annotations

from tests.service.helpers import check_envelope, mock_pool, run_task, service

TTL_MS = 60_000


def test_session_grows_per_turn_and_can_be_forgotten() -> None:
    with service(session_ttl_ms=TTL_MS, session_max_turns=3).running() as http:
        check_envelope(http.get("/v1/sessions/s-1"), 404, "NOT_FOUND")
        used = 0
        for turn in (1, 2):
            frames = run_task(http, {"prompt": "x", "session_id": "s-1", "max_tokens": 4 + turn})
            used += frames[-1].data["tokens_out"] + frames[-1].data.get("tokens_in", 0)
            answer = http.get("/v1/sessions/s-1")
            assert answer.status_code == 200 and answer.headers["x-correlation-id"]
            info = answer.json()
            assert (info["session_id"], info["turns"], info["max_turns"]) == ("s-1", turn, 3), info
            assert info["tokens_used"] == used > 0
            assert 0 < info["ttl_ms_remaining"] <= TTL_MS
            assert (info["pool_id"], info["replica_id"]) == ("default", "m0")
        run_task(http, {"prompt": "x", "session_id": "s-1"})
        refusal = check_envelope(
            http.post("/v1/tasks", json={"prompt": "x", "session_id": "s-1"}), 400, "INVALID_PARAMS"
        )
        assert refusal["field"] == "session_id"  # the turn budget is spent
        assert http.delete("/v1/sessions/s-1").status_code == 204
        check_envelope(http.get("/v1/sessions/s-1"), 404, "NOT_FOUND")
        check_envelope(http.delete("/v1/sessions/s-1"), 404, "NOT_FOUND")
        check_envelope(http.get("/v1/sessions/-bad"), 404, "NOT_FOUND")


def replicas_used(session_id: str | None, kv_hint: str | None, turns: int = 4) -> list[str]:
    with service(mock_pool(replicas=("m0", "m1"))).running() as http:
        used = []
        for _ in range(turns):
            body = {"prompt": "x", "max_tokens": 2}
            if session_id:
                body["session_id"] = session_id
            if kv_hint:
                body["kv_hint"] = kv_hint
            used.append(run_task(http, body)[0].data["replica_id"])
        return used


def test_without_a_session_tasks_spread_over_replicas() -> None:
    assert set(replicas_used(None, None)) == {"m0", "m1"}  # the control: least-loaded alternates


def test_session_with_kv_reuse_sticks_to_one_replica() -> None:
    used = replicas_used("sticky", "reuse")
    assert len(set(used)) == 1, used


def test_session_affinity_reports_kv_warmth() -> None:
    with service(mock_pool(replicas=("m0", "m1"))).running() as http:
        for _ in range(2):
            run_task(http, {"prompt": "x", "max_tokens": 2, "session_id": "warm", "kv_hint": "reuse"})
        info = http.get("/v1/sessions/warm").json()
        assert info["kv_warmth"] is True and info["turns"] == 2, info
