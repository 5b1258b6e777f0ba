"""Token ids behind ``inputs_embeds``, so a call made with embeddings can be pruned like one made with ids.

transformers finds image placeholders in ``inputs_embeds`` by comparing each row with the embedding of
the image token; adapters also read other markers (tile separators, vision-start tokens). Rows that are
a row of the embedding table get its id back; other rows (soft prompts, edited embeddings) get -1, which
no adapter takes for a marker. Matching is exact: a float64 random projection of every row narrows each
query to a few candidates, and the candidates' full rows are compared exactly. The table is read
through the embedding module in chunks, so a scaled embedding (Gemma 3) matches as the model sees it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

NO_TOKEN = -1
_CANDIDATES = 4  # table rows checked on each side of a query's projection
_CHUNK = 1 << 15  # table rows projected at a time (bounds the float64 copy)
_QUERIES = 512  # query rows compared at a time


def token_ids_from_embeddings(
    embeds: Tensor, embed: Callable[[Tensor], Tensor], vocab_size: int, image_token_id: int | None = None
) -> Tensor:
    """(B, L) ids of the rows of `embeds` (B, L, D) that equal ``embed(id)`` for an id below `vocab_size`; -1 elsewhere.

    `embed` is the model's input embedding module (some scale its table, as Gemma 3 does). Rows equal to
    the image token's embedding get `image_token_id`, whatever else they equal: that is the rule the model
    itself applies to find image placeholders.
    """
    probe_row = embed(torch.zeros(1, dtype=torch.long, device=embeds.device))
    hidden = probe_row.shape[-1]
    if embeds.dim() != 3 or embeds.shape[-1] != hidden:
        raise ValueError(
            f"inputs_embeds must be (batch, length, {hidden}) to match the input embeddings, got {tuple(embeds.shape)}"
        )
    device = probe_row.device
    flat = embeds.reshape(-1, hidden).to(device)
    probe = torch.randn(hidden, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    vocab = torch.arange(vocab_size, device=device)
    keys = torch.cat([embed(chunk).double() @ probe for chunk in vocab.split(_CHUNK)])
    sorted_keys, order = keys.sort()
    offsets = torch.arange(-_CANDIDATES, _CANDIDATES, device=device)
    found = []
    for rows in flat.split(_QUERIES):  # bounds the (rows, candidates, D) comparison
        at = torch.searchsorted(sorted_keys, rows.double() @ probe)
        candidates = order[(at.unsqueeze(1) + offsets).clamp(0, order.numel() - 1)]
        equal = (embed(candidates) == rows.unsqueeze(1)).all(-1)
        first = candidates.gather(1, equal.long().argmax(-1, keepdim=True)).squeeze(1)
        found.append(torch.where(equal.any(-1), first, NO_TOKEN))
    ids = torch.cat(found)
    if image_token_id is not None:
        image = embed(torch.tensor([image_token_id], device=device))
        ids = torch.where((flat == image).all(-1), image_token_id, ids)
    return ids.view(embeds.shape[:2]).to(embeds.device)
