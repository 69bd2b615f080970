"""The orchestrator service: admission, dispatch and streaming over HTTP (see `llama_orch.service.app`)."""
