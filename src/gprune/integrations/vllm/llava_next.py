"""G-Prune for vLLM's LLaVA-NeXT: placeholders sized to the kept count, features pruned in `embed_multimodal`.

vLLM fixes each image's placeholder count at prompt processing, from
`LlavaNextProcessingInfo.get_num_image_tokens` alone; the model's `embed_multimodal` must then return
exactly that many rows per image. So the processing info returns
``kept_token_count(llava_next_layout(...), keep)`` for the image size, and the model selects with
`gprune.layouts.select_in_layouts` on the same layout: base view and grid are separate graphs, every
newline is kept, as in the transformers path (`gprune.adapters.llava.LlavaNextAdapter.image_layout`,
which computes the layout here too).

Positions are compact: vLLM numbers a 1-D RoPE prompt contiguously and has no per-token position input.
Pre-computed ``image_embeds`` are passed through unpruned (vLLM sizes their placeholders from the
embeddings themselves).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.models.llava import LlavaDummyInputsBuilder
from vllm.model_executor.models.llava_next import (
    LlavaNextForConditionalGeneration,
    LlavaNextImageEmbeddingInputs,
    LlavaNextMultiModalProcessor,
    LlavaNextProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY

from gprune.adapters.llava import LlavaNextAdapter
from gprune.integrations.vllm.config import ServingPruning, serving_pruning
from gprune.layouts import TokenLayout, kept_token_count, select_in_layouts

logger = init_logger(__name__)
FAMILY = "llava_next"
POSITIONS = "compact"


def image_layout(hf_config: Any, height: int, width: int) -> TokenLayout:
    """The unpruned packing of one image, the same function the transformers path uses."""
    return LlavaNextAdapter.image_layout(hf_config, (height, width))


def pruning(hf_config: Any) -> ServingPruning | None:
    return serving_pruning(hf_config, family=FAMILY, positions=POSITIONS)


class GPruneLlavaNextProcessingInfo(LlavaNextProcessingInfo):
    """Placeholders per image = the kept count (a pure function of image size and keep setting)."""

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        setting = pruning(self.get_hf_config())
        unpruned = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        if setting is None:
            return unpruned
        layout = image_layout(self.get_hf_config(), image_height, image_width)
        if layout.length != unpruned:
            raise ValueError(
                f"gprune's LLaVA-NeXT layout of a {image_height}x{image_width} image has {layout.length} tokens "
                f"but vLLM counts {unpruned}: the packing rules disagree"
            )
        return kept_token_count(layout, setting.keep, method=setting.method)


@MULTIMODAL_REGISTRY.register_processor(
    LlavaNextMultiModalProcessor, info=GPruneLlavaNextProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class GPruneLlavaNextForConditionalGeneration(LlavaNextForConditionalGeneration):
    """vLLM's LLaVA-NeXT whose image embeddings are the tokens G-Prune keeps."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        self.gprune = pruning(vllm_config.model_config.hf_config)  # a bad setting fails before weights load
        if self.gprune is not None:
            logger.info("gprune: pruning %s images with %s", "LLaVA-NeXT", self.gprune.config.to_json())
        super().__init__(vllm_config=vllm_config, prefix=prefix)

    def embed_multimodal(self, **kwargs: object) -> list[Tensor] | Any:
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        features = self._process_image_input(image_input)
        if self.gprune is None or isinstance(image_input, LlavaNextImageEmbeddingInputs):
            return features
        sizes = image_input.get("image_sizes")
        if sizes is None:
            raise ValueError("gprune needs image_sizes next to LLaVA-NeXT pixel_values (vLLM's processor passes them)")
        return prune_images(list(features), [image_layout(self.config, *map(int, s)) for s in sizes], self.gprune)


def prune_images(features: list[Tensor], layouts: list[TokenLayout], setting: ServingPruning) -> list[Tensor]:
    """Each image's kept rows, in their original order: one `select_in_layouts` call for the whole batch."""
    kept = select_in_layouts(features, layouts, setting.keep, method=setting.method, **setting.selector_params())
    return [f.index_select(0, k.to(f.device)) for f, k in zip(features, kept, strict=True)]


__all__ = ["GPruneLlavaNextForConditionalGeneration", "GPruneLlavaNextProcessingInfo", "image_layout", "prune_images"]
