"""Hugging Face `transformers` integration: prune one model instance, reversibly.

``gprune.apply(model, config)`` binds a wrapped ``forward`` and ``generate`` on the *instance* (its
``__dict__``); the class, other instances and transformers itself are untouched, and
``gprune.remove(model)`` puts the instance's ``__dict__`` back exactly as it was. The wrappers run the
model's own vision encoder, select visual tokens with `gprune.pipeline`, and call the original method
with shorter ``input_ids`` / ``attention_mask`` / ``position_ids`` and the kept features
(``mm_encoder_outputs``, transformers >= 5.23). Calls without images pass through untouched.

What callers see:

- ``generate`` returns the *original* prompt followed by the new tokens, so
  ``out[:, inputs["input_ids"].shape[1]:]`` slices the answer as with the unpruned model. A
  ``max_length`` is read against the original prompt (turned into ``max_new_tokens``).
- ``model(**inputs)`` returns logits in the original token layout: a kept token holds its own logits;
  a pruned image token holds the logits of the nearest kept token before it, i.e. what the pruned model
  predicts next at that point. Shifted next-token scoring of the text (and ``labels``, whose loss is
  computed on the restored logits) therefore lines up exactly. Hidden states, attentions and the cache
  stay in the pruned layout. With ``logits_to_keep`` the trailing logits are returned as computed.
- After each pruned call, `last_report(model)` says what was pruned, image by image.
- Positions: "original" (default) keeps each token's unpruned position and decoding continues after
  the unpruned length; "compact" renumbers contiguously. For manual cached decoding (calling
  ``model(...)`` step by step) pass ``position_ids`` yourself; ``generate`` does this for you.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
from torch import Tensor

from gprune.adapters import ModelAdapter, get_adapter, get_adapter_class
from gprune.config import GPruneConfig
from gprune.errors import UserError
from gprune.integrations.hf_args import call_cache, output_cache
from gprune.integrations.hf_continue import CacheLedger, PrunedPrefix, continuation_kwargs
from gprune.layouts import TokenLayout, kept_token_count
from gprune.pipeline import (
    PrunedSequences,
    PruneReport,
    packed_segments,
    packing_positions,
    prune_call,
    repack_segments,
    restore_layout,
    unpack_segments,
)
from gprune.validation import Keep

STATE_ATTRIBUTE = "_gprune_state"
_WRAPPED = ("forward", "generate")


class _Missing:
    """Marks a method the instance did not override; one object, also across `copy.deepcopy`."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Missing:
        return self

    def __reduce__(self) -> str:
        return "_MISSING"


_MISSING = _Missing()
# What the pipeline replaces in a call (besides the adapter's image inputs and per-token tensors).
_REPLACED = ("input_ids", "inputs_embeds", "attention_mask", "position_ids")


@dataclass
class _State:
    config: GPruneConfig
    adapter: ModelAdapter
    saved: dict[str, Any]
    last_report: PruneReport | None = None
    passthrough: int = 0
    caches: CacheLedger = field(default_factory=CacheLedger)

    def original(self, model: Any, name: str) -> Any:
        """The method `apply` found on the instance (an accelerate hook's) or the class's, bound to `model`."""
        saved = self.saved[name]
        return getattr(type(model), name).__get__(model, type(model)) if saved is _MISSING else saved


def _state(model: Any) -> _State | None:
    return model.__dict__.get(STATE_ATTRIBUTE) if hasattr(model, "__dict__") else None


def _check_config(config: GPruneConfig | None) -> GPruneConfig:
    if config is None:
        return GPruneConfig()
    if not isinstance(config, GPruneConfig):
        raise TypeError(f"config must be a gprune.GPruneConfig, got {type(config).__name__}")
    return config


def apply(model: torch.nn.Module, config: GPruneConfig | None = None) -> torch.nn.Module:
    """Make this model instance prune visual tokens in ``forward`` and ``generate``; returns `model`.

    Calling it again on a pruned model replaces the config. An unsupported model raises a `UserError`
    that lists the supported ``config.model_type`` values.
    """
    config = _check_config(config)
    state = _state(model)
    if state is not None:
        state.config = config
        return model
    adapter = get_adapter(model)
    if not callable(getattr(model, "generate", None)):
        raise UserError(
            f"{type(model).__name__} has no generate(); apply gprune to the *ForConditionalGeneration model"
        )
    saved = {name: model.__dict__.get(name, _MISSING) for name in _WRAPPED}
    model.__dict__[STATE_ATTRIBUTE] = _State(config=config, adapter=adapter, saved=saved)
    # Bound methods whose functions hold no reference to the model: `copy.deepcopy` rebinds them to the
    # copy (with a copy of the state), so a copied model prunes itself, not the original.
    model.__dict__["forward"] = types.MethodType(_pruned_forward(model), model)
    model.__dict__["generate"] = types.MethodType(_pruned_generate(model), model)
    return model


def remove(model: torch.nn.Module) -> torch.nn.Module:
    """Undo `apply`: the instance's ``__dict__`` is as before. A model that is not pruned is returned as is."""
    state = _state(model)
    if state is None:
        return model
    for name, previous in state.saved.items():
        if previous is _MISSING:
            model.__dict__.pop(name, None)
        else:
            model.__dict__[name] = previous
    del model.__dict__[STATE_ATTRIBUTE]
    return model


@contextmanager
def pruned(model: torch.nn.Module, config: GPruneConfig | None = None) -> Iterator[torch.nn.Module]:
    """``with gprune.pruned(model, config):`` prune inside the block; afterwards the model is as before."""
    previous = _state(model)
    previous_config = previous.config if previous is not None else None
    apply(model, config)
    try:
        yield model
    finally:
        if previous_config is not None:
            apply(model, previous_config)
        else:
            remove(model)


def is_pruned(model: torch.nn.Module) -> bool:
    """Whether `apply` is in effect on this instance."""
    return _state(model) is not None


def pruning_config(model: torch.nn.Module) -> GPruneConfig | None:
    """The config in effect on this instance, or None."""
    state = _state(model)
    return state.config if state is not None else None


def last_report(model: torch.nn.Module) -> PruneReport | None:
    """What the last pruned call on this model did (None before any call with images, or after `remove`)."""
    state = _state(model)
    return state.last_report if state is not None else None


def image_layout(model_or_config: Any, image_size: tuple[int, int], **kwargs: Any) -> TokenLayout:
    """The token layout one image of ``(height, width)`` pixels gets in this model, from the config alone."""
    config = getattr(model_or_config, "config", model_or_config)
    return get_adapter_class(config).image_layout(config, tuple(image_size), **kwargs)


def kept_tokens(
    model_or_config: Any, image_size: tuple[int, int], config: GPruneConfig | Keep | None = None, **kwargs: Any
) -> int:
    """Visual tokens one image of ``(height, width)`` pixels keeps: a pure function of model config, size and keep.

    `config` is a `GPruneConfig` (its method may count over its own grouping, as ``divprune-released``
    does) or a bare keep setting (ratio or count, G-Prune's grouping); `kwargs` go to the adapter's layout
    (e.g. ``multi_image=True`` for LLaVA-OneVision).
    """
    if not isinstance(config, GPruneConfig):
        config = GPruneConfig() if config is None else GPruneConfig(keep=config)
    return kept_token_count(image_layout(model_or_config, image_size, **kwargs), config.keep, method=config.method)


def _merge_args(names: list[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if len(args) > len(names):
        raise TypeError(f"forward() takes at most {len(names)} positional arguments, got {len(args)}")
    call = dict(zip(names, args, strict=False))
    for k, v in kwargs.items():
        if k in call:
            raise TypeError(f"forward() got multiple values for argument {k!r}")
        call[k] = v
    return call


def _rest(call: Mapping[str, Any], adapter: ModelAdapter) -> dict[str, Any]:
    consumed = {*_REPLACED, *adapter.image_input_keys, *adapter.per_token_keys}
    return {k: v for k, v in call.items() if k not in consumed}


def _with_mask(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Give gapped positions an explicit all-ones mask where transformers would read them as packed sequences.

    Inside a pruned ``generate`` the pruned prompt's mask may be dropped (an all-ones mask is). Without a
    mask and without a cache, transformers takes every jump in the positions for the start of a new packed
    sequence, and kept tokens after a gap would stop seeing the tokens before it. Contiguous positions
    (nothing pruned, or compact positions) are passed on untouched, so ``keep=1.0`` is the unpruned call.
    """
    ids = kwargs.get("input_ids")
    ids = ids if isinstance(ids, Tensor) else kwargs.get("inputs_embeds")
    positions = kwargs.get("position_ids")
    if not isinstance(ids, Tensor) or kwargs.get("attention_mask") is not None or not isinstance(positions, Tensor):
        return kwargs
    if call_cache(kwargs) is not None:
        return kwargs
    text = packing_positions(positions)
    if text is None or not bool((text.diff(dim=-1) != 1).any()):
        return kwargs
    return {**kwargs, "attention_mask": torch.ones(ids.shape[:2], dtype=torch.long, device=ids.device)}


def _uses_cache(model: torch.nn.Module, call: Mapping[str, Any]) -> bool:
    """Whether the model will run this call with a KV cache (then transformers never reads packed sequences)."""
    use_cache = call.get("use_cache")
    if use_cache is None:
        use_cache = getattr(model.config.get_text_config(), "use_cache", False)
    return call_cache(call) is not None or bool(use_cache)


def _with_signature(fn: Any, model: torch.nn.Module, name: str) -> Any:
    """Give `fn` the signature of the method it replaces (``generate`` inspects ``forward``'s parameters)."""
    original = getattr(model, name)
    bound = inspect.signature(original)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    fn.__signature__ = bound.replace(parameters=[self_param, *bound.parameters.values()])
    fn.__doc__ = getattr(original, "__doc__", None)
    fn.__name__ = fn.__qualname__ = name
    return fn


def _pruned_forward(model: torch.nn.Module) -> Any:
    names = [p for p in inspect.signature(type(model).forward).parameters if p != "self"]

    def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        state: _State = self.__dict__[STATE_ATTRIBUTE]
        original = state.original(self, "forward")
        if state.passthrough:
            return original(*args, **_with_mask(kwargs))
        call = _merge_args(names, args, kwargs)
        adapter = state.adapter
        if not adapter.has_images(call):
            return original(*args, **kwargs)
        labels = call.pop("labels", None)
        return_dict = call.pop("return_dict", None)
        rest = _rest(call, adapter)
        segments = None if _uses_cache(self, call) else packed_segments(call)
        unpacked = None if segments is None else _unpack(call, segments, adapter)
        try:
            to_prune = call if unpacked is None else {**call, **_sequence_kwargs(unpacked)}
            pruned_call = prune_call(adapter, to_prune, state.config, for_generate=False)
        except ValueError as error:
            with torch.no_grad():
                _model_error_first(lambda: original(*args, **kwargs), error)
        state.last_report = pruned_call.report
        if unpacked is not None and pruned_call.report.tokens_after == pruned_call.report.tokens_before:
            out = original(**call, return_dict=True)  # nothing to cut: the packed call as given is exact
        else:
            out = original(**rest, **pruned_call.model_kwargs, return_dict=True)
            logits = getattr(out, "logits", None)
            if isinstance(logits, Tensor) and logits.shape[:2] == pruned_call.sequences.source_index.shape:
                out.logits = restore_layout(logits, pruned_call.sequences)
                if unpacked is not None:
                    out.logits = repack_segments(out.logits, unpacked, segments)
        if labels is not None:
            # As the model does, on the logits in the original layout (the labels' layout): the loss
            # function gets every keyword that is not a named forward parameter (shift_labels,
            # num_items_in_batch, ignore_index, ...).
            loss_kwargs = {k: v for k, v in rest.items() if k not in names}
            vocab_size = self.config.get_text_config().vocab_size
            out.loss = self.loss_function(logits=out.logits, labels=labels, vocab_size=vocab_size, **loss_kwargs)
        return out.to_tuple() if return_dict is False else out

    return _with_signature(forward, model, "forward")


def _unpack(call: Mapping[str, Any], segments: Tensor, adapter: ModelAdapter) -> PrunedSequences:
    """Padding-free packed sequences as a right-padded batch, one row each, to be pruned like any batch."""
    per_token = {k: call[k] for k in adapter.per_token_keys if isinstance(call.get(k), Tensor)}
    return unpack_segments(call["input_ids"], call["position_ids"], segments, per_token)


def _sequence_kwargs(sequences: PrunedSequences) -> dict[str, Tensor]:
    return {
        "input_ids": sequences.input_ids,
        "attention_mask": sequences.attention_mask,
        "position_ids": sequences.position_ids,
        **sequences.per_token,
    }


def _model_error_first(run_unpruned: Callable[[], Any], error: ValueError) -> NoReturn:
    """For a call gprune cannot prune, raise what the unpruned model raises for it (its own validation,
    its own wording), chained to gprune's finding; gprune's error if the model accepts the call."""
    try:
        run_unpruned()
    except Exception as model_error:
        raise model_error from error
    raise error


def _passing_through(state: _State, generate: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Run the original ``generate``; the forward calls it makes go to the model unpruned."""
    state.passthrough += 1
    try:
        return generate(**kwargs)
    finally:
        state.passthrough -= 1


def _token_budget(kwargs: dict[str, Any], prompt_length: int, model: torch.nn.Module) -> None:
    """Read an absolute ``max_length`` against the original prompt (the pruned prompt is shorter).

    Mirrors ``generate``: ``max_new_tokens`` wins; else a ``max_length`` from the call, its generation
    config or the model's counts the prompt; with none set, ``generate``'s default of new tokens applies.
    """
    configs = [c for c in (kwargs.get("generation_config"), model.generation_config) if c is not None]
    if kwargs.get("max_new_tokens") is not None or any(getattr(c, "max_new_tokens", None) for c in configs):
        return
    max_length = kwargs.pop("max_length", None)
    if max_length is None:
        max_length = next((c.max_length for c in configs if getattr(c, "max_length", None) is not None), None)
    if max_length is not None:
        kwargs["max_new_tokens"] = max(int(max_length) - prompt_length, 1)


def _pruned_generate(model: torch.nn.Module) -> Any:
    def generate(self: torch.nn.Module, inputs: Tensor | None = None, **kwargs: Any) -> Any:
        state: _State = self.__dict__[STATE_ATTRIBUTE]
        original = state.original(self, "generate")
        if state.passthrough:
            return original(inputs, **kwargs)
        adapter = state.adapter
        if inputs is not None:
            if kwargs.get("input_ids") is not None:
                raise TypeError("generate() got both `inputs` and `input_ids`")
            kwargs["input_ids"] = inputs
        if not adapter.has_images(kwargs):
            return _continue_or_pass(state, original, kwargs)
        input_ids = kwargs.get("input_ids")
        embeds = kwargs.get("inputs_embeds")
        prompt = input_ids if isinstance(input_ids, Tensor) else embeds
        with torch.no_grad():  # as generate itself: no autograd graph kept for the vision features
            try:
                pruned_call = prune_call(adapter, kwargs, state.config, for_generate=True)
            except ValueError as error:
                unpruned = {k: v for k, v in kwargs.items() if k != "max_length"}
                _model_error_first(lambda: _passing_through(state, original, {**unpruned, "max_new_tokens": 1}), error)
        rest = _rest(kwargs, adapter)
        _token_budget(rest, prompt.shape[1], self)
        # The pruned sequences first: called with inputs_embeds and no ids, generate takes its batch size from
        # the first tensor among its keyword arguments, which must not be one of the rest (video_grid_thw).
        call = {**pruned_call.model_kwargs, **{k: v for k, v in rest.items() if k not in pruned_call.model_kwargs}}
        out = _passing_through(state, original, call)
        state.last_report = pruned_call.report
        if not isinstance(input_ids, Tensor):  # made with embeddings only: generate returns the new tokens only
            return out
        tensors = {k: v for k, v in pruned_call.model_kwargs.items() if isinstance(v, Tensor)}
        prefix = PrunedPrefix(input_ids, tensors)
        for cache in (call_cache(kwargs), None if isinstance(out, Tensor) else output_cache(out)):
            state.caches.remember(cache, prefix)
        return _in_original_layout(out, input_ids, pruned_call.sequences.input_ids.shape[1])

    return _with_signature(generate, model, "generate")


def _in_original_layout(out: Any, input_ids: Tensor, pruned_length: int) -> Any:
    """``generate``'s output with the pruned prompt (`pruned_length` columns) replaced by the caller's."""
    sequences = out if isinstance(out, Tensor) else out.sequences
    new_tokens = sequences[:, pruned_length:]
    per_prompt = sequences.shape[0] // input_ids.shape[0]
    prompt_ids = input_ids.to(sequences.device).repeat_interleave(per_prompt, dim=0)
    full = torch.cat([prompt_ids, new_tokens], dim=1)
    if isinstance(out, Tensor):
        return full
    out.sequences = full
    return out


def _continue_or_pass(state: _State, original: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """A call without images: continue a cache a pruned ``generate`` returned, else pass the call on unchanged."""
    cache = call_cache(kwargs)
    prefix = state.caches.lookup(cache)
    call = continuation_kwargs(prefix, kwargs, state.adapter.per_token_keys) if prefix is not None else None
    if call is None:
        return original(**kwargs)
    _token_budget(call, kwargs["input_ids"].shape[1], state.adapter.model)
    out = _passing_through(state, original, call)
    state.caches.remember(cache, prefix)
    return _in_original_layout(out, kwargs["input_ids"], call["input_ids"].shape[1])
