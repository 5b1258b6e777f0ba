"""Checks shared by the tiled-image families (Idefics3 / SmolVLM and InternVL), whose prompts differ only in encoding.

Each takes the family's own ``encode(tiny, sizes_per_prompt, questions, padding_side)``, so the test files keep
their images, prompts and family-specific tests.
"""

from __future__ import annotations

import torch

import gprune

NEW_TOKENS = 4


def greedy(model, inputs, **kwargs):
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, **kwargs)


def check_keep_one_is_the_identity(model, inputs) -> None:
    """keep = 1.0 gives bit-equal logits and beam-search output."""
    want_logits = model(**inputs).logits
    want = greedy(model, inputs, num_beams=2)
    with gprune.pruned(model, gprune.GPruneConfig(keep=1.0)):
        assert torch.equal(model(**inputs).logits, want_logits)
        assert torch.equal(greedy(model, inputs, num_beams=2), want)


def check_batch_equals_per_sample(tiny, encode, prompts, questions, padding_side: str) -> None:
    """A padded batch of prompts with different images equals each prompt alone (logits; generate when left-padded)."""
    batch = encode(tiny, prompts, questions, padding_side)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        logits = tiny.model(**batch).logits
        out = greedy(tiny.model, batch, num_beams=2) if padding_side == "left" else None
        for i in range(len(prompts)):
            single = encode(tiny, prompts[i : i + 1], questions[i : i + 1])
            valid = batch["attention_mask"][i].bool()
            torch.testing.assert_close(logits[i, valid], tiny.model(**single).logits[0], rtol=1e-4, atol=1e-4)
            if out is not None:
                want = greedy(tiny.model, single, num_beams=2)[0, -NEW_TOKENS:]
                assert torch.equal(out[i, -NEW_TOKENS:], want)
    if out is not None:  # the original prompt plus the new tokens
        assert out.shape[1] == batch["input_ids"].shape[1] + NEW_TOKENS
        assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])
