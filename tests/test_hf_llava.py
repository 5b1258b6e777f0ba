"""`gprune.apply` on a tiny random-weight LLaVA-NeXT (the paper's model): semantics of forward and generate."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import gprune
from gprune.core import select_tokens
from gprune.errors import UserError
from gprune.testing import tiny_llava_next
from hand_built import hand_built_logits

PHOTO = Image.open(gprune.__path__[0] + "/assets/coffee.jpg").convert("RGB")


def photo(width: int, height: int) -> Image.Image:
    return PHOTO.resize((width, height))


@pytest.fixture(scope="module")
def tiny():
    return tiny_llava_next()


def encode(tiny, sizes, questions=None, padding_side="left", images_per_prompt=1):
    questions = questions or ["What is on the table?"] * (len(sizes) // images_per_prompt)
    tiny.processor.tokenizer.padding_side = padding_side
    images = [photo(w, h) for w, h in sizes]
    text = [tiny.prompt(q, images=images_per_prompt) for q in questions]
    return tiny.processor(images=images, text=text, return_tensors="pt", padding=True)


def greedy(model, inputs, **kwargs):
    return model.generate(**inputs, max_new_tokens=5, do_sample=False, **kwargs)


# --- keep = 1.0 reproduces the unpruned model exactly ---------------------------------------------


@pytest.mark.parametrize(
    "gen_kwargs",
    [{"do_sample": False}, {"do_sample": False, "num_beams": 3, "num_return_sequences": 2}, {"do_sample": True}],
    ids=["greedy", "beam", "sampling"],
)
def test_keep_one_reproduces_generate(tiny, gen_kwargs):
    inputs = encode(tiny, [(60, 40), (40, 70)])
    torch.manual_seed(1)
    want = tiny.model.generate(**inputs, max_new_tokens=6, **gen_kwargs)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=1.0)):
        torch.manual_seed(1)
        got = tiny.model.generate(**inputs, max_new_tokens=6, **gen_kwargs)
        report = gprune.last_report(tiny.model)
    assert torch.equal(got, want)
    assert report.tokens_before == report.tokens_after == int((inputs["input_ids"] == 4).sum())


def test_keep_one_reproduces_forward_logits_and_loss(tiny):
    inputs = encode(tiny, [(60, 40), (40, 70)])
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == 4, -100)
    want = tiny.model(**inputs, labels=labels)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=1.0)):
        got = tiny.model(**inputs, labels=labels)
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.loss, want.loss)


# --- pruned calls ------------------------------------------------------------------------------------


def hand_pruned(tiny, inputs, keep, positions):
    """Independent reference: select per group with `select_tokens`, build the short embeddings by hand."""
    model = tiny.model
    feats = model.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"])
    feats = feats.pooler_output[0]
    newline = (feats == model.model.image_newline).all(-1)  # newline rows equal the learned vector
    base = torch.arange(16)
    grid = torch.nonzero(~newline[16:]).squeeze(1) + 16
    kept = torch.cat([base[select_tokens(feats[base], keep)], grid[select_tokens(feats[grid], keep)]])
    kept = torch.sort(torch.cat([kept, torch.nonzero(newline).squeeze(1)])).values
    logits, keep_cols = hand_built_logits(
        model, model.model.language_model, inputs["input_ids"][0], feats, kept, positions
    )
    return logits, keep_cols, kept


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_pruned_forward_matches_hand_built_sequence(tiny, positions):
    inputs = encode(tiny, [(60, 40)])
    want, keep_cols, kept = hand_pruned(tiny, inputs, 0.3, positions)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3, positions=positions)):
        logits = tiny.model(**inputs).logits
        report = gprune.last_report(tiny.model)
    assert logits.shape[:2] == inputs["input_ids"].shape  # original layout
    torch.testing.assert_close(logits[0, keep_cols], want, rtol=1e-5, atol=1e-5)
    assert torch.equal(report.images[0].kept_indices, kept)
    assert report.images[0].tokens_after == kept.numel() < report.images[0].tokens_before
    # a pruned image token holds the logits of the closest kept token before it
    cols = torch.arange(keep_cols.numel())
    for t in torch.nonzero(~keep_cols).squeeze(1).tolist():
        before = int(cols[keep_cols & (cols <= t)].max())
        assert torch.equal(logits[0, t], logits[0, before])


def test_text_loss_on_restored_logits_equals_the_pruned_sequence_loss(tiny):
    inputs = encode(tiny, [(60, 40)])
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == 4, -100)
    short_logits, keep_cols, _ = hand_pruned(tiny, inputs, 0.3, "original")
    short_labels = labels[0, keep_cols]
    want = torch.nn.functional.cross_entropy(short_logits[:-1], short_labels[1:], ignore_index=-100)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = tiny.model(**inputs, labels=labels)
        as_tuple = tiny.model(**inputs, return_dict=False)
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(as_tuple[0], out.logits)


def test_generate_dict_output_and_positional_ids(tiny):
    inputs = encode(tiny, [(60, 40)])
    ids = inputs.pop("input_ids")
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = tiny.model.generate(
            ids, **inputs, max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_scores=True
        )
        plain = tiny.model.generate(ids, **inputs, max_new_tokens=3, do_sample=False)
    assert torch.equal(out.sequences, plain) and torch.equal(out.sequences[:, : ids.shape[1]], ids)
    assert len(out.scores) == 3


@pytest.mark.parametrize("positions", ["original", "compact"])
def test_generate_returns_original_prompt_and_cached_equals_recompute(tiny, positions):
    inputs = encode(tiny, [(60, 40), (40, 70)])
    length = inputs["input_ids"].shape[1]
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.25, positions=positions)):
        cached = greedy(tiny.model, inputs)
        recomputed = greedy(tiny.model, inputs, use_cache=False)
        by_length = tiny.model.generate(**inputs, max_length=length + 5, do_sample=False)
    assert torch.equal(cached[:, :length], inputs["input_ids"])
    assert cached.shape[1] == length + 5
    assert torch.equal(cached, recomputed)
    assert torch.equal(by_length, cached)  # max_length counts the original prompt


def test_default_generation_length_is_unchanged(tiny):
    inputs = encode(tiny, [(60, 40)])
    want = tiny.model.generate(**inputs, do_sample=False)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        got = tiny.model.generate(**inputs, do_sample=False)
    assert got.shape == want.shape


def test_generate_encodes_images_without_autograd_but_forward_with(tiny):
    grad_enabled = []
    hook = tiny.model.model.vision_tower.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    inputs = encode(tiny, [(60, 40)])
    try:
        with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
            greedy(tiny.model, inputs)
            logits = tiny.model(**inputs).logits
    finally:
        hook.remove()
    assert grad_enabled == [False, True]  # generate keeps no graph; training through forward still works
    assert logits.requires_grad


def test_generate_first_token_matches_pruned_forward(tiny):
    inputs = encode(tiny, [(60, 40)])
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        # generate numbers positions like forward when there is no padding
        first = tiny.model.generate(**inputs, max_new_tokens=1, do_sample=False)[0, -1]
        logits = tiny.model(**inputs).logits
    assert int(first) == int(logits[0, -1].argmax())


def test_positions_modes_change_the_result(tiny):
    inputs = encode(tiny, [(60, 40)])
    out = {}
    for mode in ("original", "compact"):
        with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.2, positions=mode)):
            out[mode] = tiny.model(**inputs).logits[0, -1]
    assert not torch.allclose(out["original"], out["compact"])


# --- batches, padding, several images, no images ----------------------------------------------------


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batch_with_different_image_sizes_equals_per_sample_forward(tiny, padding_side):
    sizes = [(60, 40), (40, 70), (32, 32)]
    questions = ["What?", "What is on the table here?", "Is it a cup of coffee?"]
    config = gprune.GPruneConfig(keep=0.3)
    batch = encode(tiny, sizes, questions, padding_side)
    with gprune.pruned(tiny.model, config):
        logits = tiny.model(**batch).logits
        report = gprune.last_report(tiny.model)
        for i, (size, q) in enumerate(zip(sizes, questions, strict=True)):
            single = encode(tiny, [size], [q], padding_side)
            want = tiny.model(**single).logits[0]
            valid = batch["attention_mask"][i].bool()
            torch.testing.assert_close(logits[i, valid], want, rtol=1e-4, atol=1e-4)
            assert torch.equal(report.images[i].kept_indices, gprune.last_report(tiny.model).images[0].kept_indices)
    assert [r.batch_index for r in report.images] == [0, 1, 2]


def test_left_padded_batch_generate_equals_per_sample(tiny):
    sizes = [(60, 40), (40, 70), (96, 30)]
    questions = ["What?", "What is on the table here?", "Is it a cup of coffee?"]
    batch = encode(tiny, sizes, questions, "left")
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = greedy(tiny.model, batch)
        for i, (size, q) in enumerate(zip(sizes, questions, strict=True)):
            single = encode(tiny, [size], [q], "left")
            want = greedy(tiny.model, single)
            assert torch.equal(out[i, -5:], want[0, -5:])


def test_several_images_in_one_prompt(tiny):
    inputs = encode(tiny, [(60, 40), (40, 70)], ["Compare the two pictures."], images_per_prompt=2)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = greedy(tiny.model, inputs)
        report = gprune.last_report(tiny.model)
    assert [r.batch_index for r in report.images] == [0, 0]
    for r, size in zip(report.images, [(40, 60), (70, 40)], strict=True):
        assert r.tokens_before == gprune.image_layout(tiny.model, size).length
        assert r.tokens_after == gprune.kept_tokens(tiny.model, size, 0.3)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_prompts_without_images_pass_through(tiny):
    tiny.processor.tokenizer.padding_side = "left"
    inputs = tiny.processor(text=["USER: Hello there ASSISTANT:"], return_tensors="pt")
    want_logits = tiny.model(**inputs).logits
    want = greedy(tiny.model, inputs)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.2)):
        assert torch.equal(tiny.model(**inputs).logits, want_logits)
        assert torch.equal(greedy(tiny.model, inputs), want)
        assert gprune.last_report(tiny.model) is None


def test_batch_mixing_prompts_with_and_without_images(tiny):
    tiny.processor.tokenizer.padding_side = "left"
    text = [tiny.prompt("What is this?"), "USER: Just text, no picture. ASSISTANT:"]
    batch = tiny.processor(images=[photo(60, 40)], text=text, return_tensors="pt", padding=True)
    plain = tiny.processor(text=[text[1]], return_tensors="pt")
    want = tiny.model(**plain).logits[0]
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        logits = tiny.model(**batch).logits
    valid = batch["attention_mask"][1].bool()
    torch.testing.assert_close(logits[1, valid], want, rtol=1e-4, atol=1e-4)


# --- keep as a ratio or a budget; the kept count is a pure function ---------------------------------


@pytest.mark.parametrize("keep", [0.33, 1.0, 12, 400])
@pytest.mark.parametrize("size", [(60, 40), (40, 70), (96, 30)])
def test_kept_tokens_is_the_real_count(tiny, keep, size):
    inputs = encode(tiny, [size])
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=keep)):
        tiny.model(**inputs)
        report = gprune.last_report(tiny.model)
    height_width = (size[1], size[0])
    assert report.images[0].tokens_before == int((inputs["input_ids"] == 4).sum())
    assert report.images[0].tokens_after == gprune.kept_tokens(tiny.model.config, height_width, keep)
    if isinstance(keep, int):
        assert report.images[0].tokens_after == min(keep, report.images[0].tokens_before)


@pytest.mark.parametrize("method", ["gprune", "divprune-released", "dart"])
def test_kept_tokens_counts_with_the_configs_method(tiny, method):
    """divprune-released counts over the whole packed image, newlines included: kept_tokens must too."""
    config = gprune.GPruneConfig(keep=0.33, method=method)
    inputs = encode(tiny, [(40, 70)])
    with gprune.pruned(tiny.model, config):
        tiny.model(**inputs)
        kept = gprune.last_report(tiny.model).images[0].tokens_after
    assert kept == gprune.kept_tokens(tiny.model.config, (70, 40), config)


# --- the instance, and errors -------------------------------------------------------------------------


def test_apply_remove_and_context_manager_are_instance_scoped(tiny):
    model = tiny.model
    before = dict(model.__dict__)
    other = tiny_llava_next(seed=1).model
    gprune.apply(model, gprune.GPruneConfig(keep=0.5))
    assert gprune.is_pruned(model) and not gprune.is_pruned(other)
    assert type(model).forward is type(other).forward and "forward" not in other.__dict__
    gprune.apply(model, gprune.GPruneConfig(keep=0.25))  # replaces the config
    assert gprune.pruning_config(model).keep == 0.25
    gprune.remove(model)
    assert model.__dict__.keys() == before.keys()
    assert all(model.__dict__[k] is before[k] for k in before)
    gprune.apply(model, gprune.GPruneConfig(keep=0.5))
    with gprune.pruned(model, gprune.GPruneConfig(keep=0.1)):
        assert gprune.pruning_config(model).keep == 0.1
    assert gprune.pruning_config(model).keep == 0.5
    gprune.remove(model)
    with gprune.pruned(model):
        pass
    assert model.__dict__.keys() == before.keys()


def test_instance_forward_set_by_accelerate_hooks_is_wrapped_and_restored():
    from accelerate.hooks import ModelHook, add_hook_to_module

    tiny = tiny_llava_next()
    add_hook_to_module(tiny.model, ModelHook())  # sets an instance `forward`, as device_map loading does
    hooked = tiny.model.__dict__["forward"]
    inputs = encode(tiny, [(60, 40)])
    want = tiny.model(**inputs).logits
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=1.0)):
        assert torch.equal(tiny.model(**inputs).logits, want)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        assert tiny.model(**inputs).logits.shape == want.shape
        assert gprune.last_report(tiny.model).tokens_after < gprune.last_report(tiny.model).tokens_before
    assert tiny.model.__dict__["forward"] is hooked


def test_a_deep_copy_prunes_itself_not_the_original():
    import copy

    tiny = tiny_llava_next()
    inputs = encode(tiny, [(60, 40)])
    gprune.apply(tiny.model, gprune.GPruneConfig(keep=0.3))
    want = tiny.model(**inputs).logits
    clone = copy.deepcopy(tiny.model)
    with torch.no_grad():
        for p in clone.parameters():
            p.mul_(1.5)
    got = clone(**inputs).logits
    assert not torch.allclose(got, want)  # the copy's own weights ran
    assert gprune.last_report(clone) is not gprune.last_report(tiny.model)
    gprune.remove(clone)
    assert "forward" not in clone.__dict__ and gprune.is_pruned(tiny.model)
    assert torch.equal(tiny.model(**inputs).logits, want)


def test_placeholder_mismatch_is_a_clear_error(tiny):
    inputs = encode(tiny, [(60, 40)])
    ids = inputs["input_ids"]
    first = int(torch.nonzero(ids[0] == 4)[0])
    inputs["input_ids"] = torch.cat([ids[:, :first], ids[:, first + 1 :]], dim=1)
    inputs["attention_mask"] = inputs["attention_mask"][:, 1:]
    with gprune.pruned(tiny.model), pytest.raises(ValueError, match="^Image features and image tokens do not match"):
        tiny.model(**inputs)


def test_gprunes_error_stands_where_the_model_accepts_the_call(tiny, monkeypatch):
    """A call the model accepts but gprune cannot prune gets gprune's error, in forward and generate."""
    inputs = encode(tiny, [(60, 40)])
    with gprune.pruned(tiny.model):
        adapter = tiny.model.__dict__["_gprune_state"].adapter

        def refuse(_inputs):
            raise ValueError("gprune cannot place these images")

        monkeypatch.setattr(adapter, "encode_images", refuse)
        with pytest.raises(ValueError, match="^gprune cannot place these images$"):
            tiny.model(**inputs)
        with pytest.raises(ValueError, match="^gprune cannot place these images$"):
            greedy(tiny.model, inputs)


def test_keep_out_of_range_and_unsupported_model():
    with pytest.raises(ValueError, match="keep as a ratio must be in"):
        gprune.GPruneConfig(keep=1.5)
    with pytest.raises(ValueError, match="keep as a token count must be >= 1"):
        gprune.GPruneConfig(keep=0)
    from transformers import LlamaConfig, LlamaForCausalLM

    llama = LlamaForCausalLM(
        LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50)
    )
    with pytest.raises(UserError, match="does not support model_type 'llama'; supported: .*llava_next"):
        gprune.apply(llama, gprune.GPruneConfig())
    assert "forward" not in llama.__dict__


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(dtype):
    tiny = tiny_llava_next(dtype=dtype)
    inputs = encode(tiny, [(60, 40), (40, 70)])
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    want = greedy(tiny.model, inputs)
    want_logits = tiny.model(**inputs).logits
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=1.0)):
        assert torch.equal(greedy(tiny.model, inputs), want)
        assert torch.equal(tiny.model(**inputs).logits, want_logits)
    with gprune.pruned(tiny.model, gprune.GPruneConfig(keep=0.3)):
        out = greedy(tiny.model, inputs)
        logits = tiny.model(**inputs).logits
        report = gprune.last_report(tiny.model)
    assert out.shape == want.shape and logits.dtype == dtype
    # scoring runs in fp32 on the model-dtype features
    feats = tiny.model.get_image_features(pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"])
    base = feats.pooler_output[0][:16]
    assert feats.pooler_output[0].dtype == dtype
    base_kept = report.images[0].kept_indices[report.images[0].kept_indices < 16]
    assert torch.equal(base_kept, select_tokens(base.float(), 0.3))
    assert [r.tokens_after for r in report.images] == [
        gprune.kept_tokens(tiny.model, (40, 60), 0.3),
        gprune.kept_tokens(tiny.model, (70, 40), 0.3),
    ]
