"""A tiny random-weight Gemma 3 with its real processor, offline (see `gprune.testing.llava`)."""

from __future__ import annotations

import torch

from gprune.testing.llava import TinyModel, build_tokenizer

BOI, EOI, IMAGE_SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"


def tiny_gemma3(*, seed: int = 0, hidden: int = 64, layers: int = 2, dtype: torch.dtype = torch.float32) -> TinyModel:
    """Gemma 3: a 64 px SigLIP view of 8x8 patches pooled to 4x4 = 16 tokens per image (256 on the real model).

    Prompts mark an image with ``<start_of_image>``; the processor expands it to the token block.
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    tokenizer = build_tokenizer(named_special_tokens={"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE_SOFT})
    config = Gemma3Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": hidden // 4,
            "sliding_window": 32,
            "max_position_embeddings": 1024,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 8,
        },
        mm_tokens_per_image=16,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
        image_token_index=tokenizer.image_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    processor = Gemma3Processor(
        image_processor=Gemma3ImageProcessorPil(size={"height": 64, "width": 64}),
        tokenizer=tokenizer,
        image_seq_length=16,
    )
    return TinyModel(model.to(dtype).eval(), processor, image_token=BOI)
