"""Our engine specs against the engines' own published API documents.

For every operation we declare that the published document also has, paths, methods, status codes,
media types, and request/response field names, JSON types and defaults are compared. Each difference
must be listed below with the reason we differ (normally FACTS.md: "the published document says X,
the server does Y"). An unlisted difference fails, and so does a listed one that no longer occurs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .published_docs import compare_documents, kserve_path, load_published
from .spec_support import load_spec


def _each(template: str, items: tuple[str, ...], reason: str) -> dict[str, str]:
    """One entry per item: `template` with `{}` replaced by the item."""
    return {template.replace("{}", item): reason for item in items}


def _differs(where: str, field: str, ours: str, published: str) -> str:
    """The difference line for a field whose types or default differ."""
    return f"{where} {field}: ours {ours} vs published {published}"


TGI_GENERATION_ROUTES = ("/", "/generate", "/generate_stream", "/v1/chat/completions", "/v1/completions")
TGI_PARAMETER_ROUTES = ("/", "/generate", "/generate_stream", "/tokenize")
TGI_OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions")
CHAT_JSON = "POST /v1/chat/completions 200 application/json"
CHAT_SSE = "POST /v1/chat/completions 200 text/event-stream"

EXTRACTOR = (
    "FACTS.md §3.1: axum's Json extractor rejects a malformed/mistyped body or a wrong content type as plain text"
)
API_KEY = "FACTS.md §3.1: with --api-key the generation routes answer 401 with an empty body; undocumented upstream"
SNAPSHOT_NULLS = (
    "tgi-snapshots (recorded through the huggingface_hub client) carry null for a member the server leaves out; "
    "null is accepted so the recorded data validates"
)
SERDE_TAG = (
    "the server adds `object` through a serde tag (CompletionType/Completion enums); "
    "utoipa leaves it out of the struct schema"
)
UNSET_MAX_TOKENS = (
    "FACTS.md §3.2: when unset the server computes the limit (max_total_tokens − input length); the document's "
    'string default "1024" is not what the router does, so no default is declared'
)
IN_STREAM = "FACTS.md §3.3: after the body is parsed every failure is yielded inside the stream under HTTP 200"

TGI_INTENTIONAL: dict[str, str] = {
    **_each(
        _differs("POST {} request", "parameters.details", "[boolean] default=false", "[boolean] default=true"),
        TGI_PARAMETER_ROUTES,
        "FACTS.md §3.2: the doc says default true, but the Rust field is `#[serde(default)] bool`: false when omitted",
    ),
    **_each(
        _differs("POST {} request", "parameters.max_new_tokens", "[integer, null]", "[integer, null] default=1024"),
        TGI_PARAMETER_ROUTES,
        UNSET_MAX_TOKENS,
    ),
    **_each(
        _differs("POST {} request", "max_tokens", "[integer, null]", "[integer, null] default=1024"),
        TGI_OPENAI_ROUTES,
        "passed on as max_new_tokens; " + UNSET_MAX_TOKENS,
    ),
    **_each(
        _differs("POST {} request", "stream", "[boolean] default=false", "[boolean]"),
        TGI_OPENAI_ROUTES,
        '`#[serde(default = "bool::default")]`: false when omitted; the published document declares no default',
    ),
    **{
        _differs(f"POST {where}", f"{at}details.{field}", "[array, null]", "[array]"): SNAPSHOT_NULLS
        for where, at in (("/generate 200 application/json", ""), ("/ 200 application/json", "[]."))
        for field in ("top_tokens", "best_of_sequences[].top_tokens")
    },
    **_each("POST {} 400: only in ours", TGI_GENERATION_ROUTES, EXTRACTOR),
    **_each("POST {} 415: only in ours", TGI_GENERATION_ROUTES, EXTRACTOR),
    **_each("POST {} 422 text/plain: only in ours", TGI_GENERATION_ROUTES, EXTRACTOR),
    **_each("POST {} 401: only in ours", TGI_GENERATION_ROUTES, API_KEY),
    "POST /generate_stream 422 text/event-stream: only in published": (
        IN_STREAM + ' as `data:{"error","error_type"}` (the x-stream error item), validation errors included'
    ),
    "POST /generate_stream 424: only in published": IN_STREAM + "; generation errors are never a 424 response",
    "POST /generate_stream 429: only in published": IN_STREAM + "; the overload error is never a 429 response",
    "POST /generate_stream 500: only in published": (
        IN_STREAM + "; incomplete generation is error_type incomplete_generation_stream"
    ),
    "GET /v1/models 200 application/json: only in ours: data": (
        'FACTS.md §3.2: the handler returns a list `{"object":"list","data":[ModelInfo]}`; '
        "the document names a single ModelInfo"
    ),
    "GET /v1/models 200 application/json: only in published: created, id, owned_by": (
        "the same: those fields are inside data[], not at the root"
    ),
    "GET /v1/models 404: only in published": "the handler is infallible (it returns the served model); no 404",
    f"{CHAT_JSON}: only in ours: object": SERDE_TAG,
    f"{CHAT_SSE}: only in ours: object": SERDE_TAG,
    "POST /v1/completions 200 application/json: only in ours: object": SERDE_TAG,
    "POST /v1/completions 200 text/event-stream: only in ours: object": SERDE_TAG,
    _differs(CHAT_JSON, "choices[].message.content", "[null, string]", "[string]"): (
        "a tool-call message (ToolCallMessage) has no content; " + SNAPSHOT_NULLS
    ),
    _differs(CHAT_JSON, "choices[].message.tool_calls", "[array, null]", "[array]"): (
        "a text message (TextMessage) has no tool_calls; " + SNAPSHOT_NULLS
    ),
    _differs(CHAT_SSE, "choices[].delta.content", "[null, string]", "[string]"): (
        "a tool-call delta has no content; " + SNAPSHOT_NULLS
    ),
    _differs(CHAT_SSE, "choices[].delta.tool_calls", "[array, null]", "[array]"): (
        "a text delta has no tool_calls; " + SNAPSHOT_NULLS
    ),
    _differs("POST /v1/completions request", "prompt", "[array, string]", "[array]"): (
        "router/src/lib.rs deserializes Prompt from a single string or a non-empty array (PromptDeserializer)"
    ),
}

KSERVE_VERSIONED = "/v2/models/${MODEL_NAME}/versions/${MODEL_VERSION}"
VERSIONED_PATH = (
    "FACTS.md §4.2: Triton serves `/v2/models/{m}[/versions/{v}]/...`; the spec uses the unversioned form and lets "
    "the server's version policy pick, as llama-orch always does"
)
TRITON_NOT_READY_400 = "FACTS.md §4.2: Triton answers 400 with an empty body when not live/ready (it does not use 503)"
RESTRICTED_403 = 'FACTS.md §4.1: with --http-restricted-api a call without the configured header gets 403 {"error"}'
TRITON_STATUS = "FACTS.md §4.1: HttpCodeFromError maps NOT_FOUND→404, UNAVAILABLE→503, UNSUPPORTED→501, INTERNAL→500"

TRITON_INTENTIONAL: dict[str, str] = {
    "GET /v2: published path is /v2/": "the same route; Triton's server-metadata regex serves `/v2` (FACTS.md §4.1)",
    f"GET /v2/models/{{model}}: published path is {KSERVE_VERSIONED}": VERSIONED_PATH,
    f"GET /v2/models/{{model}}/ready: published path is {KSERVE_VERSIONED}/ready": VERSIONED_PATH,
    "GET /v2/health/live 400: only in ours": TRITON_NOT_READY_400,
    "GET /v2/health/ready 400: only in ours": TRITON_NOT_READY_400,
    "GET /v2/models/{model}/ready 400: only in ours": (
        'FACTS.md §4.2: `{"error":"Model version not ready"}` (or an unknown model) with 400'
    ),
    "GET /v2/models/{model} 400: only in ours": TRITON_STATUS + "; INVALID_ARG/UNKNOWN→400",
    **_each("GET {} 404: only in ours", ("/v2/models/{model}", "/v2/models/{model}/ready"), TRITON_STATUS),
    **_each(
        "GET {} 403: only in ours",
        ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model}", "/v2/models/{model}/ready"),
        RESTRICTED_403,
    ),
    "POST /v2/repository/index: not in the published document": (
        "FACTS.md §4.2: Triton's model repository extension (tritonclient's get_model_repository_index)"
    ),
    "GET /v2/models/{model}/config: not in the published document": (
        "FACTS.md §4.2: Triton's model configuration extension (tritonclient's get_model_config)"
    ),
    **_each(
        "GET {}: not in the published document",
        ("/v2/models/stats", "/v2/models/{model}/stats"),
        "FACTS.md §4.2: Triton's statistics extension (tritonclient's get_inference_statistics)",
    ),
    f"POST /v2/models/{{model}}/infer: published path is {KSERVE_VERSIONED}/infer": VERSIONED_PATH,
    **_each(
        "POST /v2/models/{model}/infer {}",
        (
            "request: only in published: inputs[].data[][]",
            "request inputs[].data[]: ours [any] vs published [array, boolean, number, string]",
            "200 application/json: only in published: outputs[].data[][]",
            "200 application/json outputs[].data[]: ours [any] vs published [array, boolean, number, string]",
        ),
        "the same elements: the published schema nests itself (tensor_data), which the client generator cannot "
        "type, so ours leaves the (nested) elements open",
    ),
    "POST /v2/models/{model}/infer 200 application/octet-stream: only in ours": (
        "Triton's binary tensor data extension (tritonclient's default): the JSON header, then raw tensor bytes"
    ),
    "POST /v2/models/{model}/infer 403: only in ours": RESTRICTED_403,
    **_each("POST /v2/models/{model}/infer {}: only in ours", ("404", "500", "501", "503"), TRITON_STATUS),
    "GET /v2/models/{model} 200 application/json: only in published: properties": (
        "FACTS.md §4.2: Triton's model metadata is {name, versions, platform, inputs, outputs}; no `properties`"
    ),
}

TRTLLM_ENSEMBLE_INPUTS = ", ".join(
    (
        "bad_words, beam_width, decoder_text_input, end_id, exclude_input_in_output, frequency_penalty",
        "guided_decoding_guide, guided_decoding_guide_type, id, length_penalty, lora_task_id, max_tokens, min_tokens",
        "num_return_sequences, pad_id, presence_penalty, repetition_penalty, return_context_logits",
        "return_generation_logits, return_log_probs, return_num_input_tokens, return_num_output_tokens",
        "return_perf_metrics, seed, stop_words, stream, temperature, top_k, top_p",
    )
)
TRTLLM_ENSEMBLE_OUTPUTS = (
    "batch_index, context_logits, cum_log_probs, generation_logits, id, num_input_tokens, num_output_tokens, "
    "output_log_probs, sequence_index, text_output[]"
)
PROPOSAL_PARAMETERS = (
    "parameters.details, parameters.max_tokens, parameters.stop, parameters.temperature, parameters.top_p"
)
NOT_PROPOSAL_STATUS = "FACTS.md §4.4: Triton never returns 422/424/429 (the proposal copies TGI); see HttpCodeFromError"


def _triton_generate_differences(op: str, media: str) -> dict[str, str]:
    label = f"POST /v2/models/{{model}}/{op}"
    return {
        f"{label}: published path is {KSERVE_VERSIONED}/{op}": VERSIONED_PATH,
        f"{label} request: only in ours: {TRTLLM_ENSEMBLE_INPUTS}": (
            "FACTS.md §4.3: every top-level key naming a model input becomes a tensor; these are the TensorRT-LLM "
            "ensemble inputs (config.pbtxt), sent at the top level"
        ),
        f"{label} request: only in published: {PROPOSAL_PARAMETERS}": (
            "FACTS.md §4.3: `parameters` is an open map (model inputs become tensors, other keys request "
            "parameters); Triton has no fixed parameter set and no `details`"
        ),
        f"{label} 200 {media}: only in ours: {TRTLLM_ENSEMBLE_OUTPUTS}": (
            "FACTS.md §4.3: the response carries every output tensor by name (one-element tensors unwrapped); "
            "these are the ensemble outputs, plus the echoed request id"
        ),
        f"{label} 200 {media}: only in published: details": "FACTS.md §4.3: Triton builds no `details` object",
        _differs(f"{label} 200 {media}", "text_output", "[array, string]", "[string]"): (
            "text_output is a tensor: an array when several sequences come back (beam_width/num_return_sequences > 1)"
        ),
        **_each(f"{label} {{}}: only in published", ("422", "424", "429"), NOT_PROPOSAL_STATUS),
        **_each(f"{label} {{}}: only in ours", ("400", "404", "501", "503"), TRITON_STATUS),
        f"{label} 403: only in ours": RESTRICTED_403,
    }


TRITON_GENERATE_INTENTIONAL: dict[str, str] = {
    **_triton_generate_differences("generate", "application/json"),
    **_triton_generate_differences("generate_stream", "text/event-stream"),
    "POST /v2/models/{model}/generate_stream 500 application/json: only in ours": (
        "FACTS.md §4.3: a failure before inference starts is a normal application/json error; "
        "later errors are SSE items under 200"
    ),
    "POST /v2/models/{model}/generate_stream 500 text/event-stream: only in published": (
        "FACTS.md §4.3: an error status is only sent before streaming starts, as application/json"
    ),
}


def _is_generate(path: str) -> bool:
    return path.endswith(("/generate", "/generate_stream"))


def _tgi_differences() -> list[str]:
    return compare_documents(load_spec("tgi"), load_published("tgi-openapi.json"))


def _kserve_rest_differences() -> list[str]:
    """Health and metadata only: KServe's REST document has no generate routes."""
    return compare_documents(
        load_spec("triton"),
        load_published("kserve-open-inference-rest.yaml"),
        normalize=kserve_path,
        include=lambda path: not _is_generate(path),
    )


def _kserve_generate_differences() -> list[str]:
    return compare_documents(
        load_spec("triton"),
        load_published("kserve-open-inference-generate-rest.yaml"),
        normalize=kserve_path,
        include=_is_generate,
    )


CASES: dict[str, tuple[Callable[[], list[str]], dict[str, str]]] = {
    "tgi-openapi.json": (_tgi_differences, TGI_INTENTIONAL),
    "kserve-open-inference-rest.yaml": (_kserve_rest_differences, TRITON_INTENTIONAL),
    "kserve-open-inference-generate-rest.yaml": (_kserve_generate_differences, TRITON_GENERATE_INTENTIONAL),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_differences_from_published_document_are_intentional(case: str) -> None:
    compare, intentional = CASES[case]
    differences = compare()
    unexplained = [d for d in differences if d not in intentional]
    assert unexplained == [], "new differences: fix the spec or list them with a reason"
    stale = [d for d in intentional if d not in differences]
    assert stale == [], "listed differences that no longer occur: remove them"


def test_every_tgi_operation_we_declare_is_published() -> None:
    """TGI documents all the routes we use, so each of our operations is compared."""
    assert [d for d in _tgi_differences() if d.endswith("not in the published document")] == []
