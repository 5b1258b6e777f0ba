"""Token ids recovered from ``inputs_embeds``: exact rows get their id, anything else -1."""

import pytest
import torch

from gprune.integrations.hf_embeds import NO_TOKEN, token_ids_from_embeddings


def _lookup(table, scale=1.0):
    return lambda ids: table[ids] * scale


def test_rows_of_the_table_get_their_ids_and_other_rows_none():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(5000, 48, generator=gen)
    ids = torch.randint(0, 5000, (3, 40), generator=gen)
    embeds = table[ids].clone()
    embeds[1, 7] += 1e-6  # an edited embedding is no token's
    embeds[2, 0] = torch.randn(48, generator=gen)  # a soft prompt
    got = token_ids_from_embeddings(embeds, _lookup(table), len(table))
    expected = ids.clone()
    expected[1, 7] = expected[2, 0] = NO_TOKEN
    assert torch.equal(got, expected)


def test_the_image_token_wins_over_an_equal_row_as_in_the_model():
    table = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    table[3] = table[9]  # token 3 and the image token 9 share an embedding
    embeds = table[torch.tensor([[1, 3, 9, 2]])]
    assert token_ids_from_embeddings(embeds, _lookup(table), 50, image_token_id=9).tolist() == [[1, 9, 9, 2]]


def test_half_precision_tables_match_exactly():
    table = torch.randn(300, 16, generator=torch.Generator().manual_seed(2)).to(torch.float16)
    ids = torch.arange(300).view(3, 100)
    assert torch.equal(token_ids_from_embeddings(table[ids], _lookup(table), 300), ids)


def test_a_scaled_embedding_matches_as_the_model_sees_it():
    """Gemma 3 multiplies its table by sqrt(hidden): rows of the raw table are then no token's."""
    table = torch.randn(100, 16, generator=torch.Generator().manual_seed(3))
    scaled = _lookup(table, scale=4.0)
    ids = torch.tensor([[3, 99, 0, 7]])
    assert torch.equal(token_ids_from_embeddings(scaled(ids), scaled, 100), ids)
    assert (token_ids_from_embeddings(table[ids], scaled, 100) == NO_TOKEN).all()


def test_a_wrong_hidden_size_is_named():
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(batch, length, 16\)"):
        token_ids_from_embeddings(torch.zeros(1, 4, 8), _lookup(torch.zeros(10, 16)), 10)
