"""Tiny random-weight models and offline processors for tests and the offline demo.

Nothing here downloads anything: tokenizers are built with `tokenizers`, models from transformers
configs with random weights. Use them to check wiring and semantics, never quality.
"""

from gprune.testing.gemma3 import tiny_gemma3
from gprune.testing.idefics3 import tiny_idefics3, tiny_smolvlm
from gprune.testing.internvl import tiny_internvl
from gprune.testing.llava import (
    TinyModel,
    build_tokenizer,
    tiny_llava,
    tiny_llava_next,
    tiny_llava_onevision,
    tiny_mistral3,
    tiny_model,
)

__all__ = [
    "TinyModel",
    "build_tokenizer",
    "tiny_gemma3",
    "tiny_idefics3",
    "tiny_internvl",
    "tiny_llava",
    "tiny_llava_next",
    "tiny_llava_onevision",
    "tiny_mistral3",
    "tiny_smolvlm",
    "tiny_model",
]
