"""Write a tiny random-weight Llama in Hugging Face layout (config, safetensors, tokenizer) for a real vLLM.

    <vLLM env python> tiny_hf.py DIR      (or: python xtask.py engine model --hf DIR)

Runs in the vLLM environment (see `vllm_env`), which has torch, transformers and tokenizers; it imports nothing
from llama_orch so that environment needs no copy of the project. The output is the same bytes for the same
inputs: a byte-level BPE tokenizer trained on the text below (so every string has a tokenization, and
incomplete UTF-8 shows up as U+FFFD the way real byte-level models do), a chat template, and weights from a fixed
seed. Head size 64: vLLM's CPU attention kernels reject smaller heads (the engine core fails on the first request).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SEED = 1234
VOCAB_SIZE = 400
SPECIAL = ["<s>", "</s>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant: {% endif %}"
)
# Enough words for merges; the exact text only has to stay fixed.
CORPUS = """
The quick brown fox jumps over the lazy dog. A tiny model answers every prompt with a stream of tokens.
Orchestrators route tasks to engines; engines stream tokens back. Hello, world! Counting: one two three four
five six seven eight nine ten. Once upon a time there was a small language model that could not say much.
Café, naïve, über, 日本語, emoji 🙂 and other bytes test the byte-level tokenizer on text beyond ASCII.
""".strip()


def write_tiny_model(directory: Path) -> Path:
    import torch  # type: ignore[import-not-found, unused-ignore]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # type: ignore[import-not-found, unused-ignore]
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # type: ignore[import-not-found, unused-ignore]

    directory.mkdir(parents=True, exist_ok=True)
    raw: Any = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator([CORPUS], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=CHAT_TEMPLATE
    )
    tokenizer.save_pretrained(directory)

    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        bos_token_id=raw.token_to_id("<s>"),
        eos_token_id=raw.token_to_id("</s>"),
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "llama-orch-tiny.json").write_text(json.dumps({"seed": SEED, "vocab": raw.get_vocab_size()}) + "\n")
    return directory


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        sys.stderr.write((__doc__ or "").strip() + "\n")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    sys.stdout.write(f"{write_tiny_model(Path(argv[0]))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
