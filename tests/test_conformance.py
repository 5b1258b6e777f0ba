"""Conformance with transformers' generation and model tests, for every supported family (issue 12).

Each behaviour (greedy, beam, sampling, assisted and prompt-lookup decoding, static cache, continuing from a
returned cache, padded and unpadded prompts, ``inputs_embeds``, ``labels`` with loss keyword arguments,
``logits_to_keep``, scores and logits, padding-free packed inputs, a wrong image-token count) runs three ways on
a tiny random-weight model of each family:

(a) unpruned: the reference. Where the unpruned model itself raises, the behaviour is skipped with its error;
(b) inside ``gprune.pruned(model, GPruneConfig(keep=1.0))``: every tensor must be *identical* (``torch.equal``);
(c) with keep = 0.5: no error, every tensor shaped as in (a), finite, and ``generate`` returning the original
    prompt followed by the new tokens.

Behaviour-specific checks add what transformers' own tests assert: continuing from a returned cache equals one
``generate`` call, a packed padding-free row equals each prompt alone, loss keyword arguments change the loss, a
wrong image-token count raises the model's own error. Prompt-lookup decoding runs on Gemma 3 only: the other
unpruned models copy image placeholders into the candidates and reject them (transformers 5.23 and 5.24).

The behaviours and the checks live in `conformance_cases`; test ids read ``test_conformance[<family>-<behaviour>]``.
"""

from __future__ import annotations

import pytest
import torch

from conformance_cases import BEHAVIOURS, FAMILIES, Family, build, conform, packed_inputs

CASES = [(family, behaviour) for family in FAMILIES for behaviour in BEHAVIOURS]


def case_id(case: tuple[str, str]) -> str:
    family, behaviour = case
    return f"{family}-{behaviour}"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py; zoo: the tiny models, built once


def family_of(zoo: dict[str, Family], name: str) -> Family:
    if name not in zoo:
        zoo.clear()  # cases are ordered by family: the previous family is done
        zoo[name] = Family(name, build(name))
    return zoo[name]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conformance(zoo: dict[str, Family], case: tuple[str, str]) -> None:
    name, behaviour = case
    family = family_of(zoo, name)
    conform(family, behaviour)


def test_packed_inputs_hold_both_prompts() -> None:
    """The packed row is the two prompts back to back, positions restarting at 0 (checks the helper itself)."""
    family = Family("llava", build("llava"))
    singles = family.singles()
    packed = packed_inputs(family)
    lengths = [s["input_ids"].shape[1] for s in singles]
    assert torch.equal(packed["input_ids"], torch.cat([s["input_ids"] for s in singles], dim=1))
    assert packed["position_ids"].tolist() == [list(range(lengths[0])) + list(range(lengths[1]))]
    assert "attention_mask" not in packed
