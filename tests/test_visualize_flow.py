"""`information_flow` returns v_t = w P^t for every step and shares its graph with `graph_scores`."""

from __future__ import annotations

import pytest
import torch

import gprune


def dense_flow(x: torch.Tensor, threshold: float, tau: float, iterations: int) -> torch.Tensor:
    """Literal formulation: dense masked-softmax P, then w P^t with matrix_power, in float64."""
    x = x.double()
    unit = torch.nn.functional.normalize(x, dim=-1)
    sim = unit @ unit.T
    p = torch.softmax((sim / tau).masked_fill(sim < threshold, float("-inf")), dim=-1)
    w = x.norm(dim=-1)
    return torch.stack([w @ torch.linalg.matrix_power(p, t) for t in range(iterations + 1)])


def clustered(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, d, generator=g) * 3
    return centres[torch.randint(0, 6, (n,), generator=g)] + torch.randn(n, d, generator=g)


@pytest.mark.parametrize(("threshold", "tau", "iterations"), [(0.5, 0.03, 5), (0.7, 0.1, 3), (0.2, 0.05, 1)])
def test_flow_matches_dense_matrix_powers(threshold: float, tau: float, iterations: int) -> None:
    x = clustered(150, 24, seed=iterations)
    flow = gprune.information_flow(x, similarity_threshold=threshold, temperature=tau, iterations=iterations)
    assert flow.shape == (iterations + 1, 150) and flow.dtype == torch.float32
    torch.testing.assert_close(flow.double(), dense_flow(x, threshold, tau, iterations), rtol=1e-4, atol=1e-4)


def test_last_step_over_degree_is_the_score() -> None:
    x = clustered(200, 16, seed=3)
    flow = gprune.information_flow(x)
    unit = torch.nn.functional.normalize(x, dim=-1)
    degree = ((unit @ unit.T) >= 0.5).sum(dim=-1)
    torch.testing.assert_close(flow[-1] / degree, gprune.graph_scores(x))


def test_total_information_is_conserved_and_concentrates() -> None:
    x = clustered(300, 32, seed=5)
    flow = gprune.information_flow(x, iterations=6)
    totals = flow.sum(dim=-1)
    torch.testing.assert_close(totals, totals[:1].expand_as(totals), rtol=1e-5, atol=0)
    # Propagation moves mass onto hubs: the largest share grows from the initial norms.
    assert flow[-1].max() > flow[0].max()


def test_batched_flow_with_mask_equals_per_item() -> None:
    x = torch.stack([clustered(64, 8, seed=s) for s in range(3)])
    mask = torch.ones(3, 64, dtype=torch.bool)
    mask[1, 40:] = False
    flow = gprune.information_flow(x, mask=mask)
    assert flow.shape == (3, 6, 64)
    torch.testing.assert_close(flow[0], gprune.information_flow(x[0]))
    torch.testing.assert_close(flow[1, :, :40], gprune.information_flow(x[1, :40]))
    assert torch.equal(flow[1, :, 40:], torch.zeros(6, 24))


def test_flow_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="iterations"):
        gprune.information_flow(torch.randn(4, 3), iterations=0)
    with pytest.raises(ValueError, match="NaN"):
        gprune.information_flow(torch.tensor([[1.0, float("nan")], [1.0, 2.0]]))
