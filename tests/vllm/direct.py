"""Direct calls to the real vLLM, the reference every relayed result is compared with, and its /metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.support.vllm_server import VllmServer

_SAMPLE = re.compile(r"^(vllm:[a-z_]+)\{([^}]*)\} ([0-9.e+-]+)$", re.MULTILINE)


def sampling(seed: int | None, temperature: float) -> dict[str, Any]:
    """What the adapter sends for a task with this seed and temperature (greedy = temperature 0)."""
    body: dict[str, Any] = {"temperature": temperature, "top_p": 1.0, "repetition_penalty": 1.0}
    return body if seed is None else {**body, "seed": seed}


def complete(server: VllmServer, prompt: str, max_tokens: int, **params: Any) -> tuple[str, dict[str, int]]:
    """Text and usage of a streamed `/v1/completions`, read straight from the engine."""
    return _stream(server, "/v1/completions", {"prompt": prompt, "max_tokens": max_tokens, **params})


def chat(
    server: VllmServer, messages: list[dict[str, str]], max_tokens: int, **params: Any
) -> tuple[str, dict[str, int]]:
    """The same for a streamed `/v1/chat/completions`."""
    return _stream(server, "/v1/chat/completions", {"messages": messages, "max_tokens": max_tokens, **params})


def _stream(server: VllmServer, path: str, fields: dict[str, Any]) -> tuple[str, dict[str, int]]:
    body = {"model": server.served_name, "stream": True, "stream_options": {"include_usage": True}, **fields}
    text, usage = "", {}
    with httpx.stream("POST", server.base_url + path, json=body, timeout=60) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            text += "".join(c.get("text") or c.get("delta", {}).get("content") or "" for c in chunk["choices"])
            usage = chunk.get("usage") or usage
    return text, usage


def metric(server: VllmServer, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    total = 0.0
    for found, raw_labels, value in _SAMPLE.findall(text):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', raw_labels))
        if found == name and all(pairs.get(k) == v for k, v in labels.items()):
            total += float(value)
    return total
