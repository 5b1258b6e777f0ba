"""A pruned sequence built by hand, independently of `gprune.pipeline` and the adapters.

Parity tests compare the pruned model against this: the image token columns are found in ``input_ids``, the
image features are written into the embeddings, and only the kept columns (text, markers and the kept image
tokens) go to the language model, at their original or compacted positions.
"""

from __future__ import annotations

import torch


def kept_columns(ids: torch.Tensor, image_token_id: int, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image token columns of one prompt and the bool mask of columns that stay (all but the pruned tokens)."""
    cols = torch.nonzero(ids == image_token_id).squeeze(1)
    keep_cols = torch.ones_like(ids, dtype=torch.bool)
    keep_cols[cols] = False
    keep_cols[cols[kept]] = True
    return cols, keep_cols


def full_embeddings(model, ids: torch.Tensor, cols: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The prompt's text embeddings with the image features written into the image columns."""
    embeds = model.get_input_embeddings()(ids)
    embeds[cols] = features
    return embeds


def kept_positions(keep_cols: torch.Tensor, positions: str) -> torch.Tensor:
    """Positions of the kept columns: where they stood ("original") or 0..n-1 ("compact")."""
    if positions == "original":
        return torch.arange(keep_cols.numel())[keep_cols]
    return torch.arange(int(keep_cols.sum()))


def hand_built_logits(
    model, language_model, ids: torch.Tensor, features: torch.Tensor, kept: torch.Tensor, positions: str = "original"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (kept columns, vocab) of ``language_model`` + ``model.lm_head`` on the kept columns, and the mask."""
    cols, keep_cols = kept_columns(ids, model.config.image_token_id, kept)
    embeds = full_embeddings(model, ids, cols, features)
    hidden = language_model(
        inputs_embeds=embeds[keep_cols][None],
        position_ids=kept_positions(keep_cols, positions)[None],
        attention_mask=torch.ones(1, int(keep_cols.sum())),
    ).last_hidden_state
    return model.lm_head(hidden)[0], keep_cols
