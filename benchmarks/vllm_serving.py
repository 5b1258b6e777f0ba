"""vLLM serving throughput and time to first token, pruned vs unpruned, same requests, one run.

    python benchmarks/vllm_serving.py --tiny llava_next            # CPU: a tiny-width model, real token counts
    python benchmarks/vllm_serving.py --model llava-hf/llava-v1.6-vicuna-7b-hf --keep 0.25   # a GPU

Both engines run gprune's plugin class; the unpruned one has no ``gprune`` override, which makes it vLLM's
own model (the plugin only changes a model that sets one). Each round, on new images for both engines:
TTFT = one request alone with one output token (vision tower, selection, LLM prefill), then throughput =
`--requests` requests submitted at once (vLLM batches them), requests/s and generated tokens/s. Medians
over `--rounds` alternating rounds, printed with pruned / unpruned ratios.

`--tiny` builds a random-weight checkpoint with the released models' token counts (LLaVA-NeXT: 336 px
tiles of 14 px patches, 576 + up to 2304 tokens per image; Qwen2.5-VL: up to ~1000 merged tokens per
image), a 2-layer vision tower and a small text model (`--hidden`, `--layers`): the text model must
cost something, or there is no prefill for pruning to shorten.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

QWEN_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"


def build_tiny(kind: str, path: Path, hidden: int, layers: int) -> tuple[Path, str]:
    """A tiny-width checkpoint with real token counts, and its prompt's image slot."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vllm_plugin"))
    import tiny_models

    if kind == "llava_next":
        return tiny_models.save_llava_next(path, tile=336, patch=14, hidden=hidden, layers=layers), "<image>\n"
    return tiny_models.save_qwen2_5_vl(path, max_merged_tokens=1024, hidden=hidden, layers=layers), QWEN_SLOT


def requests(slot: str, count: int, size: tuple[int, int], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        prompt = f"USER: {slot}Describe the image in detail. ASSISTANT:"
        out.append({"prompt": prompt, "multi_modal_data": {"image": Image.fromarray(pixels)}})
    return out


def engine(path: Path, gprune: dict[str, Any] | None, args: argparse.Namespace) -> Any:
    import vllm

    engine_args: dict[str, Any] = {"max_model_len": args.max_model_len, "seed": 0, "enable_prefix_caching": False}
    if args.cpu:
        engine_args |= {"distributed_executor_backend": "uni", "enforce_eager": True, "gpu_memory_utilization": 0.2}
    if gprune is not None:
        engine_args["hf_overrides"] = {"gprune": gprune}
    return vllm.LLM(str(path), **engine_args)


def model_class(llm: Any, cpu: bool) -> str:
    if not cpu:
        return "(in a worker process)"
    return type(llm.llm_engine.model_executor.driver_worker.worker.model_runner.get_model()).__name__


def ttft(llm: Any, req: dict[str, Any]) -> float:
    import vllm

    start = time.perf_counter()
    llm.generate([req], vllm.SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True), use_tqdm=False)
    return time.perf_counter() - start


def throughput(llm: Any, batch: list[dict[str, Any]], max_tokens: int) -> dict[str, float]:
    import vllm

    params = vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    outs = llm.generate(batch, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    return {
        "prompt_tokens": statistics.mean(len(o.prompt_token_ids) for o in outs),
        "requests_per_s": len(batch) / seconds,
        "tokens_per_s": generated / seconds,
    }


def measure(path: Path, slot: str, size: tuple[int, int], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Both engines alive; every round times each on the same new images, alternating, medians reported.

    Alternating rounds keep a shared machine's load changes from landing on one side only. Each engine has
    its own encoder cache, so the same images are new to both; no image is used twice in one engine.
    """
    engines = {"unpruned": engine(path, None, args), "pruned": engine(path, {"keep": args.keep}, args)}
    warm = requests(slot, 1, size, seed=999)
    for llm in engines.values():
        ttft(llm, warm[0])
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in engines}
    for r in range(args.rounds):
        reqs = requests(slot, 1 + args.requests, size, seed=r)
        for name, llm in engines.items():
            row = {"ttft_s": ttft(llm, reqs[0]), **throughput(llm, reqs[1:], args.max_tokens)}
            for key, value in row.items():
                samples[name].setdefault(key, []).append(value)
    return {
        name: {"model_class": model_class(engines[name], args.cpu)}
        | {k: statistics.median(v) for k, v in rows.items()}
        for name, rows in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a checkpoint (path or hub id) of LLaVA-NeXT or Qwen2.5-VL")
    source.add_argument("--tiny", choices=("llava_next", "qwen2_5_vl"), help="build a tiny random-weight one")
    parser.add_argument("--hidden", type=int, default=512, help="--tiny text width (4 heads; default 512)")
    parser.add_argument("--layers", type=int, default=4, help="--tiny text layers (default 4)")
    parser.add_argument("--slot", help="the prompt's image slot for --model (default: LLaVA's '<image>\\n')")
    parser.add_argument("--keep", type=float, default=0.25, help="keep ratio (default 0.25)")
    parser.add_argument("--requests", type=int, default=16, help="requests in the throughput batch")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians reported)")
    parser.add_argument("--max-tokens", type=int, default=16, help="generated tokens per request")
    parser.add_argument("--image-size", default="672x672", help="HxW of every image (default 672x672)")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--cpu", action="store_true", help="in-process CPU engine (implied by --tiny)")
    args = parser.parse_args(argv)
    args.cpu = args.cpu or args.tiny is not None
    if args.cpu:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    height, width = (int(v) for v in args.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            path, slot = build_tiny(args.tiny, Path(tmp) / args.tiny, args.hidden, args.layers)
        else:
            path, slot = Path(args.model), args.slot or "<image>\n"
        results = measure(path, slot, (height, width), args)
    base, pruned = results["unpruned"], results["pruned"]
    ratios = {  # pruned / unpruned, except the TTFT speed-up (unpruned / pruned)
        "prompt_tokens": pruned["prompt_tokens"] / base["prompt_tokens"],
        "ttft_speedup": base["ttft_s"] / pruned["ttft_s"],
        "requests_per_s": pruned["requests_per_s"] / base["requests_per_s"],
        "tokens_per_s": pruned["tokens_per_s"] / base["tokens_per_s"],
    }
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs" if args.cpu else "gpu",
        "model": f"tiny {args.tiny}, text {args.layers} x {args.hidden}" if args.tiny else args.model,
        "keep": args.keep,
        "image_size": [height, width],
        "requests": args.requests,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "max_tokens": args.max_tokens,
        "unpruned": base,
        "pruned": pruned,
        "pruned_over_unpruned": ratios,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
