"""A tiny but real chat model, built from nothing, for tests and CPU benchmarks.

A byte-level BPE tokenizer trained on a few English and Chinese lines, a ChatML
chat template, and a randomly initialised Qwen2 (or Llama) with head size 64 (a
size vLLM's CPU attention supports), saved as bf16 safetensors. The weights are
random, so replies are gibberish, but every code path of a real model runs.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "Hello, how are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog.",
    "Large language models run fast on a GPU with vLLM.",
    "Write a short poem about the sea and the stars.",
    "What is the capital of France? Paris is the capital.",
    "你好，今天过得怎么样？我很好，谢谢。",
    "大语言模型可以在显卡上快速运行。",
    "请写一首关于大海和星星的短诗。",
    "中国的首都是北京，法国的首都是巴黎。",
    "机器学习和深度学习是人工智能的分支。",
    "def add(a, b):\n    return a + b\n",
    "1 2 3 4 5 6 7 8 9 10 + - * / = ( ) [ ] { } < > \" ' ` ~ ! ? @ # $ % ^ & |",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
THINK_TOKENS = ["<think>", "</think>"]
# As Qwen3's newer templates write it: the prompt opens the thinking, or (thinking switched off)
# hands the model an empty one.
THINKING_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{{ '<|im_start|>assistant\n' }}",
    "{{ '<|im_start|>assistant\n' }}{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\n\n</think>\n\n' }}{% else %}{{ '<think>\n' }}{% endif %}",
)


def build_tokenizer(vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # All 256 bytes, so any text (any Chinese character) round-trips exactly.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    path: Path,
    arch: str = "qwen2",
    max_position_embeddings: int = 2048,
    chat_template: bool = True,
    seed: int = 0,
    hidden_size: int = 128,
    layers: int = 2,
    thinking: bool = False,
) -> Path:
    """Write a tiny model folder at `path` and return it. Attention heads are 64 wide (what the
    CPU backend supports); `hidden_size` and `layers` make it slower, not smarter. `thinking`: a
    reasoning model, with <think> tokens and a template that takes `enable_thinking`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    if thinking:
        # Added tokens, not special ones, as in Qwen3's and DeepSeek-R1's tokenizers: the tags stay
        # in the decoded text, where the reasoning parsers look for them.
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
        tokenizer.chat_template = THINKING_CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=max(1, hidden_size // 128),
        max_position_embeddings=max_position_embeddings,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(f"unknown arch {arch}")
    model = model.to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    # A generation_config with a default the engine must merge (checked in tests).
    (path / "generation_config.json").write_text(
        json.dumps({"eos_token_id": common["eos_token_id"], "temperature": 0.9, "top_k": 40}), encoding="utf-8"
    )
    return path


if __name__ == "__main__":
    import sys

    print(build_tiny_model(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-model")))
