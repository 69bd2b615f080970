"""Sessions shared by every instance (scale-out mode): the Redis hash `lo:s:{session}` (turns, tokens, the bound
pool and replica, warmth) expires with the session TTL. An instance loads a session before it admits a turn or
answers about it, and writes each turn it ran through to Redis (counts incremented there, so concurrent turns
on two instances both count)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from llama_orch.service.sessions import Session, SessionStore
from llama_orch.service.state.redis_state import RedisState

__all__ = ["SharedSessions"]


class SharedSessions(SessionStore):
    def __init__(
        self, store: SessionStore, state: RedisState, spawn: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        super().__init__(int(store.ttl_s * 1000), store.max_turns)
        self._state = state
        self._spawn = spawn

    async def load(self, session_id: str) -> None:
        """This instance's copy of the session, as Redis has it now (gone when Redis has none)."""
        fields, ttl_ms = await self._state.session(session_id)
        if not fields:
            self._sessions.pop(session_id, None)
            return
        self._sessions[session_id] = Session(
            session_id,
            self._now() + ttl_ms / 1000.0,
            turns=int(fields.get("turns", 0)),
            tokens_used=int(fields.get("tokens", 0)),
            pool_id=fields.get("pool") or None,
            replica_id=fields.get("replica") or None,
            warm=fields.get("warm") == "1",
        )

    def record_turn(self, session_id: str, pool_id: str, replica_id: str, tokens: int, keep_cache: bool) -> None:
        super().record_turn(session_id, pool_id, replica_id, tokens, keep_cache)
        warm = self._sessions[session_id].warm
        self._spawn(self._state.save_turn(session_id, pool_id, replica_id, tokens, warm, int(self.ttl_s * 1000)))

    async def forget(self, session_id: str) -> bool:
        self.delete(session_id)
        return await self._state.delete_session(session_id)
