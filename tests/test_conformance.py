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

The behaviours themselves live in `conformance_cases`; test ids read ``test_conformance[<family>-<behaviour>]``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

import gprune
from conformance_cases import BEHAVIOURS, FAMILIES, KEEP, Family, Result, build, packed_inputs

CASES = [(family, behaviour) for family in FAMILIES for behaviour in BEHAVIOURS]


def case_id(case: tuple[str, str]) -> str:
    family, behaviour = case
    return f"{family}-{behaviour}"


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """Tiny models run 10-40x faster on one thread than on two busy cores; the setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo() -> dict[str, Family]:
    """Tiny models built on first use and kept for the module (a family's cases run one after another)."""
    return {}


def family_of(zoo: dict[str, Family], name: str) -> Family:
    if name not in zoo:
        zoo.clear()  # cases are ordered by family: the previous family is done
        zoo[name] = Family(name, build(name))
    return zoo[name]


def run(family: Family, behaviour: str, config: gprune.GPruneConfig | None) -> Result:
    family.reset()
    if config is None:
        return BEHAVIOURS[behaviour](family)
    with gprune.pruned(family.model, config):
        result = BEHAVIOURS[behaviour](family)
        result.report = gprune.last_report(family.model)
        return result


def _as_steps(value: Any) -> tuple[Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


def assert_identical(got: Result, want: Result) -> None:
    assert got.values.keys() == want.values.keys()
    for name, value in want.values.items():
        got_steps, want_steps = _as_steps(got.values[name]), _as_steps(value)
        assert len(got_steps) == len(want_steps), f"{name}: {len(got_steps)} steps, unpruned {len(want_steps)}"
        for step, (a, b) in enumerate(zip(got_steps, want_steps, strict=True)):
            if not torch.equal(a, b):
                detail = ""
                if a.shape == b.shape and a.is_floating_point():
                    detail = f", max abs difference {float((a - b).abs().max()):.3g}"
                elif a.shape == b.shape:
                    detail = f", first differing index {(a != b).nonzero()[0].tolist()}"
                where = f"{name}[{step}]" if isinstance(value, tuple) else name
                pytest.fail(f"keep=1.0 differs from unpruned in {where}: shapes {a.shape} / {b.shape}{detail}")


def assert_conforming(got: Result, want: Result) -> None:
    assert got.values.keys() == want.values.keys()
    for name, value in want.values.items():
        got_steps, want_steps = _as_steps(got.values[name]), _as_steps(value)
        assert len(got_steps) == len(want_steps), f"{name}: {len(got_steps)} steps, unpruned {len(want_steps)}"
        for step, (a, b) in enumerate(zip(got_steps, want_steps, strict=True)):
            assert a.shape == b.shape, f"{name}[{step}] has shape {tuple(a.shape)}, unpruned {tuple(b.shape)}"
            assert a.dtype == b.dtype, f"{name}[{step}] is {a.dtype}, unpruned {b.dtype}"
            if a.is_floating_point():
                ok = ~torch.isnan(a) if name in got.may_be_infinite else torch.isfinite(a)
                assert bool(ok.all()), f"{name}[{step}] holds non-finite values"
    if want.prompt is not None:
        sequences, prompt = got.values["sequences"], want.prompt
        prompt = prompt.repeat_interleave(sequences.shape[0] // prompt.shape[0], dim=0)
        assert torch.equal(sequences[:, : prompt.shape[1]], prompt), "generate must return the original prompt first"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conformance(zoo: dict[str, Family], case: tuple[str, str]) -> None:
    name, behaviour = case
    family = family_of(zoo, name)
    try:
        reference = run(family, behaviour, None)
    except AssertionError:
        raise
    except Exception as error:  # a behaviour the unpruned model rejects is skipped
        pytest.skip(f"unpruned {name} does not support {behaviour}: {type(error).__name__}: {error}"[:300])
    check = CHECKS.get(behaviour, check_outputs)
    check(family, behaviour, reference)


def check_outputs(family: Family, behaviour: str, reference: Result) -> Result:
    """(b) keep=1.0 identical to the unpruned run, (c) keep<1 conforming; returns the keep<1 result."""
    assert reference.values, "the behaviour returned nothing to compare"
    same = run(family, behaviour, gprune.GPruneConfig(keep=1.0))
    assert_identical(same, reference)
    pruned = run(family, behaviour, gprune.GPruneConfig(keep=KEEP))
    assert pruned.report is not None and pruned.report.tokens_after < pruned.report.tokens_before, "nothing pruned"
    assert_conforming(pruned, reference)
    return pruned


def _continues_like_one_call(result: Result) -> bool:
    once = result.extra["in_one_call"]
    return torch.equal(result.values["sequences"], once.sequences) and all(
        torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(result.values["logits"], once.logits, strict=True)
    )


def check_continue_from_cache(family: Family, behaviour: str, reference: Result) -> None:
    if not _continues_like_one_call(reference):
        pytest.skip(f"unpruned {family.name}: continuing from the returned cache differs from one generate call")
    pruned = check_outputs(family, behaviour, reference)
    # as transformers' test asserts of the unpruned model: continuing equals generating all tokens in one call
    assert _continues_like_one_call(pruned), "pruned: continuing from the returned cache differs from one generate call"


def check_loss_kwargs(family: Family, behaviour: str, reference: Result) -> None:
    if torch.equal(reference.values["loss"], reference.extra["plain"].loss):
        pytest.skip(f"unpruned {family.name} ignores {behaviour} in its loss")
    check_outputs(family, behaviour, reference)


def check_packed(family: Family, behaviour: str, reference: Result) -> None:
    """The padding-free row equals each prompt alone (unpruned, else skipped); then keep=1 exact, keep<1 likewise."""
    lengths = [a.shape[0] for a in reference.extra["alone"]]
    logits = reference.values["logits"][0]
    for segment, alone in zip(logits.split(lengths), reference.extra["alone"], strict=True):
        if not torch.allclose(segment, alone, rtol=1e-4, atol=1e-4):
            difference = float((segment - alone).abs().max())
            pytest.skip(
                f"unpruned {family.name}: packed padding-free logits differ from each prompt alone by {difference:.3g}"
            )
    pruned = check_outputs(family, behaviour, reference)
    segments = pruned.values["logits"][0].split(lengths)
    for k, (segment, alone) in enumerate(zip(segments, pruned.extra["alone"], strict=True)):
        torch.testing.assert_close(
            segment, alone, rtol=1e-4, atol=1e-4, msg=lambda m, k=k: f"pruned packed sample {k} vs alone: {m}"
        )


def check_error(family: Family, behaviour: str, reference: Result) -> None:
    want = reference.extra["error"]
    if want is None:
        pytest.skip(f"unpruned {family.name} accepts a wrong image-token count")
    for keep in (1.0, KEEP):
        got = run(family, behaviour, gprune.GPruneConfig(keep=keep)).extra["error"]
        assert got is not None, f"keep={keep}: no error for a wrong image-token count"
        assert type(got) is type(want) and str(want) in str(got), (
            f"keep={keep}: {type(got).__name__}: {got!s} -- the unpruned model raises {type(want).__name__}: {want!s}"
        )


CHECKS = {
    "continue-from-cache": check_continue_from_cache,
    "shift-labels": check_loss_kwargs,
    "num-items-in-batch": check_loss_kwargs,
    "packed": check_packed,
    "image-token-mismatch": check_error,
}


def test_packed_inputs_hold_both_prompts() -> None:
    """The packed row is the two prompts back to back, positions restarting at 0 (checks the helper itself)."""
    family = Family("llava", build("llava"))
    singles = family.singles()
    packed = packed_inputs(family)
    lengths = [s["input_ids"].shape[1] for s in singles]
    assert torch.equal(packed["input_ids"], torch.cat([s["input_ids"] for s in singles], dim=1))
    assert packed["position_ids"].tolist() == [list(range(lengths[0])) + list(range(lengths[1]))]
    assert "attention_mask" not in packed
