"""Determinism normalization shared by every adapter: the seed actually sent, and what "greedy" means.

Same `{prompt, parameters, seed, sampler_profile_version, engine_version, model_digest}` on the same replica must give
the same tokens, so nothing here may depend on time, randomness or process state.
"""

from __future__ import annotations

import hashlib

from llama_orch_gen.contracts.task_request import TaskRequest

__all__ = ["SEED_LIMIT", "derive_seed", "effective_seed", "is_greedy", "prompt_text"]

# 31 bits fit every engine's seed type (llama.cpp uint32 with 0xFFFFFFFF meaning "random", vLLM int64, TGI and
# TensorRT-LLM uint64) and stay clear of llama.cpp's random sentinel.
SEED_LIMIT = 2**31


def derive_seed(task_id: str) -> int:
    """A stable seed for a task that gave none, so a retried task samples the same."""
    return int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big") % SEED_LIMIT


def effective_seed(task: TaskRequest) -> int:
    if task.seed is not None:
        return task.seed
    return derive_seed(task.task_id or prompt_text(task))


def is_greedy(task: TaskRequest) -> bool:
    """`temperature` 0 (the contract's default) means greedy decoding; each adapter maps it to its engine."""
    return not task.temperature


def prompt_text(task: TaskRequest) -> str:
    """The raw completion prompt: `prompt`, or the `inputs` parts joined with no separator."""
    if task.prompt is not None:
        return task.prompt
    return "".join(task.inputs or ())
