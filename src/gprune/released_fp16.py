"""G-Prune scores as the authors' released code computes them in fp16 on a CUDA GPU, emulated on any device.

The paper's numbers come from LLaVA-NeXT loaded in float16, so the released scoring (jytmelon/G-Prune,
``LLaVA-NeXT/llava/model/llava_arch.py``) ran in fp16, where rounding changes the kept set of most
images (docs/algorithm.md has the measured table). This module repeats that arithmetic op by op, in the
released order, so a user can reproduce what the authors ran:

- every op's result is stored in fp16; here each op runs in fp32 and is rounded to fp16 right after;
- matmuls and norms accumulate in fp32 (cuBLAS / CUDA reductions on fp16 inputs), then round once;
- ``A / temperature`` with a Python scalar is computed by CUDA as ``A * (1 / fp32(temperature))``;
- scalar thresholds in comparisons (``A < s``, ``abs(A) < 1e-6``) are rounded to fp16 first;
- softmax upcasts to fp32 internally (``exp(x - max) / sum``) and rounds its result;
- the T-step transition is ``torch.matrix_power(P, T)``: for T = 5 that is ``P @ ((P @ P) @ (P @ P))``,
  three rounded products, not T vector products;
- the degree counts the entries of the fp16 P that did not underflow to 0, and ``score / degree`` rounds
  the degree to fp16 first.

What no emulation can fix: cuBLAS sums a product in another order than the CPU BLAS, so an entry whose
exact value lies within fp32 rounding of an fp16 rounding boundary may round the other way there.
The released code makes zero-norm tokens NaN and every score with them; here they are isolated nodes
that score 0, as in fp32 mode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gprune.validation import check_features, check_scoring_params

RELEASED_NON_EDGE_LOGIT = -5000.0
"""The released code writes this into the logits of non-edges (``A[abs(A) < 1e-6] = -5000``)."""

RELEASED_ZERO_TOLERANCE = 1e-6
"""Logits with ``abs(logit) < 1e-6`` (after fp16 rounding of both sides) are non-edges in the released code."""


def _fp16(t: Tensor) -> Tensor:
    """Round fp32 values to fp16 and back: the stored result of one fp16 op."""
    return t.to(torch.float16).to(torch.float32)


def _fp16_scalar(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float16))


def _matrix_power(p: Tensor, n: int) -> Tensor:
    """``torch.linalg.matrix_power(P, n)`` in fp16: PyTorch's binary decomposition, each product rounded."""

    def mm(a: Tensor, b: Tensor) -> Tensor:
        return _fp16(a @ b)

    if n == 1:
        return p
    if n == 2:
        return mm(p, p)
    if n == 3:
        return mm(mm(p, p), p)
    z: Tensor | None = None
    result: Tensor | None = None
    while n > 0:
        bit, n = n % 2, n // 2
        z = p if z is None else mm(z, z)
        if bit:
            result = z if result is None else mm(result, z)
    assert result is not None
    return result


def _item_scores(x: Tensor, similarity_threshold: float, temperature: float, iterations: int) -> Tensor:
    """Released fp16 scores of one group: x (n, D) fp32 holding fp16 values."""
    norm = _fp16(torch.linalg.vector_norm(x, dim=-1))  # torch.norm / normalize's denominator, fp16
    if not bool(torch.isfinite(norm).all()):
        raise ValueError(
            "a token's L2 norm exceeds fp16's range (65504): the released fp16 computation overflows; "
            "use precision='fp32' or rescale the features"
        )
    zero = norm == 0
    unit = _fp16(x / norm.unsqueeze(-1)).nan_to_num_(0.0)  # normalize(X) in fp16; zero rows 0/0 -> 0
    sim = _fp16(unit @ unit.mT)  # one GEMM, fp32 accumulation, fp16 result
    sim = sim.masked_fill(sim < _fp16_scalar(similarity_threshold), 0.0)  # A[A < s] = 0
    inverse = float(torch.tensor(1.0, dtype=torch.float32) / torch.tensor(temperature, dtype=torch.float32))
    logits = _fp16(sim * inverse)  # A / temperature, as CUDA computes a division by a scalar
    logits = logits.masked_fill(logits.abs() < _fp16_scalar(RELEASED_ZERO_TOLERANCE), RELEASED_NON_EDGE_LOGIT)
    if bool(zero.any()):  # released: NaN everywhere; here an isolated node with its self-loop
        logits[zero] = RELEASED_NON_EDGE_LOGIT
        logits[:, zero] = RELEASED_NON_EDGE_LOGIT
        logits[zero, zero] = 0.0
    shifted = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    transition = _fp16(shifted / shifted.sum(dim=-1, keepdim=True))  # fp16 softmax: fp32 inside, rounded
    degree = (transition > 0).sum(dim=-1)  # entries that survived fp16 underflow
    flow = _fp16(norm @ _matrix_power(transition, iterations))  # W @ matrix_power(P, T)
    return _fp16(flow / _fp16(degree.to(torch.float32)))  # fp16 / int64: the degree is cast to fp16


@torch.no_grad()
def released_fp16_scores(
    features: Tensor,
    *,
    similarity_threshold: float,
    temperature: float,
    iterations: int,
    mask: Tensor | None = None,
) -> Tensor:
    """The released code's fp16 scores of each item's valid tokens; masked tokens score ``-inf``.

    `features` (N, D) or (B, N, D) in any float dtype is first rounded to fp16 (what the model hands the
    released code). Each item is scored alone on its valid tokens, as the released code scores one image.
    Returns fp32 tensors holding fp16 values, (N,) or (B, N).
    """
    check_scoring_params(similarity_threshold, temperature, iterations)
    x, valid, was_2d = check_features(features, mask)
    half = x.to(torch.float16)
    if not bool((torch.isfinite(half).all(dim=-1) | ~valid).all()):
        raise ValueError(
            "features exceed fp16's range (65504): the released fp16 computation overflows; "
            "use precision='fp32' or rescale the features"
        )
    x = half.to(torch.float32)
    scores = torch.full(valid.shape, float("-inf"), device=x.device)
    for item in range(x.shape[0]):
        index = valid[item].nonzero().squeeze(-1)
        scores[item, index] = _item_scores(x[item, index], similarity_threshold, temperature, iterations)
    return scores[0] if was_2d else scores
