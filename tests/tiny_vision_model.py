"""A tiny but real vision-language model, built from nothing, for the image tests.

Idefics3's architecture (SmolVLM's: a SigLIP-style vision tower, a pixel-shuffle connector, a
Llama text model) at toy sizes, randomly initialised: a picture is resized to 28 pixels a side
and becomes one image token. The processor (Idefics3's image processor, without tiling, and the
tiny model's tokenizer with Idefics3's image tokens) is saved beside it, so vLLM loads the
folder like any Idefics3 checkpoint. Replies are noise; every code path of a real vision model
runs: the image is decoded, resized, encoded and placed in the prompt.

Why not Qwen2-VL or LLaVA: on the CPU build vLLM's modules for them import torchvision, which
cannot be installed beside the CPU torch (see the platform notes); Idefics3's do not.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_model import build_tokenizer

IMAGE_SIZE = 28  # pixels a side: 2 × 2 patches of 14, pixel-shuffled into one token
PATCH_SIZE = 14
SCALE_FACTOR = 2
IMAGE_TOKEN = "<image>"
EXTRA_TOKENS = ["<fake_token_around_image>", IMAGE_TOKEN, "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)
]


def build_tiny_vision_model(path: Path, seed: int = 0) -> Path:
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": EXTRA_TOKENS})
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    vision = Idefics3VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=1,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    config = Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=SCALE_FACTOR,
        pad_token_id=text.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": IMAGE_SIZE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=tokenizer.chat_template,
    )
    processor.save_pretrained(path)
    return path


if __name__ == "__main__":
    import sys

    print(build_tiny_vision_model(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-vision-model")))
