"""The hand-written runtime behind the generated clients in `llama_orch_gen` (like openai-python's `_base_client.py`
and `_streaming.py`): ordinary, typed, tested code that the templates in templates/ import and never render.

- `llama_orch_runtime.streaming`: incremental SSE/NDJSON decoding into typed items, sync and async.
"""
