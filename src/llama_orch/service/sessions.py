"""Sessions: metadata only (no prompt or output is stored), a TTL refreshed by each turn, a turn budget, and the
replica the session sticks to so the engine's prompt cache can be reused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from llama_orch_gen.contracts.session import SessionInfo

__all__ = ["Session", "SessionStore"]


@dataclass
class Session:
    session_id: str
    expires_at: float
    turns: int = 0
    tokens_used: int = 0
    pool_id: str | None = None
    replica_id: str | None = None
    warm: bool = False  # the last turn ran on `replica_id` and asked to keep the cache


class SessionStore:
    def __init__(self, ttl_ms: int, max_turns: int) -> None:
        self.ttl_s = ttl_ms / 1000.0
        self.max_turns = max_turns
        self._sessions: dict[str, Session] = {}

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is not None and session.expires_at <= self._now():
            del self._sessions[session_id]
            return None
        return session

    def open(self, session_id: str) -> Session:
        """The live session, or a new one."""
        session = self.get(session_id)
        if session is None:
            session = self._sessions[session_id] = Session(session_id, self._now() + self.ttl_s)
        return session

    def record_turn(self, session_id: str, pool_id: str, replica_id: str, tokens: int, keep_cache: bool) -> None:
        session = self.open(session_id)
        session.turns += 1
        session.tokens_used += tokens
        session.warm = keep_cache and session.replica_id in (None, replica_id)
        session.pool_id, session.replica_id = pool_id, replica_id
        session.expires_at = self._now() + self.ttl_s

    def delete(self, session_id: str) -> bool:
        return self._sessions.pop(session_id, None) is not None

    def sweep(self) -> None:
        now = self._now()
        for session_id in [s for s, session in self._sessions.items() if session.expires_at <= now]:
            del self._sessions[session_id]

    def info(self, session: Session) -> SessionInfo:
        return SessionInfo(
            session_id=session.session_id,
            ttl_ms_remaining=max(0, int((session.expires_at - self._now()) * 1000)),
            turns=session.turns,
            max_turns=self.max_turns,
            tokens_used=session.tokens_used,
            kv_warmth=session.warm,
            pool_id=session.pool_id,
            replica_id=session.replica_id,
        )
