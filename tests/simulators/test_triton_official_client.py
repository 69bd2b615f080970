"""Triton's own Python client drives the Triton simulator as it drives a real server: `tritonclient.http`
(2.73.0) reads health, server and model metadata, the repository index and the model config, and runs `infer`
on the TensorRT-LLM ensemble (text_input/max_tokens → text_output) with binary tensors (its default) or JSON
ones; errors come back as `InferenceServerException` with Triton's message and status. What the client parsed
equals what our generated Triton client parses from the very same bytes (recorded, then replayed)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from llama_orch_gen.engines.triton import Client
from llama_orch_gen.engines.triton.api.inference import infer
from llama_orch_gen.engines.triton.api.metadata import model_config, model_statistics
from llama_orch_gen.engines.triton.api.repository import repository_index
from llama_orch_gen.engines.triton.models.inference_request import InferenceRequest
from llama_orch_gen.engines.triton.models.inference_response import InferenceResponse
from llama_orch_gen.engines.triton.models.model_config import ModelConfig
from llama_orch_gen.engines.triton.models.model_statistics import ModelStatistics
from tritonclient.utils import InferenceServerException

from llama_orch.simulators import ENGINES, Fault, FaultKind, SimulatorConfig
from tests.support.asgi_server import serve_asgi
from tests.support.recording import Exchange, Recorder, replaying

MODEL = "ensemble"
TOKENS = 8


@contextmanager
def server(
    *faults: Fault, stall_s: float = 5.0, timeout_s: float = 10.0
) -> Iterator[tuple[triton.InferenceServerClient, Recorder]]:
    recorder = Recorder(ENGINES["triton"](SimulatorConfig(tokens=TOKENS, faults=faults, stall_s=stall_s)))
    with serve_asgi(recorder) as url:
        client = triton.InferenceServerClient(
            url.removeprefix("http://"), connection_timeout=timeout_s, network_timeout=timeout_s
        )
        try:
            yield client, recorder
        finally:
            client.close()


def _generated(exchange: Exchange) -> Client:
    return Client("http://replay", httpx_args={"transport": replaying(exchange)})


def _inputs(
    prompts: list[str], max_tokens: int, *, binary: bool = True, seed: int | None = None, exclude_input: bool = False
) -> list[triton.InferInput]:
    text = triton.InferInput("text_input", [len(prompts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[p.encode()] for p in prompts], dtype=object), binary_data=binary)
    limit = triton.InferInput("max_tokens", [len(prompts), 1], "INT32")
    limit.set_data_from_numpy(np.full((len(prompts), 1), max_tokens, dtype=np.int32), binary_data=binary)
    tensors = [text, limit]
    if exclude_input:
        exclude = triton.InferInput("exclude_input_in_output", [len(prompts), 1], "BOOL")
        exclude.set_data_from_numpy(np.full((len(prompts), 1), True), binary_data=binary)
        tensors.append(exclude)
    if seed is not None:
        chosen = triton.InferInput("seed", [len(prompts), 1], "UINT64")
        chosen.set_data_from_numpy(np.full((len(prompts), 1), seed, dtype=np.uint64), binary_data=binary)
        tensors.append(chosen)
    return tensors


def _texts(result: triton.InferResult) -> list[str]:
    output = result.as_numpy("text_output")
    assert output is not None
    return [value.decode() if isinstance(value, bytes) else value for value in output.ravel()]


def test_health_and_metadata() -> None:
    with server() as (client, _):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        assert client.get_server_metadata()["version"]
        metadata = client.get_model_metadata(MODEL)
    assert metadata["platform"] == "ensemble"
    assert {t["name"] for t in metadata["inputs"]} >= {"text_input", "max_tokens"}
    assert "text_output" in [t["name"] for t in metadata["outputs"]]


def test_repository_index_and_config() -> None:
    with server() as (client, recorder):
        index = client.get_model_repository_index()
        ours_index = repository_index.sync(client=_generated(recorder.last("/v2/repository/index")))
        config = client.get_model_config(MODEL)
        ours_config = model_config.sync(MODEL, client=_generated(recorder.last(f"/v2/models/{MODEL}/config")))
    assert index == [{"name": MODEL, "version": "1", "state": "READY"}]
    assert isinstance(ours_index, list) and [e.to_dict() for e in ours_index] == index
    assert config["max_batch_size"] > 0 and config["model_transaction_policy"] == {"decoupled": False}
    required = {i["name"]: i["data_type"] for i in config["input"] if not i["optional"]}
    assert required == {"text_input": "TYPE_STRING", "max_tokens": "TYPE_INT32"}
    assert isinstance(ours_config, ModelConfig) and ours_config.to_dict() == config


def test_statistics_count_inferences() -> None:
    with server() as (client, recorder):
        client.infer(MODEL, _inputs(["Hi"], 2))
        client.infer(MODEL, _inputs(["Hi", "there"], 2))
        stats = client.get_inference_statistics(MODEL)
        ours = model_statistics.sync(MODEL, client=_generated(recorder.last(f"/v2/models/{MODEL}/stats")))
        every = client.get_inference_statistics()
    (model,) = stats["model_stats"]
    assert model["name"] == MODEL and model["inference_count"] == 3 and model["last_inference"] > 0
    assert isinstance(ours, ModelStatistics) and ours.to_dict()["model_stats"][0]["inference_count"] == 3
    assert every["model_stats"][0]["inference_count"] == 3


def test_infer_with_binary_tensors_and_seeds() -> None:
    with server() as (client, _):
        result = client.infer(MODEL, _inputs(["What is a fox?"], 5, seed=4, exclude_input=True))
        again = _texts(client.infer(MODEL, _inputs(["What is a fox?"], 5, seed=4, exclude_input=True)))
        other = _texts(client.infer(MODEL, _inputs(["What is a fox?"], 5, seed=5, exclude_input=True)))
        with_prompt = _texts(client.infer(MODEL, _inputs(["What is a fox?"], 5, seed=4)))
        batch = client.infer(MODEL, _inputs(["a", "b"], 3, exclude_input=True))
    answer = _texts(result)
    assert len(answer) == 1 and answer[0] and answer == again != other
    assert with_prompt == ["What is a fox?" + answer[0]]  # TensorRT-LLM keeps the input unless told not to
    # With no outputs named, tritonclient asks for every output in binary.
    assert result.as_numpy("num_output_tokens").tolist() == [[5]]
    assert result.as_numpy("cum_log_probs").shape == (1, 1)
    assert len(_texts(batch)) == 2 and _texts(batch)[0] != _texts(batch)[1]
    assert batch.as_numpy("batch_index").ravel().tolist() == [0, 1]


def test_infer_with_json_tensors_parses_like_the_generated_client() -> None:
    with server() as (client, recorder):
        outputs = [triton.InferRequestedOutput("text_output", binary_data=False)]
        result = client.infer(MODEL, _inputs(["Hello"], 4, binary=False, seed=2), outputs=outputs, request_id="r-1")
        binary = client.infer(
            MODEL, _inputs(["Hello"], 4, seed=2), outputs=[triton.InferRequestedOutput("text_output")]
        )
        exchange = recorder.exchanges[-2]
    response = result.get_response()
    assert response["id"] == "r-1" and response["model_name"] == MODEL
    assert _texts(result) == _texts(binary)
    ours = infer.sync(MODEL, client=_generated(exchange), body=InferenceRequest(inputs=[]))
    assert isinstance(ours, InferenceResponse) and ours.to_dict() == response
    assert ours.outputs[0].data == _texts(result)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_infer_with_a_compressed_request(algorithm: str) -> None:
    with server() as (client, _):
        plain = _texts(client.infer(MODEL, _inputs(["Hi"], 3, seed=1)))
        compressed = _texts(client.infer(MODEL, _inputs(["Hi"], 3, seed=1), request_compression_algorithm=algorithm))
    assert compressed == plain


def test_versioned_routes() -> None:
    with server() as (client, _):
        assert client.is_model_ready(MODEL, model_version="1")
        assert client.get_model_metadata(MODEL, model_version="1")["name"] == MODEL
        assert client.get_model_config(MODEL, model_version="1")["name"] == MODEL
        assert _texts(client.infer(MODEL, _inputs(["Hi"], 2, exclude_input=True), model_version="1"))[0]
        with pytest.raises(InferenceServerException, match="version 2"):
            client.infer(MODEL, _inputs(["Hi"], 2), model_version="2")


def test_errors_are_json_with_the_status() -> None:
    with server() as (client, _):
        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_config("no-such-model")
        with pytest.raises(InferenceServerException) as missing:
            client.infer(MODEL, _inputs(["Hi"], 3)[:1])
    assert unknown.value.status() == "400" and "no-such-model" in unknown.value.message()
    assert missing.value.status() == "400" and "max_tokens" in missing.value.message()


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault(FaultKind.OVERLOADED), "429"), (Fault(FaultKind.SERVER_ERROR, status=503), "503")],
    ids=["overloaded-429", "server_error-503"],
)
def test_refusals_are_server_exceptions(fault: Fault, status: str) -> None:
    with server(fault) as (client, _):
        with pytest.raises(InferenceServerException) as raised:
            client.infer(MODEL, _inputs(["Hi"], 3))
    assert raised.value.status() == status and raised.value.message()


def test_stall_times_out_and_reset_fails_the_call() -> None:
    with server(Fault(FaultKind.STALL_FIRST, times=1), Fault(FaultKind.RESET_MID), timeout_s=0.5) as (client, _):
        with pytest.raises(TimeoutError):  # geventhttpclient's network_timeout
            client.infer(MODEL, _inputs(["Hi"], 3))
        with pytest.raises(http.client.HTTPException, match="Incomplete response"):
            client.infer(MODEL, _inputs(["Hi"], 3))


async def test_asyncio_client() -> None:
    recorder = Recorder(ENGINES["triton"](SimulatorConfig(tokens=TOKENS)))
    with serve_asgi(recorder) as url:
        client = triton_aio.InferenceServerClient(url.removeprefix("http://"))
        try:
            result = await client.infer(MODEL, _inputs(["Hello"], 2, exclude_input=True))
            config = await client.get_model_config(MODEL)
        finally:
            await client.close()
    assert result.as_numpy("num_output_tokens").tolist() == [[2]] and len(_texts(result)[0]) > 0
    assert config["name"] == MODEL
