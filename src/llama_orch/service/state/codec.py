"""A batch of events as one Redis stream entry's body: a JSON list, a run of tokens as `{"tr": first, "t": [...]}`
(compact: the hot path), every other event as its contract JSON."""

from __future__ import annotations

import json

from llama_orch_gen.contracts.events import TaskEvent

from llama_orch.events import TokenRun
from llama_orch.service.state.batch import Item

__all__ = ["decode", "encode"]


def encode(items: list[Item]) -> str:
    parts = [
        {"tr": item.first, "t": item.texts}
        if isinstance(item, TokenRun)
        else item.model_dump(mode="json", exclude_none=True)
        for item in items
    ]
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))


def decode(body: str) -> list[Item]:
    return [
        TokenRun(part["tr"], part["t"]) if "tr" in part else TaskEvent.model_validate(part) for part in json.loads(body)
    ]
