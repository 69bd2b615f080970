"""Write a tiny but real llama-architecture GGUF model that llama-server loads and runs.

    python -m llama_orch_devtools.tiny_gguf PATH [--embd 64] [--layers 2] [--seed 0]

Weights are random (seeded, so the file and its sha256 are reproducible); the vocabulary is llama.cpp's
SentencePiece test vocabulary from the same source package as the server. The text is gibberish, but
tokenization, sampling, seeds and slots are the engine's own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np

from llama_orch_devtools.llamacpp_build import ensure_llama_server, vocab_path

_TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
)


def _copy_tokenizer(writer: gguf.GGUFWriter, vocab: Path) -> int:
    """Copy the vocabulary's tokenizer keys; returns the vocabulary size."""
    reader = gguf.GGUFReader(vocab)
    n_vocab = 0
    for key in _TOKENIZER_KEYS:
        field = reader.fields[key]
        value = field.contents()
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            writer.add_array(key, value)
            n_vocab = max(n_vocab, len(value))
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_string(key, value)
        elif kind == gguf.GGUFValueType.BOOL:
            writer.add_bool(key, value)
        else:
            writer.add_uint32(key, value)
    return n_vocab


def write_tiny_model(
    path: Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ctx: int = 2048,
    seed: int = 0,
    vocab: Path | None = None,
) -> Path:
    """Write the model to `path` (parents created) and return it. Bigger `n_embd`/`n_layer` load slower."""
    vocab = vocab or vocab_path()
    if not vocab.is_file():
        ensure_llama_server()  # the vocabulary comes with the server build
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_ff = 4 * n_embd
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(f"llama-orch tiny {n_embd}x{n_layer} seed {seed}")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    n_vocab = _copy_tokenizer(writer, vocab)
    writer.add_vocab_size(n_vocab)

    def weights(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weights(n_vocab, n_embd))
    for layer in range(n_layer):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{block}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{block}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"{block}.ffn_down.weight", weights(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llama_orch_devtools.tiny_gguf",
        description="Write a tiny real llama GGUF model (random weights, llama.cpp's SentencePiece vocabulary) "
        "and print its path.",
    )
    parser.add_argument("path", type=Path, help="where to write the .gguf file")
    parser.add_argument("--embd", type=int, default=64, help="embedding width (default 64)")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed; the same seed writes the same file")
    args = parser.parse_args(argv)
    path = write_tiny_model(args.path, n_embd=args.embd, n_layer=args.layers, seed=args.seed)
    sys.stderr.write(f"tiny-gguf: wrote {path.stat().st_size} bytes\n")
    sys.stdout.write(f"{path.resolve()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
