"""EngineTransport against a scripted HTTP/1.1 server on a real socket: framing, keep-alive reuse, stale
connections, and every failure as the httpx exception the adapters classify."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from llama_orch.adapters.http_policy import error_for_exception
from llama_orch.adapters.http_transport import EngineTransport
from tests.support.scripted_server import ScriptedServer, answer, chunked


@pytest.fixture
async def client() -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    made: list[httpx.AsyncClient] = []

    def make(base_url: str, **kw: object) -> httpx.AsyncClient:
        made.append(httpx.AsyncClient(base_url=base_url, transport=EngineTransport(**kw)))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


async def test_json_request_and_response_on_one_kept_alive_connection(client: Callable[..., httpx.AsyncClient]) -> None:
    server = ScriptedServer(answer(b'{"ok": true}'))
    async with server as url:
        http = client(url)
        for n in range(3):
            response = await http.post("/completion?x=1", json={"n": n}, headers={"Authorization": "Bearer k"})
            assert response.status_code == 200 and response.json() == {"ok": True}
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /completion?x=1 HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in first
    assert first.endswith(b'\r\nContent-Length: 7\r\n\r\n{"n":0}')


async def test_chunked_stream_arrives_whole_and_the_connection_is_reused(
    client: Callable[..., httpx.AsyncClient],
) -> None:
    async def script(_: bytes) -> tuple[bytes | None, bool]:
        return chunked(b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"), False

    server = ScriptedServer(script)
    async with server as url:
        http = client(url)
        for _ in range(2):
            async with http.stream("POST", "/s", json={}) as response:
                body = b"".join([part async for part in response.aiter_bytes()])
            assert body == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    assert server.connections == 1


async def test_body_delimited_by_close_ends_at_eof_and_is_not_reused(client: Callable[..., httpx.AsyncClient]) -> None:
    async def script(_: bytes) -> tuple[bytes | None, bool]:
        return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it", True

    server = ScriptedServer(script)
    async with server as url:
        http = client(url)
        assert (await http.get("/a")).content == b"all of it"
        assert (await http.get("/a")).content == b"all of it"
    assert server.connections == 2


async def test_a_stale_kept_alive_connection_is_replaced_without_losing_the_request(
    client: Callable[..., httpx.AsyncClient],
) -> None:
    answered = 0

    async def script(_: bytes) -> tuple[bytes | None, bool]:
        nonlocal answered
        answered += 1
        if answered == 2:  # the server drops the kept-alive connection instead of answering
            return None, True
        return (await answer(b"{}")(b""))[0], False

    server = ScriptedServer(script)
    async with server as url:
        http = client(url)
        assert (await http.get("/a")).status_code == 200
        assert (await http.get("/a")).status_code == 200
    assert server.connections == 2 and answered == 3


async def test_a_fresh_connection_closed_without_an_answer_is_a_protocol_error(
    client: Callable[..., httpx.AsyncClient],
) -> None:
    async def script(_: bytes) -> tuple[bytes | None, bool]:
        return None, True

    async with ScriptedServer(script) as url:
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await client(url).get("/a")
    assert error_for_exception(caught.value).code == "WORKER_RESET"


async def test_a_body_cut_short_is_a_protocol_error(client: Callable[..., httpx.AsyncClient]) -> None:
    async def script(_: bytes) -> tuple[bytes | None, bool]:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", True

    async with ScriptedServer(script) as url:
        async with client(url).stream("GET", "/a") as response:
            parts = []
            with pytest.raises(httpx.RemoteProtocolError):
                async for part in response.aiter_bytes():
                    parts.append(part)
    assert parts == [b"hello"]  # what arrived before the cut is delivered first


async def test_a_malformed_response_is_a_protocol_error(client: Callable[..., httpx.AsyncClient]) -> None:
    async def script(_: bytes) -> tuple[bytes | None, bool]:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True

    async with ScriptedServer(script) as url:
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await client(url).get("/a")


async def test_refused_connection_is_connect_error_and_pool_unavailable(
    client: Callable[..., httpx.AsyncClient],
) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError) as caught:
        await client(f"http://127.0.0.1:{port}").get("/a")
    assert error_for_exception(caught.value).code == "POOL_UNAVAILABLE"


async def test_read_timeout(client: Callable[..., httpx.AsyncClient]) -> None:
    async def script(_: bytes) -> tuple[bytes | None, bool]:
        await asyncio.sleep(5)
        return None, True

    async with ScriptedServer(script) as url:
        with pytest.raises(httpx.ReadTimeout):
            await client(url).get("/a", timeout=httpx.Timeout(None, read=0.05))


async def test_connection_limit_waits_for_a_free_connection_then_times_out(
    client: Callable[..., httpx.AsyncClient],
) -> None:
    async def script(_: bytes) -> tuple[bytes | None, bool]:
        return chunked(b"x"), False

    async with ScriptedServer(script) as url:
        http = client(url, max_connections=1)
        async with http.stream("GET", "/a") as held:
            with pytest.raises(httpx.PoolTimeout):
                await http.get("/b", timeout=httpx.Timeout(None, pool=0.05))
            await held.aread()
        # Released with its response read: the next request gets the connection.
        assert (await http.get("/c")).content == b"x"


async def test_a_response_abandoned_midway_closes_its_connection(client: Callable[..., httpx.AsyncClient]) -> None:
    async def script(request: bytes) -> tuple[bytes | None, bool]:
        if request.startswith(b"GET /slow"):
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n", False
        return (await answer(b"{}")(b""))[0], False

    server = ScriptedServer(script)
    async with server as url:
        http = client(url)
        async with http.stream("GET", "/slow") as response:
            async for _ in response.aiter_bytes():
                break  # the consumer walks away before the body ends
        assert (await http.get("/next")).status_code == 200
    assert server.connections == 2  # the half-read connection was not handed to the next request


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "own-read"])
async def test_interim_1xx_responses_are_skipped(client: Callable[..., httpx.AsyncClient], split: bool) -> None:
    """RFC 9110 §15.2: any number of 1xx responses may precede the final one, on every connection."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
    final = chunked(b"hello ", b"world")

    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        return ([interim, final] if split else interim + final), False

    server = ScriptedServer(script)
    async with server as url:
        http = client(url)
        for _ in range(5):
            answer = await http.get("/a")
            assert answer.status_code == 200 and answer.content == b"hello world", answer
            assert "link" not in answer.headers  # an interim response's headers are not the final one's
    assert server.connections == 1


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\x00b"], ids=["crlf", "lf", "nul"])
async def test_header_values_with_cr_lf_or_nul_are_never_written(
    client: Callable[..., httpx.AsyncClient], bad: str
) -> None:
    server = ScriptedServer(answer(b"{}"))
    async with server as url:
        with pytest.raises(httpx.LocalProtocolError):
            await client(url).get("/a", headers={"Authorization": f"Bearer {bad}"})
    assert not server.requests


async def test_a_host_at_its_connection_limit_does_not_starve_another_host() -> None:
    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        return chunked(b"x"), False

    async with ScriptedServer(script) as busy_url, ScriptedServer(script) as other_url:
        async with httpx.AsyncClient(transport=EngineTransport(max_connections=1)) as http:
            async with http.stream("GET", busy_url + "/held"):  # the busy host's only connection, held
                with pytest.raises(httpx.PoolTimeout):
                    await http.get(busy_url + "/b", timeout=httpx.Timeout(None, pool=0.05))
                answered = await http.get(other_url + "/c", timeout=httpx.Timeout(None, pool=0.05))
                assert answered.content == b"x"
