"""G-Prune scoring and selection on tensors, as the authors' released code computes it (DESIGN.md §1.1).

The released code forms the T-step transition ``P^T`` with ``matrix_power`` (dense N^3 products). We
propagate the vector instead (T vector-matrix products) and build P in place with one fused softmax, so
the work beyond the similarity product is a few memory-bound passes over the N x N matrix. The result is
the same up to fp32 rounding; the tests check the kept sets against the dense form.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from gprune import graph_blocks
from gprune.validation import Keep, check_features, check_finite_rows, check_keep, check_scoring_params

DEFAULT_SIMILARITY_THRESHOLD = 0.5
DEFAULT_TEMPERATURE = 0.03
DEFAULT_ITERATIONS = 5


@torch.no_grad()
def graph_scores(
    features: Tensor,
    *,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    iterations: int = DEFAULT_ITERATIONS,
    mask: Tensor | None = None,
) -> Tensor:
    """Score tokens by how much information they gather on the cosine-similarity graph.

    `features` is (N, D) or (B, N, D) in any float dtype; scoring runs in fp32. `mask` (B, N) bool marks
    valid tokens: invalid ones take no part in the graph and score ``-inf``. An all-zero feature vector
    has no cosine direction: it is an isolated node (self-loop only, degree 1) and scores 0.
    Tokens with the same direction (equal unit vectors) get the same score, bitwise (`_tie_same_directions`).
    Returns fp32 scores (N,) or (B, N).
    """
    graph = _propagate(features, similarity_threshold, temperature, iterations, mask, keep_all_steps=False)
    scores = (graph.steps[-1] / graph.degree.clamp_min(1)).masked_fill(~graph.valid, float("-inf"))
    scores = _tie_same_directions(scores, graph)
    return scores[0] if graph.was_2d else scores


SAME_DIRECTION_RTOL = 1e-5
"""Neighbours in score order closer than this (relative to the item's top score) are compared for equal
directions. Only a filter: scores of one direction differ by fp32 rounding, measured up to 5e-7."""


def _tie_same_directions(scores: Tensor, graph: _Graph) -> Tensor:
    """Give tokens of the same direction one score, so their exact tie survives fp32 rounding.

    Tokens whose unit vectors are equal (duplicates; in 1-D all tokens of one sign) are the same node of
    the graph but for their initial information, so after one propagation step their scores are equal
    in exact arithmetic. fp32 sums round them apart, and differently with other padding or batch sizes,
    which would let a batched call keep another of them than a single call. Each run of such tokens,
    adjacent in score order, takes the run's first score; the stable sort of `top_indices` then keeps
    the lower indices. Directions are compared on 8 coordinates, then in full where those agree.
    """
    values, order = torch.sort(scores, dim=-1, descending=True, stable=True)
    near = values[..., :-1] - values[..., 1:] <= SAME_DIRECTION_RTOL * values[..., :1].clamp_min(0)
    if not bool(near.any()):  # NaN gaps between masked tokens compare False
        return scores
    item, pos = near.nonzero(as_tuple=True)
    n = scores.shape[-1]
    pair = torch.stack([order[item, pos], order[item, pos + 1]]) + item * n  # (2, K) near pairs, flat ids
    norms = graph.norms.flatten()[pair].unsqueeze(-1)  # zero vectors give NaN: never "the same"

    def rows(tokens: Tensor, columns: slice) -> Tensor:  # index_select: much faster than indexing here
        picked = graph.features[..., columns].flatten(0, 1).index_select(0, tokens.flatten())
        return picked.view(*tokens.shape, -1)

    head = rows(pair, slice(0, 8)) / norms
    same = (head[0] == head[1]).all(dim=-1)
    if bool(same.any()):
        full = rows(pair[:, same], slice(None)) / norms[:, same]
        same[same.clone()] = (full[0] == full[1]).all(dim=-1)
    linked = torch.zeros_like(near)
    linked[item, pos] = same
    starts = torch.cat([torch.ones_like(linked[..., :1]), ~linked], dim=-1)  # (B, N): a run starts here
    positions = torch.arange(starts.shape[-1], device=scores.device).expand_as(starts)
    run_start = torch.where(starts, positions, 0).cummax(dim=-1).values
    return scores.scatter(-1, order, values.gather(-1, run_start))


@torch.no_grad()
def information_flow(
    features: Tensor,
    *,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    iterations: int = DEFAULT_ITERATIONS,
    mask: Tensor | None = None,
) -> Tensor:
    """The information each token holds after every propagation step: ``v_t = w P^t`` for t = 0..T.

    Same graph and arguments as `graph_scores` (whose scores are ``v_T / degree``); row 0 is the initial
    information ``w_i = ||X_i||``. P is row-stochastic, so every row sums to the same total. Use it to
    see where information concentrates. Returns fp32 (T + 1, N) or (B, T + 1, N); masked tokens hold 0.
    """
    graph = _propagate(features, similarity_threshold, temperature, iterations, mask, keep_all_steps=True)
    flow = torch.stack(graph.steps, dim=-2)
    return flow[0] if graph.was_2d else flow


GRAPH_CHUNK_BYTES = 32 * 2**20
"""Batch items are scored in chunks whose N x N fp32 buffers stay under this size. One big batched call
was measured slower on CPU (cache misses on the N x N passes); on a GPU a 2880-token graph alone fills
the device, and small graphs still batch by the dozen."""


class _Graph(NamedTuple):
    steps: list[Tensor]  # information per step, (B, N) each (only the last unless keep_all_steps)
    degree: Tensor  # (B, N) edges per token, self included
    features: Tensor  # (B, N, D) fp32, masked rows zeroed
    norms: Tensor  # (B, N) initial information ||X_i||
    valid: Tensor  # (B, N) bool
    was_2d: bool


def _propagate(
    features: Tensor,
    similarity_threshold: float,
    temperature: float,
    iterations: int,
    mask: Tensor | None,
    *,
    keep_all_steps: bool,
) -> _Graph:
    """Build the graph and propagate.

    The one implementation behind `graph_scores` and `information_flow`. With ``keep_all_steps=False``
    only the last step is returned, so scoring holds no extra (B, N) buffers.
    """
    check_scoring_params(similarity_threshold, temperature, iterations)
    x, valid, was_2d = check_features(features, mask, check_finite=False)
    if mask is not None and not bool(valid.all()):
        x = x.masked_fill(~valid.unsqueeze(-1), 0.0)  # masked rows may hold anything, NaN included
    info = x.norm(dim=-1)  # initial information w_i = ||X_i||_2, (B, N)
    check_finite_rows(x, info, valid)

    b, n, _ = x.shape
    chunk = max(1, GRAPH_CHUNK_BYTES // (4 * n * n))
    propagate = _propagate_chunk
    if graph_blocks.bounded_scoring_needed(n):  # dense N x N buffers over budget: build the graph in blocks
        propagate = graph_blocks.propagate_bounded
    parts = [
        propagate(x[i : i + chunk], info[i : i + chunk], valid[i : i + chunk], similarity_threshold,
                  temperature, iterations, keep_all_steps)
        for i in range(0, b, chunk)
    ]
    steps = [torch.cat(step_parts) for step_parts in zip(*(p[0] for p in parts), strict=True)]
    degree = torch.cat([p[1] for p in parts])
    return _Graph(steps, degree, x, info, valid, was_2d)


def _propagate_chunk(
    x: Tensor,
    info: Tensor,
    valid: Tensor,
    similarity_threshold: float,
    temperature: float,
    iterations: int,
    keep_all_steps: bool,
) -> tuple[list[Tensor], Tensor]:
    unit = torch.nn.functional.normalize(x, dim=-1)  # zero rows stay zero
    sim = cosine_similarity_matrix(unit)  # (b, N, N)

    non_edge = sim < similarity_threshold
    node = valid & (info > 0)  # zero vectors and masked tokens join no edge but a self-loop
    if not bool(node.all()):
        non_edge |= ~(node.unsqueeze(-1) & node.unsqueeze(-2))
    non_edge.diagonal(dim1=-2, dim2=-1).fill_(False)  # every token has its self-loop: no empty row
    sim.diagonal(dim1=-2, dim2=-1).fill_(1.0)
    # Edges of each node, self included; counted in row blocks so the int32 cast stays cache-sized.
    degree = x.shape[1] - torch.cat([rows.sum(dim=-1, dtype=torch.int32) for rows in non_edge.split(256, dim=-2)], -1)

    # Transition matrix: row-wise softmax of S / tau over the edges (non-edges exactly 0), as released.
    transition = torch.softmax(sim.mul_(1.0 / temperature).masked_fill_(non_edge, float("-inf")), dim=-1)
    del sim, non_edge

    v = info.unsqueeze(-2)  # (b, 1, N) row vector; masked tokens start at 0 and receive nothing
    steps = [info]
    for _ in range(iterations):
        v = v @ transition
        steps = [*steps, v.squeeze(-2)] if keep_all_steps else [v.squeeze(-2)]
    return steps, degree


SYMMETRIC_BLOCK_ROWS = 384
"""Row-block height for the similarity product: blocks on and above the diagonal are multiplied, the
rest mirrored. Fewer blocks waste less on small GEMMs; more blocks skip more of the lower triangle."""


def cosine_similarity_matrix(unit: Tensor) -> Tensor:
    """``unit @ unit.mT`` for row-normalised (B, N, D) input, computing only the upper block triangle.

    The product is symmetric, so with k row blocks only k(k+1)/2 of the k^2 blocks need a GEMM (about
    37% less time at N = 2304-2880 on CPU, see benchmarks/RESULTS.md). Each entry is still one dot
    product over D, as in the full product; the lower blocks are exact copies of the upper ones.
    """
    n = unit.shape[-2]
    blocks = max(1, min(8, n // SYMMETRIC_BLOCK_ROWS))
    if blocks == 1:
        return unit @ unit.mT
    sim = unit.new_empty(*unit.shape[:-2], n, n)
    bounds = [round(i * n / blocks) for i in range(blocks + 1)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        upper = sim[..., start:stop, start:]  # rows start:stop, columns start:n, written in place
        torch.matmul(unit[..., start:stop, :], unit[..., start:, :].mT, out=upper)
        sim[..., stop:, start:stop] = upper[..., stop - start :].mT
    return sim


def keep_count(keep: Keep, n: int) -> int:
    """Number of tokens kept from `n`: ``int(ratio * n)`` (at least 1) for a ratio, ``min(count, n)``.

    A pure function of its inputs, so callers (e.g. serving engines) can size buffers before features
    exist.
    """
    keep = check_keep(keep)
    if n < 1:
        raise ValueError(f"cannot keep tokens out of n = {n}: need at least one token")
    if isinstance(keep, int):
        return min(keep, n)
    return max(1, int(keep * n))


def top_indices(scores: Tensor, k: int) -> Tensor:
    """Indices of the `k` highest scores, ascending; ties go to the lower index (deterministic)."""
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return torch.sort(order).values


def select_tokens(
    features: Tensor,
    keep: Keep,
    *,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    iterations: int = DEFAULT_ITERATIONS,
    mask: Tensor | None = None,
) -> Tensor | list[Tensor]:
    """Indices of the tokens G-Prune keeps, in ascending (original) order.

    `keep` is a ratio in (0, 1] (``int(ratio * n)``, at least 1, where n counts valid tokens) or a count
    >= 1 (capped at n). For (N, D) input returns a 1-D LongTensor; for (B, N, D) input returns a list
    of B 1-D LongTensors, since masked batch items may keep different numbers of tokens.
    """
    keep = check_keep(keep)
    scores = graph_scores(
        features,
        similarity_threshold=similarity_threshold,
        temperature=temperature,
        iterations=iterations,
        mask=mask,
    )
    if scores.dim() == 1:
        return top_indices(scores, keep_count(keep, int(torch.isfinite(scores).sum())))
    valid_counts = torch.isfinite(scores).sum(dim=-1).tolist()
    return [top_indices(row, keep_count(keep, n)) for row, n in zip(scores, valid_counts, strict=True)]
