"""Token ids behind ``inputs_embeds``, so a call made with embeddings can be pruned like one made with ids.

transformers finds image placeholders in ``inputs_embeds`` by comparing each row with the embedding of
the image token; adapters also read other markers (tile separators, vision-start tokens). Rows that are
a row of the embedding table get its id back; other rows (soft prompts, edited embeddings) get -1, which
no adapter takes for a marker. Matching is exact: a float64 random projection of every row narrows each
query to a few candidates, and the candidates' full rows are compared with ``torch.equal`` semantics.
"""

from __future__ import annotations

import torch
from torch import Tensor

NO_TOKEN = -1
_CANDIDATES = 4  # table rows checked on each side of a query's projection
_CHUNK = 1 << 15  # table rows projected at a time (bounds the float64 copy)
_QUERIES = 512  # query rows compared at a time


def token_ids_from_embeddings(embeds: Tensor, table: Tensor, image_token_id: int | None = None) -> Tensor:
    """(B, L) ids of the rows of `embeds` (B, L, D) that equal a row of `table` (V, D); -1 elsewhere.

    Rows equal to the image token's embedding get `image_token_id`, whatever else they equal: that is the
    rule the model itself applies to find image placeholders.
    """
    if embeds.dim() != 3 or embeds.shape[-1] != table.shape[-1]:
        raise ValueError(
            f"inputs_embeds must be (batch, length, {table.shape[-1]}) to match the input embeddings, "
            f"got {tuple(embeds.shape)}"
        )
    flat = embeds.reshape(-1, embeds.shape[-1]).to(table.device)
    probe = torch.randn(table.shape[-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    probe = probe.to(table.device)
    keys = torch.cat([chunk.double() @ probe for chunk in table.split(_CHUNK)])
    sorted_keys, order = keys.sort()
    offsets = torch.arange(-_CANDIDATES, _CANDIDATES, device=table.device)
    found = []
    for rows in flat.split(_QUERIES):  # bounds the (rows, candidates, D) comparison
        at = torch.searchsorted(sorted_keys, rows.double() @ probe)
        candidates = order[(at.unsqueeze(1) + offsets).clamp(0, order.numel() - 1)]
        equal = (table[candidates] == rows.unsqueeze(1)).all(-1)
        first = candidates.gather(1, equal.long().argmax(-1, keepdim=True)).squeeze(1)
        found.append(torch.where(equal.any(-1), first, NO_TOKEN))
    ids = torch.cat(found)
    if image_token_id is not None:
        ids = torch.where((flat == table[image_token_id]).all(-1), image_token_id, ids)
    return ids.view(embeds.shape[:2]).to(embeds.device)
