"""The contract between a model family and the shared pruning pipeline.

An adapter answers three questions about one model instance, and nothing else:

1. **What are the visual tokens?** `encode_images(inputs)` runs the model's own vision encoder and
   projector on the processor outputs (``pixel_values``, ``image_sizes``, ``image_grid_thw``, ...) and
   returns one `ImageTokens` per image: the packed features exactly as they would be scattered into the
   LLM's input embeddings (newline tokens included), and the image's `TokenLayout` (groups scored
   separately, tokens always kept). Images are listed in **placeholder order**: the order in which their
   placeholder tokens appear in ``input_ids`` read row by row (batch item 0 first, then left to right),
   which is the order ``masked_scatter`` consumes them. Image k occupies the next
   ``images[k].features.shape[0]`` placeholder tokens; the pipeline finds them, checks the counts and
   raises a clear error on a mismatch. An adapter never locates placeholders itself; where the
   processor drops how an image is tiled (Idefics3 / SmolVLM, InternVL), it may read that from the
   marker tokens or run lengths in ``input_ids``.

2. **How are kept features handed back to the model?** `model_kwargs(encoded, kept)` receives, per image,
   the ascending kept indices into that image's packed tokens and returns the keyword arguments that
   make the model's original ``forward`` / ``generate`` use exactly those features for the (shortened)
   placeholder run, e.g. ``{"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=[...])}}``
   on transformers 5.23, plus anything per image the model needs (Qwen3-VL's DeepStack features cut
   with the same indices). The keys in `image_input_keys` are removed from the user's call, so the
   model never re-encodes the pixels.

3. **Where is each token?** `position_ids(...)` gives positions on the **unpruned** sequence: (B, L)
   for 1-D RoPE, (C, B, L) for mRoPE (text row first where the model expects it). The pipeline gathers
   the kept columns ("original" positions, as the released G-Prune code) or asks `compact_positions`
   to renumber them ("compact"). `finalize(model_kwargs, pruned)` may add model state derived from
   the pruned call (e.g. Qwen's ``rope_deltas``); the default does nothing.

And, without any features, `image_layout(model_config, image_size)` (a classmethod) gives the layout
one image of ``(height, width)`` pixels would have: the kept count is then a pure function
(`gprune.kept_tokens`), as serving engines need it before features exist.

Everything that is the same for every model -- locating images among placeholders, cutting
``input_ids`` / ``attention_mask`` / ``position_ids`` / per-token tensors by the keep mask, re-padding
a batch, restoring logits to the original layout -- lives in `gprune.pipeline`, not in adapters.

To add a family: subclass `ModelAdapter`, set `model_types`, implement the abstract methods, and
register it in `gprune.adapters` with ``register_adapter``. Adapters are instantiated once per
``gprune.apply`` with the model instance (``self.model``, ``self.config``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from gprune.integrations.hf_embeds import token_ids_from_embeddings
from gprune.layouts import TokenLayout

if TYPE_CHECKING:  # pragma: no cover
    from gprune.pipeline import PrunedSequences


@dataclass(frozen=True)
class ImageTokens:
    """One image's (or video's) visual tokens as they enter the LLM: `features` (n, D) in the model dtype,
    and layout.

    `kind` says which placeholder tokens the item fills ("image" or "video", see
    `ModelAdapter.placeholder_token_id`). A video is `frames` equal consecutive frames, then
    `always_kept_tail` tokens that belong to no frame and are always kept (LLaVA-OneVision's closing
    newline); the pipeline groups the frames into graphs by `GPruneConfig.video_window`
    (`gprune.video.video_layout`), whatever `layout` the adapter gave.
    """

    features: Tensor
    layout: TokenLayout
    kind: str = "image"
    frames: int = 1
    always_kept_tail: int = 0

    def __post_init__(self) -> None:
        if self.features.dim() != 2 or self.features.shape[0] != self.layout.length:
            raise ValueError(
                f"image features of shape {tuple(self.features.shape)} do not match a layout of "
                f"{self.layout.length} tokens"
            )
        if self.kind not in ("image", "video"):
            raise ValueError(f"visual tokens are of kind 'image' or 'video', got {self.kind!r}")
        framed = self.layout.length - self.always_kept_tail
        if not 0 <= self.always_kept_tail <= self.layout.length:
            raise ValueError(f"always_kept_tail must be in [0, {self.layout.length}], got {self.always_kept_tail}")
        if self.frames < 1 or framed % self.frames:
            tail = f" (after {self.always_kept_tail} always-kept tail tokens)" if self.always_kept_tail else ""
            raise ValueError(f"{framed} video tokens{tail} do not split into {self.frames} equal frames")


@dataclass
class EncodedImages:
    """All images of one call, in placeholder order, plus adapter-private data (`extra`) such as
    DeepStack features or grid sizes that `model_kwargs` needs later."""

    images: list[ImageTokens]
    extra: dict[str, Any] = field(default_factory=dict)


class ModelAdapter(ABC):
    """Model-family knowledge for the pruning pipeline (see the module docstring for the contract)."""

    model_types: ClassVar[tuple[str, ...]] = ()
    """``config.model_type`` values this adapter serves."""

    image_input_keys: ClassVar[tuple[str, ...]] = ("pixel_values", "image_sizes")
    """Call arguments that `encode_images` consumes; they are not passed on to the model."""

    per_token_keys: ClassVar[tuple[str, ...]] = ("token_type_ids", "mm_token_type_ids")
    """Call arguments shaped like ``input_ids`` (B, L) that must be cut with the same keep mask."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.config = model.config

    @property
    def image_token_id(self) -> int:
        """The placeholder token id that marks image tokens in ``input_ids``."""
        token_id = getattr(self.config, "image_token_id", None)
        if token_id is None:
            token_id = getattr(self.config, "image_token_index", None)
        if token_id is None:
            raise ValueError(f"{type(self.model).__name__} config has no image_token_id")
        return int(token_id)

    def placeholder_token_id(self, kind: str) -> int:
        """The placeholder id of `kind` ("image": `image_token_id`; "video": the config's ``video_token_id``)."""
        if kind == "image":
            return self.image_token_id
        token_id = getattr(self.config, "video_token_id", None)
        if token_id is None:
            raise ValueError(f"{type(self.model).__name__} config has no video_token_id")
        return int(token_id)

    def token_ids(self, inputs_embeds: Tensor) -> Tensor:
        """The ids behind a call's ``inputs_embeds`` (-1 where a row is no token's embedding)."""
        embed = self.model.get_input_embeddings()
        with torch.no_grad():
            return token_ids_from_embeddings(inputs_embeds, embed, embed.num_embeddings, self.image_token_id)

    def has_images(self, inputs: Mapping[str, Any]) -> bool:
        """Whether this call carries images to prune (the first of `image_input_keys` is present)."""
        pixels = inputs.get(self.image_input_keys[0])
        return pixels is not None and (not isinstance(pixels, Tensor) or pixels.numel() > 0)

    @abstractmethod
    def encode_images(self, inputs: Mapping[str, Any]) -> EncodedImages:
        """Run the vision tower + projector on the call's image inputs; images in placeholder order."""

    @abstractmethod
    def model_kwargs(self, encoded: EncodedImages, kept: Sequence[Tensor]) -> dict[str, Any]:
        """Keyword arguments that feed the kept features (``kept[k]``: ascending indices into image k)."""

    @classmethod
    @abstractmethod
    def image_layout(cls, model_config: Any, image_size: tuple[int, int], **kwargs: Any) -> TokenLayout:
        """Layout of one image of ``(height, width)`` pixels as given to the processor, from the config alone."""

    def position_ids(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        inputs: Mapping[str, Any],
        *,
        for_generate: bool,
    ) -> Tensor:
        """Positions of the unpruned sequence, exactly as the unpruned model would use them.

        1-D RoPE default: ``generate`` numbers the attended tokens (``cumsum(mask) - 1``, padding 0);
        a plain ``forward`` uses ``arange(L)`` for every row. mRoPE adapters override this.
        """
        if for_generate:
            positions = attention_mask.long().cumsum(-1) - 1
            return positions.masked_fill(attention_mask == 0, 0)
        length = input_ids.shape[1]
        return torch.arange(length, device=input_ids.device).expand(input_ids.shape[0], length)

    def compact_positions(self, positions: Tensor, keep_mask: Tensor) -> Tensor:
        """Renumber kept tokens contiguously: each position drops by the tokens pruned before it in its row.

        `positions` (..., B, L) are the unpruned positions, `keep_mask` (B, L) the kept tokens; returns
        positions of the same shape (the pipeline then gathers the kept columns). Equal to the input when
        nothing is pruned. mRoPE adapters may override.
        """
        pruned_before = (~keep_mask).long().cumsum(-1) - (~keep_mask).long()
        return positions - pruned_before.to(positions.device)

    def finalize(self, model_kwargs: dict[str, Any], pruned: PrunedSequences) -> dict[str, Any]:
        """Last look at the keyword arguments of the pruned call (e.g. to set cached rope deltas)."""
        return model_kwargs
