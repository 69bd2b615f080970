"""The generated engine clients take any status an engine or a proxy in front of it sends: a 520 or 599 is a
status code like any other (openapi-python-client's HTTPStatus(...) raised ValueError on them)."""

from __future__ import annotations

import httpx
import pytest
from llama_orch_gen.engines.llamacpp import Client
from llama_orch_gen.engines.llamacpp.api.native import health


@pytest.mark.parametrize("status", [520, 599])
async def test_a_non_standard_status_is_kept_not_a_value_error(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text="upstream gone"))
    client = Client(base_url="http://engine", httpx_args={"transport": transport})
    answer = await health.asyncio_detailed(client=client)
    assert answer.status_code == status and answer.parsed is None and answer.content == b"upstream gone"
