"""Secrets from the environment are checked before use: a token with CR or LF would become a second header
line on the wire, so it is refused at startup with the variable's name (never its value)."""

from __future__ import annotations

import pytest

from llama_orch.adapters.factory import build_registry
from llama_orch.errors import ConfigError
from llama_orch.secrets import token_from_env
from tests.service.helpers import make_config


@pytest.mark.parametrize("value", ["s3cr3t\r\nX-Evil: 1", "s3cr3t\n", "s3cr3t\r", " s3cr3t"])
def test_a_token_that_cannot_be_a_header_value_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ENGINE_KEY", value)
    with pytest.raises(ConfigError) as caught:
        token_from_env("ENGINE_KEY", "replica r0 bearer_token_env")
    assert "ENGINE_KEY" in str(caught.value) and value.strip() not in str(caught.value)


def test_startup_refuses_a_replica_whose_token_has_a_line_break(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_KEY", "secret\r\nX-Injected: yes")
    pool = {
        "id": "p",
        "engine": "llamacpp",
        "replicas": [{"id": "r0", "base_url": "http://127.0.0.1:1", "bearer_token_env": "ENGINE_KEY"}],
    }
    with pytest.raises(ConfigError, match="ENGINE_KEY"):
        build_registry(make_config(pool))


def test_a_plain_token_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_KEY", "abc.DEF-123_~+/=")
    assert token_from_env("ENGINE_KEY", "x") == "abc.DEF-123_~+/="
