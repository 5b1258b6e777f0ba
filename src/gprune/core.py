"""G-Prune scoring and selection on tensors, as the authors' released code computes it (DESIGN.md §1.1).

The released code forms the T-step transition ``P^T`` with ``matrix_power`` (dense N^3 products). We
propagate the vector instead (T vector-matrix products) and build P in place with one fused softmax, so
the work beyond the similarity product is a few memory-bound passes over the N x N matrix. The result is
the same up to fp32 rounding; the tests check the kept sets against the dense form.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
    Returns fp32 scores (N,) or (B, N).
    """
    steps, degree, valid, was_2d = _propagate(
        features, similarity_threshold, temperature, iterations, mask, keep_all_steps=False
    )
    scores = steps[-1] / degree.clamp_min(1)
    scores = scores.masked_fill(~valid, float("-inf"))
    return scores[0] if was_2d else scores


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
    steps, _, _, was_2d = _propagate(features, similarity_threshold, temperature, iterations, mask, keep_all_steps=True)
    flow = torch.stack(steps, dim=-2)
    return flow[0] if was_2d else flow


GRAPH_CHUNK_BYTES = 32 * 2**20
"""Batch items are scored in chunks whose N x N fp32 buffers stay under this size. One big batched call
was measured slower on CPU (cache misses on the N x N passes); on a GPU a 2880-token graph alone fills
the device, and small graphs still batch by the dozen."""


def _propagate(
    features: Tensor,
    similarity_threshold: float,
    temperature: float,
    iterations: int,
    mask: Tensor | None,
    *,
    keep_all_steps: bool,
) -> tuple[list[Tensor], Tensor, Tensor, bool]:
    """Build the graph and propagate: (information per step (B, N), degree (B, N), valid (B, N), was_2d).

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
    parts = [
        _propagate_chunk(x[i : i + chunk], info[i : i + chunk], valid[i : i + chunk], similarity_threshold,
                         temperature, iterations, keep_all_steps)
        for i in range(0, b, chunk)
    ]
    steps = [torch.cat(step_parts) for step_parts in zip(*(p[0] for p in parts), strict=True)]
    degree = torch.cat([p[1] for p in parts])
    return steps, degree, valid, was_2d


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
