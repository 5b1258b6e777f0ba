"""Which assumptions turn G-Prune's pruning of LLaVA-NeXT-7B into the paper's "-63.57% FLOPs"?

The paper does not state its FLOPs formula, its prompt length or its image size, so this script
solves for the keep ratio (and, the other way round, the prompt length) under each plausible counting
convention. It prints the markdown tables of docs/flops.md: `python benchmarks/paper_flops.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gprune.checkpoints import image_tokens, load_checkpoint
from gprune.flops import llm_prefill_flops, projector_flops, vision_flops
from gprune.layouts import kept_token_count

PAPER_REDUCTION = 0.6357
CHECKPOINT = load_checkpoint("llava-v1.6-vicuna-7b")
CONFIG = CHECKPOINT.config
TEXT = CONFIG.text_config
LAYOUT = image_tokens(CHECKPOINT, 672, 672)  # the largest anyres grid: 576 + 48 x (48 + 1) tokens
VISION = vision_flops(CONFIG, num_images=LAYOUT.encoder_images) + projector_flops(CONFIG, LAYOUT.projector_tokens)


def fastv_formula(n: int) -> int:
    """FastV's per-layer count 4nd^2 + 2n^2d + 2ndm (multiply-adds, non-gated MLP), times 2 for FLOPs."""
    d, m = TEXT.hidden_size, TEXT.intermediate_size
    return 2 * TEXT.num_hidden_layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)


CONVENTIONS: dict[str, Callable[[int], float]] = {
    "gprune full (torch FlopCounterMode)": lambda n: llm_prefill_flops(CONFIG, n, attention="full"),
    "gprune causal (what a causal kernel computes)": lambda n: llm_prefill_flops(CONFIG, n, attention="causal"),
    "FastV formula 4nd²+2n²d+2ndm": fastv_formula,
    "token count (linear in n, no attention)": float,
}
PACKINGS = {  # visual tokens before pruning, and how many kept tokens a fraction r of the rest gives
    "2928 (672x672 anyres, newlines kept)": (LAYOUT.layout.length, lambda r: 48 + r * 2880),
    "2880 (5 x 576, no newlines)": (2880, lambda r: r * 2880),
}


def reduction(flops: Callable[[int], float], before: int, after: int, vision: bool) -> float:
    extra = VISION if vision else 0
    return 1 - (flops(after) + extra) / (flops(before) + extra)


def solve_keep(flops: Callable[[int], float], visual: int, kept: Callable[[float], float], prompt: int, vision: bool):
    """Fraction r of the prunable visual tokens to keep so that the reduction is the paper's."""
    lo, hi = 0.0, 1.0
    for _ in range(50):
        r = (lo + hi) / 2
        if reduction(flops, visual + prompt, round(kept(r)) + prompt, vision) > PAPER_REDUCTION:
            lo = r
        else:
            hi = r
    return r


def counted_settings() -> Iterator[tuple[str, Callable[[int], float], bool]]:
    """Each counting convention without, then with, vision + projector FLOPs (a token count has none)."""
    for name, flops in CONVENTIONS.items():
        for vision in (False, True):
            if not (vision and name.startswith("token count")):
                yield name, flops, vision


def keep_table() -> str:
    prompts = (0, 64, 128)
    lines = [
        "| counting convention | vision + projector counted | visual tokens | "
        + " | ".join(f"keep for 63.57% at {p} prompt tokens" for p in prompts)
        + " |",
        "|---|---|---|" + "---|" * len(prompts),
    ]
    for name, flops, vision in counted_settings():
        for packing, (visual, kept) in PACKINGS.items():
            cells = []
            for p in prompts:
                r = solve_keep(flops, visual, kept, p, vision)
                cells.append(f"{r:.3f} ({round(kept(r))} kept)")
            lines.append(f"| {name} | {'yes' if vision else 'no'} | {packing} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table() -> str:
    ratios = (0.5, 0.4, 0.35, 1 / 3, 0.33, 0.3)
    prompt = 64
    visual = LAYOUT.layout.length
    lines = [
        f"| keep ratio | kept visual (of {visual}) | "
        + " | ".join(f"{name}, LLM only" for name in CONVENTIONS)
        + " | gprune full, incl. vision + projector |",
        "|---|---|" + "---|" * (len(CONVENTIONS) + 1),
    ]
    for r in ratios:
        kept = kept_token_count(LAYOUT.layout, r)
        cells = [f"{100 * reduction(f, visual + prompt, kept + prompt, False):.2f}%" for f in CONVENTIONS.values()]
        full = next(iter(CONVENTIONS.values()))
        cells.append(f"{100 * reduction(full, visual + prompt, kept + prompt, True):.2f}%")
        label = "1/3" if abs(r - 1 / 3) < 1e-9 else f"{r:g}"
        lines.append(f"| {label} | {kept} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prompt_table() -> str:
    """Prompt length that makes a round keep ratio land on -63.57% (672x672 image)."""
    ratios = (0.4, 0.35, 1 / 3)
    visual = LAYOUT.layout.length
    lines = [
        "| counting convention | vision + projector counted | "
        + " | ".join(f"prompt tokens for 63.57% at keep {'1/3' if abs(r - 1 / 3) < 1e-9 else r}" for r in ratios)
        + " |",
        "|---|---|" + "---|" * len(ratios),
    ]
    for name, flops, vision in counted_settings():
        cells = []
        for r in ratios:
            kept = kept_token_count(LAYOUT.layout, r)
            found = next(
                (p for p in range(0, 4000) if reduction(flops, visual + p, kept + p, vision) <= PAPER_REDUCTION),
                None,
            )
            if found is None:
                cells.append("none")
            elif found == 0:
                cells.append(f"none (already {100 * reduction(flops, visual, kept, vision):.2f}% or less at 0)")
            else:
                cells.append(str(found))
        lines.append(f"| {name} | {'yes' if vision else 'no'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(f"vision encoder + projector for a 672x672 image: {VISION / 1e12:.2f} TFLOPs\n")
    print("Keep fraction that gives -63.57%:\n")
    print(keep_table())
    print("\nReduction at common keep ratios (672x672 image, 64 prompt tokens, gprune's selector counts):\n")
    print(ratio_table())
    print("\nPrompt length (first integer at which the reduction drops to 63.57% or below):\n")
    print(prompt_table())
