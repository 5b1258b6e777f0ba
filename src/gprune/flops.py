"""Analytic FLOPs and KV-cache sizes of multimodal LLMs, read from transformers configs.

Convention: 2 FLOPs per multiply-add of every matrix product (what `torch.utils.flop_counter` counts),
plus 1 FLOP per bias element added. Element-wise work (norms, rotary, softmax, activations, the q/k
norms of Qwen3) is not counted: it is a few per cent of a linear layer's cost and no counter agrees on
it. Vision encoder, projector and language model are counted separately, because token pruning after
the projector only changes the language model's share.

``attention="full"`` counts the two n x n attention products in full (n^2 entries each), as
`FlopCounterMode` does for eager attention and as most papers' formulas do. ``attention="causal"``
counts the n(n+1)/2 entries a causal kernel (FlashAttention, SDPA with ``is_causal``) computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

Attention = Literal["full", "causal"]
ATTENTION_MODES: tuple[str, ...] = ("full", "causal")

# Decoders whose q/k/v projections always carry a bias (the o projection does not).
_QKV_BIAS_MODEL_TYPES = frozenset({"qwen2", "qwen2_vl_text", "qwen2_5_vl_text"})
# LLaMA-style decoders: `attention_bias` switches biases on q/k/v/o; `mlp_bias` (LLaMA) on the MLP.
_DECODER_MODEL_TYPES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text"}
)


def _text_config(config: Any) -> Any:
    """The decoder config of a (possibly multimodal) transformers config."""
    if hasattr(config, "get_text_config"):
        return config.get_text_config()
    raise TypeError(f"expected a transformers PretrainedConfig, got {type(config).__name__}")


def _check_tokens(num_tokens: int, name: str = "num_tokens") -> int:
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise ValueError(f"{name} must be a non-negative int, got {num_tokens!r}")
    return num_tokens


def _attention_pairs(n: int, attention: str) -> int:
    """Query-key pairs an attention over n tokens computes."""
    if attention == "full":
        return n * n
    if attention == "causal":
        return n * (n + 1) // 2
    raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")


@dataclass(frozen=True)
class DecoderShape:
    """The sizes of a LLaMA / Mistral / Qwen2 / Qwen3-style decoder that decide its FLOPs."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool

    @classmethod
    def from_config(cls, config: Any) -> DecoderShape:
        text = _text_config(config)
        model_type = getattr(text, "model_type", None)
        if model_type not in _DECODER_MODEL_TYPES:
            raise ValueError(
                f"FLOPs are defined for dense LLaMA/Mistral/Qwen2/Qwen3-style decoders "
                f"({', '.join(sorted(_DECODER_MODEL_TYPES))}); got model_type {model_type!r}"
            )
        if getattr(text, "num_experts", None) or getattr(text, "num_local_experts", None):
            raise ValueError(f"mixture-of-experts decoders are not supported (model_type {model_type!r})")
        heads = int(text.num_attention_heads)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        attention_bias = bool(getattr(text, "attention_bias", False))
        return cls(
            hidden=int(text.hidden_size),
            layers=int(text.num_hidden_layers),
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(head_dim),
            intermediate=int(text.intermediate_size),
            vocab=int(text.vocab_size),
            qkv_bias=attention_bias or model_type in _QKV_BIAS_MODEL_TYPES,
            o_bias=attention_bias,
            mlp_bias=bool(getattr(text, "mlp_bias", False)),
        )


@dataclass(frozen=True)
class PrefillFlops:
    """FLOPs of one prefill over n tokens, by part (all over every layer)."""

    projections: int  # q, k, v, o matrix products
    attention: int  # q.k^T and attention-weights.v products
    mlp: int  # SwiGLU gate, up and down products
    lm_head: int  # vocabulary projection of the last position
    bias: int  # bias additions

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))


def llm_prefill_parts(config: Any, num_tokens: int, *, attention: Attention = "full") -> PrefillFlops:
    """`llm_prefill_flops` split into its parts."""
    s = DecoderShape.from_config(config)
    n = _check_tokens(num_tokens)
    q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
    projections = 2 * n * s.hidden * (q_dim + 2 * kv_dim) + 2 * n * q_dim * s.hidden
    attn = 2 * 2 * s.heads * s.head_dim * _attention_pairs(n, attention)
    mlp = 2 * n * 3 * s.hidden * s.intermediate
    bias_per_token = (q_dim + 2 * kv_dim) * s.qkv_bias + s.hidden * s.o_bias
    bias_per_token += (2 * s.intermediate + s.hidden) * s.mlp_bias
    return PrefillFlops(
        projections=s.layers * projections,
        attention=s.layers * attn,
        mlp=s.layers * mlp,
        lm_head=2 * s.hidden * s.vocab if n else 0,
        bias=s.layers * n * bias_per_token,
    )


def llm_prefill_flops(config: Any, num_tokens: int, *, attention: Attention = "full") -> int:
    """FLOPs of the language model's prefill over `num_tokens` tokens (text + visual).

    `config` is a transformers config of the decoder or of the whole multimodal model (its text config
    is used). The vocabulary projection is counted for the last position only, as `generate` computes
    it. See the module docstring for what is counted.
    """
    return llm_prefill_parts(config, num_tokens, attention=attention).total


def kv_cache_bytes(config: Any, num_tokens: int, dtype: torch.dtype = torch.float16, *, batch_size: int = 1) -> int:
    """Bytes of the key/value cache holding `num_tokens` tokens in every layer (keys and values)."""
    s = DecoderShape.from_config(config)
    n = _check_tokens(num_tokens)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * s.layers * s.kv_heads * s.head_dim * n * element * _check_tokens(batch_size, "batch_size")


# --- vision encoders -----------------------------------------------------------------------------------


def _vit_layer_flops(tokens: int, hidden: int, intermediate: int, *, gated: bool, attention_pairs: int) -> int:
    """One pre-norm ViT block with biases on every linear layer."""
    linear = 2 * tokens * 4 * hidden * hidden + tokens * 4 * hidden  # q, k, v, o (+ bias)
    attn = 2 * 2 * hidden * attention_pairs
    up = 2 if gated else 1
    mlp = 2 * tokens * (up + 1) * hidden * intermediate + tokens * (up * intermediate + hidden)
    return linear + attn + mlp


def _clip_like_flops(vision: Any, num_images: int) -> int:
    """CLIP / SigLIP vision towers: patch conv, all layers (LLaVA runs them all and reads layer -2)."""
    side = vision.image_size // vision.patch_size
    patches = side * side
    has_cls = vision.model_type == "clip_vision_model"
    tokens = patches + has_cls
    channels = getattr(vision, "num_channels", 3)
    embed = 2 * patches * channels * vision.patch_size**2 * vision.hidden_size
    embed += patches * vision.hidden_size * (vision.model_type == "siglip_vision_model")  # conv bias (CLIP: none)
    layer = _vit_layer_flops(
        tokens, vision.hidden_size, vision.intermediate_size, gated=False, attention_pairs=tokens * tokens
    )
    per_image = embed + vision.num_hidden_layers * layer
    if vision.model_type == "siglip_vision_model" and getattr(vision, "vision_use_head", True):
        d, m = vision.hidden_size, vision.intermediate_size
        # attention-pooling head: one probe query over all patches, then an MLP on that one vector
        per_image += 2 * d * d + 2 * 2 * patches * d * d + 2 * 2 * patches * d + 2 * d * d
        per_image += d + 2 * patches * d + d  # q (1 token), k and v (every patch), out-projection biases
        per_image += 2 * 2 * d * m + m + d
    return num_images * per_image


def _qwen_vl_flops(vision: Any, grid_thw: tuple[int, int, int], attention: str) -> int:
    """Qwen2-VL ViT (full attention per frame, GELU MLP), Qwen2.5-VL ViT (windowed attention except in
    `fullatt_block_indexes`, SwiGLU MLP) and Qwen3-VL ViT (full attention per frame, GELU MLP, a biased
    patch embedding); attention never crosses temporal patches. The patch merger (and Qwen3-VL's DeepStack
    mergers) is the projector, counted separately."""
    t, h, w = grid_thw
    patches = t * h * w
    windowed = vision.model_type == "qwen2_5_vl_vision"
    qwen3 = vision.model_type == "qwen3_vl_vision"
    d = vision.hidden_size if windowed or qwen3 else vision.embed_dim
    intermediate = vision.intermediate_size if windowed or qwen3 else vision.embed_dim * vision.mlp_ratio
    in_features = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    embed = 2 * patches * in_features * d + patches * d * qwen3  # Conv3d (Qwen3-VL's with a bias)
    full_pairs = t * _attention_pairs(h * w, attention)
    window_pairs = full_pairs
    if windowed:
        merge = vision.spatial_merge_size
        window = vision.window_size // merge // vision.patch_size  # window side in merged units
        unit = merge * merge  # patches per merged unit
        window_pairs = 0
        for rows in _window_sides(h // merge, window):
            for cols in _window_sides(w // merge, window):
                window_pairs += _attention_pairs(rows * cols * unit, attention)
        window_pairs *= t
    full_layers = tuple(vision.fullatt_block_indexes) if windowed else range(vision.depth)
    total = embed
    for i in range(vision.depth):
        pairs = full_pairs if i in full_layers else window_pairs
        total += _vit_layer_flops(patches, d, intermediate, gated=windowed, attention_pairs=pairs)
    return total


def _window_sides(length: int, window: int) -> list[int]:
    full, rest = divmod(length, window)
    return [window] * full + ([rest] if rest else [])


def vision_flops(
    config: Any,
    *,
    num_images: int = 1,
    grid_thw: tuple[int, int, int] | None = None,
    attention: Attention = "full",
) -> int:
    """FLOPs of the vision encoder (without the projector / merger).

    CLIP / SigLIP towers (LLaVA, LLaVA-NeXT) run `num_images` fixed-size images (LLaVA-NeXT: the base
    view plus one per high-resolution tile). Qwen2-VL / Qwen2.5-VL / Qwen3-VL need the patch grid
    ``(t, h, w)`` of one image or video (a video's ``t`` temporal patches each attend within themselves).
    `config` is the multimodal config or its vision config. Counted with ``attention`` as for the LLM
    (ViTs attend bidirectionally, so "causal" only matters as a what-if and is rejected there).
    """
    vision = getattr(config, "vision_config", None) or config
    model_type = getattr(vision, "model_type", None)
    if model_type in ("clip_vision_model", "siglip_vision_model"):
        if attention != "full":
            raise ValueError("CLIP/SigLIP towers attend bidirectionally: only attention='full' applies")
        return _clip_like_flops(vision, _check_tokens(num_images, "num_images"))
    if model_type in ("qwen2_vl_vision", "qwen2_5_vl_vision", "qwen3_vl_vision"):
        if grid_thw is None or len(grid_thw) != 3 or any(_check_tokens(int(x), "grid_thw") < 1 for x in grid_thw):
            raise ValueError(f"Qwen-VL vision FLOPs need the image's patch grid (t, h, w), got {grid_thw!r}")
        if attention != "full":
            raise ValueError("the Qwen-VL ViT attends bidirectionally: only attention='full' applies")
        return _qwen_vl_flops(vision, tuple(int(x) for x in grid_thw), attention)
    raise ValueError(
        "vision FLOPs are defined for clip_vision_model, siglip_vision_model, qwen2_vl_vision, "
        f"qwen2_5_vl_vision and qwen3_vl_vision; got {model_type!r}"
    )


def projector_flops(config: Any, num_tokens: int) -> int:
    """FLOPs of the multimodal projector over `num_tokens` vision-encoder tokens.

    LLaVA / LLaVA-NeXT / LLaVA-OneVision: a two-layer MLP per patch token (576 per tile, before any pruning). Qwen2-VL /
    Qwen2.5-VL: the patch merger, where `num_tokens` counts ViT patches (4 merge into one LLM token);
    Qwen3-VL: the same merger plus one DeepStack merger of the same shape per tapped ViT layer.
    """
    n = _check_tokens(num_tokens)
    model_type = getattr(config, "model_type", None)
    if model_type in ("llava", "llava_next", "llava_onevision"):
        text, vision = config.get_text_config(), config.vision_config
        layers = config.vision_feature_layer
        d_in = vision.hidden_size * (1 if isinstance(layers, int) else len(layers))
        d = text.hidden_size
        bias = n * 2 * d if getattr(config, "multimodal_projector_bias", True) else 0
        return 2 * n * (d_in * d + d * d) + bias
    if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        vision = config.vision_config
        unit = vision.spatial_merge_size**2
        if n % unit:
            raise ValueError(f"Qwen-VL merges {unit} patches per token; {n} patches is not a multiple")
        mergers = 1
        if model_type == "qwen2_vl":
            context, out = vision.embed_dim, vision.hidden_size
        else:
            context, out = vision.hidden_size, vision.out_hidden_size
        if model_type == "qwen3_vl":
            mergers += len(vision.deepstack_visual_indexes)
        merged, d_in = n // unit, context * unit
        return mergers * (2 * merged * (d_in * d_in + d_in * out) + merged * (d_in + out))
    raise ValueError(
        "projector FLOPs are defined for llava, llava_next, llava_onevision, qwen2_vl, qwen2_5_vl and qwen3_vl; "
        f"got {model_type!r}"
    )


def format_flops(flops: float) -> str:
    """Human-readable FLOPs (TFLOPs / GFLOPs)."""
    if flops >= 1e12:
        return f"{flops / 1e12:.2f} TFLOPs"
    return f"{flops / 1e9:.2f} GFLOPs"


def format_bytes(num_bytes: float) -> str:
    """Human-readable bytes in binary units."""
    if num_bytes < 1024:
        return f"{int(num_bytes)} B"
    exponent = min(int(math.log(num_bytes, 1024)), 4)
    return f"{num_bytes / 1024**exponent:.2f} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[exponent]}"
