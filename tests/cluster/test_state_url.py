"""`--state-url`: the one switch of scale-out mode (flag, config key, variable); without it nothing changes."""

from __future__ import annotations

import pytest

from llama_orch.cli import build_parser
from llama_orch.errors import ConfigError
from llama_orch.serve_config import config_from_args


def _config(argv: list[str], environ: dict[str, str]) -> object:
    return config_from_args(build_parser().parse_args(["serve", *argv]), environ)[0]


def test_the_flag_the_variable_and_nothing() -> None:
    assert _config(["--state-url", "redis://h:6379/2"], {}).state_url == "redis://h:6379/2"  # type: ignore[attr-defined]
    from_env = _config([], {"LLAMA_ORCH_STATE_URL": "rediss://h:6380/0"})
    assert from_env.state_url == "rediss://h:6380/0"  # type: ignore[attr-defined]
    flag_wins = _config(["--state-url", "redis://a/0"], {"LLAMA_ORCH_STATE_URL": "redis://b/0"})
    assert flag_wins.state_url == "redis://a/0"  # type: ignore[attr-defined]
    assert _config([], {}).state_url is None  # type: ignore[attr-defined]


def test_the_variable_also_applies_to_a_config_file(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "pools.yaml"  # type: ignore[operator]
    path.write_text("pools: [{id: p, engine: mock, replicas: [{id: r, base_url: 'http://mock'}]}]\n")
    config = _config(["--config", str(path)], {"LLAMA_ORCH_STATE_URL": "redis://h/1"})
    assert config.state_url == "redis://h/1"  # type: ignore[attr-defined]


def test_only_redis_urls() -> None:
    with pytest.raises(ConfigError, match="state_url"):
        _config(["--state-url", "http://h:6379"], {})


def test_without_redis_server_the_scale_out_tests_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import redis_server

    monkeypatch.setattr(redis_server.shutil, "which", lambda _name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="redis-server is not installed"):
        redis_server.redis_binary()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        redis_server.redis_binary()
