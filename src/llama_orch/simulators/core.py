"""What every engine simulator shares: deterministic tokens from (prompt, seed), the configuration and its
faults, and the one streaming response that applies delays and faults. Engine modules only say how their engine
frames a chunk, a final chunk, an in-stream error and an error body.

Faults (`Fault.kind`), per generation request (`times` of them, then the engine behaves):

    refuse           nothing listens: the connection is refused (served by the runner, `refusing_socket`)
    loading          503 "loading" with the engine's error body
    overloaded       429 with `Retry-After`
    server_error     a 5xx (`status`, default 500)
    stall_first      silence before the first token (llama.cpp: before the response headers too)
    stall_mid        silence after `after_tokens` tokens
    reset_mid        the connection drops after `after_tokens` tokens (no clean end of the body)
    malformed        a chunk that is not JSON after `after_tokens` tokens, then the body ends
    in_stream_error  the engine's in-stream error item after `after_tokens` tokens, then the body ends
    truncated        the body ends after `after_tokens` tokens without the engine's terminal chunk

A non-streamed answer (`one_shot`) takes the same faults: a stall holds it back, reset/malformed/truncated drop the
connection halfway through its body.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "Fault",
    "FaultBook",
    "FaultKind",
    "Generation",
    "InjectedReset",
    "Shape",
    "SimulatorConfig",
    "SimulatorStream",
    "generate",
    "one_shot",
    "prompt_pieces",
    "read_object",
    "refusal",
    "stop_at",
]


class FaultKind(StrEnum):
    REFUSE = "refuse"
    LOADING = "loading"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    STALL_FIRST = "stall_first"
    STALL_MID = "stall_mid"
    RESET_MID = "reset_mid"
    MALFORMED = "malformed"
    IN_STREAM_ERROR = "in_stream_error"
    TRUNCATED = "truncated"


# Answered before any token, with a status (or, where the engine does so, as an in-stream error under 200).
REFUSALS = frozenset({FaultKind.LOADING, FaultKind.OVERLOADED, FaultKind.SERVER_ERROR})
REFUSAL_MESSAGES = {
    FaultKind.LOADING: "Loading model",
    FaultKind.OVERLOADED: "Model is overloaded",
    FaultKind.SERVER_ERROR: "simulated engine failure",
}


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    times: int | None = None  # generation requests it hits, then the engine behaves; None: every request
    after_tokens: int = 2  # where a mid-stream fault strikes
    status: int = 500  # server_error's status
    retry_after_s: int = 1  # overloaded's Retry-After

    @property
    def status_code(self) -> int:
        return {FaultKind.LOADING: 503, FaultKind.OVERLOADED: 429}.get(self.kind, self.status)

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`KIND[,key=value...]`, e.g. `server_error,times=2,status=502` or `stall_mid,after_tokens=3`."""
        kind, *options = text.split(",")
        known = {f.name for f in fields(cls)} - {"kind"}
        values: dict[str, int] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in known or not value.lstrip("-").isdigit():
                raise ValueError(f"bad fault option {option!r} (known: {', '.join(sorted(known))}=<int>)")
            values[key] = int(value)
        return cls(FaultKind(kind), **values)


@dataclass(frozen=True)
class SimulatorConfig:
    tokens: int = 16  # tokens a request gets unless it asks for fewer
    delay_ms: float = 0.0  # before each token
    faults: tuple[Fault, ...] = ()
    model: str | None = None  # the served model's name (each engine has its own default)
    slots: int = 2
    stall_s: float = 3600.0  # how long a stall lasts (a client that gives up ends it earlier)

    def with_faults(self, *faults: Fault) -> SimulatorConfig:
        return replace(self, faults=faults)


class FaultBook:
    """The faults still to serve: each generation request takes the first one with `times` left."""

    def __init__(self, faults: tuple[Fault, ...]) -> None:
        self._left: list[list[Any]] = [[fault, fault.times] for fault in faults]

    def take(self) -> Fault | None:
        for entry in self._left:
            fault, left = entry
            if left is None:
                return fault  # type: ignore[no-any-return]
            if left > 0:
                entry[1] = left - 1
                return fault  # type: ignore[no-any-return]
        return None

    def active(self, kind: FaultKind) -> bool:
        """Without taking it: is a fault of `kind` still to come (e.g. /health answers 503 while `loading`)?"""
        return any(fault.kind is kind and left != 0 for fault, left in self._left)


# --- deterministic text ----------------------------------------------------------------------------------------

# Whole characters only (a token never splits a UTF-8 sequence); several multi-byte ones.
_WORDS = (
    " the",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " a",
    " lazy",
    " dog",
    ",",
    ".",
    " été",
    " naïve",
    " 日本",
    " 語",
    " 🙂",
    " Straße",
    " über",
    " smörgås",
    " café",
    " ok",
    " and",
    " then",
    " so",
)
_VOCAB_BASE = 1000  # token ids start here (below it: special tokens)


@dataclass(frozen=True, slots=True)
class Generation:
    """What a request gets: the tokens (all different), their ids, the prompt's length in tokens, and why it
    stopped (`limited`: the request's own limit cut it short; `stopped`: a stop sequence did)."""

    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    prompt_tokens: int
    limited: bool
    stopped: bool = False

    @property
    def cut(self) -> bool:
        """Ended by the request (limit or stop sequence), not by the end-of-sequence token."""
        return self.limited or self.stopped

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def prompt_pieces(prompt: str) -> list[str]:
    """A stand-in tokenizer: one piece per word with its leading spaces (used for counts and /tokenize)."""
    pieces: list[str] = []
    for word in prompt.split(" "):
        if word or not pieces:
            pieces.append(" " + word if pieces or prompt.startswith(" ") else word)
        else:
            pieces[-1] += " "
    return [p for p in pieces if p]


def piece_id(piece: str) -> int:
    return _VOCAB_BASE + int.from_bytes(hashlib.sha256(piece.encode()).digest()[:2], "big")


@functools.lru_cache(maxsize=512)
def _tokens(prompt: str, seed: int, n: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()[:8], "big"))
    order = list(range(len(_WORDS)))
    rng.shuffle(order)
    # A suffix after each full pass keeps every token of the stream different from the others.
    tokens, ids = [], []
    for i in range(n):
        lap, word = divmod(i, len(_WORDS))
        index = order[word]
        tokens.append(_WORDS[index] + (str(lap) if lap else ""))
        ids.append(_VOCAB_BASE + 70000 + lap * len(_WORDS) + index)
    return tuple(tokens), tuple(ids)


def generate(config: SimulatorConfig, prompt: str, seed: int | None, limit: int | None) -> Generation:
    """The tokens for (prompt, seed): `config.tokens` of them, or `limit` when the request asks for fewer."""
    n = config.tokens if limit is None or limit < 0 else min(limit, config.tokens)
    tokens, ids = _tokens(prompt, seed or 0, n)
    return Generation(tokens, ids, len(prompt_pieces(prompt)) + 1, n < config.tokens)


def stop_at(generation: Generation, stops: Any) -> Generation:
    """The generation cut after the first token at which its text contains one of `stops` (kept in the text, as
    the engines return it); unchanged when none matches or `stops` is not a list of strings."""
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        return generation
    text = ""
    for i, token in enumerate(generation.tokens):
        text += token
        if any(stop in text for stop in stops):
            n = i + 1
            return replace(
                generation, tokens=generation.tokens[:n], ids=generation.ids[:n], limited=False, stopped=True
            )
    return generation


def as_prompt(value: Any) -> str:
    """A prompt of any accepted shape (text, token ids, several prompts) as one string to seed from."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


async def read_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None (each engine answers that with its own 400)."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


ErrorFactory = Callable[[int, str, dict[str, str] | None], Response]


def refusal(fault: Fault | None, error: ErrorFactory) -> Response | None:
    """The status answer of a refusing fault (`error` builds the engine's error response), else None."""
    if fault is None or fault.kind not in REFUSALS:
        return None
    headers = {"Retry-After": str(fault.retry_after_s)} if fault.kind is FaultKind.OVERLOADED else None
    return error(fault.status_code, REFUSAL_MESSAGES[fault.kind], headers)


def sse(prefix: bytes, payload: Mapping[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return prefix + data.encode() + b"\n\n"


# --- the stream ------------------------------------------------------------------------------------------------


class Shape(Protocol):
    """How one engine frames one stream (built per request, knows the request's ids and options)."""

    def token(self, i: int) -> bytes: ...

    def final(self) -> bytes: ...

    def error(self) -> bytes: ...


class InjectedReset(Exception):
    """Raised after the response started: uvicorn then drops the connection mid-body (the reset fault)."""


class SimulatorStream(Response):
    """The streamed answer of a generation request, with its delay and fault. When `headers_with_first_token`
    (llama.cpp), the status line and headers wait for the first chunk, as the real server sends them."""

    def __init__(
        self,
        shape: Shape,
        generation: Generation,
        config: SimulatorConfig,
        fault: Fault | None,
        *,
        prefix: bytes,
        headers_with_first_token: bool = False,
        headers: Mapping[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
        content_type: str = "text/event-stream",
    ) -> None:
        # Not `Response.__init__`: it would add `content-length: 0`, and a charset to a text/* media type.
        self.status_code = 200
        self.background = None
        extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.raw_headers = [(b"content-type", content_type.encode()), *extra]
        self.shape, self.generation, self.config, self.fault = shape, generation, config, fault
        self.prefix = prefix
        self.headers_with_first_token = headers_with_first_token
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = asyncio.ensure_future(self._send_body(send))
        disconnect = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({body, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (body, disconnect):
                task.cancel()
            await asyncio.gather(body, disconnect, return_exceptions=True)
            if self.on_close is not None:
                self.on_close()
        if body.done() and not body.cancelled():
            body.result()  # re-raises InjectedReset: uvicorn aborts the connection

    async def _send_body(self, send: Send) -> None:
        start: Message = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        if not self.headers_with_first_token:
            await send(start)
        started = not self.headers_with_first_token
        async for chunk in self._chunks():
            if not started:
                await send(start)
                started = True
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not started:
            await send(start)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _chunks(self) -> AsyncIterator[bytes]:
        fault = self.fault
        strike = None if fault is None else 0 if fault.kind is FaultKind.STALL_FIRST else fault.after_tokens
        delay = self.config.delay_ms / 1000.0
        token = self.shape.token
        for i in range(len(self.generation.tokens)):
            if i == strike:
                async for chunk in self._strike():
                    yield chunk
                return
            if delay:
                await asyncio.sleep(delay)
            yield token(i)
        if strike is not None:  # the fault strikes after the last token, before the terminal chunk
            async for chunk in self._strike():
                yield chunk
            return
        yield self.shape.final()

    async def _strike(self) -> AsyncIterator[bytes]:
        assert self.fault is not None
        kind = self.fault.kind
        if kind in (FaultKind.STALL_FIRST, FaultKind.STALL_MID):
            await asyncio.sleep(self.config.stall_s)
        elif kind is FaultKind.RESET_MID:
            raise InjectedReset("simulated connection reset")
        elif kind is FaultKind.MALFORMED:
            yield self.prefix + b'{"index":\n\n'
        elif kind is FaultKind.IN_STREAM_ERROR:
            yield self.shape.error()
        # TRUNCATED: nothing; the body just ends.


# What a fault does to an answer that is not streamed: a stall holds it back, the others cut its body.
_STALLS = frozenset({FaultKind.STALL_FIRST, FaultKind.STALL_MID})
_CUTS = frozenset({FaultKind.RESET_MID, FaultKind.TRUNCATED, FaultKind.MALFORMED})


def one_shot(response: Response, config: SimulatorConfig, fault: Fault | None) -> Response:
    """A non-streamed answer under the request's fault: a stall holds it back for `stall_s` (a client that gives up
    ends it), a reset, truncated or malformed body drops the connection halfway through the body; the refusals
    are answered before this and an in-stream error has no place in a single answer, so both leave it as is."""
    if fault is None or fault.kind not in _STALLS | _CUTS:
        return response
    return _FaultedAnswer(response, config, fault)


class _FaultedAnswer(Response):
    def __init__(self, answer: Response, config: SimulatorConfig, fault: Fault) -> None:
        # Not `Response.__init__`: the answer already has its status, headers and body.
        self.answer, self.config, self.fault = answer, config, fault
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fault.kind in _STALLS:
            stall = asyncio.ensure_future(asyncio.sleep(self.config.stall_s))
            disconnect = asyncio.ensure_future(_wait_disconnect(receive))
            done, _ = await asyncio.wait({stall, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stall, disconnect):
                task.cancel()
            await asyncio.gather(stall, disconnect, return_exceptions=True)
            if stall in done:
                await self.answer(scope, receive, send)
            return
        answer = self.answer
        start: Message = {"type": "http.response.start", "status": answer.status_code, "headers": answer.raw_headers}
        await send(start)
        await send({"type": "http.response.body", "body": answer.body[: len(answer.body) // 2], "more_body": True})
        raise InjectedReset("simulated connection reset")


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass
class Counters:
    """What /metrics and /slots report."""

    requests: int = 0
    prompt_tokens: int = 0
    predicted_tokens: int = 0
    processing: int = 0


class EngineState:
    """One simulated engine's mutable state: the faults still to serve and its counters."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = FaultBook(config.faults)
        self.counters = Counters()

    def begin(self, generation: Generation) -> Callable[[], None]:
        """Count a generation; the returned callback marks it finished."""
        counters = self.counters
        counters.requests += 1
        counters.processing += 1
        counters.prompt_tokens += generation.prompt_tokens
        counters.predicted_tokens += len(generation.tokens)

        def done() -> None:
            counters.processing -= 1

        return done
