"""Inputs and behaviours for `test_conformance.py`: the checks transformers' own generation and model tests make.

Every family gets the same prompts through its own processor. A behaviour is a function of a `Family` that calls
the model (``forward`` or ``generate``) and returns a `Result`: named tensors (or tuples of tensors, one per
generated step) to compare. The test runs each behaviour on the unpruned model, with keep = 1.0 (which must give
identical results) and with keep < 1 (same shapes, finite values, the original prompt in front of the new tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest
import torch
from PIL import Image
from torch import Tensor

import gprune
from gprune.integrations.hf_args import cache_keyword, output_cache
from gprune.testing import (
    TinyModel,
    tiny_gemma3,
    tiny_idefics3,
    tiny_internvl,
    tiny_llava,
    tiny_llava_next,
    tiny_llava_onevision,
    tiny_mistral3,
    tiny_smolvlm,
)
from gprune.testing.qwen import QWEN_MODEL_TYPES, tiny_qwen

PHOTO = Image.open(gprune.__path__[0] + "/assets/coffee.jpg").convert("RGB")
MIRRORED = PHOTO.transpose(Image.Transpose.FLIP_LEFT_RIGHT)

BUILDERS: dict[str, Callable[..., TinyModel]] = {
    "llava": tiny_llava,
    "llava_next": tiny_llava_next,
    "llava_onevision": tiny_llava_onevision,
    "mistral3": tiny_mistral3,
    "gemma3": tiny_gemma3,
    "idefics3": tiny_idefics3,
    "smolvlm": tiny_smolvlm,
    "internvl": tiny_internvl,
    **{name: (lambda name=name, **kw: tiny_qwen(name, **kw)) for name in QWEN_MODEL_TYPES},
}
FAMILIES: tuple[str, ...] = tuple(BUILDERS)
NESTED_IMAGES = ("gemma3", "idefics3", "smolvlm")  # processors that take images nested per prompt
PER_PROMPT_PIXELS = ("idefics3", "smolvlm")  # pixel tensors (prompts, views, ...) rather than (images, ...)
PER_TOKEN_KEYS = ("token_type_ids", "mm_token_type_ids")

NEW_TOKENS = 6
LONG = 12  # the unpadded decoding runs: enough steps to expose a decoding step that diverges
KEEP = 0.5

# (question, image, (width, height)); padded: different lengths; unpadded: the same length, different images
PADDED = [("What?", PHOTO, (60, 40)), ("Where is the cup now?", MIRRORED, (40, 70))]
UNPADDED = [("What is on it?", PHOTO, (60, 40)), ("Who made this?", MIRRORED, (60, 40))]


def build(family: str, seed: int = 0) -> TinyModel:
    """A tiny model of `family` that never stops early: EOS is unset, so every run decodes all its steps."""
    tiny = BUILDERS[family](seed=seed)
    tiny.model.generation_config.eos_token_id = None
    return tiny


@dataclass
class Family:
    """One family's tiny model (built once), its assistant (built on first use) and its prompts."""

    name: str
    tiny: TinyModel

    @property
    def model(self) -> torch.nn.Module:
        return self.tiny.model

    @cached_property
    def assistant(self) -> torch.nn.Module:
        return build(self.name, seed=1).model

    @property
    def image_token_id(self) -> int:
        config = self.model.config
        token = getattr(config, "image_token_id", None)
        return int(token if token is not None else config.image_token_index)

    @property
    def mismatch_token_id(self) -> int:
        """The placeholder `image_token_mismatch` replaces (its last occurrence) by a text token."""
        return self.image_token_id

    @property
    def padded_prompts(self) -> list[Any]:
        return PADDED

    @property
    def unpadded_prompts(self) -> list[Any]:
        return UNPADDED

    def config(self, keep: float) -> gprune.GPruneConfig:
        """The pruning configuration of the keep = 1.0 and keep < 1 runs."""
        return gprune.GPruneConfig(keep=keep)

    def check_report(self, report: Any, keep: float) -> None:
        """Checks of gprune's report of a run at `keep`, beyond "something was pruned" (none here)."""

    def encode(self, prompts: list[tuple[str, Image.Image, tuple[int, int]]], side: str = "left") -> dict[str, Any]:
        self.tiny.processor.tokenizer.padding_side = side
        text = [self.tiny.prompt(q) for q, _, _ in prompts]
        images = [image.resize(size) for _, image, size in prompts]
        if self.name in NESTED_IMAGES:
            images = [[image] for image in images]
        return dict(self.tiny.processor(images=images, text=text, return_tensors="pt", padding=True))

    def padded(self, side: str = "left") -> dict[str, Any]:
        inputs = self.encode(self.padded_prompts, side)
        assert not inputs["attention_mask"].all(), "the padded batch must hold padding"
        return inputs

    def unpadded(self, batch: bool) -> dict[str, Any]:
        prompts = self.unpadded_prompts
        inputs = self.encode(prompts if batch else prompts[:1])
        assert inputs["attention_mask"].all(), "the unpadded prompts must have the same length"
        return inputs

    def singles(self) -> list[dict[str, Any]]:
        return [self.encode([p]) for p in self.padded_prompts]

    def reset(self) -> None:
        """Forget state a previous call left on the model (Qwen's cached ``rope_deltas``)."""
        inner = getattr(self.model, "model", None)
        if inner is not None and hasattr(inner, "rope_deltas"):
            inner.rope_deltas = None


@dataclass
class Result:
    """What one run of a behaviour gave: tensors by name (a tuple per generated step where generate returns one).

    `prompt`: the ``input_ids`` the returned ``sequences`` must start with (None where generate returns only new
    tokens). `may_be_infinite`: names whose values may hold -inf (processed scores). `extra`: behaviour-specific
    data for the keep < 1 checks, not compared.
    """

    values: dict[str, Any]
    prompt: Tensor | None = None
    may_be_infinite: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    report: Any = None  # gprune's report of the last pruned call in the run


def _generate(model: torch.nn.Module, inputs: dict[str, Any], **kwargs: Any) -> Any:
    settings = {
        "max_new_tokens": NEW_TOKENS,
        "do_sample": False,
        "return_dict_in_generate": True,
        "output_logits": True,
        **kwargs,
    }
    if settings["do_sample"]:
        torch.manual_seed(0)
    with torch.no_grad():
        return model.generate(**inputs, **settings)


def _generated(out: Any, prompt: Tensor | None, *extra: str) -> Result:
    values = {"sequences": out.sequences, "logits": tuple(out.logits)}
    for name in extra:
        value = getattr(out, name)
        values[name] = tuple(value) if isinstance(value, tuple) else value
    return Result(values, prompt=prompt, may_be_infinite=("scores",))


def generation(inputs_of: Callable[[Family], dict[str, Any]], **kwargs: Any) -> Callable[[Family], Result]:
    def run(family: Family) -> Result:
        inputs = inputs_of(family)
        return _generated(_generate(family.model, inputs, **kwargs), inputs["input_ids"])

    return run


def padded(f: Family) -> dict[str, Any]:
    return f.padded()


def unpadded_single(f: Family) -> dict[str, Any]:
    return f.unpadded(batch=False)


def unpadded_batch(f: Family) -> dict[str, Any]:
    return f.unpadded(batch=True)


def unpadded_single_without_mask(f: Family) -> dict[str, Any]:
    inputs = f.unpadded(batch=False)
    del inputs["attention_mask"]
    return inputs


def beam(f: Family) -> Result:
    inputs = f.padded()
    out = _generate(f.model, inputs, num_beams=2, num_return_sequences=2, output_scores=True)
    return _generated(out, inputs["input_ids"], "sequences_scores", "scores")


def scores_and_logits(f: Family) -> Result:
    inputs = f.padded()
    out = _generate(f.model, inputs, output_scores=True)
    result = _generated(out, inputs["input_ids"], "scores")
    # with no logits processor in play, the scores are the raw logits
    for score, logit in zip(result.values["scores"], result.values["logits"], strict=True):
        assert torch.equal(score, logit)
    return result


def assisted(f: Family) -> Result:
    inputs = f.unpadded(batch=False)
    out = _generate(f.model, inputs, max_new_tokens=LONG, assistant_model=f.assistant)
    plain = _generate(f.model, inputs, max_new_tokens=LONG)
    # assisted greedy decoding gives greedy decoding's tokens, whatever the assistant proposes
    assert torch.equal(out.sequences, plain.sequences), "assisted greedy differs from greedy"
    return _generated(out, inputs["input_ids"])


def prompt_lookup(f: Family) -> Result:
    inputs = f.unpadded(batch=False)
    out = _generate(f.model, inputs, max_new_tokens=LONG, prompt_lookup_num_tokens=3)
    plain = _generate(f.model, inputs, max_new_tokens=LONG)
    assert torch.equal(out.sequences, plain.sequences), "prompt-lookup greedy differs from greedy"
    return _generated(out, inputs["input_ids"])


def continue_from_cache(f: Family) -> Result:
    """transformers' ``test_generate_continue_from_past_key_values``: 3 tokens, then 3 more from the returned cache.

    The second call passes no pixel values: the images are in the cache already (and the unpruned VLMs reject
    pixel values whose placeholders are all cached).
    """
    inputs = f.padded()
    first = _generate(f.model, inputs, max_new_tokens=3)
    grown = first.sequences.shape[1] - inputs["input_ids"].shape[1]
    more = {
        "input_ids": first.sequences,
        "attention_mask": torch.nn.functional.pad(inputs["attention_mask"], (0, grown), value=1),
        **{k: torch.nn.functional.pad(inputs[k], (0, grown)) for k in PER_TOKEN_KEYS if k in inputs},  # text
        cache_keyword(type(f.model).forward): output_cache(first),
    }
    second = _generate(f.model, more, max_new_tokens=3)
    f.reset()
    once = _generate(f.model, inputs, max_new_tokens=6)
    return Result(
        {"sequences": second.sequences, "logits": tuple(first.logits) + tuple(second.logits)},
        prompt=inputs["input_ids"],
        extra={"in_one_call": once},
    )


def _embedded(f: Family, inputs: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in inputs.items() if k != "input_ids"}
    with torch.no_grad():
        rest["inputs_embeds"] = f.model.get_input_embeddings()(inputs["input_ids"])
    return rest


def inputs_embeds_forward(f: Family) -> Result:
    inputs = f.padded()
    with torch.no_grad():
        out = f.model(**_embedded(f, inputs))
    return Result({"logits": out.logits})


def inputs_embeds_generate(f: Family) -> Result:
    """``generate(inputs_embeds=..., pixel_values=...)``: the output holds only the new tokens."""
    inputs = f.padded()
    out = _generate(f.model, _embedded(f, inputs))
    assert out.sequences.shape[1] == NEW_TOKENS
    return _generated(out, None)


def _labels(inputs: dict[str, Any]) -> Tensor:
    return inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)


def _forward(f: Family, inputs: dict[str, Any], **kwargs: Any) -> Any:
    with torch.no_grad():
        return f.model(**inputs, **kwargs)


def labels(f: Family) -> Result:
    inputs = f.padded(side="right")
    out = _forward(f, inputs, labels=_labels(inputs))
    return Result({"loss": out.loss, "logits": out.logits})


def shift_labels(f: Family) -> Result:
    """``shift_labels`` given: the loss uses them as the targets instead of shifting ``labels``."""
    inputs = f.padded(side="right")
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(7, 200, inputs["input_ids"].shape, generator=generator)
    targets = targets.masked_fill(inputs["attention_mask"] == 0, -100)
    targets[:, -1] = -100
    out = _forward(f, inputs, labels=_labels(inputs), shift_labels=targets)
    return Result(
        {"loss": out.loss, "logits": out.logits}, extra={"plain": _forward(f, inputs, labels=_labels(inputs))}
    )


def num_items_in_batch(f: Family) -> Result:
    """``num_items_in_batch`` given (gradient accumulation): the loss is the token sum divided by it."""
    inputs = f.padded(side="right")
    out = _forward(f, inputs, labels=_labels(inputs), num_items_in_batch=torch.tensor(7))
    return Result({"loss": out.loss}, extra={"plain": _forward(f, inputs, labels=_labels(inputs))})


def logits_to_keep(f: Family) -> Result:
    inputs = f.padded()
    last = _forward(f, inputs, logits_to_keep=1).logits
    three = _forward(f, inputs, logits_to_keep=3).logits
    assert last.shape[1] == 1 and three.shape[1] == 3
    return Result({"last": last, "three": three})


def packed_inputs(f: Family) -> dict[str, Any]:
    """The `PADDED` prompts concatenated in one row, positions restarting at 0, no attention mask.

    Token tensors come from each prompt encoded alone (no padding), image and video tensors from the batch
    (images of different sizes padded as the processor does). Qwen families get four position rows, as
    transformers' padding-free path expects: the text positions (which mark where a sample starts), then each
    sample's mRoPE positions from the model's own ``get_rope_index``.
    """
    singles, batch = f.singles(), f.padded()
    packed: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "attention_mask":
            continue
        if key == "input_ids" or key in PER_TOKEN_KEYS:
            packed[key] = torch.cat([s[key] for s in singles], dim=1)
        elif key in ("pixel_values", "pixel_attention_mask") and f.name in PER_PROMPT_PIXELS:
            packed[key] = value.flatten(0, 1)[None]  # one prompt holding every view
        else:
            packed[key] = value  # per image
    text = torch.cat([torch.arange(s["input_ids"].shape[1]) for s in singles])
    if f.name in QWEN_MODEL_TYPES:
        rope = []
        for s in singles:
            grids = {k: s[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in s}
            positions, _ = f.model.model.get_rope_index(s["input_ids"], s["mm_token_type_ids"], **grids)
            rope.append(positions[:, 0])
        packed["position_ids"] = torch.cat([text[None], torch.cat(rope, dim=1)], dim=0)[:, None]
    else:
        packed["position_ids"] = text[None]
    return packed


def packed(f: Family) -> Result:
    """Padding-free: two prompts in one row equal each prompt alone (transformers' padding-free tests)."""
    out = _forward(f, packed_inputs(f), use_cache=False)  # no cache: transformers reads the packing then
    alone = []
    for single in f.singles():
        f.reset()
        alone.append(_forward(f, single).logits[0])
    return Result({"logits": out.logits}, extra={"alone": alone})


def image_token_mismatch(f: Family) -> Result:
    """One placeholder (`Family.mismatch_token_id`) replaced by a text token: the model's own error, whatever the
    keep setting."""
    inputs = f.unpadded(batch=False)
    ids = inputs["input_ids"].clone()
    last = int((ids[0] == f.mismatch_token_id).nonzero().max())
    ids[0, last] = f.tiny.processor.tokenizer.convert_tokens_to_ids("a")
    try:
        _forward(f, {**inputs, "input_ids": ids})
    except Exception as error:  # the model's error, whatever its type, is the result
        return Result({}, extra={"error": error})
    return Result({}, extra={"error": None})


BEHAVIOURS: dict[str, Callable[[Family], Result]] = {
    "greedy-padded": generation(padded),
    "greedy-unpadded": generation(unpadded_single, max_new_tokens=LONG),
    "greedy-unpadded-batch": generation(unpadded_batch, max_new_tokens=LONG),
    "greedy-unpadded-nomask": generation(unpadded_single_without_mask, max_new_tokens=LONG),
    "sample-padded": generation(padded, do_sample=True),
    "sample-unpadded": generation(unpadded_single, do_sample=True, max_new_tokens=LONG),
    "sample-unpadded-batch": generation(unpadded_batch, do_sample=True, max_new_tokens=LONG),
    "beam": beam,
    "assisted": assisted,
    "prompt-lookup": prompt_lookup,
    "static-cache": generation(padded, cache_implementation="static"),
    "continue-from-cache": continue_from_cache,
    "scores-logits": scores_and_logits,
    "inputs-embeds-forward": inputs_embeds_forward,
    "inputs-embeds-generate": inputs_embeds_generate,
    "labels": labels,
    "shift-labels": shift_labels,
    "num-items-in-batch": num_items_in_batch,
    "logits-to-keep": logits_to_keep,
    "packed": packed,
    "image-token-mismatch": image_token_mismatch,
}


# --- running a behaviour three ways and comparing --------------------------------------------------------------


def run(family: Family, behaviour: str, config: gprune.GPruneConfig | None) -> Result:
    """`behaviour` on the unpruned model (`config` None) or inside ``gprune.pruned(model, config)``."""
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


def conform(family: Family, behaviour: str) -> None:
    """The test of one case: the unpruned reference (skipped with its error where the model refuses the
    behaviour), then the behaviour's check (`CHECKS`, by default `check_outputs`)."""
    try:
        reference = run(family, behaviour, None)
    except AssertionError:
        raise
    except Exception as error:  # a behaviour the unpruned model rejects is skipped
        pytest.skip(f"unpruned {family.name} does not support {behaviour}: {type(error).__name__}: {error}"[:300])
    check = CHECKS.get(behaviour, check_outputs)
    check(family, behaviour, reference)


def check_outputs(family: Family, behaviour: str, reference: Result) -> Result:
    """(b) keep=1.0 identical to the unpruned run, (c) keep<1 conforming; returns the keep<1 result."""
    assert reference.values, "the behaviour returned nothing to compare"
    same = run(family, behaviour, family.config(1.0))
    assert_identical(same, reference)
    family.check_report(same.report, 1.0)
    pruned = run(family, behaviour, family.config(KEEP))
    assert pruned.report is not None and pruned.report.tokens_after < pruned.report.tokens_before, "nothing pruned"
    family.check_report(pruned.report, KEEP)
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
        pytest.skip(f"unpruned {family.name} accepts a wrong placeholder count")
    for keep in (1.0, KEEP):
        got = run(family, behaviour, family.config(keep)).extra["error"]
        assert got is not None, f"keep={keep}: no error for a wrong placeholder count"
        assert type(got) is type(want) and str(want) in str(got), (
            f"keep={keep}: {type(got).__name__}: {got!s} -- the unpruned model raises {type(want).__name__}: {want!s}"
        )


CHECKS: dict[str, Callable[[Family, str, Result], Any]] = {
    "continue-from-cache": check_continue_from_cache,
    "shift-labels": check_loss_kwargs,
    "num-items-in-batch": check_loss_kwargs,
    "packed": check_packed,
    "image-token-mismatch": check_error,
}
